//! The SQL of every store operation, with row decoding.
//!
//! Writes run inside a transaction the caller opens and commits ([`super::PgStore`]), except a
//! commit, which is one statement (`COMMIT`) and so atomic alone; every
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
use crate::store::admission::{self, Admission};
use crate::store::decode::{decode_answer, decode_graph, decode_usage, edit_note, encode_usage, waiting_at};
use crate::store::{
    CheckpointInfo, Claim, ClaimRequest, Commit, DamagedRun, JournalEntry, Listing, NewRun, Placement, RunFilter,
    RunRecord, RunStatus, RunSummary, Snapshot, Start, StateEdit, StepRecord, StepStatus, StoreError,
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
// (queue, key) pairs at their limit ($3, $4) and the rows another claimer holds locked. Due
// since: a queued run's due time, a running run's lease expiry (its worker died then), else its
// creation; the key of `flow_runs_runnable`, which leaves out `updated_at` so that a step's
// commit can update the run row in place (schema version 9).
const CLAIM_CANDIDATES: &str = concat!(
    "SELECT run_id, queue, concurrency_key FROM flow_runs WHERE status IN ('queued', 'running') \
     AND queue = ANY($1) AND flow = ANY($2) \
     AND (lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at <= ",
    now_ms!(),
    ") AND (status = 'running' OR available_at IS NULL OR available_at <= ",
    now_ms!(),
    ") AND NOT EXISTS (SELECT 1 FROM unnest($3::text[], $4::text[]) AS f (q, k) \
         WHERE f.q = queue AND f.k = concurrency_key) \
     ORDER BY COALESCE(available_at, lease_expires_at, created_at), created_at, run_id LIMIT $5 \
     FOR UPDATE SKIP LOCKED"
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
     RETURNING CASE WHEN status NOT IN ('completed', 'cancelled', 'compensated') THEN cancel_requested END"
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
    " WHERE run_id = $1 AND status NOT IN ('completed', 'cancelled', 'compensated') RETURNING status, queue"
);

// The `steps` part of `CREATE_RUN`, `COMMIT` and `COMMIT_BATCH`: upserts the steps, one array
// per column (key, method, status, input, output, error, attempt, started at, finished at, token
// usage), at most one element per run and key, for the rows `run` the statement wrote. A new
// step's `ord` is its run's version * 2^20 + its position among its commit's steps
// (STEPS_PER_COMMIT); a known step keeps its own. Without arguments: one run's steps as $13-$22,
// positioned by their order in the arrays.
macro_rules! upsert_steps {
    () => {
        upsert_steps!(
            "s.position - 1",
            "run, unnest($13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], \
             $19::bigint[], $20::bigint[], $21::bigint[], $22::text[]) WITH ORDINALITY \
             AS s (step_key, method, status, input, output, error, attempt, started_at, finished_at, \
             token_usage, position)"
        )
    };
    ($position:literal, $from:literal) => {
        concat!(
            "steps AS (\
                 INSERT INTO flow_steps (run_id, step_key, ord, method, status, input, output, error, attempt, \
                 created_at, updated_at, started_at, finished_at, token_usage) \
                 SELECT run.run_id, s.step_key, run.version * 1048576 + ",
            $position,
            ", s.method, s.status, s.input, s.output, s.error, s.attempt, ",
            now_ms!(),
            ", ",
            now_ms!(),
            ", s.started_at, s.finished_at, s.token_usage FROM ",
            $from,
            " ON CONFLICT (run_id, step_key) DO UPDATE SET method = excluded.method, status = excluded.status, \
                 input = excluded.input, output = excluded.output, error = excluded.error, \
                 attempt = excluded.attempt, updated_at = excluded.updated_at, started_at = excluded.started_at, \
                 finished_at = excluded.finished_at, token_usage = excluded.token_usage)"
        )
    };
}

// A new run as one statement: the run row, its first checkpoint and its steps. A run id already
// taken inserts nothing (no row comes back). A queued run has no owner and no lease length
// (`now + NULL` is no expiry), and notifies the workers listening when the statement commits.
//   $1 run id, $2 flow, $3 parent, $4 owner, $5 lease (ms), $6 status, $7 epoch, $8 queue,
//   $9 concurrency key, $10 due time, $11 state, $12 progress, $13-$22 the steps, $23 the graph's
//   digest, $24 the graph as JSON (NULL when this store wrote it already).
const CREATE_RUN: &str = concat!(
    "WITH run AS (\
         INSERT INTO flow_runs (run_id, flow, parent_run_id, status, version, lease_owner, lease_expires_at, \
         epoch, created_at, updated_at, queue, concurrency_key, available_at, graph_digest) \
         VALUES ($1, $2, $3, $6, 1, $4, ",
    now_ms!(),
    " + $5, $7, ",
    now_ms!(),
    ", ",
    now_ms!(),
    ", $8, $9, $10, $23) ON CONFLICT (run_id) DO NOTHING RETURNING run_id, version, status, queue), \
     graph AS (\
         INSERT INTO flow_graphs (flow, digest, graph, created_at) SELECT $2, $23, $24, ",
    now_ms!(),
    " FROM run WHERE $24::text IS NOT NULL ON CONFLICT (flow, digest) DO NOTHING), \
     checkpoint AS (\
         INSERT INTO flow_checkpoints (run_id, seq, step_key, status, state, progress, created_at) \
         SELECT run.run_id, 1, NULL, run.status, $11, $12, ",
    now_ms!(),
    " FROM run), ",
    upsert_steps!(),
    " SELECT run_id, CASE WHEN status = 'queued' THEN pg_notify(",
    work_channel!(),
    ", queue)::text END FROM run"
);

// One checkpoint as one statement: one round trip, and atomic without an explicit transaction.
// Everything hinges on `run`, the fenced update of the run row (version bump, status, lease):
// when the epoch does not match it returns no row, and the checkpoint, the steps, the pruning
// and the notification, each selected from it, do nothing. A release ($7 false: the run comes
// to rest) clears the lease; every commit clears the answer the run was resumed with. A run with
// a cancel pending that would come to rest waiting (paused, failed, escalated, parked) is queued
// due now instead (`requeued_for_cancel`), for a worker to cancel it.
//   $1 run id, $2 epoch, $3 status, $4 output, $5 error, $6 pause, $7 stays running, $8 due time,
//   $9 the checkpoint's step key, $10 state, $11 progress, $12 checkpoints kept (NULL: all),
//   $13-$22 the steps (`upsert_steps`).
// All parts see the snapshot the statement started with: the pruning cannot see (nor delete) the
// checkpoint inserted beside it, which is kept anyway as the newest. A run with no more than
// `keep` checkpoints skips the pruning's index probe. Returns the new version and
// the queue; a queued run notifies the workers listening when the statement commits.
const COMMIT: &str = concat!(
    "WITH run AS (\
         UPDATE flow_runs SET version = version + 1, \
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
    " WHERE run_id = $1 AND epoch = $2 RETURNING run_id, version, queue, status), \
     checkpoint AS (\
         INSERT INTO flow_checkpoints (run_id, seq, step_key, status, state, progress, created_at) \
         SELECT $1, run.version, $9, $3, $10, $11, ",
    now_ms!(),
    " FROM run), \
     ",
    upsert_steps!(),
    ", \
     pruned AS (\
         DELETE FROM flow_checkpoints c USING run \
         WHERE run.version > $12::bigint AND c.run_id = $1 AND c.seq <= run.version - $12::bigint) \
     SELECT version, queue, CASE WHEN status = 'queued' THEN pg_notify(",
    work_channel!(),
    ", queue)::text END, status FROM run"
);

// Several runs' commits as one statement (group commit, `super::group`): `COMMIT` over arrays,
// one element per run, each run at most once. Each run's update is fenced by its own epoch, so a
// run whose epoch moved on matches no row and writes nothing while the others commit; the
// statement returns a row for each run it wrote. The update joins the runs by primary key (a
// nested loop over the arrays: at most a batch of index probes).
//   $1 run ids, $2 epochs, $3 statuses, $4 outputs, $5 errors, $6 pauses, $7 stays running,
//   $8 due times, $9 the checkpoints' step keys, $10 states, $11 progress (one element per run),
//   $12 checkpoints kept (NULL: all), per run, as each commit's store keeps them, $13 the run of each step, $14-$23 the steps' columns as in
//   `upsert_steps`, $24 each step's position among its commit's steps (from 0).
const COMMIT_BATCH: &str = concat!(
    "WITH b AS (\
         SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::boolean[], $8::bigint[], $9::text[], $10::text[], $11::text[], $12::bigint[]) \
         AS b (run_id, epoch, status, output, error, pause, stays, available_at, step_key, state, progress, keep)), \
     run AS (\
         UPDATE flow_runs r SET version = r.version + 1, \
         status = CASE WHEN r.cancel_requested IS NOT NULL AND b.status IN ('paused', 'failed', 'escalated', 'queued') \
             THEN 'queued' ELSE b.status END, \
         output = b.output, error = b.error, pause = b.pause, \
         lease_owner = CASE WHEN b.stays THEN r.lease_owner END, \
         lease_expires_at = CASE WHEN b.stays THEN r.lease_expires_at END, \
         available_at = CASE WHEN r.cancel_requested IS NOT NULL \
             AND b.status IN ('paused', 'failed', 'escalated', 'queued') THEN ",
    now_ms!(),
    " ELSE b.available_at END, answer = NULL, updated_at = ",
    now_ms!(),
    " FROM b WHERE r.run_id = b.run_id AND r.epoch = b.epoch \
         RETURNING r.run_id, r.version, r.queue, r.status, b.status AS asked, b.step_key, b.state, b.progress, b.keep), \
     checkpoint AS (\
         INSERT INTO flow_checkpoints (run_id, seq, step_key, status, state, progress, created_at) \
         SELECT run_id, version, step_key, asked, state, progress, ",
    now_ms!(),
    " FROM run), ",
    upsert_steps!(
        "s.position",
        "run JOIN unnest($13::uuid[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], \
         $19::text[], $20::bigint[], $21::bigint[], $22::bigint[], $23::text[], $24::bigint[]) \
         AS s (run_id, step_key, method, status, input, output, error, attempt, started_at, finished_at, \
         token_usage, position) ON s.run_id = run.run_id"
    ),
    ", \
     pruned AS (\
         DELETE FROM flow_checkpoints c USING run \
         WHERE run.version > run.keep AND c.run_id = run.run_id AND c.seq <= run.version - run.keep) \
     SELECT run_id, CASE WHEN status = 'queued' THEN pg_notify(",
    work_channel!(),
    ", queue)::text END FROM run"
);

// The literal 2^20 in `COMMIT`.
const _: () = assert!(STEPS_PER_COMMIT == 1_048_576);

const SELECT_STEPS: &str = "SELECT step_key, method, status, input, output, error, attempt, started_at, \
     finished_at, token_usage FROM flow_steps WHERE run_id = $1 ORDER BY ord";

const SELECT_CHECKPOINTS: &str = "SELECT seq, step_key, status, created_at, edited_by, edit_reason \
     FROM flow_checkpoints WHERE run_id = $1 ORDER BY seq";

// A person's edit of a run's state as one statement: the run row moves to the next version only
// when it is at the version the edit was made from, paused or failed, and under no live lease;
// the edit's checkpoint copies the progress of the checkpoint it follows. No row: refused (the
// caller reads the run to say why).
//   $1 run id, $2 the version the edit was made from, $3 state, $4 author, $5 reason.
const EDIT_STATE: &str = concat!(
    "WITH run AS (\
         UPDATE flow_runs SET version = version + 1, updated_at = ",
    now_ms!(),
    " WHERE run_id = $1 AND version = $2 AND status IN ('paused', 'failed') \
         AND (lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at <= ",
    now_ms!(),
    ") RETURNING version, status), \
     checkpoint AS (\
         INSERT INTO flow_checkpoints (run_id, seq, step_key, status, state, progress, created_at, edited_by, \
         edit_reason) SELECT $1, run.version, NULL, run.status, $3, c.progress, ",
    now_ms!(),
    ", $4, $5 FROM run JOIN flow_checkpoints c ON c.run_id = $1 AND c.seq = $2) \
     SELECT version FROM run"
);

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

const SELECT_RUN_JOURNAL: &str = "SELECT step_key, seq, kind, name, request_hash, output FROM step_journal \
     WHERE run_id = $1 ORDER BY step_key, seq";

// Waits for a commit in flight on the run and keeps the next from starting until the delete
// commits, so the steps and checkpoints `DELETE_RUN` reads afterwards are all there will be.
const LOCK_RUN: &str = "SELECT 1 FROM flow_runs WHERE run_id = $1 FOR UPDATE";

// Refuses a live lease in the statement itself, so no claim can slip in between a check and
// the delete. Steps and checkpoints (no foreign keys since schema version 9) go in the same
// statement, after `LOCK_RUN`; the journal and the stream by their foreign keys' cascade.
const DELETE_RUN: &str = concat!(
    "WITH run AS (DELETE FROM flow_runs WHERE run_id = $1 AND (lease_owner IS NULL OR lease_expires_at IS NULL OR \
     lease_expires_at <= ",
    now_ms!(),
    ") RETURNING run_id), \
     steps AS (DELETE FROM flow_steps s USING run WHERE s.run_id = run.run_id), \
     checkpoints AS (DELETE FROM flow_checkpoints c USING run WHERE c.run_id = run.run_id) \
     SELECT run_id FROM run"
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

/// Inserts a run, its first checkpoint and its start steps, and its graph unless
/// `graph_stored` says this store wrote it already. Returns its lease epoch: 1 under the
/// creator's lease, 0 when queued (the workers listening are told).
pub(super) async fn create_run(
    client: &impl GenericClient,
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
    let steps = StepColumns::of(id, &run.steps)?;
    let digest = run.graph.as_ref().map(|g| g.digest.as_str());
    let graph_json = run.graph.as_ref().filter(|_| !graph_stored).map(|g| g.json.as_str());
    let stmt = client.prepare_cached(CREATE_RUN).await.map_err(fail)?;
    let params: [&(dyn ToSql + Sync); 24] = [
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
        &run.snapshot.state.get(),
        &run.snapshot.progress.get(),
        &steps.key,
        &steps.method,
        &steps.status,
        &steps.input,
        &steps.output,
        &steps.error,
        &steps.attempt,
        &steps.started_at,
        &steps.finished_at,
        &steps.usage,
        &digest,
        &graph_json,
    ];
    if client.query_opt(&stmt, &params).await.map_err(fail)?.is_none() {
        return Err(StoreError::Duplicate(id));
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

/// A commit's steps as the columns `COMMIT` unnests, one element per step key: a key listed
/// twice keeps its first position and its last values, as two upserts in a row would.
#[derive(Default)]
pub(super) struct StepColumns {
    key: Vec<String>,
    method: Vec<String>,
    status: Vec<&'static str>,
    input: Vec<Option<String>>,
    output: Vec<Option<String>>,
    error: Vec<Option<String>>,
    attempt: Vec<i64>,
    started_at: Vec<Option<i64>>,
    finished_at: Vec<Option<i64>>,
    usage: Vec<Option<String>>,
}

impl StepColumns {
    /// The columns of a commit's steps, or why the commit carries too many.
    pub(super) fn of(run_id: Uuid, steps: &[StepRecord]) -> Result<Self, StoreError> {
        if steps.len() > STEPS_PER_COMMIT {
            return Err(StoreError::Backend(format!(
                "run {run_id}: one commit carries {} steps, more than the {STEPS_PER_COMMIT} a commit may schedule",
                steps.len()
            )));
        }
        let mut columns = StepColumns::default();
        for step in steps {
            let values = (
                step.method.clone(),
                step.status.as_str(),
                opt_json(step.input.as_ref()),
                opt_json(step.output.as_ref()),
                step.error.clone(),
                i64::from(step.attempt),
                step.started_at_ms,
                step.finished_at_ms,
                encode_usage(step.usage),
            );
            // Commits carry a handful of steps, so a scan beats a map.
            match columns.key.iter().position(|k| *k == step.step_key) {
                Some(i) => {
                    (
                        columns.method[i],
                        columns.status[i],
                        columns.input[i],
                        columns.output[i],
                        columns.error[i],
                        columns.attempt[i],
                        columns.started_at[i],
                        columns.finished_at[i],
                        columns.usage[i],
                    ) = values;
                }
                None => {
                    columns.key.push(step.step_key.clone());
                    columns.method.push(values.0);
                    columns.status.push(values.1);
                    columns.input.push(values.2);
                    columns.output.push(values.3);
                    columns.error.push(values.4);
                    columns.attempt.push(values.5);
                    columns.started_at.push(values.6);
                    columns.finished_at.push(values.7);
                    columns.usage.push(values.8);
                }
            }
        }
        Ok(columns)
    }
}

/// One checkpoint, fenced by the epoch, in one statement (`COMMIT`): the run row (status,
/// version, lease), the history row (which is the run's snapshot), the steps, retention (`keep`
/// newest checkpoints, or all) and the notification of a queued run. Returns `Ok(None)` when
/// the epoch did not match and nothing was written ([`fenced_or_missing`] says why).
pub(super) async fn commit(
    client: &impl GenericClient,
    pg: &Pg,
    commit: &Commit,
    steps: &StepColumns,
    keep: Option<usize>,
) -> Result<Option<i64>, StoreError> {
    let id = commit.run_id;
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(id));
    let stmt = client.prepare_cached(COMMIT).await.map_err(fail)?;
    let output = opt_json(commit.output.as_ref());
    let pause = opt_json(commit.pause.as_ref());
    let stays_running = !commit.status.is_at_rest();
    let available_at = if commit.status == RunStatus::Queued { commit.available_at_ms } else { None };
    let keep = keep.map(|k| i64::try_from(k).unwrap_or(i64::MAX));
    let params: [&(dyn ToSql + Sync); 22] = [
        &id,
        &epoch_param(commit.epoch),
        &commit.status.as_str(),
        &output,
        &commit.error,
        &pause,
        &stays_running,
        &available_at,
        &commit.step_key,
        &commit.snapshot.state.get(),
        &commit.snapshot.progress.get(),
        &keep,
        &steps.key,
        &steps.method,
        &steps.status,
        &steps.input,
        &steps.output,
        &steps.error,
        &steps.attempt,
        &steps.started_at,
        &steps.finished_at,
        &steps.usage,
    ];
    let Some(row) = client.query_opt(&stmt, &params).await.map_err(fail)? else {
        return Ok(None);
    };
    Ok(Some(col(&row, 0, id, "version")?))
}

/// Several runs' commits, each run at most once, each fenced by its own epoch and with the
/// retention of the store it came through (`keep` newest checkpoints, or all), in one statement
/// (`COMMIT_BATCH`): one round trip and one transaction for all of them. Returns the runs it
/// wrote; a run left out matched no row (fenced or missing) and nothing of it was written. The
/// error is PostgreSQL's, for the caller to tell a statement the server refused (nothing was
/// written) from a connection lost on the way (unknown).
pub(super) async fn commit_batch(
    client: &impl GenericClient,
    batch: &[(&Commit, &StepColumns, Option<usize>)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let stmt = client.prepare_cached(COMMIT_BATCH).await?;
    let n = batch.len();
    let (mut ids, mut epochs, mut statuses, mut outputs, mut errors, mut pauses) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut stays, mut due, mut keys, mut states, mut progress, mut keeps) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut steps = BatchSteps::default();
    for (commit, columns, keep) in batch {
        ids.push(commit.run_id);
        epochs.push(epoch_param(commit.epoch));
        statuses.push(commit.status.as_str());
        outputs.push(opt_json(commit.output.as_ref()));
        errors.push(commit.error.as_deref());
        pauses.push(opt_json(commit.pause.as_ref()));
        stays.push(!commit.status.is_at_rest());
        due.push(if commit.status == RunStatus::Queued { commit.available_at_ms } else { None });
        keys.push(commit.step_key.as_deref());
        states.push(commit.snapshot.state.get());
        progress.push(commit.snapshot.progress.get());
        keeps.push(keep.map(|k| i64::try_from(k).unwrap_or(i64::MAX)));
        steps.add(commit.run_id, columns);
    }
    let params: [&(dyn ToSql + Sync); 24] = [
        &ids,
        &epochs,
        &statuses,
        &outputs,
        &errors,
        &pauses,
        &stays,
        &due,
        &keys,
        &states,
        &progress,
        &keeps,
        &steps.run,
        &steps.key,
        &steps.method,
        &steps.status,
        &steps.input,
        &steps.output,
        &steps.error,
        &steps.attempt,
        &steps.started_at,
        &steps.finished_at,
        &steps.usage,
        &steps.position,
    ];
    client.query(&stmt, &params).await
}

/// The steps of a batch's commits, one element per step, each tagged with its run and its
/// position among its commit's steps.
#[derive(Default)]
struct BatchSteps<'a> {
    run: Vec<Uuid>,
    key: Vec<&'a str>,
    method: Vec<&'a str>,
    status: Vec<&'static str>,
    input: Vec<Option<&'a str>>,
    output: Vec<Option<&'a str>>,
    error: Vec<Option<&'a str>>,
    attempt: Vec<i64>,
    started_at: Vec<Option<i64>>,
    finished_at: Vec<Option<i64>>,
    usage: Vec<Option<&'a str>>,
    position: Vec<i64>,
}

impl<'a> BatchSteps<'a> {
    fn add(&mut self, run_id: Uuid, c: &'a StepColumns) {
        for i in 0..c.key.len() {
            self.run.push(run_id);
            self.key.push(&c.key[i]);
            self.method.push(&c.method[i]);
            self.status.push(c.status[i]);
            self.input.push(c.input[i].as_deref());
            self.output.push(c.output[i].as_deref());
            self.error.push(c.error[i].as_deref());
            self.attempt.push(c.attempt[i]);
            self.started_at.push(c.started_at[i]);
            self.finished_at.push(c.finished_at[i]);
            self.usage.push(c.usage[i].as_deref());
            // At most STEPS_PER_COMMIT (2^20) steps: `of` refused more.
            self.position.push(i as i64);
        }
    }
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
/// Every journal entry of the run, by step key and position.
pub(super) async fn journal(
    client: &impl GenericClient,
    pg: &Pg,
    run_id: Uuid,
) -> Result<Vec<JournalEntry>, StoreError> {
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let stmt = client.prepare_cached(SELECT_RUN_JOURNAL).await.map_err(fail)?;
    let rows = client.query(&stmt, &[&run_id]).await.map_err(fail)?;
    if rows.is_empty() {
        require_run(client, pg, run_id).await?;
    }
    rows.iter()
        .map(|row| {
            let step_key: String = col(row, 0, run_id, "journal entry")?;
            let seq: i64 = col(row, 1, run_id, "journal entry")?;
            let what = format!("journal entry {step_key}:{seq}");
            let output: String = col(row, 5, run_id, &what)?;
            Ok(JournalEntry {
                run_id,
                seq: decode_u32(run_id, &what, seq)?,
                kind: col(row, 2, run_id, &what)?,
                name: col(row, 3, run_id, &what)?,
                request_hash: hash_from_sql(col(row, 4, run_id, &what)?),
                output: decode_json(run_id, &format!("{what} output"), &output)?,
                step_key,
            })
        })
        .collect()
}

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
    let lock = tx.prepare_cached(LOCK_RUN).await.map_err(fail)?;
    tx.execute(&lock, &[&run_id]).await.map_err(fail)?;
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
                usage: decode_usage(run_id, &what("token usage"), col(row, 9, run_id, &what("token usage"))?)?,
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
    decode_graph(run_id, digest, json)
}

/// Writes a person's edit of a run's state as a checkpoint of its own (`Store::edit_state`).
pub(super) async fn edit_state(client: &impl GenericClient, pg: &Pg, edit: &StateEdit) -> Result<u64, StoreError> {
    let run_id = edit.run_id;
    let fail = |e: tokio_postgres::Error| pg.map(&e, Some(run_id));
    let version =
        i64::try_from(edit.version).map_err(|_| StoreError::Moved { run_id, expected: edit.version, current: 0 })?;
    let stmt = client.prepare_cached(EDIT_STATE).await.map_err(fail)?;
    let params: [&(dyn ToSql + Sync); 5] = [&run_id, &version, &edit.state.get(), &edit.note.author, &edit.note.reason];
    if let Some(row) = client.query_opt(&stmt, &params).await.map_err(fail)? {
        let seq: i64 = col(&row, 0, run_id, "version")?;
        return decode_u64(run_id, "version", seq);
    }
    // Refused: say why, as the other stores do.
    let run = load_run(client, pg, run_id).await?;
    crate::store::check_editable(&run, edit, crate::store::now_ms())?;
    Err(StoreError::Locked {
        run_id,
        owner: run.lease_owner.unwrap_or_default(),
        expires_at_ms: run.lease_expires_at_ms.unwrap_or_default(),
    })
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
                edit: edit_note(
                    col(row, 4, run_id, &format!("checkpoint {seq} editor"))?,
                    col(row, 5, run_id, &format!("checkpoint {seq} edit reason"))?,
                ),
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
