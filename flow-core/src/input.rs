//! Human in the loop: a method asks a person for a typed value; the run pauses until
//! [`Runner::resume_with`](crate::Runner::resume_with) brings the answer, in this process or
//! another, minutes or days later.
//!
//! ```
//! use flow_core::prelude::*;
//! use flow_core::store::MemoryStore;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Debug, Default, Serialize, Deserialize)]
//! struct Draft { text: String, approved: bool }
//!
//! #[derive(Serialize, Deserialize, flow_core::schemars::JsonSchema)]
//! #[schemars(crate = "flow_core::schemars")]
//! struct Approval { approve: bool }
//!
//! struct Review;
//!
//! #[flow(state = Draft)]
//! impl Review {
//!     #[start]
//!     async fn ask_editor(&self, cx: &Ctx<Draft>) -> Result<()> {
//!         let answer: Approval = cx.ask(InputRequest::new("Publish this draft?")).await?;
//!         cx.update(move |s| s.approved = answer.approve);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), FlowError> {
//! let runner = Runner::new(Review).with_store(MemoryStore::new());
//! let paused = match runner.kickoff(Draft::default()).await? {
//!     RunOutcome::Paused(p) => p,
//!     other => panic!("expected a pause, got {other:?}"),
//! };
//! assert_eq!(paused.request.prompt, "Publish this draft?");
//! // The answer's JSON Schema is stored with the question.
//! assert_eq!(paused.request.answer_schema["properties"]["approve"]["type"], "boolean");
//! let done = runner.resume_with(paused.run_id, serde_json::json!({"approve": true})).await?;
//! assert!(done.completed()?.state.approved);
//! # Ok(())
//! # }
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// What a method asks a person.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputRequest {
    /// The question.
    pub prompt: String,
    /// Anything a UI needs to show the question (the draft, the amounts, links).
    #[serde(default)]
    pub metadata: Value,
}

impl InputRequest {
    /// A question with no metadata.
    pub fn new(prompt: impl Into<String>) -> Self {
        InputRequest { prompt: prompt.into(), metadata: Value::Null }
    }

    /// Adds metadata.
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }
}

impl From<&str> for InputRequest {
    fn from(prompt: &str) -> Self {
        InputRequest::new(prompt)
    }
}

impl From<String> for InputRequest {
    fn from(prompt: String) -> Self {
        InputRequest::new(prompt)
    }
}

/// A stored request for input: what a paused run waits for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PauseRequest {
    /// The run.
    pub run_id: Uuid,
    /// The method waiting.
    pub method: String,
    /// Its step key.
    pub step_key: String,
    /// The question and its metadata.
    pub prompt: String,
    /// See [`InputRequest::metadata`].
    pub metadata: Value,
    /// The Rust type the answer must deserialize into.
    pub expected_type: String,
    /// The JSON Schema of that type, so a program without the flow's code can show the
    /// question and check an answer (`Null` in pauses stored before schemas were).
    #[serde(default)]
    pub answer_schema: Value,
}

impl PauseRequest {
    /// The step a stored question (a run's `pause`, a [`PauseRequest`] as JSON) waits at, read
    /// without decoding the rest of it.
    ///
    /// ```
    /// use flow_core::PauseRequest;
    /// let pause = serde_json::json!({ "step_key": "review#1", "answer_schema": { "type": "boolean" } });
    /// assert_eq!(PauseRequest::stored_step_key(&pause), Some("review#1"));
    /// assert_eq!(PauseRequest::stored_answer_schema(&pause), Some(&serde_json::json!({ "type": "boolean" })));
    /// assert_eq!(PauseRequest::stored_answer_schema(&serde_json::json!({ "answer_schema": null })), None);
    /// ```
    pub fn stored_step_key(pause: &Value) -> Option<&str> {
        pause.get("step_key").and_then(Value::as_str)
    }

    /// The JSON Schema a stored question's answer must fit; `None` for a question stored
    /// before schemas were (or with none).
    pub fn stored_answer_schema(pause: &Value) -> Option<&Value> {
        pause.get("answer_schema").filter(|s| s.is_object() || s.is_boolean())
    }
}
