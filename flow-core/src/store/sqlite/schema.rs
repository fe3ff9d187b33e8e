//! The schema, its migrations, and the settings every connection is opened with.
//!
//! The schema version lives in `PRAGMA user_version`. Migration `i` (counting from 1) takes a
//! file from version `i - 1` to `i`; all pending migrations run in one `BEGIN IMMEDIATE`
//! transaction, so a crash or a concurrent opener never leaves a half-migrated file. A file
//! whose version is newer than [`SCHEMA_VERSION`] belongs to a newer build: it is refused before
//! anything (not even the journal mode) is changed.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::error::map;
use super::{SqliteOptions, Synchronous};
use crate::store::StoreError;

/// Version 1: runs, steps, checkpoint history and the effect journal (research §9.2, adapted:
/// the lease lives on the run, which is the unit one executor drives).
///
/// JSON is stored as TEXT and decoded on read, so a damaged value is reported as
/// [`StoreError::Corrupt`] naming the run instead of failing the write that would repair it.
/// Statuses carry no CHECK constraint for the same reason, and because widening a CHECK in
/// SQLite means rebuilding the table.
const V1: &str = r#"
CREATE TABLE flow_runs (
    run_id           TEXT    NOT NULL PRIMARY KEY,
    flow             TEXT    NOT NULL,
    parent_run_id    TEXT,
    status           TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    progress         TEXT    NOT NULL,
    version          INTEGER NOT NULL,
    output           TEXT,
    error            TEXT,
    pause            TEXT,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    epoch            INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX flow_runs_by_created ON flow_runs (created_at DESC, run_id DESC);
CREATE INDEX flow_runs_by_status ON flow_runs (status, created_at DESC, run_id DESC);
CREATE INDEX flow_runs_by_flow ON flow_runs (flow, created_at DESC, run_id DESC);

-- `ord` keeps creation order (step keys do not sort by it, and VACUUM may renumber rowids): the
-- version of the run's commit that created the step, times 2^20, plus its position in that
-- commit. It is set on insert and never updated.
CREATE TABLE flow_steps (
    run_id     TEXT    NOT NULL REFERENCES flow_runs (run_id) ON DELETE CASCADE,
    step_key   TEXT    NOT NULL,
    ord        INTEGER NOT NULL,
    method     TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    input      TEXT,
    output     TEXT,
    error      TEXT,
    attempt    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, step_key)
) STRICT;

-- Checkpoint `seq` N holds the snapshot of run version N: both start at 1 and advance together,
-- in the same transaction.
CREATE TABLE flow_checkpoints (
    run_id     TEXT    NOT NULL REFERENCES flow_runs (run_id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    step_key   TEXT,
    status     TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    progress   TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq)
) STRICT;

-- Keyed by run, not by step row: an effect may be recorded before its step's row is committed.
CREATE TABLE step_journal (
    run_id       TEXT    NOT NULL REFERENCES flow_runs (run_id) ON DELETE CASCADE,
    step_key     TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    request_hash INTEGER NOT NULL,
    output       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (run_id, step_key, seq)
) STRICT;
"#;

/// The step table as version 2 has it, under a given name (a migration builds it beside the
/// old one, then renames it).
///
/// It is `WITHOUT ROWID`: rows are found by their primary key only, so a row lives in the key's
/// own b-tree and an insert writes one b-tree instead of a table and its key index. A commit
/// writes a page less for it, and a durable step costs a commit. The checkpoint table keeps its
/// rowid: a snapshot is often more than the quarter page a `WITHOUT ROWID` row holds before it
/// spills into an overflow page of its own, which would cost a page (and a file size change)
/// per commit instead of saving one.
macro_rules! steps_table {
    ($name:literal) => {
        steps_table!($name, "")
    };
    // `$more`: columns later migrations added, as they add them (after the others).
    ($name:literal, $($more:tt)*) => {
        concat!(
            "-- `ord` keeps creation order (step keys do not sort by it): the checkpoint number of the \n",
            "-- commit that created the step, times 2^20, plus its position in that commit. It is set on \n",
            "-- insert and never updated.\n",
            "CREATE TABLE ",
            $name,
            " (
    run_id     TEXT    NOT NULL REFERENCES flow_runs (run_id) ON DELETE CASCADE,
    step_key   TEXT    NOT NULL,
    ord        INTEGER NOT NULL,
    method     TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    input      TEXT,
    output     TEXT,
    error      TEXT,
    attempt    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
",
            $($more)*,
            "    PRIMARY KEY (run_id, step_key)
) STRICT, WITHOUT ROWID;
"
        )
    };
}

/// Version 2: one copy of each snapshot, and fewer pages per commit. The run's snapshot is its
/// newest checkpoint row rather than a second copy in the run row, so an ordinary checkpoint
/// writes the history row and the step rows and leaves the run row (status, lease) alone. The
/// step table becomes `WITHOUT ROWID` ([`steps_table`]).
///
/// A version 1 file always holds the history row of the run's version (retention keeps at
/// least one); the run row's copy is written over it all the same, as it is the one the
/// version 1 code read.
const V2: &str = concat!(
    "INSERT INTO flow_checkpoints (run_id, seq, step_key, status, state, progress, created_at)
    SELECT run_id, version, NULL, status, state, progress, updated_at FROM flow_runs WHERE true
    ON CONFLICT (run_id, seq) DO UPDATE SET state = excluded.state, progress = excluded.progress;
",
    steps_table!("flow_steps_v2"),
    "INSERT INTO flow_steps_v2 (run_id, step_key, ord, method, status, input, output, error, attempt, created_at,
    updated_at)
    SELECT run_id, step_key, ord, method, status, input, output, error, attempt, created_at, updated_at
    FROM flow_steps;
