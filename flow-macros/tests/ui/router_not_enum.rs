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

    // A string to branch on, as in CrewAI.
    #[router(begin)]
    async fn by_name(&self) -> Result<String> {
        Ok(String::new())
    }

    // `terminal` does not make a number a route.
    #[router(begin, terminal)]
    async fn by_score(&self) -> Result<u32> {
        Ok(0)
    }

    #[router(begin, terminal)]
    async fn maybe(&self) -> Result<Option<String>> {
        Ok(None)
    }
}

fn main() {}
