//! Runs one execution of a run inside one tokio task: polls the method futures of ready
//! activations concurrently, applies each completion to the state in completion order, fans
//! events out to listeners, and checkpoints after every completion.
//!
//! Methods are polled by the run's own task rather than spawned as tasks of their own: they
//! still overlap in time (they are async), a panic is still caught per method, and a step costs
//! no task allocation or cross-thread wake-up. Blocking work belongs in a plain `fn` method,
//! which runs on the blocking thread pool ([`blocking`]).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::ctx::{Ctx, Interrupt, RunShared, Updates, ms_system_time};
use crate::error::{Error, ErrorClass, FlowError, Special};
use crate::events::FlowEvent;
use crate::flow::{Flow, Payload, StepOutput, StepResult};
use crate::graph::{DEFAULT_STEP_TIMEOUT, Graph, MethodDef, MethodId, OnFailure, RetryPolicy};
use crate::journal::TokenUsage;
use crate::lease::Heartbeat;
use crate::outcome::{Compensated, Escalated, Outputs, Paused, RecordedFailure, RunOutcome, RunResult, Sleeping};
use crate::plan::{Plan, Source, clock_set};
use crate::progress::{Activation, Compensation, Halt, Progress, Undoable};
use crate::running::Running;
use crate::step_key::StepKey;
use crate::store::{Commit, RunStatus, Snapshot, StepRecord, StepStatus, Store, StoreError, now_ms};

/// How an execution talks to its store.
pub(crate) struct Durability {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) epoch: u64,
    pub(crate) lease: Duration,
}

struct Finished<S> {
    slot: u64,
    outcome: TaskOutcome,
    ctx: Ctx<S>,
    duration: Duration,
}

enum TaskOutcome {
    Done(StepResult),
    Interrupted,
}

/// One running method call: its future, with the panic guard, the time limit and the check
/// for an interrupt around each poll.
///
/// A named type rather than an `async` block, so that the running set holds it inline (no box
/// per step) and a method that completes on its first poll costs no timer and no wait-list
/// registration.
struct MethodTask<S> {
    slot: u64,
    work: BoxFuture<'static, StepResult>,
    /// The method's time limit; `Duration::MAX` ("none") or a limit too far away to be a
    /// point in time is none.
    limit: Duration,
    /// The timer for the limit, made the first time the method waits: a method that
    /// completes on its first poll (most in-memory steps) costs no timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Taken when the call finishes.
    ctx: Option<Ctx<S>>,
    attempt: u32,
    start: Instant,
    span: tracing::Span,
}

impl<S> MethodTask<S> {
    fn timed_out(&self) -> Error {
        Error::special(Special::Timeout, format!("attempt {} timed out after {:?}", self.attempt, self.limit))
    }

    /// The time limit with the time the method slept in `cx.sleep` added: a wait it asked
    /// for is not work.
    fn limit_with_sleeps(&self) -> Duration {
        self.limit.saturating_add(self.ctx.as_ref().map_or(Duration::ZERO, Ctx::slept))
    }
}

/// When an attempt that took `duration` and ended now started and ended, ms since the Unix
/// epoch, for its step row.
fn attempt_times(duration: Duration) -> (Option<i64>, Option<i64>) {
    let finished = now_ms();
    (Some(finished.saturating_sub(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))), Some(finished))
}

/// Whether a method's time limit (`limit`, sleeps included) has passed since `start`; moves
/// the timer on by the time the method slept.
fn poll_limit(
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    start: Instant,
    limit: Duration,
    cx: &mut Context<'_>,
) -> bool {
    loop {
        let Some(t) = timer.as_mut() else { return false };
        if t.as_mut().poll(cx).is_pending() {
            return false;
        }
        match start.checked_add(limit) {
            Some(deadline) if deadline > Instant::now() => t.as_mut().reset(deadline),
            Some(_) => return true,
            // Slept so long that the limit is out of reach: none is left.
            None => {
                *timer = None;
                return false;
            }
        }
    }
}

impl<S> Future for MethodTask<S> {
    type Output = Finished<S>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Finished<S>> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        // The checks run in the order the method's result, its time limit and a pause were
        // raced before: a result that is ready wins.
        let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| this.work.as_mut().poll(cx))) {
            // A method that blocked its thread past its limit (a blocking call, a CPU loop)
            // kept the timer from firing; its late result is a timeout all the same.
            Ok(Poll::Ready(_)) if this.start.elapsed() > this.limit_with_sleeps() => {
                TaskOutcome::Done(Err(this.timed_out()))
            }
            Ok(Poll::Ready(r)) => TaskOutcome::Done(r),
            Err(panic) => {
                TaskOutcome::Done(Err(Error::special(Special::Panic, format!("panicked: {}", panic_text(panic)))))
            }
            Ok(Poll::Pending) => {
                if this.timer.is_none() {
                    this.timer = this.start.checked_add(this.limit).map(|at| Box::pin(tokio::time::sleep_until(at)));
                }
                let limit = this.limit_with_sleeps();
                if poll_limit(&mut this.timer, this.start, limit, cx) {
                    TaskOutcome::Done(Err(this.timed_out()))
                } else if this.ctx.as_ref().is_some_and(|c| c.poll_interrupted(cx).is_ready()) {
                    TaskOutcome::Interrupted
                } else {
                    return Poll::Pending;
                }
            }
        };
        match this.ctx.take() {
            Some(ctx) => Poll::Ready(Finished { slot: this.slot, outcome, ctx, duration: this.start.elapsed() }),
            // Polled again after it finished: the running set never does this.
            None => Poll::Pending,
        }
    }
}

pub(crate) struct Execution<F: Flow> {
    pub(crate) flow: Arc<F>,
    pub(crate) plan: Arc<Plan>,
    pub(crate) run: Arc<RunShared>,
    pub(crate) durability: Option<Durability>,
    pub(crate) state: Arc<F::State>,
    pub(crate) progress: Progress,
    /// The answer for a paused step, given to `resume_with`.
    pub(crate) input: Option<(String, Value)>,
    pub(crate) resumed: bool,
    /// The futures of the running activations.
    tasks: Running<MethodTask<F::State>>,
    next_slot: u64,
    /// Reused by every completion for the listeners it fires.
    fired: Vec<crate::plan::Fired>,
    invalid_input: Option<(String, String)>,
    /// The completion that ended the run (its step rows and key), left for the final
    /// checkpoint to record: one commit where a checkpoint of the completion and then the
    /// run's final one would be two.
    last_completion: Option<(Vec<StepRecord>, Option<String>)>,
    /// Raised when a lease renewal learns that the run was asked to stop (durable runs).
    /// Raised to cancel the run: by the heartbeat (a stored request), or by a [`RunHandle`](crate::RunHandle)
    /// that set it before the run started.
    pub(crate) cancel: Option<crate::lease::CancelSignal>,
    /// Methods already warned about a lost update, so each is warned once.
    #[cfg(debug_assertions)]
    warned_lost_updates: Vec<u16>,
}

