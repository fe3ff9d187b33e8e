//! The execution contract (DESIGN.md §4–§5): each test asserts the exact order or outcome.

// Tests state their expectations with unwrap/expect: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use flow_core::events::FlowEvent;
use flow_core::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct Log {
    order: Vec<String>,
    counter: u32,
}

fn push(cx: &Ctx<Log>, what: &str) {
    let what = what.to_string();
    cx.update(move |s| s.order.push(what.clone()));
}

// ---------------------------------------------------------------- sequential chain

struct Chain;

#[flow(state = Log)]
impl Chain {
    #[start]
    async fn first(&self, cx: &Ctx<Log>) -> Result<u32> {
        push(cx, "first");
        Ok(1)
    }
    #[listen(first)]
    async fn second(&self, cx: &Ctx<Log>, n: u32) -> Result<u32> {
        push(cx, "second");
        Ok(n + 1)
    }
    #[listen(second)]
    async fn third(&self, cx: &Ctx<Log>, n: u32) -> Result<String> {
        push(cx, "third");
        Ok(format!("n={n}"))
    }
}

#[tokio::test]
async fn sequential_chain_runs_in_order_and_passes_payloads() {
    let run = Chain.kickoff(Log::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.state.order, ["first", "second", "third"]);
    assert_eq!(run.output::<String>().unwrap(), "n=2");
    assert_eq!(run.last_method.as_deref(), Some("third"));
    assert_eq!(run.output_of::<u32>("first").unwrap(), 1);
    assert_eq!(run.output_of::<u32>("second").unwrap(), 2);
    assert_eq!(run.outputs.len(), 3);
    assert!(!run.outputs.is_empty());
    let all: Vec<(&str, &serde_json::Value)> = run.outputs.iter().collect();
    assert_eq!(
        all,
        [("first", &serde_json::json!(1)), ("second", &serde_json::json!(2)), ("third", &serde_json::json!("n=2"))]
    );
    assert_eq!(format!("{:?}", run.outputs), r#"{"first": Number(1), "second": Number(2), "third": String("n=2")}"#);
    assert_eq!(run.outputs.get("fourth"), None, "no such method");
    assert!(!run.outputs.contains_key("fourth"));
    let other = Chain.kickoff(Log::default()).await.unwrap().completed().unwrap();
    assert_eq!(other.outputs, run.outputs, "equal outputs of two runs compare equal");
}

// ---------------------------------------------------------------- where a run is polled

fn this_thread() -> String {
    format!("{:?}", std::thread::current().id())
}

struct Hop;

#[flow(state = Log)]
impl Hop {
    #[start]
    async fn here(&self, _cx: &Ctx<Log>) -> Result<String> {
        Ok(this_thread())
    }
    #[listen(here)]
    async fn wait(&self, _cx: &Ctx<Log>) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(())
    }
    #[listen(wait)]
    async fn there(&self, _cx: &Ctx<Log>) -> Result<String> {
        Ok(this_thread())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_starts_on_the_callers_thread_and_moves_to_a_worker_at_its_first_wait() {
    // The test body is a `block_on` future, so this thread is not one of the runtime's workers.
    let caller = this_thread();
    let run = Hop.kickoff(Log::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.output_of::<String>("here").unwrap(), caller, "no task until the run has to wait");
    assert_ne!(run.output_of::<String>("there").unwrap(), caller, "after its first wait a worker drives the run");
}

// ---------------------------------------------------------------- concurrent starts

struct TwoStarts;

#[flow(state = Log)]
impl TwoStarts {
    #[start]
    async fn left(&self, cx: &Ctx<Log>) -> Result<Duration> {
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(50)).await;
        push(cx, "left");
        Ok(t.elapsed())
    }
    #[start]
    async fn right(&self, cx: &Ctx<Log>) -> Result<Duration> {
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(50)).await;
        push(cx, "right");
        Ok(t.elapsed())
    }
}

