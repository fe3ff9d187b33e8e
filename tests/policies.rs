//! Per-method failure handling (issue 4): retries with backoff, timeouts, error classes,
//! compensation, non-critical steps, escalation — on tokio's paused clock.

// Tests state their expectations with unwrap/expect: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow_core::events::FlowEvent;
use flow_core::prelude::*;
use flow_core::store::{MemoryStore, StepStatus, Store};
use flow_core::{Classify, RunStatus};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use flow_tests::{Gate, resume_when_free, until};

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct Ret {
    log: Vec<String>,
}

// ---------------------------------------------------------------- backoff intervals

struct Flaky {
    failures: AtomicU32,
    starts: Arc<Mutex<Vec<Duration>>>,
    origin: Instant,
}

#[flow(state = Ret)]
impl Flaky {
    #[start(retry(attempts = 4, backoff = exponential("100ms", max = "250ms")))]
    async fn label(&self, cx: &Ctx<Ret>) -> Result<String> {
        self.starts.lock().unwrap().push(self.origin.elapsed());
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::transient("label service returned 503"));
        }
        Ok(format!("label on attempt {}", cx.attempt()))
    }
}

#[tokio::test(start_paused = true)]
async fn exponential_backoff_waits_the_declared_intervals() {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let flow = Flaky { failures: AtomicU32::new(3), starts: starts.clone(), origin: Instant::now() };
    let runner = Runner::new(flow);
    let mut events = runner.subscribe();
    let run = runner.kickoff(Ret::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.output::<String>().unwrap(), "label on attempt 4");
    let starts = starts.lock().unwrap().clone();
    let ms: Vec<u128> = starts.iter().map(Duration::as_millis).collect();
    // 100 ms, 200 ms, then capped at 250 ms.
    assert_eq!(ms, [0, 100, 300, 550]);
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e {
            FlowEvent::MethodFailed { attempt, retry_in, class, .. } => {
                assert_eq!(class, ErrorClass::Transient);
                seen.push(format!("failed #{attempt} retry in {:?}", retry_in.unwrap()));
            }
            FlowEvent::MethodStarted { attempt, .. } => seen.push(format!("start #{attempt}")),
            _ => {}
        }
    }
    assert_eq!(
        seen,
        [
            "start #1",
            "failed #1 retry in 100ms",
            "start #2",
            "failed #2 retry in 200ms",
            "start #3",
            "failed #3 retry in 250ms",
            "start #4"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn retries_stop_after_the_attempt_budget_and_permanent_errors_are_not_retried() {
    let flow = Flaky { failures: AtomicU32::new(10), starts: Arc::default(), origin: Instant::now() };
    let starts = flow.starts.clone();
    let err = flow.kickoff(Ret::default()).await.unwrap_err();
    match &err {
        FlowError::MethodFailed { method, attempt, class, .. } => {
            assert_eq!((method.as_str(), *attempt, *class), ("label", 4, ErrorClass::Transient));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(starts.lock().unwrap().len(), 4);
}

struct Strict {
    calls: AtomicU32,
}

#[flow(state = Ret, retry(attempts = 5, backoff = fixed("1s")))]
impl Strict {
    #[start]
    async fn validate(&self, _cx: &Ctx<Ret>) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(Error::permanent("order #17 does not exist"))
    }
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_never_retried_even_with_a_flow_wide_policy() {
    let flow = Strict { calls: AtomicU32::new(0) };
    let runner = Runner::new(flow);
    let err = runner.kickoff(Ret::default()).await.unwrap_err();
    assert!(matches!(err, FlowError::MethodFailed { attempt: 1, class: ErrorClass::Permanent, .. }), "{err:?}");
}

// ---------------------------------------------------------------- error classes from user types

/// A hand-written error type, as a user without thiserror would write it.
#[derive(Debug)]
enum CarrierError {
    Busy,
    Rejected,
}

impl std::fmt::Display for CarrierError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CarrierError::Busy => "carrier busy",
            CarrierError::Rejected => "carrier rejected the parcel",
        })
    }
}

