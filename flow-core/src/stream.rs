//! Streaming a run as it happens: the state after each step, each step's output, the tokens of
//! the LLM calls made inside steps, tool calls and their results, and values steps emit
//! ([`Ctx::emit`](crate::Ctx::emit)).
//!
//! [`Runner::stream`] starts a run and returns a [`futures::Stream`] of [`StreamItem`]s on the
//! [`Channels`] asked for, ending with the run's outcome; [`Runner::resume_stream`] does the same
//! for a stored run. With [`Runner::keep_stream`] the items are also kept in the store, so
//! [`Runner::attach`] (in this process or any other on the same store) replays a run's items
//! from any point and follows it until it stops.
//!
//! ```
//! use flow_core::prelude::*;
//! use flow_core::stream::{Channels, RunItem, StreamItem};
//! use futures::StreamExt;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Default, Serialize, Deserialize)]
//! struct S { words: u32 }
//! struct Count;
//!
//! #[flow(state = S)]
//! impl Count {
//!     #[start]
//!     async fn count(&self, cx: &Ctx<S>) -> Result<u32> {
//!         cx.emit("counting")?;
//!         cx.update(|s| s.words += 3);
//!         Ok(3)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), FlowError> {
//! let runner = Runner::new(Count);
//! let mut items = std::pin::pin!(runner.stream(S::default(), Channels::STATE | Channels::CUSTOM));
//! let mut seen = Vec::new();
//! while let Some(item) = items.next().await {
//!     match item {
//!         StreamItem::Item { item: RunItem::Custom { value, .. }, .. } => seen.push(value.to_string()),
//!         StreamItem::Item { item: RunItem::State { state, .. }, .. } => seen.push(state["words"].to_string()),
//!         StreamItem::Finished(outcome) => assert_eq!(outcome?.completed()?.state.words, 3),
//!         _ => {}
//!     }
//! }
//! assert_eq!(seen, ["\"counting\"", "3"]);
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::task::AtomicWaker;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

use crate::error::FlowError;
use crate::flow::Flow;
use crate::outcome::RunOutcome;
use crate::runner::Runner;
use crate::store::{RunStatus, Store, StreamRecord, now_ms};

/// Which kinds of items a stream carries; combine with `|`.
///
/// ```
/// use flow_core::stream::Channels;
/// let c = Channels::STATE | Channels::TOKENS;
/// assert!(c.contains(Channels::TOKENS));
/// assert!(!c.contains(Channels::TOOLS));
/// assert!(Channels::ALL.contains(c));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Channels(u8);

impl Channels {
    /// Nothing.
    pub const NONE: Channels = Channels(0);
    /// The run's state after each step ([`RunItem::State`]).
    pub const STATE: Channels = Channels(1);
    /// Each step's output ([`RunItem::Output`]).
    pub const OUTPUTS: Channels = Channels(1 << 1);
    /// LLM token deltas ([`RunItem::Token`]).
    pub const TOKENS: Channels = Channels(1 << 2);
    /// Tool calls and their results ([`RunItem::ToolCall`], [`RunItem::ToolResult`]).
    pub const TOOLS: Channels = Channels(1 << 3);
    /// Values steps emit with [`Ctx::emit`](crate::Ctx::emit) ([`RunItem::Custom`]).
    pub const CUSTOM: Channels = Channels(1 << 4);
    /// Every channel.
    pub const ALL: Channels = Channels(0b1_1111);

    /// Whether every channel of `other` is in `self`.
    ///
    /// ```
    /// use flow_core::stream::Channels;
    /// assert!(Channels::ALL.contains(Channels::CUSTOM));
    /// ```
    pub fn contains(self, other: Channels) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no channel is in `self`.
    ///
    /// ```
    /// assert!(flow_core::stream::Channels::NONE.is_empty());
    /// ```
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn intersects(self, other: Channels) -> bool {
        self.0 & other.0 != 0
    }
}

impl std::ops::BitOr for Channels {
    type Output = Channels;
    fn bitor(self, rhs: Channels) -> Channels {
        Channels(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Channels {
    fn bitor_assign(&mut self, rhs: Channels) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Channels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Channels::STATE, "STATE"),
            (Channels::OUTPUTS, "OUTPUTS"),
            (Channels::TOKENS, "TOKENS"),
            (Channels::TOOLS, "TOOLS"),
            (Channels::CUSTOM, "CUSTOM"),
        ];
        let set: Vec<&str> = names.iter().filter(|(c, _)| self.contains(*c)).map(|(_, n)| *n).collect();
        if set.is_empty() { f.write_str("NONE") } else { f.write_str(&set.join(" | ")) }
    }
}