DROP TABLE flow_steps;
ALTER TABLE flow_steps_v2 RENAME TO flow_steps;
ALTER TABLE flow_runs DROP COLUMN state;
ALTER TABLE flow_runs DROP COLUMN progress;
ALTER TABLE flow_runs DROP COLUMN version;
"
);

/// The checkpoint table as version 3 has it, under a given name.
///
/// A row's key is its run's number times 2^32 plus its `seq` (`ck` aliases the rowid), so one
/// run's history is one contiguous key range and a checkpoint is a single b-tree insert: a
/// `(run_id, seq)` primary key made every commit write the row's page and a page of the key's
/// index besides. `run_id` and `seq` are kept as columns for whoever reads the file by hand.
macro_rules! checkpoints_table {
    ($name:literal) => {
        concat!(
            "-- `ck` is the run's `run_no` * 2^32 + `seq`. Checkpoint `seq` N holds the snapshot of \n",
            "-- run version N; the run's newest checkpoint is its current snapshot.\n",
            "CREATE TABLE ",
            $name,
            " (
    ck         INTEGER NOT NULL PRIMARY KEY,
    run_id     TEXT    NOT NULL REFERENCES flow_runs (run_id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    step_key   TEXT,
    status     TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    progress   TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
"
        )
    };
}

/// Version 3: a checkpoint is one b-tree insert ([`checkpoints_table`]). Every run gets a
/// number, in creation order, that keys its checkpoints.
const V3: &str = concat!(
    "ALTER TABLE flow_runs ADD COLUMN run_no INTEGER NOT NULL DEFAULT 0;
UPDATE flow_runs SET run_no = numbered.no
    FROM (SELECT run_id AS id, row_number() OVER (ORDER BY created_at, run_id) AS no FROM flow_runs) AS numbered
    WHERE flow_runs.run_id = numbered.id;
CREATE UNIQUE INDEX flow_runs_by_no ON flow_runs (run_no);
",
    checkpoints_table!("flow_checkpoints_v3"),
    "INSERT INTO flow_checkpoints_v3 (ck, run_id, seq, step_key, status, state, progress, created_at)
    SELECT (r.run_no << 32) + c.seq, c.run_id, c.seq, c.step_key, c.status, c.state, c.progress, c.created_at
    FROM flow_checkpoints c JOIN flow_runs r ON r.run_id = c.run_id;
DROP TABLE flow_checkpoints;
ALTER TABLE flow_checkpoints_v3 RENAME TO flow_checkpoints;
"
);

/// Version 4: queued runs (issue 17). A run waits in a named queue, with an optional
/// concurrency key, until `available_at` (ms; NULL: at once); `answer` holds a person's answer
/// (`{"step_key": ..., "value": ...}` as JSON text) until the step that asked takes it. Runs of
/// older versions go to the default queue.
///
/// `flow_runs_runnable` serves `claim_next`: only queued and running rows, by queue and due
/// time. `flow_runs_leased` serves the count of live leases per queue and key that its limits
/// are checked against.
const V4: &str = "ALTER TABLE flow_runs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE flow_runs ADD COLUMN concurrency_key TEXT;
ALTER TABLE flow_runs ADD COLUMN available_at INTEGER;
ALTER TABLE flow_runs ADD COLUMN answer TEXT;
CREATE INDEX flow_runs_runnable ON flow_runs (queue, COALESCE(available_at, updated_at), created_at)
    WHERE status IN ('queued', 'running');
CREATE INDEX flow_runs_leased ON flow_runs (queue, concurrency_key, lease_expires_at)
    WHERE lease_owner IS NOT NULL;
";

/// Version 5: cancelling runs and paging listings (issue 18). `cancel_requested` holds the
/// reason given with `Store::request_cancel` (NULL: none); `flow_runs_by_flow_status` serves a
/// listing filtered by flow and status together, page after page, newest first.
const V5: &str = "ALTER TABLE flow_runs ADD COLUMN cancel_requested TEXT;
CREATE INDEX flow_runs_by_flow_status ON flow_runs (flow, status, created_at DESC, run_id DESC);
";

/// The stream log table as version 6 has it (a macro, so [`CURRENT`] can include it).
macro_rules! stream_table {
    () => {
        "CREATE TABLE flow_stream (
    run_id TEXT    NOT NULL REFERENCES flow_runs (run_id) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    at_ms  INTEGER NOT NULL,
    item   TEXT    NOT NULL,
    PRIMARY KEY (run_id, seq)
) STRICT;
"
    };
}

/// The graph table (version 7): one row per flow version, shared by its runs.
macro_rules! graphs_table {
    () => {
        "-- A flow's graph as JSON (`GraphDoc`), once per version: runs refer to it by their flow and
-- `graph_digest`. Not deleted with a run, as other runs share it.
CREATE TABLE flow_graphs (
    flow       TEXT    NOT NULL,
    digest     TEXT    NOT NULL,
    graph      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (flow, digest)
) STRICT;
"
    };
}

/// Version 6: the stream log of runs kept with `Runner::keep_stream` (issue 21): one row per
/// item, numbered per run; deleted with its run.
const V6: &str = stream_table!();

/// The step columns version 7 adds: when the latest attempt started and ended (ms), and the
/// tokens its LLM calls used (`TokenUsage` as JSON).
macro_rules! step_record_columns {
    () => {
        "    started_at  INTEGER,
    finished_at INTEGER,
    token_usage TEXT,
"
    };
}

/// Version 7 (issue 18): what a program without the flow's code needs to show a run. Each run
/// refers to its flow's graph (`graph_digest`, NULL for runs created before), kept once per
/// flow version in `flow_graphs`; each step records its latest attempt's timings and token
/// usage (NULL for older steps).
const V7: &str = concat!(
    graphs_table!(),
    "ALTER TABLE flow_runs ADD COLUMN graph_digest TEXT;
ALTER TABLE flow_steps ADD COLUMN started_at INTEGER;
ALTER TABLE flow_steps ADD COLUMN finished_at INTEGER;
ALTER TABLE flow_steps ADD COLUMN token_usage TEXT;
"
);

