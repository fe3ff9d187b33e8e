//! A readable, live console of runs: one line per thing that happened, as it happens.
//!
//! Turn it on with one line after building a runner:
//!
//! ```
//! # use flow_core::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Clone, Default, Serialize, Deserialize)]
//! # struct S;
//! # struct One;
//! # #[flow(state = S, name = "console_one_line")]
//! # impl One {
//! #     #[start]
//! #     async fn only(&self) -> Result<()> { Ok(()) }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), FlowError> {
//! let runner = Runner::new(One);
//! let _console = flow_core::console::follow(&runner);
//! runner.kickoff(S).await?;
//! # Ok(()) }
//! ```
//!
//! and every run of that runner (and of its clones) prints, on stdout:
//!
//! ```text
//! [3f9c02ab] ▶ run 0190f5c4-…-3f9c02ab of `console_one_line` started
//! [3f9c02ab]   → only
//! [3f9c02ab]   ✓ only (0 ms)
//! [3f9c02ab] ■ run completed after 1 ms
//! ```
//!
//! Each line starts with the last 8 hex digits of the run id ([`short_id`]), so runs that
//! interleave stay apart. Methods started (`→`), finished (`✓`) and failed (`✗`, with the attempt,
//! the error class and the retry delay), routes taken (`⤷`), pauses and parks (`⏸`), timers
//! (`⏲`, `⏰`), compensation (`↶`), LLM usage (`¤`) and how each run ended (`■`; an escalated
//! run shows as the failure that escalated it and an ending "escalated to a person"). [`Detail::Milestones`] keeps only what matters when many runs interleave.
//!
//! The console is built from the runner's typed [`FlowEvent`]s ([`Runner::subscribe`]), not
//! from `tracing`: it needs no subscriber, and it does not mix with your logs. A
//! [`ConsoleBuilder`] writes somewhere else than stdout (a file, a buffer), prefixes every line,
//! keeps the events and lines it saw for a test to read ([`ConsoleBuilder::record`]), and
//! [`Console::note`] adds your own narration in order with the events.
//!
//! Events arrive through a broadcast channel: a console that falls behind by more than the
//! runner's buffer says how many events it missed rather than slowing the runs.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast::{self, error::TryRecvError};
use uuid::Uuid;

use crate::events::FlowEvent;
use crate::{Flow, RunStatus, Runner};

/// How much of a run the console shows.
///
/// ```
/// use flow_core::console::{Console, Detail};
///
/// let console = Console::builder().detail(Detail::Milestones).build();
/// assert_eq!(console.detail(), Detail::Milestones);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Detail {
    /// Every event.
    #[default]
    Full,
    /// What matters when many runs interleave: routes, failures, pauses, timers, compensation
    /// and how each run ended; not method starts, successful finishes or LLM usage.
    Milestones,
}

/// A live console of the runs of one or more runners. Cheap to clone; it writes until the last
/// clone is dropped, and that drop writes the events still waiting.
///
/// Inside a tokio runtime, a background task writes events as they arrive (within a few
/// milliseconds); [`Console::note`], [`Console::flush`] and the readers write them at once.
///
/// ```
/// use flow_core::console::Console;
/// use flow_core::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct S;
/// struct One;
///
/// #[flow(state = S, name = "console_doc")]
/// impl One {
///     #[start]
///     async fn only(&self) -> Result<()> { Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), FlowError> {
/// let runner = Runner::new(One);
/// // Written nowhere, kept for the assertions below.
/// let console = Console::builder().silent().record(true).build();
/// console.follow(&runner);
/// let run = runner.kickoff(S).await?;
/// console.note("the run is done");
/// let lines = console.lines();
/// assert!(lines.iter().any(|l| l.contains("✓ only")), "{lines:?}");
/// assert_eq!(lines.last().map(String::as_str), Some("• the run is done"));
/// assert_eq!(console.events_of(run.run_id()).len(), 4);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("detail", &self.inner.detail)
            .field("prefix", &self.inner.prefix)
            .field("record", &self.inner.record)
            .finish_non_exhaustive()
    }
}

