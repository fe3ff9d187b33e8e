use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

struct Poll;

#[flow(state = S)]
impl Poll {
    #[start]
    async fn begin(&self) -> Result<()> {
        Ok(())
    }

    #[listen(or(begin, check))]
    async fn check(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {
    // The flow is still usable in code: only the real error shows.
    let _ = <Poll as Flow>::graph();
    let _ = Poll.runner();
}
