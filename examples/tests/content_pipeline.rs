//! The content pipeline, offline end to end: the quality router loops back for deeper research
//! twice and then passes; on a topic the scripted analyst never becomes sure of, the loop stops
//! at its cap and the article is written with caveats.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flow_core::RunStatus;
use flow_core::events::FlowEvent;
use flow_core::store::{SqliteStore, StepStatus, Store};
use flow_examples::content_pipeline::{self, Config, MAX_DEEPENING, Quality};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn research_loops_back_twice_then_writes_and_edits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let out = content_pipeline::run(Config::offline(&db)).await.unwrap();

    assert_eq!(
        out.routes,
        [
            "evaluate_quality → Quality::Insufficient",
            "evaluate_quality → Quality::Insufficient",
            "evaluate_quality → Quality::Sufficient"
        ]
    );
    let state = &out.state;
    assert_eq!(state.research_rounds, 1 + MAX_DEEPENING);
    assert_eq!(state.verdict, Some(Quality::Sufficient));
    assert!(state.quality_gaps.is_empty());
    let checks: Vec<(u32, Quality, usize)> = state.checks.iter().map(|c| (c.round, c.verdict, c.gaps.len())).collect();
    assert_eq!(checks, [(1, Quality::Insufficient, 3), (2, Quality::Insufficient, 2), (3, Quality::Sufficient, 0)]);
    let brief = state.research.as_ref().unwrap();
    assert!(brief.confidence >= content_pipeline::MIN_CONFIDENCE);
    assert_eq!((brief.sources.len(), brief.key_statistics.len()), (4, 4));
    assert!(state.draft.as_deref().unwrap().starts_with("# Heat pumps in cold climates"));
    let article = state.article.as_ref().unwrap();
    assert_eq!(article.title, "Heat pumps in cold climates: what the numbers say");
    assert_eq!(article.editor_notes.len(), 3);

    // 3 research rounds x 3 calls (search request, notes, brief) + writer + editor.
    assert_eq!(out.llm_requests, Some(11));
    assert!(out.usage.total_tokens > 0);
    let usage_events = out.events.iter().filter(|e| matches!(e, FlowEvent::LlmUsage { .. })).count();
    assert_eq!(usage_events, 11);

    // The stored run: completed, with every step recorded.
    assert_eq!(out.stored_status, RunStatus::Completed);
    assert_eq!(out.db_path, db);
    let store = SqliteStore::open(&db).await.unwrap();
    assert_eq!(store.load_run(out.run_id).await.unwrap().status, RunStatus::Completed);
    let steps = store.steps(out.run_id).await.unwrap();
    let methods: Vec<&str> = steps.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "research",
            "evaluate_quality",
            "deepen_research",
            "evaluate_quality",
            "deepen_research",
            "evaluate_quality",
            "write_draft",
            "edit"
        ]
    );
    assert!(steps.iter().all(|s| s.status == StepStatus::Completed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_stops_after_two_deepenings_and_writes_with_caveats() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::offline(dir.path().join("runs.db"));
    config.topic = "room-temperature superconductors".into();
    let out = content_pipeline::run(config).await.unwrap();

    assert_eq!(
        out.routes,
        [
            "evaluate_quality → Quality::Insufficient",
            "evaluate_quality → Quality::Insufficient",
            "evaluate_quality → Quality::BestEffort"
        ]
    );
    assert_eq!(out.state.research_rounds, 3);
    assert_eq!(out.state.verdict, Some(Quality::BestEffort));
    assert!(out.state.quality_gaps.iter().any(|g| g.contains("confidence 0.30")), "{:?}", out.state.quality_gaps);
    assert!(out.state.article.is_some());
    assert_eq!(out.stored_status, RunStatus::Completed);
}

/// The article's draft reaches the caller piece by piece as the writer's model streams it, in
/// more than one piece, and the pieces make the draft the run keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_draft_streams_piece_by_piece() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let mut pieces: Vec<String> = Vec::new();
    let mut done = 0;
    let out = content_pipeline::run_streaming(Config::offline(&db), |draft| match draft {
        content_pipeline::Draft::Token(t) => {
            assert_eq!(done, 0, "no piece after the end");
            pieces.push(t.to_owned());
        }
        content_pipeline::Draft::Done => done += 1,
    })
    .await
    .unwrap();
    assert!(pieces.len() > 1, "streamed in pieces: {pieces:?}");
    assert_eq!(done, 1);
    assert_eq!(Some(pieces.concat()), out.state.draft);
}
