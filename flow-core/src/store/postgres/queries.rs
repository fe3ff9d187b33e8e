//! The SQL of every store operation, with row decoding.
//!
//! Writes run inside a transaction the caller opens and commits ([`super::PgStore`]); every
//! statement that changes a run carries the lease epoch in its own `WHERE` clause, or runs
//! after a statement that locked the run row and read the epoch in the same transaction.
//! Statements are prepared once per connection (deadpool's statement cache).

use crate::store::decode::{decode_json, decode_opt_json, decode_raw, decode_run_status, decode_u32, decode_u64};
use std::time::Duration;

use deadpool_postgres::{GenericClient, Transaction};
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};
use uuid::Uuid;

use super::error::{Pg, corrupt};
use crate::graph::GraphDoc;
use crate::journal::TokenUsage;
use crate::store::admission::{self, Admission};
use crate::store::decode::{decode_answer, waiting_at};
use crate::store::{
    CheckpointInfo, Claim, ClaimRequest, Commit, DamagedRun, JournalEntry, Listing, NewRun, Placement, RunFilter,
    RunRecord, RunStatus, RunSummary, Snapshot, Start, StepRecord, StepStatus, StoreError,
};

/// Now, in milliseconds since the Unix epoch, on the database's clock: the same clock for every
/// worker on every machine. `now()` is the transaction's start, so one transaction's rows
/// agree on it.
macro_rules! now_ms {
    () => {
        "(floor(extract(epoch FROM now()) * 1000))::bigint"
    };
}

macro_rules! run_columns {
    () => {
        "r.run_id, r.flow, r.parent_run_id, r.status, r.version, r.output, r.error, r.pause, r.lease_owner, \
         r.lease_expires_at, r.epoch, r.created_at, r.updated_at, c.state, c.progress, r.queue, r.concurrency_key, \
         r.available_at, r.answer, r.cancel_requested"
    };
}

// The run's snapshot is its newest checkpoint, numbered by its version.
const SELECT_RUN: &str = concat!(
    "SELECT ",
    run_columns!(),
    " FROM flow_runs r LEFT JOIN flow_checkpoints c ON c.run_id = r.run_id AND c.seq = r.version \
     WHERE r.run_id = $1"
);

const RUN_EPOCH: &str = "SELECT epoch, lease_owner IS NOT NULL FROM flow_runs WHERE run_id = $1";

// Locks the run row against a claim (which bumps the epoch) until the journal write commits.
const RUN_EPOCH_SHARED: &str = "SELECT epoch FROM flow_runs WHERE run_id = $1 FOR SHARE";

// A queued run has no owner and no lease length: `now + NULL` is no expiry.
const INSERT_RUN: &str = concat!(
    "INSERT INTO flow_runs (run_id, flow, parent_run_id, status, version, lease_owner, lease_expires_at, epoch, \
     created_at, updated_at, queue, concurrency_key, available_at, graph_digest) VALUES ($1, $2, $3, $6, 1, $4, ",
    now_ms!(),
    " + $5, $7, ",
    now_ms!(),
    ", ",
    now_ms!(),
    ", $8, $9, $10, $11) ON CONFLICT (run_id) DO NOTHING RETURNING run_id"
);

const INSERT_GRAPH: &str = concat!(
    "INSERT INTO flow_graphs (flow, digest, graph, created_at) VALUES ($1, $2, $3, ",
    now_ms!(),
    ") ON CONFLICT (flow, digest) DO NOTHING"
);

// The run's digest beside its graph: a run with a digest and no graph row is damaged, one with
// neither was created before graphs were stored.
const SELECT_RUN_GRAPH: &str = "SELECT r.graph_digest, g.graph FROM flow_runs r \
     LEFT JOIN flow_graphs g ON g.flow = r.flow AND g.digest = r.graph_digest WHERE r.run_id = $1";

/// The channel workers of this schema listen on (`LISTEN`), named from the schema so stores in
/// other schemas of the database do not wake them. [`super::listen`] asks the server for it.
macro_rules! work_channel {
    () => {
        "'flows_work_' || hashtext(current_schema())::text"
    };
}

pub(super) const WORK_CHANNEL: &str = concat!("SELECT ", work_channel!());

// Delivered when the transaction commits, to every listener of the schema: a run of queue $1
// may have become runnable.
const NOTIFY_WORK: &str = concat!("SELECT pg_notify(", work_channel!(), ", $1)");

// Serializes the claimers of one limited queue: the first key names these locks among the
// database's advisory locks, the second the schema and queue.
const LOCK_QUEUE: &str = "SELECT pg_advisory_xact_lock(1718579064, hashtext(current_schema() || '/' || $1))";

// Live leases per queue and key, over every run of the queues $1.
const LIVE_LEASES: &str = concat!(
    "SELECT queue, concurrency_key, count(*) FROM flow_runs WHERE lease_owner IS NOT NULL AND lease_expires_at > ",
    now_ms!(),
    " AND queue = ANY($1) GROUP BY queue, concurrency_key"
);

// Runnable runs of the flows $2 in the queues $1, the longest due first, leaving out the
// (queue, key) pairs at their limit ($3, $4) and the rows another claimer holds locked.
const CLAIM_CANDIDATES: &str = concat!(
    "SELECT run_id, queue, concurrency_key FROM flow_runs WHERE status IN ('queued', 'running') \
     AND queue = ANY($1) AND flow = ANY($2) \
     AND (lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at <= ",
    now_ms!(),
    ") AND (status = 'running' OR available_at IS NULL OR available_at <= ",
    now_ms!(),
    ") AND NOT EXISTS (SELECT 1 FROM unnest($3::text[], $4::text[]) AS f (q, k) \
         WHERE f.q = queue AND f.k = concurrency_key) \
     ORDER BY COALESCE(available_at, updated_at), created_at, run_id LIMIT $5 FOR UPDATE SKIP LOCKED"
);

const WAITING_STATE: &str = "SELECT status, pause, answer IS NOT NULL FROM flow_runs WHERE run_id = $1 FOR UPDATE";