/// One thing a run made, as streamed and as kept in the store. Step-scoped items name the
/// method and its step key (`method#n`).
///
/// ```
/// use flow_core::stream::{Channels, RunItem};
/// let item = RunItem::Token { method: "write".into(), step_key: "write#0".into(), model: "m".into(), delta: "Hel".into() };
/// assert_eq!(item.channel(), Channels::TOKENS);
/// assert_eq!(item.step_key(), Some("write#0"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunItem {
    /// The run's state right after a step's updates were applied, as JSON.
    State {
        /// The method that completed.
        method: String,
        /// Its step key.
        step_key: String,
        /// The state.
        state: Value,
    },
    /// A step's output, as JSON.
    Output {
        /// The method.
        method: String,
        /// Its step key.
        step_key: String,
        /// What it returned.
        output: Value,
    },
    /// A piece of an LLM reply, as the model wrote it (calls replayed from the journal send none).
    Token {
        /// The method making the call.
        method: String,
        /// Its step key.
        step_key: String,
        /// The model.
        model: String,
        /// The new text.
        delta: String,
    },
    /// A tool an agent called (replayed calls send none).
    ToolCall {
        /// The method.
        method: String,
        /// Its step key.
        step_key: String,
        /// The tool.
        tool: String,
        /// The model's id for the call.
        call_id: String,
        /// Its arguments.
        arguments: Value,
    },
    /// What a tool call returned.
    ToolResult {
        /// The method.
        method: String,
        /// Its step key.
        step_key: String,
        /// The tool.
        tool: String,
        /// The model's id for the call.
        call_id: String,
        /// The result.
        result: Value,
    },
    /// A value a step emitted ([`Ctx::emit`](crate::Ctx::emit)).
    Custom {
        /// The method.
        method: String,
        /// Its step key.
        step_key: String,
        /// The value.
        value: Value,
    },
    /// An execution of the run stopped (on every channel): it completed, paused, parked,
    /// failed, or its process lost the run. A resumed run goes on with more items after it.
    Ended {
        /// The run's status then.
        status: RunStatus,
        /// The error, when the execution ended with one.
        error: Option<String>,
    },
}

impl RunItem {
    /// The channel the item belongs to ([`Channels::ALL`] for [`RunItem::Ended`]).
    ///
    /// ```
    /// use flow_core::stream::{Channels, RunItem};
    /// let end = RunItem::Ended { status: flow_core::RunStatus::Completed, error: None };
    /// assert_eq!(end.channel(), Channels::ALL);
    /// ```
    pub fn channel(&self) -> Channels {
        match self {
            RunItem::State { .. } => Channels::STATE,
            RunItem::Output { .. } => Channels::OUTPUTS,
            RunItem::Token { .. } => Channels::TOKENS,
            RunItem::ToolCall { .. } | RunItem::ToolResult { .. } => Channels::TOOLS,
            RunItem::Custom { .. } => Channels::CUSTOM,
            RunItem::Ended { .. } => Channels::ALL,
        }
    }

    /// The method of a step-scoped item.
    ///
    /// ```
    /// use flow_core::stream::RunItem;
    /// let item = RunItem::Custom { method: "m".into(), step_key: "m#0".into(), value: 1.into() };
    /// assert_eq!(item.method(), Some("m"));
    /// ```
    pub fn method(&self) -> Option<&str> {
        self.scope().map(|(m, _)| m)
    }

    /// The step key of a step-scoped item.
    ///
    /// ```
    /// use flow_core::stream::RunItem;
    /// let item = RunItem::Custom { method: "m".into(), step_key: "m#0".into(), value: 1.into() };
    /// assert_eq!(item.step_key(), Some("m#0"));
    /// ```
    pub fn step_key(&self) -> Option<&str> {
        self.scope().map(|(_, k)| k)
    }

    fn scope(&self) -> Option<(&str, &str)> {
        match self {
            RunItem::State { method, step_key, .. }
            | RunItem::Output { method, step_key, .. }
            | RunItem::Token { method, step_key, .. }
            | RunItem::ToolCall { method, step_key, .. }
            | RunItem::ToolResult { method, step_key, .. }
            | RunItem::Custom { method, step_key, .. } => Some((method, step_key)),
            RunItem::Ended { .. } => None,
        }
    }
}

