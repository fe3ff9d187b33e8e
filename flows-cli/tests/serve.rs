//! `flows serve` over HTTP: pages escape what runs hold, every action needs the CSRF token and
//! its own origin (a refused one writes nothing), a bad request gets an error page, a
//! non-loopback bind needs a token and the token guards every page.

mod serve_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use flow_core::prelude::*;
use flow_core::store::{JournalEntry, RunStatus, SqliteStore, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serve_support::{csrf_of, get, post_form, request, serve};
use uuid::Uuid;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

const SCRIPT: &str = "<script>alert('owned')</script>";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Note {
    text: String,
    approver: Option<String>,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
struct Approval {
    approver: String,
}

struct Notes {
    ask: bool,
}

#[flow(state = Note, name = "serve_notes")]
impl Notes {
    #[start]
    async fn write(&self, cx: &Ctx<Note>) -> Result<()> {
        cx.update(|s| s.text = SCRIPT.into());
        Ok(())
    }

    #[listen(write)]
    async fn approve(&self, cx: &Ctx<Note>) -> Result<()> {
        if self.ask {
            let a: Approval = cx.ask(InputRequest::new("Approve <img src=x onerror=alert(1)>?")).await?;
            cx.update(move |s| s.approver = Some(a.approver.clone()));
        }
        Ok(())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    store: Arc<dyn Store>,
    completed: Uuid,
    paused: Uuid,
}

async fn fixture() -> std::result::Result<Fixture, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("runs.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await?);
    let runner = |ask| Runner::new(Notes { ask }).with_shared_store(store.clone());
    let completed = runner(false).kickoff(Note::default()).await?.completed()?.run_id;
    let paused = match runner(true).kickoff(Note::default()).await? {
        RunOutcome::Paused(p) => p.run_id,
        other => return Err(format!("expected a pause, got {other:?}").into()),
    };
    let step = store.steps(completed).await?.into_iter().next().ok_or("no step recorded")?;
    store
        .journal_put(JournalEntry {
            run_id: completed,
            step_key: step.step_key,
            seq: 0,
            kind: "llm".into(),
            name: "m-<1>".into(),
            request_hash: 1,
            output: json!({"content": "hi", "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}),
        })
        .await?;
    Ok(Fixture { _dir: dir, db, store, completed, paused })
}

/// The paused run is still waiting, with no answer stored.
async fn untouched(f: &Fixture) -> TestResult {
    let run = f.store.load_run(f.paused).await?;
    assert_eq!(run.status, RunStatus::Paused);
    assert!(run.answer.is_none(), "a refused request stored an answer: {:?}", run.answer);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_escape_what_runs_hold() -> TestResult {
    let f = fixture().await?;
    let server = serve(&f.db, &[]);
    let runs = get(&server.addr, "/runs");
    assert_eq!(runs.status, 200, "{}", runs.body);
    assert!(runs.body.contains(&f.completed.to_string()) && runs.body.contains(&f.paused.to_string()));
    assert!(!runs.body.contains("<img src=x"), "the question went out as markup: {}", runs.body);
    assert!(runs.body.contains("Approve &lt;img src=x onerror=alert(1)&gt;?"), "{}", runs.body);
    assert_eq!(runs.header("x-content-type-options"), Some("nosniff"));
    assert!(runs.header("content-security-policy").is_some_and(|c| c.contains("script-src 'self'")));

    let page = get(&server.addr, &format!("/runs/{}", f.completed));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("<script>alert"), "a state value went out as markup: {}", page.body);
    assert!(page.body.contains("&lt;script&gt;alert("), "{}", page.body);
    // The first checkpoint's state, and the change to the next one.
    let first = get(&server.addr, &format!("/runs/{}?at=1", f.completed));
    assert_eq!(first.status, 200);
    let at2 = get(&server.addr, &format!("/runs/{}?at=2", f.completed));
    assert!(at2.body.contains("Changed since checkpoint 1") && at2.body.contains("/text"), "{}", at2.body);

    // The flow's graph, as the store keeps it, with a node per method.
    assert!(
        page.body.contains(r#"data-node="write""#) && page.body.contains(r#"data-node="approve""#),
        "{}",
        page.body
    );
    // An LLM call the step journaled, with its tokens.
    assert!(page.body.contains("LLM calls (1)") && page.body.contains("12 in / 5 out"), "{}", page.body);
    assert!(page.body.contains("m-&lt;1&gt;"), "the model name is escaped: {}", page.body);

    let paused = get(&server.addr, &format!("/runs/{}", f.paused));
    assert!(paused.body.contains("id=\"answer-form\""), "{}", paused.body);
    assert!(!paused.body.contains("<img src=x"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_the_csrf_token_and_their_own_origin() -> TestResult {
    let f = fixture().await?;
    let server = serve(&f.db, &[]);
    let page = get(&server.addr, &format!("/runs/{}", f.paused));
    let csrf = csrf_of(&page.body);
    let step_key = f.store.run_summary(f.paused).await?.pause.and_then(|p| p["step_key"].as_str().map(String::from));
    let step_key = step_key.ok_or("the pause names no step")?;
    let path = format!("/runs/{}/answer", f.paused);
    let answer = r#"{"approver": "ann"}"#;

    let missing = post_form(&server.addr, &path, &[("step_key", &step_key), ("json", answer)]);
    assert_eq!(missing.status, 403, "{}", missing.body);
    assert!(missing.body.contains("no security token") && missing.body.contains("Nothing was changed"));
    let wrong = post_form(&server.addr, &path, &[("csrf", "00ff"), ("step_key", &step_key), ("json", answer)]);
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    let body = serve_support::form_body(&[("csrf", &csrf), ("step_key", &step_key), ("json", answer)]);
    let foreign = request(
        &server.addr,
        "POST",
        &path,
        &[("Content-Type", "application/x-www-form-urlencoded"), ("Origin", "http://evil.example")],
        &body,
    );
    assert_eq!(foreign.status, 403, "{}", foreign.body);
    assert!(foreign.body.contains("another site"), "{}", foreign.body);
    let cancel = post_form(&server.addr, &format!("/runs/{}/cancel", f.paused), &[]);
    assert_eq!(cancel.status, 403);
    untouched(&f).await?;

    // A wrong answer: the page again, with the reason, and nothing stored.
    let bad = post_form(&server.addr, &path, &[("csrf", &csrf), ("step_key", &step_key), ("json", "{approver: ann")]);
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.contains("the answer is not JSON"), "{}", bad.body);
    untouched(&f).await?;
    // An answer to a question the run no longer asks.
    let stale = post_form(&server.addr, &path, &[("csrf", &csrf), ("step_key", "other#0"), ("json", answer)]);
    assert_eq!(stale.status, 409, "{}", stale.body);
    untouched(&f).await?;

    let ok = post_form(&server.addr, &path, &[("csrf", &csrf), ("step_key", &step_key), ("json", answer)]);
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(ok.header("location"), Some(format!("/runs/{}", f.paused).as_str()));
    let run = f.store.load_run(f.paused).await?;
    assert_eq!(run.answer.map(|a| a.value), Some(json!({"approver": "ann"})));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_an_error_page() -> TestResult {
    let f = fixture().await?;
    let server = serve(&f.db, &[]);
    let cases = [
        ("/runs/not-a-run", 400, "`not-a-run` is not a run id"),
        ("/runs?status=done", 400, "`done` is not a run status"),
        ("/runs?before=yesterday", 400, "not a page position"),
        (&format!("/runs/{}", Uuid::now_v7()) as &str, 404, "not found in the store"),
        (&format!("/runs/{}?at=99", f.completed), 404, "keeps no checkpoint 99"),
        ("/nowhere", 404, "no such page"),
    ];
    for (path, status, text) in cases {
        let r = get(&server.addr, path);
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert!(r.body.to_lowercase().contains(&text.to_lowercase()), "{path}: {}", r.body);
        assert!(r.body.contains("Nothing was changed"), "{path}");
    }
    // Retrying a run that has not failed is refused, and changes nothing.
    let csrf = csrf_of(&get(&server.addr, &format!("/runs/{}", f.paused)).body);
    let retry = post_form(&server.addr, &format!("/runs/{}/retry", f.paused), &[("csrf", &csrf)]);
    assert_eq!(retry.status, 409, "{}", retry.body);
    untouched(&f).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_bind_needs_a_token() -> TestResult {
    let f = fixture().await?;
    let out =
        serve_support::flows().arg("--db").arg(&f.db).args(["serve", "--bind", "0.0.0.0", "--port", "0"]).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing to serve on 0.0.0.0 without a token") && stderr.contains("--token"), "{stderr}");
    assert!(out.stdout.is_empty(), "it must not have started");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_guards_every_page() -> TestResult {
    let f = fixture().await?;
    let server = serve(&f.db, &["--token", "s3cret-t0ken"]);
    let addr = &server.addr;
    let anonymous = get(addr, "/runs?status=paused");
    assert_eq!(anonymous.status, 303);
    assert_eq!(anonymous.header("location"), Some("/login?next=%2Fruns%3Fstatus%3Dpaused"));
    let answer = post_form(addr, &format!("/runs/{}/answer", f.paused), &[("json", "{}")]);
    assert_eq!(answer.status, 401, "{}", answer.body);
    let wrong = request(addr, "GET", "/runs", &[("Authorization", "Bearer s3cret")], "");
    assert_eq!(wrong.status, 303);
    let bearer = request(addr, "GET", "/runs", &[("Authorization", "Bearer s3cret-t0ken")], "");
    assert_eq!(bearer.status, 200, "{}", bearer.body);

    // The sign-in form sets an HttpOnly, SameSite=Strict cookie.
    let login = get(addr, "/login?next=/runs");
    assert_eq!(login.status, 200);
    let csrf = csrf_of(&login.body);
    let refused = post_form(addr, "/login", &[("csrf", &csrf), ("token", "guess"), ("next", "/runs")]);
    assert_eq!(refused.status, 401);
    assert!(refused.header("set-cookie").is_none());
    let signed = post_form(addr, "/login", &[("csrf", &csrf), ("token", "s3cret-t0ken"), ("next", "//evil.example")]);
    assert_eq!(signed.status, 303, "{}", signed.body);
    assert_eq!(signed.header("location"), Some("/runs"), "only local paths are followed");
    let cookie = signed.header("set-cookie").ok_or("no cookie")?.to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains("s3cret-t0ken"), "the cookie must not carry the token itself: {cookie}");
    let pair = cookie.split(';').next().unwrap_or_default();
    let with_cookie = request(addr, "GET", "/runs", &[("Cookie", pair)], "");
    assert_eq!(with_cookie.status, 200);
    untouched(&f).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_loopback_hosts_are_answered() -> TestResult {
    let f = fixture().await?;
    let server = serve(&f.db, &[]);
    let rebound = request(&server.addr, "GET", "/runs", &[("Host", "evil.example:80")], "");
    assert_eq!(rebound.status, 421, "{}", rebound.body);
    let local = request(&server.addr, "GET", "/runs", &[("Host", "localhost:80")], "");
    assert_eq!(local.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_says_when_the_list_changed() -> TestResult {
    let f = fixture().await?;
    let server = serve(&f.db, &[]);
    let mut stream = TcpStream::connect(&server.addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let host = &server.addr;
    write!(stream, "GET /events/runs?since=stale HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("event: changed") {
        let n = stream.read(&mut buf)?;
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("text/event-stream"), "{seen}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_form_follows_the_question_schema() -> TestResult {
    let f = fixture().await?;
    let schema = json!({
        "type": "object",
        "properties": {
            "approver": {"type": "string", "minLength": 2},
            "tier": {"type": "string", "enum": ["gold", "silver"]},
            "urgent": {"type": "boolean"}
        },
        "required": ["approver", "tier"]
    });
    let conn = rusqlite::Connection::open(&f.db)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute(
        "UPDATE flow_runs SET pause = json_set(pause, '$.answer_schema', json(?2)) WHERE run_id = ?1",
        (f.paused.to_string(), schema.to_string()),
    )?;
    let server = serve(&f.db, &[]);
    let page = get(&server.addr, &format!("/runs/{}", f.paused));
    for input in [r#"type="text" id="f.approver""#, r#"<select id="f.tier""#, r#"type="checkbox" id="f.urgent""#] {
        assert!(page.body.contains(input), "no `{input}` in {}", page.body);
    }
    let csrf = csrf_of(&page.body);
    let step_key = f.store.run_summary(f.paused).await?.pause.and_then(|p| p["step_key"].as_str().map(String::from));
    let step_key = step_key.ok_or("the pause names no step")?;
    let path = format!("/runs/{}/answer", f.paused);

    let short = post_form(
        &server.addr,
        &path,
        &[("csrf", &csrf), ("step_key", &step_key), ("f.approver", "a"), ("f.tier", "\"gold\"")],
    );
    assert_eq!(short.status, 422, "{}", short.body);
    assert!(short.body.contains("/approver"), "the error names the field: {}", short.body);
    assert!(short.body.contains(r#"value="a""#), "what was typed is kept: {}", short.body);
    untouched(&f).await?;

    let ok = post_form(
        &server.addr,
        &path,
        &[
            ("csrf", &csrf),
            ("step_key", &step_key),
            ("f.approver", "ann"),
            ("f.tier", "\"silver\""),
            ("f.urgent", "on"),
        ],
    );
    assert_eq!(ok.status, 303, "{}", ok.body);
    let run = f.store.load_run(f.paused).await?;
    assert_eq!(run.answer.map(|a| a.value), Some(json!({"approver": "ann", "tier": "silver", "urgent": true})));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_list_pages_newest_first() -> TestResult {
    let f = fixture().await?;
    let runner = Runner::new(Notes { ask: false }).with_shared_store(f.store.clone());
    for _ in 0..55 {
        runner.kickoff(Note::default()).await?.completed()?;
    }
    let server = serve(&f.db, &[]);
    let rows = |body: &str| -> Vec<String> {
        body.split("data-run=\"").skip(1).filter_map(|s| s.split('"').next()).map(String::from).collect()
    };
    let first = get(&server.addr, "/runs");
    let first_rows = rows(&first.body);
    assert_eq!(first_rows.len(), 50, "{}", first.body);
    let next =
        first.body.split("class=\"next\" href=\"").nth(1).and_then(|s| s.split('"').next()).ok_or("no next link")?;
    let second = get(&server.addr, &next.replace("&amp;", "&"));
    assert_eq!(second.status, 200, "{}", second.body);
    let second_rows = rows(&second.body);
    // 57 runs: the fixture's two and 55 more.
    assert_eq!(second_rows.len(), 7, "{}", second.body);
    assert!(second_rows.iter().all(|r| !first_rows.contains(r)), "a run is on both pages");
    assert!(!second.body.contains("class=\"next\""), "no page after the last");
    let listed = f.store.list_runs(&flow_core::store::RunFilter::default()).await?;
    let all: Vec<String> = listed.iter().map(|r| r.run_id.to_string()).collect();
    assert_eq!([first_rows, second_rows].concat(), all, "newest first, as the store lists them");
    Ok(())
}