const SET_ANSWER: &str = concat!(
    "UPDATE flow_runs SET answer = $2, status = 'queued', available_at = ",
    now_ms!(),
    ", updated_at = ",
    now_ms!(),
    " WHERE run_id = $1 RETURNING queue"
);

const REQUEUE: &str = concat!(
    "UPDATE flow_runs SET status = 'queued', available_at = ",
    now_ms!(),
    ", updated_at = ",
    now_ms!(),
    " WHERE run_id = $1 AND status = 'failed' RETURNING queue"
);

// A live lease (held and not expired) refuses every claimant, its own holder included. Two
// claims racing on one row: the second waits for the first's row lock, then re-checks this
// condition against the row the first wrote, and matches nothing.
const TAKE_LEASE: &str = concat!(
    "WITH r AS (UPDATE flow_runs SET epoch = epoch + 1, lease_owner = $2, lease_expires_at = ",
    now_ms!(),
    " + $3 WHERE run_id = $1 AND (lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at <= ",
    now_ms!(),
    ") RETURNING *) SELECT ",
    run_columns!(),
    " FROM r LEFT JOIN flow_checkpoints c ON c.run_id = r.run_id AND c.seq = r.version"
);

const SELECT_LEASE: &str = concat!(
    "SELECT lease_owner, lease_expires_at, lease_owner IS NOT NULL AND lease_expires_at > ",
    now_ms!(),
    " FROM flow_runs WHERE run_id = $1"
);

// Only a lease still held: a renewal that reaches the store after the run came to rest under
// the same epoch (the heartbeat's write behind the final commit) must not give the released
// run an expiry again.
const RELEASE_LEASE: &str = "UPDATE flow_runs SET lease_owner = NULL, lease_expires_at = NULL \
     WHERE run_id = $1 AND epoch = $2 RETURNING status, queue";

// Returns the pending cancel request, if any, so the holder learns of it.
const RENEW_LEASE: &str = concat!(
    "UPDATE flow_runs SET lease_expires_at = ",
    now_ms!(),
    " + $3 WHERE run_id = $1 AND epoch = $2 AND lease_owner IS NOT NULL \
     RETURNING CASE WHEN status NOT IN ('completed', 'cancelled') THEN cancel_requested END"
);

// A run at rest goes back to its queue, due now; a running one is only marked. The first
// reason stays.
const REQUEST_CANCEL: &str = concat!(
    "UPDATE flow_runs SET cancel_requested = COALESCE(cancel_requested, $2), \
     status = CASE WHEN status = 'running' THEN status ELSE 'queued' END, \
     available_at = CASE WHEN status = 'running' THEN available_at ELSE ",
    now_ms!(),
    " END, updated_at = ",
    now_ms!(),
    " WHERE run_id = $1 AND status NOT IN ('completed', 'cancelled') RETURNING status, queue"
);

// The fence and the version bump in one statement. $7 says whether the run stays running:
// any other status releases the lease. Every commit clears the answer the run was resumed with.
// A run with a cancel pending that would come to rest waiting (paused, failed, escalated,
// parked) is queued due now instead (`requeued_for_cancel`), for a worker to cancel it.
const UPDATE_RUN: &str = concat!(
    "UPDATE flow_runs SET version = version + 1, \
     status = CASE WHEN cancel_requested IS NOT NULL AND $3 IN ('paused', 'failed', 'escalated', 'queued') \
         THEN 'queued' ELSE $3 END, \
     output = $4, error = $5, pause = $6, \
     lease_owner = CASE WHEN $7::boolean THEN lease_owner END, \
     lease_expires_at = CASE WHEN $7::boolean THEN lease_expires_at END, \
     available_at = CASE WHEN cancel_requested IS NOT NULL AND $3 IN ('paused', 'failed', 'escalated', 'queued') \
         THEN ",
    now_ms!(),
    " ELSE $8 END, answer = NULL, updated_at = ",
    now_ms!(),
    " WHERE run_id = $1 AND epoch = $2 RETURNING version, queue, status"
);

const UPSERT_STEP: &str = concat!(
    "INSERT INTO flow_steps (run_id, step_key, ord, method, status, input, output, error, attempt, created_at, \
     updated_at, started_at, finished_at, token_usage) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, ",
    now_ms!(),
    ", ",
    now_ms!(),
    ", $10, $11, $12) ON CONFLICT (run_id, step_key) DO UPDATE SET method = excluded.method, \
     status = excluded.status, input = excluded.input, output = excluded.output, error = excluded.error, \
     attempt = excluded.attempt, updated_at = excluded.updated_at, started_at = excluded.started_at, \
     finished_at = excluded.finished_at, token_usage = excluded.token_usage"
);

const APPEND_CHECKPOINT: &str = concat!(
    "INSERT INTO flow_checkpoints (run_id, seq, step_key, status, state, progress, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, ",
    now_ms!(),
    ")"
);

const PRUNE_CHECKPOINTS: &str = "DELETE FROM flow_checkpoints WHERE run_id = $1 AND seq <= $2";

const SELECT_STEPS: &str = "SELECT step_key, method, status, input, output, error, attempt, started_at, \
     finished_at, token_usage FROM flow_steps WHERE run_id = $1 ORDER BY ord";

const SELECT_CHECKPOINTS: &str =
    "SELECT seq, step_key, status, created_at FROM flow_checkpoints WHERE run_id = $1 ORDER BY seq";

const SELECT_CHECKPOINT: &str = "SELECT state, progress FROM flow_checkpoints WHERE run_id = $1 AND seq = $2";

const RUN_EXISTS: &str = "SELECT 1 FROM flow_runs WHERE run_id = $1";

const INSERT_JOURNAL: &str = concat!(
    "INSERT INTO step_journal (run_id, step_key, seq, kind, name, request_hash, output, epoch, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, ",
    now_ms!(),
    ") ON CONFLICT (run_id, step_key, seq) DO NOTHING"
);

const SELECT_JOURNAL: &str = "SELECT kind, name, request_hash, output FROM step_journal \
     WHERE run_id = $1 AND step_key = $2 AND seq = $3";

