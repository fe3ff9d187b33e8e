//! Every attribute form the macros accept, checked through the graph they build.

use std::marker::PhantomData;
use std::time::Duration;

use flow_core::graph::{Backoff, Trigger};
use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S {
    n: u32,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, Route)]
enum Review {
    Approve,
    Reject,
    Escalate,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, Route)]
enum Channel {
    Mail,
    Chat { urgent: bool },
    Phone(u32),
}

mod routes {
    #[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize, flow_core::Route)]
    pub enum Retry {
        Again,
        Stop,
    }
}

/// An error type of the user's own that converts into `flow_core::Error`.
#[derive(Debug)]
struct MyError;

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mine")
    }
}

impl std::error::Error for MyError {}

struct Everything;

#[flow(state = S, name = "everything")]
impl Everything {
    /// A start that is also a router.
    #[start]
    #[router(retry(attempts = 2, backoff = fixed("250ms"), invalid_reply = 3), timeout = "1m")]
    async fn triage(&self, cx: &Ctx<S>) -> Result<Review> {
        cx.update(|s| s.n += 1);
        Ok(Review::Approve)
    }

    /// A plain unconditional start, written through the crate path, with no context.
    #[flow_core::start]
    async fn load(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// A conditional start, triggered by a route.
    #[start(Review::Escalate)]
    async fn page_someone(&self, review: Review) -> Result<()> {
        let _ = review;
        Ok(())
    }

    /// Route listener with the route value as its payload.
    #[listen(Review::Approve, non_critical)]
    async fn approve(&self, _cx: &Ctx<S>, review: Review) -> Result<u32> {
        let _ = review;
        Ok(1)
    }

    #[listen(Review::Reject)]
    async fn reject(&self) -> Result<u32> {
        Ok(0)
    }

    /// Or over two methods that agree on their output type.
    #[listen(or(approve, reject))]
    async fn record(&self, decision: u32) -> Result<()> {
        let _ = decision;
        Ok(())
    }

    /// Nested or/and.
    #[listen(or(and(approve, load), and(reject, load)))]
    async fn summarize(&self) -> Result<()> {
        Ok(())
    }

    /// A router listening to a listener, returning `Option`, with a path-qualified route type and
    /// some variants terminal.
    #[router(record, terminal(Channel::Phone))]
    async fn notify(&self) -> Result<Option<Channel>> {
        Ok(Some(Channel::Mail))
    }

    #[listen(Channel::Mail)]
    async fn mail(&self, channel: Channel) -> Result<()> {
        let _ = channel;
        Ok(())
    }

    #[listen(Channel::Chat)]
    async fn chat(&self) -> Result<()> {
        Ok(())
    }

    /// A router listening to a router, with a bare `terminal`.
    #[router(notify, terminal)]
    async fn again(&self) -> Result<routes::Retry> {
        Ok(routes::Retry::Stop)
    }

    /// Listening to a router method itself: the payload is its output type.
    #[listen(notify)]
    async fn audit(&self, sent: Option<Channel>) -> Result<(), MyError> {
        let _ = sent;
        Ok(())
    }

    #[listen(routes::Retry::Again)]
    async fn retry_notify(&self) -> Result<()> {
        Ok(())
    }

    /// An undo step that takes the undone method's output.
    #[compensate(approve, retry(attempts = 5, backoff = exponential("1s")), timeout = "5s")]
    async fn unapprove(&self, _cx: &Ctx<S>, approved: u32) -> Result<()> {
        let _ = approved;
        Ok(())
    }

    /// An undo step that takes nothing.
    #[compensate(load)]
    async fn unload(&self) -> flow_core::Result<()> {
        Ok(())
    }
}

/// A generic flow: not registered by name, but otherwise the same.
struct Generic<T>(PhantomData<T>);

#[flow(state = S)]
impl<T: Send + Sync + 'static> Generic<T> {
    #[start]
    async fn begin(&self) -> Result<u8> {
        Ok(0)
    }

    #[listen(begin)]
    async fn then(&self, n: u8) -> Result<()> {
        let _ = n;
        Ok(())
    }
}

fn main() {
    let g = Everything::graph();
    let id = |name: &str| g.method_id(name).unwrap_or_else(|| panic!("no method {name}"));
    let m = |name: &str| g.method(id(name));

    assert_eq!(g.starts().map(|s| g.method(s).name).collect::<Vec<_>>(), ["triage", "load"]);

    let triage = m("triage");
    assert!(triage.is_start && triage.is_router && triage.trigger.is_none());
    let r = triage.policy.retry.expect("retry");
    assert_eq!((r.attempts, r.invalid_reply_attempts), (2, 3));
    assert_eq!(r.backoff, Backoff::Fixed(Duration::from_millis(250)));
    assert_eq!(triage.policy.timeout, Some(Duration::from_secs(60)));
    assert_eq!(triage.routes.len(), 3, "Escalate, Approve and Reject are all listened to");

    assert_eq!(m("load").output_type, "Vec<String>");
    let page = m("page_someone");
    assert!(page.is_start);
    assert!(matches!(page.trigger, Some(Trigger::Label(_))));
    assert!(m("approve").policy.non_critical);

    assert_eq!(g.trigger_text(id("record")).as_deref(), Some("or(approve, reject)"));
    assert_eq!(g.trigger_text(id("summarize")).as_deref(), Some("or(and(approve, load), and(reject, load))"));

    let notify = m("notify");
    assert_eq!(notify.output_type, "Option<Channel>");
    let notify_routes: Vec<String> = notify.routes.iter().map(|l| g.label(*l).to_string()).collect();
    assert_eq!(notify_routes, ["Channel::Mail", "Channel::Chat"], "Phone is terminal");
    assert_eq!(m("again").routes.len(), 1);
    assert_eq!(g.label(m("again").routes[0]).route_type, "routes::Retry");
    assert_eq!(m("audit").payload_type, Some("Option<Channel>"));

    let unapprove = m("unapprove");
    assert_eq!(unapprove.compensates, Some(id("approve")));
    assert!(unapprove.trigger.is_none() && !unapprove.is_start);
    assert_eq!(unapprove.payload_type, Some("u32"));
    let r = unapprove.policy.retry.expect("retry");
    assert_eq!(r.backoff, Backoff::Exponential { initial: Duration::from_secs(1), max: Duration::from_secs(100) });
    assert_eq!(m("unload").compensates, Some(id("load")));

    let mermaid = g.to_mermaid();
    assert!(mermaid.contains("triage -->|Approve| approve"), "{mermaid}");
    assert!(mermaid.contains("unapprove -. undo .-> approve"), "{mermaid}");

    assert!(flow_core::find_flow("everything").is_some());
    let generic = <Generic<u8> as Flow>::graph();
    assert_eq!(generic.name, "Generic");
    assert_eq!(generic.type_name, "Generic<T>");
}