/// Version 8 (issue 21): the W3C trace context (`traceparent`) of a run's first exported
/// execution, which later executions continue (NULL: none kept).
const V8: &str = "ALTER TABLE flow_runs ADD COLUMN trace_context TEXT;\n";

/// Version 9 (issue 19): who edited a run's state and why (`Store::edit_state`), on the
/// checkpoint the edit wrote; NULL on the checkpoints runs write themselves.
const V9: &str = "ALTER TABLE flow_checkpoints ADD COLUMN edited_by TEXT;
ALTER TABLE flow_checkpoints ADD COLUMN edit_reason TEXT;
";

/// The memory table (version 10): what `Ctx::remember` stores, not tied to a run.
/// `embedding` holds little-endian `f32`s; `metadata` a JSON object as text.
macro_rules! memory_table {
    () => {
        "-- Memory records (`flow_core::memory`): kept across runs, erased by `forget` or expiry.
CREATE TABLE flow_memory (
    id         TEXT    NOT NULL PRIMARY KEY,
    scope      TEXT    NOT NULL,
    content    TEXT    NOT NULL,
    metadata   TEXT    NOT NULL,
    importance REAL    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    model      TEXT    NOT NULL,
    embedding  BLOB    NOT NULL
) STRICT;
CREATE INDEX flow_memory_by_scope ON flow_memory (scope);
CREATE INDEX flow_memory_expiring ON flow_memory (expires_at) WHERE expires_at IS NOT NULL;
"
    };
}

/// Version 10 (issue 23): memory across runs.
const V10: &str = memory_table!();

/// The memory table as version 11 has it, with its indexes, its full-text index and the
/// triggers that keep that index in step with every insert and delete (a remember, a forget,
/// an expiry purge alike).
///
/// `mem_no` aliases the rowid, so the full-text index (FTS5 with external content, which refers
/// to rows by rowid) keeps pointing at the right rows when `VACUUM` renumbers the rowids of
/// tables that have no such alias. `sketch` holds the embedding's 1,024-bit sketch
/// (`crate::memory`'s large-scope recall); `flow_memory_by_scope` covers what a recall reads of
/// every row of a scope (scope, age, importance, expiry, sketch), so that read never touches
/// the table's pages, where each row carries its whole vector. Words are split as
/// `crate::memory`'s lexical score splits them: runs of letters and digits, lower-cased, accents
/// kept.
macro_rules! memory_v11 {
    () => {
        "-- Memory records (`flow_core::memory`): kept across runs, erased by `forget` or expiry.
CREATE TABLE flow_memory (
    mem_no     INTEGER NOT NULL PRIMARY KEY,
    id         TEXT    NOT NULL,
    scope      TEXT    NOT NULL,
    content    TEXT    NOT NULL,
    metadata   TEXT    NOT NULL,
    importance REAL    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    model      TEXT    NOT NULL,
    embedding  BLOB    NOT NULL,
    sketch     BLOB
) STRICT;
CREATE UNIQUE INDEX flow_memory_by_id ON flow_memory (id);
CREATE INDEX flow_memory_by_scope ON flow_memory (scope, created_at, importance, expires_at, sketch);
CREATE INDEX flow_memory_expiring ON flow_memory (expires_at) WHERE expires_at IS NOT NULL;
CREATE VIRTUAL TABLE flow_memory_fts USING fts5 (
    content, content = 'flow_memory', content_rowid = 'mem_no', tokenize = 'unicode61 remove_diacritics 0'
);
CREATE TRIGGER flow_memory_fts_insert AFTER INSERT ON flow_memory BEGIN
    INSERT INTO flow_memory_fts (rowid, content) VALUES (new.mem_no, new.content);
END;
CREATE TRIGGER flow_memory_fts_delete AFTER DELETE ON flow_memory BEGIN
    INSERT INTO flow_memory_fts (flow_memory_fts, rowid, content) VALUES ('delete', old.mem_no, old.content);
END;
CREATE TRIGGER flow_memory_fts_update AFTER UPDATE OF content ON flow_memory BEGIN
    INSERT INTO flow_memory_fts (flow_memory_fts, rowid, content) VALUES ('delete', old.mem_no, old.content);
    INSERT INTO flow_memory_fts (rowid, content) VALUES (new.mem_no, new.content);
END;
"
    };
}

/// Version 11 (issue 23, point 2): full-text search and sketches for memory recall
/// ([`memory_v11`]). The records move to the new table oldest first (the insert trigger indexes
/// their content); their sketches are computed in Rust afterwards, in the same transaction
/// ([`migrate`]).
const V11: &str = concat!(
    "DROP INDEX flow_memory_by_scope;
DROP INDEX flow_memory_expiring;
ALTER TABLE flow_memory RENAME TO flow_memory_v10;
",
    memory_v11!(),
    "INSERT INTO flow_memory (id, scope, content, metadata, importance, created_at, expires_at, model, embedding)
    SELECT id, scope, content, metadata, importance, created_at, expires_at, model, embedding
    FROM flow_memory_v10 ORDER BY created_at, id;
DROP TABLE flow_memory_v10;
"
);

