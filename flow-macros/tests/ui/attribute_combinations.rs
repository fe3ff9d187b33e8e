use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

#[derive(Serialize, Deserialize, Route)]
enum Route {
    A,
}

#[derive(Serialize, Deserialize)]
enum Other {
    B,
}

struct Combos;

#[flow(state = S)]
impl Combos {
    #[start]
    async fn begin(&self) -> Result<()> {
        Ok(())
    }

    #[listen(begin)]
    #[router(begin)]
    async fn listen_and_route(&self) -> Result<Route> {
        Ok(Route::A)
    }

    #[router]
    async fn router_without_trigger(&self) -> Result<Route> {
        Ok(Route::A)
    }

    #[start]
    #[router(begin)]
    async fn start_router_with_trigger(&self) -> Result<Route> {
        Ok(Route::A)
    }

    #[listen]
    async fn listen_without_trigger(&self) -> Result<()> {
        Ok(())
    }

    #[start(begin)]
    #[listen(begin)]
    async fn start_and_listen(&self) -> Result<()> {
        Ok(())
    }

    #[router(begin, terminal(Other::B))]
    async fn terminal_of_other_enum(&self) -> Result<Route> {
        Ok(Route::A)
    }

    #[listen(Route::A)]
    async fn on_a(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {
    let _ = Other::B;
}