/// How a [`Console`] is set up: where it writes, how much, with which prefix, and whether it
/// keeps what it saw.
///
/// ```
/// use flow_core::console::{Console, Detail};
///
/// let console = Console::builder()
///     .detail(Detail::Milestones)
///     .prefix("worker 1 │ ")
///     .writer(std::io::stderr())
///     .build();
/// console.note("ready");
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct ConsoleBuilder {
    detail: Detail,
    prefix: String,
    out: Option<Box<dyn Write + Send>>,
    record: bool,
}

impl std::fmt::Debug for ConsoleBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleBuilder")
            .field("detail", &self.detail)
            .field("prefix", &self.prefix)
            .field("writes", &self.out.is_some())
            .field("record", &self.record)
            .finish()
    }
}

impl Default for ConsoleBuilder {
    fn default() -> Self {
        ConsoleBuilder {
            detail: Detail::Full,
            prefix: String::new(),
            out: Some(Box::new(std::io::stdout())),
            record: false,
        }
    }
}

impl ConsoleBuilder {
    /// How much to show (default [`Detail::Full`]).
    ///
    /// ```
    /// use flow_core::console::{Console, Detail};
    /// let console = Console::builder().detail(Detail::Milestones).build();
    /// assert_eq!(console.detail(), Detail::Milestones);
    /// ```
    pub fn detail(mut self, detail: Detail) -> Self {
        self.detail = detail;
        self
    }

    /// Text every written line starts with (default none), to tell apart consoles that share
    /// a terminal, such as a parent process and its child. [`Console::lines`] does not carry it.
    ///
    /// ```
    /// use flow_core::console::Console;
    /// let console = Console::builder().prefix("child │ ").build();
    /// console.note("started");
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Where the lines go (default stdout). Each line is written whole and flushed; a write that
    /// fails is dropped, so a closed terminal never stops a run.
    ///
    /// ```
    /// use flow_core::console::Console;
    /// let file = tempfile::tempfile().expect("a temporary file");
    /// let console = Console::builder().writer(file).build();
    /// console.note("to the file");
    /// ```
    pub fn writer(mut self, out: impl Write + Send + 'static) -> Self {
        self.out = Some(Box::new(out));
        self
    }

    /// Writes nowhere; with [`ConsoleBuilder::record`], what a test reads instead.
    ///
    /// ```
    /// use flow_core::console::Console;
    /// let console = Console::builder().silent().record(true).build();
    /// console.note("kept, not written");
    /// assert_eq!(console.lines(), ["• kept, not written"]);
    /// ```
    pub fn silent(mut self) -> Self {
        self.out = None;
        self
    }

    /// Keeps every event and line for [`Console::events`] and [`Console::lines`] (default off:
    /// a console that runs for days would otherwise grow without bound).
    ///
    /// ```
    /// use flow_core::console::Console;
    /// let console = Console::builder().silent().record(true).build();
    /// assert!(console.events().is_empty());
    /// ```
    pub fn record(mut self, record: bool) -> Self {
        self.record = record;
        self
    }

    /// The console. Inside a tokio runtime, a background task starts writing events as they
    /// arrive; it ends when the last clone of the console is dropped.
    ///
    /// ```
    /// let console = flow_core::console::Console::builder().build();
    /// console.flush();
    /// ```
    pub fn build(self) -> Console {
        let inner = Arc::new(Inner {
            detail: self.detail,
            prefix: self.prefix,
            record: self.record,
            log: Mutex::new(Log { out: self.out, ..Log::default() }),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(pump(Arc::downgrade(&inner)));
        }
        Console { inner }
    }
}

/// A console on stdout that follows every run of `runner`, with [`Detail::Full`]: the one line
/// that turns it on. Keep the returned console alive for as long as you want to see runs.
///
/// ```
/// # use flow_core::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Clone, Default, Serialize, Deserialize)]
/// # struct S;
/// # struct One;
/// # #[flow(state = S, name = "console_follow")]
/// # impl One {
/// #     #[start]
/// #     async fn only(&self) -> Result<()> { Ok(()) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), FlowError> {
/// let runner = Runner::new(One);
/// let _console = flow_core::console::follow(&runner);
/// runner.kickoff(S).await?;
/// # Ok(()) }
/// ```
#[must_use = "the console stops when it is dropped: bind it, e.g. `let _console = ...`"]
pub fn follow<F: Flow>(runner: &Runner<F>) -> Console {
    let console = Console::builder().build();
    console.follow(runner);
    console
}

struct Inner {
    detail: Detail,
    prefix: String,
    record: bool,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    receivers: Vec<broadcast::Receiver<FlowEvent>>,
    out: Option<Box<dyn Write + Send>>,
    events: Vec<FlowEvent>,
    lines: Vec<String>,
}

/// How often the background task writes the events that arrived (a note writes them at once).
const PUMP_EVERY: Duration = Duration::from_millis(15);

impl Console {
    /// A builder, writing to stdout with [`Detail::Full`] until told otherwise.
    ///
    /// ```
    /// let console = flow_core::console::Console::builder().build();
    /// assert_eq!(console.detail(), flow_core::console::Detail::Full);
    /// ```
    pub fn builder() -> ConsoleBuilder {
        ConsoleBuilder::default()
    }

