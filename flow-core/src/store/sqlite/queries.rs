//! The SQL of every store operation, on one connection, with row decoding.
//!
//! Write operations run inside the writer's transaction (and a savepoint of their own); they
//! never begin or end transactions themselves. Every statement is prepared through the
//! connection's statement cache.

use crate::store::decode::{
    decode_json, decode_opt_json, decode_raw, decode_run_status, decode_u32, decode_u64, decode_uuid,
};
use std::path::Path;
use std::time::Duration;

use rusqlite::{CachedStatement, Connection, OptionalExtension, params};
use serde_json::Value;
use uuid::Uuid;

use super::error::{column, corrupt, map};
use crate::graph::GraphDoc;
use crate::store::admission::{self, Admission};
use crate::store::decode::{decode_answer, decode_graph, decode_usage, edit_note, encode_usage};
use crate::store::{
    CheckpointInfo, Claim, ClaimRequest, Commit, DamagedRun, JournalEntry, Listing, NewRun, Placement, RunFilter,
    RunRecord, RunStatus, RunSummary, Snapshot, Start, StateEdit, StepRecord, StepStatus, StoreError,
};

/// A connection and the file it is on, for error messages.
#[derive(Clone, Copy)]
pub(super) struct Db<'a> {
    pub(super) conn: &'a Connection,
    pub(super) path: &'a Path,
}

impl<'a> Db<'a> {
    fn prepare(&self, sql: &str) -> Result<CachedStatement<'a>, StoreError> {
        self.conn.prepare_cached(sql).map_err(|e| map(&e, self.path))
    }

    fn fail(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |e| map(&e, self.path)
    }
}

macro_rules! run_columns {
    () => {
        "run_id, flow, parent_run_id, status, output, error, pause, lease_owner, lease_expires_at, epoch, \
         created_at, updated_at, run_no, queue, concurrency_key, available_at, answer, cancel_requested"
    };
}

/// `BETWEEN` the first and last checkpoint key of the run numbered by the SQL expression
/// `$run_no`: the same range as `History::keys`, for queries that read the number themselves.
macro_rules! checkpoint_keys_of {
    ($run_no:literal) => {
        concat!("BETWEEN ", $run_no, " << 32 AND (", $run_no, " << 32) + 4294967295")
    };
}

const SELECT_RUN: &str = concat!("SELECT ", run_columns!(), " FROM flow_runs WHERE run_id = ?1");

const RUN_EXISTS: &str = "SELECT epoch FROM flow_runs WHERE run_id = ?1";

// With the run's newest checkpoint key, so a commit reads everything it checks in one
// statement (the subquery is a single seek to the end of the run's key range).
const RUN_FENCE: &str = concat!(
    "SELECT r.epoch, r.status, r.run_no, r.answer IS NOT NULL, (SELECT MAX(c.ck) FROM flow_checkpoints c WHERE c.ck ",
    checkpoint_keys_of!("r.run_no"),
    ") FROM flow_runs r WHERE r.run_id = ?1"
);

const RUN_NO: &str = "SELECT run_no FROM flow_runs WHERE run_id = ?1";

// The run's current snapshot is its newest checkpoint; `seq` is the run's version. ?1 and ?2
// bound the run's keys (`History::keys`).
const SELECT_LATEST: &str = "SELECT seq, state, progress, created_at FROM flow_checkpoints \
     WHERE ck BETWEEN ?1 AND ?2 ORDER BY ck DESC LIMIT 1";

// Runs are numbered in creation order; the number keys the run's checkpoints. The `MAX` is one
// seek at the end of `flow_runs_by_no`.
const INSERT_RUN: &str = "INSERT INTO flow_runs (run_id, flow, parent_run_id, status, lease_owner, \
     lease_expires_at, epoch, created_at, updated_at, run_no, queue, concurrency_key, available_at, graph_digest) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?8, ?7, ?7, (SELECT COALESCE(MAX(run_no), 0) + 1 FROM flow_runs), ?9, ?10, ?11, \
     ?12) ON CONFLICT (run_id) DO NOTHING RETURNING run_no";

const INSERT_GRAPH: &str = "INSERT INTO flow_graphs (flow, digest, graph, created_at) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (flow, digest) DO NOTHING";

// The run's digest beside its graph: a run with a digest and no graph row is damaged, one with
// neither was created before graphs were stored.
const SELECT_RUN_GRAPH: &str = "SELECT r.graph_digest, g.graph FROM flow_runs r \
     LEFT JOIN flow_graphs g ON g.flow = r.flow AND g.digest = r.graph_digest WHERE r.run_id = ?1";

const SELECT_LEASE: &str = "SELECT lease_owner, lease_expires_at FROM flow_runs WHERE run_id = ?1";

const TAKE_LEASE: &str = concat!(
    "UPDATE flow_runs SET epoch = epoch + 1, lease_owner = ?2, lease_expires_at = ?3 WHERE run_id = ?1 RETURNING ",
    run_columns!()
);

// Only a lease still held: a renewal that reaches the store after the run came to rest under
// the same epoch (the heartbeat's write queued behind the final commit) must not give the
// released run an expiry again.
// Returns the pending cancel request, if any, so the holder learns of it.
const RENEW_LEASE: &str = "UPDATE flow_runs SET lease_expires_at = ?3 WHERE run_id = ?1 AND epoch = ?2 \
     AND lease_owner IS NOT NULL RETURNING CASE WHEN status NOT IN ('completed', 'cancelled', 'compensated') THEN cancel_requested END";

const RELEASE_LEASE: &str = "UPDATE flow_runs SET lease_owner = NULL, lease_expires_at = NULL \
     WHERE run_id = ?1 AND epoch = ?2 RETURNING status";

// Written only when the status changes or an answer is to be cleared, not on every
// checkpoint. ?6 says whether the run stays running: any other status releases the lease. A run
// with a cancel pending that would come to rest waiting (paused, failed, escalated, parked) is
// queued due now instead (`requeued_for_cancel`), for a worker to cancel it.
const UPDATE_RUN: &str = "UPDATE flow_runs SET \
     status = CASE WHEN cancel_requested IS NOT NULL AND ?2 IN ('paused', 'failed', 'escalated', 'queued') \
         THEN 'queued' ELSE ?2 END, \
     output = ?3, error = ?4, pause = ?5, \
     lease_owner = CASE WHEN ?6 THEN lease_owner END, \
     lease_expires_at = CASE WHEN ?6 THEN lease_expires_at END, \
     updated_at = ?7, \
     available_at = CASE WHEN cancel_requested IS NOT NULL AND ?2 IN ('paused', 'failed', 'escalated', 'queued') \
         THEN ?7 ELSE ?9 END, \
     answer = NULL \
     WHERE run_id = ?1 AND epoch = ?8";

// A run at rest goes back to its queue, due now; a running one is only marked. The first
// reason stays.
const REQUEST_CANCEL: &str = "UPDATE flow_runs SET cancel_requested = COALESCE(cancel_requested, ?2), \
     status = CASE WHEN status = 'running' THEN status ELSE 'queued' END, \
     available_at = CASE WHEN status = 'running' THEN available_at ELSE ?3 END, updated_at = ?3 \
     WHERE run_id = ?1 AND status NOT IN ('completed', 'cancelled', 'compensated') RETURNING status";

// Live leases per queue and key, over every run of the queues in the JSON array ?1.
const LIVE_LEASES: &str = "SELECT queue, concurrency_key, count(*) FROM flow_runs \
     WHERE lease_owner IS NOT NULL AND lease_expires_at > ?2 AND queue IN (SELECT value FROM json_each(?1)) \
     GROUP BY queue, concurrency_key";