/// What [`Runner::stream`] and [`Runner::resume_stream`] yield.
///
/// ```
/// use flow_core::stream::{RunItem, StreamItem};
/// let item: StreamItem<()> = StreamItem::Lagged { missed: 3 };
/// assert!(matches!(item, StreamItem::Lagged { missed: 3 }));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum StreamItem<S> {
    /// An item of the run, numbered in the order the run made it (the same `seq` as in the
    /// store, for a run whose stream is kept).
    Item {
        /// Its number in the run.
        seq: u64,
        /// The item.
        item: RunItem,
    },
    /// The consumer fell behind: `missed` items were dropped rather than slow the run.
    Lagged {
        /// How many.
        missed: u64,
    },
    /// The run's outcome (or its error): always the last item.
    Finished(Result<RunOutcome<S>, FlowError>),
}

/// Keeping a runner's run streams in its store ([`Runner::keep_stream`]).
///
/// Items are written in batches, at most every `flush_every` (and when an execution ends), so
/// that a step streaming hundreds of tokens costs a few writes rather than one each. The price:
/// after a crash, the items made since the last write are gone from the store (the run's state,
/// journal and outputs are not: they are committed as always).
///
/// ```
/// use flow_core::stream::{Channels, StreamLog};
/// use std::time::Duration;
/// let log = StreamLog::new().channels(Channels::STATE | Channels::TOKENS).flush_every(Duration::from_millis(50)).keep_last(1000);
/// # let _ = log;
/// ```
#[derive(Clone, Debug)]
pub struct StreamLog {
    channels: Channels,
    flush_every: Duration,
    keep_last: Option<u64>,
}

impl Default for StreamLog {
    fn default() -> Self {
        StreamLog { channels: Channels::ALL, flush_every: Duration::from_millis(100), keep_last: Some(10_000) }
    }
}

impl StreamLog {
    /// Every channel, written every 100 ms, the newest 10 000 items of each run kept.
    ///
    /// ```
    /// let log = flow_core::stream::StreamLog::new();
    /// # let _ = log;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The channels kept.
    ///
    /// ```
    /// use flow_core::stream::{Channels, StreamLog};
    /// let log = StreamLog::new().channels(Channels::STATE);
    /// # let _ = log;
    /// ```
    pub fn channels(mut self, channels: Channels) -> Self {
        self.channels = channels;
        self
    }

    /// How long items wait to be written together.
    ///
    /// ```
    /// let log = flow_core::stream::StreamLog::new().flush_every(std::time::Duration::from_millis(20));
    /// # let _ = log;
    /// ```
    pub fn flush_every(mut self, every: Duration) -> Self {
        self.flush_every = every;
        self
    }

    /// Keeps only the newest `n` items of each run (older ones are deleted as new ones come).
    ///
    /// ```
    /// let log = flow_core::stream::StreamLog::new().keep_last(500);
    /// # let _ = log;
    /// ```
    pub fn keep_last(mut self, n: u64) -> Self {
        self.keep_last = Some(n.max(1));
        self
    }

    /// Keeps every item until the run is deleted.
    ///
    /// ```
    /// let log = flow_core::stream::StreamLog::new().keep_all();
    /// # let _ = log;
    /// ```
    pub fn keep_all(mut self) -> Self {
        self.keep_last = None;
        self
    }
}

/// How many items one capacity-bounded live stream holds for a consumer before dropping the
/// oldest ([`StreamItem::Lagged`]).
pub const STREAM_BUFFER: usize = 1024;

/// Where a live consumer's items go: the queue of a [`Runner::stream`] consumer, or the
/// broadcast channel a [`RunHandle`](crate::RunHandle) subscribes its readers to.
pub(crate) enum LiveTx {
    Queue(Arc<LiveQueue>),
    Broadcast(broadcast::Sender<(u64, RunItem)>),
}

impl LiveTx {
    /// Whether anyone may still read what is sent: a run whose one consumer dropped its stream
    /// stops making items.
    fn is_open(&self) -> bool {
        match self {
            LiveTx::Queue(q) => !q.gone.load(Ordering::Acquire),
            LiveTx::Broadcast(tx) => tx.receiver_count() > 0,
        }
    }

    fn send(&self, seq: u64, item: RunItem) {
        match self {
            LiveTx::Queue(q) => q.send(seq, item),
            // No receiver left (the consumer dropped the stream) is fine: the run goes on.
            LiveTx::Broadcast(tx) => {
                let _ = tx.send((seq, item));
            }
        }
    }
}

type Live = (Channels, LiveTx);

/// The items waiting for a [`Runner::stream`] consumer: at most [`STREAM_BUFFER`], the oldest
/// dropped (and counted) when the consumer falls further behind.
///
/// One consumer takes the items out, so an item is moved to it, never cloned; it takes all
/// that wait at once, and is woken once per batch (the first item after it went to sleep),
/// not once per item.
pub(crate) struct LiveQueue {
    inner: Mutex<Queued>,
    waker: AtomicWaker,
    /// The consumer dropped its stream.
    gone: AtomicBool,
}

