//! The executor driven by a hand-written `Flow` impl, independent of the macros.

// Tests state their expectations with unwrap/expect: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use flow_core::__private::*;
use flow_core::{RunOutcome, Runner};
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize, Debug)]
struct S {
    log: Vec<String>,
    n: u32,
}

struct Diamond;

const T_A: Trigger = Trigger::Method(MethodId(0));
static D_JOIN: [Trigger; 2] = [Trigger::Method(MethodId(1)), Trigger::Method(MethodId(2))];

static GRAPH: Graph = Graph {
    name: "diamond",
    type_name: "Diamond",
    state_type: "S",
    methods: &[
        MethodDef {
            name: "a",
            is_start: true,
            start_listens: false,
            is_router: false,
            trigger: None,
            output_type: "u32",
            payload_type: None,
            routes: &[],
            policy: MethodPolicy { retry: None, timeout: None, non_critical: false },
            compensates: None,
            ends: &[],
            blocking: false,
        },
        MethodDef {
            name: "b",
            is_start: false,
            start_listens: false,
            is_router: false,
            trigger: Some(T_A),
            output_type: "u32",
            payload_type: Some("u32"),
            routes: &[],
            policy: MethodPolicy { retry: None, timeout: None, non_critical: false },
            compensates: None,
            ends: &[],
            blocking: false,
        },
        MethodDef {
            name: "c",
            is_start: false,
            start_listens: false,
            is_router: false,
            trigger: Some(T_A),
            output_type: "u32",
            payload_type: Some("u32"),
            routes: &[],
            policy: MethodPolicy { retry: None, timeout: None, non_critical: false },
            compensates: None,
            ends: &[],
            blocking: false,
        },
        MethodDef {
            name: "d",
            is_start: false,
            start_listens: false,
            is_router: false,
            trigger: Some(Trigger::And(&D_JOIN)),
            output_type: "String",
            payload_type: None,
            routes: &[],
            policy: MethodPolicy { retry: None, timeout: None, non_critical: false },
            compensates: None,
            ends: &[],
            blocking: false,
        },
    ],
    labels: &[],
    options: FlowOptions::DEFAULT,
};

impl Flow for Diamond {
    type State = S;
    fn graph() -> &'static Graph {
        &GRAPH
    }
    fn __invoke(self: Arc<Self>, method: MethodId, cx: Ctx<S>, payload: Payload) -> BoxFuture<'static, StepResult> {
        Box::pin(async move {
            match method.0 {
                0 => {
                    cx.update(|s| s.log.push("a".into()));
                    output(Ok::<u32, Error>(1))
                }
                1 | 2 => {
                    let p: u32 = flow_core::__private::payload(&payload, "b")?;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let name = if method.0 == 1 { "b" } else { "c" };
                    cx.update(move |s| {
                        s.log.push(name.into());
                        s.n += p;
                    });
                    output(Ok::<u32, Error>(p + 1))
                }
                3 => {
                    cx.update(|s| s.log.push("d".into()));
                    output(Ok::<String, Error>(format!("done after {}", cx.read(|s| s.n))))
                }
                _ => unknown_method(method),
            }
        })
    }
}

#[tokio::test]
async fn diamond_runs_each_step_once() {
    let run = match Runner::new(Diamond).kickoff(S::default()).await.unwrap() {
        RunOutcome::Completed(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(run.state.log.first().map(String::as_str), Some("a"));
    assert_eq!(run.state.log.last().map(String::as_str), Some("d"));
    assert_eq!(run.state.log.len(), 4);
    assert_eq!(run.state.n, 2);
    assert_eq!(run.output::<String>().unwrap(), "done after 2");
    assert_eq!(run.output_of::<u32>("b").unwrap(), 2);
}

#[tokio::test]
async fn diamond_checkpoints_into_memory_store() {
    let store = flow_core::store::MemoryStore::new();
    let runner = Runner::new(Diamond).with_store(store.clone());
    let run = runner.kickoff(S::default()).await.unwrap().completed().unwrap();
    use flow_core::store::Store;
    let cps = store.checkpoints(run.run_id).await.unwrap();
    // Creation and 4 completions, the last of which the final checkpoint records.
    assert_eq!(cps.len(), 5, "{cps:?}");
    assert_eq!(cps.last().map(|c| c.status), Some(flow_core::store::RunStatus::Completed), "{cps:?}");
    let steps = store.steps(run.run_id).await.unwrap();
    assert_eq!(steps.len(), 4);
    assert!(steps.iter().all(|s| s.status == flow_core::store::StepStatus::Completed), "{steps:?}");
    let again = runner.resume(run.run_id).await.unwrap().completed().unwrap();
    assert_eq!(again.state.n, 2);
}
