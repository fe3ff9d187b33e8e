//! `SqliteStore`: the `Store` contract, durability, group commit, multi-process leases and
//! every fault the store promises to report clearly.
#![cfg(feature = "sqlite")]

mod store_conformance;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_core::store::{
    Commit, MemoryStore, RunFilter, RunStatus, SqliteOptions, SqliteStore, StepStatus, Store, StoreError, Synchronous,
};
use serde_json::json;
use store_conformance::{KEEP, TestResult, commit, new_run, snapshot};
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(60);

fn raw(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

fn integrity(path: &Path) -> rusqlite::Result<String> {
    raw(path)?.query_row("PRAGMA integrity_check", [], |r| r.get(0))
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("runs.db")
}

#[tokio::test]
async fn memory_store_meets_the_contract() -> TestResult {
    store_conformance::check(&MemoryStore::new().keep_checkpoints(KEEP)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_meets_the_contract() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open_with(SqliteOptions::new(db_path(&dir)).keep_checkpoints(KEEP)).await?;
    store_conformance::check(&store).await
}

#[tokio::test]
async fn memory_store_meets_the_memory_contract() -> TestResult {
    store_conformance::memory::check_memory(&MemoryStore::new()).await
}

/// 10,000 records in one scope: recall goes through the shortlist (sketches and full-text
/// search) and still finds a paraphrase that shares no word with its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_recalls_by_meaning_in_a_large_scope() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open_with(SqliteOptions::new(db_path(&dir)).synchronous(Synchronous::Normal)).await?;
    store_conformance::memory::check_memory_at_scale(&store, 10_000).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_meets_the_memory_contract() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(db_path(&dir)).await?;
    store_conformance::memory::check_memory(&store).await?;
    // Kept across a reopen.
    let record = flow_core::memory::MemoryRecord::new("kept", "notes", "survives a restart", vec![1.0]);
    store.memory_put(record).await?;
    drop(store);
    let store = SqliteStore::open(db_path(&dir)).await?;
    assert_eq!(store.memory_forget(&flow_core::memory::Forget::Record("kept".into())).await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_meets_the_queue_contract() -> TestResult {
    let store = MemoryStore::new().keep_checkpoints(KEEP);
    let stores: Vec<Arc<dyn Store>> = vec![Arc::new(store.clone()), Arc::new(store)];
    store_conformance::check_queues(&stores).await
}

/// Three stores on one file, as three processes would have it (with a wake-up signal shared
/// in this process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_meets_the_queue_contract() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..3 {
        stores.push(Arc::new(SqliteStore::open_with(SqliteOptions::new(db_path(&dir)).keep_checkpoints(KEEP)).await?));
    }
    store_conformance::check_queues(&stores).await
}

#[tokio::test]
async fn memory_store_pages_listings() -> TestResult {
    store_conformance::paging(&MemoryStore::new(), None).await
}

/// Over runs created at the same millisecond (set in the file by hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_pages_listings() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db_path(&dir);
    let store = SqliteStore::open(&path).await?;
    let set =
        move |ids: Vec<Uuid>, at: i64| -> std::pin::Pin<Box<dyn std::future::Future<Output = TestResult> + Send>> {
            let path = path.clone();
            Box::pin(async move {
                let conn = raw(&path)?;
                for id in ids {
                    conn.execute(
                        "UPDATE flow_runs SET created_at = ?1 WHERE run_id = ?2",
                        rusqlite::params![at, id.to_string()],
                    )?;
                }
                Ok(())
            })
        };
    store_conformance::paging(&store, Some(&set)).await
}

#[tokio::test]
async fn runs_survive_reopening() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db_path(&dir);
    let store = SqliteStore::open(&path).await?;
    let run = new_run("reopen", "w1", LONG);
    let id = run.run_id;
    store.create_run(run).await?;
    store.commit(commit(id, 1, 1)).await?;
    let before = (store.load_run(id).await?, store.steps(id).await?, store.checkpoints(id).await?);
    drop(store);

    let store = SqliteStore::open(&path).await?;
    let after = (store.load_run(id).await?, store.steps(id).await?, store.checkpoints(id).await?);
    assert_eq!(before, after);
    assert_eq!(after.0.version, 2);
    Ok(())
}

