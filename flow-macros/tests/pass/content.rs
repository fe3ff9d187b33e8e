//! The lead's example: every trigger kind, options on the flow and on a method, payloads of
//! method outputs and of route values.

use flow_core::graph::{Backoff, Trigger};
use flow_core::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Default, Serialize, Deserialize)]
struct S {
    topic: String,
    rounds: u32,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, Route)]
enum Quality {
    Sufficient,
    Insufficient,
}

struct ContentFlow;

#[flow(state = S, name = "content", max_calls = 50, retry(attempts = 3, backoff = exponential("500ms", max = "30s"), jitter), timeout = "30s")]
impl ContentFlow {
    #[start]
    async fn init(&self, cx: &Ctx<S>) -> Result<String> {
        Ok(cx.read(|s| s.topic.clone()))
    }

    #[listen(init)]
    async fn research(&self, _cx: &Ctx<S>, topic: String) -> Result<()> {
        let _ = topic;
        Ok(())
    }

    #[router(or(research, deepen))]
    async fn evaluate(&self, cx: &Ctx<S>) -> Result<Quality> {
        cx.update(|s| s.rounds += 1);
        Ok(if cx.read(|s| s.rounds) >= 2 { Quality::Sufficient } else { Quality::Insufficient })
    }

    #[listen(Quality::Sufficient, retry(attempts = 2, backoff = fixed("1s")), timeout = "10s")]
    async fn write(&self, _cx: &Ctx<S>, q: Quality) -> Result<String> {
        Ok(format!("{q:?}"))
    }

    #[listen(Quality::Insufficient)]
    async fn deepen(&self, _cx: &Ctx<S>) -> Result<()> {
        Ok(())
    }

    fn not_a_step(&self) -> u32 {
        7
    }
}

fn main() {
    let g = ContentFlow::graph();
    assert_eq!(g.name, "content");
    assert_eq!(g.type_name, "ContentFlow");
    assert_eq!(g.state_type, "S");
    assert_eq!(g.options.max_calls, 50);
    assert_eq!(g.options.timeout, Some(Duration::from_secs(30)));
    let retry = g.options.retry.expect("flow retry");
    assert_eq!(retry.attempts, 3);
    assert!(retry.jitter);
    assert_eq!(retry.invalid_reply_attempts, 1);
    assert_eq!(
        retry.backoff,
        Backoff::Exponential { initial: Duration::from_millis(500), max: Duration::from_secs(30) }
    );

    let names: Vec<_> = g.methods.iter().map(|m| m.name).collect();
    assert_eq!(names, ["init", "research", "evaluate", "write", "deepen"]);
    assert!(g.methods[0].is_start && g.methods[0].trigger.is_none());
    assert_eq!(g.methods[0].output_type, "String");
    assert_eq!(g.methods[1].payload_type, Some("String"));
    assert!(matches!(g.methods[1].trigger, Some(Trigger::Method(m)) if m.0 == 0));
    assert!(g.methods[2].is_router);
    assert_eq!(g.methods[2].output_type, "Quality");
    assert_eq!(g.methods[2].routes.len(), 2);
    assert_eq!(g.labels.len(), 2);
    assert_eq!(g.labels[0].to_string(), "Quality::Sufficient");
    assert_eq!(g.labels[1].to_string(), "Quality::Insufficient");
    assert_eq!(g.trigger_text(g.method_id("evaluate").expect("evaluate")).as_deref(), Some("or(research, deepen)"));

    let write = &g.methods[3];
    assert_eq!(write.payload_type, Some("Quality"));
    assert_eq!(write.policy.timeout, Some(Duration::from_secs(10)));
    let r = write.policy.retry.expect("write retry");
    assert_eq!((r.attempts, r.backoff, r.jitter), (2, Backoff::Fixed(Duration::from_secs(1)), false));

    let mermaid = g.to_mermaid();
    assert!(mermaid.contains("init --> research"), "{mermaid}");
    assert!(mermaid.contains("evaluate -->|Sufficient| write"), "{mermaid}");
    assert!(mermaid.contains("evaluate -->|Insufficient| deepen"), "{mermaid}");
    assert!(mermaid.contains("deepen --> evaluate"), "{mermaid}");

    let reg = flow_core::find_flow("content").expect("registered");
    assert_eq!(reg.type_name, "ContentFlow");
    assert_eq!(ContentFlow.not_a_step(), 7);
}
