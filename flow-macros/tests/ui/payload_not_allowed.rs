use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

struct Join;

#[flow(state = S)]
impl Join {
    // A start runs at kickoff: nothing to receive.
    #[start]
    async fn left(&self, seed: u32) -> Result<u32> {
        Ok(seed)
    }

    #[start]
    async fn right(&self) -> Result<u32> {
        Ok(2)
    }

    // An and-join fires on two outputs at once.
    #[listen(and(left, right))]
    async fn both(&self, n: u32) -> Result<()> {
        let _ = n;
        Ok(())
    }
}

fn main() {}
