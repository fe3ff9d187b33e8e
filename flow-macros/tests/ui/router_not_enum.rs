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

    // A path, but not an enum: rustc reports the route match.
    #[router(begin)]
    async fn by_name(&self) -> Result<String> {
        Ok(String::new())
    }
}

fn main() {}