/// A task handle that stops its task when dropped.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn panic_text(panic: Box<dyn Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p.downcast_ref::<&str>().map_or_else(|| "a panic with a non-text payload".into(), |s| s.to_string()),
    }
}

/// Runs a blocking method (a plain `fn` of the flow) on tokio's blocking thread pool. The run's
/// task only waits for it, so blocking methods overlap as threads do, and the step's time limit
/// still ends the step: the run moves on and the thread's late result is dropped (a thread
/// cannot be stopped from outside; it finishes on its own).
#[doc(hidden)]
pub async fn blocking<T: Send + 'static>(method: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    match tokio::task::spawn_blocking(method).await {
        Ok(out) => Ok(out),
        Err(e) if e.is_panic() => {
            Err(Error::special(Special::Panic, format!("panicked: {}", panic_text(e.into_panic()))))
        }
        Err(e) => Err(Error::transient(format!("the blocking thread pool dropped the method: {e}"))),
    }
}

fn backoff_with_jitter(policy: &RetryPolicy, retry: u32) -> Duration {
    let delay = policy.delay(retry);
    if policy.jitter { delay.mul_f64(0.5 + 0.5 * fastrand::f64()) } else { delay }
}

impl<F: Flow> Execution<F> {
    pub(crate) fn new(
        flow: Arc<F>,
        plan: Arc<Plan>,
        run: Arc<RunShared>,
        durability: Option<Durability>,
        state: Arc<F::State>,
        progress: Progress,
    ) -> Self {
        // Usage counts across executions: start from what earlier ones recorded.
        *run.usage.lock().unwrap_or_else(|p| p.into_inner()) = progress.usage;
        run.outputs.lock().unwrap_or_else(|p| p.into_inner()).clone_from(&progress.outputs);
        let mut progress = progress;
        let now_wall = now_ms();
        let now = Instant::now();
        for a in &mut progress.pending {
            a.slot = None;
            a.wake = a.not_before_ms.map(|nb| now + Duration::from_millis(u64::try_from(nb - now_wall).unwrap_or(0)));
        }
        Execution {
            flow,
            plan,
            run,
            durability,
            state,
            progress,
            input: None,
            resumed: false,
            tasks: Running::default(),
            next_slot: 0,
            fired: Vec::new(),
            invalid_input: None,
            last_completion: None,
            cancel: None,
            #[cfg(debug_assertions)]
            warned_lost_updates: Vec::new(),
        }
    }

    /// Schedules every unconditional start.
    pub(crate) fn schedule_starts(&mut self) {
        for s in self.plan.graph.starts() {
            self.schedule(s, Vec::new(), None);
        }
    }