    /// How much this console shows.
    ///
    /// ```
    /// let console = flow_core::console::Console::builder().build();
    /// assert_eq!(console.detail(), flow_core::console::Detail::Full);
    /// ```
    pub fn detail(&self) -> Detail {
        self.inner.detail
    }

    /// Follows every run of `runner` and its clones from now on; events of runs started before
    /// are not shown. A console can follow many runners.
    ///
    /// ```
    /// # use flow_core::prelude::*;
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Clone, Default, Serialize, Deserialize)]
    /// # struct S;
    /// # struct One;
    /// # #[flow(state = S, name = "console_follow_method")]
    /// # impl One {
    /// #     #[start]
    /// #     async fn only(&self) -> Result<()> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let console = flow_core::console::Console::builder().silent().record(true).build();
    /// let (first, second) = (Runner::new(One), Runner::new(One));
    /// console.follow(&first).follow(&second);
    /// first.kickoff(S).await?;
    /// second.kickoff(S).await?;
    /// assert_eq!(console.lines().iter().filter(|l| l.contains("■ run completed")).count(), 2);
    /// # Ok(()) }
    /// ```
    pub fn follow<F: Flow>(&self, runner: &Runner<F>) -> &Self {
        self.inner.log().receivers.push(runner.subscribe());
        self
    }

    /// Adds narration (what your program does between runs), one `• ` line per line of
    /// `text`, after every event that arrived before it.
    ///
    /// ```
    /// let console = flow_core::console::Console::builder().silent().record(true).build();
    /// console.note("two\nlines");
    /// assert_eq!(console.lines(), ["• two", "• lines"]);
    /// ```
    pub fn note(&self, text: impl AsRef<str>) {
        let mut log = self.inner.log();
        self.inner.drain(&mut log);
        for line in text.as_ref().lines() {
            self.inner.emit(&mut log, format!("• {line}"));
        }
    }

    /// Writes every event that has arrived so far, before you write something of your own.
    ///
    /// ```
    /// let console = flow_core::console::Console::builder().build();
    /// console.flush();
    /// ```
    pub fn flush(&self) {
        let mut log = self.inner.log();
        self.inner.drain(&mut log);
    }

    /// Every event so far, in arrival order; empty unless the console records.
    ///
    /// ```
    /// let console = flow_core::console::Console::builder().silent().record(true).build();
    /// assert!(console.events().is_empty());
    /// ```
    pub fn events(&self) -> Vec<FlowEvent> {
        let mut log = self.inner.log();
        self.inner.drain(&mut log);
        log.events.clone()
    }

    /// The events of one run; empty unless the console records.
    ///
    /// ```
    /// let console = flow_core::console::Console::builder().silent().record(true).build();
    /// assert!(console.events_of(uuid::Uuid::nil()).is_empty());
    /// ```
    pub fn events_of(&self, run_id: Uuid) -> Vec<FlowEvent> {
        self.events().into_iter().filter(|e| e.run_id() == run_id).collect()
    }

    /// The routes one run took, as `router → Enum::Variant`, in order; empty unless the
    /// console records.
    ///
    /// ```
    /// let console = flow_core::console::Console::builder().silent().record(true).build();
    /// assert!(console.routes_of(uuid::Uuid::nil()).is_empty());
    /// ```
    pub fn routes_of(&self, run_id: Uuid) -> Vec<String> {
        self.events_of(run_id)
            .into_iter()
            .filter_map(|e| match e {
                FlowEvent::RouteTaken { router, route, .. } => Some(format!("{router} → {route}")),
                _ => None,
            })
            .collect()
    }

    /// Every line so far, without the prefix, whether written or not; empty unless the console
    /// records.
    ///
    /// ```
    /// let console = flow_core::console::Console::builder().silent().record(true).build();
    /// console.note("hello");
    /// assert_eq!(console.lines(), ["• hello"]);
    /// ```
    pub fn lines(&self) -> Vec<String> {
        let mut log = self.inner.log();
        self.inner.drain(&mut log);
        log.lines.clone()
    }
}