// Refuses a live lease in the statement itself, so no claim can slip in between a check and
// the delete; steps, checkpoints and journal go by the foreign keys' cascade.
const DELETE_RUN: &str = concat!(
    "DELETE FROM flow_runs WHERE run_id = $1 AND (lease_owner IS NULL OR lease_expires_at IS NULL OR \
     lease_expires_at <= ",
    now_ms!(),
    ") RETURNING run_id"
);

macro_rules! summary_query {
    ($($where:literal)?) => {
        concat!(
            "SELECT run_id, flow, status, pause, created_at, updated_at, queue, concurrency_key, available_at \
             FROM flow_runs ",
            $($where, " ",)?
            "ORDER BY created_at DESC, run_id DESC LIMIT $1"
        )
    };
}

const SUMMARY_OF_RUN: &str = "SELECT run_id, flow, status, pause, created_at, updated_at, queue, concurrency_key, \
     available_at FROM flow_runs WHERE run_id = $1";

/// A lease of about a century is as good as forever, and keeps `now + lease` inside `bigint`.
const LONGEST_LEASE_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// Room for this many new steps per commit in a step's `ord` (version * 2^20 + position).
const STEPS_PER_COMMIT: usize = 1 << 20;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).min(LONGEST_LEASE_MS)
}

// Request hashes use all 64 bits; `bigint` is signed, so the bits are stored as they are.
fn hash_to_sql(h: u64) -> i64 {
    i64::from_ne_bytes(h.to_ne_bytes())
}

fn hash_from_sql(h: i64) -> u64 {
    u64::from_ne_bytes(h.to_ne_bytes())
}

/// An epoch no stored epoch can equal when the caller's does not fit `bigint`; the write is
/// then fenced, which is the truth (no such epoch was ever issued).
fn epoch_param(epoch: u64) -> i64 {
    i64::try_from(epoch).unwrap_or(-1)
}

fn opt_json(v: Option<&Value>) -> Option<String> {
    // `Some(Value::Null)` is stored as the text `null`, distinct from SQL NULL for `None`.
    v.map(Value::to_string)
}

/// Reads a column; a value of another type than the schema's is damage to that row.
fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize, run_id: Uuid, what: &str) -> Result<T, StoreError> {
    row.try_get(i).map_err(|e| corrupt(run_id, what, e))
}

/// Decodes a row of [`run_columns`].
fn decode_run(row: &Row, run_id: Uuid) -> Result<RunRecord, StoreError> {
    let state: Option<String> = col(row, 13, run_id, "checkpoint state")?;
    let progress: Option<String> = col(row, 14, run_id, "checkpoint progress")?;
    let (Some(state), Some(progress)) = (state, progress) else {
        return Err(corrupt(run_id, "checkpoint history", "the run has no checkpoint to continue from"));
    };
    let status: String = col(row, 3, run_id, "status")?;
    Ok(RunRecord {
        run_id: col(row, 0, run_id, "run id")?,
        flow: col(row, 1, run_id, "flow")?,
        parent_run_id: col(row, 2, run_id, "parent run id")?,
        status: decode_run_status(run_id, "status", &status)?,
        snapshot: Snapshot {
            state: decode_raw(run_id, "state", state)?,
            progress: decode_raw(run_id, "progress", progress)?,
        },
        version: decode_u64(run_id, "version", col(row, 4, run_id, "version")?)?,
        output: decode_opt_json(run_id, "output", col(row, 5, run_id, "output")?)?,
        error: col(row, 6, run_id, "error")?,
        pause: decode_opt_json(run_id, "pause", col(row, 7, run_id, "pause")?)?,
        lease_owner: col(row, 8, run_id, "lease owner")?,
        lease_expires_at_ms: col(row, 9, run_id, "lease expiry")?,
        epoch: decode_u64(run_id, "epoch", col(row, 10, run_id, "epoch")?)?,
        placement: Placement { queue: col(row, 15, run_id, "queue")?, key: col(row, 16, run_id, "concurrency key")? },
        available_at_ms: col(row, 17, run_id, "due time")?,
        answer: decode_answer(run_id, col(row, 18, run_id, "answer")?)?,
        cancel_requested: col(row, 19, run_id, "cancel request")?,
        created_at_ms: col(row, 11, run_id, "creation time")?,
        updated_at_ms: col(row, 12, run_id, "update time")?,
    })
}

/// Inserts new steps, positioned after every step of earlier versions, and updates known ones
/// (which keep their position). The statements are sent together (pipelined).
async fn upsert_steps(
    tx: &Transaction<'_>,
    pg: &Pg,
    run_id: Uuid,
    version: i64,
    steps: &[StepRecord],
) -> Result<(), StoreError> {
    if steps.is_empty() {
        return Ok(());
    }
    if steps.len() > STEPS_PER_COMMIT {
        return Err(StoreError::Backend(format!(
            "run {run_id}: one commit carries {} steps, more than the {STEPS_PER_COMMIT} a commit may schedule",
            steps.len()
        )));
    }
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = tx.prepare_cached(UPSERT_STEP).await.map_err(fail)?;
    let base = version.saturating_mul(STEPS_PER_COMMIT as i64);
    let rows: Vec<_> = steps
        .iter()
        .enumerate()
        .map(|(position, step)| {
            (
                base + position as i64,
                step.status.as_str(),
                opt_json(step.input.as_ref()),
                opt_json(step.output.as_ref()),
                i64::from(step.attempt),
                step.usage.map(|u| serde_json::json!(u).to_string()),
                step,
            )
        })
        .collect();
    let stmt = &stmt;
    let writes = rows.iter().map(|(ord, status, input, output, attempt, usage, step)| async move {
        let params: [&(dyn ToSql + Sync); 12] = [
            &run_id,
            &step.step_key,
            ord,
            &step.method,
            status,
            input,
            output,
            &step.error,
            attempt,
            &step.started_at_ms,
            &step.finished_at_ms,
            usage,
        ];
        tx.execute(stmt, &params).await
    });
    futures::future::try_join_all(writes).await.map_err(fail)?;
    Ok(())
}

