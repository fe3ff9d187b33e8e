//! Memory through the endpoint's `/v1/embeddings` (`OpenAiEmbedder` against the test server's
//! deterministic embeddings): recall by meaning, and `remember` / `recall` as journaled effects
//! across a crash.

use std::sync::Arc;
use std::time::Duration;

use flow_core::memory::{Memory, Recall, Remember};
use flow_core::prelude::*;
use flow_core::store::{SqliteStore, Store};
use flow_core::{NoJournal, RunStatus};
use flow_llm::{OpenAiEmbedder, TestServer};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

fn embedder(server: &TestServer) -> OpenAiEmbedder {
    OpenAiEmbedder::new(&server.llm_builder().build().unwrap())
}

#[tokio::test]
async fn a_paraphrase_recalls_its_record_among_distractors() {
    let server = TestServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("runs.db")).await.unwrap());
    let memory = Memory::new(store, Arc::new(embedder(&server)));
    let facts = [
        ("acme", "Acme Corp raised a Series B round and now has 120 employees"),
        ("globex", "Globex ships industrial pumps to customers in Brazil"),
        ("initech", "Initech's invoices always charge VAT at 21 percent"),
        ("umbrella", "Umbrella's CEO replied to our email within a day"),
        ("hooli", "Hooli is a large firm buying cloud storage every quarter"),
        ("soylent", "Soylent corrected a pricing mistake on its last order"),
    ];
    for (company, fact) in facts {
        memory.remember(&NoJournal, Remember::new(format!("company/{company}"), fact)).await.unwrap();
    }
    let paraphrases = [
        ("how many staff does the company have after its funding", "acme"),
        ("which business delivers pumps to Brazilian clients", "globex"),
        ("what tax rate is on the invoice", "initech"),
        ("did their chief answer the message quickly", "umbrella"),
        ("a big company that purchases storage in the cloud", "hooli"),
        ("a price error that was fixed on an order", "soylent"),
    ];
    for (query, company) in paraphrases {
        let found = memory.recall(&NoJournal, Recall::new("company", query).k(3)).await.unwrap();
        assert_eq!(found[0].scope, format!("company/{company}"), "{query:?} recalled {found:#?}");
        assert!(found[0].similarity > found[1].similarity, "{query:?}: a clear winner, not a tie: {found:#?}");
    }
    assert_eq!(server.embedding_requests(), facts.len() + paraphrases.len(), "one call per remember and recall");
}

#[tokio::test]
async fn the_test_server_refuses_what_it_does_not_serve() {
    let server = TestServer::start().await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/embeddings", server.base_url());
    for (body, says) in [
        (serde_json::json!({"model": "m", "input": [1, 2, 3]}), "array of strings"),
        (serde_json::json!({"model": "m"}), "'input'"),
        (serde_json::json!({"model": "m", "input": "x", "dimensions": 0}), "'dimensions'"),
    ] {
        let response = http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 400);
        let error: serde_json::Value = response.json().await.unwrap();
        assert!(error["error"]["message"].as_str().unwrap().contains(says), "{error}");
    }
    let response = http.post(&url).json(&serde_json::json!({"model": "m", "input": "x", "dimensions": 8})).send().await;
    let body: serde_json::Value = response.unwrap().json().await.unwrap();
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(body["model"], "m");
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Notes {
    recalled: Vec<String>,
}

/// Recalls what is known about Acme and remembers something new; the first time, it stops for
/// good after both are journaled, as a process that dies there would.
struct Learn {
    journaled: Arc<Notify>,
    die: bool,
}

#[flow(state = Notes)]
impl Learn {
    #[start]
    async fn learn(&self, cx: &Ctx<Notes>) -> Result<String> {
        let known = cx.recall("company/acme", "how many employees", 2).await?;
        let id =
            cx.remember("company/acme", "Acme opened an office in Lisbon", serde_json::json!({"run": "learn"})).await?;
        if self.die {
            self.journaled.notify_one();
            std::future::pending::<()>().await;
        }
        let recalled: Vec<String> = known.into_iter().map(|r| r.content).collect();
        cx.update(move |s| s.recalled = recalled.clone());
        Ok(id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_run_again_after_a_crash_gets_the_same_recall_and_stores_nothing_twice() {
    let server = TestServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let store = Arc::new(SqliteStore::open(&db).await.unwrap());
    let memory = Memory::new(store.clone(), Arc::new(embedder(&server)));
    memory.remember(&NoJournal, Remember::new("company/acme", "Acme has 120 employees")).await.unwrap();

    // The first process: the step's recall and remember are journaled, then it dies.
    let journaled = Arc::new(Notify::new());
    let crashing = Runner::new(Learn { journaled: journaled.clone(), die: true })
        .with_shared_store(store.clone())
        .with_embedder(embedder(&server))
        .lease(Duration::from_millis(300));
    let task = tokio::spawn(async move { crashing.kickoff(Notes::default()).await });
    journaled.notified().await;
    task.abort();
    let _ = task.await;
    assert_eq!(server.embedding_requests(), 3, "seed, recall, remember");
    let run_id = store.list_runs(&Default::default()).await.unwrap()[0].run_id;
    assert_ne!(store.load_run(run_id).await.unwrap().status, RunStatus::Completed);

    // Meanwhile something that would now rank first is learned.
    memory
        .remember(&NoJournal, Remember::new("company/acme", "Acme now has 300 employees").importance(1.0))
        .await
        .unwrap();
    assert_eq!(server.embedding_requests(), 4);

    // Another process resumes the run from the same file.
    let store = SqliteStore::open(&db).await.unwrap();
    let runner =
        Runner::new(Learn { journaled, die: false }).with_store(store.clone()).with_embedder(embedder(&server));
    let run = loop {
        match runner.resume(run_id).await {
            Err(FlowError::RunLocked { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            other => break other.unwrap().completed().unwrap(),
        }
    };
    assert_eq!(run.state.recalled, ["Acme has 120 employees"], "the journaled recall, not a new one");
    assert_eq!(server.embedding_requests(), 4, "the resumed step embedded nothing");
    let all = memory.recall(&NoJournal, Recall::new("company/acme", "Lisbon office").k(100)).await.unwrap();
    let lisbon: Vec<_> = all.iter().filter(|r| r.content.contains("Lisbon")).collect();
    assert_eq!(lisbon.len(), 1, "remembered once: {all:#?}");
    assert_eq!(lisbon[0].id, run.output::<String>().unwrap());
    assert_eq!(all.len(), 3);
}