#[tokio::test]
async fn schema_is_versioned_strict_and_in_wal_mode() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db_path(&dir);
    drop(SqliteStore::open(&path).await?);

    let conn = raw(&path)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    assert_eq!(version, 11);
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    assert_eq!(mode, "wal");
    for table in ["flow_runs", "flow_steps", "flow_checkpoints", "step_journal", "flow_graphs"] {
        let strict: i64 =
            conn.query_row("SELECT strict FROM pragma_table_list WHERE name = ?1", [table], |r| r.get(0))?;
        assert_eq!(strict, 1, "{table} is STRICT");
    }
    // Listing by status is served by an index, newest first, without a sort.
    let mut stmt = conn.prepare(
        "EXPLAIN QUERY PLAN SELECT run_id FROM flow_runs WHERE status = 'paused' \
         ORDER BY created_at DESC, run_id DESC LIMIT 10",
    )?;
    let details: Vec<String> = stmt.query_map([], |r| r.get::<_, String>(3))?.collect::<Result<_, _>>()?;
    assert!(details.iter().any(|d| d.contains("flow_runs_by_status")), "{details:?}");
    assert!(!details.iter().any(|d| d.contains("TEMP B-TREE")), "{details:?}");

    // Reopening an up-to-date file applies nothing and keeps the version.
    drop(SqliteStore::open(&path).await?);
    let version: i64 = raw(&path)?.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    assert_eq!(version, 11);
    Ok(())
}

#[tokio::test]
async fn a_file_from_a_newer_build_is_refused_and_left_untouched() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db_path(&dir);
    {
        let conn = raw(&path)?;
        conn.execute_batch("CREATE TABLE future (x INTEGER); PRAGMA user_version = 99;")?;
    }
    let before = std::fs::read(&path)?;
    match SqliteStore::open(&path).await {
        Err(StoreError::SchemaTooNew { found: 99, supported: 11 }) => {}
        other => return Err(format!("expected SchemaTooNew, got {other:?}").into()),
    }
    assert_eq!(std::fs::read(&path)?, before, "not a byte changed");
    assert!(!dir.path().join("runs.db-wal").exists(), "not even switched to WAL");
    Ok(())
}

#[tokio::test]
async fn opening_what_is_not_a_store_says_why() -> TestResult {
    let dir = tempfile::tempdir()?;
    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "these are not the runs you are looking for, padded past one page of header bytes. ".repeat(8),
    )?;
    match SqliteStore::open(&text).await {
        Err(StoreError::Open { path, message }) => {
            assert!(path.ends_with("notes.txt"));
            assert!(message.contains("not a SQLite database"), "{message}");
        }
        other => return Err(format!("expected Open for a text file, got {other:?}").into()),
    }

    let missing = dir.path().join("no-such-dir").join("runs.db");
    match SqliteStore::open(&missing).await {
        Err(StoreError::Open { message, .. }) => assert!(message.contains("does not exist"), "{message}"),
        other => return Err(format!("expected Open for a missing directory, got {other:?}").into()),
    }
    Ok(())
}

/// Damages one column of one run behind the store's back.
fn damage(path: &Path, sql: &str, id: Uuid) -> TestResult {
    let changed = raw(path)?.execute(sql, [id.to_string()])?;
    assert_eq!(changed, 1, "{sql}");
    Ok(())
}

fn expect_corrupt<T: std::fmt::Debug>(r: Result<T, StoreError>, id: Uuid, what: &str) -> TestResult {
    match r {
        Err(StoreError::Corrupt { run_id, what: found, detail }) if run_id == id && found.contains(what) => {
            assert!(!detail.is_empty());
            Ok(())
        }
        other => Err(format!("expected Corrupt({id}, {what}), got {other:?}").into()),
    }
}

/// status, state (of the newest checkpoint), epoch, lease owner, lease expiry: what a claim
/// would change.
type LeaseColumns = (String, String, i64, Option<String>, Option<i64>);

fn run_row(path: &Path, id: Uuid) -> rusqlite::Result<LeaseColumns> {
    raw(path)?.query_row(
        "SELECT r.status, c.state, r.epoch, r.lease_owner, r.lease_expires_at FROM flow_runs r \
         JOIN flow_checkpoints c ON c.run_id = r.run_id WHERE r.run_id = ?1 ORDER BY c.seq DESC LIMIT 1",
        [id.to_string()],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )
}

