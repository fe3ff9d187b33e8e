use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

#[derive(Serialize, Deserialize, Route)]
enum Quality {
    Sufficient,
    Insufficient,
}

struct Review;

#[flow(state = S)]
impl Review {
    #[start]
    #[router(terminal)]
    async fn evaluate(&self) -> Result<Quality> {
        Ok(Quality::Sufficient)
    }

    #[listen(Quality::Sufficient)]
    async fn publish(&self) -> Result<()> {
        Ok(())
    }

    #[listen(Quality::Insuficient)]
    async fn revise(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {
    let _ = Quality::Insufficient;
}