// Runnable runs of the flows ?2 in the queues ?1 (JSON arrays), the longest due first, leaving
// out the (queue, key) pairs at their limit (?4, an array of pairs). ?3 is now.
const CLAIM_CANDIDATES: &str = "SELECT run_id, queue, concurrency_key FROM flow_runs \
     WHERE status IN ('queued', 'running') AND queue IN (SELECT value FROM json_each(?1)) \
     AND flow IN (SELECT value FROM json_each(?2)) \
     AND (lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at <= ?3) \
     AND (status = 'running' OR available_at IS NULL OR available_at <= ?3) \
     AND NOT EXISTS (SELECT 1 FROM json_each(?4) f \
         WHERE f.value ->> 0 = queue AND f.value ->> 1 = concurrency_key) \
     ORDER BY COALESCE(available_at, updated_at), created_at, run_id LIMIT ?5";

const WAITING_STATE: &str = "SELECT status, pause, answer IS NOT NULL FROM flow_runs WHERE run_id = ?1";

const SET_ANSWER: &str = "UPDATE flow_runs SET answer = ?2, status = 'queued', available_at = ?3, updated_at = ?3 \
     WHERE run_id = ?1";

const REQUEUE: &str = "UPDATE flow_runs SET status = 'queued', available_at = ?2, updated_at = ?2 \
     WHERE run_id = ?1 AND status = 'failed'";

// Positions come from the checkpoint's sequence number.
const UPSERT_STEP: &str = "INSERT INTO flow_steps (run_id, step_key, ord, method, status, input, output, error, \
     attempt, created_at, updated_at, started_at, finished_at, token_usage) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13) \
     ON CONFLICT (run_id, step_key) DO UPDATE SET method = excluded.method, status = excluded.status, \
     input = excluded.input, output = excluded.output, error = excluded.error, attempt = excluded.attempt, \
     updated_at = excluded.updated_at, started_at = excluded.started_at, finished_at = excluded.finished_at, \
     token_usage = excluded.token_usage";

const APPEND_CHECKPOINT: &str = "INSERT INTO flow_checkpoints (ck, run_id, seq, step_key, status, state, progress, \
     created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

const PRUNE_CHECKPOINTS: &str = "DELETE FROM flow_checkpoints WHERE ck BETWEEN ?1 AND ?2";

const SELECT_STEPS: &str = "SELECT step_key, method, status, input, output, error, attempt, started_at, \
     finished_at, token_usage FROM flow_steps WHERE run_id = ?1 ORDER BY ord";

const SELECT_CHECKPOINTS: &str = "SELECT seq, step_key, status, created_at, edited_by, edit_reason \
     FROM flow_checkpoints WHERE ck BETWEEN ?1 AND ?2 ORDER BY ck";

const APPEND_EDIT: &str = "INSERT INTO flow_checkpoints (ck, run_id, seq, step_key, status, state, progress, \
     created_at, edited_by, edit_reason) VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6, ?7, ?8, ?9)";

const TOUCH_RUN: &str = "UPDATE flow_runs SET updated_at = ?2 WHERE run_id = ?1";

const SELECT_CHECKPOINT: &str = "SELECT state, progress FROM flow_checkpoints WHERE ck = ?1";

const INSERT_JOURNAL: &str = "INSERT INTO step_journal (run_id, step_key, seq, kind, name, request_hash, output, \
     created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
     ON CONFLICT (run_id, step_key, seq) DO NOTHING";

const SELECT_JOURNAL: &str = "SELECT kind, name, request_hash, output FROM step_journal \
     WHERE run_id = ?1 AND step_key = ?2 AND seq = ?3";

const SELECT_RUN_JOURNAL: &str = "SELECT step_key, seq, kind, name, request_hash, output FROM step_journal \
     WHERE run_id = ?1 ORDER BY step_key, seq";

const DELETE_RUN: &str = "DELETE FROM flow_runs WHERE run_id = ?1";

// The tables that refer to a run by its id (steps, journal, and any added later), but its
// checkpoints, which are deleted by their key range.
const CHILD_TABLES: &str = "SELECT m.name, f.\"from\", f.on_delete FROM sqlite_schema m \
     JOIN pragma_foreign_key_list(m.name) f WHERE m.type = 'table' AND f.\"table\" = 'flow_runs' \
     AND m.name <> 'flow_checkpoints' ORDER BY m.name";

// A running run's row changes only with its status and lease; its last change is its newest
// checkpoint.
macro_rules! summary_query {
    ($($where:literal)?) => {
        concat!(
            "SELECT run_id, flow, status, pause, created_at, queue, concurrency_key, available_at, MAX(updated_at, COALESCE((SELECT c.created_at \
             FROM flow_checkpoints c WHERE c.ck ",
            checkpoint_keys_of!("flow_runs.run_no"),
            " ORDER BY c.ck DESC LIMIT 1), 0)) FROM flow_runs ",
            $($where, " ",)?
            "ORDER BY created_at DESC, run_id DESC LIMIT ?1"
        )
    };
}

const SUMMARY_OF_RUN: &str = summary_query!("WHERE run_id = ?2");

/// Lease lengths in milliseconds; a lease too long for i64 is as good as forever.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

// Request hashes use all 64 bits; SQLite integers are signed, so the bits are stored as they are.
fn hash_to_sql(h: u64) -> i64 {
    i64::from_ne_bytes(h.to_ne_bytes())
}

fn hash_from_sql(h: i64) -> u64 {
    u64::from_ne_bytes(h.to_ne_bytes())
}

fn opt_json(v: Option<&Value>) -> Option<String> {
    // `Some(Value::Null)` is stored as the text `null`, distinct from SQL NULL for `None`.
    v.map(Value::to_string)
}

/// A `flow_runs` row as stored, before decoding.
struct RunRow {
    run_id: String,
    flow: String,
    parent_run_id: Option<String>,
    status: String,
    output: Option<String>,
    error: Option<String>,
    pause: Option<String>,
    lease_owner: Option<String>,
    lease_expires_at: Option<i64>,
    epoch: i64,
    created_at: i64,
    updated_at: i64,
    run_no: i64,
    queue: String,
    concurrency_key: Option<String>,
    available_at: Option<i64>,
    answer: Option<String>,
    cancel_requested: Option<String>,
}

impl RunRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(RunRow {
            run_id: row.get(0)?,
            flow: row.get(1)?,
            parent_run_id: row.get(2)?,
            status: row.get(3)?,
            output: row.get(4)?,
            error: row.get(5)?,
            pause: row.get(6)?,
            lease_owner: row.get(7)?,
            lease_expires_at: row.get(8)?,
            epoch: row.get(9)?,
            created_at: row.get(10)?,
            updated_at: row.get(11)?,
            run_no: row.get(12)?,
            queue: row.get(13)?,
            concurrency_key: row.get(14)?,
            available_at: row.get(15)?,
            answer: row.get(16)?,
            cancel_requested: row.get(17)?,
        })
    }

    /// Decodes the row with its newest checkpoint, which holds the run's snapshot.
    fn decode(self, run_id: Uuid, latest: Latest) -> Result<RunRecord, StoreError> {
        let stored_id = decode_uuid(run_id, "run id", &self.run_id)?;
        let parent_run_id =
            self.parent_run_id.as_deref().map(|p| decode_uuid(run_id, "parent run id", p)).transpose()?;
        Ok(RunRecord {
            run_id: stored_id,
            flow: self.flow,
            parent_run_id,
            status: decode_run_status(run_id, "status", &self.status)?,
            snapshot: Snapshot {
                state: decode_raw(run_id, "state", latest.state)?,
                progress: decode_raw(run_id, "progress", latest.progress)?,
            },
            version: decode_u64(run_id, "checkpoint seq", latest.seq)?,
            output: decode_opt_json(run_id, "output", self.output)?,
            error: self.error,
            pause: decode_opt_json(run_id, "pause", self.pause)?,
            lease_owner: self.lease_owner,
            lease_expires_at_ms: self.lease_expires_at,
            epoch: decode_u64(run_id, "epoch", self.epoch)?,
            placement: Placement { queue: self.queue, key: self.concurrency_key },
            available_at_ms: self.available_at,
            answer: decode_answer(run_id, self.answer)?,
            cancel_requested: self.cancel_requested,
            created_at_ms: self.created_at,
            updated_at_ms: self.updated_at.max(latest.created_at),
        })
    }
}