#[tokio::test(start_paused = true)]
async fn unconditional_starts_run_concurrently() {
    let t = Instant::now();
    let run = TwoStarts.kickoff(Log::default()).await.unwrap().completed().unwrap();
    assert!(t.elapsed() < Duration::from_millis(60), "starts ran one after the other: {:?}", t.elapsed());
    let mut order = run.state.order.clone();
    order.sort();
    assert_eq!(order, ["left", "right"]);
}

// ---------------------------------------------------------------- and-join (diamond)

struct Diamond;

#[flow(state = Log)]
impl Diamond {
    #[start]
    async fn root(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "root");
        Ok(())
    }
    #[listen(root)]
    async fn fast(&self, cx: &Ctx<Log>) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        push(cx, "fast");
        Ok(())
    }
    #[listen(root)]
    async fn slow(&self, cx: &Ctx<Log>) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        push(cx, "slow");
        Ok(())
    }
    #[listen(and(fast, slow))]
    async fn join(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "join");
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn and_join_fires_once_after_both_branches() {
    let run = Diamond.kickoff(Log::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.state.order, ["root", "fast", "slow", "join"]);
}

// ---------------------------------------------------------------- or-join

struct Race {
    slow_done: Arc<AtomicU32>,
}

#[flow(state = Log)]
impl Race {
    #[start]
    async fn root(&self, _cx: &Ctx<Log>) -> Result<()> {
        Ok(())
    }
    #[listen(root)]
    async fn quick(&self, cx: &Ctx<Log>) -> Result<String> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        push(cx, "quick");
        Ok("quick".into())
    }
    #[listen(root)]
    async fn sluggish(&self, cx: &Ctx<Log>) -> Result<String> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.slow_done.fetch_add(1, Ordering::SeqCst);
        push(cx, "sluggish");
        Ok("sluggish".into())
    }
    #[listen(or(quick, sluggish))]
    async fn first_wins(&self, cx: &Ctx<Log>, winner: String) -> Result<String> {
        push(cx, &format!("first_wins({winner})"));
        Ok(winner)
    }
}

#[tokio::test(start_paused = true)]
async fn or_join_fires_once_on_the_first_and_never_cancels_the_slower() {
    let slow_done = Arc::new(AtomicU32::new(0));
    let t = Instant::now();
    let run = Race { slow_done: slow_done.clone() }.kickoff(Log::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.state.order, ["quick", "first_wins(quick)", "sluggish"]);
    assert_eq!(slow_done.load(Ordering::SeqCst), 1, "the slower branch ran to completion");
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(run.output_of::<String>("first_wins").unwrap(), "quick");
}

// ---------------------------------------------------------------- or(and(..), and(..))

struct Pairs;

#[flow(state = Log)]
impl Pairs {
    #[start]
    async fn go(&self, _cx: &Ctx<Log>) -> Result<()> {
        Ok(())
    }
    #[listen(go)]
    async fn a(&self, cx: &Ctx<Log>) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(40)).await;
        push(cx, "a");
        Ok(())
    }
    #[listen(go)]
    async fn b(&self, cx: &Ctx<Log>) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        push(cx, "b");
        Ok(())
    }
    #[listen(go)]
    async fn c(&self, cx: &Ctx<Log>) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        push(cx, "c");
        Ok(())
    }
    #[listen(go)]
    async fn d(&self, cx: &Ctx<Log>) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        push(cx, "d");
        Ok(())
    }
    #[listen(or(and(a, b), and(c, d)))]
    async fn either_pair(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "either_pair");
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn or_of_ands_fires_once_for_the_first_complete_pair() {
    let run = Pairs.kickoff(Log::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.state.order, ["c", "d", "either_pair", "a", "b"]);
}

// ---------------------------------------------------------------- router cascade

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Route)]
enum Size {
    Big,
    Small,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Route)]
enum Parity {
    Even,
    Odd,
}

struct Cascade;