/// What a new file gets: the schema every migration together makes of an empty file, written
/// out, because running them one by one re-parses the schema at every `ALTER` and triples the
/// cost of creating a store. `a_new_file_gets_what_the_migrations_make` keeps the two equal.
const CURRENT: &str = concat!(
    "CREATE TABLE flow_runs (
    run_id           TEXT    NOT NULL PRIMARY KEY,
    flow             TEXT    NOT NULL,
    parent_run_id    TEXT,
    status           TEXT    NOT NULL,
    output           TEXT,
    error            TEXT,
    pause            TEXT,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    epoch            INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    run_no           INTEGER NOT NULL DEFAULT 0,
    queue            TEXT    NOT NULL DEFAULT 'default',
    concurrency_key  TEXT,
    available_at     INTEGER,
    answer           TEXT,
    cancel_requested TEXT,
    graph_digest     TEXT,
    trace_context    TEXT
) STRICT;
CREATE INDEX flow_runs_by_created ON flow_runs (created_at DESC, run_id DESC);
CREATE INDEX flow_runs_by_status ON flow_runs (status, created_at DESC, run_id DESC);
CREATE INDEX flow_runs_by_flow ON flow_runs (flow, created_at DESC, run_id DESC);
CREATE UNIQUE INDEX flow_runs_by_no ON flow_runs (run_no);
CREATE INDEX flow_runs_runnable ON flow_runs (queue, COALESCE(available_at, updated_at), created_at)
    WHERE status IN ('queued', 'running');
CREATE INDEX flow_runs_leased ON flow_runs (queue, concurrency_key, lease_expires_at)
    WHERE lease_owner IS NOT NULL;
CREATE INDEX flow_runs_by_flow_status ON flow_runs (flow, status, created_at DESC, run_id DESC);
",
    steps_table!("flow_steps", step_record_columns!()),
    "-- `ck` is the run's `run_no` * 2^32 + `seq`. Checkpoint `seq` N holds the snapshot of
-- run version N; the run's newest checkpoint is its current snapshot. `edited_by` and
-- `edit_reason` are set on a checkpoint a person's state edit wrote.
CREATE TABLE flow_checkpoints (
    ck          INTEGER NOT NULL PRIMARY KEY,
    run_id      TEXT    NOT NULL REFERENCES flow_runs (run_id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    step_key    TEXT,
    status      TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    progress    TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    edited_by   TEXT,
    edit_reason TEXT
) STRICT;
",
    graphs_table!(),
    "
-- Keyed by run, not by step row: an effect may be recorded before its step's row is committed.
CREATE TABLE step_journal (
    run_id       TEXT    NOT NULL REFERENCES flow_runs (run_id) ON DELETE CASCADE,
    step_key     TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    request_hash INTEGER NOT NULL,
    output       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (run_id, step_key, seq)
) STRICT;
",
    stream_table!(),
    memory_v11!(),
);

/// Every migration, oldest first. Append only: a released migration never changes.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11];

/// The version whose migration needs Rust after its SQL: [`V11`]'s sketches.
const SKETCHES: usize = 11;

/// The schema version this build writes.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Opens the connection that writes: checks the schema version before changing anything, then
/// applies the options and pending migrations.
pub(super) fn open_writer(options: &SqliteOptions) -> Result<Connection, StoreError> {
    let path = options.path.as_path();
    check_parent(path)?;
    if path.is_dir() {
        // SQLite would say only "unable to open database file".
        return Err(StoreError::Open {
            path: path.display().to_string(),
            message: format!(
                "this is a directory, not a database file; give the path of a file inside it, such as {}",
                path.join("runs.db").display()
            ),
        });
    }
    open_writer_in(options, path).map_err(|e| match e {
        StoreError::Open { .. } | StoreError::ReadOnly(_) if !options.read_only && directory_is_read_only(path) => {
            StoreError::ReadOnly(format!(
                "the directory {} is not writable by this process, and SQLite must create `-wal` and `-shm` \
                 files beside {}; fix the directory's permissions or move the database",
                parent_dir(path).display(),
                path.display()
            ))
        }
        StoreError::Open { .. } | StoreError::ReadOnly(_) if options.read_only && directory_is_read_only(path) => {
            StoreError::ReadOnly(format!(
                "{} was opened read-only, but its directory {} is not writable by this process, and SQLite \
                 must create the `-shm` file beside a WAL database to read it, even read-only (it exists only \
                 while some process has the store open); read it while a process that may write there has it \
                 open, give this process write access to the directory, or copy the file to a writable \
                 directory and open the copy",
                path.display(),
                parent_dir(path).display(),
            ))
        }
        other => other,
    })
}

fn open_writer_in(options: &SqliteOptions, path: &Path) -> Result<Connection, StoreError> {
    let flags = if options.read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(|e| map(&e, path))?;
    conn.busy_timeout(options.busy_timeout).map_err(|e| map(&e, path))?;

    // The first read of the file: a file that is not a database fails here, before any write.
    let found = user_version(&conn, path)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew { found, supported: SCHEMA_VERSION });
    }
    if !options.read_only && conn.is_readonly(rusqlite::MAIN_DB).map_err(|e| map(&e, path))? {
        // SQLite silently falls back to read-only when the file is write-protected; failing now
        // beats failing at the first checkpoint, after the run has done (and paid for) work.
        return Err(StoreError::ReadOnly(format!(
            "{} is not writable by this process; fix its permissions, or open it with \
             `SqliteOptions::read_only(true)` to inspect it",
            path.display()
        )));
    }

    if !options.read_only {
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0)).map_err(|e| map(&e, path))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "SQLite refused WAL mode; readers will block the writer");
        }
    }
    apply_settings(&conn, options.synchronous, options.busy_timeout, path)?;
    if let Some(bytes) = options.max_size {
        let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0)).map_err(|e| map(&e, path))?;
        let pages = (i64::try_from(bytes).unwrap_or(i64::MAX) / page_size.max(1)).max(1);
        conn.pragma_update(None, "max_page_count", pages).map_err(|e| map(&e, path))?;
    }

    if found < SCHEMA_VERSION {
        if options.read_only {
            return Err(StoreError::ReadOnly(format!(
                "{} has schema version {found} and needs migrating to {SCHEMA_VERSION}, which a read-only \
                 store cannot do; open it once writable",
                path.display()
            )));
        }
        migrate(&conn, path)?;
    }
    prepare_cache(&conn, path)?;
    Ok(conn)
}