    fn method(&self, id: u16) -> &'static MethodDef {
        self.plan.graph.method(MethodId(id))
    }

    /// Runs until nothing more can run, then records how the run stopped.
    pub(crate) async fn run(mut self) -> Result<RunOutcome<F::State>, FlowError> {
        let run_id = self.run.run_id;
        let flow = self.plan.graph.name;
        let resumed = self.resumed;
        self.run.emit(|| FlowEvent::RunStarted { run_id, flow, resumed });
        if let Some(stream) = &self.run.stream {
            stream.begin(resumed).await;
        }
        let started = std::time::Instant::now();
        // Only a run with a store holds a lease that can be lost.
        let lost = self.durability.as_ref().map(|_| CancellationToken::new());
        self.cancel =
            self.cancel.take().or_else(|| self.durability.as_ref().map(|_| crate::lease::CancelSignal::default()));
        let cancel = self.cancel.clone().unwrap_or_default();
        // Renewed from a thread no step runs on (see `lease`); dropping this execution drops
        // the guard and so stops the renewals with it.
        let heartbeat = self
            .durability
            .as_ref()
            .zip(lost.clone())
            .map(|(d, lost)| Heartbeat::start(Arc::clone(&d.store), run_id, d.epoch, d.lease, lost, cancel));
        let span = tracing::info_span!(
            "flow_run",
            otel.name = %format_args!("run {flow}"),
            run_id = %run_id,
            flow,
            resumed,
            otel.status_code = tracing::field::Empty,
        );
        #[cfg(feature = "otel")]
        if let Some(d) = &self.durability {
            crate::otel::continue_trace(&span, d.store.as_ref(), run_id).await;
        }
        let result = self.drive(lost.as_ref()).instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        drop(heartbeat);
        let status = match &result {
            Ok(o) => o.status(),
            Err(FlowError::Cancelled { .. }) => RunStatus::Cancelled,
            Err(_) => RunStatus::Failed,
        };
        if let Err(e) = &result {
            let method = e.method().and_then(|m| self.plan.graph.method_id(m)).map(|m| self.plan.graph.method(m).name);
            let error = e.to_string();
            self.run.emit(|| FlowEvent::RunFailed { run_id, method, error });
        }
        let duration = started.elapsed();
        self.run.emit(|| FlowEvent::RunFinished { run_id, status, duration });
        if let Some(stream) = &self.run.stream {
            stream.end(status, result.as_ref().err().map(ToString::to_string)).await;
        }
        result
    }

    async fn drive(&mut self, lost: Option<&CancellationToken>) -> Result<RunOutcome<F::State>, FlowError> {
        loop {
            self.launch_ready();
            if self.tasks.is_empty() {
                if let Some(at) = self.next_wake() {
                    if self.parks_for(at) {
                        // A question waiting for a person wins over a timer: the run pauses,
                        // answerable at once, and its timers fire when it next runs.
                        if self.progress.halt.is_none() && self.progress.pending.iter().any(|a| a.paused.is_some()) {
                            break;
                        }
                        return self.park().await;
                    }
                    let cancelling =
                        self.cancel.clone().filter(|_| !matches!(self.progress.halt, Some(Halt::Cancelled { .. })));
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = lease_lost(lost) => return Err(FlowError::LeaseLost { run_id: self.run.run_id }),
                        reason = cancel_requested(cancelling.as_ref()), if cancelling.is_some() => self.on_cancel(reason),
                    }
                    continue;
                }
                if self.begin_or_continue_compensation().await? {
                    continue;
                }
                break;
            }
            let wake = self.next_wake();
            let durable = self.durability.is_some();
            if wake.is_none() && !durable && self.cancel.is_none() {
                // Nothing else to wait for: the `select!` below with its other branches off.
                if let Some(finished) = self.tasks.next().await {
                    self.on_finished(finished).await?;
                }
                continue;
            }
            let cancelling =
                self.cancel.clone().filter(|_| !matches!(self.progress.halt, Some(Halt::Cancelled { .. })));
            tokio::select! {
                // A lost lease goes first: the run must stop rather than go on unfenced.
                biased;
                // Dropping the execution drops the method futures: nothing runs on unfenced.
                _ = lease_lost(lost), if durable => return Err(FlowError::LeaseLost { run_id: self.run.run_id }),
                reason = cancel_requested(cancelling.as_ref()), if cancelling.is_some() => self.on_cancel(reason),
                finished = self.tasks.next() => {
                    if let Some(finished) = finished {
                        self.on_finished(finished).await?;
                    }
                }
                _ = async { if let Some(at) = wake { tokio::time::sleep_until(at).await } }, if wake.is_some() => {}
            }
        }
        self.finish().await
    }

    /// Whether some activation is not running. Every running method future stands for one
    /// pending activation with a slot, so this needs no scan.
    fn any_idle(&self) -> bool {
        self.progress.pending.len() > self.tasks.len()
    }

    /// Whether an activation may be launched now (`now` is read only for a delayed retry).
    fn launchable(&self, a: &Activation, now: &mut Option<Instant>) -> bool {
        if a.slot.is_some() {
            return false;
        }
        if a.paused.is_some() && self.input.as_ref().is_none_or(|(k, _)| !a.step_key.is(k)) {
            return false;
        }
        if self.progress.halt.is_some() && a.undo_of.is_none() {
            return false;
        }
        a.wake.is_none_or(|at| at <= *now.get_or_insert_with(Instant::now))
    }

    fn next_wake(&self) -> Option<Instant> {
        if !self.any_idle() {
            return None;
        }
        self.progress
            .pending
            .iter()
            .filter(|a| a.slot.is_none() && a.paused.is_none())
            .filter(|a| self.progress.halt.is_none() || a.undo_of.is_some())
            .filter_map(|a| a.wake)
            .min()
    }

    /// Whether waiting until `at` with nothing running parks the run rather than holding this
    /// process: a run with a store, and at least the park threshold to wait.
    fn parks_for(&self, at: Instant) -> bool {
        let threshold = self.durability.as_ref().and(self.run.park_after);
        threshold.is_some_and(|t| at.saturating_duration_since(Instant::now()) >= t)
    }

    /// Stores the run as queued until its earliest wake time, giving its lease back: nothing
    /// runs, and what waits is a timer or a retry far enough away not to hold this process.
    async fn park(&mut self) -> Result<RunOutcome<F::State>, FlowError> {
        let halted = self.progress.halt.is_some();
        let waiting: Vec<(String, i64)> = self
            .progress
            .pending
            .iter()
            .filter(|a| a.slot.is_none() && a.paused.is_none() && (!halted || a.undo_of.is_some()))
            .filter_map(|a| Some((a.step_key.to_string(), a.not_before_ms?)))
            .collect();
        let until_ms = waiting.iter().map(|(_, at)| *at).min().unwrap_or_else(now_ms);
        let waiting: Vec<String> = waiting.into_iter().map(|(key, _)| key).collect();
        let run_id = self.run.run_id;
        let until = ms_system_time(until_ms);
        tracing::info!(%run_id, until_ms, waiting = ?waiting, "parked: the run waits in the store, holding no lease, until a worker continues it when it is due");
        let (steps, step_key) = self.last_completion.take().unwrap_or_default();
        let end = End { available_at_ms: Some(until_ms), ..End::default() };
        self.write(steps, step_key, RunStatus::Queued, end).await?;
        self.run.emit(|| FlowEvent::Parked { run_id, until, waiting: waiting.clone() });
        Ok(RunOutcome::Sleeping(Sleeping { run_id, until, waiting, state: F::State::clone(&self.state) }))
    }

    fn launch_ready(&mut self) {
        if !self.any_idle() {
            return;
        }
        let mut now = None;
        for i in 0..self.progress.pending.len() {
            if self.launchable(&self.progress.pending[i], &mut now) {
                self.spawn(i);
            }
        }
    }

    fn spawn(&mut self, index: usize) {
        let act = &self.progress.pending[index];
        let def = self.method(act.method);
        let attempt = act.attempt + 1;
        let input = match &self.input {
            Some((k, _)) if act.step_key.is(k) => self.input.take().map(|(_, v)| v),
            _ => None,
        };
        let ctx =
            Ctx::new(Arc::clone(&self.run), def.name, act.step_key.clone(), attempt, Arc::clone(&self.state), input);
        let work =
            F::__invoke(Arc::clone(&self.flow), MethodId(act.method), ctx.clone(), Payload::new(act.payload.clone()));
        let limit = def.policy.timeout.or(self.plan.graph.options.timeout).unwrap_or(DEFAULT_STEP_TIMEOUT);
        let run_id = self.run.run_id;
        let method = def.name;
        let step_key = &act.step_key;
        self.run.emit(|| FlowEvent::MethodStarted { run_id, method, step_key: step_key.to_string(), attempt });
        let span = tracing::info_span!(
            "flow_method",
            otel.name = %format_args!("step {method}"),
            run_id = %run_id,
            method,
            step_key = %step_key,
            // Signed: OpenTelemetry has no unsigned integers, and exports u64s as text.
            attempt = i64::from(attempt)
        );
        if act.sleeping && act.not_before_ms.is_some_and(|at| at <= now_ms()) {
            let step_key = step_key.to_string();
            tracing::info!(%run_id, method, %step_key, "woke: the step's timer is due; it runs again");
            self.run.emit(|| FlowEvent::Woke { run_id, method, step_key, parked: true });
        }
        let slot = self.next_slot;
        self.next_slot += 1;
        let act = &mut self.progress.pending[index];
        act.slot = Some(slot);
        act.wake = None;
        act.sleeping = false;
        let start = Instant::now();
        self.tasks.push(MethodTask { slot, work, limit, timer: None, ctx: Some(ctx), attempt, start, span });
    }

    async fn on_finished(&mut self, f: Finished<F::State>) -> Result<(), FlowError> {
        let Some(index) = self.progress.pending.iter().position(|a| a.slot == Some(f.slot)) else {
            return Err(FlowError::Corrupt {
                run_id: self.run.run_id,
                what: format!("a finished method (slot {}) was not scheduled", f.slot),
            });
        };
        self.progress.pending[index].slot = None;
        match f.outcome {
            TaskOutcome::Interrupted => {
                match f.ctx.take_interrupt() {
                    Some(Interrupt::Pause(request)) => {
                        let run_id = self.run.run_id;
                        let method = self.method(self.progress.pending[index].method).name;
                        let prompt = request.prompt.clone();
                        self.progress.pending[index].paused = Some(Box::new(request));
                        self.run.emit(|| FlowEvent::Paused { run_id, method, prompt });
                    }
                    Some(Interrupt::InvalidInput { expected, message }) => {
                        self.invalid_input = Some((expected, message));
                    }
                    Some(Interrupt::Sleep { until_ms }) => {
                        // Not run again before its wake time; the time is in the journal, so
                        // a re-run finds it whatever this progress says.
                        let left = u64::try_from(until_ms.saturating_sub(now_ms())).unwrap_or(0);
                        let act = &mut self.progress.pending[index];
                        act.not_before_ms = Some(until_ms);
                        act.wake = Instant::now().checked_add(Duration::from_millis(left));
                        act.sleeping = true;
                    }
                    None => {}
                }
                Ok(())
            }
            TaskOutcome::Done(Ok(out)) => {
                let updates = f.ctx.take_updates();
                #[cfg(debug_assertions)]
                if let Some(started_from) = f.ctx.read_then_updated() {
                    self.warn_lost_updates(index, &started_from, &updates);
                }
                // The method's view of the state goes first, so applying its updates below
                // does not copy a state that nobody else shares.
                let usage = f.ctx.step_usage();
                drop(f.ctx);
                self.completed(index, out, updates, f.duration, usage).await
            }
            TaskOutcome::Done(Err(e)) => self.failed(index, e, f.duration, f.ctx.step_usage()).await,
        }
    }

    /// The read-then-write trap, checked in debug builds: a method that read the state and
    /// then updated it, while a parallel branch changed the state, and whose update leaves a
    /// field that branch changed at the value it would have had without that change (`let n =
    /// cx.read(|s| s.n); cx.update(move |s| s.n = n + 1)`): the branch's change is lost.
    /// Warned once per method of the run. It costs two copies of the state and four encodings
    /// to JSON, only in that case and only in debug builds.
    #[cfg(debug_assertions)]
    fn warn_lost_updates(&mut self, index: usize, started_from: &Arc<F::State>, updates: &Updates<F::State>) {
        if updates.is_empty() || Arc::ptr_eq(started_from, &self.state) {
            return;
        }
        let Some(act) = self.progress.pending.get(index) else { return };
        let method = act.method;
        if act.undo_of.is_some() || self.warned_lost_updates.contains(&method) {
            return;
        }
        let now = &self.state;
        // A panicking update is reported when the updates are applied; here it ends the check.
        let encoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut alone = F::State::clone(started_from);
            let mut applied = F::State::clone(now);
            for update in updates.iter() {
                update(&mut alone);
                update(&mut applied);
            }
            let json = serde_json::to_value;
            (json(&**started_from), json(&**now), json(&alone), json(&applied))
        }));
        let Ok((Ok(before), Ok(others), Ok(alone), Ok(applied))) = encoded else { return };
        let mut path = String::new();
        if !lost_update(&before, &others, &alone, &applied, &mut path) {
            return;
        }
        self.warned_lost_updates.push(method);
        let run_id = self.run.run_id;
        let method = self.method(method).name;
        let field = if path.is_empty() { ".".to_string() } else { path };
        tracing::warn!(
            %run_id,
            method,
            field = %field,
            "`{method}` read the state and then updated `{field}` to the value it would have without a parallel branch's change to it, \
             so that change is lost if the value came from the read; change the field from its current value inside the update \
             (`cx.update(|s| s.{field} += 1)`, `push`, ...) rather than writing back a value read before"
        );
    }

    /// Applies a completed step's updates to the run's state; `false` when one panicked, with
    /// the state as it was before the step.
    ///
    /// A state nobody else holds is changed in place (no copy per step), so a panic part-way
    /// can leave it half-changed; it is then read back from the run's last checkpoint, which
    /// holds the state as it was (every completion is checkpointed before the next is
    /// applied). A run without a store has no copy to go back to and fails with the step.
    async fn apply(&mut self, updates: &Updates<F::State>) -> Result<bool, FlowError> {
        let shared = Arc::strong_count(&self.state) > 1;
        let before = shared.then(|| Arc::clone(&self.state));
        let applied = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let state = Arc::make_mut(&mut self.state);
            for update in updates.iter() {
                update(state);
            }
        }));
        let Err(panic) = applied else { return Ok(true) };
        let run_id = self.run.run_id;
        tracing::error!(%run_id, panic = %panic_text(panic), "a state update panicked");
        if let Some(before) = before {
            self.state = before;
        } else if let Some(d) = &self.durability {
            let record = d.store.load_run(run_id).await?;
            self.state = Arc::new(decode_state(run_id, self.plan.graph.state_type, &record.snapshot)?);
        }
        Ok(false)
    }

    async fn completed(
        &mut self,
        index: usize,
        out: StepOutput,
        updates: Updates<F::State>,
        duration: Duration,
        usage: Option<TokenUsage>,
    ) -> Result<(), FlowError> {
        if !updates.is_empty() && !self.apply(&updates).await? {
            let error = Error::special(
                Special::Panic,
                "panicked in a state update (`cx.update`); the step's changes were not applied",
            );
            return self.failed(index, error, duration, usage).await;
        }
        let Some(act) = self.progress.pending.remove(index) else {
            return Err(FlowError::Corrupt { run_id: self.run.run_id, what: format!("no pending step #{index}") });
        };
        let m = act.method;
        let def = self.method(m);
        let value = output_arc(out.value);
        let run_id = self.run.run_id;
        let durable = self.durability.is_some();
        // The key's text, formatted once for what a durable run stores: the step row and the
        // checkpoint that records the completion.
        let key = durable.then(|| act.step_key.to_string());
        let steps: Vec<StepRecord> = key
            .iter()
            .map(|key| {
                let (started_at_ms, finished_at_ms) = attempt_times(duration);
                StepRecord {
                    step_key: key.clone(),
                    method: def.name.to_string(),
                    status: if act.undo_of.is_some() { StepStatus::Compensated } else { StepStatus::Completed },
                    input: act.payload.as_deref().cloned(),
                    output: Some(Value::clone(&value)),
                    error: None,
                    attempt: act.attempt + 1,
                    started_at_ms,
                    finished_at_ms,
                    usage,
                }
            })
            .collect();
        self.run.emit(|| FlowEvent::MethodFinished {
            run_id,
            method: def.name,
            step_key: act.step_key.to_string(),
            attempt: act.attempt + 1,
            duration,
        });
        if let Some(stream) = &self.run.stream {
            stream.step_done(def.name, &act.step_key, &value, &*self.state);
        }

        if let Some(undone) = &act.undo_of {
            self.record_undo(def, undone, None);
            self.push_next_undo();
            return self.checkpoint(steps, key, RunStatus::Running).await;
        }

        self.progress.outputs[usize::from(m)] = Some(Arc::clone(&value));
        if let Some(slot) = self.run.outputs.lock().unwrap_or_else(|p| p.into_inner()).get_mut(usize::from(m)) {
            *slot = Some(Arc::clone(&value));
        }
        self.progress.last = Some(m);
        if self.plan.compensator[usize::from(m)].is_some() {
            self.progress.undoable.push(Undoable {
                method: m,
                step_key: act.step_key.to_string(),
                output: Arc::clone(&value),
            });
        }

        let mut fired = std::mem::take(&mut self.fired);
        let p = &mut self.progress;
        self.plan.deliver(Source::Method(MethodId(m)), &act.clock, &value, &mut p.joins, &p.calls, &mut fired);
        if let Some(label) = out.route {
            let graph = self.plan.graph;
            self.run.emit(|| FlowEvent::RouteTaken { run_id, router: def.name, route: graph.label(label).to_string() });
            self.plan.deliver(Source::Label(label), &act.clock, &value, &mut p.joins, &p.calls, &mut fired);
        } else if def.is_router && !value.is_null() {
            // A terminal route: no listener, but the decision is still worth seeing.
            let graph = self.plan.graph;
            self.run.emit(|| FlowEvent::RouteTaken {
                run_id,
                router: def.name,
                route: terminal_route(graph, def, &value),
            });
        }
        // The completed step's clock goes to the last listener that fires with it unchanged;
        // the others get copies.
        let last_plain = fired.iter().rposition(|(_, c, _)| c.is_none());
        let mut own_clock = Some(act.clock);
        for (i, (listener, clock, payload)) in fired.drain(..).enumerate() {
            let clock = match clock {
                Some(c) => c,
                None if Some(i) == last_plain => own_clock.take().unwrap_or_default(),
                None => own_clock.clone().unwrap_or_default(),
            };
            self.schedule(listener, clock, payload);
        }
        self.fired = fired;
        if !durable {
            return Ok(());
        }
        if self.ends_here() {
            self.last_completion = Some((steps, key));
            return Ok(());
        }
        self.checkpoint(steps, key, RunStatus::Running).await
    }

    /// Whether the run completes as soon as the step that just finished is recorded: nothing
    /// is scheduled or running, and no failure halted the run (which may still compensate).
    /// Nothing can run between this completion and the final checkpoint then, so that
    /// checkpoint records both, and a crash before it loses no more than a crash before the
    /// completion's own checkpoint would: the step runs again on resume.
    fn ends_here(&self) -> bool {
        self.progress.pending.is_empty() && self.tasks.is_empty() && self.progress.halt.is_none()
    }

    /// Adds an activation of `listener`. Enforces the call limit.
    ///
    /// A durable run writes no step row for it yet: the checkpoint that schedules it holds it in
    /// its pending list, and its row is written when it first finishes or fails
    /// ([`crate::Runner::steps`] lists both).
    fn schedule(&mut self, listener: MethodId, mut clock: crate::plan::Clock, payload: Option<Arc<Value>>) {
        let i = listener.index();
        let def = self.plan.graph.method(listener);
        let limit = self.plan.graph.options.max_calls;
        if self.progress.calls[i] >= limit {
            if self.progress.halt.is_none() {
                self.progress.halt = Some(Halt::CallLimit { method: listener.0 });
            }
            return;
        }
        self.progress.calls[i] += 1;
        let n = self.progress.calls[i];
        if self.plan.or_tracked[i] {
            clock_set(&mut clock, listener.0, n);
        }
        let step_key = StepKey::Parts { method: def.name, n };
        self.progress.pending.push_back(Activation {
            method: listener.0,
            step_key,
            payload,
            clock,
            attempt: 0,
            not_before_ms: None,
            sleeping: false,
            paused: None,
            undo_of: None,
            slot: None,
            wake: None,
        });
    }

    async fn failed(
        &mut self,
        index: usize,
        error: Error,
        duration: Duration,
        usage: Option<TokenUsage>,
    ) -> Result<(), FlowError> {
        let act = &self.progress.pending[index];
        let method_id = act.method;
        let def = self.method(method_id);
        let attempt = act.attempt + 1;
        let step_key = act.step_key.to_string();
        let class = error.class();
        let text = error.chain_text();
        if error.special_kind() == Some(&Special::Store) {
            // The store failed, not the method: record nothing (the store may not take it
            // anyway) and stop here; the run stays as its last checkpoint left it, and is
            // continued once the store answers, by whoever claims it when this lease lapses.
            let run_id = self.run.run_id;
            tracing::warn!(%run_id, method = def.name, %step_key, error = %text, "the store failed under a step; stopping this execution without recording a failure");
            return Err(FlowError::Store(StoreError::Backend(format!(
                "run {run_id}: step `{step_key}` of `{}` stopped because {text}; nothing was recorded as failed: \
                 the run continues once the store answers (resume it, or a serving worker takes it when its lease lapses)",
                def.name
            ))));
        }
        let policy = def.policy.retry.or(self.plan.graph.options.retry);
        let allowed = match class {
            _ if error.is_escalation() || error.special_kind() == Some(&Special::NonDeterminism) => 1,
            ErrorClass::Transient => policy.map_or(1, |p| p.attempts),
            ErrorClass::InvalidReply => policy.map_or(1, |p| p.invalid_reply_attempts),
            ErrorClass::Permanent => 1,
        };
        let undo = act.undo_of.clone();
        let retry_in = (attempt < allowed && (self.progress.halt.is_none() || undo.is_some()))
            .then(|| policy.map(|p| backoff_with_jitter(&p, attempt)).unwrap_or_default());
        let run_id = self.run.run_id;
        self.run.emit(|| FlowEvent::MethodFailed {
            run_id,
            method: def.name,
            step_key: step_key.clone(),
            attempt,
            duration,
            error: text.clone(),
            class,
            retry_in,
        });
        tracing::warn!(%run_id, method = def.name, %step_key, attempt, ?class, error = %text, "method failed");
        let (started_at_ms, finished_at_ms) = attempt_times(duration);
        let mut record = StepRecord {
            step_key: step_key.clone(),
            method: def.name.to_string(),
            status: StepStatus::Failed,
            input: act.payload.as_deref().cloned(),
            output: None,
            error: Some(text.clone()),
            attempt,
            started_at_ms,
            finished_at_ms,
            usage,
        };

        if let Some(delay) = retry_in {
            let Some(act) = self.progress.pending.get_mut(index) else { return Ok(()) };
            act.attempt = attempt;
            act.not_before_ms = Some(now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
            act.wake = Some(Instant::now() + delay);
            record.status = StepStatus::Ready;
            return self.checkpoint(vec![record], Some(step_key), RunStatus::Running).await;
        }

        if let Some(undone) = undo {
            let undo_step = self.progress.pending.remove(index);
            // Kept to be tried again on resume: a step left done but not undone is exactly
            // what a compensation exists to prevent.
            if let (Some(a), Some(undone_method), Some(c)) =
                (undo_step, def.compensates, self.progress.compensation.as_mut())
            {
                let output = a.payload.unwrap_or_else(|| Arc::new(Value::Null));
                c.failed.push(Undoable { method: undone_method.0, step_key: undone.clone(), output });
            }
            self.record_undo(def, &undone, Some(&text));
            self.push_next_undo();
            return self.checkpoint(vec![record], Some(step_key), RunStatus::Running).await;
        }

        if error.is_escalation() {
            let reason = error.message().to_string();
            self.run.emit(|| FlowEvent::Escalated { run_id, method: def.name, reason });
            self.progress.pending.remove(index);
            if self.progress.halt.is_none() {
                self.progress.halt = Some(Halt::Escalated { method: method_id, reason: error.message().to_string() });
            }
            return self.checkpoint(vec![record], Some(step_key), RunStatus::Running).await;
        }

        if def.policy.non_critical {
            self.progress.pending.remove(index);
            self.progress.failures.push(RecordedFailure {
                method: def.name.to_string(),
                step_key: step_key.clone(),
                error: text,
            });
            record.status = StepStatus::Skipped;
            return self.checkpoint(vec![record], Some(step_key), RunStatus::Running).await;
        }

        let Some(act) = self.progress.pending.get_mut(index) else { return Ok(()) };
        act.attempt = attempt;
        act.not_before_ms = None;
        if self.progress.halt.is_none() {
            self.progress.halt =
                Some(Halt::Failure { method: act.method, step_key: step_key.clone(), attempt, error: text, class });
            if self.plan.graph.options.on_failure == OnFailure::CancelRunning {
                self.cancel_running();
            }
        }
        self.checkpoint(vec![record], Some(step_key), RunStatus::Running).await
    }

    /// After a failure: stops the methods still running, so the run reports the failure (and
    /// compensates) without waiting for them. Their futures are dropped with their state
    /// updates; their activations stay pending, with the attempt they were on, so a resume
    /// runs them again, and the effects they journaled are replayed then.
    ///
    /// Methods that have an undo step (`#[compensate(..)]`) are left to finish, and so are undo
    /// steps: a compensated run is not resumed, so a method stopped after its effects would
    /// leave them neither finished nor undone.
    fn cancel_running(&mut self) {
        let compensator = &self.plan.compensator;
        let cancelled: Vec<u64> = self
            .progress
            .pending
            .iter()
            .filter(|a| a.undo_of.is_none() && compensator[usize::from(a.method)].is_none())
            .filter_map(|a| a.slot)
            .collect();
        if cancelled.is_empty() {
            return;
        }
        self.tasks.cancel(|t| cancelled.contains(&t.slot));
        let run_id = self.run.run_id;
        for a in self.progress.pending.iter_mut().filter(|a| a.slot.is_some_and(|s| cancelled.contains(&s))) {
            a.slot = None;
            a.wake = None;
            tracing::info!(%run_id, step_key = %a.step_key, "stopped: another method failed (`on_failure = \"finish_running\"` lets it finish)");
        }
    }

    /// A cancel request reached this execution (its lease renewal said so): stops the running
    /// methods that have no undo step (as after a failure) and everything waiting, so that the
    /// completed steps are compensated and the run ends cancelled.
    fn on_cancel(&mut self, reason: String) {
        let run_id = self.run.run_id;
        tracing::info!(%run_id, %reason, "cancel requested: stopping the run's steps and compensating");
        self.cancel_running();
        self.progress.cancel(reason);
    }

    /// Records what an undo step did to the step it undid.
    fn record_undo(&mut self, undo: &'static MethodDef, undone: &str, error: Option<&str>) {
        let run_id = self.run.run_id;
        let undoes = undo.compensates.map_or("", |m| self.plan.graph.method(m).name);
        let text = match error {
            None => format!("`{}` undid `{undone}`", undo.name),
            Some(e) => format!("`{}` failed to undo `{undone}`: {e}", undo.name),
        };
        if let Some(c) = &mut self.progress.compensation {
            c.results.push(text);
        }
        let error = error.map(str::to_string);
        self.run.emit(|| FlowEvent::Compensated { run_id, method: undo.name, undoes, error });
    }

    /// Schedules the undo step of the most recently completed undoable step, if any is left.
    fn push_next_undo(&mut self) {
        let Some(comp) = &mut self.progress.compensation else { return };
        let Some(next) = comp.remaining.pop() else {
            comp.finished = comp.failed.is_empty();
            return;
        };
        let Some(undo) = self.plan.compensator[usize::from(next.method)] else { return };
        let i = undo.index();
        self.progress.calls[i] += 1;
        let def = self.plan.graph.method(undo);
        let step_key = StepKey::Parts { method: def.name, n: self.progress.calls[i] };
        self.progress.pending.push_back(Activation {
            method: undo.0,
            step_key,
            payload: Some(next.output),
            clock: Vec::new(),
            attempt: 0,
            not_before_ms: None,
            sleeping: false,
            paused: None,
            undo_of: Some(next.step_key),
            slot: None,
            wake: None,
        });
    }

    /// On resuming a failed run whose compensation left undo steps failed: tries them again.
    pub(crate) fn retry_failed_undos(&mut self) {
        let retry = self.progress.compensation.as_mut().is_some_and(Compensation::retry_failed);
        if retry && !self.progress.pending.iter().any(|a| a.undo_of.is_some()) {
            self.push_next_undo();
        }
    }

    /// After a failure, once nothing runs: starts undoing completed steps (newest first).
    /// Returns whether there is undo work to run.
    async fn begin_or_continue_compensation(&mut self) -> Result<bool, FlowError> {
        if !matches!(self.progress.halt, Some(Halt::Failure { .. } | Halt::Cancelled { .. })) {
            return Ok(false);
        }
        if self.progress.pending.iter().any(|a| a.undo_of.is_some()) {
            return Ok(true);
        }
        if self.progress.compensation.is_some() || self.progress.undoable.is_empty() {
            return Ok(false);
        }
        self.progress.compensation =
            Some(Compensation { remaining: std::mem::take(&mut self.progress.undoable), ..Compensation::default() });
        self.push_next_undo();
        self.checkpoint(Vec::new(), None, RunStatus::Running).await?;
        Ok(true)
    }

    async fn finish(&mut self) -> Result<RunOutcome<F::State>, FlowError> {
        let run_id = self.run.run_id;
        let graph = self.plan.graph;
        match self.progress.halt.clone() {
            Some(Halt::Failure { method, step_key, attempt, error, class }) => {
                let name = graph.method(MethodId(method)).name.to_string();
                let resumable = self.durability.is_some();
                let err = match &self.progress.compensation {
                    Some(c) if c.failed.is_empty() => {
                        let text =
                            format!("method `{name}` failed ({error}); compensation ran: {}", c.results.join("; "));
                        let undone = c.results.clone();
                        self.final_checkpoint(RunStatus::Compensated, Some(step_key), Some(text), None).await?;
                        return Ok(RunOutcome::Compensated(Compensated {
                            run_id,
                            method: name,
                            error,
                            undone,
                            state: F::State::clone(&self.state),
                        }));
                    }
                    Some(c) => FlowError::Compensated {
                        run_id,
                        method: name,
                        message: error.clone(),
                        compensation: c.results.join("; "),
                        failed: c.failed.len(),
                        state: self.state_json(),
                        resumable,
                    },
                    None => FlowError::MethodFailed {
                        run_id,
                        method: name,
                        attempt,
                        message: error.clone(),
                        class,
                        source: Error::msg(&error).with_class(class).into_std(),
                        state: self.state_json(),
                        resumable,
                    },
                };
                self.final_checkpoint(RunStatus::Failed, Some(step_key), Some(err.to_string()), None).await?;
                Err(err)
            }
            Some(Halt::CallLimit { method }) => {
                let err = FlowError::CallLimit {
                    run_id,
                    method: graph.method(MethodId(method)).name.to_string(),
                    limit: graph.options.max_calls,
                    state: self.state_json(),
                };
                self.final_checkpoint(RunStatus::Failed, None, Some(err.to_string()), None).await?;
                Err(err)
            }
            Some(Halt::Cancelled { reason }) => {
                let compensation = match &self.progress.compensation {
                    Some(c) if !c.results.is_empty() => {
                        let mut text = format!("compensation ran: {}", c.results.join("; "));
                        if !c.failed.is_empty() {
                            text.push_str(&format!(
                                "; {} undo step(s) failed and the steps they undo are still done: undo them by hand",
                                c.failed.len()
                            ));
                        }
                        text
                    }
                    _ => "no completed step had an undo step to run".to_string(),
                };
                let err = FlowError::Cancelled { run_id, reason, compensation, state: self.state_json() };
                self.final_checkpoint(RunStatus::Cancelled, None, Some(err.to_string()), None).await?;
                Err(err)
            }
            Some(Halt::Escalated { method, reason }) => {
                self.final_checkpoint(RunStatus::Escalated, None, Some(reason.clone()), None).await?;
                Ok(RunOutcome::Escalated(Escalated {
                    run_id,
                    method: graph.method(MethodId(method)).name.to_string(),
                    reason,
                    state: F::State::clone(&self.state),
                }))
            }
            None => {
                let paused = self.progress.pending.iter().find_map(|a| a.paused.as_deref().cloned());
                match paused {
                    Some(request) => {
                        let pause = serde_json::to_value(&request).ok();
                        self.final_checkpoint(RunStatus::Paused, None, None, pause).await?;
                        if let Some((expected, message)) = self.invalid_input.take() {
                            return Err(FlowError::InvalidInput { run_id, expected, message });
                        }
                        Ok(RunOutcome::Paused(Paused { run_id, request, state: F::State::clone(&self.state) }))
                    }
                    None => {
                        self.final_checkpoint(RunStatus::Completed, None, None, None).await?;
                        Ok(RunOutcome::Completed(self.result()))
                    }
                }
            }
        }
    }

    /// The state as JSON, for an error that reports it. A state that cannot be encoded here
    /// could not have been checkpointed either; the error then reports `null`.
    fn state_json(&self) -> Box<Value> {
        Box::new(serde_json::to_value(&*self.state).unwrap_or(Value::Null))
    }

    pub(crate) fn result(&self) -> RunResult<F::State> {
        result_of(&self.plan, self.run.run_id, &self.progress, F::State::clone(&self.state), &self.run)
    }

    pub(crate) fn snapshot(&mut self) -> Result<Snapshot, FlowError> {
        self.progress.usage = *self.run.usage.lock().unwrap_or_else(|p| p.into_inner());
        let run_id = self.run.run_id;
        let state = crate::faithful::to_raw_value(&*self.state)
            .map_err(|r| crate::faithful::state_error(run_id, self.plan.graph.state_type, r))?;
        let progress = serde_json::value::to_raw_value(&self.progress).map_err(|e| FlowError::Serialize {
            run_id,
            what: "the run's progress".into(),
            message: e.to_string(),
        })?;
        Ok(Snapshot { state, progress })
    }

    async fn checkpoint(
        &mut self,
        steps: Vec<StepRecord>,
        step_key: Option<String>,
        status: RunStatus,
    ) -> Result<(), FlowError> {
        self.write(steps, step_key, status, End::default()).await
    }

    async fn final_checkpoint(
        &mut self,
        status: RunStatus,
        step_key: Option<String>,
        error: Option<String>,
        pause: Option<Value>,
    ) -> Result<(), FlowError> {
        let output = self.progress.last.and_then(|m| self.progress.outputs[usize::from(m)].as_deref().cloned());
        let (steps, completed_key) = self.last_completion.take().unwrap_or_default();
        self.write(steps, step_key.or(completed_key), status, End { output, error, pause, available_at_ms: None }).await
    }

    async fn write(
        &mut self,
        steps: Vec<StepRecord>,
        step_key: Option<String>,
        status: RunStatus,
        end: End,
    ) -> Result<(), FlowError> {
        let End { output, error, pause, available_at_ms } = end;
        let run_id = self.run.run_id;
        let mut delay = Duration::from_millis(20);
        for attempt in 1..=COMMIT_ATTEMPTS {
            if self.durability.is_none() {
                return Ok(());
            }
            // Encoded afresh per attempt rather than cloned: the first attempt, nearly always
            // the only one, copies nothing.
            let snapshot = match self.snapshot() {
                Ok(snapshot) => snapshot,
                Err(e @ FlowError::Unfaithful { .. }) => return Err(self.refuse_unfaithful(e, steps, step_key).await),
                Err(e) => return Err(e),
            };
            let Some(d) = &self.durability else { return Ok(()) };
            let commit = Commit {
                run_id,
                epoch: d.epoch,
                status,
                snapshot,
                steps: steps.clone(),
                step_key: step_key.clone(),
                output: output.clone(),
                error: error.clone(),
                pause: pause.clone(),
                available_at_ms,
            };
            match d.store.commit(commit).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Fenced { .. }) => return Err(FlowError::LeaseLost { run_id }),
                // A busy database or a hiccup: nothing was written, try again.
                Err(e @ (StoreError::Backend(_) | StoreError::DiskFull(_))) if attempt < COMMIT_ATTEMPTS => {
                    tracing::warn!(%run_id, attempt, error = %e, "checkpoint failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
                Err(e) => return Err(FlowError::Store(e)),
            }
        }
        Err(FlowError::Store(StoreError::Backend(format!("run {run_id}: checkpoint kept failing"))))
    }
}

