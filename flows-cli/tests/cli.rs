//! The `flows` binary against real stores: a SQLite file written by a flow's `Runner` (a
//! completed run with several checkpoints, a failed run, a paused run, a run held by a live
//! lease and a run made to look 40 days old), and a PostgreSQL schema. Each test runs the
//! compiled binary and checks what it prints, its `--json` documents and its exit codes.

mod pause_support;
#[allow(dead_code, reason = "the PostgreSQL helpers other test crates use")]
#[path = "../../tests/pg_support/mod.rs"]
mod pg_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use flow_core::prelude::*;
use flow_core::store::{NewRun, Placement, Snapshot, SqliteStore, Start, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
struct Books {
    items: Vec<String>,
    total: u32,
    note: Option<String>,
    approved_by: Option<String>,
}

#[derive(Serialize, Deserialize, flow_core::schemars::JsonSchema)]
#[schemars(crate = "flow_core::schemars")]
struct Approval {
    approver: String,
}

/// What the flow does at its last step.
#[derive(Clone, Copy)]
enum Ending {
    Balance,
    Fail,
    Ask,
}

struct Ledger {
    ending: Ending,
}

#[flow(state = Books, name = "cli_ledger", retry(attempts = 2, backoff = fixed("1ms")))]
impl Ledger {
    #[start]
    async fn open(&self, cx: &Ctx<Books>) -> Result<()> {
        cx.update(|s| {
            s.items.push("open".into());
            s.total += 1;
        });
        Ok(())
    }

    #[listen(open)]
    async fn add(&self, cx: &Ctx<Books>) -> Result<()> {
        cx.report_usage("m", flow_core::TokenUsage { prompt_tokens: 12, completion_tokens: 3, total_tokens: 15 });
        cx.update(|s| {
            s.items.push("add".into());
            s.total += 10;
            s.note = Some("added".into());
        });
        Ok(())
    }

    #[listen(add)]
    async fn check(&self, cx: &Ctx<Books>) -> Result<u32> {
        match self.ending {
            Ending::Balance => {}
            Ending::Fail => return Err(Error::transient("the ledger does not balance")),
            Ending::Ask => {
                let answer: Approval = cx
                    .ask(InputRequest::new("Approve the ledger?").metadata(json!({ "total": cx.read(|s| s.total) })))
                    .await?;
                cx.update(move |s| s.approved_by = Some(answer.approver.clone()));
            }
        }
        Ok(cx.read(|s| s.total))
    }
}

/// Runs of every kind, written by the flow's runner (and one by hand) into `store`.
struct Runs {
    completed: Uuid,
    failed: Uuid,
    paused: Uuid,
    held: Uuid,
}

async fn write_runs(store: Arc<dyn Store>) -> std::result::Result<Runs, Box<dyn std::error::Error>> {
    let runner = |ending| Runner::new(Ledger { ending }).with_shared_store(store.clone());
    let completed = runner(Ending::Balance).kickoff(Books::default()).await?.completed()?.run_id;
    let failed = match runner(Ending::Fail).kickoff(Books::default()).await {
        Err(FlowError::MethodFailed { run_id, .. }) => run_id,
        other => return Err(format!("expected the run to fail, got {other:?}").into()),
    };
    let paused = match runner(Ending::Ask).kickoff(Books::default()).await? {
        RunOutcome::Paused(p) => p.run_id,
        other => return Err(format!("expected a pause, got {other:?}").into()),
    };
    // A run a worker is executing right now: its lease is live for an hour.
    let held = Uuid::now_v7();
    store
        .create_run(NewRun {
            run_id: held,
            flow: "cli_ledger".into(),
            parent_run_id: None,
            snapshot: Snapshot::encode(&Books::default(), &json!({}))?,
            steps: vec![],
            start: Start::Leased { owner: "worker-7".into(), lease: Duration::from_secs(3600) },
            placement: Placement::default(),
            graph: None,
        })
        .await?;
    Ok(Runs { completed, failed, paused, held })
}

/// A SQLite store with [`Runs`] and an old completed run, last changed 40 days ago.
struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    runs: Runs,
    old: Uuid,
}

const DAY_MS: i64 = 86_400_000;

async fn fixture() -> std::result::Result<Fixture, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("runs.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await?);
    let old = Runner::new(Ledger { ending: Ending::Balance })
        .with_shared_store(store.clone())
        .kickoff(Books::default())
        .await?
        .completed()?
        .run_id;
    let runs = write_runs(store).await?;
    let conn = rusqlite::Connection::open(&db)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let id = old.to_string();
    conn.execute(
        "UPDATE flow_runs SET created_at = created_at - ?2, updated_at = updated_at - ?2 WHERE run_id = ?1",
        (&id, 40 * DAY_MS),
    )?;
    conn.execute("UPDATE flow_checkpoints SET created_at = created_at - ?2 WHERE run_id = ?1", (&id, 40 * DAY_MS))?;
    Ok(Fixture { _dir: dir, db, runs, old })
}

/// The binary, with no store, colour or database settings inherited from the environment.
fn flows() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flows"));
    for var in ["FLOWS_DB", "DATABASE_URL", "NO_COLOR", "TERM"] {
        cmd.env_remove(var);
    }
    cmd
}

fn run(cmd: &mut Command) -> std::result::Result<Output, Box<dyn std::error::Error>> {
    Ok(cmd.output()?)
}