/// Opens a connection for the read pool. Read-only at the SQLite level, so no read path can
/// write by mistake.
pub(super) fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| map(&e, path))?;
    conn.busy_timeout(busy_timeout).map_err(|e| map(&e, path))?;
    prepare_cache(&conn, path)?;
    Ok(conn)
}

/// Enough for every distinct statement the store prepares.
const STATEMENT_CACHE: usize = 64;

/// Makes cached statements stay prepared. Without the query planner stability guarantee,
/// SQLite re-plans a statement whenever a parameter its planner looked at is bound to a new
/// value, which for the store's statements is every call: a parse and plan per statement
/// per commit, for plans that never change (every query here is an index lookup).
fn prepare_cache(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(|e| map(&e, path))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

fn apply_settings(
    conn: &Connection,
    synchronous: Synchronous,
    busy_timeout: Duration,
    path: &Path,
) -> Result<(), StoreError> {
    conn.pragma_update(None, "synchronous", synchronous.pragma()).map_err(|e| map(&e, path))?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(|e| map(&e, path))?;
    conn.busy_timeout(busy_timeout).map_err(|e| map(&e, path))
}

fn user_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| map(&e, path))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Whether this process may create files next to `path`. Only asked after SQLite failed to
/// open or read the file, because SQLite reports a directory it cannot create its `-wal` and
/// `-shm` files in as a bare "unable to open database file"; std has no `access(2)`, so this
/// creates (and removes) a probe file.
fn directory_is_read_only(path: &Path) -> bool {
    let probe = parent_dir(path).join(format!(".flows-write-probe-{}", uuid::Uuid::new_v4()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            if let Err(e) = std::fs::remove_file(&probe) {
                tracing::warn!(probe = %probe.display(), error = %e, "cannot remove the write probe file");
            }
            false
        }
        Err(e) => matches!(e.kind(), std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem),
    }
}

/// A missing directory gives SQLite's bare "unable to open database file"; say which.
fn check_parent(path: &Path) -> Result<(), StoreError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => Err(StoreError::Open {
            path: path.display().to_string(),
            message: format!("the directory {} does not exist; create it first", dir.display()),
        }),
        _ => Ok(()),
    }
}

