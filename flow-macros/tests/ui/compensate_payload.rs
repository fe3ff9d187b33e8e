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

    // `charge` returns a u64.
    #[compensate(charge)]
    async fn refund(&self, charge_id: String) -> Result<()> {
        let _ = charge_id;
        Ok(())
    }
}

fn main() {}