/// Inserts a run, its first checkpoint and its start steps, and its graph unless
/// `graph_stored` says this store wrote it already. Returns its lease epoch: 1 under the
/// creator's lease, 0 when queued (the workers listening are told).
pub(super) async fn create_run(
    tx: &Transaction<'_>,
    pg: &Pg,
    run: &NewRun,
    graph_stored: bool,
) -> Result<u64, StoreError> {
    let id = run.run_id;
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(id));
    let (status, owner, lease, epoch, available_at) = match &run.start {
        Start::Leased { owner, lease } => (RunStatus::Running, Some(owner.as_str()), Some(millis(*lease)), 1_i64, None),
        Start::Queued { available_at_ms } => (RunStatus::Queued, None, None, 0, *available_at_ms),
    };
    let insert = tx.prepare_cached(INSERT_RUN).await.map_err(fail)?;
    let digest = run.graph.as_ref().map(|g| g.digest.as_str());
    let params: [&(dyn ToSql + Sync); 11] = [
        &id,
        &run.flow,
        &run.parent_run_id,
        &owner,
        &lease,
        &status.as_str(),
        &epoch,
        &run.placement.queue,
        &run.placement.key,
        &available_at,
        &digest,
    ];
    let inserted = tx.query_opt(&insert, &params).await.map_err(fail)?;
    if inserted.is_none() {
        return Err(StoreError::Duplicate(id));
    }
    if let Some(graph) = run.graph.as_ref().filter(|_| !graph_stored) {
        let stmt = tx.prepare_cached(INSERT_GRAPH).await.map_err(fail)?;
        tx.execute(&stmt, &[&run.flow, &graph.digest, &graph.json]).await.map_err(fail)?;
    }
    let append = tx.prepare_cached(APPEND_CHECKPOINT).await.map_err(fail)?;
    let (state, progress) = (run.snapshot.state.get(), run.snapshot.progress.get());
    tx.execute(&append, &[&id, &1_i64, &None::<&str>, &status.as_str(), &state, &progress]).await.map_err(fail)?;
    upsert_steps(tx, pg, id, 1, &run.steps).await?;
    if status == RunStatus::Queued {
        notify_work(tx, pg, Some(id), &run.placement.queue).await?;
    }
    decode_u64(id, "epoch", epoch)
}

/// Tells the workers listening that a run of `queue` may be runnable, when the transaction
/// commits.
async fn notify_work(
    client: &impl GenericClient,
    pg: &Pg,
    run_id: Option<Uuid>,
    queue: &str,
) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, run_id);
    let stmt = client.prepare_cached(NOTIFY_WORK).await.map_err(fail)?;
    client.execute(&stmt, &[&queue]).await.map_err(fail)?;
    Ok(())
}

/// Claims up to `request.max` runnable runs, as `claim` does, within the queues' limits.
///
/// Claimers of a queue with limits take that queue's advisory lock first (in name order, so two
/// claimers never wait on each other crosswise), then count the live leases of the whole queue:
/// the lock holds until this transaction commits its leases, so the next claimer counts them.
/// Candidates are read `FOR UPDATE SKIP LOCKED`, a page at a time, leaving out the queues and
/// keys already full.
pub(super) async fn claim_next(
    tx: &Transaction<'_>,
    pg: &Pg,
    request: &ClaimRequest,
) -> Result<Vec<Claim>, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, None);
    let mut claims = Vec::new();
    if request.max == 0 || request.flows.is_empty() || request.queues.is_empty() {
        return Ok(claims);
    }
    let mut limited: Vec<&str> =
        request.queues.iter().filter(|q| Admission::is_limited(q)).map(|q| q.queue.as_str()).collect();
    limited.sort_unstable();
    limited.dedup();
    let mut held = Vec::new();
    if !limited.is_empty() {
        let lock = tx.prepare_cached(LOCK_QUEUE).await.map_err(fail)?;
        for queue in &limited {
            tx.execute(&lock, &[queue]).await.map_err(fail)?;
        }
        let count = tx.prepare_cached(LIVE_LEASES).await.map_err(fail)?;
        for row in tx.query(&count, &[&limited]).await.map_err(fail)? {
            let queue: String = row.try_get(0).map_err(fail)?;
            let key: Option<String> = row.try_get(1).map_err(fail)?;
            let n: i64 = row.try_get(2).map_err(fail)?;
            held.push((queue, key, u32::try_from(n).unwrap_or(u32::MAX)));
        }
    }
    let mut admission = Admission::new(request, held);
    let candidates = tx.prepare_cached(CLAIM_CANDIDATES).await.map_err(fail)?;
    let take = tx.prepare_cached(TAKE_LEASE).await.map_err(fail)?;
    let lease = millis(request.lease);
    for _ in 0..admission::MAX_PAGES {
        let open = admission.open_queues();
        let wanted = request.max - claims.len();
        if open.is_empty() || wanted == 0 {
            break;
        }
        let (full_queues, full_keys) = admission.full_keys();
        let page = i64::try_from(wanted).unwrap_or(i64::MAX);
        let rows =
            tx.query(&candidates, &[&open, &request.flows, &full_queues, &full_keys, &page]).await.map_err(fail)?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            if claims.len() >= request.max {
                break;
            }
            let run_id: Uuid = row.try_get(0).map_err(fail)?;
            let queue: String = col(&row, 1, run_id, "queue")?;
            let key: Option<String> = col(&row, 2, run_id, "concurrency key")?;
            if !admission.admit(&queue, key.as_deref()) {
                continue;
            }
            let Some(taken) = tx.query_opt(&take, &[&run_id, &request.owner, &lease]).await.map_err(fail)? else {
                continue;
            };
            match decode_run(&taken, run_id) {
                Ok(run) => claims.push(Claim { epoch: run.epoch, run }),
                // Its lease is taken (so the queue moves on past it) and the damage is logged
                // for repair; the other claims stand.
                Err(e) => tracing::error!(run_id = %run_id, error = %e, "claimed a run whose row cannot be read"),
            }
        }
    }
    Ok(claims)
}