impl Inner {
    fn log(&self) -> MutexGuard<'_, Log> {
        // Only pushes and whole-line writes happen under the lock; a panic cannot leave the
        // log half-written.
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
                    if let Some(line) = describe(&event, self.detail) {
                        self.emit(log, line);
                    }
                    if self.record {
                        log.events.push(event);
                    }
                }
                Err(n) => self.emit(log, format!("… {n} events were dropped because the console fell behind")),
            }
        }
    }

    fn emit(&self, log: &mut Log, line: String) {
        if let Some(out) = log.out.as_mut() {
            // A console is a view: a terminal that went away must not fail or stop the runs.
            let _ = writeln!(out, "{}{line}", self.prefix).and_then(|()| out.flush());
        }
        if self.record {
            log.lines.push(line);
        }
    }
}

impl Drop for Inner {
    // The last events of a run that ended in an error are written too.
    fn drop(&mut self) {
        let mut log = std::mem::take(self.log.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner));
        self.drain(&mut log);
    }
}

async fn pump(console: Weak<Inner>) {
    loop {
        tokio::time::sleep(PUMP_EVERY).await;
        let Some(inner) = console.upgrade() else { return };
        let mut log = inner.log();
        inner.drain(&mut log);
    }
}

/// The last 8 hex digits of a run id, as the console's lines start: the random part of a
/// UUIDv7, so runs started in the same millisecond still differ.
///
/// ```
/// let id = uuid::Uuid::parse_str("0190f5c4-7d1e-7a2b-9c3d-00003f9c02ab").expect("a uuid");
/// assert_eq!(flow_core::console::short_id(id), "3f9c02ab");
/// ```
pub fn short_id(run_id: Uuid) -> String {
    let simple = run_id.simple().to_string();
    simple[simple.len().saturating_sub(8)..].to_owned()
}

/// A duration as the console shows it: `12 ms`, `1.3 s`.
///
/// ```
/// use std::time::Duration;
/// use flow_core::console::human_duration;
///
/// assert_eq!(human_duration(Duration::from_millis(12)), "12 ms");
/// assert_eq!(human_duration(Duration::from_millis(1250)), "1.2 s");
/// ```
pub fn human_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) { format!("{} ms", d.as_millis()) } else { format!("{:.1} s", d.as_secs_f64()) }
}

