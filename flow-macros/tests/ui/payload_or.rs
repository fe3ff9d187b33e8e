use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

struct Pipeline;

#[flow(state = S)]
impl Pipeline {
    #[start]
    async fn fetch(&self) -> Result<String> {
        Ok(String::new())
    }

    #[start]
    async fn count(&self) -> Result<u32> {
        Ok(0)
    }

    #[start]
    async fn name(&self) -> Result<String> {
        Ok(String::new())
    }

    // The triggers disagree: `fetch` sends a String, `count` a u32.
    #[listen(or(fetch, count))]
    async fn log(&self, line: String) -> Result<()> {
        let _ = line;
        Ok(())
    }

    // The triggers agree on String; the parameter is wrong.
    #[listen(or(fetch, name))]
    async fn greet(&self, n: u32) -> Result<()> {
        let _ = n;
        Ok(())
    }
}

fn main() {}