impl std::error::Error for CarrierError {}

impl Classify for CarrierError {
    fn class(&self) -> ErrorClass {
        match self {
            CarrierError::Busy => ErrorClass::Transient,
            CarrierError::Rejected => ErrorClass::Permanent,
        }
    }
}
flow_core::classify_errors!(CarrierError);

struct Carrier {
    calls: AtomicU32,
}

#[flow(state = Ret)]
impl Carrier {
    #[start(retry(attempts = 3, backoff = fixed("10ms")))]
    async fn book(&self, _cx: &Ctx<Ret>) -> std::result::Result<u32, CarrierError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n == 0 { Err(CarrierError::Busy) } else { Err(CarrierError::Rejected) }
    }
}

#[tokio::test(start_paused = true)]
async fn a_user_error_type_decides_its_class() {
    let flow = Carrier { calls: AtomicU32::new(0) };
    let err = flow.kickoff(Ret::default()).await.unwrap_err();
    // Busy (transient) was retried; Rejected (permanent) stopped the retries.
    assert!(matches!(err, FlowError::MethodFailed { attempt: 2, class: ErrorClass::Permanent, .. }), "{err:?}");
}

struct Parse {
    calls: AtomicU32,
}

#[flow(state = Ret)]
impl Parse {
    #[start(retry(attempts = 5, backoff = fixed("1ms"), invalid_reply = 2))]
    async fn extract(&self, _cx: &Ctx<Ret>) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(Error::invalid_reply("model answered `sure!` instead of JSON"))
    }
}

#[tokio::test(start_paused = true)]
async fn an_unparseable_reply_has_its_own_retry_budget() {
    let flow = Parse { calls: AtomicU32::new(0) };
    let runner = Runner::new(flow);
    let err = runner.kickoff(Ret::default()).await.unwrap_err();
    assert!(matches!(err, FlowError::MethodFailed { attempt: 2, class: ErrorClass::InvalidReply, .. }), "{err:?}");
}

// ---------------------------------------------------------------- timeouts

struct Hangs {
    calls: AtomicU32,
}

#[flow(state = Ret)]
impl Hangs {
    #[start(timeout = "2s", retry(attempts = 2, backoff = fixed("500ms")))]
    async fn call_api(&self, _cx: &Ctx<Ret>) -> Result<String> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok("answered".into())
    }
}

#[tokio::test(start_paused = true)]
async fn a_timeout_is_a_transient_failure_that_is_retried() {
    let t = Instant::now();
    let run = Hangs { calls: AtomicU32::new(0) }.kickoff(Ret::default()).await.unwrap().completed().unwrap();
    assert_eq!(run.output::<String>().unwrap(), "answered");
    assert_eq!(t.elapsed(), Duration::from_millis(2500));
}

// ---------------------------------------------------------------- compensation

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct Saga {
    undone: Vec<String>,
}

struct Booking {
    undo_log: Arc<Mutex<Vec<String>>>,
    fail_undo_hotel: bool,
}

#[flow(state = Saga)]
impl Booking {
    #[start]
    async fn flight(&self, _cx: &Ctx<Saga>) -> Result<String> {
        Ok("FL-1".into())
    }
    #[listen(flight)]
    async fn hotel(&self, _cx: &Ctx<Saga>) -> Result<String> {
        Ok("HO-2".into())
    }
    #[listen(hotel)]
    async fn car(&self, _cx: &Ctx<Saga>) -> Result<String> {
        Ok("CA-3".into())
    }
    #[listen(car)]
    async fn pay(&self, _cx: &Ctx<Saga>) -> Result<()> {
        Err(Error::permanent("card declined"))
    }
    #[compensate(flight)]
    async fn cancel_flight(&self, _cx: &Ctx<Saga>, booking: String) -> Result<()> {
        self.undo_log.lock().unwrap().push(format!("cancel {booking}"));
        Ok(())
    }
    #[compensate(hotel)]
    async fn cancel_hotel(&self, _cx: &Ctx<Saga>, booking: String) -> Result<()> {
        if self.fail_undo_hotel {
            return Err(Error::permanent("hotel API down"));
        }
        self.undo_log.lock().unwrap().push(format!("cancel {booking}"));
        Ok(())
    }
    #[compensate(car)]
    async fn cancel_car(&self, _cx: &Ctx<Saga>, booking: String) -> Result<()> {
        self.undo_log.lock().unwrap().push(format!("cancel {booking}"));
        Ok(())
    }
}

