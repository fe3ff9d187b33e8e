use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, Route)]
enum Again {
    More,
}

struct Join;

#[flow(state = S)]
impl Join {
    #[start]
    async fn left(&self) -> Result<u32> {
        Ok(1)
    }

    #[start]
    async fn right(&self) -> Result<String> {
        Ok(String::new())
    }

    // Two parts, three elements.
    #[listen(and(left, right))]
    async fn three(&self, input: (u32, String, bool)) -> Result<()> {
        let _ = input;
        Ok(())
    }

    // The parts of the inner `or` send different types.
    #[listen(and(left, or(left, right)))]
    async fn mixed(&self, input: (u32, u32)) -> Result<()> {
        let _ = input;
        Ok(())
    }

    #[router(left, terminal)]
    async fn decide(&self) -> Result<Option<Again>> {
        Ok(None)
    }

    // A start that listens also runs at kickoff, with nothing to receive.
    #[start]
    #[listen(Again::More)]
    async fn again(&self, route: Again) -> Result<()> {
        let _ = route;
        Ok(())
    }
}

fn main() {}