/// A run's newest checkpoint row, before decoding.
struct Latest {
    seq: i64,
    state: String,
    progress: String,
    created_at: i64,
}

/// The most runs a store numbers, and the most checkpoints a run has: a checkpoint's key is
/// `run_no * 2^32 + seq` in SQLite's signed 64-bit integer.
const MAX_RUN_NO: i64 = (1 << 31) - 1;
const MAX_SEQ: i64 = (1 << 32) - 1;

/// Where a run's checkpoints are: one key range of `flow_checkpoints`.
#[derive(Clone, Copy)]
struct History {
    run_id: Uuid,
    base: i64,
}

impl History {
    fn of(run_id: Uuid, run_no: i64) -> Result<Self, StoreError> {
        if !(1..=MAX_RUN_NO).contains(&run_no) {
            return Err(corrupt(run_id, "run number", format!("{run_no} is not between 1 and {MAX_RUN_NO}")));
        }
        Ok(History { run_id, base: run_no << 32 })
    }

    /// Reads the run's number; the run must exist.
    fn read(db: Db<'_>, run_id: Uuid) -> Result<Self, StoreError> {
        let run_no: Option<i64> = db
            .prepare(RUN_NO)?
            .query_row([run_id.to_string()], |r| r.get(0))
            .optional()
            .map_err(|e| column(e, run_id, "run number", db.path))?;
        History::of(run_id, run_no.ok_or(StoreError::NotFound(run_id))?)
    }

    /// The first and last key the run's checkpoints may have.
    fn keys(self) -> [i64; 2] {
        [self.base, self.base + MAX_SEQ]
    }

    fn key(self, seq: i64) -> i64 {
        self.base + seq
    }

    fn seq(self, key: i64) -> i64 {
        key - self.base
    }
}

/// Reads the run's newest checkpoint; every stored run has one, written with the run.
fn latest_checkpoint(db: Db<'_>, history: History) -> Result<Latest, StoreError> {
    let run_id = history.run_id;
    db.prepare(SELECT_LATEST)?
        .query_row(history.keys(), |r| {
            Ok(Latest { seq: r.get(0)?, state: r.get(1)?, progress: r.get(2)?, created_at: r.get(3)? })
        })
        .optional()
        .map_err(|e| column(e, run_id, "checkpoint row", db.path))?
        .ok_or_else(|| corrupt(run_id, "checkpoint history", "the run has no checkpoint to continue from"))
}

/// Why a fenced write matched no row: the run is missing, or its epoch moved on.
fn fenced_or_missing(db: Db<'_>, run_id: Uuid, epoch: u64) -> StoreError {
    let current = db
        .prepare(RUN_EXISTS)
        .and_then(|mut s| s.query_row([run_id.to_string()], |r| r.get::<_, i64>(0)).optional().map_err(db.fail()));
    match current {
        Ok(None) => StoreError::NotFound(run_id),
        Ok(Some(current)) => fenced(run_id, epoch, current),
        Err(e) => e,
    }
}

/// A write under `epoch` met the stored epoch `current`, which has moved on.
fn fenced(run_id: Uuid, epoch: u64, current: i64) -> StoreError {
    match u64::try_from(current) {
        Ok(current) => StoreError::Fenced { run_id, epoch, current },
        Err(_) => corrupt(run_id, "epoch", format!("negative value {current}")),
    }
}

/// An epoch no stored epoch can equal when the caller's does not fit SQLite's integers; the
/// write is then fenced, which is the truth (no such epoch was ever issued).
fn epoch_param(epoch: u64) -> i64 {
    i64::try_from(epoch).unwrap_or(-1)
}

/// Room for this many new steps per commit in a step's `ord` (version * 2^20 + position).
const STEPS_PER_COMMIT: usize = 1 << 20;

/// Inserts new steps, positioned after every step of earlier versions, and updates known ones
/// (which keep their position).
fn upsert_steps(db: Db<'_>, run_id: &str, version: i64, steps: &[StepRecord], now: i64) -> Result<(), StoreError> {
    if steps.is_empty() {
        return Ok(());
    }
    if steps.len() > STEPS_PER_COMMIT {
        return Err(StoreError::Backend(format!(
            "run {run_id}: one commit carries {} steps, more than the {STEPS_PER_COMMIT} a commit may schedule",
            steps.len()
        )));
    }
    let base = version.saturating_mul(STEPS_PER_COMMIT as i64);
    let mut stmt = db.prepare(UPSERT_STEP)?;
    for (position, step) in steps.iter().enumerate() {
        stmt.execute(params![
            run_id,
            step.step_key,
            base + position as i64,
            step.method,
            step.status.as_str(),
            opt_json(step.input.as_ref()),
            opt_json(step.output.as_ref()),
            step.error,
            i64::from(step.attempt),
            now,
            step.started_at_ms,
            step.finished_at_ms,
            encode_usage(step.usage),
        ])
        .map_err(db.fail())?;
    }
    Ok(())
}

struct CheckpointRow<'a> {
    run_id: &'a str,
    step_key: Option<&'a str>,
    status: RunStatus,
    state: &'a str,
    progress: &'a str,
    now: i64,
}

/// Appends the run's next checkpoint after the one keyed `last` (none for a new run); returns
/// its number, the run's new version.
fn append_checkpoint(
    db: Db<'_>,
    history: History,
    last: Option<i64>,
    row: CheckpointRow<'_>,
) -> Result<i64, StoreError> {
    let seq = last.map_or(1, |key| history.seq(key) + 1);
    if seq > MAX_SEQ {
        return Err(StoreError::Backend(format!(
            "run {}: it has {MAX_SEQ} checkpoints, the most one run can have; fork it to go on",
            history.run_id
        )));
    }
    db.prepare(APPEND_CHECKPOINT)?
        .execute(params![
            history.key(seq),
            row.run_id,
            seq,
            row.step_key,
            row.status.as_str(),
            row.state,
            row.progress,
            row.now
        ])
        .map_err(db.fail())?;
    Ok(seq)
}

/// Inserts a run, its first checkpoint and its start steps, and its graph unless
/// `graph_stored` says this store wrote it already. Returns its lease epoch: 1 under the
/// creator's lease, 0 when queued.
pub(super) fn create_run(db: Db<'_>, run: &NewRun, graph_stored: bool, now: i64) -> Result<u64, StoreError> {
    let id = run.run_id.to_string();
    let state = run.snapshot.state.get();
    let progress = run.snapshot.progress.get();
    let (status, owner, expires, epoch, available_at) = match &run.start {
        Start::Leased { owner, lease } => {
            (RunStatus::Running, Some(owner.as_str()), Some(now.saturating_add(millis(*lease))), 1_i64, None)
        }
        Start::Queued { available_at_ms } => (RunStatus::Queued, None, None, 0, *available_at_ms),
    };
    let run_no: Option<i64> = db
        .prepare(INSERT_RUN)?
        .query_row(
            params![
                id,
                run.flow,
                run.parent_run_id.map(|p| p.to_string()),
                status.as_str(),
                owner,
                expires,
                now,
                epoch,
                run.placement.queue,
                run.placement.key,
                available_at,
                run.graph.as_ref().map(|g| g.digest.as_str()),
            ],
            |r| r.get(0),
        )
        .optional()
        .map_err(db.fail())?;
    let Some(run_no) = run_no else {
        return Err(StoreError::Duplicate(run.run_id));
    };
    if run_no > MAX_RUN_NO {
        return Err(StoreError::Backend(format!(
            "{}: the store has numbered {MAX_RUN_NO} runs, the most it can; start a new store file",
            db.path.display()
        )));
    }
    if let Some(graph) = run.graph.as_ref().filter(|_| !graph_stored) {
        db.prepare(INSERT_GRAPH)?.execute(params![run.flow, graph.digest, graph.json, now]).map_err(db.fail())?;
    }
    let history = History::of(run.run_id, run_no)?;
    let row = CheckpointRow { run_id: &id, step_key: None, status, state, progress, now };
    let seq = append_checkpoint(db, history, None, row)?;
    upsert_steps(db, &id, seq, &run.steps, now)?;
    decode_u64(run.run_id, "epoch", epoch)
}

