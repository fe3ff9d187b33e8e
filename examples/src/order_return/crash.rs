//! The staged crash: the first return runs in a child process (the example binary, run
//! again), which is killed with SIGKILL while it talks to the warehouse.

use std::path::Path;
use std::time::{Duration, Instant};

use flow_core::console::Detail;
use flow_core::store::{RunFilter, SqliteStore, Store};
use flow_core::{RunStatus, Runner};
use uuid::Uuid;

use super::{Config, ReturnFlow, ReturnState, Shop, WAREHOUSE_ACK, sample_messages, script};
use crate::error::ExampleError;
use crate::setup::Setup;

/// Set (to anything) in the environment of the child process that runs the first part of the
/// crashing return.
pub const CHILD_ENV: &str = "ORDER_RETURN_CHILD";
const CHILD_LEASE_ENV: &str = "ORDER_RETURN_CHILD_LEASE_MS";
const CHILD_TRACE_ENV: &str = "ORDER_RETURN_CHILD_TRACE";
const CHILD_MAIL_DOWN_ENV: &str = "ORDER_RETURN_CHILD_MAIL_DOWN";

/// Whether this process is the child that
/// [`CrashMode::ChildProcess`](super::CrashMode::ChildProcess) starts.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// The child process's work: start the first return with the parent's database and lease,
/// and run until killed.
///
/// # Errors
///
/// [`ExampleError`] when setting up fails, or the run ends (it should be killed first).
pub async fn child_main() -> Result<(), ExampleError> {
    let mut setup = Setup::from_env();
    setup.trace = match std::env::var(CHILD_TRACE_ENV).as_deref() {
        Ok("quiet") => None,
        _ => Some(Detail::Full),
    };
    let lease = std::env::var(CHILD_LEASE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_millis);
    let trace = setup.console_with_prefix(&format!("    child {} │ ", std::process::id()));
    let (store, _) = setup.open_store().await?;
    let shop = Shop::open(setup.sibling("shop.db")?).await?;
    let backend = setup.connect_llm(None, script).await?;
    let mail_down = std::env::var(CHILD_MAIL_DOWN_ENV).map_or(true, |v| v != "0");
    let runner = Runner::new(ReturnFlow::new(backend.llm.clone(), shop, mail_down)?).with_store(store).lease(lease);
    trace.follow(&runner);
    let [first, _] = sample_messages();
    let outcome = runner.kickoff(ReturnState { message: first, ..ReturnState::default() }).await?;
    trace.flush();
    Err(ExampleError::Unexpected(format!("the child's run ended ({}) before it was killed", outcome.status())))
}

pub(super) fn spawn_child(
    config: &Config,
    db_path: &Path,
    program: &Path,
    args: &[String],
) -> Result<tokio::process::Child, ExampleError> {
    let quiet = config.setup.trace.is_none();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env(CHILD_ENV, "1")
        .env("FLOWS_DB", db_path)
        .env("FLOWS_OFFLINE", if config.setup.is_offline() { "1" } else { "0" })
        .env(CHILD_LEASE_ENV, config.lease.as_millis().to_string())
        .env(CHILD_TRACE_ENV, if quiet { "quiet" } else { "full" })
        .env(CHILD_MAIL_DOWN_ENV, if config.mail_relay_down { "1" } else { "0" })
        .stdin(std::process::Stdio::null())
        .stdout(if quiet { std::process::Stdio::null() } else { std::process::Stdio::inherit() })
        .kill_on_drop(true);
    Ok(cmd.spawn()?)
}

/// Waits until the child's run is inside the warehouse call, then kills the child (SIGKILL)
/// and reaps it. Returns the run's id.
pub(super) async fn kill_when_restocking(
    mut child: tokio::process::Child,
    store: &SqliteStore,
    shop: &Shop,
    started_ms: i64,
) -> Result<Uuid, ExampleError> {
    let run_id = tokio::select! {
        status = child.wait() => {
            return Err(ExampleError::Unexpected(format!("the child process exited ({}) before it could be killed", status?)));
        }
        found = restocking_run(store, shop, started_ms) => found?,
    };
    // Well inside the warehouse's acknowledgement window, and late enough for the child's
    // trace to have printed how far it got.
    tokio::time::sleep(WAREHOUSE_ACK / 4).await;
    child.start_kill()?;
    child.wait().await?;
    Ok(run_id)
}

/// Polls the store and the shop until a return started after `started_ms` has reached the
/// warehouse: the warehouse has applied the restock but the flow has not recorded it yet.
pub(super) async fn restocking_run(store: &SqliteStore, shop: &Shop, started_ms: i64) -> Result<Uuid, ExampleError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let filter = RunFilter {
        status: Some(RunStatus::Running),
        flow: Some("order_return".into()),
        limit: Some(10),
        ..RunFilter::default()
    };
    while Instant::now() < deadline {
        for run in store.list_runs(&filter).await? {
            if run.created_at_ms >= started_ms - 1_000 && !shop.stock_movements(run.run_id).await?.is_empty() {
                return Ok(run.run_id);
            }
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    Err(ExampleError::Unexpected("the return never reached the warehouse".into()))
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