#[tokio::test]
async fn compensation_undoes_completed_steps_in_reverse_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let store = MemoryStore::new();
    let runner = Runner::new(Booking { undo_log: log.clone(), fail_undo_hotel: false }).with_store(store.clone());
    let outcome = runner.kickoff(Saga::default()).await.unwrap();
    assert_eq!(*log.lock().unwrap(), ["cancel CA-3", "cancel HO-2", "cancel FL-1"]);
    let RunOutcome::Compensated(c) = &outcome else { panic!("{outcome:?}") };
    assert_eq!((c.method.as_str(), c.error.as_str()), ("pay", "card declined"));
    assert_eq!(
        c.undone,
        ["`cancel_car` undid `car#1`", "`cancel_hotel` undid `hotel#1`", "`cancel_flight` undid `flight#1`"]
    );
    let steps = store.steps(c.run_id).await.unwrap();
    let undo: Vec<_> = steps.iter().filter(|s| s.method.starts_with("cancel_")).map(|s| s.status).collect();
    assert_eq!(undo, [StepStatus::Compensated; 3]);
    assert_eq!(store.load_run(c.run_id).await.unwrap().status, RunStatus::Compensated);
    // A compensated run is not resumed into running the failed step again: a resume reads
    // its outcome back.
    let again = runner.resume(c.run_id).await.unwrap();
    assert!(matches!(&again, RunOutcome::Compensated(a) if a.undone == c.undone), "{again:?}");
    assert_eq!(log.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_failing_undo_step_is_reported_not_swallowed_and_the_others_still_run() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let runner = Runner::new(Booking { undo_log: log.clone(), fail_undo_hotel: true });
    let mut events = runner.subscribe();
    let err = runner.kickoff(Saga::default()).await.unwrap_err();
    assert_eq!(*log.lock().unwrap(), ["cancel CA-3", "cancel FL-1"]);
    let text = err.to_string();
    assert!(text.contains("`cancel_hotel` failed to undo `hotel#1`: hotel API down"), "{text}");
    let mut failed_undo = None;
    while let Ok(e) = events.try_recv() {
        if let FlowEvent::Compensated { method: "cancel_hotel", error, .. } = e {
            failed_undo = error;
        }
    }
    assert_eq!(failed_undo.as_deref(), Some("hotel API down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensation_is_persisted_and_resumes_after_a_crash() {
    // The first undo step waits at a gate, so the "crash" (dropping the execution) lands
    // between the two.
    struct SlowUndo {
        log: Arc<Mutex<Vec<String>>>,
        gate: Gate,
    }
    #[flow(state = Saga, name = "slow_undo")]
    impl SlowUndo {
        #[start]
        async fn first(&self, _cx: &Ctx<Saga>) -> Result<u32> {
            Ok(1)
        }
        #[listen(first)]
        async fn second(&self, _cx: &Ctx<Saga>) -> Result<u32> {
            Ok(2)
        }
        #[listen(second)]
        async fn boom(&self, _cx: &Ctx<Saga>) -> Result<()> {
            Err(Error::permanent("boom"))
        }
        #[compensate(first)]
        async fn undo_first(&self, _cx: &Ctx<Saga>, n: u32) -> Result<()> {
            self.gate.pass().await;
            self.log.lock().unwrap().push(format!("undo {n}"));
            Ok(())
        }
        #[compensate(second)]
        async fn undo_second(&self, _cx: &Ctx<Saga>, n: u32) -> Result<()> {
            self.log.lock().unwrap().push(format!("undo {n}"));
            Ok(())
        }
    }
    let store = MemoryStore::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let gate = Gate::new();
    let runner = Runner::new(SlowUndo { log: log.clone(), gate: gate.clone() })
        .with_store(store.clone())
        .lease(Duration::from_millis(100));
    tokio::select! {
        done = runner.kickoff(Saga::default()) => panic!("the run ended before undo_first was reached: {done:?}"),
        () = gate.reached(1) => {}
    }
    assert_eq!(*log.lock().unwrap(), ["undo 2"]);
    let run_id = store.list_runs(&Default::default()).await.unwrap()[0].run_id;
    gate.open(1);
    let fresh = Runner::new(SlowUndo { log: log.clone(), gate }).with_store(store.clone());
    let outcome = resume_when_free(&fresh, &store, run_id).await.unwrap();
    assert!(matches!(outcome, RunOutcome::Compensated(_)), "{outcome:?}");
    assert_eq!(*log.lock().unwrap(), ["undo 2", "undo 1"], "undo_second did not run twice");
}

// ---------------------------------------------------------------- non-critical steps

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct Return {
    refunded: bool,
}

struct Refund;

#[flow(state = Return)]
impl Refund {
    #[start]
    async fn receive(&self, _cx: &Ctx<Return>) -> Result<()> {
        Ok(())
    }
    #[listen(receive, non_critical, retry(attempts = 2, backoff = fixed("1ms")))]
    async fn email(&self, _cx: &Ctx<Return>) -> Result<()> {
        Err(Error::transient("SMTP server unreachable"))
    }
    #[listen(email)]
    async fn after_email(&self, _cx: &Ctx<Return>) -> Result<()> {
        Err(Error::permanent("must not run: the email failed"))
    }
    #[listen(receive)]
    async fn refund(&self, cx: &Ctx<Return>) -> Result<()> {
        cx.update(|s| s.refunded = true);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_non_critical_failure_is_recorded_and_the_flow_goes_on() {
    let store = MemoryStore::new();
    let run =
        Runner::new(Refund).with_store(store.clone()).kickoff(Return::default()).await.unwrap().completed().unwrap();
    assert!(run.state.refunded);
    assert_eq!(run.failures.len(), 1);
    assert_eq!(run.failures[0].method, "email");
    assert!(run.failures[0].error.contains("SMTP server unreachable"));
    let steps = store.steps(run.run_id).await.unwrap();
    let email = steps.iter().find(|s| s.method == "email").unwrap();
    assert_eq!((email.status, email.attempt), (StepStatus::Skipped, 2));
}

// ---------------------------------------------------------------- escalation

#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct Rma {
    days_since_delivery: u32,
    label: Option<String>,
}

struct Eligibility;

#[flow(state = Rma)]
impl Eligibility {
    #[start]
    async fn check(&self, cx: &Ctx<Rma>) -> Result<()> {
        let days = cx.read(|s| s.days_since_delivery);
        if days > 60 {
            return Err(Error::escalate(format!("return requested {days} days after delivery (limit 60)")));
        }
        Ok(())
    }
    #[listen(check)]
    async fn label(&self, cx: &Ctx<Rma>) -> Result<()> {
        cx.update(|s| s.label = Some("LBL".into()));
        Ok(())
    }
}

#[tokio::test]
async fn escalation_ends_the_run_as_needing_a_person() {
    let store = MemoryStore::new();
    let runner = Runner::new(Eligibility).with_store(store.clone());
    let outcome = runner.kickoff(Rma { days_since_delivery: 75, label: None }).await.unwrap();
    let RunOutcome::Escalated(e) = outcome else { panic!("{outcome:?}") };
    assert_eq!(e.method, "check");
    assert!(e.reason.contains("75 days"));
    assert!(e.state.label.is_none(), "nothing after the escalating step ran");
    let record = store.load_run(e.run_id).await.unwrap();
    assert_eq!(record.status, RunStatus::Escalated);
    assert_eq!(record.error.as_deref(), Some(e.reason.as_str()));

    let fine = runner.kickoff(Rma { days_since_delivery: 10, label: None }).await.unwrap().completed().unwrap();
    assert_eq!(fine.state.label.as_deref(), Some("LBL"));
}

// ---------------------------------------------------------------- attempts survive a crash

struct CountsAttempts {
    attempts: Arc<Mutex<Vec<u32>>>,
}

#[flow(state = Ret, name = "counts_attempts")]
impl CountsAttempts {
    #[start(retry(attempts = 3, backoff = fixed("300ms")))]
    async fn call(&self, cx: &Ctx<Ret>) -> Result<()> {
        self.attempts.lock().unwrap().push(cx.attempt());
        Err(Error::transient("still down"))
    }
}

/// On the paused clock, so the crash lands in the 300 ms wait for the second attempt however
/// busy the machine is.
#[tokio::test(start_paused = true)]
async fn the_attempt_count_is_checkpointed_so_a_crash_does_not_reset_the_budget() {
    let store = MemoryStore::new();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let runner = Runner::new(CountsAttempts { attempts: attempts.clone() })
        .with_store(store.clone())
        .lease(Duration::from_millis(100));
    // Crash while waiting for the second attempt: once the first attempt's failure is stored.
    let first_failure_stored = until("the first attempt's failure to be stored", || async {
        let Some(run) = store.list_runs(&Default::default()).await.unwrap().first().cloned() else { return false };
        store.steps(run.run_id).await.unwrap().first().is_some_and(|s| s.attempt == 1)
    });
    tokio::select! {
        done = runner.kickoff(Ret::default()) => panic!("the run ended before the crash: {done:?}"),
        () = first_failure_stored => {}
    }
    let run_id = store.list_runs(&Default::default()).await.unwrap()[0].run_id;
    assert_eq!(*attempts.lock().unwrap(), [1], "the crash landed before the second attempt");
    let fresh = Runner::new(CountsAttempts { attempts: attempts.clone() }).with_store(store.clone());
    let err = resume_when_free(&fresh, &store, run_id).await;
    assert!(matches!(err, Err(FlowError::MethodFailed { attempt: 3, .. })), "{err:?}");
    assert_eq!(*attempts.lock().unwrap(), [1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn every_attempt_gets_its_own_tracing_span() {
    use std::sync::Mutex as StdMutex;
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    #[derive(Clone, Default)]
    struct Attempts(Arc<StdMutex<Vec<String>>>);
    struct Fields(String);
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!(" {}={:?}", field.name(), value));
        }
    }
    impl<S: tracing::Subscriber> Layer<S> for Attempts {
        fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, _: &tracing::span::Id, _: Context<'_, S>) {
            if attrs.metadata().name() == "flow_method" {
                let mut f = Fields(String::new());
                attrs.record(&mut f);
                self.0.lock().unwrap().push(f.0);
            }
        }
    }
    let attempts = Attempts::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(attempts.clone()));
    let flow = Flaky { failures: AtomicU32::new(2), starts: Arc::default(), origin: Instant::now() };
    flow.kickoff(Ret::default()).await.unwrap().completed().unwrap();
    let spans = attempts.0.lock().unwrap().clone();
    assert_eq!(spans.len(), 3, "{spans:?}");
    for (i, s) in spans.iter().enumerate() {
        assert!(s.contains("method=\"label\"") && s.contains(&format!("attempt={}", i + 1)), "{s}");
    }
}
