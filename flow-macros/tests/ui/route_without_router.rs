use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

#[derive(Serialize, Deserialize, Route)]
enum Quality {
    Good,
}

#[derive(Serialize, Deserialize, Route)]
enum Decision {
    Approve,
}

struct Review;

#[flow(state = S)]
impl Review {
    #[start]
    #[router]
    async fn evaluate(&self) -> Result<Quality> {
        Ok(Quality::Good)
    }

    #[listen(Quality::Good)]
    async fn publish(&self) -> Result<()> {
        Ok(())
    }

    #[listen(Decision::Approve)]
    async fn ship(&self) -> Result<()> {
        Ok(())
    }
}

struct NoRouter;

#[flow(state = S)]
impl NoRouter {
    #[start]
    async fn begin(&self) -> Result<()> {
        Ok(())
    }

    #[listen(Decision::Approve)]
    async fn ship(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {
    let _ = Decision::Approve;
}