#[derive(Default)]
struct Queued {
    items: VecDeque<(u64, RunItem)>,
    /// Dropped since the consumer last heard of it.
    missed: u64,
}

impl LiveQueue {
    fn new() -> Self {
        LiveQueue { inner: Mutex::default(), waker: AtomicWaker::new(), gone: AtomicBool::new(false) }
    }

    fn send(&self, seq: u64, item: RunItem) {
        if self.gone.load(Ordering::Acquire) {
            return;
        }
        let dropped = {
            let mut q = lock(&self.inner);
            let dropped = if q.items.len() >= STREAM_BUFFER {
                q.missed += 1;
                q.items.pop_front()
            } else {
                None
            };
            q.items.push_back((seq, item));
            dropped
        };
        // Freed outside the lock the consumer takes too.
        drop(dropped);
        self.waker.wake();
    }

    /// Moves every waiting item into `batch` (empty), in order, and returns how many were
    /// dropped before them: the consumer takes the lock once per batch, not once per item.
    fn take_all(&self, batch: &mut VecDeque<(u64, RunItem)>) -> u64 {
        let mut q = lock(&self.inner);
        std::mem::swap(&mut q.items, batch);
        std::mem::take(&mut q.missed)
    }

    fn is_empty(&self) -> bool {
        let q = lock(&self.inner);
        q.items.is_empty() && q.missed == 0
    }

    /// The consumer is gone: nothing is kept for it any more.
    fn close(&self) {
        self.gone.store(true, Ordering::Release);
        let items = std::mem::take(&mut lock(&self.inner).items);
        drop(items);
    }
}

tokio::task_local! {
    /// The live stream a `Runner::stream` call hands to the run it starts: taken by the first
    /// run set up under it, so a run a step starts on another runner does not take it.
    static LIVE: (Mutex<Option<Live>>, Arc<OnceLock<Uuid>>);
}

/// Where the items of one run go: a live consumer, the store, or both.
pub(crate) struct RunStream {
    wanted: Channels,
    live: Option<Live>,
    log: Option<Arc<LogSink>>,
    /// The next item's number; held while an item is numbered and sent, so that consumers see
    /// numbers in order whichever thread made the item.
    next: Mutex<u64>,
}

struct LogSink {
    store: Arc<dyn Store>,
    run_id: Uuid,
    channels: Channels,
    keep_last: Option<u64>,
    flush_every: Duration,
    buffer: Mutex<Vec<StreamRecord>>,
    wake: Notify,
    closed: std::sync::atomic::AtomicBool,
    /// Held across a write, so batches reach the store in order.
    writing: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RunStream {
    /// The stream of a run being set up: the live consumer waiting under this task, if any, and
    /// the store's log when the runner keeps one. `None` when nothing wants the run's items.
    pub(crate) fn for_run(run_id: Uuid, store: Option<&Arc<dyn Store>>, log: Option<&StreamLog>) -> Option<Arc<Self>> {
        let live = LIVE
            .try_with(|(live, id)| {
                let live = lock(live).take();
                if live.is_some() {
                    let _ = id.set(run_id);
                }
                live
            })
            .ok()
            .flatten();
        let log = store.zip(log).filter(|(_, log)| !log.channels.is_empty()).map(|(store, log)| {
            Arc::new(LogSink {
                store: Arc::clone(store),
                run_id,
                channels: log.channels,
                keep_last: log.keep_last,
                flush_every: log.flush_every,
                buffer: Mutex::default(),
                wake: Notify::new(),
                closed: std::sync::atomic::AtomicBool::new(false),
                writing: tokio::sync::Mutex::new(()),
            })
        });
        if live.is_none() && log.is_none() {
            return None;
        }
        let mut wanted = Channels::NONE;
        if let Some((c, _)) = &live {
            wanted |= *c;
        }
        if let Some(sink) = &log {
            wanted |= sink.channels;
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(flusher(Arc::clone(sink)));
            }
        }
        Some(Arc::new(RunStream { wanted, live, log, next: Mutex::new(0) }))
    }

    /// Whether any consumer takes items of `channel`: what is not wanted is not even made,
    /// nor what only a consumer that has gone would have read.
    pub(crate) fn wants(&self, channel: Channels) -> bool {
        self.wanted.intersects(channel) && (self.live_wants(channel) || self.log_wants(channel))
    }

    fn live_wants(&self, channel: Channels) -> bool {
        self.live.as_ref().is_some_and(|(c, tx)| c.intersects(channel) && tx.is_open())
    }