/// How far away `until` is: `for 3.0 s`, `for 2 h 5 min`, `until a moment ago`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use flow_core::console::wait_until;
///
/// let in_two_days = SystemTime::now() + Duration::from_secs(2 * 86400 + 30);
/// assert_eq!(wait_until(in_two_days), "for 2 d 0 h");
/// assert_eq!(wait_until(SystemTime::now() - Duration::from_secs(1)), "until a moment ago");
/// ```
pub fn wait_until(until: SystemTime) -> String {
    let Ok(left) = until.duration_since(SystemTime::now()) else {
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

/// The first `max` characters of `text`, on one line, with `…` when cut.
///
/// ```
/// use flow_core::console::clip;
///
/// assert_eq!(clip("a  short\ntext", 20), "a short text");
/// assert_eq!(clip("a longer text", 8), "a longer…");
/// ```
pub fn clip(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut out: String = one_line.chars().take(max).collect();
    out.push('…');
    out
}

/// One event as the console's line, or `None` when `detail` leaves it out.
///
/// ```
/// use flow_core::console::{Detail, describe};
/// use flow_core::events::FlowEvent;
///
/// let route = FlowEvent::RouteTaken { run_id: uuid::Uuid::nil(), router: "triage", route: "Size::Large".into() };
/// assert_eq!(describe(&route, Detail::Milestones).as_deref(), Some("[00000000]   ⤷ triage routed to Size::Large"));
/// ```
pub fn describe(event: &FlowEvent, detail: Detail) -> Option<String> {
    let all = detail == Detail::Full;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorClass;
    use crate::prelude::*;
    use serde::{Deserialize, Serialize};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
        }
    }

    #[derive(Clone, Default, Serialize, Deserialize)]
    struct Parcel {
        heavy: bool,
    }

    #[derive(Clone, Copy, Debug, Serialize, Deserialize, Route)]
    enum Size {
        Small,
        Large,
    }

    #[derive(Default)]
    struct Ship {
        tries: AtomicU32,
    }

    #[flow(state = Parcel, name = "console_ship")]
    impl Ship {
        #[start]
        #[router]
        async fn weigh(&self, cx: &Ctx<Parcel>) -> Result<Size> {
            Ok(if cx.read(|p| p.heavy) { Size::Large } else { Size::Small })
        }

        #[listen(Size::Small, retry(attempts = 2, backoff = fixed("1ms")))]
        async fn post(&self) -> Result<()> {
            if self.tries.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(Error::transient("the post office is closed"));
            }
            Ok(())
        }

        #[listen(Size::Large)]
        async fn freight(&self) -> Result<()> {
            Err(Error::permanent("no truck"))
        }
    }

    /// A line with its durations replaced, so the test does not depend on timing.
    fn timeless(line: &str) -> String {
        let mut out = String::new();
        let mut words = line.split(' ').peekable();
        while let Some(word) = words.next() {
            let unit = words.peek().map(|w| w.trim_end_matches([')', ';']));
            let is_number = word.trim_start_matches('(').parse::<f64>().is_ok();
            if is_number && matches!(unit, Some("ms" | "s")) {
                out.push_str(if word.starts_with('(') { "(T" } else { "T" });
            } else {
                out.push_str(word);
            }
            out.push(' ');
        }
        out.pop();
        out.replace(" ms", "").replace("T s", "T")
    }

    #[tokio::test]
    async fn a_run_renders_one_line_per_event_with_its_short_id_and_the_prefix() {
        let buffer = Buffer::default();
        let runner = Runner::new(Ship::default());
        let console = Console::builder().writer(buffer.clone()).prefix("│ ").build();
        console.follow(&runner);
        let run = runner.kickoff(Parcel { heavy: false }).await.expect("the parcel is posted on the retry");
        console.note("posted");
        drop(console);

        let id = short_id(run.run_id());
        let expected = [
            format!("│ [{id}] ▶ run {} of `console_ship` started", run.run_id()),
            format!("│ [{id}]   → weigh"),
            format!("│ [{id}]   ✓ weigh (T)"),
            format!("│ [{id}]   ⤷ weigh routed to Size::Small"),
            format!("│ [{id}]   → post"),
            format!(
                "│ [{id}]   ✗ post attempt 1 failed ({:?}): the post office is closed; retrying in T",
                ErrorClass::Transient
            ),
            format!("│ [{id}]   → post (attempt 2)"),
            format!("│ [{id}]   ✓ post (T)"),
            format!("│ [{id}] ■ run completed after T"),
            "│ • posted".to_owned(),
        ];
        let written: Vec<String> = buffer.text().lines().map(timeless).collect();
        assert_eq!(written, expected);
    }

    #[tokio::test]
    async fn milestones_keep_routes_failures_and_endings_and_a_recording_console_keeps_lines() {
        let buffer = Buffer::default();
        let runner = Runner::new(Ship::default());
        let console = Console::builder().writer(buffer.clone()).detail(Detail::Milestones).record(true).build();
        console.follow(&runner);
        let failed = runner.kickoff(Parcel { heavy: true }).await;
        assert!(failed.is_err(), "freight always fails");
        let lines: Vec<String> = console.lines().iter().map(|l| timeless(l)).collect();
        let body: Vec<&str> = lines.iter().map(|l| l.split_once("] ").map_or(l.as_str(), |(_, rest)| rest)).collect();
        assert_eq!(body.first().copied().map(|l| l.starts_with("▶ run ")), Some(true), "{body:?}");
        assert!(body.contains(&"  ⤷ weigh routed to Size::Large"), "{body:?}");
        assert!(body.iter().any(|l| l.starts_with("  ✗ freight attempt 1 failed (Permanent): no truck")), "{body:?}");
        assert!(body.iter().any(|l| l.starts_with("  ✗ run failed in freight: ")), "{body:?}");
        assert!(body.iter().all(|l| !l.contains('→') || l.contains('⤷')), "no method starts: {body:?}");
        assert!(body.iter().all(|l| !l.contains('✓')), "no method finishes: {body:?}");
        let run_id = console.events().first().map(FlowEvent::run_id).expect("events were recorded");
        assert_eq!(console.routes_of(run_id), ["weigh → Size::Large"]);
        assert_eq!(buffer.text().lines().count(), lines.len(), "what is written is what is recorded");
    }

    #[tokio::test]
    async fn a_console_that_does_not_record_keeps_nothing() {
        let runner = Runner::new(Ship::default());
        let console = Console::builder().silent().build();
        console.follow(&runner);
        runner.kickoff(Parcel { heavy: false }).await.expect("posted");
        assert!(console.lines().is_empty());
        assert!(console.events().is_empty());
    }

    #[test]
    fn every_kind_of_event_has_its_line() {
        let run_id = Uuid::from_u128(0xabcdef12);
        let usage = crate::TokenUsage { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 };
        let later = SystemTime::now() + Duration::from_secs(2 * 3600 + 5 * 60 + 30);
        let cases = [
            (
                FlowEvent::RunStarted { run_id, flow: "f", resumed: true },
                "▶ run 00000000-0000-0000-0000-0000abcdef12 of `f` resumed",
            ),
            (
                FlowEvent::Paused { run_id, method: "approve", prompt: "OK?".into() },
                "  ⏸ approve waits for a person: OK?",
            ),
            (
                FlowEvent::Sleeping { run_id, method: "wait", step_key: "wait".into(), until: later, parks: true },
                "  ⏲ wait sleeps for 2 h 5 min (the run parks in its store)",
            ),
            (
                FlowEvent::Woke { run_id, method: "wait", step_key: "wait".into(), parked: false },
                "  ⏰ wait woke and goes on",
            ),
            (
                FlowEvent::Parked { run_id, until: later, waiting: vec!["wait".into()] },
                "  ⏸ parked for 2 h 5 min, holding no lease; waiting: wait",
            ),
            (
                FlowEvent::Compensated { run_id, method: "refund", undoes: "charge", error: None },
                "  ↶ compensation: refund undid charge",
            ),
            (
                FlowEvent::Compensated { run_id, method: "refund", undoes: "charge", error: Some("bank down".into()) },
                "  ↶ compensation: refund could not undo charge: bank down",
            ),
            (
                FlowEvent::LlmUsage { run_id, method: "ask", model: "m".into(), usage },
                "  ¤ ask: LLM call to m, 15 tokens (10 prompt + 5 completion)",
            ),
            (
                FlowEvent::RunFinished { run_id, status: RunStatus::Paused, duration: Duration::from_millis(1500) },
                "■ run paused, stored until a person answers after 1.5 s",
            ),
        ];
        for (event, body) in cases {
            assert_eq!(describe(&event, Detail::Full), Some(format!("[abcdef12] {body}")));
        }
        let usage = FlowEvent::LlmUsage { run_id, method: "ask", model: "m".into(), usage };
        assert_eq!(describe(&usage, Detail::Milestones), None);
    }

    #[test]
    fn a_long_error_is_clipped_to_one_line() {
        let error = format!("first line\n{}", "x".repeat(200));
        let event = FlowEvent::RunFailed { run_id: Uuid::nil(), method: None, error };
        let line = describe(&event, Detail::Milestones).expect("a failure is a milestone");
        assert!(line.starts_with("[00000000]   ✗ run failed in (no method): first line xxx"), "{line}");
        assert!(line.ends_with('…') && !line.contains('\n'), "{line}");
    }
}
