//! Human feedback: map a person's free-text answer onto a route enum with the LLM, and refuse to
//! guess when the answer does not clearly pick one.
//!
//! ```
//! use flow_core::NoJournal;
//! use flow_llm::{ScriptedLlm, feedback::route_feedback};
//!
//! #[derive(Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
//! enum Review {
//!     /// Publish the draft as it is.
//!     Approve,
//!     /// Send the draft back for another round.
//!     Revise,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), flow_llm::LlmError> {
//! let llm = ScriptedLlm::new("m").reply_text(r#"{"route": "Revise", "reason": "asks for changes"}"#);
//! let decision = route_feedback::<Review>(&llm, &NoJournal, "Publish the draft?", "needs a better intro").await?;
//! assert_eq!(decision.route, Review::Revise);
//! # Ok(()) }
//! ```

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::chat::{ChatRequest, Message};
use crate::error::LlmError;
use crate::llm::Llm;
use crate::structured::{OutputSchema, generate_value};

/// A classified answer: the route and the model's one-line reason.
///
/// ```
/// let d = flow_llm::feedback::FeedbackRoute { route: 1u8, reason: "r".into() };
/// assert_eq!(d.route, 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedbackRoute<R> {
    /// The route the answer picks.
    pub route: R,
    /// Why.
    pub reason: String,
}

/// A route: the serialized variant name and its doc comment.
struct Route {
    name: String,
    description: Option<String>,
}

fn routes_of<R: JsonSchema>() -> Result<Vec<Route>, LlmError> {
    let type_name = R::schema_name().into_owned();
    let not_enum = || LlmError::InvalidSchema {
        type_name: type_name.clone(),
        reason: "a feedback route must be an enum of unit variants (e.g. `enum Review { Approve, Revise }`)".into(),
    };
    let schema = schemars::schema_for!(R).to_value();
    let mut routes = Vec::new();
    let mut collect = |node: &Value, description: Option<&Value>| -> Result<(), LlmError> {
        let description = description.or_else(|| node.get("description")).and_then(Value::as_str).map(str::to_owned);
        let values: Vec<&Value> = match (node.get("enum"), node.get("const")) {
            (Some(Value::Array(values)), _) => values.iter().collect(),
            (_, Some(value)) => vec![value],
            _ => return Err(not_enum()),
        };
        for v in values {
            let name = v.as_str().ok_or_else(not_enum)?.to_owned();
            routes.push(Route { name, description: description.clone() });
        }
        Ok(())
    };
    match schema.get("oneOf").or_else(|| schema.get("anyOf")) {
        Some(Value::Array(options)) => {
            for option in options {
                collect(option, None)?;
            }
        }
        _ => collect(&schema, None)?,
    }
    if routes.is_empty() { Err(not_enum()) } else { Ok(routes) }
}

