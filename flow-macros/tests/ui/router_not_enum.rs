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

#[derive(Serialize, Deserialize)]
struct Decision {
    approved: bool,
}

struct StructRoutes;

#[flow(state = S)]
impl StructRoutes {
    #[start]
    async fn begin(&self) -> Result<()> {
        Ok(())
    }

    // The macro cannot see that `Decision` is a struct; with a bare `terminal` and no listener
    // it routes nowhere, which is refused.
    #[router(begin, terminal)]
    async fn decide(&self) -> Result<Decision> {
        Ok(Decision { approved: true })
    }
}

fn main() {
    let _ = Decision { approved: false }.approved;
}
