use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

struct Routes;

#[flow(state = S)]
impl Routes {
    #[start]
    async fn begin(&self) -> Result<()> {
        Ok(())
    }

    // Not an enum path at all.
    #[router(begin)]
    async fn tuple(&self) -> Result<(u32, u32)> {
        Ok((1, 2))
    }

    #[router(begin)]
    async fn text(&self) -> Result<&'static str> {
        Ok("left")
    }
}

fn main() {}