fn on(db: &Path, args: &[&str]) -> std::result::Result<Output, Box<dyn std::error::Error>> {
    run(flows().arg("--db").arg(db).args(args))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the command, expects `code`, and parses standard output as JSON.
fn json_of(out: &Output, code: i32) -> std::result::Result<Value, Box<dyn std::error::Error>> {
    assert_eq!(out.status.code(), Some(code), "stdout: {}\nstderr: {}", stdout(out), stderr(out));
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn expect(out: &Output, code: i32) -> (String, String) {
    assert_eq!(out.status.code(), Some(code), "stdout: {}\nstderr: {}", stdout(out), stderr(out));
    (stdout(out), stderr(out))
}

fn ids(listing: &Value) -> Vec<String> {
    listing["runs"].as_array().into_iter().flatten().filter_map(|r| r["run_id"].as_str().map(String::from)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_lists_newest_first_and_filters() -> TestResult {
    let f = fixture().await?;
    let r = &f.runs;

    let listing = json_of(&on(&f.db, &["runs", "--json"])?, 0)?;
    let all = ids(&listing);
    // Created in this order: old (then moved 40 days back), completed, failed, paused, held.
    let newest_first: Vec<String> = [r.held, r.paused, r.failed, r.completed, f.old].map(|id| id.to_string()).into();
    assert_eq!(all, newest_first);
    assert_eq!(listing["truncated"], false);
    assert_eq!(listing["damaged"], json!([]));
    let paused = &listing["runs"][1];
    for key in ["run_id", "flow", "status", "created_at", "created_at_ms", "updated_at", "updated_at_ms", "pause"] {
        assert!(paused.get(key).is_some(), "`{key}` missing from {paused}");
    }
    assert_eq!((paused["flow"].as_str(), paused["status"].as_str()), (Some("cli_ledger"), Some("paused")));
    assert_eq!(paused["pause"]["prompt"], "Approve the ledger?");
    assert!(paused["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{paused}");

    let only = |args: &[&str]| -> std::result::Result<Vec<String>, Box<dyn std::error::Error>> {
        let mut full = vec!["runs", "--json"];
        full.extend_from_slice(args);
        Ok(ids(&json_of(&on(&f.db, &full)?, 0)?))
    };
    assert_eq!(only(&["--status", "paused"])?, [r.paused.to_string()]);
    assert_eq!(only(&["--status", "failed,completed"])?, [r.failed, r.completed, f.old].map(|i| i.to_string()));
    assert_eq!(only(&["--status", "failed", "--status", "failed"])?, [r.failed.to_string()]);
    assert_eq!(only(&["--flow", "cli_ledger", "--status", "running"])?, [r.held.to_string()]);
    assert!(only(&["--flow", "another_flow"])?.is_empty());
    assert_eq!(only(&["--older-than", "30d"])?, [f.old.to_string()]);
    assert_eq!(only(&["--since", "1d"])?, newest_first[..4]);
    assert_eq!(only(&["--since", "1d", "--limit", "2"])?, newest_first[..2]);
    let limited = json_of(&on(&f.db, &["runs", "--json", "--limit", "2"])?, 0)?;
    assert_eq!((ids(&limited), &limited["truncated"]), (newest_first[..2].to_vec(), &json!(true)));
    assert_eq!(only(&["--limit", "0"])?, newest_first);

    // For people: a table, one run a line, the question a paused run waits on, no colour when
    // the output is not a terminal.
    let (table, notes) = expect(&on(&f.db, &["runs"])?, 0);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "{table}");
    assert!(lines[0].starts_with("RUN") && lines[0].contains("STATUS") && lines[0].contains("WAITING FOR"));
    assert!(lines[2].starts_with(&r.paused.to_string()) && lines[2].contains("paused"), "{table}");
    assert!(lines[2].contains("Approve the ledger?"), "{table}");
    assert!(lines[5].contains("40d ago") && lines[5].contains("completed"), "{table}");
    assert!(!table.contains('\x1b'), "no colour on a pipe: {table:?}");
    assert!(notes.is_empty(), "{notes}");
    let (_, notes) = expect(&on(&f.db, &["runs", "--limit", "1"])?, 0);
    assert!(notes.contains("showing the newest 1"), "{notes}");
    let (colored, _) = expect(&on(&f.db, &["runs", "--color", "always"])?, 0);
    assert!(colored.contains("\x1b[33mpaused\x1b[0m"), "{colored:?}");
    let (never, _) = expect(&run(flows().args(["--color", "never", "runs", "--db"]).arg(&f.db))?, 0);
    assert!(!never.contains('\x1b'));
    // On a terminal (a pseudo-terminal from util-linux's `script`): coloured, unless NO_COLOR.
    let on_terminal = |no_color: Option<&str>| -> std::result::Result<String, Box<dyn std::error::Error>> {
        let line = format!("'{}' --db '{}' runs", env!("CARGO_BIN_EXE_flows"), f.db.display());
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"]).env("TERM", "xterm").env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().map_err(|e| format!("cannot run `script` (util-linux) for a terminal: {e}"))?;
        Ok(expect(&out, 0).0)
    };
    let colored = on_terminal(None)?;
    assert!(colored.contains("\x1b[33mpaused\x1b[0m") && colored.contains(&r.paused.to_string()), "{colored:?}");
    let plain = on_terminal(Some("1"))?;
    assert!(plain.contains(&r.paused.to_string()) && !plain.contains('\x1b'), "NO_COLOR: {plain:?}");
    let (empty, notes) = expect(&on(&f.db, &["runs", "--flow", "nothing"])?, 0);
    assert!(empty.is_empty() && notes.contains("no runs found"), "{empty} / {notes}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_tells_status_steps_errors_the_question_and_checkpoints() -> TestResult {
    let f = fixture().await?;
    let r = &f.runs;
    let store = SqliteStore::open(&f.db).await?;

    // The paused run: its question, the step waiting, what the answer must be.
    let (text, _) = expect(&on(&f.db, &["show", &r.paused.to_string()])?, 0);
    assert!(text.contains("status    paused"), "{text}");
    assert!(text.contains("waiting for input"), "{text}");
    assert!(text.contains("question  Approve the ledger?"), "{text}");
    assert!(text.contains("check#1 (method `check`)"), "{text}");
    assert!(text.contains("Approval`"), "the answer's type: {text}");
    assert!(text.contains(r#"metadata  {"total":11}"#), "{text}");
    let shown = json_of(&on(&f.db, &["show", "--json", &r.paused.to_string()])?, 0)?;
    assert_eq!(shown["pause"]["prompt"], "Approve the ledger?");
    assert_eq!(shown["pause"]["method"], "check");
    assert_eq!(shown["pause"]["metadata"], json!({ "total": 11 }));
    assert_eq!(shown["lease"], Value::Null, "a paused run holds no lease");
    // The answer's schema, stored with the question, summarized field by field.
    assert!(text.contains("fields    approver: string"), "{text}");
    assert_eq!(shown["pause"]["answer_schema"]["properties"]["approver"]["type"], "string");
    assert_eq!(shown["answer_fields"], json!([{ "name": "approver", "type": "string", "required": true }]));

    // The failed run: the failing step, its attempts and its error.
    let failed_steps = store.steps(r.failed).await?;
    let check = failed_steps.iter().find(|s| s.method == "check").ok_or("no row for the failed step")?;
    assert!(check.attempt >= 2, "the flow retries once: {check:?}");
    let (text, _) = expect(&on(&f.db, &["show", &r.failed.to_string()])?, 0);
    assert!(text.contains("status    failed"), "{text}");
    assert!(text.contains("error     ") && text.contains("the ledger does not balance"), "{text}");
    let row = text.lines().find(|l| l.trim_start().starts_with("check#1")).ok_or("no check#1 row")?;
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[..4], ["check#1", "check", "failed", check.attempt.to_string().as_str()], "{row}");
    assert!(text.contains(&format!("check#1 (attempt {}): the ledger does not balance", check.attempt)), "{text}");
    let shown = json_of(&on(&f.db, &["show", "--json", &r.failed.to_string()])?, 0)?;
    assert_eq!(shown["status"], "failed");
    let steps = shown["steps"].as_array().ok_or("no steps")?;
    assert_eq!(steps.len(), failed_steps.len());
    for (shown, stored) in steps.iter().zip(&failed_steps) {
        assert_eq!(shown["step_key"], stored.step_key.as_str());
        assert_eq!(shown["method"], stored.method.as_str());
        assert_eq!(shown["status"], stored.status.as_str());
        assert_eq!(shown["attempt"], stored.attempt);
        assert_eq!(shown["error"], json!(stored.error));
        assert_eq!(shown["output"], json!(stored.output));
    }

    // The completed run: output, every checkpoint with the step it recorded.
    let shown = json_of(&on(&f.db, &["show", "--json", &r.completed.to_string()])?, 0)?;
    for key in [
        "run_id",
        "flow",
        "status",
        "parent_run_id",
        "created_at",
        "updated_at",
        "version",
        "epoch",
        "lease",
        "output",
        "error",
        "pause",
        "steps",
        "checkpoints",
    ] {
        assert!(shown.get(key).is_some(), "`{key}` missing from {shown}");
    }
    assert_eq!((shown["status"].as_str(), &shown["output"]), (Some("completed"), &json!(11)));
    let stored = store.checkpoints(r.completed).await?;
    assert!(stored.len() >= 4, "a checkpoint at the start and one per step: {stored:?}");
    let seqs: Vec<u64> =
        shown["checkpoints"].as_array().ok_or("no checkpoints")?.iter().filter_map(|c| c["seq"].as_u64()).collect();
    assert_eq!(seqs, stored.iter().map(|c| c.seq).collect::<Vec<_>>());
    assert_eq!(shown["version"], stored.last().map(|c| c.seq).ok_or("none")?);
    // Each step's timings and tokens.
    let stored_steps = store.steps(r.completed).await?;
    for (shown, stored) in shown["steps"].as_array().ok_or("no steps")?.iter().zip(&stored_steps) {
        assert_eq!(shown["started_at_ms"], json!(stored.started_at_ms.ok_or("a step without a start time")?));
        assert_eq!(shown["finished_at_ms"], json!(stored.finished_at_ms));
        assert_eq!(shown["duration_ms"], json!(stored.duration_ms()));
        assert!(shown["started_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{shown}");
        let usage = if stored.method == "add" {
            json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15})
        } else {
            Value::Null
        };
        assert_eq!(shown["usage"], usage, "{shown}");
    }
    let (text, _) = expect(&on(&f.db, &["show", &r.completed.to_string()])?, 0);
    assert!(text.contains("DURATION") && text.contains("TOKENS"), "{text}");
    let add = text.lines().find(|l| l.trim_start().starts_with("add#1")).ok_or("no add#1 row")?;
    assert!(add.contains("15 (12 in, 3 out)") && add.contains("ms"), "{add}");
    assert!(text.contains("output    11"), "{text}");
    assert!(text.contains(&format!("checkpoints ({} kept)", stored.len())), "{text}");
    assert!(text.contains("AFTER STEP") && text.contains("add#1"), "{text}");

    // The held run: who holds it.
    let (text, _) = expect(&on(&f.db, &["show", &r.held.to_string()])?, 0);
    assert!(text.contains("held by `worker-7`"), "{text}");
    let shown = json_of(&on(&f.db, &["show", "--json", &r.held.to_string()])?, 0)?;
    assert_eq!((&shown["lease"]["owner"], &shown["lease"]["live"]), (&json!("worker-7"), &json!(true)));
    Ok(())
}

/// `plot` draws the graph stored with a run, named by its id or by its flow (the newest run),
/// without the flow's code; a run stored without a graph is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plot_draws_the_graph_stored_with_a_run() -> TestResult {
    let f = fixture().await?;
    let r = &f.runs;
    let completed = r.completed.to_string();
    let (text, _) = expect(&on(&f.db, &["plot", &completed])?, 0);
    assert_eq!(text, Ledger::graph().to_mermaid());
    let shown = json_of(&on(&f.db, &["plot", "--json", &completed])?, 0)?;
    assert_eq!(serde_json::from_value::<flow_core::graph::GraphDoc>(shown["graph"].clone())?, Ledger::graph().doc());
    assert_eq!(shown["flow"], "cli_ledger");
    let (svg, _) = expect(&on(&f.db, &["plot", &completed, "--format", "svg"])?, 0);
    assert_eq!(svg, flow_core::plot::svg(Ledger::graph()));

    // The flow's newest run is the held one, written by hand without a graph.
    let (_, err) = expect(&on(&f.db, &["plot", "cli_ledger"])?, 2);
    assert!(err.contains(&format!("run {} of `cli_ledger` has no graph stored", r.held)), "{err}");
    let (_, err) = expect(&on(&f.db, &["plot", "no_such_flow"])?, 2);
    assert!(err.contains("`no_such_flow` is neither a run id nor the name of a flow"), "{err}");
    let (_, err) = expect(&on(&f.db, &["plot", &Uuid::now_v7().to_string()])?, 2);
    assert!(err.contains("not found") || err.contains("no run"), "{err}");

    // A newer run of the flow: the name plots its graph, to a file whose extension picks HTML.
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&f.db).await?);
    Runner::new(Ledger { ending: Ending::Balance }).with_shared_store(store).kickoff(Books::default()).await?;
    let page = f.db.with_extension("html");
    let (text, err) = expect(&on(&f.db, &["plot", "cli_ledger", "-o", &page.to_string_lossy()])?, 0);
    assert!(text.is_empty() && err.contains("wrote the graph of run"), "{err}");
    assert_eq!(std::fs::read_to_string(&page)?, flow_core::plot::html(Ledger::graph()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_diff_read_any_kept_checkpoint() -> TestResult {
    let f = fixture().await?;
    let id = f.runs.completed.to_string();
    let store = SqliteStore::open(&f.db).await?;
    let last = store.checkpoints(f.runs.completed).await?.last().map(|c| c.seq).ok_or("no checkpoints")?;
    let final_state = json!({ "items": ["open", "add"], "total": 11, "note": "added", "approved_by": null });

    let (text, _) = expect(&on(&f.db, &["state", &id])?, 0);
    assert_eq!(serde_json::from_str::<Value>(&text)?, final_state);
    assert!(text.contains("\n  \"items\""), "pretty-printed: {text}");
    let at_start = json_of(&on(&f.db, &["state", &id, "--at", "1"])?, 0)?;
    assert_eq!(at_start, serde_json::to_value(Books::default())?);
    let wrapped = json_of(&on(&f.db, &["state", &id, "--json"])?, 0)?;
    assert_eq!(wrapped, json!({ "run_id": id, "seq": last, "state": final_state }));

    let (_, err) = expect(&on(&f.db, &["state", &id, "--at", "999"])?, 2);
    assert!(err.contains(&format!("run {id} has no checkpoint 999")), "{err}");
    assert!(err.contains(&format!("it keeps checkpoints 1 to {last}")), "{err}");

    let changes = json_of(&on(&f.db, &["diff", &id, "1", &last.to_string(), "--json"])?, 0)?;
    assert_eq!((&changes["run_id"], &changes["from"], &changes["to"]), (&json!(id), &json!(1), &json!(last)));
    assert_eq!(
        changes["changes"],
        json!([
            { "op": "added", "path": "/items/0", "new": "open" },
            { "op": "added", "path": "/items/1", "new": "add" },
            { "op": "changed", "path": "/note", "old": null, "new": "added" },
            { "op": "changed", "path": "/total", "old": 0, "new": 11 },
        ])
    );
    let (text, _) = expect(&on(&f.db, &["diff", &id, "1", &last.to_string()])?, 0);
    assert!(text.contains("+ /items/0: \"open\""), "{text}");
    assert!(text.contains("~ /total: 0 → 11"), "{text}");
    assert!(text.contains("4 changes: 2 added, 0 removed, 2 changed"), "{text}");
    assert!(text.contains("checkpoint 1 (at the start"), "{text}");
    let (back, _) = expect(&on(&f.db, &["diff", &id, &last.to_string(), "1"])?, 0);
    assert!(back.contains("- /items/1: \"add\"") && back.contains("~ /total: 11 → 0"), "{back}");
    let (same, _) = expect(&on(&f.db, &["diff", &id, "2", "2"])?, 0);
    assert!(same.ends_with("no change\n"), "{same}");
    let (_, err) = expect(&on(&f.db, &["diff", &id, "1", "77"])?, 2);
    assert!(err.contains("has no checkpoint 77") && !err.contains("retention"), "{err}");
    let (_, err) = expect(&on(&f.db, &["state", &id, "--at", "0"])?, 2);
    assert!(err.contains("has no checkpoint 0"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_say_what_to_do_and_exit_with_their_code() -> TestResult {
    let f = fixture().await?;

    let missing = Uuid::now_v7().to_string();
    for command in [vec!["show", &missing], vec!["state", &missing], vec!["diff", &missing, "1", "2"]] {
        let (_, err) = expect(&on(&f.db, &command)?, 2);
        assert!(err.contains(&format!("run {missing} not found")), "{command:?}: {err}");
    }
    let out = on(&f.db, &["show", &missing, "--json"])?;
    assert_eq!(out.status.code(), Some(2));
    let error: Value = serde_json::from_slice(&out.stderr)?;
    assert_eq!((&error["error"]["kind"], &error["error"]["exit_code"]), (&json!("not_found"), &json!(2)));
    assert!(error["error"]["message"].as_str().is_some_and(|m| m.contains(&missing)), "{error}");

    let (_, err) = expect(&on(&f.db, &["show", "not-a-run"])?, 1);
    assert!(err.contains("`not-a-run` is not a run id") && err.contains("flows runs"), "{err}");
    let (_, err) = expect(&on(&f.db, &["runs", "--status", "done"])?, 1);
    assert!(err.contains("`done` is not a run status"), "{err}");
    let (_, err) = expect(&on(&f.db, &["prune", "--older-than", "soon"])?, 1);
    assert!(err.contains("`soon` is not a length of time"), "{err}");
    let (_, err) = expect(&on(&f.db, &["prune"])?, 1);
    assert!(err.contains("--older-than"), "prune never deletes without an age: {err}");
    expect(&on(&f.db, &["frobnicate"])?, 1);
    let (_, err) = expect(&run(flows().args(["runs", "--db", "a.db", "--database-url", "postgres://x/y"]))?, 1);
    assert!(err.contains("cannot be used with"), "{err}");

    let (help, _) = expect(&run(flows().arg("--help"))?, 0);
    for text in ["runs", "show", "state", "diff", "prune", "Exit codes:", "2  not found", "3  store unavailable"] {
        assert!(help.contains(text), "--help lacks `{text}`: {help}");
    }

    // No store anywhere: every way of giving one is named.
    let (_, err) = expect(&run(flows().arg("runs").current_dir(f.db.parent().ok_or("no dir")?))?, 3);
    for name in ["--db", "--database-url", "FLOWS_DB", "DATABASE_URL"] {
        assert!(err.contains(name), "{err}");
    }
    // A path that holds no store is not created.
    let nowhere = f.db.with_file_name("typo.db");
    let (_, err) = expect(&on(&nowhere, &["runs"])?, 3);
    assert!(err.contains("--db: no store at") && err.contains("typo.db"), "{err}");
    assert!(!nowhere.exists(), "flows must not create a store");
    let (_, err) = expect(&run(flows().arg("runs").env("FLOWS_DB", &nowhere))?, 3);
    assert!(err.contains("$FLOWS_DB: no store at"), "{err}");
    // A PostgreSQL server that is not there: nothing listens on port 1.
    let url = "postgres://flows:secret-password@127.0.0.1:1/flows";
    let (_, err) = expect(&run(flows().args(["runs", "--database-url", url]))?, 3);
    assert!(err.contains("--database-url") && err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("secret-password"), "the password is never shown: {err}");
    let (_, err) = expect(&run(flows().arg("runs").env("DATABASE_URL", url))?, 3);
    assert!(err.contains("$DATABASE_URL"), "{err}");
    // $FLOWS_DB names the store when no flag does.
    let listing = json_of(&run(flows().args(["runs", "--json"]).env("FLOWS_DB", &f.db).env("DATABASE_URL", url))?, 0)?;
    assert_eq!(ids(&listing).len(), 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_old_runs_and_never_one_being_executed() -> TestResult {
    let f = fixture().await?;
    let r = &f.runs;
    let store = SqliteStore::open(&f.db).await?;

    // A dry run names the old completed run and deletes nothing.
    let (text, _) = expect(&on(&f.db, &["prune", "--older-than", "30d", "--dry-run"])?, 0);
    assert!(text.contains(&f.old.to_string()) && text.contains("would delete"), "{text}");
    assert!(!text.contains(&r.completed.to_string()), "a recent run is kept: {text}");
    assert!(text.contains("would delete 1 completed run last changed more than 30d ago"), "{text}");
    store.load_run(f.old).await?;
    let dry = json_of(&on(&f.db, &["prune", "--older-than", "30d", "--dry-run", "--json"])?, 0)?;
    assert_eq!((&dry["dry_run"], &dry["would_delete"], &dry["deleted"]), (&json!(true), &json!(1), &json!(0)));
    assert_eq!(dry["runs"][0]["result"], "would_delete");

    let done = json_of(&on(&f.db, &["prune", "--older-than", "30d", "--json"])?, 0)?;
    assert_eq!(done["deleted"], 1);
    assert_eq!(done["statuses"], json!(["completed"]));
    assert_eq!(
        done["runs"],
        json!([{
            "run_id": f.old.to_string(),
            "flow": "cli_ledger",
            "status": "completed",
            "updated_at": done["runs"][0]["updated_at"],
            "updated_at_ms": done["runs"][0]["updated_at_ms"],
            "result": "deleted",
        }])
    );
    expect(&on(&f.db, &["show", &f.old.to_string()])?, 2);
    assert!(store.checkpoints(f.old).await.is_err(), "its history goes too");
    store.load_run(r.completed).await?;

    // Failed and paused runs are kept unless named.
    let (text, _) = expect(&on(&f.db, &["prune", "--older-than", "0s"])?, 0);
    assert!(text.contains("deleted 1 completed run last changed"), "{text}");
    store.load_run(r.failed).await?;
    store.load_run(r.paused).await?;

    // A run being executed is refused, exit code 4, and stays whole.
    let (text, _) = expect(&on(&f.db, &["prune", "--older-than", "0s", "--status", "running", "--dry-run"])?, 4);
    assert!(text.contains("refused: held by `worker-7`"), "{text}");
    let refused = json_of(&on(&f.db, &["prune", "--older-than", "0s", "--status", "running,failed", "--json"])?, 4)?;
    assert_eq!((&refused["deleted"], &refused["refused"]), (&json!(1), &json!(1)));
    let held = refused["runs"].as_array().into_iter().flatten().find(|x| x["run_id"] == r.held.to_string());
    let held = held.ok_or("the held run is not listed")?;
    assert_eq!(held["result"], "refused");
    assert!(held["reason"].as_str().is_some_and(|m| m.contains("worker-7")), "{held}");
    assert_eq!(store.load_run(r.held).await?.lease_owner.as_deref(), Some("worker-7"));
    expect(&on(&f.db, &["show", &r.failed.to_string()])?, 2);
    Ok(())
}

/// The same binary on PostgreSQL: the runs a runner wrote there, listed, shown, read and pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_commands_work_on_postgresql() -> TestResult {
    let Some(db) = pg_support::database("the_same_commands_work_on_postgresql").await else { return Ok(()) };
    let store: Arc<dyn Store> = Arc::new(flow_core::store::PgStore::from_pool(db.pool(4)).await?);
    let r = write_runs(store.clone()).await?;
    let url = db.url();
    let pg = |args: &[&str]| run(flows().args(args).arg("--database-url").arg(&url));

    let listing = json_of(&pg(&["runs", "--json"])?, 0)?;
    assert_eq!(ids(&listing), [r.held, r.paused, r.failed, r.completed].map(|i| i.to_string()));
    // $DATABASE_URL names it too.
    let listing = json_of(&run(flows().args(["runs", "--json", "--status", "paused"]).env("DATABASE_URL", &url))?, 0)?;
    assert_eq!(ids(&listing), [r.paused.to_string()]);

    let (text, _) = expect(&pg(&["show", &r.paused.to_string()])?, 0);
    assert!(text.contains("question  Approve the ledger?"), "{text}");
    let shown = json_of(&pg(&["show", "--json", &r.failed.to_string()])?, 0)?;
    assert_eq!(shown["status"], "failed");
    assert!(shown["error"].as_str().is_some_and(|e| e.contains("does not balance")), "{shown}");
    let state = json_of(&pg(&["state", &r.completed.to_string()])?, 0)?;
    assert_eq!(state["total"], 11);
    let changes = json_of(&pg(&["diff", &r.completed.to_string(), "1", "2", "--json"])?, 0)?;
    assert!(!changes["changes"].as_array().ok_or("no changes")?.is_empty(), "{changes}");
    expect(&pg(&["show", &Uuid::now_v7().to_string()])?, 2);

    let refused = json_of(&pg(&["prune", "--older-than", "0s", "--status", "running,completed", "--json"])?, 4)?;
    assert_eq!((&refused["deleted"], &refused["refused"]), (&json!(1), &json!(1)));
    assert!(matches!(store.load_run(r.completed).await, Err(flow_core::store::StoreError::NotFound(_))));
    assert_eq!(store.load_run(r.held).await?.lease_owner.as_deref(), Some("worker-7"));
    Ok(())
}

/// A damaged row is named, exits 5 where it is the thing asked for, and hides nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_rows_are_named_and_the_rest_is_shown() -> TestResult {
    let f = fixture().await?;
    let r = &f.runs;
    let conn = rusqlite::Connection::open(&f.db)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // The completed run's newest state, and the failed run's status, are no longer readable.
    let completed = r.completed.to_string();
    conn.execute(
        "UPDATE flow_checkpoints SET state = '{not json' WHERE ck = (SELECT MAX(ck) FROM flow_checkpoints WHERE run_id = ?1)",
        [&completed],
    )?;
    conn.execute("UPDATE flow_runs SET status = 'exploded' WHERE run_id = ?1", [r.failed.to_string()])?;

    let (text, warning) = expect(&on(&f.db, &["show", &completed])?, 0);
    assert!(text.contains("status    completed") && text.contains("checkpoints ("), "{text}");
    assert!(warning.contains("newest checkpoint cannot be read") && warning.contains(&completed), "{warning}");
    let shown = json_of(&on(&f.db, &["show", "--json", &completed])?, 0)?;
    assert!(shown["damaged"].as_str().is_some_and(|d| d.contains("corrupt")), "{shown}");
    assert_eq!(shown["version"], Value::Null, "what could not be read is null, not made up");
    let (_, err) = expect(&on(&f.db, &["state", &completed])?, 5);
    assert!(err.contains(&completed) && err.contains("corrupt"), "{err}");
    // Earlier checkpoints still read, and the change up to the damaged one says it is damaged.
    json_of(&on(&f.db, &["state", &completed, "--at", "1"])?, 0)?;
    let last = shown["checkpoints"].as_array().and_then(|c| c.last()).and_then(|c| c["seq"].as_u64()).ok_or("none")?;
    let (_, err) = expect(&on(&f.db, &["diff", &completed, "1", &last.to_string()])?, 5);
    assert!(err.contains(&format!("checkpoint {last} state")) && err.contains("corrupt"), "{err}");

    let listing = json_of(&on(&f.db, &["runs", "--json"])?, 0)?;
    assert_eq!(ids(&listing).len(), 4, "every readable run is listed: {listing}");
    assert_eq!(listing["damaged"][0]["run_id"], r.failed.to_string());
    assert!(listing["damaged"][0]["error"].as_str().is_some_and(|e| e.contains("exploded")), "{listing}");
    let (table, warning) = expect(&on(&f.db, &["runs"])?, 0);
    assert_eq!(table.lines().count(), 5, "{table}");
    assert!(warning.contains(&format!("run {} cannot be read", r.failed)), "{warning}");
    Ok(())
}

/// Gives the paused run's question an answer schema, as builds that record one store it.
async fn add_answer_schema(db: &Path, run_id: Uuid, schema: Value) -> TestResult {
    let store = SqliteStore::open(db).await?;
    pause_support::rewrite_pause(&store, run_id, |pause| pause["answer_schema"] = schema).await
}

/// The run as `flows show --json` prints it.
fn shown(db: &Path, run_id: Uuid) -> std::result::Result<Value, Box<dyn std::error::Error>> {
    json_of(&on(db, &["show", &run_id.to_string(), "--json"])?, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_is_validated_against_the_stored_schema_before_anything_is_written() -> TestResult {
    let f = fixture().await?;
    let paused = f.runs.paused.to_string();
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": { "approver": { "type": "string", "minLength": 1 } },
        "required": ["approver"]
    });
    add_answer_schema(&f.db, f.runs.paused, schema).await?;

    // Does not fit: every violation with its pointer, exit 6, still paused.
    let (_, err) = expect(&on(&f.db, &["answer", &paused, r#"{"approver": 5}"#])?, 6);
    assert!(err.contains("/approver") && err.contains("nothing was written") && err.contains("stays paused"), "{err}");
    let out = on(&f.db, &["answer", &paused, "{}", "--json"])?;
    assert_eq!(out.status.code(), Some(6));
    let error: Value = serde_json::from_slice(&out.stderr)?;
    assert_eq!(error["error"]["kind"], "invalid_answer");
    assert_eq!(error["error"]["details"]["violations"][0]["pointer"], "");
    assert!(error["error"]["details"]["violations"][0]["message"].as_str().unwrap_or("").contains("approver"));
    let (_, err) = expect(&on(&f.db, &["answer", &paused, "yes please"])?, 6);
    assert!(err.contains("not JSON"), "{err}");
    let file = f.db.with_file_name("bad.json");
    std::fs::write(&file, r#"{"approver": ""}"#)?;
    let (_, err) = expect(&run(flows().arg("--db").arg(&f.db).args(["answer", &paused, "--file"]).arg(&file))?, 6);
    assert!(err.contains("/approver"), "{err}");
    let (_, err) = expect(&on(&f.db, &["answer", &paused])?, 1);
    assert!(err.contains("--file") && err.contains("standard input"), "{err}");
    assert_eq!(shown(&f.db, f.runs.paused)?["status"], "paused", "nothing was written");

    // Not paused: exit 7, saying what the run is.
    let (_, err) = expect(&on(&f.db, &["answer", &f.runs.completed.to_string(), "true"])?, 7);
    assert!(err.contains("is completed, not paused"), "{err}");

    // Fits, from standard input: stored, the run queued for a worker.
    let mut child = flows()
        .arg("--db")
        .arg(&f.db)
        .args(["answer", &paused, "-", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin.write_all(br#"{"approver": "ada"}"#)?;
    }
    let answered = json_of(&child.wait_with_output()?, 0)?;
    assert_eq!((&answered["step_key"], &answered["validated"]), (&json!("check#1"), &json!(true)));
    assert_eq!(shown(&f.db, f.runs.paused)?["status"], "queued");
    let (_, err) = expect(&on(&f.db, &["answer", &paused, r#"{"approver": "bob"}"#])?, 7);
    assert!(err.contains("is queued, not paused"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_says_what_it_will_do_and_retry_requeues_a_failed_run() -> TestResult {
    let f = fixture().await?;
    let failed = f.runs.failed.to_string();

    // Retry: the failed run goes back to its queue.
    let retried = json_of(&on(&f.db, &["retry", &failed, "--json"])?, 0)?;
    assert_eq!(retried["status"], "queued");
    assert_eq!(retried["failed_steps"], json!(["check#1"]));
    assert!(shown(&f.db, f.runs.failed)?["due_at_ms"].is_i64(), "due now");
    let (_, err) = expect(&on(&f.db, &["retry", &failed])?, 7);
    assert!(err.contains("not failed") && err.contains("waits in its queue"), "{err}");
    let (_, err) = expect(&on(&f.db, &["retry", &f.runs.paused.to_string()])?, 7);
    assert!(err.contains("flows answer"), "{err}");

    // Cancel: without --yes and no terminal to ask on, it says what it would do and does nothing.
    let (_, err) = expect(&on(&f.db, &["cancel", &failed])?, 8);
    assert!(err.contains("--yes") && err.contains("undo steps") && err.contains("queue `default`"), "{err}");
    assert_eq!(shown(&f.db, f.runs.failed)?["cancel_requested"], Value::Null);
    let cancelled = json_of(&on(&f.db, &["cancel", &failed, "--yes", "--reason", "duplicate", "--json"])?, 0)?;
    assert_eq!((&cancelled["was"], &cancelled["status"]), (&json!("queued"), &json!("queued")));
    let show = shown(&f.db, f.runs.failed)?;
    assert_eq!((&show["cancel_requested"], &show["queue"]), (&json!("duplicate"), &json!("default")));
    let (text, _) = expect(&on(&f.db, &["show", &failed])?, 0);
    assert!(text.contains("cancel") && text.contains("requested (duplicate)"), "{text}");

    // Without compensation, a run at rest ends at once; one being executed is refused (4).
    let (text, _) = expect(&on(&f.db, &["cancel", &f.runs.paused.to_string(), "--no-compensate", "-y"])?, 0);
    assert!(text.contains("cancelled") && text.contains("nothing was undone"), "{text}");
    assert_eq!(shown(&f.db, f.runs.paused)?["status"], "cancelled");
    let (_, err) = expect(&on(&f.db, &["cancel", &f.runs.held.to_string(), "--no-compensate", "--yes"])?, 4);
    assert!(err.contains("worker-7"), "{err}");
    let (_, err) = expect(&on(&f.db, &["cancel", &f.runs.completed.to_string(), "--yes"])?, 7);
    assert!(err.contains("completed already"), "{err}");
    let listed = json_of(&on(&f.db, &["runs", "--status", "cancelled", "--json"])?, 0)?;
    assert_eq!(ids(&listed), [f.runs.paused.to_string()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_pages_with_a_cursor_and_filters_by_age() -> TestResult {
    let f = fixture().await?;
    let all = json_of(&on(&f.db, &["runs", "--json", "--limit", "0"])?, 0)?;
    assert_eq!(all["next"], Value::Null);
    let every = ids(&all);
    assert_eq!(every.len(), 5);
    let mut paged = Vec::new();
    let mut args = vec!["runs".to_string(), "--json".into(), "--limit".into(), "2".into()];
    for _ in 0..5 {
        let page = json_of(&on(&f.db, &args.iter().map(String::as_str).collect::<Vec<_>>())?, 0)?;
        paged.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => {
                args = vec!["runs".into(), "--json".into(), "--limit".into(), "2".into(), "--after".into(), next.into()]
            }
            None => break,
        }
    }
    assert_eq!(paged, every, "the pages make the whole listing");
    let (_, notes) = expect(&on(&f.db, &["runs", "--limit", "2"])?, 0);
    assert!(notes.contains("--after "), "{notes}");
    let before = json_of(&on(&f.db, &["runs", "--before", "30d", "--json"])?, 0)?;
    assert_eq!(ids(&before), [f.old.to_string()]);
    let (_, err) = expect(&on(&f.db, &["runs", "--after", "yesterday"])?, 1);
    assert!(err.contains("not a page cursor"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_names_the_run_a_restarted_run_began_from() -> TestResult {
    let f = fixture().await?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&f.db).await?);
    let runner = Runner::new(Ledger { ending: Ending::Balance }).with_shared_store(store);
    let restarted = runner.restart(f.runs.completed, None).await?.completed()?;
    // Began from the first run's final state and ran the start again.
    assert_eq!(restarted.state.total, 22);

    let (text, _) = expect(&on(&f.db, &["show", &restarted.run_id.to_string()])?, 0);
    let parent = text.lines().find(|l| l.starts_with("parent")).ok_or("no parent line")?;
    assert_eq!(
        parent.split_whitespace().collect::<Vec<_>>(),
        ["parent", &f.runs.completed.to_string(), "(forked", "or", "restarted", "from", "it)"]
    );
    let shown = json_of(&on(&f.db, &["show", "--json", &restarted.run_id.to_string()])?, 0)?;
    assert_eq!(shown["parent_run_id"], f.runs.completed.to_string());
    let (text, _) = expect(&on(&f.db, &["show", &f.runs.completed.to_string()])?, 0);
    assert!(!text.lines().any(|l| l.starts_with("parent")), "the source has no parent: {text}");
    Ok(())
}

/// Undoes its booking when paying fails: its runs end `compensated`.
struct Refunded;

#[flow(state = Books, name = "cli_refunded")]
impl Refunded {
    #[start]
    async fn book(&self, cx: &Ctx<Books>) -> Result<String> {
        cx.update(|s| s.items.push("booked".into()));
        Ok("B-1".into())
    }
    #[compensate(book)]
    async fn unbook(&self, cx: &Ctx<Books>, _booking: String) -> Result<()> {
        cx.update(|s| s.items.push("unbooked".into()));
        Ok(())
    }
    #[listen(book)]
    async fn pay(&self) -> Result<()> {
        Err(Error::permanent("card declined"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensated_runs_and_state_edits_are_listed_and_shown() -> TestResult {
    let f = fixture().await?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&f.db).await?);
    let compensated = match Runner::new(Refunded).with_shared_store(store.clone()).kickoff(Books::default()).await? {
        RunOutcome::Compensated(c) => c.run_id,
        other => return Err(format!("expected a compensated run, got {other:?}").into()),
    };
    let ledger = Runner::new(Ledger { ending: Ending::Balance }).with_shared_store(store.clone());
    ledger.update_state(f.runs.failed, "alice", "fixed the total", |s| s.total = 11).await?;
    drop(store);

    let listing = json_of(&on(&f.db, &["runs", "--json", "--status", "compensated"])?, 0)?;
    assert_eq!(ids(&listing), [compensated.to_string()]);
    assert_eq!(listing["runs"][0]["status"], "compensated");
    let (table, _) = expect(&on(&f.db, &["runs", "--status", "compensated"])?, 0);
    assert!(
        table.lines().nth(1).is_some_and(|l| l.starts_with(&compensated.to_string()) && l.contains("compensated")),
        "{table}"
    );

    let shown = json_of(&on(&f.db, &["show", &compensated.to_string(), "--json"])?, 0)?;
    assert_eq!(shown["status"], "compensated");
    assert_eq!(shown["error"], "method `pay` failed (card declined); compensation ran: `unbook` undid `book#1`");

    let shown = json_of(&on(&f.db, &["show", &f.runs.failed.to_string(), "--json"])?, 0)?;
    let checkpoints = shown["checkpoints"].as_array().ok_or("no checkpoints")?;
    let last = checkpoints.last().ok_or("no checkpoints")?;
    assert_eq!((&last["edited_by"], &last["edit_reason"]), (&json!("alice"), &json!("fixed the total")));
    assert_eq!(last["status"], "failed");
    let state = json_of(&on(&f.db, &["state", &f.runs.failed.to_string()])?, 0)?;
    assert_eq!(state["total"], 11);
    let (text, _) = expect(&on(&f.db, &["show", &f.runs.failed.to_string()])?, 0);
    assert!(text.contains("(edited by alice: fixed the total)"), "{text}");
    Ok(())
}