/// The run's status, its pause request and whether it holds an answer, locking its row.
async fn waiting_state(
    tx: &Transaction<'_>,
    pg: &Pg,
    run_id: Uuid,
) -> Result<(RunStatus, Option<Value>, bool), StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = tx.prepare_cached(WAITING_STATE).await.map_err(fail)?;
    let row = tx.query_opt(&stmt, &[&run_id]).await.map_err(fail)?.ok_or(StoreError::NotFound(run_id))?;
    let status: String = col(&row, 0, run_id, "status")?;
    Ok((
        decode_run_status(run_id, "status", &status)?,
        decode_opt_json(run_id, "pause", col(&row, 1, run_id, "pause")?)?,
        col(&row, 2, run_id, "answer")?,
    ))
}

/// Stores the answer of a run paused at `step_key` and queues it, due now.
pub(super) async fn answer(
    tx: &Transaction<'_>,
    pg: &Pg,
    run_id: Uuid,
    step_key: &str,
    value: &Value,
) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let (status, pause, answered) = waiting_state(tx, pg, run_id).await?;
    let waiting_at = waiting_at(pause.as_ref());
    if status != RunStatus::Paused || answered || waiting_at.as_deref() != Some(step_key) {
        return Err(StoreError::NotWaiting { run_id, status, waiting_at: waiting_at.filter(|k| k != step_key) });
    }
    let stored = serde_json::json!({ "step_key": step_key, "value": value }).to_string();
    let stmt = tx.prepare_cached(SET_ANSWER).await.map_err(fail)?;
    let row = tx.query_one(&stmt, &[&run_id, &stored]).await.map_err(fail)?;
    notify_work(tx, pg, Some(run_id), &col::<String>(&row, 0, run_id, "queue")?).await
}

/// Queues a failed run again, due now.
pub(super) async fn requeue(tx: &Transaction<'_>, pg: &Pg, run_id: Uuid) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = tx.prepare_cached(REQUEUE).await.map_err(fail)?;
    match tx.query_opt(&stmt, &[&run_id]).await.map_err(fail)? {
        Some(row) => notify_work(tx, pg, Some(run_id), &col::<String>(&row, 0, run_id, "queue")?).await,
        None => {
            let (status, _, _) = waiting_state(tx, pg, run_id).await?;
            Err(StoreError::NotWaiting { run_id, status, waiting_at: None })
        }
    }
}

/// Records a cancel request; queues a run at rest, due now, and tells the workers listening.
pub(super) async fn request_cancel(
    tx: &Transaction<'_>,
    pg: &Pg,
    run_id: Uuid,
    reason: &str,
) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = tx.prepare_cached(REQUEST_CANCEL).await.map_err(fail)?;
    match tx.query_opt(&stmt, &[&run_id, &reason]).await.map_err(fail)? {
        Some(row) => {
            let status: String = col(&row, 0, run_id, "status")?;
            if status == RunStatus::Queued.as_str() {
                notify_work(tx, pg, Some(run_id), &col::<String>(&row, 1, run_id, "queue")?).await?;
            }
            Ok(())
        }
        None => {
            let (status, _, _) = waiting_state(tx, pg, run_id).await?;
            Err(StoreError::Ended { run_id, status })
        }
    }
}

/// Takes the lease unless someone holds a live one; bumps the epoch.
pub(super) async fn claim(
    tx: &Transaction<'_>,
    pg: &Pg,
    run_id: Uuid,
    owner: &str,
    lease: Duration,
) -> Result<Claim, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let take = tx.prepare_cached(TAKE_LEASE).await.map_err(fail)?;
    let lease_of = tx.prepare_cached(SELECT_LEASE).await.map_err(fail)?;
    // The lease read after a refused take can have been released in between by its holder's
    // final commit; the take is then tried again.
    let mut tries = 0;
    loop {
        if let Some(row) = tx.query_opt(&take, &[&run_id, &owner, &millis(lease)]).await.map_err(fail)? {
            // A row that does not decode fails the claim here, and the caller rolls the bump back.
            let run = decode_run(&row, run_id)?;
            return Ok(Claim { epoch: run.epoch, run });
        }
        let Some(row) = tx.query_opt(&lease_of, &[&run_id]).await.map_err(fail)? else {
            return Err(StoreError::NotFound(run_id));
        };
        let holder: Option<String> = col(&row, 0, run_id, "lease owner")?;
        let expires: Option<i64> = col(&row, 1, run_id, "lease expiry")?;
        let live: Option<bool> = col(&row, 2, run_id, "lease")?;
        tries += 1;
        if let (Some(holder), Some(expires_at_ms)) = (holder, expires)
            && (live == Some(true) || tries >= 3)
        {
            return Err(StoreError::Locked { run_id, owner: holder, expires_at_ms });
        }
        if tries >= 3 {
            return Err(StoreError::Busy(format!(
                "run {run_id}: its lease changed hands during each of three claims; retry the claim"
            )));
        }
    }
}

/// Extends the lease held under `epoch`.
pub(super) async fn renew(
    client: &impl GenericClient,
    pg: &Pg,
    run_id: Uuid,
    epoch: u64,
    lease: Duration,
) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = client.prepare_cached(RENEW_LEASE).await.map_err(fail)?;
    if let Some(row) = client.query_opt(&stmt, &[&run_id, &epoch_param(epoch), &millis(lease)]).await.map_err(fail)? {
        return match col::<Option<String>>(&row, 0, run_id, "cancel request")? {
            Some(reason) => Err(StoreError::CancelRequested { run_id, reason }),
            None => Ok(()),
        };
    }
    Err(match epoch_of(client, pg, run_id).await? {
        None => StoreError::NotFound(run_id),
        // The epoch still matches, so the lease is what is missing.
        Some((current, _)) if current == epoch => StoreError::Released { run_id, epoch },
        Some((current, _)) => StoreError::Fenced { run_id, epoch, current },
    })
}

