//! A readable, live trace of runs, built from a runner's typed events
//! ([`FlowEvent`]): methods started, finished and failed (with the attempt and the retry
//! delay), routes taken, pauses, compensation, LLM usage and how each run ended.
//!
//! This is the one module of the library that prints: the trace *is* the examples' output, and
//! printing it from here keeps it in order with the notes `run` adds between runs (a pause, a
//! crash, a resume) while the runs are still going. Tests use [`TraceMode::Quiet`], which
//! records the same events and lines without printing them.
//!
//! ```
//! use flow_core::prelude::*;
//! use flow_examples::trace::{Trace, TraceMode};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Default, Serialize, Deserialize)]
//! struct S;
//! struct One;
//!
//! #[flow(state = S, name = "trace_doc")]
//! impl One {
//!     #[start]
//!     async fn only(&self) -> Result<()> { Ok(()) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), FlowError> {
//! let runner = Runner::new(One);
//! let trace = Trace::new(TraceMode::Quiet);
//! trace.follow(&runner);
//! let run = runner.kickoff(S).await?;
//! let lines = trace.lines();
//! assert!(lines.iter().any(|l| l.contains("✓ only")), "{lines:?}");
//! assert_eq!(trace.events_of(run.run_id()).len(), 4);
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use flow_core::events::FlowEvent;
use flow_core::{Flow, RunStatus, Runner};
use tokio::sync::broadcast::{self, error::TryRecvError};
use uuid::Uuid;

/// How much of a run the trace prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceMode {
    /// Print nothing; record everything (tests).
    Quiet,
    /// Print every event.
    Full,
    /// Print what matters when many runs interleave: routes, failures, pauses, compensation,
    /// and how each run ended; skip method starts, successful finishes and LLM usage.
    Milestones,
}

/// A live trace of the runs of one or more runners. Cheap to clone.
#[derive(Clone)]
pub struct Trace {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace").field("mode", &self.inner.mode).finish_non_exhaustive()
    }
}

struct Inner {
    mode: TraceMode,
    prefix: String,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    receivers: Vec<broadcast::Receiver<FlowEvent>>,
    events: Vec<FlowEvent>,
    lines: Vec<String>,
}

/// How often the background task prints events that arrived (a note prints them at once).
const PUMP_EVERY: Duration = Duration::from_millis(15);

impl Trace {
    /// A trace. Inside a tokio runtime, a background task prints events as they come; it ends
    /// when the last clone of the trace is dropped.
    pub fn new(mode: TraceMode) -> Self {
        Self::with_prefix(mode, "")
    }

    /// A trace whose printed lines start with `prefix` (the order-return child process marks
    /// its lines this way).
    pub fn with_prefix(mode: TraceMode, prefix: impl Into<String>) -> Self {
        let inner = Arc::new(Inner { mode, prefix: prefix.into(), log: Mutex::default() });
        if tokio::runtime::Handle::try_current().is_ok() {
            let weak = Arc::downgrade(&inner);
            tokio::spawn(pump(weak));
        }
        Trace { inner }
    }

    /// The mode.
    pub fn mode(&self) -> TraceMode {
        self.inner.mode
    }

    /// Follows every run of `runner` and its clones from now on.
    pub fn follow<F: Flow>(&self, runner: &Runner<F>) {
        self.log().receivers.push(runner.subscribe());
    }

    /// Adds a line of narration (what the example does between runs), after every event that
    /// arrived before it.
    pub fn note(&self, text: impl AsRef<str>) {
        let mut log = self.log();
        self.inner.drain(&mut log);
        for line in text.as_ref().lines() {
            self.inner.emit(&mut log, format!("• {line}"));
        }
    }

    /// Records and prints every event that has arrived so far.
    pub fn flush(&self) {
        let mut log = self.log();
        self.inner.drain(&mut log);
    }

