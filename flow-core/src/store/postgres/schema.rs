//! The schema and its versioned migrations.
//!
//! Each applied migration is a row of `flow_schema_migrations`; the schema's version is the
//! highest. Migration `i` (counting from 1) takes a schema from version `i - 1` to `i`. All
//! pending migrations run in one transaction that first takes a transaction-scoped advisory
//! lock keyed by the schema's name, so two processes starting at once apply them once, one
//! after the other, and a crash never leaves a half-migrated schema (PostgreSQL's DDL is
//! transactional). A schema whose version is newer than [`SCHEMA_VERSION`] belongs to a newer
//! build: it is refused and left untouched.

use super::error::Pg;
use crate::store::StoreError;

/// Version 1: runs, steps, checkpoint history and the effect journal (research §9.2, adapted
/// as in the SQLite store: the lease lives on the run, which is the unit one executor drives).
///
/// JSON is stored as `text`, byte for byte as the executor encoded it (`jsonb` would reorder
/// keys and rewrite numbers, and a snapshot must read back exactly as written), and decoded on
/// read, so a damaged value is reported as [`StoreError::Corrupt`] naming the run. Times are
/// milliseconds since the Unix epoch on the database's clock, so every worker on every machine
/// judges a lease by the same clock. `version` on the run is the number of its newest
/// checkpoint, which holds its current snapshot.
const V1: &str = r#"
CREATE TABLE flow_runs (
    run_id           uuid    NOT NULL PRIMARY KEY,
    flow             text    NOT NULL,
    parent_run_id    uuid,
    status           text    NOT NULL,
    version          bigint  NOT NULL,
    output           text,
    error            text,
    pause            text,
    lease_owner      text,
    lease_expires_at bigint,
    epoch            bigint  NOT NULL,
    created_at       bigint  NOT NULL,
    updated_at       bigint  NOT NULL
);
CREATE INDEX flow_runs_by_created ON flow_runs (created_at DESC, run_id DESC);
CREATE INDEX flow_runs_by_status ON flow_runs (status, created_at DESC, run_id DESC);
CREATE INDEX flow_runs_by_flow ON flow_runs (flow, created_at DESC, run_id DESC);

-- `ord` keeps creation order (step keys do not sort by it): the checkpoint number of the commit
-- that created the step, times 2^20, plus its position in that commit. Set on insert only.
CREATE TABLE flow_steps (
    run_id     uuid    NOT NULL REFERENCES flow_runs (run_id) ON DELETE CASCADE,
    step_key   text    NOT NULL,
    ord        bigint  NOT NULL,
    method     text    NOT NULL,
    status     text    NOT NULL,
    input      text,
    output     text,
    error      text,
    attempt    bigint  NOT NULL,
    created_at bigint  NOT NULL,
    updated_at bigint  NOT NULL,
    PRIMARY KEY (run_id, step_key)
);