/// A future polled beside the run's own on the same task, for as long as it runs.
impl<F: Flow> Execution<F> {
    /// Records that the state a step left cannot be stored, and returns the error to end the run
    /// with.
    ///
    /// The step's changes are already applied in memory (undoing them would need a copy of the
    /// state at every step), so this execution ends here, and the store goes back to the last
    /// checkpoint it holds: the one before this step, because this execution holds the lease
    /// and committed every completion before this one. That checkpoint is written again as the
    /// run's latest with the run failed and the step's row saying why; resuming the run after
    /// the flow is fixed runs the step again (and whatever else was running, as after a crash).
    pub(crate) async fn refuse_unfaithful(
        &mut self,
        error: FlowError,
        steps: Vec<StepRecord>,
        step_key: Option<String>,
    ) -> FlowError {
        let FlowError::Unfaithful { run_id, path, value, .. } = error else { return error };
        let what = match &step_key {
            Some(key) => format!("the state after step `{key}`"),
            None => format!("the state `{}`", self.plan.graph.state_type),
        };
        let method = steps.first().map(|s| s.method.clone());
        let Some(d) = &self.durability else {
            return FlowError::Unfaithful { run_id, method, what, path, value, run_stored: false };
        };
        let error = FlowError::Unfaithful { run_id, method, what, path, value, run_stored: true };
        let text = error.to_string();
        let last_good = match d.store.load_run(run_id).await {
            Ok(record) => record.snapshot,
            Err(e) => {
                tracing::error!(%run_id, error = %e, "reading the last good checkpoint failed; the run stays running until its lease expires");
                return error;
            }
        };
        let steps = steps
            .into_iter()
            .map(|s| StepRecord { status: StepStatus::Failed, output: None, error: Some(text.clone()), ..s })
            .collect();
        let commit = Commit {
            run_id,
            epoch: d.epoch,
            status: RunStatus::Failed,
            snapshot: last_good,
            steps,
            step_key,
            output: None,
            error: Some(text),
            pause: None,
            available_at_ms: None,
        };
        match d.store.commit(commit).await {
            Ok(()) => error,
            Err(StoreError::Fenced { .. }) => FlowError::LeaseLost { run_id },
            Err(e) => {
                tracing::error!(%run_id, error = %e, "recording the refused step failed; the run stays running until its lease expires");
                error
            }
        }
    }
}

