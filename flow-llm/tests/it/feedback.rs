//! Human feedback mapped onto a route enum, failing closed when unclear.

use flow_core::{Classify, ErrorClass, NoJournal};
use flow_llm::feedback::route_feedback;
use flow_llm::{LlmError, Match, Reply, TestServer};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use crate::common::llm;

#[derive(Debug, PartialEq, Deserialize, JsonSchema)]
enum Review {
    /// Publish the draft as it is.
    Approve,
    /// Send the draft back for another round of edits.
    Revise,
    /// Drop the article.
    Reject,
}

#[tokio::test]
async fn an_answer_is_mapped_onto_a_route_through_structured_output() {
    let server = TestServer::start().await.unwrap();
    server
        .when(Match::schema_named("FeedbackRoute").and(Match::last_user_contains("tighten the intro")))
        .reply(Reply::json(&json!({"route": "Revise", "reason": "asks for edits"})));
    let decision = route_feedback::<Review>(
        &llm(&server),
        &NoJournal,
        "Should we publish the draft?",
        "Almost there, but tighten the intro first.",
    )
    .await
    .unwrap();
    assert_eq!(decision.route, Review::Revise);
    assert_eq!(decision.reason, "asks for edits");

    let sent = &server.requests()[0];
    let schema = &sent.body["response_format"]["json_schema"];
    assert_eq!(schema["strict"], true);
    let mut routes: Vec<String> =
        serde_json::from_value(schema["schema"]["properties"]["route"]["enum"].clone()).unwrap();
    routes.sort();
    assert_eq!(routes, ["Approve", "Reject", "Revise", "unclear"]);
    let prompt = sent.chat.last_user_text().unwrap();
    assert!(prompt.contains("Should we publish the draft?"));
    assert!(prompt.contains("- Revise: Send the draft back for another round of edits."), "{prompt}");
}

#[tokio::test]
async fn an_unclear_answer_fails_closed() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::json(&json!({"route": "unclear", "reason": "talks about the weather"})));
    let err = route_feedback::<Review>(&llm(&server), &NoJournal, "Publish?", "nice weather today").await.unwrap_err();
    match &err {
        LlmError::UnclearFeedback { answer, routes, reason } => {
            assert_eq!(answer, "nice weather today");
            assert_eq!(routes.len(), 3);
            assert_eq!(reason, "talks about the weather");
        }
        other => panic!("expected UnclearFeedback, got {other:?}"),
    }
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains("ask the person again"));
}

#[tokio::test]
async fn an_empty_answer_fails_closed_without_asking_the_model() {
    let server = TestServer::start().await.unwrap();
    let err = route_feedback::<Review>(&llm(&server), &NoJournal, "Publish?", "   ").await.unwrap_err();
    assert!(matches!(err, LlmError::UnclearFeedback { .. }), "{err:?}");
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn a_route_outside_the_enum_is_repaired_once_then_rejected() {
    let server = TestServer::start().await.unwrap();
    server.respond_with(|_| Reply::json(&json!({"route": "Maybe", "reason": "hedging"})));
    let err = route_feedback::<Review>(&llm(&server), &NoJournal, "Publish?", "hmm").await.unwrap_err();
    assert!(matches!(&err, LlmError::InvalidReply { raw, .. } if raw.contains("Maybe")), "{err:?}");
    assert_eq!(server.hits(), 2);
}
