use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

struct Review;

#[flow(state = S)]
impl Review {
    #[start]
    async fn submit(&self) -> Result<()> {
        Ok(())
    }

    // CrewAI writes `@listen("submit")`; here a trigger is a path.
    #[listen("submit")]
    async fn approve(&self) -> Result<()> {
        Ok(())
    }

    #[listen(or(submit, "approved by a human"))]
    async fn notify(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {}
