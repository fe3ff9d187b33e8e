//! The dashboard as a person uses it, in headless Chromium: the runs list shows a run go from
//! running to completed without a reload; a paused run's page refuses a wrong answer with its
//! reason and takes a right one, and the run finishes while the page watches.
//!
//! The flows run in this process, on a `Worker` serving a SQLite store; `flows serve` (the
//! built binary) serves the same file. Chromium is Debian's (`apt-get install -y chromium
//! chromium-driver`), driven through chromedriver. Under `CI=true` a missing browser fails the
//! test; elsewhere it is skipped with a loud line on stderr.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/browser_support/mod.rs"]
mod browser_support;

mod serve_support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, Locator};
use flow_core::prelude::*;
use flow_core::store::{RunStatus, SqliteStore, Store};
use flow_core::{ServeOptions, Worker};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use uuid::Uuid;

/// Long enough for a loaded machine; the waits end as soon as the page shows what they want.
const PATIENCE: Duration = Duration::from_secs(90);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Work {
    began: bool,
    done: bool,
}

/// Begins, then waits at its second step until the test lets it go.
struct Gate {
    release: Arc<Semaphore>,
}

#[flow(state = Work, name = "dash_gate")]
impl Gate {
    #[start]
    async fn begin(&self, cx: &Ctx<Work>) -> Result<()> {
        cx.update(|s| s.began = true);
        Ok(())
    }

