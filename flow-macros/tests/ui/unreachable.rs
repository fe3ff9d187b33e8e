use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

#[derive(Serialize, Deserialize, Route)]
enum Route {
    Left,
    Right,
}

struct Island;

#[flow(state = S)]
impl Island {
    #[start]
    async fn begin(&self) -> Result<()> {
        Ok(())
    }

    // A cycle that nothing enters.
    #[listen(pong)]
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    #[listen(ping)]
    async fn pong(&self) -> Result<()> {
        Ok(())
    }

    // `and` needs both, and `ping` never runs.
    #[listen(and(begin, ping))]
    async fn join(&self) -> Result<()> {
        Ok(())
    }

    // The only router of `Route` is unreachable, so its routes are too.
    #[router(pong)]
    async fn choose(&self) -> Result<Route> {
        Ok(Route::Left)
    }

    #[listen(Route::Left)]
    async fn left(&self) -> Result<()> {
        Ok(())
    }

    #[listen(Route::Right)]
    async fn right(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {}