    /// Every event so far, in arrival order.
    pub fn events(&self) -> Vec<FlowEvent> {
        let mut log = self.log();
        self.inner.drain(&mut log);
        log.events.clone()
    }

    /// The events of one run.
    pub fn events_of(&self, run_id: Uuid) -> Vec<FlowEvent> {
        self.events().into_iter().filter(|e| e.run_id() == run_id).collect()
    }

    /// The routes one run took, as `router → Enum::Variant`, in order.
    pub fn routes_of(&self, run_id: Uuid) -> Vec<String> {
        self.events_of(run_id)
            .into_iter()
            .filter_map(|e| match e {
                FlowEvent::RouteTaken { router, route, .. } => Some(format!("{router} → {route}")),
                _ => None,
            })
            .collect()
    }

    /// Every line so far (printed or, in quiet mode, only recorded).
    pub fn lines(&self) -> Vec<String> {
        let mut log = self.log();
        self.inner.drain(&mut log);
        log.lines.clone()
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.inner.log()
    }
}

impl Inner {
    fn log(&self) -> MutexGuard<'_, Log> {
        // Only pushes happen under the lock; a panic cannot leave the log half-written.
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn drain(&self, log: &mut Log) {
        let mut arrived = Vec::new();
        for rx in &mut log.receivers {
            loop {
                match rx.try_recv() {
                    Ok(event) => arrived.push(Ok(event)),
                    Err(TryRecvError::Lagged(n)) => arrived.push(Err(n)),
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
        }
        for item in arrived {
            match item {
                Ok(event) => {
                    if let Some(line) = describe(&event, self.mode) {
                        self.emit(log, line);
                    }
                    log.events.push(event);
                }
                Err(n) => self.emit(log, format!("… {n} events were dropped because the trace fell behind")),
            }
        }
    }

    // The examples' output: see the module documentation.
    #[allow(clippy::print_stdout)]
    fn emit(&self, log: &mut Log, line: String) {
        if self.mode != TraceMode::Quiet {
            println!("{}{line}", self.prefix);
        }
        log.lines.push(line);
    }
}

impl Drop for Inner {
    // The last events of a run that ended in an error are printed too.
    fn drop(&mut self) {
        let mut log = std::mem::take(self.log.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner));
        self.drain(&mut log);
    }
}

async fn pump(trace: Weak<Inner>) {
    loop {
        tokio::time::sleep(PUMP_EVERY).await;
        let Some(inner) = trace.upgrade() else { return };
        let mut log = inner.log();
        inner.drain(&mut log);
    }
}

/// The last 8 hex digits of a run id: the random part of a UUIDv7, so runs started in the same
/// millisecond still differ.
pub fn short_id(run_id: Uuid) -> String {
    let simple = run_id.simple().to_string();
    simple[simple.len().saturating_sub(8)..].to_owned()
}

/// `12 ms`, `1.3 s`.
pub fn human_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) { format!("{} ms", d.as_millis()) } else { format!("{:.1} s", d.as_secs_f64()) }
}

/// How far away `until` is: `for 3.0 s`, `for 2 h 5 min`, `until a moment ago`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use flow_examples::trace::wait_until;
///
/// let in_two_days = SystemTime::now() + Duration::from_secs(2 * 86400 + 30);
/// assert_eq!(wait_until(in_two_days), "for 2 d 0 h");
/// assert_eq!(wait_until(SystemTime::now() - Duration::from_secs(1)), "until a moment ago");
/// ```
pub fn wait_until(until: std::time::SystemTime) -> String {
    let Ok(left) = until.duration_since(std::time::SystemTime::now()) else {
        return "until a moment ago".into();
    };
    let secs = left.as_secs();
    match secs {
        0..60 => format!("for {}", human_duration(left)),
        60..3600 => format!("for {} min", secs.div_ceil(60)),
        3600..86400 => format!("for {} h {} min", secs / 3600, (secs % 3600) / 60),
        _ => format!("for {} d {} h", secs / 86400, (secs % 86400) / 3600),
    }
}

