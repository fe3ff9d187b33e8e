use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

// A struct cannot be a route: its derive says what to write instead.
#[derive(Serialize, Deserialize, Route)]
struct Outcome {
    approved: bool,
}

// An enum returned by a router without `#[derive(Route)]`.
#[derive(Serialize, Deserialize)]
enum Decision {
    Approve,
    Reject,
}

struct Review;

#[flow(state = S)]
impl Review {
    #[start]
    #[router]
    async fn decide(&self) -> Result<Decision> {
        Ok(Decision::Approve)
    }

    #[listen(Decision::Approve)]
    async fn approve(&self) -> Result<()> {
        Ok(())
    }

    #[listen(Decision::Reject)]
    async fn reject(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {}