/// Maps `answer`, a person's reply to `question`, onto a variant of the route enum `R`.
///
/// The model picks from the variants (their doc comments explain them) plus an explicit
/// "unclear" option, through strict structured output. An empty answer, or one the model marks
/// unclear, is [`LlmError::UnclearFeedback`]: the flow fails closed instead of taking a route the
/// person did not choose. The call is journaled.
///
/// ```
/// use flow_core::NoJournal;
/// use flow_llm::{LlmError, ScriptedLlm, feedback::route_feedback};
///
/// #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
/// enum Go { Yes, No }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let llm = ScriptedLlm::new("m").reply_text(r#"{"route": "unclear", "reason": "talks about lunch"}"#);
/// let err = route_feedback::<Go>(&llm, &NoJournal, "Ship it?", "what's for lunch").await.unwrap_err();
/// assert!(matches!(err, LlmError::UnclearFeedback { .. }));
/// # }
/// ```
pub async fn route_feedback<R>(
    llm: &dyn Llm,
    journal: &dyn flow_core::Journal,
    question: &str,
    answer: &str,
) -> Result<FeedbackRoute<R>, LlmError>
where
    R: DeserializeOwned + JsonSchema,
{
    let routes = routes_of::<R>()?;
    let names: Vec<String> = routes.iter().map(|r| r.name.clone()).collect();
    let unclear = if names.iter().any(|n| n.eq_ignore_ascii_case("unclear")) { "__unclear__" } else { "unclear" };
    if answer.trim().is_empty() {
        return Err(LlmError::UnclearFeedback {
            answer: answer.to_owned(),
            routes: names,
            reason: "the answer is empty".into(),
        });
    }

    let mut allowed = names.clone();
    allowed.push(unclear.to_owned());
    let schema = json!({
        "type": "object",
        "properties": {
            "route": { "type": "string", "enum": allowed },
            "reason": { "type": "string", "description": "One sentence: why this route" }
        }
    });
    let check = allowed.clone();
    let output = OutputSchema::custom("FeedbackRoute", schema, move |raw| {
        let v: Value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
        match v.get("route").and_then(Value::as_str) {
            Some(r) if check.iter().any(|c| c == r) => Ok(v),
            Some(r) => Err(format!("route {r:?} is not one of {check:?}")),
            None => Err("the field `route` is missing".into()),
        }
    })?;

    let mut listing = String::new();
    for r in &routes {
        listing.push_str(&format!("- {}", r.name));
        if let Some(d) = &r.description {
            listing.push_str(&format!(": {d}"));
        }
        listing.push('\n');
    }
    listing.push_str(&format!("- {unclear}: the answer does not clearly choose exactly one of the routes above\n"));
    let request = ChatRequest::new(vec![
        Message::system(format!(
            "You map a person's free-text answer onto exactly one route. Choose a route only when the answer clearly selects it. If the answer is ambiguous, off-topic, contradictory or picks several routes, choose \"{unclear}\". Never guess."
        )),
        Message::user(format!("Question that was asked:\n{question}\n\nRoutes:\n{listing}\nThe person's answer:\n{answer}")),
    ])
    .temperature(0.0);

    let (value, _) = generate_value(llm, journal, request, &output).await?;
    let route = value.get("route").and_then(Value::as_str).unwrap_or(unclear).to_owned();
    let reason = value.get("reason").and_then(Value::as_str).unwrap_or("").to_owned();
    if route == unclear {
        tracing::info!(%reason, "feedback could not be mapped onto a route");
        return Err(LlmError::UnclearFeedback { answer: answer.to_owned(), routes: names, reason });
    }
    let parsed = serde_json::from_value::<R>(Value::String(route.clone())).map_err(|e| LlmError::InvalidReply {
        expected: std::any::type_name::<R>().to_owned(),
        raw: value.to_string(),
        reason: e.to_string(),
    })?;
    Ok(FeedbackRoute { route: parsed, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, JsonSchema)]
    #[allow(dead_code)]
    #[serde(rename_all = "snake_case")]
    enum Plain {
        Approve,
        SendBack,
    }

    #[derive(serde::Deserialize, JsonSchema)]
    #[allow(dead_code)]
    enum Documented {
        /// Ship it.
        Ship,
        Hold,
    }

    #[derive(serde::Deserialize, JsonSchema)]
    #[allow(dead_code)]
    enum Data {
        Amount(u32),
    }

    #[test]
    fn variants_are_read_from_the_schema() {
        let names: Vec<String> = routes_of::<Plain>().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["approve", "send_back"]);
        let routes = routes_of::<Documented>().unwrap();
        let ship = routes.iter().find(|r| r.name == "Ship").unwrap();
        assert_eq!(ship.description.as_deref(), Some("Ship it."));
        assert!(routes.iter().any(|r| r.name == "Hold" && r.description.is_none()));
        assert_eq!(routes.len(), 2);
        assert!(routes_of::<Data>().is_err());
        assert!(routes_of::<String>().is_err());
    }
}