/// The first `max` characters of `text`, on one line.
pub fn clip(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut out: String = one_line.chars().take(max).collect();
    out.push('…');
    out
}

/// One event as a trace line, or `None` when `mode` skips it.
pub fn describe(event: &FlowEvent, mode: TraceMode) -> Option<String> {
    let all = mode != TraceMode::Milestones;
    let mut s = format!("[{}] ", short_id(event.run_id()));
    match event {
        FlowEvent::RunStarted { run_id, flow, resumed } => {
            let verb = if *resumed { "resumed" } else { "started" };
            let _ = write!(s, "▶ run {run_id} of `{flow}` {verb}");
        }
        FlowEvent::MethodStarted { method, attempt, .. } if all => {
            let _ = write!(s, "  → {method}");
            if *attempt > 1 {
                let _ = write!(s, " (attempt {attempt})");
            }
        }
        FlowEvent::MethodFinished { method, duration, .. } if all => {
            let _ = write!(s, "  ✓ {method} ({})", human_duration(*duration));
        }
        FlowEvent::MethodFailed { method, attempt, error, class, retry_in, .. } => {
            let _ = write!(s, "  ✗ {method} attempt {attempt} failed ({class:?}): {}", clip(error, 110));
            if let Some(delay) = retry_in {
                let _ = write!(s, "; retrying in {}", human_duration(*delay));
            }
        }
        FlowEvent::RouteTaken { router, route, .. } => {
            let _ = write!(s, "  ⤷ {router} routed to {route}");
        }
        FlowEvent::Paused { method, prompt, .. } => {
            let _ = write!(s, "  ⏸ {method} waits for a person: {}", clip(prompt, 110));
        }
        FlowEvent::Sleeping { method, until, parks, .. } => {
            let how = if *parks { "the run parks in its store" } else { "waiting here" };
            let _ = write!(s, "  ⏲ {method} sleeps {} ({how})", wait_until(*until));
        }
        FlowEvent::Woke { method, parked, .. } => {
            let how = if *parked { "runs again after the park" } else { "goes on" };
            let _ = write!(s, "  ⏰ {method} woke and {how}");
        }
        FlowEvent::Parked { until, waiting, .. } => {
            let _ = write!(s, "  ⏸ parked {}, holding no lease; waiting: {}", wait_until(*until), waiting.join(", "));
        }
        FlowEvent::Compensated { method, undoes, error, .. } => match error {
            None => {
                let _ = write!(s, "  ↶ compensation: {method} undid {undoes}");
            }
            Some(e) => {
                let _ = write!(s, "  ↶ compensation: {method} could not undo {undoes}: {}", clip(e, 100));
            }
        },
        FlowEvent::LlmUsage { method, model, usage, .. } if all => {
            let _ = write!(
                s,
                "  ¤ {method}: LLM call to {model}, {} tokens ({} prompt + {} completion)",
                usage.total_tokens, usage.prompt_tokens, usage.completion_tokens
            );
        }
        FlowEvent::RunFailed { method, error, .. } => {
            let _ = write!(s, "  ✗ run failed in {}: {}", method.unwrap_or("(no method)"), clip(error, 110));
        }
        FlowEvent::RunFinished { status, duration, .. } => {
            let what = match status {
                RunStatus::Completed => "completed",
                RunStatus::Paused => "paused, stored until a person answers",
                RunStatus::Escalated => "escalated to a person",
                RunStatus::Failed => "failed (stored; resumable)",
                RunStatus::Compensated => "failed, and its completed steps were compensated",
                RunStatus::Running => "stopped while running",
                RunStatus::Queued => "parked in its queue until a worker continues it",
                RunStatus::Cancelled => "cancelled on request (completed steps compensated)",
            };
            let _ = write!(s, "■ run {what} after {}", human_duration(*duration));
        }
        _ => return None,
    }
    Some(s)
}