    fn log_wants(&self, channel: Channels) -> bool {
        self.log.as_ref().is_some_and(|l| l.channels.intersects(channel))
    }

    pub(crate) fn push(&self, item: RunItem) {
        let channel = item.channel();
        let live = self.live.as_ref().filter(|(c, tx)| c.intersects(channel) && tx.is_open());
        let log = self.log.as_ref().filter(|l| l.channels.intersects(channel));
        if live.is_none() && log.is_none() {
            return;
        }
        let mut next = lock(&self.next);
        let seq = *next;
        *next += 1;
        if let Some(log) = log {
            match serde_json::to_value(&item) {
                Ok(json) => {
                    lock(&log.buffer).push(StreamRecord { seq, at_ms: now_ms(), item: json });
                    log.wake.notify_one();
                }
                Err(e) => {
                    tracing::warn!(run_id = %log.run_id, seq, error = %e, "a stream item could not be encoded; not kept")
                }
            }
        }
        if let Some((_, tx)) = live {
            tx.send(seq, item);
        }
    }

    /// Called before an execution makes any item: a resumed run's items are numbered on from
    /// the last one kept.
    pub(crate) async fn begin(&self, resumed: bool) {
        let Some(log) = self.log.as_ref().filter(|_| resumed) else { return };
        match log.store.stream_last_seq(log.run_id).await {
            Ok(Some(last)) => *lock(&self.next) = last + 1,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(run_id = %log.run_id, error = %e, "could not read the run's kept stream; numbering its items from 0")
            }
        }
    }

    /// Called when an execution stops: the [`RunItem::Ended`] item, then every kept item is
    /// written before the caller hears the outcome.
    pub(crate) async fn end(&self, status: RunStatus, error: Option<String>) {
        self.push(RunItem::Ended { status, error });
        if let Some(log) = &self.log {
            log.flush().await;
        }
    }

    /// The state and output items of a completed step; the state is encoded only when wanted.
    pub(crate) fn step_done<S: Serialize>(&self, method: &str, step_key: &dyn fmt::Display, output: &Value, state: &S) {
        if !self.wants(Channels::STATE | Channels::OUTPUTS) {
            return;
        }
        let key = step_key.to_string();
        if self.wants(Channels::OUTPUTS) {
            self.push(RunItem::Output { method: method.into(), step_key: key.clone(), output: output.clone() });
        }
        if self.wants(Channels::STATE) {
            match serde_json::to_value(state) {
                Ok(state) => self.push(RunItem::State { method: method.into(), step_key: key, state }),
                Err(e) => tracing::warn!(method, error = %e, "the state could not be encoded for the run's stream"),
            }
        }
    }
}

impl Drop for RunStream {
    fn drop(&mut self) {
        if let Some(log) = &self.log {
            log.closed.store(true, std::sync::atomic::Ordering::Release);
            log.wake.notify_one();
        }
    }
}

impl LogSink {
    async fn flush(&self) {
        let _writing = self.writing.lock().await;
        let items = std::mem::take(&mut *lock(&self.buffer));
        if items.is_empty() {
            return;
        }
        if let Err(e) = self.store.stream_append(self.run_id, items.clone(), self.keep_last).await {
            tracing::warn!(run_id = %self.run_id, error = %e, count = items.len(), "could not keep stream items; trying again with the next batch");
            let mut buffer = lock(&self.buffer);
            let newer = std::mem::replace(&mut *buffer, items);
            buffer.extend(newer);
        }
    }
}

/// Writes a run's kept items in batches: woken by the first item after a write, it waits
/// `flush_every` for more, then writes them all at once.
async fn flusher(sink: Arc<LogSink>) {
    loop {
        sink.wake.notified().await;
        if sink.closed.load(std::sync::atomic::Ordering::Acquire) {
            sink.flush().await;
            return;
        }
        tokio::time::sleep(sink.flush_every).await;
        sink.flush().await;
    }
}

/// How often [`Runner::attach`] looks for new items of a run that is still going.
const ATTACH_POLL: Duration = Duration::from_millis(50);

/// How long [`Runner::attach`] waits, once the run is at rest, for items that may still be on
/// their way to the store, before it ends without a [`RunItem::Ended`].
const ATTACH_GRACE: Duration = Duration::from_secs(2);

/// An item read back from the store by [`Runner::attach`].
///
/// ```
/// use flow_core::stream::{KeptItem, RunItem};
/// let kept = KeptItem { seq: 0, at_ms: 0, item: RunItem::Ended { status: flow_core::RunStatus::Completed, error: None } };
/// assert_eq!(kept.seq, 0);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct KeptItem {
    /// Its number in the run.
    pub seq: u64,
    /// When it was made (ms since the Unix epoch).
    pub at_ms: i64,
    /// The item.
    pub item: RunItem,
}