-- Checkpoint `seq` N holds the snapshot of run version N; the newest is the run's current one.
CREATE TABLE flow_checkpoints (
    run_id     uuid    NOT NULL REFERENCES flow_runs (run_id) ON DELETE CASCADE,
    seq        bigint  NOT NULL,
    step_key   text,
    status     text    NOT NULL,
    state      text    NOT NULL,
    progress   text    NOT NULL,
    created_at bigint  NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- Keyed by run, not by step row: an effect may be recorded before its step's row is committed.
-- `epoch` is the lease epoch the entry was recorded under.
CREATE TABLE step_journal (
    run_id       uuid    NOT NULL REFERENCES flow_runs (run_id) ON DELETE CASCADE,
    step_key     text    NOT NULL,
    seq          bigint  NOT NULL,
    kind         text    NOT NULL,
    name         text    NOT NULL,
    request_hash bigint  NOT NULL,
    output       text    NOT NULL,
    epoch        bigint  NOT NULL,
    created_at   bigint  NOT NULL,
    PRIMARY KEY (run_id, step_key, seq)
);
"#;

/// Version 2: queued runs (issue 17). A run waits in a named queue, with an optional
/// concurrency key, until `available_at` (ms on the database's clock, like every time here;
/// NULL: at once); `answer` holds a person's answer (`{"step_key": ..., "value": ...}` as JSON
/// text) until the step that asked takes it. Existing runs go to the default queue.
///
/// `flow_runs_runnable` serves `claim_next`'s candidate scan: only queued and running rows, by
/// queue and due time. `flow_runs_leased` serves the count of live leases per queue and key
/// that the queue's limits are checked against.
const V2: &str = r#"
ALTER TABLE flow_runs ADD COLUMN queue text NOT NULL DEFAULT 'default';
ALTER TABLE flow_runs ADD COLUMN concurrency_key text;
ALTER TABLE flow_runs ADD COLUMN available_at bigint;
ALTER TABLE flow_runs ADD COLUMN answer text;
CREATE INDEX flow_runs_runnable ON flow_runs (queue, (COALESCE(available_at, updated_at)), created_at)
    WHERE status IN ('queued', 'running');
CREATE INDEX flow_runs_leased ON flow_runs (queue, concurrency_key, lease_expires_at)
    WHERE lease_owner IS NOT NULL;
"#;

/// Version 3: cancelling runs and paging listings (issue 18). `cancel_requested` holds the
/// reason given with `Store::request_cancel` (NULL: none); `flow_runs_by_flow_status` serves a
/// listing filtered by flow and status together, page after page, newest first.
const V3: &str = r#"
ALTER TABLE flow_runs ADD COLUMN cancel_requested text;
CREATE INDEX flow_runs_by_flow_status ON flow_runs (flow, status, created_at DESC, run_id DESC);
"#;

/// Version 4: the stream log of runs kept with `Runner::keep_stream` (issue 21): one row per
/// item, numbered per run; deleted with its run.
const V4: &str = r#"
CREATE TABLE flow_stream (
    run_id uuid   NOT NULL REFERENCES flow_runs (run_id) ON DELETE CASCADE,
    seq    bigint NOT NULL,
    at_ms  bigint NOT NULL,
    item   text   NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"#;

/// Version 5 (issue 18): what a program without the flow's code needs to show a run. Each run
/// refers to its flow's graph (`graph_digest`, NULL for runs created before), kept once per
/// flow version in `flow_graphs` (not deleted with a run: other runs share it); each step
/// records its latest attempt's start and end (ms) and the tokens its LLM calls used
/// (`TokenUsage` as JSON text), NULL for older steps.
const V5: &str = r#"
CREATE TABLE flow_graphs (
    flow       text    NOT NULL,
    digest     text    NOT NULL,
    graph      text    NOT NULL,
    created_at bigint  NOT NULL,
    PRIMARY KEY (flow, digest)
);
ALTER TABLE flow_runs ADD COLUMN graph_digest text;
ALTER TABLE flow_steps ADD COLUMN started_at bigint;
ALTER TABLE flow_steps ADD COLUMN finished_at bigint;
ALTER TABLE flow_steps ADD COLUMN token_usage text;
"#;

/// Version 6 (issue 21): the W3C trace context (`traceparent`) of a run's first exported
/// execution, which later executions continue (NULL: none kept).
const V6: &str = "ALTER TABLE flow_runs ADD COLUMN trace_context text;";

/// Version 7 (issue 19): who edited a run's state and why (`Store::edit_state`), on the
/// checkpoint the edit wrote; NULL on the checkpoints runs write themselves.
const V7: &str = r#"
ALTER TABLE flow_checkpoints ADD COLUMN edited_by text;
ALTER TABLE flow_checkpoints ADD COLUMN edit_reason text;
"#;

/// Version 8 (issue 23): memory across runs (`flow_core::memory`), not tied to a run.
/// `embedding` holds little-endian `f32`s and recalls score in the client, so this needs no
/// extension; `scope` sorts in the "C" collation so the scopes below one are a range.
const V8: &str = r#"
CREATE TABLE flow_memory (
    id         text             NOT NULL PRIMARY KEY,
    scope      text COLLATE "C" NOT NULL,
    content    text             NOT NULL,
    metadata   text             NOT NULL,
    importance real             NOT NULL,
    created_at bigint           NOT NULL,
    expires_at bigint,
    model      text             NOT NULL,
    embedding  bytea            NOT NULL
);
CREATE INDEX flow_memory_by_scope ON flow_memory (scope);
CREATE INDEX flow_memory_expiring ON flow_memory (expires_at) WHERE expires_at IS NOT NULL;
"#;

/// Version 9 (issue 17, W6): less work per durable step on the server, same guarantees.
///
/// A step's commit updates its run row; PostgreSQL can do that in place (a HOT update, no new
/// entry in any of the table's seven indexes) only when no indexed column changes and the page
/// has room. `updated_at` changes on every commit and was in `flow_runs_runnable`'s key, so
/// every commit wrote seven index entries. The index now orders runnable runs by
/// `COALESCE(available_at, lease_expires_at, created_at)`: a queued run by its due time, a
/// running run whose worker died by the moment its lease lapsed (the moment it became due),
/// and any other by its creation; none of these moves while a worker commits step after step.
/// `fillfactor = 70` leaves each page room for the new versions of its rows.
///
/// Steps and checkpoints lose their foreign keys: each key check cost every commit a lookup and
/// a share lock on the run row it had just updated. Neither can dangle: both are only written
/// by the statement that inserts or (fenced by the epoch) updates their run row, selecting from
/// that row, and `delete_run` locks the run row before it deletes them with it.
const V9: &str = r#"
DROP INDEX flow_runs_runnable;
CREATE INDEX flow_runs_runnable ON flow_runs (queue, (COALESCE(available_at, lease_expires_at, created_at)), created_at)
    WHERE status IN ('queued', 'running');
ALTER TABLE flow_runs SET (fillfactor = 70);
ALTER TABLE flow_steps DROP CONSTRAINT flow_steps_run_id_fkey;
ALTER TABLE flow_checkpoints DROP CONSTRAINT flow_checkpoints_run_id_fkey;
"#;

/// Version 10 (issue 23, point 2): full-text search and sketches for memory recall, without
/// any extension. `words` is the content's `tsvector` in the `simple` configuration (words
/// lower-cased, no stemming, no stop words: `crate::memory`'s lexical score splits words the
/// same way), generated by PostgreSQL so it never disagrees with the content, with a GIN index;
/// `sketch` is the embedding's 1,024-bit sketch, filled in Rust for the rows stored before
/// ([`migrate`]). `flow_memory_by_scope` now carries what a recall reads of every row of a
/// scope, so that read can be an index-only scan.
const V10: &str = r#"
ALTER TABLE flow_memory ADD COLUMN sketch bytea;
ALTER TABLE flow_memory ADD COLUMN words tsvector GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED;
CREATE INDEX flow_memory_words ON flow_memory USING gin (words);
DROP INDEX flow_memory_by_scope;
CREATE INDEX flow_memory_by_scope ON flow_memory (scope) INCLUDE (created_at, importance, expires_at, sketch);
"#;

/// Every migration, in order: `MIGRATIONS[i]` takes a schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V10];

/// The version whose migration needs Rust after its SQL: [`V10`]'s sketches.
const SKETCHES: i64 = 10;

/// The schema version this build reads and writes.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS flow_schema_migrations (
    version    bigint      NOT NULL PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

// The first key names this store's lock among the database's advisory locks; the second keeps
// stores in different schemas of one database from waiting on each other.
pub(super) const LOCK: &str = "SELECT pg_advisory_xact_lock(1718579063, hashtext(current_schema()))";

const CURRENT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM flow_schema_migrations";

const RECORD_VERSION: &str = "INSERT INTO flow_schema_migrations (version) VALUES ($1)";

/// Brings the schema the connection's `search_path` points at to [`SCHEMA_VERSION`], or refuses
/// a newer one.
pub(super) async fn migrate(client: &mut deadpool_postgres::Object, pg: &Pg) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(|e| pg.open(&e))?;
    tx.execute(LOCK, &[]).await.map_err(|e| pg.open(&e))?;
    tx.batch_execute(VERSION_TABLE).await.map_err(|e| pg.open(&e))?;
    let from: i64 = tx.query_one(CURRENT_VERSION, &[]).await.map_err(|e| pg.open(&e))?.get(0);
    if from > SCHEMA_VERSION {
        // Dropping the transaction rolls it back: nothing was changed.
        return Err(StoreError::SchemaTooNew { found: from, supported: SCHEMA_VERSION });
    }
    let from_index = usize::try_from(from).unwrap_or(0);
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(from_index) {
        let version = index as i64 + 1;
        tx.batch_execute(sql).await.map_err(|e| pg.open(&e))?;
        if version == SKETCHES {
            let n = super::memory::fill_sketches(&tx).await.map_err(|e| pg.open(&e))?;
            tracing::info!(database = %pg.shown, records = n, "sketched the memory records");
        }
        tx.execute(RECORD_VERSION, &[&version]).await.map_err(|e| pg.open(&e))?;
        tracing::info!(database = %pg.shown, version, "applied PostgreSQL store schema migration");
    }
    tx.commit().await.map_err(|e| pg.open(&e))
}
