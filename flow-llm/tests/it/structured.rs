//! Typed outputs: strict response_format on the wire, validation, one repair, then InvalidReply.

use std::sync::Arc;

use flow_core::{Classify, ErrorClass, NoJournal};
use flow_llm::{Agent, ChatRequest, Crew, Inputs, LlmError, Message, Reply, Task, TestServer, structured};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::common::llm;

/// A research report.
#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Report {
    title: String,
    findings: Vec<Finding>,
    confidence: f32,
    caveat: Option<String>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Finding {
    claim: String,
    source_count: u32,
}

fn report_json() -> serde_json::Value {
    json!({"title": "Tides", "findings": [{"claim": "the moon", "source_count": 3}], "confidence": 0.5, "caveat": null})
}

#[tokio::test]
async fn a_typed_task_requests_a_strict_schema_and_returns_the_value() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::json(&report_json()));
    let analyst = Agent::builder("Analyst", "Report", "Precise").llm(Arc::new(llm(&server))).build().unwrap();
    let crew = Crew::builder()
        .task(Task::new("Report on {topic}", "A report").agent(&analyst).output::<Report>().unwrap())
        .build()
        .unwrap();

    let out = crew.kickoff(&NoJournal, &Inputs::from([("topic", "tides")])).await.unwrap();
    let report: Report = out.value().unwrap();
    assert_eq!(report.findings[0].source_count, 3);
    assert_eq!(report.caveat, None);
    assert_eq!(out.json, Some(serde_json::to_value(&report).unwrap()));

    let format = &server.requests()[0].body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["name"], "Report");
    assert_eq!(format["json_schema"]["strict"], true);
    let schema = &format["json_schema"]["schema"];
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"], json!(["caveat", "confidence", "findings", "title"]));
    assert_eq!(schema["properties"]["findings"]["items"]["additionalProperties"], false);
    assert!(schema.get("$schema").is_none() && schema.get("$defs").is_none());
}

#[tokio::test]
async fn an_invalid_reply_gets_exactly_one_repair_attempt() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::text("Sure! The report is about tides."));
    server.enqueue(Reply::json(&report_json()));
    let client = llm(&server);
    let report: Report =
        structured::generate(&client, &NoJournal, ChatRequest::new(vec![Message::user("report")])).await.unwrap();
    assert_eq!(report.title, "Tides");
    assert_eq!(server.hits(), 2);
    let repair = &server.requests()[1].chat;
    let n = repair.messages.len();
    assert_eq!(repair.messages[n - 2].text_or_empty(), "Sure! The report is about tides.");
    assert!(repair.messages[n - 1].text_or_empty().contains("does not match the required JSON schema `Report`"));
    assert!(repair.response_format.is_some());
}

#[tokio::test]
async fn a_reply_still_invalid_after_the_repair_is_an_invalid_reply_with_the_raw_text() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::text("no json here"));
    server.enqueue(Reply::json(&json!({"title": "Tides"})));
    let analyst = Agent::builder("Analyst", "Report", "Precise").llm(Arc::new(llm(&server))).build().unwrap();
    let err = analyst.run_typed::<Report>(&NoJournal, "report").await.unwrap_err();
    match &err {
        LlmError::InvalidReply { raw, reason, expected } => {
            assert_eq!(raw, r#"{"title":"Tides"}"#);
            assert!(reason.contains("missing field"), "{reason}");
            assert!(expected.ends_with("Report"), "{expected}");
        }
        other => panic!("expected InvalidReply, got {other:?}"),
    }
    assert_eq!(err.class(), ErrorClass::InvalidReply);
    assert_eq!(flow_core::Error::from(err).class(), ErrorClass::InvalidReply);
    assert_eq!(server.hits(), 2, "one repair attempt, not more");
}

#[tokio::test]
async fn a_truncated_reply_is_repaired_and_a_refusal_is_reported() {
    let server = TestServer::start().await.unwrap();
    server.enqueue(Reply::text(r#"{"title": "Ti"#).finish_reason(flow_llm::FinishReason::Length));
    server.enqueue(Reply::json(&report_json()));
    server.enqueue(Reply::refusal("I can't help with that."));
    let client = llm(&server);
    let report: Report =
        structured::generate(&client, &NoJournal, ChatRequest::new(vec![Message::user("report")])).await.unwrap();
    assert_eq!(report.confidence, 0.5);
    assert!(server.requests()[1].chat.last_user_text().unwrap().contains("cut off at the token limit"));
    let err = structured::generate::<Report>(&client, &NoJournal, ChatRequest::new(vec![Message::user("x")]))
        .await
        .unwrap_err();
    assert!(matches!(&err, LlmError::Refusal { refusal } if refusal.contains("can't help")), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Permanent);
}
