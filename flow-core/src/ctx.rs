//! [`Ctx`]: what a flow method sees of its run: the state, the journal of effects, the run's
//! identity and the way to ask a person for input.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::task::AtomicWaker;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::error::{Error, Special};
use crate::events::FlowEvent;
use crate::input::{InputRequest, PauseRequest};
use crate::journal::{Journal, TokenUsage, request_hash};
use crate::step_key::StepKey;
use crate::store::{JournalEntry, Store, StoreError, now_ms};

/// What every step of one run shares.
pub(crate) struct RunShared {
    pub(crate) run_id: Uuid,
    pub(crate) store: Option<Arc<dyn Store>>,
    pub(crate) events: broadcast::Sender<FlowEvent>,
    pub(crate) usage: Mutex<TokenUsage>,
    /// Effects recorded in this process: replayed on an in-process retry even without a store.
    pub(crate) journal: Mutex<HashMap<(String, u32), JournalEntry>>,
    /// A timer at least this far away parks the run in the store rather than holding this
    /// process (see [`Ctx::sleep`]); `None` for a run without a store, which always waits here.
    pub(crate) park_after: Option<Duration>,
    /// Where the run's stream items go, when something wants them (`crate::stream`).
    pub(crate) stream: Option<Arc<crate::stream::RunStream>>,
    /// The flow's name, which a [`MethodRef`](crate::MethodRef) must carry to be read here.
    pub(crate) flow: &'static str,
    /// The latest output of each method of the run, by method id, for [`Ctx::output`]:
    /// set by the executor as each step completes.
    pub(crate) outputs: Mutex<Vec<Option<Arc<Value>>>>,
    /// What embeds memory for [`Ctx::recall`] and [`Ctx::remember`]; `None`: the built-in
    /// [`HashEmbedder`](crate::memory::HashEmbedder).
    pub(crate) embedder: Option<Arc<dyn crate::memory::Embedder>>,
}

impl RunShared {
    pub(crate) fn emit(&self, make: impl FnOnce() -> FlowEvent) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(make());
        }
    }

    fn journal_cache(&self) -> MutexGuard<'_, HashMap<(String, u32), JournalEntry>> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a method's future was stopped from outside its own code.
#[derive(Debug)]
pub(crate) enum Interrupt {
    /// The method asked for input that is not there yet.
    Pause(PauseRequest),
    /// The input given at resume does not fit the requested type.
    InvalidInput { expected: String, message: String },
    /// The method sleeps until this time (ms since the Unix epoch), far enough away for the
    /// run to be parked in the store rather than held by this process.
    Sleep { until_ms: i64 },
}

pub(crate) type Update<S> = Box<dyn Fn(&mut S) + Send + Sync>;

/// A method's state updates, in the order it made them. The first is held inline: most
/// methods make one, and a vector for it would be an allocation per step.
pub(crate) struct Updates<S> {
    first: Option<Update<S>>,
    rest: Vec<Update<S>>,
}

impl<S> Default for Updates<S> {
    fn default() -> Self {
        Updates { first: None, rest: Vec::new() }
    }
}

impl<S> Updates<S> {
    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn push(&mut self, update: Update<S>) {
        if self.first.is_none() {
            self.first = Some(update);
        } else {
            self.rest.push(update);
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Update<S>> {
        self.first.iter().chain(&self.rest)
    }
}

/// A method's view of the state: the run's state when the method started, plus its own
/// updates. The copy with the updates applied is made only if the method reads after updating,
/// so a method that only writes never copies the state.
struct View<S> {
    base: Arc<S>,
    local: Option<S>,
    updates: Updates<S>,
}

impl<S: Clone> View<S> {
    fn current(&mut self) -> &S {
        if self.updates.is_empty() {
            return &self.base;
        }
        let (base, updates) = (&self.base, &self.updates);
        self.local.get_or_insert_with(|| {
            let mut s = S::clone(base);
            for u in updates.iter() {
                u(&mut s);
            }
            s
        })
    }
}

struct Scope<S> {
    run: Arc<RunShared>,
    method: &'static str,
    step_key: StepKey,
    /// `step_key` as text, made the first time something asks for it.
    step_key_text: OnceLock<String>,
    attempt: u32,
    view: Mutex<View<S>>,
    seq: AtomicU32,
    input: Mutex<Option<Value>>,
    interrupt: Mutex<Option<Interrupt>>,
    /// Set once `interrupt` holds a reason; checked by the executor after each poll of the
    /// method that did not complete.
    interrupted: AtomicBool,
    /// Wakes the method's task when the interrupt comes from another task (the method may
    /// hand its `Ctx` to a task of its own). Registered only while the method is pending.
    interrupt_waker: AtomicWaker,
    /// Whether the method read the state (`read`, `state`), and whether it updated the state
    /// after a read: what the debug-build check for lost updates looks at.
    has_read: AtomicBool,
    read_then_updated: AtomicBool,
    /// Milliseconds this call has waited (or is waiting) in [`Ctx::sleep`] in this process:
    /// a wait the method asked for is not work, so it does not count against its time limit.
    slept_ms: AtomicU64,
    /// Tokens this call's LLM calls used (`report_usage`), for its step row.
    usage: Mutex<Option<TokenUsage>>,
}

/// The context of one method call.
///
/// State access never holds a lock across an `.await`: [`Ctx::read`] and [`Ctx::update`] take
/// closures. A method sees the state as it was when it started plus its own updates; its
/// updates reach the run's state when it completes, in completion order, and are lost if it
/// fails, so a retry starts clean.
///
/// ```
/// use flow_core::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct Tally { seen: Vec<String>, count: u32 }
/// struct Collect;
///
/// #[flow(state = Tally)]
/// impl Collect {
///     #[start]
///     async fn add(&self, cx: &Ctx<Tally>) -> Result<u32> {
///         let item = format!("item for run {}", cx.run_id());
///         cx.update(move |s| {
///             s.seen.push(item.clone());
///             s.count += 1;
///         });
///         Ok(cx.read(|s| s.count))
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), FlowError> {
/// let run = Collect.kickoff(Tally::default()).await?.completed()?;
/// assert_eq!(run.state.count, 1);
/// assert_eq!(run.output::<u32>()?, 1);
/// # Ok(())
/// # }
/// ```
pub struct Ctx<S> {
    scope: Arc<Scope<S>>,
}

impl<S> Clone for Ctx<S> {
    fn clone(&self) -> Self {
        Ctx { scope: Arc::clone(&self.scope) }
    }
}

impl<S> std::fmt::Debug for Ctx<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("run_id", &self.scope.run.run_id)
            .field("method", &self.scope.method)
            .field("step_key", &self.step_key())
            .field("attempt", &self.scope.attempt)
            .finish()
    }
}