/// Applies the pending migrations.
///
/// Hand-written rather than `rusqlite_migration` (issue 22, point 5), which also keeps the
/// version in `user_version` and runs the pending migrations in one transaction, because that
/// crate would need more wrapping than this function is:
/// - its newest release (2.6) builds against rusqlite 0.40, and this workspace uses 0.41; two
///   rusqlite versions cannot link one bundled SQLite, so it cannot be used at all today;
/// - it opens a deferred transaction and reads the version before taking the write lock, so
///   two processes opening a file at once can both start the same migration; here the version
///   is re-read under `BEGIN IMMEDIATE`;
/// - it runs every migration from version 0 on a new file; here a new file gets [`CURRENT`]
///   in one batch (a third of the cost of creating a store);
/// - its "too far ahead" error names neither version, and the check must come before the
///   journal mode is changed ([`open_writer_in`]), which its API does not separate.
fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| map(&e, path))?;
    let applied = (|| {
        // Re-read under the write lock: another process may have migrated since we looked.
        let from = user_version(conn, path)?;
        if from > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { found: from, supported: SCHEMA_VERSION });
        }
        if from == 0 {
            conn.execute_batch(CURRENT).map_err(|e| map(&e, path))?;
            tracing::info!(path = %path.display(), version = SCHEMA_VERSION, "created the store schema");
            return conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(|e| map(&e, path));
        }
        let from_index = usize::try_from(from).unwrap_or(0);
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(from_index) {
            conn.execute_batch(sql).map_err(|e| map(&e, path))?;
            if index + 1 == SKETCHES {
                let n = super::memory::fill_sketches(conn).map_err(|e| map(&e, path))?;
                tracing::info!(path = %path.display(), records = n, "sketched the memory records");
            }
            tracing::info!(path = %path.display(), version = index + 1, "applied store schema migration");
        }
        conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(|e| map(&e, path))
    })();
    match applied {
        Ok(()) => conn.execute_batch("COMMIT").map_err(|e| map(&e, path)),
        Err(e) => {
            // The migration's own error is the one to report; a failed rollback changes nothing
            // on disk (SQLite rolls back on close) so it is only logged.
            if let Err(rollback) = conn.execute_batch("ROLLBACK") {
                tracing::warn!(path = %path.display(), error = %rollback, "rollback of a failed migration failed");
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn pragma(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
        conn.pragma_query_value(None, name, |r| r.get(0))
    }

    /// A file written by the version 1 code: the run row held the current snapshot, and the
    /// history row of its version may be missing (deleted by hand, say).
    #[test]
    fn a_version_1_file_migrates_with_its_runs_intact() -> TestResult {
        use super::super::queries::{self, Db};
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("runs.db");
        let kept = uuid::Uuid::new_v4();
        let lost = uuid::Uuid::new_v4();
        {
            let conn = Connection::open(&path)?;
            conn.execute_batch(V1)?;
            conn.pragma_update(None, "user_version", 1)?;
            for (id, version) in [(kept, 3), (lost, 2)] {
                conn.execute(
                    "INSERT INTO flow_runs (run_id, flow, status, state, progress, version, epoch, created_at, \
                     updated_at) VALUES (?1, 'f', 'failed', ?2, '{\"p\":1}', ?3, 4, 10, 20)",
                    rusqlite::params![id.to_string(), format!("{{\"v\":{version}}}"), version],
                )?;
            }
            for (id, seq) in [(kept, 2), (kept, 3), (lost, 1)] {
                conn.execute(
                    "INSERT INTO flow_checkpoints (run_id, seq, step_key, status, state, progress, created_at) \
                     VALUES (?1, ?2, 'm#1', 'running', ?3, '{\"p\":1}', ?2)",
                    rusqlite::params![id.to_string(), seq, format!("{{\"v\":{seq}}}")],
                )?;
            }
        }
        let conn = open_writer(&SqliteOptions::new(&path))?;
        assert_eq!(pragma(&conn, "user_version")?, SCHEMA_VERSION);
        let db = Db { conn: &conn, path: &path };
        let run = queries::load_run(db, kept)?;
        assert_eq!((run.version, run.snapshot.state.get(), run.epoch), (3, r#"{"v":3}"#, 4));
        assert_eq!(run.status, crate::store::RunStatus::Failed);
        let seqs: Vec<u64> = queries::checkpoints(db, kept)?.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, [2, 3]);
        assert_eq!(
            queries::checkpoints(db, kept)?[1].step_key.as_deref(),
            Some("m#1"),
            "history rows kept as they were"
        );
        // The missing history row of the run's version was rebuilt from the run row.
        let run = queries::load_run(db, lost)?;
        assert_eq!((run.version, run.snapshot.state.get()), (2, r#"{"v":2}"#));
        assert_eq!(queries::load_checkpoint(db, lost, 1)?.state.get(), r#"{"v":1}"#);
        Ok(())
    }

    /// A file written by the version 2 code: runs get numbers in creation order, their
    /// histories move under them intact, and runs created afterwards number on from there.
    #[test]
    fn a_version_2_file_numbers_its_runs_and_keeps_their_history() -> TestResult {
        use super::super::queries::{self, Db};
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("runs.db");
        let (older, newer) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        {
            let conn = Connection::open(&path)?;
            conn.execute_batch(V1)?;
            conn.execute_batch(V2)?;
            conn.pragma_update(None, "user_version", 2)?;
            for (id, created) in [(newer, 20), (older, 10)] {
                conn.execute(
                    "INSERT INTO flow_runs (run_id, flow, status, epoch, created_at, updated_at) \
                     VALUES (?1, 'f', 'running', 1, ?2, ?2)",
                    rusqlite::params![id.to_string(), created],
                )?;
            }
            for (id, seq) in [(older, 1), (older, 2), (newer, 4), (newer, 5)] {
                conn.execute(
                    "INSERT INTO flow_checkpoints (run_id, seq, step_key, status, state, progress, created_at) \
                     VALUES (?1, ?2, NULL, 'running', ?3, '{}', ?2)",
                    rusqlite::params![id.to_string(), seq, format!("{{\"seq\":{seq}}}")],
                )?;
            }
        }
        let conn = open_writer(&SqliteOptions::new(&path))?;
        assert_eq!(pragma(&conn, "user_version")?, SCHEMA_VERSION);
        let numbers: Vec<(String, i64)> = conn
            .prepare("SELECT run_id, run_no FROM flow_runs ORDER BY run_no")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        assert_eq!(numbers, [(older.to_string(), 1), (newer.to_string(), 2)]);
        let keys: Vec<i64> = conn
            .prepare("SELECT ck FROM flow_checkpoints ORDER BY ck")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        assert_eq!(keys, [(1 << 32) + 1, (1 << 32) + 2, (2 << 32) + 4, (2 << 32) + 5]);

        let db = Db { conn: &conn, path: &path };
        let run = queries::load_run(db, newer)?;
        assert_eq!((run.version, run.snapshot.state.get()), (5, r#"{"seq":5}"#));
        let seqs: Vec<u64> = queries::checkpoints(db, older)?.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, [1, 2]);
        assert_eq!(queries::load_checkpoint(db, newer, 4)?.state.get(), r#"{"seq":4}"#);

        let third = crate::store::NewRun {
            run_id: uuid::Uuid::new_v4(),
            flow: "f".into(),
            parent_run_id: None,
            snapshot: crate::store::Snapshot::encode(&1, &2)?,
            steps: Vec::new(),
            start: crate::store::Start::Leased { owner: "w".into(), lease: Duration::ZERO },
            placement: crate::store::Placement::default(),
            graph: None,
        };
        assert_eq!(queries::create_run(db, &third, false, 30)?, 1);
        let no: i64 =
            conn.query_row("SELECT run_no FROM flow_runs WHERE run_id = ?1", [third.run_id.to_string()], |r| r.get(0))?;
        assert_eq!(no, 3);
        Ok(())
    }

    /// A file written by the version 3 code: its runs go to the default queue, with no concurrency
    /// key, no due time and no answer, and a running run left by a dead worker is claimed from
    /// that queue like any other.
    #[test]
    fn a_version_3_file_puts_its_runs_in_the_default_queue() -> TestResult {
        use super::super::queries::{self, Db};
        use crate::store::{ClaimRequest, Placement, QueueLimit, RunStatus};
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("runs.db");
        let (paused, crashed) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        {
            let conn = Connection::open(&path)?;
            for sql in &MIGRATIONS[..3] {
                conn.execute_batch(sql)?;
            }
            conn.pragma_update(None, "user_version", 3)?;
            for (no, id, status, owner) in [(1, paused, "paused", None), (2, crashed, "running", Some("dead"))] {
                conn.execute(
                    "INSERT INTO flow_runs (run_id, flow, status, pause, lease_owner, lease_expires_at, epoch, \
                     created_at, updated_at, run_no) VALUES (?1, 'f', ?2, '{\"step_key\":\"ask#0\"}', ?3, 5, 1, \
                     10, 20, ?4)",
                    rusqlite::params![id.to_string(), status, owner, no],
                )?;
                conn.execute(
                    "INSERT INTO flow_checkpoints (ck, run_id, seq, step_key, status, state, progress, created_at) \
                     VALUES ((?1 << 32) + 1, ?2, 1, NULL, ?3, '{\"v\":1}', '{}', 20)",
                    rusqlite::params![no, id.to_string(), status],
                )?;
            }
        }
        let conn = open_writer(&SqliteOptions::new(&path))?;
        assert_eq!(pragma(&conn, "user_version")?, SCHEMA_VERSION);
        let db = Db { conn: &conn, path: &path };
        let run = queries::load_run(db, paused)?;
        assert_eq!(
            (run.status, run.placement, run.available_at_ms, run.answer),
            (RunStatus::Paused, Placement::default(), None, None)
        );
        let summary = queries::run_summary(db, crashed)?;
        assert_eq!(summary.placement, Placement::default());

        let request = ClaimRequest {
            owner: "heir".into(),
            lease: Duration::from_secs(60),
            flows: vec!["f".into()],
            queues: vec![QueueLimit::new(Placement::DEFAULT_QUEUE).concurrency(4)],
            max: 10,
        };
        let claims = queries::claim_next(db, &request, 1_000)?;
        assert_eq!(claims.iter().map(|c| (c.run.run_id, c.epoch)).collect::<Vec<_>>(), [(crashed, 2)]);
        queries::answer(db, paused, "ask#0", &serde_json::json!("yes"), 1_000)?;
        assert_eq!(queries::load_run(db, paused)?.status, RunStatus::Queued);
        Ok(())
    }

    /// A file written by the version 4 code: its runs load with no graph, its steps with no
    /// timings or usage, and a new run stores its graph once however many runs share it.
    #[test]
    fn a_version_4_file_reads_its_runs_without_graphs_or_timings() -> TestResult {
        use super::super::queries::{self, Db};
        use crate::store::{NewRun, Placement, RunGraph, Snapshot, Start, StepStatus};
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("runs.db");
        let old = uuid::Uuid::new_v4();
        {
            let conn = Connection::open(&path)?;
            for sql in &MIGRATIONS[..4] {
                conn.execute_batch(sql)?;
            }
            conn.pragma_update(None, "user_version", 4)?;
            conn.execute(
                "INSERT INTO flow_runs (run_id, flow, status, epoch, created_at, updated_at, run_no) \
                 VALUES (?1, 'f', 'completed', 1, 10, 20, 1)",
                [old.to_string()],
            )?;
            conn.execute(
                "INSERT INTO flow_checkpoints (ck, run_id, seq, step_key, status, state, progress, created_at) \
                 VALUES ((1 << 32) + 1, ?1, 1, NULL, 'completed', '{\"v\":1}', '{}', 20)",
                [old.to_string()],
            )?;
            conn.execute(
                "INSERT INTO flow_steps (run_id, step_key, ord, method, status, input, output, error, attempt, \
                 created_at, updated_at) VALUES (?1, 'go#1', 1, 'go', 'completed', NULL, '3', NULL, 1, 10, 20)",
                [old.to_string()],
            )?;
        }
        let conn = open_writer(&SqliteOptions::new(&path))?;
        assert_eq!(pragma(&conn, "user_version")?, SCHEMA_VERSION);
        let db = Db { conn: &conn, path: &path };
        assert_eq!(queries::load_run(db, old)?.snapshot.state.get(), r#"{"v":1}"#);
        assert_eq!(queries::run_graph(db, old)?, None);
        let steps = queries::steps(db, old)?;
        assert_eq!(steps.len(), 1);
        assert_eq!((steps[0].status, steps[0].attempt), (StepStatus::Completed, 1));
        assert_eq!((steps[0].started_at_ms, steps[0].finished_at_ms, steps[0].usage), (None, None, None));

        let graph = std::sync::Arc::new(RunGraph::new(crate::graph::GraphDoc {
            format: crate::graph::GRAPH_FORMAT,
            name: "f".into(),
            state_type: "S".into(),
            methods: Vec::new(),
            max_calls: 100,
            on_failure: "cancel_running".into(),
        }));
        let mut ids = Vec::new();
        for stored in [false, true, false] {
            let run = NewRun {
                run_id: uuid::Uuid::new_v4(),
                flow: "f".into(),
                parent_run_id: None,
                snapshot: Snapshot::encode(&1, &2)?,
                steps: Vec::new(),
                start: Start::Queued { available_at_ms: None },
                placement: Placement::default(),
                graph: Some(std::sync::Arc::clone(&graph)),
            };
            queries::create_run(db, &run, stored, 30)?;
            ids.push(run.run_id);
        }
        for id in ids {
            assert_eq!(queries::run_graph(db, id)?.as_ref(), Some(&graph.doc));
        }
        let copies: i64 = conn.query_row("SELECT count(*) FROM flow_graphs", [], |r| r.get(0))?;
        assert_eq!(copies, 1);
        Ok(())
    }

    /// A file written by the version 10 code: its memory records move to the version 11 table
    /// with their content indexed and their sketches computed, and later writes, forgets and
    /// expiries keep the full-text index equal to the table.
    #[test]
    fn a_version_10_file_indexes_and_sketches_its_memories() -> TestResult {
        use super::super::{memory, queries::Db};
        use crate::memory::{Forget, HashEmbedder, MemoryRecord, MemorySearch, Weights};
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("runs.db");
        let embedder = HashEmbedder::default();
        {
            let conn = Connection::open(&path)?;
            for sql in &MIGRATIONS[..10] {
                conn.execute_batch(sql)?;
            }
            conn.pragma_update(None, "user_version", 10)?;
            for (id, content, expires) in [
                ("old-1", "Globex ships pumps to Brazil", None),
                ("old-2", "Initech sells printers to Chile", None),
                ("old-3", "a short-lived note about pumps", Some(50i64)),
            ] {
                conn.execute(
                    "INSERT INTO flow_memory (id, scope, content, metadata, importance, created_at, expires_at, \
                     model, embedding) VALUES (?1, 'notes', ?2, '{}', 0.5, 10, ?3, 'm', ?4)",
                    rusqlite::params![id, content, expires, crate::memory::to_bytes(&embedder.vector(content))],
                )?;
            }
        }
        let conn = open_writer(&SqliteOptions::new(&path))?;
        assert_eq!(pragma(&conn, "user_version")?, SCHEMA_VERSION);
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
        assert_eq!(count("SELECT count(*) FROM flow_memory WHERE sketch IS NULL")?, 0, "every record sketched");
        assert_eq!(count("SELECT count(*) FROM flow_memory_fts WHERE flow_memory_fts MATCH 'pumps'")?, 2);
        let check = || conn.execute("INSERT INTO flow_memory_fts (flow_memory_fts) VALUES ('integrity-check')", []);
        check()?;

        let db = Db { conn: &conn, path: &path };
        let search = |query: &str| MemorySearch {
            scope: "notes".into(),
            query: query.into(),
            subscopes: true,
            filter: Default::default(),
            embedding: embedder.vector(query),
            k: 5,
            weights: Weights::default(),
            now_ms: 20,
        };
        let found = memory::search(db, &search("pumps"))?;
        let mut first: Vec<&str> = found.iter().take(2).map(|r| r.id.as_str()).collect();
        first.sort_unstable();
        assert_eq!(first, ["old-1", "old-3"], "{found:?}");
        let fresh = MemoryRecord::new("new", "notes", "Acme buys pumps", embedder.vector("Acme buys pumps"));
        assert!(memory::put(db, &fresh, 100)?, "stored; the expired record purged");
        assert_eq!(count("SELECT count(*) FROM flow_memory_fts WHERE flow_memory_fts MATCH 'pumps'")?, 2);
        memory::forget(db, &Forget::Record("old-1".into()))?;
        assert_eq!(count("SELECT count(*) FROM flow_memory_fts WHERE flow_memory_fts MATCH 'pumps'")?, 1);
        check()?;
        conn.execute_batch("VACUUM")?;
        assert_eq!(memory::search(db, &search("pumps"))?[0].id, "new", "found by the same rows after a VACUUM");
        check()?;
        Ok(())
    }

    /// Every table's columns, keys, indexes and foreign keys, and whether it is STRICT and
    /// WITHOUT ROWID, as SQLite reports them.
    fn shape(conn: &Connection) -> rusqlite::Result<Vec<String>> {
        // Every row of a table-valued pragma about `of`, one line each, labelled.
        let pragma = |out: &mut Vec<String>, name: &str, of: &str, label: String| -> rusqlite::Result<()> {
            let mut stmt = conn.prepare(&format!("SELECT * FROM pragma_{name}(?1)"))?;
            let width = stmt.column_count();
            let rows = stmt.query_map([of], |r| {
                (0..width)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i).map(|v| format!("{v:?}")))
                    .collect::<Result<Vec<_>, _>>()
            })?;
            for row in rows {
                out.push(format!("{label} {}", row?.join(" ")));
            }
            Ok(())
        };
        let mut out = Vec::new();
        let tables: Vec<(String, i64, i64)> = conn
            .prepare("SELECT name, wr, strict FROM pragma_table_list WHERE schema = 'main' AND name NOT LIKE 'sqlite_%' ORDER BY name")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        for (table, without_rowid, strict) in tables {
            out.push(format!("{table} without_rowid={without_rowid} strict={strict}"));
            for name in ["table_info", "index_list", "foreign_key_list"] {
                pragma(&mut out, name, &table, format!("{table} {name}"))?;
            }
        }
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' ORDER BY name")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for index in indexes {
            pragma(&mut out, "index_xinfo", &index, index.clone())?;
        }
        Ok(out)
    }

    #[test]
    fn a_new_file_gets_what_the_migrations_make() -> TestResult {
        let dir = tempfile::tempdir()?;
        let fresh = open_writer(&SqliteOptions::new(dir.path().join("fresh.db")))?;
        let stepped = Connection::open(dir.path().join("stepped.db"))?;
        for sql in MIGRATIONS {
            stepped.execute_batch(sql)?;
        }
        let (fresh, stepped) = (shape(&fresh)?, shape(&stepped)?);
        assert!(fresh.iter().any(|l| l == "flow_steps without_rowid=1 strict=1"), "{fresh:#?}");
        assert_eq!(fresh, stepped);
        Ok(())
    }

    #[test]
    fn writer_connection_settings_follow_options() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("runs.db");

        let conn = open_writer(&SqliteOptions::new(&path))?;
        assert_eq!(pragma(&conn, "synchronous")?, 2, "FULL by default");
        assert_eq!(pragma(&conn, "foreign_keys")?, 1);
        assert_eq!(pragma(&conn, "busy_timeout")?, 5_000);
        assert_eq!(pragma(&conn, "user_version")?, SCHEMA_VERSION);
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        assert_eq!(mode, "wal");
        drop(conn);

        let options = SqliteOptions::new(&path)
            .synchronous(Synchronous::Normal)
            .busy_timeout(Duration::from_millis(250))
            .max_size(1 << 20);
        let conn = open_writer(&options)?;
        assert_eq!(pragma(&conn, "synchronous")?, 1);
        assert_eq!(pragma(&conn, "busy_timeout")?, 250);
        assert_eq!(pragma(&conn, "max_page_count")? * pragma(&conn, "page_size")?, 1 << 20);
        Ok(())
    }
}