#[flow(state = Log)]
impl Cascade {
    #[start]
    async fn number(&self, cx: &Ctx<Log>) -> Result<u32> {
        cx.update(|s| s.counter = 42);
        Ok(42)
    }
    #[router(number)]
    async fn size(&self, cx: &Ctx<Log>) -> Result<Size> {
        push(cx, "size");
        Ok(if cx.read(|s| s.counter) > 10 { Size::Big } else { Size::Small })
    }
    #[listen(Size::Big)]
    async fn big(&self, cx: &Ctx<Log>, size: Size) -> Result<()> {
        push(cx, &format!("big({size:?})"));
        Ok(())
    }
    #[listen(Size::Small)]
    async fn small(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "small");
        Ok(())
    }
    #[router(big)]
    async fn parity(&self, cx: &Ctx<Log>) -> Result<Parity> {
        push(cx, "parity");
        Ok(if cx.read(|s| s.counter).is_multiple_of(2) { Parity::Even } else { Parity::Odd })
    }
    #[listen(Parity::Even)]
    async fn even(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "even");
        Ok(())
    }
    #[listen(Parity::Odd)]
    async fn odd(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "odd");
        Ok(())
    }
}

#[tokio::test]
async fn router_cascade_follows_each_route() {
    let runner = Runner::new(Cascade);
    let mut events = runner.subscribe();
    let run = runner.kickoff(Log::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.state.order, ["size", "big(Big)", "parity", "even"]);
    let mut routes = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let FlowEvent::RouteTaken { router, route, .. } = e {
            routes.push(format!("{router}->{route}"));
        }
    }
    assert_eq!(routes, ["size->Size::Big", "parity->Parity::Even"]);
}

// ---------------------------------------------------------------- several routers on one trigger

struct TwoRouters;

#[flow(state = Log)]
impl TwoRouters {
    #[start]
    async fn input(&self, _cx: &Ctx<Log>) -> Result<u32> {
        Ok(7)
    }
    #[router(input)]
    async fn by_size(&self, _cx: &Ctx<Log>, n: u32) -> Result<Size> {
        Ok(if n > 5 { Size::Big } else { Size::Small })
    }
    #[router(input)]
    async fn by_parity(&self, _cx: &Ctx<Log>, n: u32) -> Result<Parity> {
        Ok(if n.is_multiple_of(2) { Parity::Even } else { Parity::Odd })
    }
    #[listen(Size::Big)]
    async fn big(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "big");
        Ok(())
    }
    #[listen(Size::Small)]
    async fn small(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "small");
        Ok(())
    }
    #[listen(Parity::Odd)]
    async fn odd(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "odd");
        Ok(())
    }
    #[listen(Parity::Even)]
    async fn even(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "even");
        Ok(())
    }
}

#[tokio::test]
async fn several_routers_on_one_trigger_all_dispatch() {
    let run = TwoRouters.kickoff(Log::default()).await.unwrap().completed().unwrap();
    let mut order = run.state.order.clone();
    order.sort();
    assert_eq!(order, ["big", "odd"]);
}

// ---------------------------------------------------------------- router loop with re-arming or

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Route)]
enum Loop {
    Again,
    Done,
}

struct Looper;

#[flow(state = Log)]
impl Looper {
    #[start]
    async fn begin(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "begin");
        Ok(())
    }
    #[router(or(begin, step))]
    async fn check(&self, cx: &Ctx<Log>) -> Result<Loop> {
        push(cx, "check");
        Ok(if cx.read(|s| s.counter) < 3 { Loop::Again } else { Loop::Done })
    }
    #[listen(Loop::Again)]
    async fn step(&self, cx: &Ctx<Log>) -> Result<()> {
        cx.update(|s| s.counter += 1);
        push(cx, "step");
        Ok(())
    }
    #[listen(Loop::Done)]
    async fn finish(&self, cx: &Ctx<Log>) -> Result<u32> {
        push(cx, "finish");
        Ok(cx.read(|s| s.counter))
    }
}