/// Takes the lease unless another owner holds a live one; bumps the epoch.
pub(super) fn claim(db: Db<'_>, run_id: Uuid, owner: &str, lease: Duration, now: i64) -> Result<Claim, StoreError> {
    let id = run_id.to_string();
    let holder: Option<(Option<String>, Option<i64>)> = db
        .prepare(SELECT_LEASE)?
        .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(|e| column(e, run_id, "lease", db.path))?;
    let Some((holder, expires)) = holder else {
        return Err(StoreError::NotFound(run_id));
    };
    // Any live lease refuses, even one held under the same worker name: two executions of one
    // run inside one process must exclude each other as well.
    if let (Some(holder), Some(expires)) = (holder, expires)
        && expires > now
    {
        return Err(StoreError::Locked { run_id, owner: holder, expires_at_ms: expires });
    }
    let row = db
        .prepare(TAKE_LEASE)?
        .query_row(params![id, owner, now.saturating_add(millis(lease))], RunRow::read)
        .map_err(|e| column(e, run_id, "row", db.path))?;
    let latest = latest_checkpoint(db, History::of(run_id, row.run_no)?)?;
    // A row that does not decode fails the claim here, and the writer rolls back the epoch bump.
    let run = row.decode(run_id, latest)?;
    Ok(Claim { epoch: run.epoch, run })
}

/// Extends the lease held under `epoch`; returns the reason of a pending cancel request, which
/// the caller reports only after the extension is committed.
pub(super) fn renew(
    db: Db<'_>,
    run_id: Uuid,
    epoch: u64,
    lease: Duration,
    now: i64,
) -> Result<Option<String>, StoreError> {
    let renewed: Option<Option<String>> = db
        .prepare(RENEW_LEASE)?
        .query_row(params![run_id.to_string(), epoch_param(epoch), now.saturating_add(millis(lease))], |r| r.get(0))
        .optional()
        .map_err(db.fail())?;
    match renewed {
        None => Err(match fenced_or_missing(db, run_id, epoch) {
            // The epoch still matches, so the lease is what is missing.
            StoreError::Fenced { current, .. } if current == epoch => StoreError::Released { run_id, epoch },
            e => e,
        }),
        Some(cancel) => Ok(cancel),
    }
}

/// Records a cancel request; queues a run at rest, due now. Returns whether it was queued (for
/// waking the workers).
pub(super) fn request_cancel(db: Db<'_>, run_id: Uuid, reason: &str, now: i64) -> Result<bool, StoreError> {
    let status: Option<String> = db
        .prepare(REQUEST_CANCEL)?
        .query_row(params![run_id.to_string(), reason, now], |r| r.get(0))
        .optional()
        .map_err(db.fail())?;
    match status {
        Some(status) => Ok(status == RunStatus::Queued.as_str()),
        None => {
            let (status, _, _) = waiting_state(db, run_id)?;
            Err(StoreError::Ended { run_id, status })
        }
    }
}

/// Gives up the lease held under `epoch`, leaving the run as it is. Returns whether the run is
/// now runnable (queued or running), for waking the workers.
pub(super) fn release(db: Db<'_>, run_id: Uuid, epoch: u64) -> Result<bool, StoreError> {
    let status: Option<String> = db
        .prepare(RELEASE_LEASE)?
        .query_row(params![run_id.to_string(), epoch_param(epoch)], |r| r.get(0))
        .optional()
        .map_err(|e| column(e, run_id, "status", db.path))?;
    match status {
        None => Err(fenced_or_missing(db, run_id, epoch)),
        Some(status) => Ok(matches!(RunStatus::parse(&status), Some(RunStatus::Queued | RunStatus::Running))),
    }
}