// Needs nothing of the state type, so `Debug` and the executor's task can use it too.
impl<S> Ctx<S> {
    /// The step key, `method#n` for the n-th call of the method in this run; the same on
    /// every re-run of this step.
    pub fn step_key(&self) -> &str {
        match &self.scope.step_key {
            StepKey::Text(t) => t,
            key => self.scope.step_key_text.get_or_init(|| key.to_string()),
        }
    }

    /// How long this call has slept in [`Ctx::sleep`] so far in this process (the current
    /// sleep counted whole from its start): added to the method's time limit.
    pub(crate) fn slept(&self) -> Duration {
        Duration::from_millis(self.scope.slept_ms.load(Ordering::Relaxed))
    }

    /// Sends `value` to the run's stream ([`Channels::CUSTOM`](crate::stream::Channels::CUSTOM)),
    /// named with this method and step: progress, partial results, anything a watcher should
    /// see before the step completes. Costs nothing when no stream takes custom items. Not
    /// journaled: a step that runs again emits again.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::stream::{Channels, RunItem, StreamItem};
    /// use futures::StreamExt;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct S;
    /// struct Crawl;
    /// #[flow(state = S)]
    /// impl Crawl {
    ///     #[start]
    ///     async fn crawl(&self, cx: &Ctx<S>) -> Result<()> {
    ///         for page in 1..=2 {
    ///             cx.emit(serde_json::json!({ "page": page }))?;
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let items: Vec<_> = Runner::new(Crawl).stream(S, Channels::CUSTOM).collect().await;
    /// let pages: Vec<_> = items
    ///     .iter()
    ///     .filter_map(|i| match i {
    ///         StreamItem::Item { item: RunItem::Custom { value, step_key, .. }, .. } => Some((step_key.as_str(), value["page"].clone())),
    ///         _ => None,
    ///     })
    ///     .collect();
    /// assert_eq!(pages, [("crawl#1", 1.into()), ("crawl#1", 2.into())]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn emit(&self, value: impl Serialize) -> Result<(), Error> {
        let wanted = self.scope.run.stream.as_ref().is_some_and(|s| s.wants(crate::stream::Channels::CUSTOM));
        if !wanted {
            return Ok(());
        }
        let value = serde_json::to_value(value).map_err(|e| {
            Error::permanent(format!(
                "run {} step `{}`: the value given to `cx.emit` cannot be encoded as JSON: {e}",
                self.scope.run.run_id,
                self.step_key()
            ))
        })?;
        self.stream_item(crate::stream::Channels::CUSTOM, |method, step_key| crate::stream::RunItem::Custom {
            method,
            step_key,
            value,
        });
        Ok(())
    }

    /// Makes and sends a stream item of this step, when a stream takes `channel`.
    fn stream_item(
        &self,
        channel: crate::stream::Channels,
        make: impl FnOnce(String, String) -> crate::stream::RunItem,
    ) {
        if let Some(stream) = self.scope.run.stream.as_ref().filter(|s| s.wants(channel)) {
            stream.push(make(self.scope.method.to_string(), self.step_key().to_string()));
        }
    }

    /// Ready once the method was stopped from outside its code (a pause).
    pub(crate) fn poll_interrupted(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.scope.interrupted.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.scope.interrupt_waker.register(cx.waker());
        // An interrupt between the check and the registration would have found no waker.
        if self.scope.interrupted.load(Ordering::Acquire) { Poll::Ready(()) } else { Poll::Pending }
    }
}