#[tokio::test]
async fn a_corrupt_row_is_named_and_left_as_it_is() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db_path(&dir);
    let store = SqliteStore::open(&path).await?;
    let run = new_run("corrupt", "w1", Duration::ZERO);
    let id = run.run_id;
    store.create_run(run).await?;
    let healthy = new_run("corrupt", "w1", LONG);
    let healthy_id = healthy.run_id;
    store.create_run(healthy).await?;

    damage(&path, "UPDATE flow_checkpoints SET state = '{\"n\": 1,' WHERE run_id = ?1", id)?;
    let before = run_row(&path, id)?;
    expect_corrupt(store.load_run(id).await, id, "state")?;
    // A claim reads the row it returns: it fails, and the epoch bump and lease are rolled back.
    expect_corrupt(store.claim(id, "w2", LONG).await, id, "state")?;
    assert_eq!(run_row(&path, id)?, before, "nothing modified");
    // Still nothing after later writes: the failed claim's savepoint was undone, not committed.
    store.commit(commit(healthy_id, 1, 1)).await?;
    assert_eq!(run_row(&path, id)?, before, "nothing modified");
    assert_eq!(store.load_run(healthy_id).await?.version, 2, "other runs still load and commit");

    damage(&path, "UPDATE flow_checkpoints SET state = '{}' WHERE run_id = ?1", id)?;
    damage(&path, "UPDATE flow_runs SET status = 'exploded' WHERE run_id = ?1", id)?;
    expect_corrupt(store.load_run(id).await, id, "status")?;
    let by_flow = RunFilter { flow: Some("corrupt".into()), ..RunFilter::default() };
    // Listing goes on without it: the plain listing leaves it out, the checked one reports it.
    let listed = store.list_runs(&by_flow).await?;
    assert_eq!(listed.iter().map(|r| r.run_id).collect::<Vec<_>>(), [healthy_id]);
    let mut checked = store.list_runs_checked(&by_flow).await?;
    assert_eq!(checked.iter().map(|r| r.run_id).collect::<Vec<_>>(), [healthy_id]);
    let damaged = checked.damaged.pop().ok_or("the damaged run is reported")?;
    assert_eq!(damaged.run_id, id);
    expect_corrupt(Err::<(), _>(damaged.error), id, "status")?;
    expect_corrupt(store.run_summary(id).await, id, "status")?;
    // Filtering on a real status never meets the bad one.
    let running = RunFilter { status: Some(RunStatus::Running), ..by_flow };
    assert_eq!(store.list_runs(&running).await?.len(), 1);
    damage(&path, "UPDATE flow_runs SET status = 'running' WHERE run_id = ?1", id)?;

    damage(&path, "UPDATE flow_steps SET status = 'melted' WHERE run_id = ?1", id)?;
    expect_corrupt(store.steps(id).await, id, "step `start#0` status")?;
    damage(&path, "UPDATE flow_checkpoints SET progress = 'nope' WHERE run_id = ?1", id)?;
    expect_corrupt(store.load_checkpoint(id, 1).await, id, "checkpoint 1 progress")?;

    let entry = flow_core::store::JournalEntry {
        run_id: id,
        step_key: "a#0".into(),
        seq: 0,
        kind: "llm".into(),
        name: "m".into(),
        request_hash: 5,
        output: json!("ok"),
    };
    store.journal_put(entry.clone()).await?;
    damage(&path, "UPDATE step_journal SET output = 'truncat' WHERE run_id = ?1", id)?;
    expect_corrupt(store.journal_get(id, "a#0", 0).await, id, "journal entry a#0:0 output")?;
    expect_corrupt(store.journal_put(entry).await, id, "journal entry a#0:0 output")?;
    Ok(())
}

#[tokio::test]
async fn a_damaged_file_is_reported_as_damaged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db_path(&dir);
    let store = SqliteStore::open(&path).await?;
    let run = new_run("damaged", "w1", LONG);
    let id = run.run_id;
    store.create_run(run).await?;
    drop(store);
    wait_closed(&path)?;

    // Keep the header page (schema version, schema table) and scribble over every b-tree page
    // after it, as a failing disk or a stray write would.
    let mut bytes = std::fs::read(&path)?;
    assert!(bytes.len() > 4096, "more than one page");
    bytes[4096..].fill(0xAB);
    std::fs::write(&path, bytes)?;

    // Once the schema outgrows the first page, opening reads damaged pages and says so; a
    // smaller schema opens and the first read says so.
    let store = match SqliteStore::open(&path).await {
        Ok(store) => store,
        Err(StoreError::FileCorrupt { path: shown, detail }) => {
            assert!(shown.ends_with("runs.db"), "{shown}");
            assert!(detail.contains("malformed"), "{detail}");
            return Ok(());
        }
        Err(other) => return Err(format!("opening a damaged file: expected FileCorrupt, got {other:?}").into()),
    };
    match store.load_run(id).await {
        Err(StoreError::FileCorrupt { path: shown, detail }) => {
            assert!(shown.ends_with("runs.db"), "{shown}");
            assert!(detail.contains("malformed"), "{detail}");
        }
        other => return Err(format!("expected FileCorrupt, got {other:?}").into()),
    }
    match store.list_runs(&RunFilter::default()).await {
        Err(StoreError::FileCorrupt { .. }) => Ok(()),
        other => Err(format!("listing a damaged file: expected FileCorrupt, got {other:?}").into()),
    }
}

