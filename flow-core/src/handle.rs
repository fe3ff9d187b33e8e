//! [`RunHandle`]: a run started with [`Runner::start`](crate::Runner::start), known by its id at
//! once, awaited, followed and cancelled later.

use std::sync::Arc;

use futures::Stream;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::FlowError;
use crate::events::FlowEvent;
use crate::lease::CancelSignal;
use crate::outcome::RunOutcome;
use crate::store::{Store, StoreError};
use crate::stream::{Channels, RunItem};

/// What [`Runner::start_with`](crate::Runner::start_with) is given: the run's id (idempotent
/// with a store, as [`Runner::kickoff_with_id`](crate::Runner::kickoff_with_id)) and the
/// channels [`RunHandle::items`] streams.
///
/// ```
/// use flow_core::StartOptions;
/// use flow_core::stream::Channels;
/// let options = StartOptions::new().run_id(uuid::Uuid::now_v7()).channels(Channels::OUTPUTS);
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    pub(crate) run_id: Option<Uuid>,
    pub(crate) channels: Channels,
}

impl StartOptions {
    /// No id chosen (a fresh one), no items streamed.
    pub fn new() -> Self {
        StartOptions::default()
    }

    /// Starts the run under this id. With a store, a second start with the same id starts
    /// nothing and hands back the run stored first.
    pub fn run_id(mut self, run_id: Uuid) -> Self {
        self.run_id = Some(run_id);
        self
    }

    /// Streams the run's items on these channels to [`RunHandle::items`] (none unless asked:
    /// a state item costs an encoding of the state per step).
    pub fn channels(mut self, channels: Channels) -> Self {
        self.channels = channels;
        self
    }
}

/// A run going on in a task of its own: its id at once, its outcome when it ends
/// ([`RunHandle::outcome`]), its events and items as they happen, and a way to cancel it.
///
/// Dropping the handle does not stop the run.
///
/// ```
/// use flow_core::events::FlowEvent;
/// use flow_core::prelude::*;
/// use flow_core::store::MemoryStore;
/// use futures::StreamExt;
///
/// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
/// struct S { n: u32 }
/// struct Count;
///
/// #[flow(state = S)]
/// impl Count {
///     #[start]
///     async fn count(&self, cx: &Ctx<S>) -> Result<()> { cx.update(|s| s.n += 1); Ok(()) }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), FlowError> {
/// let runner = Runner::new(Count).with_store(MemoryStore::new());
/// let handle = runner.start(S::default()).await?;
/// let run_id = handle.id();
/// let events = handle.events();
/// let run = handle.outcome().await?.completed()?;
/// assert_eq!((run.run_id, run.state.n), (run_id, 1));
/// let seen: Vec<FlowEvent> = events.collect().await;
/// assert!(matches!(seen.last(), Some(FlowEvent::RunFinished { .. })));
/// # Ok(())
/// # }
/// ```
pub struct RunHandle<S> {
    pub(crate) run_id: Uuid,
    pub(crate) task: JoinHandle<Result<RunOutcome<S>, FlowError>>,
    pub(crate) events: broadcast::Sender<FlowEvent>,
    pub(crate) first_events: std::sync::Mutex<Option<broadcast::Receiver<FlowEvent>>>,
    pub(crate) items: Option<broadcast::WeakSender<(u64, RunItem)>>,
    pub(crate) first_items: std::sync::Mutex<Option<broadcast::Receiver<(u64, RunItem)>>>,
    pub(crate) done: watch::Receiver<bool>,
    pub(crate) cancel: Option<CancelSignal>,
    pub(crate) store: Option<Arc<dyn Store>>,
    pub(crate) existing: bool,
}

impl<S> std::fmt::Debug for RunHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle")
            .field("run_id", &self.run_id)
            .field("existing", &self.existing)
            .field("finished", &*self.done.borrow())
            .finish_non_exhaustive()
    }
}

