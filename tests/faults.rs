//! Faults a production run meets: a step that blocks its thread, a step that outlives its
//! time limit, a panic in a state update, a compensation that fails, and the defaults that
//! protect a run nobody configured.

// Tests state their expectations with unwrap/expect: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use flow_core::RunStatus;
use flow_core::prelude::*;
use flow_core::store::{SqliteStore, Store};
use serde::{Deserialize, Serialize};

async fn store_at(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir.join("runs.db")).await.unwrap()
}

#[derive(Clone, Default, Debug, Serialize, Deserialize, PartialEq)]
struct Doc {
    steps: Vec<String>,
}

// ---------------------------------------------------------------- a step that blocks its thread

/// Blocks its thread on its first attempt until the test lets it go; later attempts return.
struct Blocking {
    attempts: Arc<AtomicU32>,
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

#[flow(state = Doc, name = "blocking")]
impl Blocking {
    #[start]
    async fn crunch(&self, cx: &Ctx<Doc>) -> Result<()> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            self.entered.lock().unwrap().send(()).unwrap();
            // Blocks the runtime's only thread, as a blocking call or a CPU loop would.
            self.release.lock().unwrap().recv().unwrap();
        }
        cx.update(|s| s.steps.push("crunch".into()));
        Ok(())
    }
}

/// The heartbeat does not share the thread a step blocks: while the step holds the only
/// thread of its runtime for several leases, another worker still cannot take the run.
#[test]
fn a_step_that_blocks_its_thread_keeps_the_run_leased() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let attempts = Arc::new(AtomicU32::new(0));
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let lease = Duration::from_millis(600);
    let flow =
        Blocking { attempts: attempts.clone(), entered: Mutex::new(entered_tx), release: Mutex::new(release_rx) };
    let worker = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let runner = Runner::new(flow).with_store(store_at(&path).await).lease(lease);
            runner.kickoff(Doc::default()).await
        })
    });
    entered.recv().unwrap();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = store_at(dir.path()).await;
        let run_id = store.list_runs(&Default::default()).await.unwrap()[0].run_id;
        // Long enough for several leases to lapse had nobody renewed them.
        std::thread::sleep(lease * 4);
        let other = Runner::new(Blocking {
            attempts: attempts.clone(),
            entered: Mutex::new(mpsc::channel().0),
            release: Mutex::new(mpsc::channel().1),
        })
        .with_store(store);
        let refused = other.resume(run_id).await.unwrap_err();
        assert!(
            matches!(refused, FlowError::RunLocked { .. }),
            "another worker took a run whose step is running: {refused:?}"
        );
    });
    release.send(()).unwrap();
    let outcome = worker.join().unwrap().unwrap();
    assert_eq!(outcome.status(), RunStatus::Completed);
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "the step ran once");
}
