//! Runs a flow built by `#[flow]`: a router loop with route payloads, an `Option` router, a
//! conditional start on a route, an or-listener taking its payload from either trigger.

use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S {
    rounds: u32,
    log: Vec<String>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, Route)]
enum Quality {
    Sufficient,
    Insufficient,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, Route)]
enum Next {
    Archive,
    Nothing,
}

struct Content;

#[flow(state = S, max_calls = 10)]
impl Content {
    #[start]
    async fn init(&self) -> Result<String> {
        Ok("rust".into())
    }

    #[listen(init)]
    async fn research(&self, cx: &Ctx<S>, topic: String) -> Result<()> {
        cx.update(move |s| s.log.push(format!("research {topic}")));
        Ok(())
    }

    #[router(or(research, deepen))]
    async fn evaluate(&self, cx: &Ctx<S>) -> Result<Quality> {
        cx.update(|s| s.rounds += 1);
        Ok(if cx.read(|s| s.rounds) >= 3 { Quality::Sufficient } else { Quality::Insufficient })
    }

    #[listen(Quality::Insufficient)]
    async fn deepen(&self, cx: &Ctx<S>, q: Quality) -> Result<()> {
        cx.update(move |s| s.log.push(format!("deepen after {q:?}")));
        Ok(())
    }

    #[listen(Quality::Sufficient)]
    async fn write(&self, cx: &Ctx<S>) -> Result<String> {
        let rounds = cx.read(|s| s.rounds);
        Ok(format!("written after {rounds} rounds"))
    }

    #[router(write, terminal(Next::Nothing))]
    async fn after(&self) -> Result<Option<Next>> {
        Ok(Some(Next::Archive))
    }

    /// A conditional start: runs only when `after` routes to `Next::Archive`.
    #[start(Next::Archive)]
    async fn archive(&self, cx: &Ctx<S>, next: Next) -> Result<u32> {
        cx.update(move |s| s.log.push(format!("archive on {next:?}")));
        Ok(7)
    }

    #[router(archive)]
    async fn maybe(&self) -> Result<Option<Next>> {
        Ok(None)
    }

    /// Never runs: `maybe` returns `None`, which routes nowhere.
    #[listen(Next::Nothing)]
    async fn unreachable_at_run_time(&self, cx: &Ctx<S>) -> Result<()> {
        cx.update(|s| s.log.push("must not run".into()));
        Ok(())
    }

    #[listen(or(archive, count))]
    async fn total(&self, n: u32) -> Result<u32> {
        Ok(n * 2)
    }

    #[start]
    async fn count(&self) -> Result<u32> {
        Ok(1)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::result::Result<(), FlowError> {
    let run = Content.kickoff(S::default()).await?.completed()?;
    assert_eq!(run.state.rounds, 3);
    assert_eq!(
        run.state.log,
        ["research rust", "deepen after Insufficient", "deepen after Insufficient", "archive on Archive"]
    );
    assert_eq!(run.output_of::<String>("write")?, "written after 3 rounds");
    assert_eq!(run.output_of::<Option<Next>>("after")?.map(|n| format!("{n:?}")).as_deref(), Some("Archive"));
    assert!(run.outputs.contains_key("total"));
    assert!(!run.outputs.contains_key("unreachable_at_run_time"));
    Ok(())
}
