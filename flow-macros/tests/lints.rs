//! The expansion compiled in an ordinary test target, so that `cargo clippy --all-targets`
//! and rustc's own lints see the generated code (trybuild's builds are not linted).
#![deny(warnings, rust_2018_idioms, unused, clippy::all)]
#![warn(clippy::pedantic)]

use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S {
    n: u32,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, Route)]
enum Route {
    Again,
    Done,
}

struct Linted;

#[flow(state = S, retry(attempts = 2), timeout = "1s")]
impl Linted {
    #[start]
    async fn begin(&self) -> Result<()> {
        Ok(())
    }

    #[router(or(begin, once_more))]
    async fn check(&self, cx: &Ctx<S>) -> Result<Route> {
        cx.update(|s| s.n += 1);
        Ok(if cx.read(|s| s.n) < 3 { Route::Again } else { Route::Done })
    }

    #[listen(Route::Again)]
    async fn once_more(&self, route: Route) -> Result<()> {
        let _ = route;
        Ok(())
    }

    #[listen(and(begin, check))]
    async fn joined(&self) -> Result<Option<u8>> {
        Ok(None)
    }

    #[listen(and(joined, check))]
    async fn tupled(&self, cx: &Ctx<S>, (joined, route): (Option<u8>, Route)) -> Result<u32> {
        let _ = (joined, route);
        Ok(cx.output(Self::CHECK)?.map_or(0, |_| 1))
    }

    #[start]
    #[listen(Route::Done)]
    async fn again(&self) -> Result<()> {
        Ok(())
    }

    #[compensate(begin)]
    async fn undo(&self, nothing: ()) -> Result<()> {
        let () = nothing;
        Ok(())
    }
}

#[tokio::test]
async fn runs() -> std::result::Result<(), FlowError> {
    let run = Linted.kickoff(S::default()).await?.completed()?;
    assert_eq!(run.state.n, 3);
    assert_eq!(Linted::graph().methods.len(), 7);
    Ok(())
}