/// The state a snapshot holds; a mismatch names the field that does not fit.
pub(crate) fn decode_state<S: serde::de::DeserializeOwned>(
    run_id: Uuid,
    state_type: &'static str,
    snapshot: &Snapshot,
) -> Result<S, FlowError> {
    let mut decoder = serde_json::Deserializer::from_str(snapshot.state.get());
    serde_path_to_error::deserialize(&mut decoder).map_err(|e| {
        let path = e.path().to_string();
        FlowError::StateMismatch { run_id, state_type, path, message: e.into_inner().to_string() }
    })
}

/// Resolves when the run's lease is lost; never for a run without a store.
/// Resolves with the reason once a cancel request reached the lease heartbeat.
async fn cancel_requested(cancel: Option<&crate::lease::CancelSignal>) -> String {
    match cancel {
        Some(signal) => signal.requested().await,
        None => std::future::pending().await,
    }
}

async fn lease_lost(lost: Option<&CancellationToken>) {
    match lost {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

/// Whether some field that a parallel branch changed (`before` → `others`) ends, after a
/// method's updates, at the value those updates give without that change (`alone` equals
/// `applied`), and the method did change it. Objects are compared field by field (`path`
/// names the first such field); anything else as a whole.
#[cfg(debug_assertions)]
fn lost_update(before: &Value, others: &Value, alone: &Value, applied: &Value, path: &mut String) -> bool {
    if before == others || alone == before {
        return false;
    }
    if let (Value::Object(b), Value::Object(o), Value::Object(a), Value::Object(p)) = (before, others, alone, applied) {
        let len = path.len();
        let null = Value::Null;
        for (key, other) in o {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            let (was, alone, applied) =
                (b.get(key).unwrap_or(&null), a.get(key).unwrap_or(&null), p.get(key).unwrap_or(&null));
            if lost_update(was, other, alone, applied, path) {
                return true;
            }
            path.truncate(len);
        }
        return false;
    }
    alone == applied
}

/// A method's output, shared. Methods that return `()` (most of those that only update the
/// state) all share one `null`, so their steps do not allocate for it.
fn output_arc(value: Value) -> Arc<Value> {
    static NULL: LazyLock<Arc<Value>> = LazyLock::new(|| Arc::new(Value::Null));
    if value.is_null() { Arc::clone(&NULL) } else { Arc::new(value) }
}

/// What a checkpoint records besides the state and the steps, when the run comes to rest.
#[derive(Default)]
struct End {
    /// The run's final output.
    output: Option<Value>,
    /// Its error or escalation reason.
    error: Option<String>,
    /// Its pending question.
    pause: Option<Value>,
    /// When a parked run is due.
    available_at_ms: Option<i64>,
}

/// How often a checkpoint is tried before the run stops (it resumes from the last good one).
const COMMIT_ATTEMPTS: u32 = 5;

/// `Enum::Variant` for a router output that maps to no label (a terminal variant).
fn terminal_route(graph: &Graph, def: &MethodDef, value: &Value) -> String {
    let variant = match value {
        Value::String(s) => s.clone(),
        Value::Object(o) if o.len() == 1 => o.keys().next().cloned().unwrap_or_default(),
        other => other.to_string(),
    };
    let route_type = def.routes.first().map_or(def.output_type, |l| graph.label(*l).route_type);
    format!("{route_type}::{variant}")
}

pub(crate) fn result_of<S>(plan: &Plan, run_id: Uuid, progress: &Progress, state: S, run: &RunShared) -> RunResult<S> {
    let graph = plan.graph;
    let outputs = Outputs::new(graph, &progress.outputs);
    RunResult {
        run_id,
        state,
        last_method: progress.last.map(|m| graph.method(MethodId(m)).name.to_string()),
        last_output: progress.last.and_then(|m| progress.outputs[usize::from(m)].as_deref().cloned()),
        outputs,
        failures: progress.failures.clone(),
        usage: *run.usage.lock().unwrap_or_else(|p| p.into_inner()),
    }
}