#[tokio::test]
async fn router_loop_rearms_its_or_listener_every_iteration() {
    let run = Looper.kickoff(Log::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.state.order, ["begin", "check", "step", "check", "step", "check", "step", "check", "finish"]);
    assert_eq!(run.output::<u32>().unwrap(), 3);
}

// ---------------------------------------------------------------- conditional start

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Route)]
enum Review {
    Redo,
    Accept,
}

struct Redo;

#[flow(state = Log)]
impl Redo {
    #[start]
    async fn draft(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "draft");
        Ok(())
    }
    #[start(Review::Redo)]
    async fn restart(&self, cx: &Ctx<Log>) -> Result<()> {
        cx.update(|s| s.counter += 1);
        push(cx, "restart");
        Ok(())
    }
    #[router(or(draft, restart))]
    async fn review(&self, cx: &Ctx<Log>) -> Result<Review> {
        push(cx, "review");
        Ok(if cx.read(|s| s.counter) == 0 { Review::Redo } else { Review::Accept })
    }
    #[listen(Review::Accept)]
    async fn publish(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "publish");
        Ok(())
    }
}

#[tokio::test]
async fn conditional_start_runs_only_when_its_route_is_taken() {
    let run = Redo.kickoff(Log::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.state.order, ["draft", "review", "restart", "review", "publish"]);
}

// ---------------------------------------------------------------- call limit

struct Runaway;