impl<S: Send + 'static> RunHandle<S> {
    /// The run's id.
    pub fn id(&self) -> Uuid {
        self.run_id
    }

    /// Whether this handle is on a run stored before under the same id (a second start with
    /// [`StartOptions::run_id`]), which this start did not start again.
    pub fn is_existing(&self) -> bool {
        self.existing
    }

    /// Whether the run's execution here has ended (its outcome is ready).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the run to end here and returns how it ended, as
    /// [`Runner::kickoff`](crate::Runner::kickoff) would have.
    pub async fn outcome(self) -> Result<RunOutcome<S>, FlowError> {
        let run_id = self.run_id;
        let resumable = self.store.is_some();
        self.task.await.unwrap_or_else(|e| Err(FlowError::Aborted { run_id, message: e.to_string(), resumable }))
    }

    /// The run's [`FlowEvent`]s, ending after its `RunFinished` (or when its execution here
    /// ends). The first call gets every event since the start; a later call, the events from
    /// then on. A consumer that falls more than the runner's event buffer behind misses the
    /// oldest.
    pub fn events(&self) -> impl Stream<Item = FlowEvent> + Send + 'static {
        let rx = self
            .first_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| self.events.subscribe());
        let run_id = self.run_id;
        let done = self.done.clone();
        futures::stream::unfold((rx, done, false), move |(mut rx, mut done, over)| async move {
            loop {
                if over {
                    return None;
                }
                let ended = *done.borrow_and_update();
                let got = if ended {
                    // Over here: what was sent before is all there.
                    match rx.try_recv() {
                        Ok(e) => Ok(e),
                        Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                        Err(_) => return None,
                    }
                } else {
                    tokio::select! {
                        got = rx.recv() => match got {
                            Ok(e) => Ok(e),
                            Err(broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                        _ = done.changed() => Err(()),
                    }
                };
                let Ok(event) = got else { continue };
                if event.run_id() != run_id {
                    continue;
                }
                let last = matches!(event, FlowEvent::RunFinished { .. });
                return Some((event, (rx, done, last)));
            }
        })
    }

    /// The run's items on the channels chosen with [`StartOptions::channels`], numbered as the
    /// run made them, ending with the [`RunItem::Ended`] of its execution here. The first call
    /// gets every item since the start (up to [`STREAM_BUFFER`](crate::stream::STREAM_BUFFER)
    /// of them: a consumer further behind misses the oldest); a later call, the items from then
    /// on, none once the execution has ended. Empty when no channel was chosen.
    pub fn items(&self) -> impl Stream<Item = (u64, RunItem)> + Send + 'static {
        let first = self.first_items.lock().unwrap_or_else(|p| p.into_inner()).take();
        let rx =
            first.or_else(|| self.items.as_ref().and_then(broadcast::WeakSender::upgrade).map(|tx| tx.subscribe()));
        futures::stream::unfold(rx, |rx| async move {
            let mut rx = rx?;
            loop {
                match rx.recv().await {
                    Ok((seq, item)) => {
                        let next = (!matches!(item, RunItem::Ended { .. })).then_some(rx);
                        return Some(((seq, item), next));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// Cancels the run with compensation: its steps stop, the `#[compensate]` undo steps of its
    /// completed steps run, newest first, and it ends cancelled ([`RunHandle::outcome`] is
    /// [`FlowError::Cancelled`]). With a store the request is stored first
    /// ([`Store::request_cancel`]), so that whichever process holds the run honours it; a run
    /// executing here stops at once.
    ///
    /// A run that has ended (completed, cancelled, compensated) is refused with
    /// [`FlowError::InvalidStatus`]; a run without a store whose execution here has ended is
    /// left as it is.
    pub async fn cancel(&self, reason: &str) -> Result<(), FlowError> {
        let run_id = self.run_id;
        if let Some(store) = &self.store {
            match store.request_cancel(run_id, reason).await {
                Ok(()) => {}
                Err(StoreError::Ended { status, .. }) => {
                    return Err(FlowError::InvalidStatus {
                        run_id,
                        status,
                        action: "cancelled (it has ended already)",
                    });
                }
                Err(StoreError::NotFound(id)) => return Err(FlowError::RunNotFound(id)),
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(signal) = &self.cancel {
            signal.raise(reason.to_string());
        }
        Ok(())
    }
}