/// Claims up to `request.max` runnable runs, as `claim` does, within the queues' limits. The
/// single writer serializes every claimer (in this process and, through the write lock, in
/// others), so counting the live leases first and claiming after cannot exceed a limit.
pub(super) fn claim_next(db: Db<'_>, request: &ClaimRequest, now: i64) -> Result<Vec<Claim>, StoreError> {
    let mut claims = Vec::new();
    if request.max == 0 || request.flows.is_empty() || request.queues.is_empty() {
        return Ok(claims);
    }
    let queues: Vec<&str> = request.queues.iter().map(|q| q.queue.as_str()).collect();
    let queues_json = serde_json::to_string(&queues).map_err(|e| StoreError::Backend(e.to_string()))?;
    let flows_json = serde_json::to_string(&request.flows).map_err(|e| StoreError::Backend(e.to_string()))?;
    let held = collect(db, LIVE_LEASES, params![queues_json, now], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, i64>(2)?))
    })
    .map_err(db.fail())?;
    let mut admission =
        Admission::new(request, held.into_iter().map(|(q, k, n)| (q, k, u32::try_from(n).unwrap_or(u32::MAX))));
    for _ in 0..admission::MAX_PAGES {
        let open = admission.open_queues();
        let wanted = request.max - claims.len();
        if open.is_empty() || wanted == 0 {
            break;
        }
        let (full_queues, full_keys) = admission.full_keys();
        let full: Vec<[&String; 2]> = full_queues.iter().zip(&full_keys).map(|(q, k)| [q, k]).collect();
        let open_json = serde_json::to_string(&open).map_err(|e| StoreError::Backend(e.to_string()))?;
        let full_json = serde_json::to_string(&full).map_err(|e| StoreError::Backend(e.to_string()))?;
        let page = i64::try_from(wanted).unwrap_or(i64::MAX);
        let candidates = collect(db, CLAIM_CANDIDATES, params![open_json, flows_json, now, full_json, page], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?))
        })
        .map_err(db.fail())?;
        if candidates.is_empty() {
            break;
        }
        for (id, queue, key) in candidates {
            if claims.len() >= request.max {
                break;
            }
            if !admission.admit(&queue, key.as_deref()) {
                continue;
            }
            let run_id = match Uuid::parse_str(&id) {
                Ok(run_id) => run_id,
                Err(e) => {
                    // A damaged id cannot be claimed or even named; it must not stop the queue.
                    tracing::warn!(stored_id = %id, error = %e, "skipped a queued run whose id is not a UUID");
                    continue;
                }
            };
            match take_lease(db, run_id, &request.owner, request.lease, now) {
                Ok(claim) => claims.push(claim),
                Err(e @ StoreError::Corrupt { .. }) => {
                    // Its lease is taken (so the queue moves on past it) and the damage is logged
                    // for repair; the other claims stand.
                    tracing::error!(run_id = %run_id, error = %e, "claimed a run whose row cannot be read");
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(claims)
}

/// Takes the lease on a run known to be free; bumps the epoch.
fn take_lease(db: Db<'_>, run_id: Uuid, owner: &str, lease: Duration, now: i64) -> Result<Claim, StoreError> {
    let row = db
        .prepare(TAKE_LEASE)?
        .query_row(params![run_id.to_string(), owner, now.saturating_add(millis(lease))], RunRow::read)
        .map_err(|e| column(e, run_id, "row", db.path))?;
    let latest = latest_checkpoint(db, History::of(run_id, row.run_no)?)?;
    let run = row.decode(run_id, latest)?;
    Ok(Claim { epoch: run.epoch, run })
}

/// The run's status, its pause request, and whether it holds an answer.
fn waiting_state(db: Db<'_>, run_id: Uuid) -> Result<(RunStatus, Option<Value>, bool), StoreError> {
    let row: Option<(String, Option<String>, bool)> = db
        .prepare(WAITING_STATE)?
        .query_row([run_id.to_string()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .map_err(|e| column(e, run_id, "row", db.path))?;
    let (status, pause, answered) = row.ok_or(StoreError::NotFound(run_id))?;
    Ok((decode_run_status(run_id, "status", &status)?, decode_opt_json(run_id, "pause", pause)?, answered))
}

/// Stores the answer of a run paused at `step_key` and queues it, due now.
pub(super) fn answer(db: Db<'_>, run_id: Uuid, step_key: &str, value: &Value, now: i64) -> Result<(), StoreError> {
    let (status, pause, answered) = waiting_state(db, run_id)?;
    let waiting_at = crate::store::decode::waiting_at(pause.as_ref());
    if status != RunStatus::Paused || answered || waiting_at.as_deref() != Some(step_key) {
        return Err(StoreError::NotWaiting { run_id, status, waiting_at: waiting_at.filter(|k| k != step_key) });
    }
    let stored = serde_json::json!({ "step_key": step_key, "value": value }).to_string();
    db.prepare(SET_ANSWER)?.execute(params![run_id.to_string(), stored, now]).map_err(db.fail())?;
    Ok(())
}

/// Queues a failed run again, due now.
pub(super) fn requeue(db: Db<'_>, run_id: Uuid, now: i64) -> Result<(), StoreError> {
    if db.prepare(REQUEUE)?.execute(params![run_id.to_string(), now]).map_err(db.fail())? > 0 {
        return Ok(());
    }
    let (status, _, _) = waiting_state(db, run_id)?;
    Err(StoreError::NotWaiting { run_id, status, waiting_at: None })
}

/// One checkpoint, fenced by the epoch: the history row (which is the run's snapshot), the
/// steps, retention, and the run row when the status changes.
///
/// A running run's row is left alone on ordinary checkpoints: a commit then writes the pages of
/// the checkpoint and step rows only, which is what a durable step costs in WAL frames.
pub(super) fn commit(db: Db<'_>, commit: &Commit, keep: Option<usize>, now: i64) -> Result<(), StoreError> {
    let id = commit.run_id.to_string();
    let fence: Option<(i64, String, i64, bool, Option<i64>)> = db
        .prepare(RUN_FENCE)?
        .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .optional()
        .map_err(|e| column(e, commit.run_id, "row", db.path))?;
    let Some((current, stored_status, run_no, answered, last)) = fence else {
        return Err(StoreError::NotFound(commit.run_id));
    };
    if current != epoch_param(commit.epoch) {
        return Err(fenced(commit.run_id, commit.epoch, current));
    }
    let history = History::of(commit.run_id, run_no)?;
    if commit.status.is_at_rest() || answered || stored_status != commit.status.as_str() {
        let available_at = if commit.status == RunStatus::Queued { commit.available_at_ms } else { None };
        db.prepare(UPDATE_RUN)?
            .execute(params![
                id,
                commit.status.as_str(),
                opt_json(commit.output.as_ref()),
                commit.error,
                opt_json(commit.pause.as_ref()),
                !commit.status.is_at_rest(),
                now,
                epoch_param(commit.epoch),
                available_at,
            ])
            .map_err(db.fail())?;
    }
    let row = CheckpointRow {
        run_id: &id,
        step_key: commit.step_key.as_deref(),
        status: commit.status,
        state: commit.snapshot.state.get(),
        progress: commit.snapshot.progress.get(),
        now,
    };
    let version = append_checkpoint(db, history, last, row)?;
    upsert_steps(db, &id, version, &commit.steps, now)?;
    if let Some(keep) = keep {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        if version > keep {
            let [first, _] = history.keys();
            db.prepare(PRUNE_CHECKPOINTS)?.execute(params![first, history.key(version - keep)]).map_err(db.fail())?;
        }
    }
    Ok(())
}

/// Records an effect unless one is recorded at its position; returns the one that is.
pub(super) fn journal_put(db: Db<'_>, entry: &JournalEntry, now: i64) -> Result<JournalEntry, StoreError> {
    let id = entry.run_id.to_string();
    require_run(db, entry.run_id)?;
    db.prepare(INSERT_JOURNAL)?
        .execute(params![
            id,
            entry.step_key,
            i64::from(entry.seq),
            entry.kind,
            entry.name,
            hash_to_sql(entry.request_hash),
            entry.output.to_string(),
            now,
        ])
        .map_err(db.fail())?;
    journal_get(db, entry.run_id, &entry.step_key, entry.seq)?.ok_or_else(|| {
        StoreError::Backend(format!(
            "{}: journal entry {}:{} of run {} vanished right after it was written",
            db.path.display(),
            entry.step_key,
            entry.seq,
            entry.run_id
        ))
    })
}

fn require_run(db: Db<'_>, run_id: Uuid) -> Result<(), StoreError> {
    let found = db.prepare(RUN_EXISTS)?.query_row([run_id.to_string()], |_| Ok(())).optional().map_err(db.fail())?;
    found.ok_or(StoreError::NotFound(run_id))
}

/// Deletes the run and every row that refers to it, unless someone holds a live lease on it.
///
/// Runs on a connection with foreign keys off, inside a transaction the caller opened: with
/// them on, deleting the run row would make SQLite look for its checkpoints by `run_id`,
/// which no index covers (a checkpoint's key is its run's number), and so read the whole
/// history table for every run deleted. The checkpoints go by their key range instead, and
/// the rows of every other table whose foreign key cascades from the run by that key, so a
/// table added later goes too.
pub(super) fn delete_run(db: Db<'_>, run_id: Uuid, now: i64) -> Result<(), StoreError> {
    let id = run_id.to_string();
    let lease: Option<(Option<String>, Option<i64>)> = db
        .prepare(SELECT_LEASE)?
        .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(|e| column(e, run_id, "lease", db.path))?;
    let Some((holder, expires)) = lease else {
        return Err(StoreError::NotFound(run_id));
    };
    if let (Some(holder), Some(expires)) = (holder, expires)
        && expires > now
    {
        return Err(StoreError::Locked { run_id, owner: holder, expires_at_ms: expires });
    }
    let [first, last] = History::read(db, run_id)?.keys();
    db.prepare(PRUNE_CHECKPOINTS)?.execute(params![first, last]).map_err(db.fail())?;
    let children = collect(db, CHILD_TABLES, params![], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
    })
    .map_err(db.fail())?;
    for (table, key, on_delete) in children {
        let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
        if on_delete.eq_ignore_ascii_case("CASCADE") {
            let sql = format!("DELETE FROM {} WHERE {} = ?1", quote(&table), quote(&key));
            db.prepare(&sql)?.execute([&id]).map_err(db.fail())?;
            continue;
        }
        let sql = format!("SELECT 1 FROM {} WHERE {} = ?1 LIMIT 1", quote(&table), quote(&key));
        if db.prepare(&sql)?.query_row([&id], |_| Ok(())).optional().map_err(db.fail())?.is_some() {
            return Err(StoreError::Backend(format!(
                "{}: run {run_id} has rows in `{table}`, whose foreign key does not cascade ({on_delete}); \
                 nothing was deleted: delete those rows first",
                db.path.display()
            )));
        }
    }
    db.prepare(DELETE_RUN)?.execute([&id]).map_err(db.fail())?;
    Ok(())
}

/// The run's latest record.
pub(super) fn load_run(db: Db<'_>, run_id: Uuid) -> Result<RunRecord, StoreError> {
    let row = db
        .prepare(SELECT_RUN)?
        .query_row([run_id.to_string()], RunRow::read)
        .optional()
        .map_err(|e| column(e, run_id, "row", db.path))?;
    let row = row.ok_or(StoreError::NotFound(run_id))?;
    let latest = latest_checkpoint(db, History::of(run_id, row.run_no)?)?;
    row.decode(run_id, latest)
}

/// One listed row as read: its id, and the other columns or why they could not be read (a
/// column that cannot be read damages its own row, not the listing).
type SummaryRow = (String, rusqlite::Result<SummaryColumns>);

/// flow, status, pause, created_at, queue, concurrency_key, available_at, updated_at.
type SummaryColumns = (String, String, Option<String>, i64, String, Option<String>, Option<i64>, i64);

fn read_summary(row: &rusqlite::Row<'_>) -> rusqlite::Result<SummaryRow> {
    // Read as bytes so that even an id that is not UTF-8 names its row in the report.
    let id = match row.get_ref(0)? {
        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => String::from_utf8_lossy(t).into(),
        other => format!("{other:?}"),
    };
    let rest = (|| {
        Ok((row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?, row.get(7)?, row.get(8)?))
    })();
    Ok((id, rest))
}

fn decode_summary(db: Db<'_>, (id, rest): SummaryRow) -> Result<RunSummary, DamagedRun> {
    let run_id = Uuid::parse_str(&id).map_err(|e| DamagedRun {
        run_id: Uuid::nil(),
        error: corrupt(Uuid::nil(), "run id", format!("`{id}` is not a UUID: {e}")),
    })?;
    let summary = (|| {
        let (flow, status, pause, created_at_ms, queue, key, available_at_ms, updated_at_ms) =
            rest.map_err(|e| column(e, run_id, "run row", db.path))?;
        Ok(RunSummary {
            run_id,
            flow,
            status: decode_run_status(run_id, "status", &status)?,
            pause: decode_opt_json(run_id, "pause", pause)?,
            created_at_ms,
            placement: Placement { queue, key },
            available_at_ms,
            updated_at_ms,
        })
    })();
    summary.map_err(|error| DamagedRun { run_id, error })
}

/// Runs matching the filter, newest first, and the ones whose rows cannot be read.
pub(super) fn list_runs(db: Db<'_>, filter: &RunFilter) -> Result<Listing<RunSummary>, StoreError> {
    // SQLite reads a negative LIMIT as "no limit".
    let limit = filter.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    let (sql, values) = list_statement(filter, limit);
    let values: Vec<&dyn rusqlite::ToSql> = values.iter().map(|v| v as &dyn rusqlite::ToSql).collect();
    let rows = collect(db, &sql, &values, read_summary).map_err(db.fail())?;
    let mut listing = Listing::default();
    for row in rows {
        match decode_summary(db, row) {
            Ok(summary) => listing.items.push(summary),
            Err(damaged) => listing.damaged.push(damaged),
        }
    }
    Ok(listing)
}

/// The listing statement for a filter and its parameters. Only the conditions the filter sets
/// are written (an `?2 IS NULL OR` form could not use an index), so each filter shape is one
/// cached statement; the page cursor is a row-value comparison, which walks the
/// `(…, created_at DESC, run_id DESC)` indexes from where the last page ended.
fn list_statement(filter: &RunFilter, limit: i64) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value as Sql;
    let mut values = vec![Sql::Integer(limit)];
    let mut conditions: Vec<String> = Vec::new();
    let bind = |values: &mut Vec<Sql>, v: Sql| {
        values.push(v);
        format!("?{}", values.len())
    };
    if let Some(flow) = &filter.flow {
        let p = bind(&mut values, Sql::Text(flow.clone()));
        conditions.push(format!("flow = {p}"));
    }
    if let Some(status) = filter.status {
        let p = bind(&mut values, Sql::Text(status.as_str().to_string()));
        conditions.push(format!("status = {p}"));
    }
    if let Some(from) = filter.created_from_ms {
        let p = bind(&mut values, Sql::Integer(from));
        conditions.push(format!("created_at >= {p}"));
    }
    if let Some(before) = filter.created_before_ms {
        let p = bind(&mut values, Sql::Integer(before));
        conditions.push(format!("created_at < {p}"));
    }
    if let Some(after) = filter.after {
        let at = bind(&mut values, Sql::Integer(after.created_at_ms));
        let id = bind(&mut values, Sql::Text(after.run_id.to_string()));
        conditions.push(format!("(created_at, run_id) < ({at}, {id})"));
    }
    let filter_sql = if conditions.is_empty() { String::new() } else { format!("WHERE {} ", conditions.join(" AND ")) };
    (summary_query!().replacen("FROM flow_runs ORDER BY", &format!("FROM flow_runs {filter_sql}ORDER BY"), 1), values)
}

/// One run's summary, without reading its snapshot.
pub(super) fn run_summary(db: Db<'_>, run_id: Uuid) -> Result<RunSummary, StoreError> {
    let row = db
        .prepare(SUMMARY_OF_RUN)?
        .query_row(params![1, run_id.to_string()], read_summary)
        .optional()
        .map_err(db.fail())?;
    decode_summary(db, row.ok_or(StoreError::NotFound(run_id))?).map_err(|d| d.error)
}

fn collect<T>(
    db: Db<'_>,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    read: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut stmt = db.conn.prepare_cached(sql)?;
    stmt.query_map(params, read)?.collect()
}

/// The run's steps in creation order.
pub(super) fn steps(db: Db<'_>, run_id: Uuid) -> Result<Vec<StepRecord>, StoreError> {
    require_run(db, run_id)?;
    let rows = collect(db, SELECT_STEPS, params![run_id.to_string()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, i64>(6)?,
            (r.get::<_, Option<i64>>(7)?, r.get::<_, Option<i64>>(8)?, r.get::<_, Option<String>>(9)?),
        ))
    })
    .map_err(|e| column(e, run_id, "step row", db.path))?;
    rows.into_iter()
        .map(|(step_key, method, status, input, output, error, attempt, (started, finished, usage))| {
            let what = |column: &str| format!("step `{step_key}` {column}");
            Ok(StepRecord {
                started_at_ms: started,
                finished_at_ms: finished,
                usage: decode_usage(run_id, &what("token usage"), usage)?,
                status: StepStatus::parse(&status)
                    .ok_or_else(|| corrupt(run_id, what("status"), format!("unknown step status `{status}`")))?,
                input: decode_opt_json(run_id, &what("input"), input)?,
                output: decode_opt_json(run_id, &what("output"), output)?,
                attempt: decode_u32(run_id, &what("attempt"), attempt)?,
                error,
                method,
                step_key,
            })
        })
        .collect()
}