impl<F: Flow> Runner<F> {
    /// Keeps the items of this runner's runs in its store (see [`StreamLog`]), so that
    /// [`Runner::attach`] can replay and follow them from any process using the same store.
    /// Without a store this does nothing.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::store::MemoryStore;
    /// use flow_core::stream::{Channels, RunItem, StreamLog};
    /// use futures::StreamExt;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct S { n: u32 }
    /// struct Tick;
    /// #[flow(state = S)]
    /// impl Tick {
    ///     #[start]
    ///     async fn tick(&self, cx: &Ctx<S>) -> Result<()> { cx.update(|s| s.n += 1); Ok(()) }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let runner = Runner::new(Tick).with_store(MemoryStore::new()).keep_stream(StreamLog::new().channels(Channels::STATE));
    /// let run_id = runner.kickoff(S::default()).await?.run_id();
    /// // Replayed from the store: the state after `tick`, then the end.
    /// let kept: Vec<_> = runner.attach(run_id, 0).collect().await;
    /// assert!(matches!(&kept[0], Ok(k) if matches!(&k.item, RunItem::State { state, .. } if state["n"] == 1)));
    /// assert!(matches!(&kept.last(), Some(Ok(k)) if matches!(k.item, RunItem::Ended { .. })));
    /// # Ok(())
    /// # }
    /// ```
    pub fn keep_stream(mut self, log: StreamLog) -> Self {
        self.stream_log = Some(log);
        self
    }

    /// Starts a run, as [`Runner::kickoff`], and streams its items on `channels` as they
    /// happen; the last item is [`StreamItem::Finished`] with the outcome.
    ///
    /// The run goes on in a task of its own: a consumer that reads slowly never slows it. At most
    /// [`STREAM_BUFFER`] items wait for the consumer; when it falls further behind, the oldest
    /// are dropped and a [`StreamItem::Lagged`] says how many. Dropping the stream does not stop
    /// the run; the run stops making the items nobody can read any more (it still keeps those
    /// of [`Runner::keep_stream`]). The channels not asked for are not made at all, so a stream
    /// read for its outcome alone ([`Channels::NONE`]) costs the run next to nothing.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::stream::{Channels, RunItem, StreamItem};
    /// use futures::StreamExt;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct S;
    /// struct Hello;
    /// #[flow(state = S)]
    /// impl Hello {
    ///     #[start]
    ///     async fn hello(&self, _cx: &Ctx<S>) -> Result<String> { Ok("hi".into()) }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let items: Vec<_> = Runner::new(Hello).stream(S, Channels::OUTPUTS).collect().await;
    /// assert!(matches!(&items[0], StreamItem::Item { seq: 0, item: RunItem::Output { output, .. } } if output == "hi"));
    /// assert!(matches!(&items[1], StreamItem::Item { item: RunItem::Ended { .. }, .. }));
    /// assert!(matches!(&items[2], StreamItem::Finished(Ok(_))));
    /// # Ok(())
    /// # }
    /// ```
    pub fn stream(
        &self,
        state: F::State,
        channels: Channels,
    ) -> impl Stream<Item = StreamItem<F::State>> + Send + 'static {
        let runner = self.clone();
        live_stream(channels, self.store().is_some(), async move { runner.kickoff(state).await })
    }

    /// Continues a stored run, as [`Runner::resume`], streaming its items as
    /// [`Runner::stream`] does. A run whose stream is kept numbers its items on from the last
    /// one kept.
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// use flow_core::store::MemoryStore;
    /// use flow_core::stream::{Channels, StreamItem};
    /// use futures::StreamExt;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct S;
    /// struct Once;
    /// #[flow(state = S)]
    /// impl Once {
    ///     #[start]
    ///     async fn go(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// let runner = Runner::new(Once).with_store(MemoryStore::new());
    /// let run_id = runner.kickoff(S).await?.run_id();
    /// // A completed run: nothing runs again, the stream holds its outcome alone.
    /// let items: Vec<_> = runner.resume_stream(run_id, Channels::ALL).collect().await;
    /// assert!(matches!(&items[..], [StreamItem::Finished(Ok(_))]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn resume_stream(
        &self,
        run_id: Uuid,
        channels: Channels,
    ) -> impl Stream<Item = StreamItem<F::State>> + Send + 'static {
        let runner = self.clone();
        live_stream(channels, self.store().is_some(), async move { runner.resume(run_id).await })
    }

    /// Replays the kept items of a run from `from_seq` on ([`Runner::keep_stream`]), then
    /// follows the run, polling the store, until an execution of it ends
    /// ([`RunItem::Ended`] is the last item). Works from any process on the same store, the
    /// run's own runner or not: the items and their order are the ones its execution made.
    /// A store error ends the stream with the error.
    ///
    /// See [`Runner::keep_stream`] for an example.
    pub fn attach(
        &self,
        run_id: Uuid,
        from_seq: u64,
    ) -> impl Stream<Item = Result<KeptItem, FlowError>> + Send + 'static {
        let store = self.store().cloned();
        attach_store(store, run_id, from_seq)
    }
}

