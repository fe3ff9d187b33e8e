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

    // An and-join takes its parts' outputs as a tuple: no error here.
    #[listen(and(left, right))]
    async fn both(&self, (l, r): (u32, u32)) -> Result<()> {
        let _ = (l, r);
        Ok(())
    }
}

fn main() {}