#[tokio::test]
async fn a_read_only_store_reads_and_refuses_every_write() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db_path(&dir);
    // A lapsed lease, so the claim below gets as far as writing.
    let run = new_run("ro", "w1", Duration::ZERO);
    let id = run.run_id;
    {
        let store = SqliteStore::open(&path).await?;
        store.create_run(run.clone()).await?;
    }
    let store = SqliteStore::open_with(SqliteOptions::new(&path).read_only(true)).await?;
    assert_eq!(store.load_run(id).await?.version, 1);
    assert_eq!(store.list_runs(&RunFilter::default()).await?.len(), 1);

    let expect_read_only = |what: &str, r: Result<(), StoreError>| match r {
        Err(StoreError::ReadOnly(message)) => {
            assert!(message.contains("runs.db"), "{message}");
            Ok(())
        }
        other => Err(format!("{what} on a read-only store: expected ReadOnly, got {other:?}")),
    };
    expect_read_only("create_run", store.create_run(new_run("ro", "w1", LONG)).await.map(drop))?;
    expect_read_only("commit", store.commit(commit(id, 1, 1)).await)?;
    expect_read_only("claim", store.claim(id, "w1", LONG).await.map(drop))?;
    expect_read_only("renew", store.renew(id, 1, LONG).await)?;
    expect_read_only("delete_run", store.delete_run(id).await)?;
    let record = store.load_run(id).await?;
    assert_eq!((record.version, record.epoch), (1, 1), "nothing changed");
    assert_eq!(integrity(&path)?, "ok");
    Ok(())
}

const PROTECTED_DB: &str = "FLOWS_TEST_PROTECTED_DB";

async fn expect_read_only_open(path: &Path, mentions: &str, read_only: bool) -> TestResult {
    match SqliteStore::open_with(SqliteOptions::new(path).read_only(read_only)).await {
        Err(StoreError::ReadOnly(message)) if message.contains(mentions) => Ok(()),
        other => {
            Err(format!("opening {}: expected ReadOnly mentioning `{mentions}`, got {other:?}", path.display()).into())
        }
    }
}

/// Child side of `write_protection_is_reported_as_read_only`, run as an unprivileged user.
#[tokio::test]
#[ignore = "run by write_protection_is_reported_as_read_only in a child process"]
async fn child_opens_a_protected_store() -> TestResult {
    let path = PathBuf::from(std::env::var_os(PROTECTED_DB).ok_or("run by write_protection_is_reported_as_read_only")?);
    let mentions = std::env::var("FLOWS_TEST_MENTIONS")?;
    expect_read_only_open(&path, &mentions, std::env::var_os("FLOWS_TEST_OPEN_READ_ONLY").is_some()).await
}

/// Checks that opening `path` (read-only when `read_only`) fails with [`StoreError::ReadOnly`]
/// mentioning `mentions`, as a process without write permission: this one, or when it is
/// `privileged` (root ignores permission bits) a child test run as `nobody` through `setpriv`.
async fn expect_read_only_open_unprivileged(
    path: &Path,
    mentions: &str,
    privileged: bool,
    read_only: bool,
) -> TestResult {
    if !privileged {
        return expect_read_only_open(path, mentions, read_only).await;
    }
    let exe = std::env::current_exe()?;
    let mut child = Command::new("setpriv");
    child
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(exe)
        .args(["--exact", "child_opens_a_protected_store", "--ignored", "--nocapture", "--test-threads=1"])
        .env(PROTECTED_DB, path)
        .env("FLOWS_TEST_MENTIONS", mentions);
    if read_only {
        child.env("FLOWS_TEST_OPEN_READ_ONLY", "1");
    }
    let out = child.output()?;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"), "the child ran the check");
    Ok(())
}