/// Gives up the lease held under `epoch`, leaving the run as it is; a queued or running run is
/// then runnable, and the workers listening are told.
pub(super) async fn release(client: &impl GenericClient, pg: &Pg, run_id: Uuid, epoch: u64) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = client.prepare_cached(RELEASE_LEASE).await.map_err(fail)?;
    if let Some(row) = client.query_opt(&stmt, &[&run_id, &epoch_param(epoch)]).await.map_err(fail)? {
        let status: String = col(&row, 0, run_id, "status")?;
        if matches!(RunStatus::parse(&status), Some(RunStatus::Queued | RunStatus::Running)) {
            notify_work(client, pg, Some(run_id), &col::<String>(&row, 1, run_id, "queue")?).await?;
        }
        return Ok(());
    }
    Err(match epoch_of(client, pg, run_id).await? {
        None => StoreError::NotFound(run_id),
        Some((current, _)) => StoreError::Fenced { run_id, epoch, current },
    })
}

/// The run's epoch and whether its lease is held, to explain a fenced write.
async fn epoch_of(client: &impl GenericClient, pg: &Pg, run_id: Uuid) -> Result<Option<(u64, bool)>, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = client.prepare_cached(RUN_EPOCH).await.map_err(fail)?;
    let Some(row) = client.query_opt(&stmt, &[&run_id]).await.map_err(fail)? else {
        return Ok(None);
    };
    let epoch = decode_u64(run_id, "epoch", col(&row, 0, run_id, "epoch")?)?;
    Ok(Some((epoch, col(&row, 1, run_id, "lease owner")?)))
}

/// One checkpoint, fenced by the epoch: the run row (status, version, lease), the history row
/// (which is the run's snapshot), the steps and retention. Returns `Ok(None)` when the epoch
/// did not match (the caller rolls back and says why, outside the transaction).
pub(super) async fn commit(
    tx: &Transaction<'_>,
    pg: &Pg,
    commit: &Commit,
    keep: Option<usize>,
) -> Result<Option<i64>, StoreError> {
    let id = commit.run_id;
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(id));
    let update = tx.prepare_cached(UPDATE_RUN).await.map_err(fail)?;
    let output = opt_json(commit.output.as_ref());
    let pause = opt_json(commit.pause.as_ref());
    let stays_running = !commit.status.is_at_rest();
    let queued = commit.status == RunStatus::Queued;
    let available_at = if queued { commit.available_at_ms } else { None };
    let params: [&(dyn ToSql + Sync); 8] = [
        &id,
        &epoch_param(commit.epoch),
        &commit.status.as_str(),
        &output,
        &commit.error,
        &pause,
        &stays_running,
        &available_at,
    ];
    let Some(row) = tx.query_opt(&update, &params).await.map_err(fail)? else {
        return Ok(None);
    };
    let version: i64 = col(&row, 0, id, "version")?;
    let stored: String = col(&row, 2, id, "status")?;
    if queued || stored == RunStatus::Queued.as_str() {
        notify_work(tx, pg, Some(id), &col::<String>(&row, 1, id, "queue")?).await?;
    }
    let append = tx.prepare_cached(APPEND_CHECKPOINT).await.map_err(fail)?;
    let (state, progress) = (commit.snapshot.state.get(), commit.snapshot.progress.get());
    let status = commit.status.as_str();
    let params: [&(dyn ToSql + Sync); 6] = [&id, &version, &commit.step_key, &status, &state, &progress];
    let checkpoint = tx.execute(&append, &params);
    let steps = upsert_steps(tx, pg, id, version, &commit.steps);
    let prune = async {
        let Some(keep) = keep else { return Ok(()) };
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        if version <= keep {
            return Ok(());
        }
        let stmt = tx.prepare_cached(PRUNE_CHECKPOINTS).await.map_err(fail)?;
        tx.execute(&stmt, &[&id, &(version - keep)]).await.map_err(fail).map(drop)
    };
    let (checkpoint, steps, prune) = futures::join!(checkpoint, steps, prune);
    checkpoint.map_err(fail)?;
    steps?;
    prune?;
    Ok(Some(version))
}

/// Why a fenced commit matched no row: the run is missing, or its epoch moved on.
pub(super) async fn fenced_or_missing(client: &impl GenericClient, pg: &Pg, run_id: Uuid, epoch: u64) -> StoreError {
    match epoch_of(client, pg, run_id).await {
        Ok(None) => StoreError::NotFound(run_id),
        Ok(Some((current, _))) => StoreError::Fenced { run_id, epoch, current },
        Err(e) => e,
    }
}

/// Records an effect unless one is recorded at its position; returns the one that is. With
/// `held`, the epoch this process's lease on the run was issued under, a run taken over since
/// refuses the write.
pub(super) async fn journal_put(
    tx: &Transaction<'_>,
    pg: &Pg,
    entry: &JournalEntry,
    held: Option<u64>,
) -> Result<JournalEntry, StoreError> {
    let id = entry.run_id;
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(id));
    let lock = tx.prepare_cached(RUN_EPOCH_SHARED).await.map_err(fail)?;
    let Some(row) = tx.query_opt(&lock, &[&id]).await.map_err(fail)? else {
        return Err(StoreError::NotFound(id));
    };
    let current = decode_u64(id, "epoch", col(&row, 0, id, "epoch")?)?;
    if let Some(held) = held
        && held != current
    {
        return Err(StoreError::Fenced { run_id: id, epoch: held, current });
    }
    let insert = tx.prepare_cached(INSERT_JOURNAL).await.map_err(fail)?;
    let params: [&(dyn ToSql + Sync); 8] = [
        &id,
        &entry.step_key,
        &i64::from(entry.seq),
        &entry.kind,
        &entry.name,
        &hash_to_sql(entry.request_hash),
        &entry.output.to_string(),
        &epoch_param(current),
    ];
    tx.execute(&insert, &params).await.map_err(fail)?;
    journal_get(tx, pg, id, &entry.step_key, entry.seq).await?.ok_or_else(|| {
        StoreError::Backend(format!(
            "run {id}: journal entry {}:{} vanished right after it was written",
            entry.step_key, entry.seq
        ))
    })
}