// Bounded by what these methods use, not by `State`: a state that lacks a serde derive is
// reported once, on `#[flow(state = ...)]`, not again on every `cx.read` or `cx.update`.
impl<S: Clone + Send + Sync> Ctx<S> {
    pub(crate) fn new(
        run: Arc<RunShared>,
        method: &'static str,
        step_key: StepKey,
        attempt: u32,
        state: Arc<S>,
        input: Option<Value>,
    ) -> Self {
        Ctx {
            scope: Arc::new(Scope {
                run,
                method,
                step_key,
                step_key_text: OnceLock::new(),
                attempt,
                view: Mutex::new(View { base: state, local: None, updates: Updates::default() }),
                seq: AtomicU32::new(0),
                input: Mutex::new(input),
                interrupt: Mutex::new(None),
                interrupted: AtomicBool::new(false),
                interrupt_waker: AtomicWaker::new(),
                has_read: AtomicBool::new(false),
                read_then_updated: AtomicBool::new(false),
                slept_ms: AtomicU64::new(0),
                usage: Mutex::new(None),
            }),
        }
    }

    fn view(&self) -> MutexGuard<'_, View<S>> {
        // Closures given to `read`/`update` may panic; the view is still whole after that
        // (an update is recorded only after it ran), so poisoning carries no meaning here.
        self.scope.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The run's id.
    pub fn run_id(&self) -> Uuid {
        self.scope.run.run_id
    }