/// Calls `f` (which sets up a run) with a live stream of `channels` sending to `tx`: the run it
/// sets up streams its items there.
pub(crate) fn with_live<T>(channels: Channels, tx: broadcast::Sender<(u64, RunItem)>, f: impl FnOnce() -> T) -> T {
    LIVE.sync_scope((Mutex::new(Some((channels, LiveTx::Broadcast(tx)))), Arc::new(OnceLock::new())), f)
}

/// Runs `run` in a task of its own under a live stream of `channels`, and streams its items,
/// then its outcome.
fn live_stream<S, Fut>(channels: Channels, stored: bool, run: Fut) -> impl Stream<Item = StreamItem<S>> + Send + 'static
where
    S: Send + 'static,
    Fut: Future<Output = Result<RunOutcome<S>, FlowError>> + Send + 'static,
{
    let queue = Arc::new(LiveQueue::new());
    let run_id = Arc::new(OnceLock::new());
    let live = (channels, LiveTx::Queue(Arc::clone(&queue)));
    let task = tokio::spawn(LIVE.scope((Mutex::new(Some(live)), Arc::clone(&run_id)), run));
    LiveStream { queue, batch: VecDeque::new(), task: Some(task), outcome: None, run_id, stored, done: false }
}

/// The consumer's side of [`live_stream`].
struct LiveStream<S> {
    queue: Arc<LiveQueue>,
    /// Items taken from the queue, not yet handed out.
    batch: VecDeque<(u64, RunItem)>,
    task: Option<tokio::task::JoinHandle<Result<RunOutcome<S>, FlowError>>>,
    outcome: Option<Result<RunOutcome<S>, FlowError>>,
    run_id: Arc<OnceLock<Uuid>>,
    stored: bool,
    done: bool,
}

// Nothing in it is pinned in place: the task's handle is polled through a fresh `Pin`.
impl<S> Unpin for LiveStream<S> {}

impl<S> Stream for LiveStream<S> {
    type Item = StreamItem<S>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamItem<S>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            if let Some((seq, item)) = this.batch.pop_front() {
                return Poll::Ready(Some(StreamItem::Item { seq, item }));
            }
            // Dropped items were older than any still waiting: the lag is told first.
            let missed = this.queue.take_all(&mut this.batch);
            if missed > 0 {
                return Poll::Ready(Some(StreamItem::Lagged { missed }));
            }
            if !this.batch.is_empty() {
                continue;
            }
            // The run is over and what it sent before it returned has all been read: the end.
            if let Some(outcome) = this.outcome.take() {
                this.done = true;
                return Poll::Ready(Some(StreamItem::Finished(outcome)));
            }
            let Some(task) = this.task.as_mut() else {
                this.done = true;
                return Poll::Ready(None);
            };
            if let Poll::Ready(joined) = Pin::new(task).poll(cx) {
                this.task = None;
                this.outcome = Some(joined.unwrap_or_else(|e| Err(aborted(&this.run_id, e, this.stored))));
                continue;
            }
            // Registered before looking again, so an item sent in between wakes us.
            this.queue.waker.register(cx.waker());
            if this.queue.is_empty() {
                return Poll::Pending;
            }
        }
    }
}

impl<S> Drop for LiveStream<S> {
    fn drop(&mut self) {
        self.queue.close();
    }
}

fn aborted(run_id: &OnceLock<Uuid>, e: tokio::task::JoinError, stored: bool) -> FlowError {
    let run_id = run_id.get().copied().unwrap_or_default();
    FlowError::Aborted { run_id, message: format!("the streamed run's task stopped: {e}"), resumable: stored }
}