/// The recorded effect at `(step_key, seq)`, if any.
pub(super) async fn journal_get(
    client: &impl GenericClient,
    pg: &Pg,
    run_id: Uuid,
    step_key: &str,
    seq: u32,
) -> Result<Option<JournalEntry>, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = client.prepare_cached(SELECT_JOURNAL).await.map_err(fail)?;
    let Some(row) = client.query_opt(&stmt, &[&run_id, &step_key, &i64::from(seq)]).await.map_err(fail)? else {
        return Ok(None);
    };
    let what = format!("journal entry {step_key}:{seq}");
    let output: String = col(&row, 3, run_id, &what)?;
    Ok(Some(JournalEntry {
        run_id,
        step_key: step_key.to_string(),
        seq,
        kind: col(&row, 0, run_id, &what)?,
        name: col(&row, 1, run_id, &what)?,
        request_hash: hash_from_sql(col(&row, 2, run_id, &what)?),
        output: decode_json(run_id, &format!("{what} output"), &output)?,
    }))
}

async fn require_run(client: &impl GenericClient, pg: &Pg, run_id: Uuid) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = client.prepare_cached(RUN_EXISTS).await.map_err(fail)?;
    match client.query_opt(&stmt, &[&run_id]).await.map_err(fail)? {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound(run_id)),
    }
}

/// Deletes the run and everything stored for it, unless someone holds a live lease on it.
pub(super) async fn delete_run(tx: &Transaction<'_>, pg: &Pg, run_id: Uuid) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let delete = tx.prepare_cached(DELETE_RUN).await.map_err(fail)?;
    if tx.query_opt(&delete, &[&run_id]).await.map_err(fail)?.is_some() {
        return Ok(());
    }
    let lease_of = tx.prepare_cached(SELECT_LEASE).await.map_err(fail)?;
    let Some(row) = tx.query_opt(&lease_of, &[&run_id]).await.map_err(fail)? else {
        return Err(StoreError::NotFound(run_id));
    };
    let holder: Option<String> = col(&row, 0, run_id, "lease owner")?;
    let expires: Option<i64> = col(&row, 1, run_id, "lease expiry")?;
    let live: Option<bool> = col(&row, 2, run_id, "lease")?;
    match (holder, expires, live) {
        (Some(owner), Some(expires_at_ms), Some(true)) => Err(StoreError::Locked { run_id, owner, expires_at_ms }),
        // The lease lapsed between the two statements: nothing was deleted, and a retry will.
        _ => Err(StoreError::Busy(format!(
            "run {run_id}: its lease lapsed while it was being deleted; nothing was deleted, retry"
        ))),
    }
}

/// The run's latest record.
pub(super) async fn load_run(client: &impl GenericClient, pg: &Pg, run_id: Uuid) -> Result<RunRecord, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = client.prepare_cached(SELECT_RUN).await.map_err(fail)?;
    let row = client.query_opt(&stmt, &[&run_id]).await.map_err(fail)?.ok_or(StoreError::NotFound(run_id))?;
    decode_run(&row, run_id)
}

/// One listed row, decoded; a row that cannot be read is reported as damaged, for its run
/// alone.
fn decode_summary(row: &Row) -> Result<RunSummary, DamagedRun> {
    // The id is a `uuid` column, so it always reads unless the column itself was altered.
    let run_id: Uuid = col(row, 0, Uuid::nil(), "run id").map_err(|error| DamagedRun { run_id: Uuid::nil(), error })?;
    let summary = (|| {
        let status: String = col(row, 2, run_id, "status")?;
        Ok(RunSummary {
            run_id,
            flow: col(row, 1, run_id, "flow")?,
            status: decode_run_status(run_id, "status", &status)?,
            pause: decode_opt_json(run_id, "pause", col(row, 3, run_id, "pause")?)?,
            placement: Placement { queue: col(row, 6, run_id, "queue")?, key: col(row, 7, run_id, "concurrency key")? },
            available_at_ms: col(row, 8, run_id, "due time")?,
            created_at_ms: col(row, 4, run_id, "creation time")?,
            updated_at_ms: col(row, 5, run_id, "update time")?,
        })
    })();
    summary.map_err(|error| DamagedRun { run_id, error })
}

/// Runs matching the filter, newest first, and the ones whose rows cannot be read.
pub(super) async fn list_runs(
    client: &impl GenericClient,
    pg: &Pg,
    filter: &RunFilter,
) -> Result<Listing<RunSummary>, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, None);
    // `LIMIT NULL` is no limit.
    let limit: Option<i64> = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    let status = filter.status.map(RunStatus::as_str);
    let after_at = filter.after.map(|c| c.created_at_ms);
    let after_id = filter.after.map(|c| c.run_id);
    // Only the conditions the filter sets are written (an `$2 IS NULL OR` form could not use an
    // index), so each filter shape is one cached statement; the page cursor is a row-value
    // comparison, which walks the `(…, created_at DESC, run_id DESC)` indexes from where the
    // last page ended.
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&limit];
    let mut conditions: Vec<String> = Vec::new();
    if let Some(flow) = &filter.flow {
        params.push(flow);
        conditions.push(format!("flow = ${}", params.len()));
    }
    if let Some(status) = &status {
        params.push(status);
        conditions.push(format!("status = ${}", params.len()));
    }
    if let Some(from) = &filter.created_from_ms {
        params.push(from);
        conditions.push(format!("created_at >= ${}", params.len()));
    }
    if let Some(before) = &filter.created_before_ms {
        params.push(before);
        conditions.push(format!("created_at < ${}", params.len()));
    }
    if let (Some(at), Some(id)) = (&after_at, &after_id) {
        params.push(at);
        params.push(id);
        conditions.push(format!("(created_at, run_id) < (${}, ${})", params.len() - 1, params.len()));
    }
    let filter_sql = if conditions.is_empty() { String::new() } else { format!("WHERE {} ", conditions.join(" AND ")) };
    let sql = summary_query!().replacen("FROM flow_runs ORDER BY", &format!("FROM flow_runs {filter_sql}ORDER BY"), 1);
    let stmt = client.prepare_cached(&sql).await.map_err(fail)?;
    let rows = client.query(&stmt, &params).await.map_err(fail)?;
    let mut listing = Listing::default();
    for row in &rows {
        match decode_summary(row) {
            Ok(summary) => listing.items.push(summary),
            Err(damaged) => listing.damaged.push(damaged),
        }
    }
    Ok(listing)
}