    /// The method being run.
    pub fn method(&self) -> &'static str {
        self.scope.method
    }

    /// The attempt number, from 1.
    pub fn attempt(&self) -> u32 {
        self.scope.attempt
    }

    /// A key that is the same on every re-run of this step (`run_id:step_key`): pass it to
    /// external APIs that deduplicate requests.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.scope.run.run_id, self.step_key())
    }

    /// Reads the state through a closure: the state as it was when this method started, plus
    /// this method's own updates. Branches running beside it do not show here until they and
    /// this method have completed.
    ///
    /// Read to decide or to compute an output, **not to write back**: a value read here and
    /// then written with [`Ctx::update`] overwrites whatever a parallel branch changed in the
    /// meantime. Change a field from its current value inside the update instead:
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Clone, Default, Serialize, Deserialize)]
    /// struct S { topic: String, visits: u32, notes: Vec<String> }
    /// struct Visit;
    ///
    /// #[flow(state = S)]
    /// impl Visit {
    ///     #[start]
    ///     async fn left(&self, cx: &Ctx<S>) -> Result<()> { visit(cx) }
    ///     #[start]
    ///     async fn right(&self, cx: &Ctx<S>) -> Result<()> { visit(cx) }
    /// }
    ///
    /// fn visit(cx: &Ctx<S>) -> Result<()> {
    ///     // Reading to compute something new is fine...
    ///     let note = cx.read(|s| format!("visited {}", s.topic));
    ///     cx.update(move |s| s.notes.push(note.clone()));
    ///     // ...but not `let n = cx.read(|s| s.visits); cx.update(move |s| s.visits = n + 1);`,
    ///     // which loses the other branch's visit. Count from the current value:
    ///     cx.update(|s| s.visits += 1);
    ///     Ok(())
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let run = Visit.kickoff(S { topic: "tides".into(), ..S::default() }).await?.completed()?;
    /// assert_eq!(run.state.visits, 2);
    /// assert_eq!(run.state.notes, ["visited tides", "visited tides"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        self.scope.has_read.store(true, Ordering::Relaxed);
        f(self.view().current())
    }

    /// A copy of the state as this method sees it. The same caution as for [`Ctx::read`]
    /// applies: change fields inside [`Ctx::update`], not by writing back values from the copy.
    pub fn state(&self) -> S {
        self.scope.has_read.store(true, Ordering::Relaxed);
        S::clone(self.view().current())
    }

    /// The latest output of a method of this run, `None` until it has completed: any
    /// method's, not only this one's trigger's, read without copying it into the state. The
    /// method is named by the constant `#[flow]` writes for it, its name in upper case, which
    /// carries its output type, so the compiler checks the type read against the type the
    /// method returns. Outputs are stored with the run's steps, so a resumed or forked run
    /// reads them too.
    ///
    /// An error says the method belongs to another flow, or that its stored output no
    /// longer fits its type (the flow changed since the run was stored).
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S;
    /// struct Report;
    ///
    /// #[flow(state = S)]
    /// impl Report {
    ///     #[start]
    ///     async fn count(&self) -> Result<u32> { Ok(3) }
    ///
    ///     #[listen(count)]
    ///     async fn title(&self) -> Result<String> { Ok("Weekly".into()) }
    ///
    ///     #[listen(title)]
    ///     async fn render(&self, cx: &Ctx<S>) -> Result<String> {
    ///         let count: Option<u32> = cx.output(Self::COUNT)?;
    ///         let title = cx.output(Self::TITLE)?.unwrap_or_default();
    ///         Ok(format!("{title}: {}", count.unwrap_or(0)))
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let run = Report.kickoff(S).await?.completed()?;
    /// assert_eq!(run.output::<String>()?, "Weekly: 3");
    /// # Ok(())
    /// # }
    /// ```
    pub fn output<T: DeserializeOwned>(&self, method: crate::MethodRef<T>) -> Result<Option<T>, Error> {
        let run = &self.scope.run;
        if method.flow() != run.flow {
            return Err(Error::permanent(format!(
                "`cx.output` in `{}` of run {} was given `{method:?}`, a method of flow `{}`, but the run is of flow \
                 `{}`: name a method of this flow (`Self::METHOD`)",
                self.scope.method,
                run.run_id,
                method.flow(),
                run.flow
            )));
        }
        let value = run.outputs.lock().unwrap_or_else(|p| p.into_inner()).get(method.index()).cloned().flatten();
        let Some(value) = value else { return Ok(None) };
        T::deserialize(&*value).map(Some).map_err(|e| {
            Error::permanent(format!(
                "the stored output of `{}` in run {} does not fit `{}`: {e}; the flow changed since the run was stored",
                method.name(),
                run.run_id,
                std::any::type_name::<T>()
            ))
        })
    }

    /// Changes the state. The change is visible to this method at once and reaches the run's
    /// state when the method completes; parallel methods' changes are applied one after the
    /// other, each to the state the others left, so none is lost. The closure may run more than
    /// once (on this method's view, on the run's state, and in debug builds on copies to check
    /// for lost updates), which is why it is `Fn`; keep it free of side effects.
    ///
    /// The closure gets the run's state as it is when the method completes, so write changes
    /// relative to it (`s.count += 1`, `s.items.push(..)`). A value captured from an earlier
    /// [`Ctx::read`] is from when the method started: writing it back (`s.count = read + 1`)
    /// silently undoes what parallel branches did to that field meanwhile. In debug builds the
    /// run logs a warning (once per method) when a method's update leaves a field at the same
    /// value whether or not a parallel branch's change to it was there.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Clone, Default, Serialize, Deserialize)]
    /// struct S { words: u32, drafts: Vec<String> }
    /// struct Write;
    ///
    /// #[flow(state = S)]
    /// impl Write {
    ///     #[start]
    ///     async fn intro(&self, cx: &Ctx<S>) -> Result<()> { draft(cx, "intro", 120) }
    ///     #[start]
    ///     async fn body(&self, cx: &Ctx<S>) -> Result<()> { draft(cx, "body", 900) }
    /// }
    ///
    /// fn draft(cx: &Ctx<S>, part: &str, words: u32) -> Result<()> {
    ///     let part = part.to_string();
    ///     cx.update(move |s| {
    ///         s.words += words;
    ///         s.drafts.push(part.clone());
    ///     });
    ///     Ok(())
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let run = Write.kickoff(S::default()).await?.completed()?;
    /// assert_eq!(run.state.words, 1020);
    /// assert_eq!(run.state.drafts.len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Because it may run more than once, a value moved into the closure must still be there
    /// for the next run: clone it inside the closure. `cx.update(move |s| s.text = text)`
    /// fails with rustc's "cannot move out of `text`, a captured variable in an `Fn` closure";
    /// write `s.text = text.clone()`.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct Article { text: String }
    /// struct Writer;
    ///
    /// #[flow(state = Article)]
    /// impl Writer {
    ///     #[start]
    ///     async fn write(&self, cx: &Ctx<Article>) -> Result<()> {
    ///         let text = String::from("draft");
    ///         cx.update(move |s| s.text = text.clone());
    ///         Ok(())
    ///     }
    /// }
    /// # let _ = Writer::graph();
    /// ```
    ///
    /// ```compile_fail,E0507
    /// # use flow_core::prelude::*;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct Article { text: String }
    /// # struct Writer;
    /// # #[flow(state = Article)]
    /// # impl Writer {
    /// #     #[start]
    /// #     async fn write(&self, cx: &Ctx<Article>) -> Result<()> {
    /// let text = String::from("draft");
    /// cx.update(move |s| s.text = text); // the second run would find `text` gone
    /// #         Ok(())
    /// #     }
    /// # }
    /// ```
    pub fn update(
        &self,
        // The comment below is on the line rustc shows when a closure moves a captured value out.
        f: impl Fn(&mut S) + Send + Sync + 'static, // runs more than once: clone what it moves, `s.x = x.clone()`
    ) {
        if self.scope.has_read.load(Ordering::Relaxed) {
            self.scope.read_then_updated.store(true, Ordering::Relaxed);
        }
        let mut view = self.view();
        if let Some(local) = &mut view.local {
            f(local);
        }
        view.updates.push(Box::new(f));
    }

    /// The run's state as it was when this method started, if the method updated the state
    /// after reading it (the only case the debug-build check for lost updates looks at).
    #[cfg(debug_assertions)]
    pub(crate) fn read_then_updated(&self) -> Option<Arc<S>> {
        self.scope.read_then_updated.load(Ordering::Relaxed).then(|| Arc::clone(&self.view().base))
    }

    pub(crate) fn take_updates(&self) -> Updates<S> {
        std::mem::take(&mut self.view().updates)
    }

    /// Tokens this call's LLM calls reported, if it made any.
    pub(crate) fn step_usage(&self) -> Option<TokenUsage> {
        *self.scope.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn take_interrupt(&self) -> Option<Interrupt> {
        self.scope.interrupt.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn interrupt(&self, why: Interrupt) {
        *self.scope.interrupt.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        self.scope.interrupted.store(true, Ordering::Release);
        self.scope.interrupt_waker.wake();
    }

    pub(crate) fn run_shared(&self) -> &RunShared {
        &self.scope.run
    }

    fn next_seq(&self) -> u32 {
        self.scope.seq.fetch_add(1, Ordering::Relaxed)
    }

    async fn recorded(&self, seq: u32) -> Result<Option<JournalEntry>, Error> {
        let key = (self.step_key().to_string(), seq);
        if let Some(e) = self.scope.run.journal_cache().get(&key) {
            return Ok(Some(e.clone()));
        }
        match &self.scope.run.store {
            Some(store) => {
                let step_key = self.step_key();
                with_store_retries("reading the journal", || store.journal_get(self.scope.run.run_id, step_key, seq))
                    .await
            }
            None => Ok(None),
        }
    }

    async fn keep_entry(&self, entry: JournalEntry) -> Result<JournalEntry, Error> {
        let winner = match &self.scope.run.store {
            // First writer wins, so writing the same entry again after an ambiguous failure is safe.
            Some(store) => with_store_retries("recording an effect", || store.journal_put(entry.clone())).await?,
            None => entry,
        };
        self.scope.run.journal_cache().insert((winner.step_key.clone(), winner.seq), winner.clone());
        Ok(winner)
    }

    /// Runs a side effect once: its result is journaled, and when this step runs again (after
    /// a crash or a retry) the recorded result is returned without running it. The closure
    /// gets an idempotency key for this effect (`run_id:step_key:seq`) to pass to external
    /// systems, so that even the one call in flight at a crash can be deduplicated there.
    ///
    /// Effects are matched by their order in the step; a step that replays them in another
    /// order, or asks one with another request, gets a non-determinism error (see
    /// [`Journal::record`]).
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Clone, Default, Serialize, Deserialize)]
    /// struct S { charge_id: String }
    /// struct Pay;
    ///
    /// #[flow(state = S)]
    /// impl Pay {
    ///     #[start]
    ///     async fn charge(&self, cx: &Ctx<S>) -> Result<()> {
    ///         let id: String = cx.effect("charge_card", |key| async move {
    ///             // call the payment API with `key` as its idempotency key
    ///             Ok(format!("ch_{}", key.len()))
    ///         }).await?;
    ///         cx.update(move |s| s.charge_id = id.clone());
    ///         Ok(())
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let run = Pay.kickoff(S::default()).await?.completed()?;
    /// assert!(run.state.charge_id.starts_with("ch_"));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn effect<T, F, Fut>(&self, name: &str, f: F) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<T, Error>> + Send,
    {
        let seq = self.scope.seq.load(Ordering::Relaxed);
        let key = format!("{}:{}:{}", self.scope.run.run_id, self.step_key(), seq);
        let request = Value::Null;
        let fut = f(key);
        let effect: BoxFuture<'_, Result<Value, Error>> = Box::pin(async move {
            let v = fut.await?;
            crate::faithful::to_value(&v).map_err(|r| r.into_step_error(format_args!("the result of effect `{name}`")))
        });
        let value = self.record("effect", name, &request, effect).await?;
        T::deserialize(&value).map_err(|e| {
            Error::permanent(format!(
                "recorded result of effect `{name}` does not fit `{}`: {e}",
                std::any::type_name::<T>()
            ))
        })
    }

    /// Asks a person for a value of type `T`.
    ///
    /// The first time, the run pauses here: `kickoff` (or `resume`) returns
    /// [`RunOutcome::Paused`](crate::RunOutcome::Paused) with the request, and the run is
    /// stored. [`Runner::resume_with`](crate::Runner::resume_with) runs this method again, and
    /// this call returns the answer (journaled, so further re-runs see the same answer). An
    /// answer that does not fit `T` leaves the run paused and `resume_with` returns
    /// [`FlowError::InvalidInput`](crate::FlowError::InvalidInput).
    ///
    /// Effects before the question are journaled, so they do not repeat when the method runs
    /// again with the answer.
    ///
    /// `T` describes itself with a JSON Schema (`#[derive(JsonSchema)]`, re-exported as
    /// [`flow_core::schemars`](crate::schemars)): the pause stores it
    /// ([`PauseRequest::answer_schema`]), so a dashboard or `flows answer` can show what to
    /// answer without the flow's code.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::schemars::JsonSchema;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Clone, Default, Serialize, Deserialize)]
    /// struct S { approved: bool }
    ///
    /// #[derive(Serialize, Deserialize, JsonSchema)]
    /// #[schemars(crate = "flow_core::schemars")]
    /// struct Approval { approve: bool, note: Option<String> }
    ///
    /// struct Review;
    ///
    /// #[flow(state = S)]
    /// impl Review {
    ///     #[start]
    ///     async fn ask_editor(&self, cx: &Ctx<S>) -> Result<()> {
    ///         let answer: Approval = cx.ask("Publish?").await?;
    ///         cx.update(move |s| s.approved = answer.approve);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let runner = Runner::new(Review).with_store(flow_core::store::MemoryStore::new());
    /// let RunOutcome::Paused(paused) = runner.kickoff(S::default()).await? else { panic!("expected a pause") };
    /// assert_eq!(paused.request.answer_schema["properties"]["approve"]["type"], "boolean");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ask<T>(&self, request: impl Into<InputRequest>) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned + schemars::JsonSchema,
    {
        let request = request.into();
        let seq = self.next_seq();
        let expected = std::any::type_name::<T>().to_string();
        if let Some(entry) = self.recorded(seq).await? {
            if entry.kind != "input" {
                return Err(self.nondeterminism(seq, "input", &entry));
            }
            return T::deserialize(&entry.output)
                .map_err(|e| Error::permanent(format!("the recorded answer does not fit `{expected}`: {e}")));
        }
        let answer = self.scope.input.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(answer) = answer {
            match T::deserialize(&answer) {
                Ok(v) => {
                    self.keep_entry(JournalEntry {
                        run_id: self.scope.run.run_id,
                        step_key: self.step_key().to_string(),
                        seq,
                        kind: "input".into(),
                        name: request.prompt.clone(),
                        request_hash: 0,
                        output: answer,
                    })
                    .await?;
                    return Ok(v);
                }
                Err(e) => self.interrupt(Interrupt::InvalidInput { expected, message: e.to_string() }),
            }
        } else {
            self.interrupt(Interrupt::Pause(PauseRequest {
                run_id: self.scope.run.run_id,
                method: self.scope.method.to_string(),
                step_key: self.step_key().to_string(),
                prompt: request.prompt,
                metadata: request.metadata,
                expected_type: expected,
                answer_schema: Value::from(schemars::schema_for!(T)),
            }));
        }
        // The runtime drops this future once it sees the interrupt.
        std::future::pending().await
    }

    /// Waits `duration`, durably: the time to wake is journaled on the first call, so when
    /// this step runs again (after a crash, a retry or a park) it waits only for what is left
    /// of the same wait, and not at all once that time has passed.
    ///
    /// A short wait is spent in this process (a tokio timer; a lost lease still stops the
    /// run). A wait of at least the park threshold ([`Runner::park_after`], or
    /// `#[flow(park_after = "..")]`, default [`DEFAULT_PARK_AFTER`]) in a run with a store **parks** the run instead: the step stops
    /// here, and once nothing else of the run is running, the run is stored as
    /// [`RunStatus::Queued`](crate::RunStatus::Queued) until the wake time, its lease given
    /// back, and `kickoff`/`resume` return [`RunOutcome::Sleeping`](crate::RunOutcome::Sleeping).
    /// No process holds it meanwhile: a serving [`Worker`](crate::Worker) (or
    /// [`Runner::resume`]) continues it when it is due, days later included, and the step runs
    /// again from its start. Everything before the sleep must therefore be journaled
    /// ([`Ctx::effect`], LLM calls) or safe to repeat, as for [`Ctx::ask`]; state updates made
    /// before a park are dropped with the step and made again on the re-run. Resumed early,
    /// the run parks again without running the step.
    ///
    /// A run without a store always waits in this process. Time spent sleeping does not count
    /// against the step's time limit.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::store::MemoryStore;
    /// use serde::{Deserialize, Serialize};
    /// use std::time::Duration;
    ///
    /// #[derive(Clone, Default, Serialize, Deserialize)]
    /// struct Trial { reminded: bool }
    /// struct Onboarding;
    ///
    /// #[flow(state = Trial)]
    /// impl Onboarding {
    ///     #[start]
    ///     async fn remind_later(&self, cx: &Ctx<Trial>) -> Result<()> {
    ///         cx.sleep(Duration::from_secs(3 * 24 * 3600)).await?;
    ///         cx.update(|s| s.reminded = true);
    ///         Ok(())
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let runner = Runner::new(Onboarding).with_store(MemoryStore::new());
    /// let outcome = runner.kickoff(Trial::default()).await?;
    /// // Parked for three days: nothing holds it; a worker continues it when it is due.
    /// let sleeping = outcome.sleeping().expect("parked");
    /// assert_eq!(outcome.status(), RunStatus::Queued);
    /// assert!(sleeping.until > std::time::SystemTime::now() + Duration::from_secs(2 * 24 * 3600));
    /// // Resumed early, it parks again until the same time.
    /// let again = runner.resume(outcome.run_id()).await?;
    /// assert_eq!(again.sleeping().map(|s| s.until), Some(sleeping.until));
    /// # Ok(())
    /// # }
    /// # use flow_core::RunStatus;
    /// ```
    ///
    /// [`Runner::park_after`]: crate::Runner::park_after
    /// [`Runner::resume`]: crate::Runner::resume
    /// [`DEFAULT_PARK_AFTER`]: crate::DEFAULT_PARK_AFTER
    pub async fn sleep(&self, duration: Duration) -> Result<(), Error> {
        let seq = self.next_seq();
        let wake = match self.recorded_timer(seq).await? {
            Some(wake) => wake,
            None => {
                let ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
                self.remember_timer(seq, "sleep", now_ms().saturating_add(ms)).await?
            }
        };
        self.wait_until(wake).await
    }

    /// Waits until `at`, durably: as [`Ctx::sleep`] (journaled, parked when far enough away),
    /// with a wake time given on the wall clock. A time in the past returns at once.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use serde::{Deserialize, Serialize};
    /// use std::time::{Duration, SystemTime};
    ///
    /// #[derive(Clone, Default, Serialize, Deserialize)]
    /// struct S { sent: bool }
    /// struct Newsletter;
    ///
    /// #[flow(state = S)]
    /// impl Newsletter {
    ///     #[start]
    ///     async fn send_at(&self, cx: &Ctx<S>) -> Result<()> {
    ///         // A send time that has passed already: no wait.
    ///         cx.sleep_until(SystemTime::now() - Duration::from_secs(60)).await?;
    ///         cx.update(|s| s.sent = true);
    ///         Ok(())
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// assert!(Newsletter.kickoff(S::default()).await?.completed()?.state.sent);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn sleep_until(&self, at: SystemTime) -> Result<(), Error> {
        let seq = self.next_seq();
        let wake = match self.recorded_timer(seq).await? {
            Some(wake) => wake,
            None => self.remember_timer(seq, "sleep_until", system_time_ms(at)).await?,
        };
        self.wait_until(wake).await
    }

    /// The wake time journaled at `seq`, if this step recorded one there.
    async fn recorded_timer(&self, seq: u32) -> Result<Option<i64>, Error> {
        let Some(entry) = self.recorded(seq).await? else { return Ok(None) };
        if entry.kind != TIMER {
            return Err(self.nondeterminism(seq, "timer (`sleep`)", &entry));
        }
        entry.output.as_i64().map(Some).ok_or_else(|| {
            Error::permanent(format!(
                "run {} step `{}`: the recorded wake time of timer #{seq} is not a number of milliseconds ({}); \
                 the journal row was changed by hand: fork the run from an earlier checkpoint",
                self.scope.run.run_id,
                self.step_key(),
                entry.output
            ))
        })
    }

    /// Journals a wake time; when another execution recorded one first, that one wins.
    async fn remember_timer(&self, seq: u32, name: &str, wake_ms: i64) -> Result<i64, Error> {
        let winner = self
            .keep_entry(JournalEntry {
                run_id: self.scope.run.run_id,
                step_key: self.step_key().to_string(),
                seq,
                kind: TIMER.into(),
                name: name.into(),
                request_hash: 0,
                output: Value::from(wake_ms),
            })
            .await?;
        Ok(winner.output.as_i64().unwrap_or(wake_ms))
    }

    async fn wait_until(&self, wake_ms: i64) -> Result<(), Error> {
        let left = wake_ms.saturating_sub(now_ms());
        let Ok(left @ 1..) = u64::try_from(left) else { return Ok(()) };
        let left = Duration::from_millis(left);
        let run = &self.scope.run;
        let (run_id, method) = (run.run_id, self.scope.method);
        let until = ms_system_time(wake_ms);
        let park = run.park_after.is_some_and(|threshold| left >= threshold);
        run.emit(|| FlowEvent::Sleeping { run_id, method, step_key: self.step_key().to_string(), until, parks: park });
        if park {
            tracing::info!(%run_id, method, step_key = self.step_key(), wake_ms, "sleeping: the run parks once nothing else runs");
            self.interrupt(Interrupt::Sleep { until_ms: wake_ms });
            // The runtime drops this future once it sees the interrupt.
            return std::future::pending().await;
        }
        tracing::debug!(%run_id, method, step_key = self.step_key(), wake_ms, "sleeping in this process");
        let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
        self.scope.slept_ms.fetch_add(ms, Ordering::Relaxed);
        tokio::time::sleep(left).await;
        run.emit(|| FlowEvent::Woke { run_id, method, step_key: self.step_key().to_string(), parked: false });
        Ok(())
    }

    fn nondeterminism(&self, seq: u32, wanted: &str, found: &JournalEntry) -> Error {
        Error::special(
            Special::NonDeterminism,
            format!(
                "non-determinism in run {} step `{}`: effect #{seq} was recorded as {} `{}` but this run asked for a {wanted}; \
                 effects must run in the same order on every run of a step (change the flow's name or version to change the order)",
                self.scope.run.run_id,
                self.step_key(),
                found.kind,
                found.name
            ),
        )
    }

    /// A recorded effect asked again with another request: its result answers a question this
    /// code no longer asks, so it is not replayed (see [`Journal::record`]).
    fn changed_request(&self, seq: u32, kind: &str, name: &str) -> Error {
        let run_id = self.scope.run.run_id;
        Error::special(
            Special::NonDeterminism,
            format!(
                "non-determinism in run {run_id} step `{}`: effect #{seq} ({kind} `{name}`) was recorded for another request than this run now makes \
                 (its prompt, arguments or model changed since, or the request is built from something that differs between runs, such as the clock); \
                 its recorded result is not replayed for a different question. To run the step with the new request, fork the run \
                 (`Runner::fork({run_id}, None)`), whose journal starts empty; to resume this run, restore the code that made the recorded request",
                self.step_key()
            ),
        )
    }
}