fn attach_store(
    store: Option<Arc<dyn Store>>,
    run_id: Uuid,
    from_seq: u64,
) -> impl Stream<Item = Result<KeptItem, FlowError>> + Send + 'static {
    struct Follow {
        store: Option<Arc<dyn Store>>,
        run_id: Uuid,
        next: u64,
        ready: VecDeque<KeptItem>,
        /// Whether the last item handed out ended an execution.
        at_end: bool,
        /// Since when the run was seen at rest with nothing new (for the grace period).
        idle_at_rest: Option<tokio::time::Instant>,
        done: bool,
    }
    let state = Follow {
        store,
        run_id,
        next: from_seq,
        ready: VecDeque::new(),
        at_end: false,
        idle_at_rest: None,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(kept) = st.ready.pop_front() {
                st.at_end = matches!(kept.item, RunItem::Ended { .. });
                return Some((Ok(kept), st));
            }
            let Some(store) = st.store.clone() else {
                st.done = true;
                return Some((Err(FlowError::NoStore { run_id: st.run_id }), st));
            };
            let batch = match store.stream_read(st.run_id, st.next, 256).await {
                Ok(batch) => batch,
                Err(e) => {
                    st.done = true;
                    return Some((Err(FlowError::Store(e)), st));
                }
            };
            if !batch.is_empty() {
                st.idle_at_rest = None;
                for record in batch {
                    st.next = record.seq + 1;
                    match serde_json::from_value::<RunItem>(record.item) {
                        Ok(item) => st.ready.push_back(KeptItem { seq: record.seq, at_ms: record.at_ms, item }),
                        Err(e) => {
                            st.done = true;
                            return Some((
                                Err(FlowError::Corrupt {
                                    run_id: st.run_id,
                                    what: format!("its kept stream item #{}: {e}", record.seq),
                                }),
                                st,
                            ));
                        }
                    }
                }
                continue;
            }
            // Nothing new. The newest item ended an execution: the run stopped there.
            if st.at_end {
                return None;
            }
            let status = match store.run_summary(st.run_id).await {
                Ok(summary) => summary.status,
                Err(e) => {
                    st.done = true;
                    return Some((Err(FlowError::Store(e)), st));
                }
            };
            if status.is_at_rest() {
                // Started past the end of a run that stopped: nothing more will come.
                let last = store.stream_last_seq(st.run_id).await.map_err(FlowError::Store);
                match last {
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                    Ok(Some(last)) if last < st.next && ends_execution(&store, st.run_id, last).await => return None,
                    Ok(_) => {}
                }
                // The last items may still be on their way to the store.
                let since = *st.idle_at_rest.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= ATTACH_GRACE {
                    return None;
                }
            } else {
                st.idle_at_rest = None;
            }
            tokio::time::sleep(ATTACH_POLL).await;
        }
    })
}

async fn ends_execution(store: &Arc<dyn Store>, run_id: Uuid, seq: u64) -> bool {
    match store.stream_read(run_id, seq, 1).await {
        Ok(items) => items.first().is_some_and(|r| r.item.get("kind").and_then(Value::as_str) == Some("ended")),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom(n: u64) -> RunItem {
        RunItem::Custom { method: "m".into(), step_key: "m#0".into(), value: n.into() }
    }

    fn live_only(queue: &Arc<LiveQueue>, channels: Channels) -> RunStream {
        let live = Some((channels, LiveTx::Queue(Arc::clone(queue))));
        RunStream { wanted: channels, live, log: None, next: Mutex::new(0) }
    }

    #[test]
    fn a_run_makes_no_items_once_its_only_consumer_has_gone() {
        let queue = Arc::new(LiveQueue::new());
        let stream = live_only(&queue, Channels::STATE | Channels::CUSTOM);
        assert!(stream.wants(Channels::CUSTOM));
        assert!(!stream.wants(Channels::TOKENS), "a channel not asked for is not made");
        stream.push(custom(0));
        assert!(!queue.is_empty());
        queue.close();
        assert!(queue.is_empty(), "what waited for the consumer is freed");
        assert!(!stream.wants(Channels::CUSTOM) && !stream.wants(Channels::STATE));
        stream.push(custom(1));
        assert!(queue.is_empty());
    }

    #[test]
    fn a_full_queue_drops_its_oldest_items_and_says_how_many_before_the_next() {
        let queue = LiveQueue::new();
        let extra = 3u64;
        let total = STREAM_BUFFER as u64 + extra;
        for seq in 0..total {
            queue.send(seq, custom(seq));
        }
        let mut batch = VecDeque::new();
        assert_eq!(queue.take_all(&mut batch), extra);
        assert!(queue.is_empty());
        let mut seqs = Vec::new();
        for (seq, item) in batch {
            assert_eq!(item, custom(seq), "each item moves out with its own number");
            seqs.push(seq);
        }
        assert_eq!(seqs, (extra..total).collect::<Vec<_>>(), "the newest are kept, in order");
        let mut again = VecDeque::new();
        assert_eq!(queue.take_all(&mut again), 0, "a lag is told once");
        assert!(again.is_empty());
    }
}
