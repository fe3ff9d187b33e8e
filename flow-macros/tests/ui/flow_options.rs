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

struct BadPark;

#[flow(state = S, park_after = 30)]
impl BadPark {
    #[start]
    async fn begin(&self) -> Result<()> {
        Ok(())
    }
}

struct ParkTypo;

#[flow(state = S, park_afer = "30s")]
impl ParkTypo {
    #[start]
    async fn begin(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {
    let _ = BadPark::graph();
    let _ = ParkTypo::graph();
    // Both flows are still usable in code: only the real errors show.
    let _ = NoState::graph();
    let _ = BadOptions.runner();
}
