//! The lease heartbeat: renews the lease of each durable run this process executes, from a
//! thread no step ever runs on.
//!
//! A step may block the thread it is polled on: a blocking call, a CPU loop, a lock held too
//! long. A heartbeat polled on the run's own task, or on any task of the caller's runtime,
//! would stop with it; the lease would lapse, and a second worker would take the run while the
//! first is still inside the step. So the renewals run on a runtime of their own, on a thread
//! of their own, shared by every run of the process: one timer per run, nothing per step.
//!
//! The guard ([`Heartbeat`]) stops the renewals when it is dropped, so an execution that is
//! dropped (a caller's timeout, say) stops renewing with it, and a run nobody executes never
//! looks alive. A renewal already on its way to the store when the run comes to rest may still
//! land after the final commit; the stores refuse it ([`StoreError::Released`]), so it cannot
//! give a resting run an expiry again.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{Store, StoreError};

/// Raised by the heartbeat when a renewal says the run was asked to stop
/// ([`StoreError::CancelRequested`]); the execution awaits it beside its steps.
#[derive(Clone, Default)]
pub(crate) struct CancelSignal {
    inner: Arc<(CancellationToken, OnceLock<String>)>,
}

impl CancelSignal {
    pub(crate) fn raise(&self, reason: String) {
        let _ = self.inner.1.set(reason);
        self.inner.0.cancel();
    }

    /// Resolves with the request's reason once it was raised.
    pub(crate) async fn requested(&self) -> String {
        self.inner.0.cancelled().await;
        self.inner.1.get().cloned().unwrap_or_default()
    }
}

/// Keeps one run's lease alive until dropped.
pub(crate) struct Heartbeat {
    task: JoinHandle<()>,
}

impl Heartbeat {
    /// Renews the lease of `run_id` under `epoch` every third of `lease`; cancels `lost` when
    /// the store says another worker took the run over (or the run is gone); raises `cancel`
    /// when it says the run was asked to stop (the lease is still renewed then: the execution
    /// compensates under it).
    pub(crate) fn start(
        store: Arc<dyn Store>,
        run_id: Uuid,
        epoch: u64,
        lease: Duration,
        lost: CancellationToken,
        cancel: CancelSignal,
    ) -> Self {
        let beat = renew_until_stopped(store, run_id, epoch, lease, lost, cancel);
        let task = match keeper() {
            Some(keeper) => keeper.spawn(beat),
            // No thread could be started for the keeper: a task on the caller's runtime still
            // renews the lease, though a step that blocks its thread can then starve it.
            None => tokio::spawn(beat),
        };
        Heartbeat { task }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn renew_until_stopped(
    store: Arc<dyn Store>,
    run_id: Uuid,
    epoch: u64,
    lease: Duration,
    lost: CancellationToken,
    cancel: CancelSignal,
) {
    loop {
        tokio::time::sleep(lease / 3).await;
        match store.renew(run_id, epoch, lease).await {
            Ok(()) => {}
            Err(StoreError::CancelRequested { reason, .. }) => cancel.raise(reason),
            // The run came to rest under this lease: nothing is left to keep alive.
            Err(StoreError::Released { .. }) => return,
            Err(StoreError::Fenced { .. } | StoreError::NotFound(_)) => {
                lost.cancel();
                return;
            }
            Err(e) => tracing::warn!(%run_id, error = %e, "renewing the run's lease failed; retrying"),
        }
    }
}

/// The keeper's runtime, started on first use; `None` when no thread or runtime could be made
/// (said once in the log).
fn keeper() -> Option<&'static Handle> {
    static KEEPER: OnceLock<Option<Handle>> = OnceLock::new();
    KEEPER
        .get_or_init(|| {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot build the lease keeper's runtime; leases are renewed on the run's runtime");
                    return None;
                }
            };
            let handle = runtime.handle().clone();
            let started = std::thread::Builder::new()
                .name("flows-lease-keeper".into())
                .spawn(move || runtime.block_on(std::future::pending::<()>()));
            match started {
                Ok(_) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the lease keeper's thread; leases are renewed on the run's runtime");
                    None
                }
            }
        })
        .as_ref()
}
