use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

struct Typo;

#[flow(state = S, on_failure = "finish")]
impl Typo {
    #[start]
    async fn begin(&self) -> Result<()> {
        Ok(())
    }
}

struct NotAString;

#[flow(state = S, on_failure(cancel_running))]
impl NotAString {
    #[start]
    async fn begin(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {
    let _ = Typo::graph();
    let _ = NotAString::graph();
}