#[flow(state = Log, max_calls = 5)]
impl Runaway {
    #[start]
    async fn kick(&self, _cx: &Ctx<Log>) -> Result<()> {
        Ok(())
    }
    #[router(or(kick, spin))]
    async fn forever(&self, _cx: &Ctx<Log>) -> Result<Loop> {
        Ok(Loop::Again)
    }
    #[listen(Loop::Again)]
    async fn spin(&self, cx: &Ctx<Log>) -> Result<()> {
        cx.update(|s| s.counter += 1);
        Ok(())
    }
    #[listen(Loop::Done)]
    async fn never(&self, _cx: &Ctx<Log>) -> Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn call_limit_ends_a_runaway_loop_naming_the_method() {
    let err = Runaway.kickoff(Log::default()).await.unwrap_err();
    match &err {
        FlowError::CallLimit { method, limit, .. } => {
            assert_eq!(*limit, 5);
            assert!(method == "forever" || method == "spin", "{method}");
        }
        other => panic!("expected CallLimit, got {other:?}"),
    }
    assert!(err.to_string().contains("max_calls"), "{err}");
}

// ---------------------------------------------------------------- errors and panics

struct Failing {
    downstream_ran: Arc<AtomicU32>,
}

#[flow(state = Log)]
impl Failing {
    #[start]
    async fn ok(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "ok");
        Ok(())
    }
    #[listen(ok)]
    async fn broken(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "broken-wrote-this");
        Err(Error::permanent("the invoice total is negative"))
    }
    #[listen(broken)]
    async fn downstream(&self, _cx: &Ctx<Log>) -> Result<()> {
        self.downstream_ran.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn an_error_stops_downstream_listeners_and_names_the_method() {
    let downstream_ran = Arc::new(AtomicU32::new(0));
    let runner = Runner::new(Failing { downstream_ran: downstream_ran.clone() });
    let err = runner.kickoff(Log::default()).await.unwrap_err();
    assert_eq!(err.method(), Some("broken"));
    let text = err.to_string();
    assert!(text.contains("`broken`") && text.contains("the invoice total is negative"), "{text}");
    assert_eq!(downstream_ran.load(Ordering::SeqCst), 0);
}

struct Panicky;

#[flow(state = Log)]
impl Panicky {
    #[start]
    async fn boom(&self, _cx: &Ctx<Log>) -> Result<()> {
        let v: Vec<u32> = Vec::new();
        if v.is_empty() {
            panic!("index out of range in boom");
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_panic_becomes_an_error_and_the_process_lives_on() {
    let err = Panicky.kickoff(Log::default()).await.unwrap_err();
    assert_eq!(err.method(), Some("boom"));
    assert!(err.to_string().contains("index out of range in boom"), "{err}");
    // The process (and runtime) is fine: run another flow.
    let run = Chain.kickoff(Log::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.state.order.len(), 3);
}

#[tokio::test]
async fn two_kickoffs_of_one_runner_are_independent_runs() {
    let runner = Runner::new(Chain);
    let (a, b) = tokio::join!(runner.kickoff(Log::default()), runner.kickoff(Log { counter: 9, ..Log::default() }));
    let (a, b) = (a.unwrap().completed().unwrap(), b.unwrap().completed().unwrap());
    assert_ne!(a.run_id, b.run_id);
    assert_eq!(a.state.counter, 0);
    assert_eq!(b.state.counter, 9);
    assert_eq!(a.state.order, b.state.order);
}

// ---------------------------------------------------------------- concurrency

/// A flow with one start and a listener per name, every listener on the start.
macro_rules! fan_flow {
    ($flow:ident, $body:ident, [$($name:ident),+ $(,)?]) => {
        struct $flow;

        #[flow(state = Log)]
        impl $flow {
            #[start]
            async fn root(&self, _cx: &Ctx<Log>) -> Result<()> {
                Ok(())
            }
            $(
                #[listen(root)]
                async fn $name(&self, cx: &Ctx<Log>) -> Result<()> {
                    $body(cx).await
                }
            )+
        }
    };
}

async fn sleepy_branch(cx: &Ctx<Log>) -> Result<()> {
    tokio::time::sleep(Duration::from_millis(50)).await;
    cx.update(|s| s.counter += 1);
    Ok(())
}

async fn counting_branch(cx: &Ctx<Log>) -> Result<()> {
    // Read, yield, then increment: a last-writer-wins state would lose updates here.
    let _seen = cx.read(|s| s.counter);
    tokio::task::yield_now().await;
    cx.update(|s| s.counter += 1);
    Ok(())
}

fan_flow!(
    Fan50,
    sleepy_branch,
    [
        b00, b01, b02, b03, b04, b05, b06, b07, b08, b09, b10, b11, b12, b13, b14, b15, b16, b17, b18, b19, b20, b21,
        b22, b23, b24, b25, b26, b27, b28, b29, b30, b31, b32, b33, b34, b35, b36, b37, b38, b39, b40, b41, b42, b43,
        b44, b45, b46, b47, b48, b49
    ]
);
fan_flow!(
    Fan100,
    counting_branch,
    [
        c000, c001, c002, c003, c004, c005, c006, c007, c008, c009, c010, c011, c012, c013, c014, c015, c016, c017,
        c018, c019, c020, c021, c022, c023, c024, c025, c026, c027, c028, c029, c030, c031, c032, c033, c034, c035,
        c036, c037, c038, c039, c040, c041, c042, c043, c044, c045, c046, c047, c048, c049, c050, c051, c052, c053,
        c054, c055, c056, c057, c058, c059, c060, c061, c062, c063, c064, c065, c066, c067, c068, c069, c070, c071,
        c072, c073, c074, c075, c076, c077, c078, c079, c080, c081, c082, c083, c084, c085, c086, c087, c088, c089,
        c090, c091, c092, c093, c094, c095, c096, c097, c098, c099
    ]
);

#[tokio::test(start_paused = true)]
async fn fifty_listeners_of_one_event_overlap_in_time() {
    let t = Instant::now();
    let run = Fan50.kickoff(Log::default()).await.unwrap().completed().unwrap();
    let took = t.elapsed();
    assert_eq!(run.state.counter, 50);
    assert!(took >= Duration::from_millis(50) && took < Duration::from_millis(60), "50 x 50 ms took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_parallel_increments_lose_nothing() {
    for _ in 0..20 {
        let run = Fan100.kickoff(Log::default()).await.unwrap().completed().unwrap();
        assert_eq!(run.state.counter, 100);
    }
}

// ---------------------------------------------------------------- state visibility

struct Visibility;

#[flow(state = Log, retry(attempts = 2, backoff = fixed("1ms")))]
impl Visibility {
    #[start]
    async fn writer(&self, cx: &Ctx<Log>) -> Result<()> {
        cx.update(|s| s.counter += 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(())
    }
    #[start]
    async fn sibling(&self, cx: &Ctx<Log>) -> Result<u32> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        // The writer completed 10 ms ago, but this method works on its own view.
        Ok(cx.read(|s| s.counter))
    }
    #[listen(writer)]
    async fn after_writer(&self, cx: &Ctx<Log>) -> Result<u32> {
        Ok(cx.read(|s| s.counter))
    }
    #[listen(writer)]
    async fn flaky(&self, cx: &Ctx<Log>) -> Result<()> {
        cx.update(|s| s.counter += 100);
        if cx.attempt() == 1 {
            return Err(Error::transient("first attempt fails after writing"));
        }
        cx.update(|s| s.order.push("flaky ok".into()));
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn writes_become_visible_at_completion_and_failed_attempts_leave_none() {
    let run = Visibility.kickoff(Log::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.output_of::<u32>("sibling").unwrap(), 0, "a concurrent method must not see uncommitted writes");
    assert_eq!(run.output_of::<u32>("after_writer").unwrap(), 1, "a later method sees the completed write");
    // writer +1, flaky's successful attempt +100; the failed attempt's +100 is gone.
    assert_eq!(run.state.counter, 101);
    assert_eq!(run.state.order, ["flaky ok"]);
}

// ---------------------------------------------------------------- events and tracing

#[tokio::test]
async fn the_event_stream_reports_runs_methods_and_failures() {
    let runner = Runner::new(Chain);
    let mut rx = runner.subscribe();
    let run = runner.kickoff(Log::default()).await.unwrap().completed().unwrap();
    let mut seen = Vec::new();
    while let Ok(e) = rx.try_recv() {
        assert_eq!(e.run_id(), run.run_id);
        seen.push(match e {
            FlowEvent::RunStarted { flow, .. } => format!("run started {flow}"),
            FlowEvent::MethodStarted { method, attempt, .. } => format!("start {method} #{attempt}"),
            FlowEvent::MethodFinished { method, .. } => format!("finish {method}"),
            FlowEvent::RunFinished { status, .. } => format!("run {status}"),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(
        seen,
        [
            "run started Chain",
            "start first #1",
            "finish first",
            "start second #1",
            "finish second",
            "start third #1",
            "finish third",
            "run completed"
        ]
    );

    let failing = Runner::new(Failing { downstream_ran: Arc::default() });
    let mut rx = failing.subscribe();
    let _ = failing.kickoff(Log::default()).await.unwrap_err();
    let mut failed = Vec::new();
    while let Ok(e) = rx.try_recv() {
        match e {
            FlowEvent::MethodFailed { method, error, retry_in, .. } => failed.push((method, error, retry_in)),
            FlowEvent::RunFailed { method, .. } => assert_eq!(method, Some("broken")),
            _ => {}
        }
    }
    assert_eq!(failed, [("broken", "the invoice total is negative".to_string(), None)]);
}

mod spans {
    use std::sync::Mutex;

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id};
    use tracing_subscriber::layer::{Context, Layer};

    /// Records every span's name and fields as text.
    #[derive(Default)]
    pub struct Recorder(pub std::sync::Arc<Mutex<Vec<String>>>);

    struct Fields(String);
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!(" {}={:?}", field.name(), value));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push_str(&format!(" {}={}", field.name(), value));
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Recorder {
        fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
            let mut f = Fields(attrs.metadata().name().to_string());
            attrs.record(&mut f);
            self.0.lock().unwrap().push(f.0);
        }
    }
}

#[tokio::test]
async fn tracing_spans_carry_the_run_id_and_the_method() {
    use tracing_subscriber::layer::SubscriberExt;
    let recorder = spans::Recorder::default();
    let lines = recorder.0.clone();
    let subscriber = tracing_subscriber::registry().with(recorder);
    let _guard = tracing::subscriber::set_default(subscriber);
    let run = Chain.kickoff(Log::default()).await.unwrap().completed().unwrap();
    let lines = lines.lock().unwrap().clone();
    let id = run.run_id.to_string();
    assert!(
        lines.iter().any(|l| l.starts_with("flow_run") && l.contains(&id) && l.contains("flow=Chain")),
        "{lines:?}"
    );
    for m in ["first", "second", "third"] {
        assert!(
            lines.iter().any(|l| l.starts_with("flow_method")
                && l.contains(&id)
                && l.contains(&format!("method={m}"))
                && l.contains("attempt=1")),
            "no span for {m}: {lines:?}"
        );
    }
}

// ---------------------------------------------------------------- the graph as data

#[test]
fn the_graph_is_data_built_at_compile_time() {
    use flow_core::graph::Trigger;
    let g = Looper::graph();
    assert_eq!(g.name, "Looper");
    assert_eq!(g.state_type, "Log");
    let names: Vec<_> = g.methods.iter().map(|m| m.name).collect();
    assert_eq!(names, ["begin", "check", "step", "finish"]);
    let check = &g.methods[1];
    assert!(check.is_router && !check.is_start);
    assert!(matches!(check.trigger, Some(Trigger::Or(parts)) if parts.len() == 2));
    assert_eq!(check.routes.len(), 2);
    let labels: Vec<String> = g.labels.iter().map(ToString::to_string).collect();
    assert_eq!(labels, ["Loop::Again", "Loop::Done"]);
    assert_eq!(g.trigger_text(g.method_id("check").unwrap()).as_deref(), Some("or(begin, step)"));
    let mermaid = g.to_mermaid();
    for line in [
        "begin([begin])",
        "check{check}",
        "begin --> check",
        "step --> check",
        "check -->|Again| step",
        "check -->|Done| finish",
    ] {
        assert!(mermaid.contains(line), "missing `{line}` in\n{mermaid}");
    }
    let diamond = Diamond::graph();
    assert!(diamond.to_mermaid().contains("fast -->|and| join"));
}

// ---------------------------------------------------------------- terminal routes and escalation events

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Route)]
enum Gate {
    Open,
    Closed,
}

struct Terminal;

#[flow(state = Log)]
impl Terminal {
    #[start]
    async fn arrive(&self, _cx: &Ctx<Log>) -> Result<()> {
        Ok(())
    }
    #[router(arrive, terminal(Gate::Closed))]
    async fn gate(&self, _cx: &Ctx<Log>) -> Result<Gate> {
        Ok(Gate::Closed)
    }
    #[listen(Gate::Open)]
    async fn enter(&self, cx: &Ctx<Log>) -> Result<()> {
        push(cx, "enter");
        Ok(())
    }
    #[listen(gate)]
    async fn escalate(&self, _cx: &Ctx<Log>, gate: Gate) -> Result<()> {
        Err(Error::escalate(format!("gate is {gate:?}: a person must open it")))
    }
}

#[tokio::test]
async fn terminal_routes_and_escalations_show_in_the_event_stream() {
    let runner = Runner::new(Terminal);
    let mut rx = runner.subscribe();
    let outcome = runner.kickoff(Log::default()).await.unwrap();
    assert!(matches!(&outcome, RunOutcome::Escalated(e) if e.method == "escalate"), "{outcome:?}");
    assert!(outcome.state().order.is_empty(), "no listener follows a terminal route");
    let mut seen = Vec::new();
    while let Ok(e) = rx.try_recv() {
        match e {
            FlowEvent::RouteTaken { router, route, .. } => seen.push(format!("{router} -> {route}")),
            FlowEvent::Escalated { method, reason, .. } => seen.push(format!("{method} escalated: {reason}")),
            _ => {}
        }
    }
    assert_eq!(seen, ["gate -> Gate::Closed", "escalate escalated: gate is Closed: a person must open it"]);
}
