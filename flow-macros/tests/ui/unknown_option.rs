use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

struct Flaky;

#[flow(state = S, timout = "30s")]
impl Flaky {
    #[start(retires(attempts = 3))]
    async fn begin(&self) -> Result<()> {
        Ok(())
    }

    #[listen(begin, retires(attempts = 3))]
    async fn fetch(&self) -> Result<()> {
        Ok(())
    }

    #[listen(fetch, non_critcal, retry(atempts = 2))]
    async fn store(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {}
