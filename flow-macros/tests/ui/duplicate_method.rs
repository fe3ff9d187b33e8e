use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

struct Poll;

#[flow(state = S)]
impl Poll {
    #[start]
    async fn check(&self) -> Result<()> {
        Ok(())
    }

    // Two methods named `check`: the duplicate is reported, not a method listening to itself.
    #[listen(check)]
    async fn check(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {}