/// The journal kind of a wake time recorded by [`Ctx::sleep`].
const TIMER: &str = "timer";

/// `at` in ms since the Unix epoch (negative before it).
pub(crate) fn system_time_ms(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// The point in time `ms` since the Unix epoch.
pub(crate) fn ms_system_time(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    let at = if ms >= 0 { UNIX_EPOCH.checked_add(d) } else { UNIX_EPOCH.checked_sub(d) };
    at.unwrap_or(UNIX_EPOCH)
}

// Bounded like `Ctx`'s methods (see there), so that `cx.effect` does not repeat the state's error.
impl<S: Clone + Send + Sync> Journal for Ctx<S> {
    fn record<'a>(
        &'a self,
        kind: &'a str,
        name: &'a str,
        request: &'a Value,
        effect: BoxFuture<'a, Result<Value, Error>>,
    ) -> BoxFuture<'a, Result<Value, Error>> {
        // The position is taken now, not on first poll, so effects created in order keep
        // their order even when they are awaited together.
        let seq = self.next_seq();
        Box::pin(async move {
            let hash = request_hash(request);
            if let Some(entry) = self.recorded(seq).await? {
                if entry.kind != kind || entry.name != name {
                    return Err(self.nondeterminism(seq, &format!("{kind} `{name}`"), &entry));
                }
                if entry.request_hash != hash {
                    return Err(self.changed_request(seq, kind, name));
                }
                return Ok(entry.output);
            }
            let output = effect.await?;
            let winner = self
                .keep_entry(JournalEntry {
                    run_id: self.scope.run.run_id,
                    step_key: self.step_key().to_string(),
                    seq,
                    kind: kind.to_string(),
                    name: name.to_string(),
                    request_hash: hash,
                    output,
                })
                .await?;
            Ok(winner.output)
        })
    }

    fn report_usage(&self, model: &str, usage: TokenUsage) {
        self.scope.run.usage.lock().unwrap_or_else(|p| p.into_inner()).add(usage);
        self.scope.usage.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_default().add(usage);
        let run_id = self.scope.run.run_id;
        let method = self.scope.method;
        self.scope.run.emit(|| FlowEvent::LlmUsage { run_id, method, model: model.to_string(), usage });
    }

    fn idempotency_key(&self) -> String {
        Ctx::idempotency_key(self)
    }

    fn wants_tokens(&self) -> bool {
        self.scope.run.stream.as_ref().is_some_and(|s| s.wants(crate::stream::Channels::TOKENS))
    }

    fn stream_token(&self, model: &str, delta: &str) {
        self.stream_item(crate::stream::Channels::TOKENS, |method, step_key| crate::stream::RunItem::Token {
            method,
            step_key,
            model: model.to_string(),
            delta: delta.to_string(),
        });
    }

    fn stream_tool_call(&self, tool: &str, call_id: &str, arguments: &Value) {
        self.stream_item(crate::stream::Channels::TOOLS, |method, step_key| crate::stream::RunItem::ToolCall {
            method,
            step_key,
            tool: tool.to_string(),
            call_id: call_id.to_string(),
            arguments: arguments.clone(),
        });
    }

    fn stream_tool_result(&self, tool: &str, call_id: &str, result: &Value) {
        self.stream_item(crate::stream::Channels::TOOLS, |method, step_key| crate::stream::RunItem::ToolResult {
            method,
            step_key,
            tool: tool.to_string(),
            call_id: call_id.to_string(),
            result: result.clone(),
        });
    }
}

/// How often a journal read or write is tried when the store fails in a way that may pass (a
/// database restarting): the same budget as a checkpoint's commit, about two seconds in all.
const JOURNAL_ATTEMPTS: u32 = 5;

/// Runs a journal operation, trying again while the store's failure may pass. What is left is a
/// [`Special::Store`] error: the execution stops without recording the method as failed, so
/// the run is continued once the store answers, rather than failed for the store's sake.
async fn with_store_retries<T, F, Fut>(what: &str, mut op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(20);
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e @ (StoreError::Backend(_) | StoreError::Busy(_))) if attempt < JOURNAL_ATTEMPTS => {
                tracing::warn!(attempt, error = %e, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 4;
                attempt += 1;
            }
            Err(e) => return Err(Error::special(Special::Store, format!("{what} failed: {e}"))),
        }
    }
}