/// Waits for the last connection of a dropped store to close (it removes the `-wal` file), so
/// the next opener finds a file at rest.
fn wait_closed(path: &Path) -> TestResult {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while wal.exists() {
        if Instant::now() > deadline {
            return Err(format!("{} still open after 10 s", path.display()).into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

#[tokio::test]
async fn write_protection_is_reported_as_read_only() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    let root = tempfile::tempdir()?;
    mode(root.path(), 0o755)?;

    // A file this process may not write, in a directory it may write.
    let file_case = root.path().join("file");
    // A file it may write, in a directory where SQLite cannot create its `-wal` and `-shm`.
    let dir_case = root.path().join("dir");
    for case in [&file_case, &dir_case] {
        std::fs::create_dir(case)?;
        let path = case.join("runs.db");
        drop(SqliteStore::open(&path).await?);
        wait_closed(&path)?;
    }
    mode(&file_case.join("runs.db"), 0o444)?;
    mode(&file_case, 0o777)?;
    mode(&dir_case.join("runs.db"), 0o666)?;
    mode(&dir_case, 0o555)?;
    let cases =
        [(file_case.join("runs.db"), "not writable by this process"), (dir_case.join("runs.db"), "the directory")];

    // Root ignores permission bits; then the check runs as `nobody` in a child process.
    let privileged = std::fs::OpenOptions::new().write(true).open(&cases[0].0).is_ok();
    for (path, mentions) in &cases {
        expect_read_only_open_unprivileged(path, mentions, privileged, false).await?;
    }
    // The directory probe cleans up after itself.
    for case in [&file_case, &dir_case] {
        for entry in std::fs::read_dir(case)? {
            let name = entry?.file_name();
            assert!(!name.to_string_lossy().starts_with(".flows-write-probe"), "{name:?} left in {}", case.display());
        }
    }
    mode(&dir_case, 0o755)?;
    Ok(())
}

/// Reading a store needs no write access to its file, but a WAL database needs its `-shm`
/// file, which SQLite creates beside it even for a read-only connection: in a directory the
/// process cannot write, with no process holding the store open, the read-only open fails, and
/// used to say only "attempt to write a readonly database" (puzzling for a read-only open).
/// Checked as `nobody` when this test runs as root (found by creating a file in the 0o555
/// directory: only root can), since root may write anywhere.
#[tokio::test]
async fn a_read_only_store_in_a_directory_it_cannot_write_says_so() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir()?;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))?;
    let dir = root.path().join("shared");
    std::fs::create_dir(&dir)?;
    let path = dir.join("runs.db");
    drop(SqliteStore::open(&path).await?);
    wait_closed(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555))?;
    let privileged = std::fs::write(dir.join("probe"), b"").is_ok();
    let checked =
        expect_read_only_open_unprivileged(&path, "was opened read-only, but its directory", privileged, true).await;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    checked
}

