use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

struct Saga;

#[flow(state = S)]
impl Saga {
    #[start]
    async fn charge(&self) -> Result<u64> {
        Ok(1)
    }

    #[compensate(charg)]
    async fn refund(&self) -> Result<()> {
        Ok(())
    }

    #[compensate(charge)]
    #[listen(charge)]
    async fn both(&self) -> Result<()> {
        Ok(())
    }

    #[compensate]
    async fn nothing(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {}
