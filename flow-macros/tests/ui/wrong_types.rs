use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

#[derive(Clone, Default, Serialize, Deserialize)]
struct Other;

/// Not a std error, so it does not convert into `flow_core::Error`.
#[derive(Debug)]
struct Oops;

struct Types;

#[flow(state = S)]
impl Types {
    #[start]
    async fn fails(&self) -> Result<u32, Oops> {
        Err(Oops)
    }

    // The context of this flow is `Ctx<S>`.
    #[listen(fails)]
    async fn wrong_ctx(&self, cx: &Ctx<Other>) -> Result<()> {
        let _ = cx;
        Ok(())
    }
}

fn main() {}