/// SQLite reports a directory given as the store's path as "unable to open database file".
#[tokio::test]
async fn a_store_path_that_is_a_directory_says_so() -> TestResult {
    let dir = tempfile::tempdir()?;
    for read_only in [false, true] {
        match SqliteStore::open_with(SqliteOptions::new(dir.path()).read_only(read_only)).await {
            Err(e @ StoreError::Open { .. }) => {
                let text = e.to_string();
                assert!(text.contains("is a directory, not a database file"), "{text}");
                assert!(text.contains(&dir.path().join("runs.db").display().to_string()), "{text}");
            }
            other => return Err(format!("read_only={read_only}: expected Open, got {other:?}").into()),
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_full_disk_rolls_back_and_keeps_what_was_committed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db_path(&dir);
    let store = SqliteStore::open_with(SqliteOptions::new(&path).max_size(256 * 1024)).await?;
    let run = new_run("full", "w1", LONG);
    let id = run.run_id;
    store.create_run(run).await?;
    for n in 1..=3 {
        store.commit(commit(id, 1, n)).await?;
    }
    let before = (store.load_run(id).await?, store.steps(id).await?, store.checkpoints(id).await?);

    let huge = Commit {
        snapshot: flow_core::store::Snapshot::encode(&json!({ "blob": "x".repeat(1 << 20) }), &json!({}))?,
        ..commit(id, 1, 4)
    };
    match store.commit(huge).await {
        Err(StoreError::DiskFull(message)) => {
            assert!(message.contains("runs.db") && message.contains(&id.to_string()), "names the run: {message}");
        }
        other => return Err(format!("expected DiskFull, got {other:?}").into()),
    }
    let after = (store.load_run(id).await?, store.steps(id).await?, store.checkpoints(id).await?);
    assert_eq!(before, after, "the failed commit left no trace");
    assert_eq!(integrity(&path)?, "ok");

    // The store stays usable: small commits fit again.
    store.commit(commit(id, 1, 4)).await?;
    assert_eq!(store.load_run(id).await?.version, 5);
    drop(store);
    let reopened = SqliteStore::open(&path).await?;
    assert_eq!(reopened.load_run(id).await?.snapshot, snapshot(4));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_request_does_not_spoil_its_group_commit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db_path(&dir);
    let store = SqliteStore::open_with(SqliteOptions::new(&path).max_size(512 * 1024)).await?;
    let mut ids = Vec::new();
    for _ in 0..60 {
        let run = new_run("group", "w1", LONG);
        ids.push(run.run_id);
        store.create_run(run).await?;
    }

    // Every third commit is fenced (stale epoch), one is too big for the disk; all are in
    // flight at once so they share transactions.
    let mut tasks = tokio::task::JoinSet::new();
    for (i, id) in ids.iter().copied().enumerate() {
        let store = store.clone();
        tasks.spawn(async move {
            let mut c = commit(id, if i % 3 == 0 { 7 } else { 1 }, 1);
            if i == 31 {
                c.snapshot.state = serde_json::value::to_raw_value(&json!({ "blob": "y".repeat(1 << 20) })).unwrap();
            }
            (i, store.commit(c).await)
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        outcomes.push(joined?);
    }
    outcomes.sort_by_key(|(i, _)| *i);
    for (i, outcome) in outcomes {
        let version = store.load_run(ids[i]).await?.version;
        match (i % 3 == 0, i == 31, outcome) {
            (true, _, Err(StoreError::Fenced { epoch: 7, current: 1, .. })) => assert_eq!(version, 1),
            (false, true, Err(StoreError::DiskFull(_))) => assert_eq!(version, 1),
            (false, false, Ok(())) => assert_eq!(version, 2, "run {i}"),
            (_, _, other) => return Err(format!("commit {i}: unexpected {other:?}").into()),
        }
    }
    assert_eq!(integrity(&path)?, "ok");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_share_one_lease_and_the_loser_is_fenced() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db_path(&dir);
    // Two stores on one file behave as two processes: separate connections and writer threads.
    let first = SqliteStore::open(&path).await?;
    let second = SqliteStore::open(&path).await?;
    let lease = Duration::from_millis(300);
    let run = new_run("shared", "first", lease);
    let id = run.run_id;
    first.create_run(run).await?;

    match second.claim(id, "second", lease).await {
        Err(StoreError::Locked { owner, .. }) => assert_eq!(owner, "first"),
        other => return Err(format!("claim of a live lease: expected Locked, got {other:?}").into()),
    }
    first.renew(id, 1, lease).await?;
    first.commit(commit(id, 1, 1)).await?;
    assert_eq!(second.load_run(id).await?.version, 2, "the other handle sees the commit");

    // The first holder stops renewing (a paused or dead process); after expiry the second
    // takes over, and the first's late writes are fenced.
    let expires = second.load_run(id).await?.lease_expires_at_ms.ok_or("no lease")?;
    let wait = expires - flow_core_now_ms() + 20;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let claim = second.claim(id, "second", LONG).await?;
    assert_eq!(claim.epoch, 2);
    assert_eq!(claim.run.version, 2);
    match first.commit(commit(id, 1, 2)).await {
        Err(StoreError::Fenced { epoch: 1, current: 2, .. }) => {}
        other => return Err(format!("zombie commit: expected Fenced, got {other:?}").into()),
    }
    match first.renew(id, 1, lease).await {
        Err(StoreError::Fenced { .. }) => {}
        other => return Err(format!("zombie renew: expected Fenced, got {other:?}").into()),
    }
    match first.claim(id, "first", lease).await {
        Err(StoreError::Locked { owner, .. }) => assert_eq!(owner, "second"),
        other => return Err(format!("zombie re-claim: expected Locked, got {other:?}").into()),
    }
    second.commit(commit(id, 2, 2)).await?;
    let record = first.load_run(id).await?;
    assert_eq!((record.version, record.epoch, record.snapshot), (3, 2, snapshot(2)));
    Ok(())
}

fn flow_core_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_another_process_is_waited_for_then_reported_as_busy() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db_path(&dir);
    let store = SqliteStore::open_with(SqliteOptions::new(&path).busy_timeout(Duration::from_millis(50))).await?;
    let run = new_run("busy", "w1", LONG);
    let id = run.run_id;
    store.create_run(run).await?;

    // Held briefly: longer than the busy timeout, shorter than the writer's retries.
    let holder = std::thread::spawn({
        let path = path.clone();
        move || -> rusqlite::Result<()> {
            let conn = raw(&path)?;
            conn.execute_batch("BEGIN IMMEDIATE")?;
            std::thread::sleep(Duration::from_millis(150));
            conn.execute_batch("COMMIT")
        }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    store.commit(commit(id, 1, 1)).await?;
    holder.join().map_err(|_| "lock holder panicked")??;

    // Held for good: the writer gives up with Busy, and the store works once it is released.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (locked, is_locked) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn({
        let path = path.clone();
        move || -> rusqlite::Result<()> {
            let conn = raw(&path)?;
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let _ = locked.send(());
            let _ = released.recv();
            conn.execute_batch("ROLLBACK")
        }
    });
    is_locked.recv()?;
    let started = Instant::now();
    let outcome = store.commit(commit(id, 1, 2)).await;
    let waited = started.elapsed();
    release.send(())?;
    holder.join().map_err(|_| "lock holder panicked")??;
    match outcome {
        Err(StoreError::Busy(message)) => {
            assert!(message.contains("locked") && message.contains(&id.to_string()), "names the run: {message}");
        }
        other => return Err(format!("expected Busy, got {other:?}").into()),
    }
    assert!(waited >= Duration::from_millis(250), "retried with backoff before giving up: {waited:?}");
    store.commit(commit(id, 1, 2)).await?;
    assert_eq!(store.load_run(id).await?.version, 3);
    Ok(())
}

/// Runs one `#[ignore]`d test of this binary in a child process.
fn child(test: &str) -> Result<Command, std::io::Error> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--exact", test, "--ignored", "--nocapture", "--test-threads=1"]);
    Ok(cmd)
}

const CRASH_DB: &str = "FLOWS_TEST_CRASH_DB";

/// Child side of `a_killed_writer_leaves_a_consistent_file`: commits as fast as it can until
/// killed. Each commit writes the run row, a step and a checkpoint that must agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_killed_writer_leaves_a_consistent_file in a child process"]
async fn child_commits_until_killed() -> TestResult {
    let path = std::env::var_os(CRASH_DB).ok_or("run by a_killed_writer_leaves_a_consistent_file")?;
    let store = SqliteStore::open(PathBuf::from(path)).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let store = store.clone();
        tasks.spawn(async move {
            let run = new_run("crash", "child", LONG);
            let id = run.run_id;
            store.create_run(run).await?;
            for n in 1.. {
                let mut c = commit(id, 1, n);
                let mut state: serde_json::Value = c.snapshot.state_as().expect("the test wrote JSON");
                state["pad"] = json!("p".repeat(8 * 1024));
                c.snapshot.state = serde_json::value::to_raw_value(&state).expect("a Value encodes");
                store.commit(c).await?;
            }
            Ok::<(), StoreError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_writer_leaves_a_consistent_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db_path(&dir);
    for round in 0..3u64 {
        let mut process = child("child_commits_until_killed")?
            .env(CRASH_DB, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        // Let it get going, then SIGKILL it at a varying moment: with 16 runs committing back to
        // back the writer is almost always inside a transaction.
        let wanted = 200 * (round + 1);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let commits: i64 = if path.exists() {
                raw(&path)?.query_row("SELECT count(*) FROM flow_checkpoints", [], |r| r.get(0)).unwrap_or(0)
            } else {
                0
            };
            if commits >= wanted as i64 || Instant::now() > deadline {
                break;
            }
            if let Some(status) = process.try_wait()? {
                return Err(format!("the child exited on its own: {status}").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(7 * round));
        process.kill()?;
        process.wait()?;

        assert_eq!(integrity(&path)?, "ok", "round {round}");
        let store = SqliteStore::open(&path).await?;
        let runs = store.list_runs(&RunFilter::default()).await?;
        assert_eq!(runs.len() as u64, 16 * (round + 1), "every created run is there");
        let mut checkpoints = 0;
        for summary in runs {
            let id = summary.run_id;
            let record = store.load_run(id).await?;
            let n = record.version - 1;
            checkpoints += record.version;
            // Run row, steps and checkpoint history moved together, commit by commit.
            assert_eq!(record.snapshot.state_as::<serde_json::Value>()?["n"], json!(n), "run {id}");
            let history = store.checkpoints(id).await?;
            assert_eq!(history.iter().map(|c| c.seq).collect::<Vec<_>>(), (1..=record.version).collect::<Vec<_>>());
            assert_eq!(store.load_checkpoint(id, record.version).await?, record.snapshot);
            let steps = store.steps(id).await?;
            assert_eq!(steps.len() as u64, n + 1, "start step plus one per commit");
            if n > 0 {
                let last = steps.last().ok_or("no steps")?;
                assert_eq!((last.step_key.clone(), last.status), (format!("m#{n}"), StepStatus::Completed));
            }
        }
        assert!(checkpoints >= wanted, "the child committed before it was killed: {checkpoints} checkpoints");
    }
    Ok(())
}

/// Child side of the default-path tests: opens the default store with logging to stderr.
#[tokio::test]
#[ignore = "run by open_default_uses_flows_db_or_dot_flows_and_says_where in a child process"]
async fn child_opens_the_default_store() -> TestResult {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).init();
    let store = SqliteStore::open_default().await?;
    store.create_run(new_run("default", "child", LONG)).await?;
    Ok(())
}

#[tokio::test]
async fn open_default_uses_flows_db_or_dot_flows_and_says_where() -> TestResult {
    let dir = tempfile::tempdir()?;

    let chosen = dir.path().join("chosen.db");
    let out = child("child_opens_the_default_store")?.env("FLOWS_DB", &chosen).current_dir(dir.path()).output()?;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("INFO") && log.contains(&chosen.display().to_string()), "{log}");
    assert!(!dir.path().join(".flows").exists(), "FLOWS_DB wins over ./.flows");
    let store = SqliteStore::open(&chosen).await?;
    assert_eq!(store.list_runs(&RunFilter::default()).await?.len(), 1);

    let cwd = tempfile::tempdir()?;
    let out = child("child_opens_the_default_store")?.env_remove("FLOWS_DB").current_dir(cwd.path()).output()?;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let expected = cwd.path().join(".flows").join("runs.db");
    assert!(expected.exists(), "created ./.flows/runs.db");
    assert!(log.contains(&expected.display().to_string()), "logs the absolute path: {log}");
    Ok(())
}

/// Commit latency: sequential (one fsync each) and concurrent (group commit). Prints, does not
/// assert timings; run with `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing report; run explicitly"]
async fn commit_latency_report() -> TestResult {
    const N: u64 = 1_000;
    // `RUST_LOG=flow_core::store=trace` shows each group commit and its size.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    for (label, sync) in [("FULL", Synchronous::Full), ("NORMAL", Synchronous::Normal)] {
        let path = dir.path().join(format!("latency-{label}.db"));
        let store = SqliteStore::open_with(SqliteOptions::new(&path).synchronous(sync).keep_checkpoints(10)).await?;
        let run = new_run("latency", "w", LONG);
        let id = run.run_id;
        store.create_run(run).await?;
        let started = Instant::now();
        for n in 1..=N {
            store.commit(commit(id, 1, n)).await?;
        }
        let sequential = started.elapsed();
        assert_eq!(store.load_run(id).await?.version, N + 1);

        let mut ids = Vec::new();
        for _ in 0..N {
            let run = new_run("latency", "w", LONG);
            ids.push(run.run_id);
            store.create_run(run).await?;
        }
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for id in ids.iter().copied() {
            let store = store.clone();
            tasks.spawn(async move { store.commit(commit(id, 1, 1)).await });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let concurrent = started.elapsed();
        for id in ids.iter().step_by(97) {
            assert_eq!(store.load_run(*id).await?.version, 2);
        }
        eprintln!(
            "synchronous={label}: {N} sequential commits {:?} ({:.1} us/commit); {N} concurrent commits {:?} ({:.1} us/commit)",
            sequential,
            sequential.as_secs_f64() * 1e6 / N as f64,
            concurrent,
            concurrent.as_secs_f64() * 1e6 / N as f64,
        );
    }
    Ok(())
}

/// `delete_run` deletes a run's rows in every table that refers to it with a cascading foreign
/// key, a table added after this build included, and leaves other runs' rows alone; a table
/// whose key does not cascade and holds rows of the run stops the delete, which changes nothing.
#[tokio::test]
async fn deleting_a_run_clears_every_table_that_refers_to_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db_path(&dir);
    let store = SqliteStore::open(&path).await?;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let run = new_run("delete", "w1", Duration::ZERO);
        ids.push(run.run_id);
        store.create_run(run).await?;
        store.commit(commit(*ids.last().ok_or("no run")?, 1, 1)).await?;
    }
    let (gone, kept, guarded) = (ids[0], ids[1], ids[2]);
    let conn = raw(&path)?;
    conn.execute_batch(
        "CREATE TABLE added_later (run_id TEXT NOT NULL REFERENCES flow_runs (run_id) ON DELETE CASCADE, note TEXT);
         CREATE TABLE not_cascading (run_id TEXT REFERENCES flow_runs (run_id), note TEXT);",
    )?;
    for id in [gone, kept] {
        conn.execute("INSERT INTO added_later VALUES (?1, 'x')", [id.to_string()])?;
    }
    conn.execute("INSERT INTO not_cascading VALUES (?1, 'keep me')", [guarded.to_string()])?;

    store.delete_run(gone).await?;
    let count = |sql: &str, id: Uuid| conn.query_row(sql, [id.to_string()], |r| r.get::<_, i64>(0));
    for table in ["flow_runs", "flow_steps", "flow_checkpoints", "added_later"] {
        let sql = format!("SELECT count(*) FROM {table} WHERE run_id = ?1");
        assert_eq!(count(&sql, gone)?, 0, "{table} still holds rows of the deleted run");
        assert!(count(&sql, kept)? > 0, "{table} lost rows of another run");
    }
    assert_eq!(store.checkpoints(kept).await?.len(), 2);

    match store.delete_run(guarded).await {
        Err(StoreError::Backend(message)) => assert!(message.contains("not_cascading"), "{message}"),
        other => return Err(format!("delete with a non-cascading reference: expected Backend, got {other:?}").into()),
    }
    assert_eq!(store.load_run(guarded).await?.version, 2, "a refused delete leaves the run whole");
    assert_eq!(store.checkpoints(guarded).await?.len(), 2);
    assert_eq!(integrity(&path)?, "ok");
    let violations: i64 = conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))?;
    assert_eq!(violations, 0, "no row refers to a deleted run");
    Ok(())
}
