use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

struct Join;

#[flow(state = S)]
impl Join {
    #[start]
    async fn fetch_a(&self) -> Result<u32> {
        Ok(1)
    }

    #[start]
    async fn fetch_b(&self) -> Result<String> {
        Ok(String::new())
    }

    // The elements swapped: each is reported on its own token.
    #[listen(and(fetch_a, fetch_b))]
    async fn merge(&self, (a, b): (String, u32)) -> Result<()> {
        let _ = (a, b);
        Ok(())
    }

    // Not a tuple: compared with the whole tuple.
    #[listen(and(fetch_a, fetch_b))]
    async fn whole(&self, n: u32) -> Result<()> {
        let _ = n;
        Ok(())
    }
}

fn main() {}
