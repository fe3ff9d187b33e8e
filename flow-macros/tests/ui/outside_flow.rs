use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

struct NotAFlow;

// `#[flow(state = S)]` is missing on this impl.
impl NotAFlow {
    #[start]
    async fn begin(&self, _cx: &Ctx<S>) -> Result<()> {
        Ok(())
    }

    #[listen(begin)]
    async fn next(&self) -> Result<()> {
        Ok(())
    }

    #[router(next)]
    async fn choose(&self) -> Result<()> {
        Ok(())
    }

    #[compensate(begin)]
    async fn undo(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {}
