use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

struct NoState;

#[flow]
impl NoState {
    #[start]
    async fn begin(&self) -> Result<()> {
        Ok(())
    }
}

struct BadOptions;

#[flow(state = S, max_calls = 0, nme = "typo", timeout = "30", name = "a", name = "b", retry(backoff = fixed("1s")))]
impl BadOptions {
    #[start]
    async fn begin(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {
    // Both flows are still usable in code: only the real errors show.
    let _ = NoState::graph();
    let _ = BadOptions.runner();
}
