use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

struct Idle;

#[flow(state = S)]
impl Idle {
    #[listen(step_b)]
    async fn step_a(&self) -> Result<()> {
        Ok(())
    }

    #[start(step_a)]
    async fn step_b(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {}