/// One run's summary, without reading its snapshot.
pub(super) async fn run_summary(client: &impl GenericClient, pg: &Pg, run_id: Uuid) -> Result<RunSummary, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = client.prepare_cached(SUMMARY_OF_RUN).await.map_err(fail)?;
    let row = client.query_opt(&stmt, &[&run_id]).await.map_err(fail)?.ok_or(StoreError::NotFound(run_id))?;
    decode_summary(&row).map_err(|d| d.error)
}

/// The run's steps in creation order.
pub(super) async fn steps(client: &impl GenericClient, pg: &Pg, run_id: Uuid) -> Result<Vec<StepRecord>, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = client.prepare_cached(SELECT_STEPS).await.map_err(fail)?;
    let rows = client.query(&stmt, &[&run_id]).await.map_err(fail)?;
    if rows.is_empty() {
        require_run(client, pg, run_id).await?;
    }
    rows.iter()
        .map(|row| {
            let step_key: String = col(row, 0, run_id, "step key")?;
            let what = |column: &str| format!("step `{step_key}` {column}");
            let status: String = col(row, 2, run_id, &what("status"))?;
            Ok(StepRecord {
                method: col(row, 1, run_id, &what("method"))?,
                status: StepStatus::parse(&status)
                    .ok_or_else(|| corrupt(run_id, what("status"), format!("unknown step status `{status}`")))?,
                input: decode_opt_json(run_id, &what("input"), col(row, 3, run_id, &what("input"))?)?,
                output: decode_opt_json(run_id, &what("output"), col(row, 4, run_id, &what("output"))?)?,
                error: col(row, 5, run_id, &what("error"))?,
                attempt: decode_u32(run_id, &what("attempt"), col(row, 6, run_id, &what("attempt"))?)?,
                started_at_ms: col(row, 7, run_id, &what("started_at"))?,
                finished_at_ms: col(row, 8, run_id, &what("finished_at"))?,
                usage: decode_opt_json(run_id, &what("token usage"), col(row, 9, run_id, &what("token usage"))?)?
                    .map(|v| {
                        serde_json::from_value::<TokenUsage>(v)
                            .map_err(|e| corrupt(run_id, what("token usage"), e.to_string()))
                    })
                    .transpose()?,
                step_key: step_key.clone(),
            })
        })
        .collect()
}

/// The graph the run was created with, if it was stored with one.
pub(super) async fn run_graph(
    client: &impl GenericClient,
    pg: &Pg,
    run_id: Uuid,
) -> Result<Option<GraphDoc>, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = client.prepare_cached(SELECT_RUN_GRAPH).await.map_err(fail)?;
    let row = client.query_opt(&stmt, &[&run_id]).await.map_err(fail)?.ok_or(StoreError::NotFound(run_id))?;
    let digest: Option<String> = col(&row, 0, run_id, "graph digest")?;
    let json: Option<String> = col(&row, 1, run_id, "graph")?;
    match (digest, json) {
        (None, _) => Ok(None),
        (Some(digest), None) => {
            Err(corrupt(run_id, "graph", format!("the run refers to graph {digest}, which the store does not hold")))
        }
        (Some(_), Some(json)) => serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| corrupt(run_id, "graph", format!("the stored graph does not read as a GraphDoc: {e}"))),
    }
}

/// The run's checkpoint history, oldest first.
pub(super) async fn checkpoints(
    client: &impl GenericClient,
    pg: &Pg,
    run_id: Uuid,
) -> Result<Vec<CheckpointInfo>, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = client.prepare_cached(SELECT_CHECKPOINTS).await.map_err(fail)?;
    let rows = client.query(&stmt, &[&run_id]).await.map_err(fail)?;
    if rows.is_empty() {
        require_run(client, pg, run_id).await?;
    }
    rows.iter()
        .map(|row| {
            let seq: i64 = col(row, 0, run_id, "checkpoint seq")?;
            let status: String = col(row, 2, run_id, &format!("checkpoint {seq} status"))?;
            Ok(CheckpointInfo {
                seq: decode_u64(run_id, "checkpoint seq", seq)?,
                step_key: col(row, 1, run_id, &format!("checkpoint {seq} step key"))?,
                status: decode_run_status(run_id, &format!("checkpoint {seq} status"), &status)?,
                created_at_ms: col(row, 3, run_id, &format!("checkpoint {seq} time"))?,
            })
        })
        .collect()
}

/// The snapshot saved by checkpoint `seq`.
pub(super) async fn load_checkpoint(
    client: &impl GenericClient,
    pg: &Pg,
    run_id: Uuid,
    seq: u64,
) -> Result<Snapshot, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let row = match i64::try_from(seq) {
        Ok(seq_param) => {
            let stmt = client.prepare_cached(SELECT_CHECKPOINT).await.map_err(fail)?;
            client.query_opt(&stmt, &[&run_id, &seq_param]).await.map_err(fail)?
        }
        Err(_) => None,
    };
    let Some(row) = row else {
        require_run(client, pg, run_id).await?;
        return Err(StoreError::CheckpointNotFound { run_id, seq });
    };
    Ok(Snapshot {
        state: decode_raw(run_id, &format!("checkpoint {seq} state"), col(&row, 0, run_id, "checkpoint state")?)?,
        progress: decode_raw(
            run_id,
            &format!("checkpoint {seq} progress"),
            col(&row, 1, run_id, "checkpoint progress")?,
        )?,
    })
}