    #[listen(begin)]
    async fn hold(&self, cx: &Ctx<Work>) -> Result<()> {
        let permit = self.release.acquire().await.map_err(|e| Error::permanent(e.to_string()))?;
        permit.forget();
        cx.update(|s| s.done = true);
        Ok(())
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Order {
    approver: Option<String>,
    amount: u32,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
struct Approval {
    approver: String,
    amount: u32,
}

/// Asks a person to approve, with a typed answer.
struct Asker;

#[flow(state = Order, name = "dash_ask")]
impl Asker {
    #[start]
    async fn approve(&self, cx: &Ctx<Order>) -> Result<()> {
        let a: Approval = cx.ask(InputRequest::new("Who approves, and how much?")).await?;
        cx.update(move |s| {
            s.approver = Some(a.approver.clone());
            s.amount = a.amount;
        });
        Ok(())
    }
}

/// Waits until `check` gives `Some`, or fails naming `what` and the last thing seen.
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (Option<T>, String)>,
{
    let start = std::time::Instant::now();
    loop {
        let (got, seen) = check().await;
        if let Some(v) = got {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}; last seen: {seen}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn js(client: &Client, script: &str) -> Value {
    client.execute(script, vec![]).await.unwrap()
}

async fn until_stored(store: &Arc<dyn Store>, run_id: Uuid, want: RunStatus) {
    until(&format!("run {run_id} to be {want} in the store"), || async {
        let status = store.run_summary(run_id).await.unwrap().status;
        ((status == want).then_some(()), status.to_string())
    })
    .await;
}

/// The status the runs list shows for a run, as the page has it now.
async fn row_status(client: &Client, run_id: Uuid) -> String {
    let script = format!(
        "const r = document.querySelector('tr[data-run=\"{run_id}\"]'); return r ? r.dataset.status : 'absent';"
    );
    js(client, &script).await.as_str().unwrap_or_default().to_string()
}

/// Fills the answer form: its fields when the question carries a schema, else the JSON box.
async fn answer(client: &Client, approver: &str, amount: &str, json_text: &str) {
    let fields = js(client, "return document.getElementById('f.amount') !== null;").await;
    if fields == json!(true) {
        for (id, value) in [("f.approver", approver), ("f.amount", amount)] {
            let input = client.find(Locator::Css(&format!("[id=\"{id}\"]"))).await.unwrap();
            input.clear().await.unwrap();
            input.send_keys(value).await.unwrap();
        }
    } else {
        let input = client.find(Locator::Id("answer-json")).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(json_text).await.unwrap();
    }
    // The form posts and the browser loads the page answering it; a click can return before that
    // navigation has begun (a busy machine shows it), so wait for a new document, fully loaded:
    // what the test reads or marks next must be on the answer's page, not the form's.
    js(client, "window.flowsBeforeAnswer = true; return null;").await;
    client.find(Locator::Id("answer-submit")).await.unwrap().click().await.unwrap();
    until("the answer's page to load", || async {
        let script = "return window.flowsBeforeAnswer !== true && document.readyState === 'complete';";
        // A script sent while the browser navigates may fail: that is "not yet".
        match client.execute(script, vec![]).await {
            Ok(loaded) => ((loaded == json!(true)).then_some(()), loaded.to_string()),
            Err(e) => (None, e.to_string()),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_watches_runs_and_answers_one_in_chromium() {
    let Some(browser) =
        browser_support::open("a_person_watches_runs_and_answers_one_in_chromium", "to test the dashboard").await
    else {
        return;
    };
    let client = browser.client.clone();

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let release = Arc::new(Semaphore::new(0));
    let serving = Worker::new(store.clone())
        .register(Gate { release: release.clone() })
        .register(Asker)
        .serve(ServeOptions::new().name("dashboard-test").poll_interval(Duration::from_millis(100)));
    let server = serve_support::serve(&db, &[]);
    let base = format!("http://{}", server.addr);

    // The runs list, open before the run exists: it appears, running, then completes, and the
    // page is never reloaded (the marker set on it survives).
    client.goto(&format!("{base}/runs")).await.unwrap();
    js(&client, "window.stillTheSamePage = true; return null;").await;
    let gated = Runner::new(Gate { release: release.clone() }).with_shared_store(store.clone());
    let gate_run = gated.submit(Work::default()).await.unwrap();
    until_stored(&store, gate_run, RunStatus::Running).await;
    until("the list to show the run running", || async {
        let s = row_status(&client, gate_run).await;
        ((s == "running").then_some(()), s)
    })
    .await;
    release.add_permits(1);
    until("the list to show the run completed", || async {
        let s = row_status(&client, gate_run).await;
        ((s == "completed").then_some(()), s)
    })
    .await;
    assert_eq!(js(&client, "return window.stillTheSamePage === true;").await, json!(true), "the page was reloaded");

    // A paused run: a wrong answer is refused with its reason and stores nothing.
    let asker = Runner::new(Asker).with_shared_store(store.clone());
    let ask_run = asker.submit(Order::default()).await.unwrap();
    until_stored(&store, ask_run, RunStatus::Paused).await;
    client.goto(&format!("{base}/runs/{ask_run}")).await.unwrap();
    let prompt = client.find(Locator::Css("#run-question .prompt")).await.unwrap().text().await.unwrap();
    assert_eq!(prompt, "Who approves, and how much?");
    answer(&client, "ann", "-5", "{\"approver\": \"ann\", ").await;
    let errors = client.find(Locator::Id("answer-errors")).await.unwrap().text().await.unwrap();
    assert!(
        errors.contains("not JSON") || (errors.contains("/amount") && errors.contains("-5")),
        "the error does not say what is wrong: {errors}"
    );
    let run = store.load_run(ask_run).await.unwrap();
    assert_eq!((run.status, run.answer.is_none()), (RunStatus::Paused, true), "a refused answer was stored");

    // The right answer: the run continues and the page shows it completed by itself.
    answer(&client, "ann", "250", "{\"approver\": \"ann\", \"amount\": 250}").await;
    js(&client, "window.stillTheSamePage = true; return null;").await;
    until("the run page to show the run completed", || async {
        let s =
            js(&client, "const e = document.getElementById('run-summary'); return e ? e.dataset.status : 'absent';")
                .await;
        let s = s.as_str().unwrap_or_default().to_string();
        ((s == "completed").then_some(()), s)
    })
    .await;
    // The graph, drawn from the stored GraphDoc, has the step's node coloured as it went.
    until("the graph to colour `approve` completed", || async {
        let c = js(&client, "const g = document.querySelector('#run-graph [data-node=\"approve\"]'); return g ? g.getAttribute('class') : 'absent';").await;
        let c = c.as_str().unwrap_or_default().to_string();
        (c.split(' ').any(|k| k == "step-completed").then_some(()), c)
    })
    .await;
    assert_eq!(js(&client, "return window.stillTheSamePage === true;").await, json!(true), "the page was reloaded");
    let state: Order = store.load_run(ask_run).await.unwrap().snapshot.state_as().unwrap();
    assert_eq!((state.approver.as_deref(), state.amount), (Some("ann"), 250));
    let shown = client.find(Locator::Id("state")).await.unwrap().text().await.unwrap();
    assert!(shown.contains("\"approver\": \"ann\""), "the page shows the final state: {shown}");

    client.close().await.unwrap();
    let summary = serving.shutdown(Duration::from_secs(30)).await;
    assert_eq!(summary.errors, 0, "{summary:?}");
}