/// The graph the run was created with, if it was stored with one.
pub(super) fn run_graph(db: Db<'_>, run_id: Uuid) -> Result<Option<GraphDoc>, StoreError> {
    let row: Option<(Option<String>, Option<String>)> = db
        .prepare(SELECT_RUN_GRAPH)?
        .query_row([run_id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(|e| column(e, run_id, "graph", db.path))?;
    let (digest, json) = row.ok_or(StoreError::NotFound(run_id))?;
    decode_graph(run_id, digest, json)
}

/// The run's checkpoint history, oldest first.
pub(super) fn checkpoints(db: Db<'_>, run_id: Uuid) -> Result<Vec<CheckpointInfo>, StoreError> {
    let [first, last] = History::read(db, run_id)?.keys();
    let rows = collect(db, SELECT_CHECKPOINTS, params![first, last], |r| {
        Ok((
            (r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?),
            (r.get::<_, Option<String>>(4)?, r.get::<_, Option<String>>(5)?),
        ))
    })
    .map_err(|e| column(e, run_id, "checkpoint row", db.path))?;
    rows.into_iter()
        .map(|((seq, step_key, status, created_at_ms), (author, reason))| {
            Ok(CheckpointInfo {
                seq: decode_u64(run_id, "checkpoint seq", seq)?,
                status: decode_run_status(run_id, &format!("checkpoint {seq} status"), &status)?,
                step_key,
                created_at_ms,
                edit: edit_note(author, reason),
            })
        })
        .collect()
}

/// Writes a person's edit of a run's state as a checkpoint of its own (`Store::edit_state`),
/// after the checks every store makes ([`crate::store::check_editable`]).
pub(super) fn edit_state(db: Db<'_>, edit: &StateEdit, now: i64) -> Result<u64, StoreError> {
    let run = load_run(db, edit.run_id)?;
    crate::store::check_editable(&run, edit, now)?;
    let history = History::read(db, edit.run_id)?;
    let seq = i64::try_from(run.version).unwrap_or(MAX_SEQ).saturating_add(1);
    if seq > MAX_SEQ {
        return Err(StoreError::Backend(format!(
            "run {}: it has {MAX_SEQ} checkpoints, the most one run can have; fork it to go on",
            edit.run_id
        )));
    }
    let id = edit.run_id.to_string();
    db.prepare(APPEND_EDIT)?
        .execute(params![
            history.key(seq),
            id,
            seq,
            run.status.as_str(),
            edit.state.get(),
            run.snapshot.progress.get(),
            now,
            edit.note.author,
            edit.note.reason,
        ])
        .map_err(db.fail())?;
    db.prepare(TOUCH_RUN)?.execute(params![id, now]).map_err(db.fail())?;
    decode_u64(edit.run_id, "checkpoint seq", seq)
}

/// The snapshot saved by checkpoint `seq`.
pub(super) fn load_checkpoint(db: Db<'_>, run_id: Uuid, seq: u64) -> Result<Snapshot, StoreError> {
    let history = History::read(db, run_id)?;
    let seq_param = match i64::try_from(seq) {
        Ok(seq) if (1..=MAX_SEQ).contains(&seq) => seq,
        _ => return Err(StoreError::CheckpointNotFound { run_id, seq }),
    };
    let row: Option<(String, String)> = db
        .prepare(SELECT_CHECKPOINT)?
        .query_row([history.key(seq_param)], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(|e| column(e, run_id, "checkpoint row", db.path))?;
    let (state, progress) = row.ok_or(StoreError::CheckpointNotFound { run_id, seq })?;
    Ok(Snapshot {
        state: decode_raw(run_id, &format!("checkpoint {seq} state"), state)?,
        progress: decode_raw(run_id, &format!("checkpoint {seq} progress"), progress)?,
    })
}

/// The recorded effect at `(step_key, seq)`, if any.
/// Every journal entry of the run, by step key and position.
pub(super) fn journal(db: Db<'_>, run_id: Uuid) -> Result<Vec<JournalEntry>, StoreError> {
    require_run(db, run_id)?;
    let rows = collect(db, SELECT_RUN_JOURNAL, params![run_id.to_string()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, String>(5)?,
        ))
    })
    .map_err(|e| column(e, run_id, "journal row", db.path))?;
    rows.into_iter()
        .map(|(step_key, seq, kind, name, hash, output)| {
            let what = format!("journal entry {step_key}:{seq}");
            Ok(JournalEntry {
                run_id,
                seq: decode_u32(run_id, &what, seq)?,
                output: decode_json(run_id, &format!("{what} output"), &output)?,
                step_key,
                kind,
                name,
                request_hash: hash_from_sql(hash),
            })
        })
        .collect()
}

pub(super) fn journal_get(
    db: Db<'_>,
    run_id: Uuid,
    step_key: &str,
    seq: u32,
) -> Result<Option<JournalEntry>, StoreError> {
    let row: Option<(String, String, i64, String)> = db
        .prepare(SELECT_JOURNAL)?
        .query_row(params![run_id.to_string(), step_key, i64::from(seq)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()
        .map_err(|e| column(e, run_id, "journal row", db.path))?;
    row.map(|(kind, name, hash, output)| {
        Ok(JournalEntry {
            run_id,
            step_key: step_key.to_string(),
            seq,
            output: decode_json(run_id, &format!("journal entry {step_key}:{seq} output"), &output)?,
            kind,
            name,
            request_hash: hash_from_sql(hash),
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;
    use serde_json::json;

    use super::*;
    use crate::store::sqlite::{SqliteOptions, schema};

    const ALL: &[(&str, &str)] = &[
        ("SELECT_RUN", SELECT_RUN),
        ("RUN_EXISTS", RUN_EXISTS),
        ("RUN_FENCE", RUN_FENCE),
        ("RUN_NO", RUN_NO),
        ("SELECT_LATEST", SELECT_LATEST),
        ("INSERT_RUN", INSERT_RUN),
        ("SELECT_LEASE", SELECT_LEASE),
        ("TAKE_LEASE", TAKE_LEASE),
        ("RENEW_LEASE", RENEW_LEASE),
        ("UPDATE_RUN", UPDATE_RUN),
        ("UPSERT_STEP", UPSERT_STEP),
        ("APPEND_CHECKPOINT", APPEND_CHECKPOINT),
        ("APPEND_EDIT", APPEND_EDIT),
        ("TOUCH_RUN", TOUCH_RUN),
        ("PRUNE_CHECKPOINTS", PRUNE_CHECKPOINTS),
        ("SELECT_STEPS", SELECT_STEPS),
        ("SELECT_CHECKPOINTS", SELECT_CHECKPOINTS),
        ("SELECT_CHECKPOINT", SELECT_CHECKPOINT),
        ("INSERT_JOURNAL", INSERT_JOURNAL),
        ("SELECT_JOURNAL", SELECT_JOURNAL),
        ("SELECT_RUN_JOURNAL", SELECT_RUN_JOURNAL),
        ("SUMMARY_OF_RUN", SUMMARY_OF_RUN),
        ("RELEASE_LEASE", RELEASE_LEASE),
        ("LIVE_LEASES", LIVE_LEASES),
        ("CLAIM_CANDIDATES", CLAIM_CANDIDATES),
        ("WAITING_STATE", WAITING_STATE),
        ("SET_ANSWER", SET_ANSWER),
        ("REQUEUE", REQUEUE),
        ("REQUEST_CANCEL", REQUEST_CANCEL),
    ];

    fn step(key: &str) -> StepRecord {
        StepRecord::new(key, "m", StepStatus::Ready)
    }

    fn new_run() -> Result<NewRun, serde_json::Error> {
        Ok(NewRun {
            run_id: Uuid::new_v4(),
            flow: "f".into(),
            parent_run_id: None,
            snapshot: Snapshot::encode(&json!({}), &json!({}))?,
            steps: vec![],
            start: crate::store::Start::Leased { owner: "w".into(), lease: Duration::ZERO },
            placement: crate::store::Placement::default(),
            graph: None,
        })
    }

    /// Every page of every listing shape is an index range, never a scan of all runs: the
    /// dashboard pages through 100,000 of them.
    #[test]
    fn every_listing_page_searches_an_index() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("runs.db");
        let conn = schema::open_writer(&SqliteOptions::new(&path))?;
        let after = Some(crate::store::RunCursor { created_at_ms: 5, run_id: Uuid::nil() });
        for flow in [None, Some("f".to_string())] {
            for status in [None, Some(RunStatus::Queued)] {
                for created_from_ms in [None, Some(1)] {
                    let filter =
                        RunFilter { flow: flow.clone(), status, created_from_ms, after, ..RunFilter::default() };
                    let (sql, values) = list_statement(&filter, 50);
                    let values: Vec<&dyn rusqlite::ToSql> = values.iter().map(|v| v as &dyn rusqlite::ToSql).collect();
                    let mut plan = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let steps: Vec<String> =
                        plan.query_map(&values[..], |r| r.get::<_, String>(3))?.collect::<Result<_, _>>()?;
                    let outer = steps.iter().find(|s| s.contains("flow_runs")).ok_or("no step reads flow_runs")?;
                    assert!(
                        outer.starts_with("SEARCH flow_runs USING") && outer.contains("(created_at,run_id)<"),
                        "{filter:?}: {steps:?}"
                    );
                    assert!(!steps.iter().any(|s| s.contains("TEMP B-TREE")), "sorted by the index: {steps:?}");
                }
            }
        }
        Ok(())
    }

    /// Checkpoint keys are `run_no * 2^32 + seq`: a store that ran out of run numbers, or a run
    /// out of checkpoint numbers, says so instead of writing a key of another run; a run number
    /// outside the range (edited by hand) is reported as damage.
    #[test]
    fn numbers_that_run_out_are_reported() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("runs.db");
        let conn = schema::open_writer(&SqliteOptions::new(&path))?;
        let db = Db { conn: &conn, path: &path };

        let last = new_run()?;
        create_run(db, &last, false, 1)?;
        conn.execute("UPDATE flow_runs SET run_no = ?1", [MAX_RUN_NO])?;
        conn.execute("UPDATE flow_checkpoints SET ck = ?1 + 1", [MAX_RUN_NO << 32])?;
        assert_eq!(load_run(db, last.run_id)?.version, 1, "the last number still works");
        match create_run(db, &new_run()?, false, 2) {
            Err(StoreError::Backend(m)) => assert!(m.contains("start a new store file"), "{m}"),
            other => return Err(format!("expected Backend, got {other:?}").into()),
        }

        conn.execute("UPDATE flow_checkpoints SET ck = ?1, seq = ?2", [(MAX_RUN_NO << 32) + MAX_SEQ, MAX_SEQ])?;
        let claim = claim(db, last.run_id, "w", Duration::ZERO, 3)?;
        assert_eq!(claim.run.version, MAX_SEQ as u64);
        let c = Commit {
            run_id: last.run_id,
            epoch: claim.epoch,
            status: RunStatus::Running,
            snapshot: Snapshot::encode(&json!({}), &json!({}))?,
            steps: vec![],
            step_key: None,
            output: None,
            error: None,
            pause: None,
            available_at_ms: None,
        };
        match commit(db, &c, None, 4) {
            Err(StoreError::Backend(m)) => assert!(m.contains("fork it to go on"), "{m}"),
            other => return Err(format!("expected Backend, got {other:?}").into()),
        }
        assert!(matches!(
            load_checkpoint(db, last.run_id, MAX_SEQ as u64 + 1),
            Err(StoreError::CheckpointNotFound { .. })
        ));

        conn.execute("UPDATE flow_runs SET run_no = 0 WHERE run_id = ?1", [last.run_id.to_string()])?;
        match load_run(db, last.run_id) {
            Err(StoreError::Corrupt { what, .. }) => assert_eq!(what, "run number"),
            other => return Err(format!("expected Corrupt, got {other:?}").into()),
        }
        Ok(())
    }

    /// Re-preparing means parsing and planning the SQL again at every call: the statement cache
    /// would then save nothing on the hot path. SQLite does it silently whenever its planner
    /// looked at a bound value (a `MAX` or `ORDER BY` filtered on a parameter, since 3.4x)
    /// unless the query planner stability guarantee is on, so every statement is checked here.
    #[test]
    fn no_statement_is_re_prepared_between_runs() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("runs.db");
        let conn = schema::open_writer(&SqliteOptions::new(&path))?;
        let db = Db { conn: &conn, path: &path };
        for round in 0..2 {
            let run = NewRun {
                run_id: Uuid::new_v4(),
                flow: "f".into(),
                parent_run_id: None,
                snapshot: Snapshot::encode(&json!({}), &json!({}))?,
                steps: vec![step("start#0")],
                start: crate::store::Start::Leased { owner: "w".into(), lease: Duration::ZERO },
                placement: crate::store::Placement::default(),
                graph: None,
            };
            let id = run.run_id;
            create_run(db, &run, false, 1_000)?;
            let claim = claim(db, id, "w", Duration::ZERO, 2_000)?;
            renew(db, id, claim.epoch, Duration::ZERO, 2_000)?;
            for n in 0..4 {
                let c = Commit {
                    run_id: id,
                    epoch: claim.epoch,
                    // The last one ends the run, which writes the run row.
                    status: if n == 3 { RunStatus::Completed } else { RunStatus::Running },
                    snapshot: Snapshot::encode(&json!({ "n": n }), &json!({}))?,
                    steps: vec![
                        StepRecord { status: StepStatus::Completed, ..step("start#0") },
                        step(&format!("m#{n}")),
                    ],
                    step_key: Some("start#0".into()),
                    output: None,
                    error: None,
                    pause: None,
                    available_at_ms: None,
                };
                commit(db, &c, Some(2), 3_000)?;
            }
            let stale = Commit {
                run_id: id,
                epoch: 0,
                status: RunStatus::Running,
                snapshot: Snapshot::encode(&json!({}), &json!({}))?,
                steps: vec![],
                step_key: None,
                output: None,
                error: None,
                pause: None,
                available_at_ms: None,
            };
            assert!(matches!(commit(db, &stale, None, 4_000), Err(StoreError::Fenced { .. })));
            let entry = JournalEntry {
                run_id: id,
                step_key: "start#0".into(),
                seq: round,
                kind: "llm".into(),
                name: "m".into(),
                request_hash: 9,
                output: json!("x"),
            };
            journal_put(db, &entry, 5_000)?;
            journal_get(db, id, "start#0", round)?;
            journal(db, id)?;
            load_run(db, id)?;
            run_summary(db, id)?;
            steps(db, id)?;
            checkpoints(db, id)?;
            load_checkpoint(db, id, 5)?;
            for (flow, status) in [
                (None, None),
                (None, Some(RunStatus::Running)),
                (Some("f"), None),
                (Some("f"), Some(RunStatus::Paused)),
            ] {
                let filter = RunFilter { flow: flow.map(String::from), status, limit: Some(5), ..RunFilter::default() };
                list_runs(db, &filter)?;
                let after = Some(crate::store::RunCursor { created_at_ms: 9_000, run_id: id });
                list_runs(
                    db,
                    &RunFilter { after, created_from_ms: Some(1), created_before_ms: Some(9_999), ..filter },
                )?;
            }

            // A queued run through its life: claimed within limits, paused, answered, failed,
            // requeued, released.
            let queued = NewRun {
                start: Start::Queued { available_at_ms: None },
                // A queue per round: the first round's run is runnable again at its end.
                placement: Placement::in_queue(format!("q{round}")).key("k"),
                ..new_run()?
            };
            let qid = queued.run_id;
            create_run(db, &queued, false, 6_000)?;
            let request = ClaimRequest {
                owner: "w".into(),
                lease: Duration::from_secs(60),
                flows: vec!["f".into()],
                queues: vec![crate::store::QueueLimit::new(format!("q{round}")).concurrency(5).per_key(1)],
                max: 3,
            };
            let claimed = claim_next(db, &request, 7_000)?;
            assert_eq!(claimed.iter().map(|c| c.run.run_id).collect::<Vec<_>>(), [qid]);
            let pause = Commit {
                run_id: qid,
                epoch: claimed[0].epoch,
                status: RunStatus::Paused,
                snapshot: Snapshot::encode(&json!({}), &json!({}))?,
                steps: vec![],
                step_key: None,
                output: None,
                error: None,
                pause: Some(json!({ "step_key": "ask#0" })),
                available_at_ms: None,
            };
            commit(db, &pause, None, 8_000)?;
            let edit = StateEdit {
                run_id: qid,
                version: 2,
                state: serde_json::value::to_raw_value(&json!({ "edited": round }))?,
                note: crate::store::EditNote { author: "a".into(), reason: "r".into() },
            };
            assert_eq!(edit_state(db, &edit, 8_500)?, 3);
            answer(db, qid, "ask#0", &json!(true), 9_000)?;
            let claimed = claim_next(db, &request, 10_000)?;
            let failed = Commit { epoch: claimed[0].epoch, status: RunStatus::Failed, pause: None, ..pause };
            commit(db, &failed, None, 11_000)?;
            requeue(db, qid, 12_000)?;
            let claimed = claim_next(db, &request, 13_000)?;
            assert!(release(db, qid, claimed[0].epoch)?, "a released queued run is runnable");
            assert!(request_cancel(db, qid, "no longer needed", 14_000)?, "a queued run stays queued");
        }
        for (name, sql) in ALL {
            let stmt = conn.prepare_cached(sql)?;
            assert!(stmt.get_status(StatementStatus::Run) >= 2, "{name} was not exercised");
            assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "{name} is re-prepared at every run");
        }
        Ok(())
    }
}
