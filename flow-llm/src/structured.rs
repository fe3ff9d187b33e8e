//! Structured output: a Rust type's JSON Schema in OpenAI strict form ([`strict_schema_for`]),
//! the type as a reply format ([`OutputSchema`]), and a call that returns the parsed type with one
//! repair attempt ([`generate`]).
//!
//! ```
//! use flow_core::NoJournal;
//! use flow_llm::{ChatRequest, ChatResponse, Message, ScriptedLlm, structured};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize, JsonSchema)]
//! struct Triage { urgent: bool, summary: String }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), flow_llm::LlmError> {
//! let llm = ScriptedLlm::new("m").reply_text(r#"{"urgent": true, "summary": "server down"}"#);
//! let t: Triage = structured::generate(&llm, &NoJournal, ChatRequest::new(vec![Message::user("triage: server down")])).await?;
//! assert!(t.urgent);
//! # Ok(()) }
//! ```

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::chat::{ChatRequest, ChatResponse, FinishReason, Message, ResponseFormat};
use crate::error::LlmError;
use crate::llm::{Llm, LlmExt};

/// String formats OpenAI strict mode accepts; schemars' numeric formats (`uint32`, `double`...)
/// are not among them.
const SUPPORTED_FORMATS: &[&str] =
    &["date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"];

/// Keywords that only annotate and that strict mode rejects or ignores.
const ANNOTATIONS: &[&str] =
    &["$schema", "$id", "title", "default", "examples", "$comment", "readOnly", "writeOnly", "deprecated"];

/// The JSON Schema of `T` in OpenAI strict form.
///
/// Every object gets `additionalProperties: false` and lists all its properties as required
/// (`Option` fields stay nullable), subschemas are inlined, `oneOf` becomes `anyOf`, `const`
/// becomes a one-value `enum`, and annotations and unsupported formats are dropped. Types strict
/// mode cannot express (maps with free-form keys, `serde_json::Value`, a non-object root) are
/// rejected with an error that says what to change.
///
/// ```
/// use schemars::JsonSchema;
///
/// #[derive(JsonSchema)]
/// #[allow(dead_code)]
/// struct Lead { name: String, employees: u32, note: Option<String> }
///
/// let s = flow_llm::strict_schema_for::<Lead>().unwrap();
/// assert_eq!(s["additionalProperties"], false);
/// // serde_json keeps object keys sorted.
/// assert_eq!(s["required"], serde_json::json!(["employees", "name", "note"]));
/// assert!(s["properties"]["employees"].get("format").is_none());
/// ```
pub fn strict_schema_for<T: JsonSchema + ?Sized>() -> Result<Value, LlmError> {
    let schema = SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator()
        .into_root_schema_for::<T>();
    let mut value = schema.to_value();
    let type_name = T::schema_name().into_owned();
    make_strict(&mut value).map_err(|reason| LlmError::InvalidSchema { type_name: type_name.clone(), reason })?;
    if value.get("type").and_then(Value::as_str) != Some("object") {
        return Err(LlmError::InvalidSchema {
            type_name,
            reason: "the root of a structured reply or tool arguments must be an object; wrap the type in a struct with one field".into(),
        });
    }
    Ok(value)
}

/// Rewrites any JSON Schema into OpenAI strict form in place (see [`strict_schema_for`]).
///
/// ```
/// let mut s = serde_json::json!({"type": "object", "properties": {"a": {"type": "integer", "format": "int64"}}});
/// flow_llm::structured::make_strict(&mut s).unwrap();
/// assert_eq!(s, serde_json::json!({
///     "type": "object",
///     "properties": {"a": {"type": "integer"}},
///     "required": ["a"],
///     "additionalProperties": false
/// }));
/// ```
pub fn make_strict(schema: &mut Value) -> Result<(), String> {
    strictify(schema, "$")
}

fn strictify(node: &mut Value, path: &str) -> Result<(), String> {
    let map = match node {
        Value::Object(map) => map,
        Value::Bool(true) => {
            return Err(format!(
                "{path} accepts any JSON value (e.g. serde_json::Value); strict mode needs a concrete type there"
            ));
        }
        _ => return Ok(()),
    };
    for key in ANNOTATIONS {
        map.remove(*key);
    }
    if let Some(Value::String(f)) = map.get("format")
        && !SUPPORTED_FORMATS.contains(&f.as_str())
    {
        map.remove("format");
    }
    for key in ["not", "if", "then", "else", "dependentSchemas", "dependentRequired"] {
        if map.contains_key(key) {
            return Err(format!("{path} uses `{key}`, which OpenAI strict mode does not support"));
        }
    }
    if let Some(Value::Array(mut one_of)) = map.remove("oneOf") {
        if let Some(Value::Array(any_of)) = map.get_mut("anyOf") {
            any_of.append(&mut one_of);
        } else {
            map.insert("anyOf".into(), Value::Array(one_of));
        }
    }
    if let Some(c) = map.remove("const") {
        if !map.contains_key("type") {
            let ty = match &c {
                Value::String(_) => Some("string"),
                Value::Bool(_) => Some("boolean"),
                Value::Number(n) if n.is_i64() || n.is_u64() => Some("integer"),
                Value::Number(_) => Some("number"),
                _ => None,
            };
            if let Some(ty) = ty {
                map.insert("type".into(), ty.into());
            }
        }
        map.entry("enum").or_insert_with(|| Value::Array(vec![c]));
    }
    merge_single_all_of(map, path)?;

    let is_object = map.contains_key("properties")
        || match map.get("type") {
            Some(Value::String(t)) => t == "object",
            Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
            _ => false,
        };
    if is_object {
        let free_form = matches!(map.get("additionalProperties"), Some(Value::Object(_) | Value::Bool(true)))
            || map.contains_key("patternProperties");
        let no_fields = map.get("properties").and_then(Value::as_object).is_none_or(Map::is_empty);
        if free_form && no_fields {
            return Err(format!(
                "{path} is a map with free-form keys; strict mode needs fixed field names: use a struct, or a Vec of key/value structs"
            ));
        }
        let props = map.entry("properties").or_insert_with(|| Value::Object(Map::new()));
        let keys: Vec<Value> =
            props.as_object().map(|p| p.keys().cloned().map(Value::String).collect()).unwrap_or_default();
        map.insert("required".into(), Value::Array(keys));
        map.insert("additionalProperties".into(), Value::Bool(false));
        map.remove("patternProperties");
        map.remove("unevaluatedProperties");
    }

    if let Some(Value::Object(props)) = map.get_mut("properties") {
        for (name, sub) in props.iter_mut() {
            strictify(sub, &format!("{path}.{name}"))?;
        }
    }
    match map.get_mut("items") {
        Some(Value::Array(items)) => {
            for (i, sub) in items.iter_mut().enumerate() {
                strictify(sub, &format!("{path}[{i}]"))?;
            }
        }
        Some(sub) => strictify(sub, &format!("{path}[]"))?,
        None => {}
    }
    for key in ["prefixItems", "anyOf"] {
        if let Some(Value::Array(subs)) = map.get_mut(key) {
            for (i, sub) in subs.iter_mut().enumerate() {
                strictify(sub, &format!("{path}.{key}[{i}]"))?;
            }
        }
    }
    for key in ["$defs", "definitions"] {
        if let Some(Value::Object(defs)) = map.get_mut(key) {
            for (name, sub) in defs.iter_mut() {
                strictify(sub, &format!("#/{key}/{name}"))?;
            }
        }
    }
    Ok(())
}

/// schemars wraps a `$ref` with siblings (e.g. a described field) in a one-element `allOf`;
/// strict mode has no `allOf`, so the element is merged into its parent.
fn merge_single_all_of(map: &mut Map<String, Value>, path: &str) -> Result<(), String> {
    let Some(all_of) = map.remove("allOf") else {
        return Ok(());
    };
    match all_of {
        Value::Array(mut items) if items.len() == 1 => {
            if let Some(Value::Object(inner)) = items.pop() {
                for (k, v) in inner {
                    map.entry(k).or_insert(v);
                }
            }
            Ok(())
        }
        _ => Err(format!(
            "{path} combines schemas with `allOf` (e.g. #[serde(flatten)]); strict mode does not support it"
        )),
    }
}

/// A Rust type as the required shape of a reply: its strict schema and a validator that parses a
/// reply with the type's own serde implementation.
///
/// ```
/// use flow_llm::OutputSchema;
/// use schemars::JsonSchema;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// struct Score { value: u8 }
///
/// let schema = OutputSchema::of::<Score>().unwrap();
/// assert_eq!(schema.name(), "Score");
/// assert!(schema.parse(r#"{"value": 7}"#).is_ok());
/// assert!(schema.parse(r#"{"value": "seven"}"#).is_err());
/// ```
#[derive(Clone)]
pub struct OutputSchema {
    name: String,
    type_name: String,
    schema: Value,
    validate: Validator,
}

type Validator = std::sync::Arc<dyn Fn(&str) -> Result<Value, String> + Send + Sync>;

impl std::fmt::Debug for OutputSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputSchema").field("name", &self.name).field("schema", &self.schema).finish_non_exhaustive()
    }
}

fn validate<T: DeserializeOwned + Serialize>(raw: &str) -> Result<Value, String> {
    let parsed: T = serde_json::from_str(strip_code_fence(raw)).map_err(|e| e.to_string())?;
    serde_json::to_value(&parsed).map_err(|e| e.to_string())
}

/// Models without strict mode often wrap JSON in a Markdown code fence.
fn strip_code_fence(raw: &str) -> &str {
    let t = raw.trim();
    let Some(rest) = t.strip_prefix("```") else {
        return t;
    };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

fn schema_name(raw: &str) -> String {
    let cleaned: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).take(64).collect();
    if cleaned.is_empty() { "Output".into() } else { cleaned }
}

impl OutputSchema {
    /// The output schema of `T`.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    /// struct A { x: i32 }
    /// assert!(flow_llm::OutputSchema::of::<A>().is_ok());
    /// ```
    pub fn of<T: JsonSchema + DeserializeOwned + Serialize>() -> Result<Self, LlmError> {
        // A plain fn pointer does not capture `T`, so the validator stays `'static` for any `T`.
        let validate: fn(&str) -> Result<Value, String> = validate::<T>;
        Ok(OutputSchema {
            name: schema_name(&T::schema_name()),
            type_name: std::any::type_name::<T>().to_owned(),
            schema: strict_schema_for::<T>()?,
            validate: std::sync::Arc::new(validate),
        })
    }

    /// A schema known only at run time, with its own validator (which gets the reply with any
    /// Markdown code fence removed). The schema is made strict.
    pub(crate) fn custom(
        name: &str,
        mut schema: Value,
        validate: impl Fn(&str) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Result<Self, LlmError> {
        make_strict(&mut schema).map_err(|reason| LlmError::InvalidSchema { type_name: name.to_owned(), reason })?;
        Ok(OutputSchema {
            name: schema_name(name),
            type_name: name.to_owned(),
            schema,
            validate: std::sync::Arc::new(move |raw| validate(strip_code_fence(raw))),
        })
    }

    /// The schema's name as sent in `response_format`.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    /// struct Plan { steps: Vec<String> }
    /// assert_eq!(flow_llm::OutputSchema::of::<Plan>().unwrap().name(), "Plan");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The strict JSON Schema.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    /// struct Plan { steps: Vec<String> }
    /// let s = flow_llm::OutputSchema::of::<Plan>().unwrap();
    /// assert_eq!(s.schema()["type"], "object");
    /// ```
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// The `response_format` requesting this schema in strict mode.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    /// struct Plan { steps: Vec<String> }
    /// let f = flow_llm::OutputSchema::of::<Plan>().unwrap().response_format();
    /// assert!(matches!(f, flow_llm::ResponseFormat::JsonSchema { strict: true, .. }));
    /// ```
    pub fn response_format(&self) -> ResponseFormat {
        ResponseFormat::JsonSchema {
            name: self.name.clone(),
            description: None,
            schema: self.schema.clone(),
            strict: true,
        }
    }

    /// Parses and validates a reply with the type's serde implementation; returns the value as
    /// JSON, or why it does not fit.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    /// struct A { x: i32 }
    /// let s = flow_llm::OutputSchema::of::<A>().unwrap();
    /// assert_eq!(s.parse("```json\n{\"x\": 1}\n```").unwrap()["x"], 1);
    /// ```
    pub fn parse(&self, raw: &str) -> Result<Value, String> {
        (self.validate)(raw)
    }

    /// Checks a model reply: a refusal is an error at once; missing, cut-off or ill-fitting
    /// content is a reason to repair.
    pub(crate) fn check(&self, response: &ChatResponse) -> Result<Result<Value, String>, LlmError> {
        if let Some(refusal) = &response.refusal
            && response.content.as_deref().is_none_or(str::is_empty)
        {
            return Err(LlmError::Refusal { refusal: refusal.clone() });
        }
        let raw = response.content.as_deref().unwrap_or("");
        let parsed = self.parse(raw);
        Ok(match (parsed, &response.finish_reason) {
            (Err(e), Some(FinishReason::Length)) => {
                Err(format!("the reply was cut off at the token limit (finish_reason length): {e}"))
            }
            (other, _) => other,
        })
    }

    pub(crate) fn repair_message(&self, reason: &str) -> Message {
        Message::user(format!(
            "Your previous reply does not match the required JSON schema `{}`: {reason}. Reply again with only a JSON object that matches the schema exactly, with no other text.",
            self.name
        ))
    }

    pub(crate) fn invalid(&self, raw: &str, reason: String) -> LlmError {
        LlmError::InvalidReply { expected: self.type_name.clone(), raw: raw.to_owned(), reason }
    }
}

/// Asks for a reply of type `T` (strict `response_format`), validates it with serde, and on an
/// invalid reply makes one repair call that shows the model its reply and the error. A reply that
/// still does not fit is [`LlmError::InvalidReply`], carrying the raw reply. Both calls are
/// journaled.
///
/// ```
/// use flow_core::NoJournal;
/// use flow_llm::{ChatRequest, Message, ScriptedLlm, structured};
///
/// #[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
/// struct Sentiment { positive: bool }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), flow_llm::LlmError> {
/// // The first reply is not JSON; the repair call gets it right.
/// let llm = ScriptedLlm::new("m").reply_text("yes!").reply_text(r#"{"positive": true}"#);
/// let s: Sentiment = structured::generate(&llm, &NoJournal, ChatRequest::new(vec![Message::user("I love it")])).await?;
/// assert!(s.positive);
/// assert_eq!(llm.calls(), 2);
/// # Ok(()) }
/// ```
pub async fn generate<T>(llm: &dyn Llm, journal: &dyn flow_core::Journal, request: ChatRequest) -> Result<T, LlmError>
where
    T: JsonSchema + DeserializeOwned + Serialize,
{
    let schema = OutputSchema::of::<T>()?;
    let value = generate_value(llm, journal, request, &schema).await?.0;
    serde_json::from_value(value).map_err(|e| schema.invalid("", e.to_string()))
}

/// [`generate`] for a schema known at run time; returns the validated JSON and every reply.
pub(crate) async fn generate_value(
    llm: &dyn Llm,
    journal: &dyn flow_core::Journal,
    mut request: ChatRequest,
    schema: &OutputSchema,
) -> Result<(Value, Vec<ChatResponse>), LlmError> {
    request.response_format = Some(schema.response_format());
    let first = llm.complete(journal, request.clone()).await?;
    let reason = match schema.check(&first)? {
        Ok(v) => return Ok((v, vec![first])),
        Err(reason) => reason,
    };
    tracing::debug!(schema = schema.name(), %reason, "structured reply invalid, asking for a repair");
    request.messages.push(Message::assistant(first.content.clone().unwrap_or_default()));
    request.messages.push(schema.repair_message(&reason));
    let second = llm.complete(journal, request).await?;
    match schema.check(&second)? {
        Ok(v) => Ok((v, vec![first, second])),
        Err(reason) => Err(schema.invalid(second.content.as_deref().unwrap_or(""), reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Author {
        name: String,
        email: Option<String>,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    #[allow(dead_code)]
    enum Kind {
        Bug,
        /// A feature request.
        Feature,
    }

    /// A triaged ticket.
    #[derive(Serialize, Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Triage {
        title: String,
        score: u32,
        tags: Vec<String>,
        note: Option<String>,
        kind: Kind,
        author: Author,
        maybe_author: Option<Author>,
    }

    fn assert_strict(v: &Value) {
        if let Some(map) = v.as_object() {
            assert!(!map.contains_key("$ref"), "no refs left: {v}");
            assert!(!map.contains_key("oneOf") && !map.contains_key("allOf") && !map.contains_key("title"), "{v}");
            if map.get("type") == Some(&Value::from("object")) {
                assert_eq!(map["additionalProperties"], false, "{v}");
                let keys: Vec<&String> = map["properties"].as_object().unwrap().keys().collect();
                let req: Vec<&str> = map["required"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
                assert_eq!(keys.len(), req.len(), "{v}");
            }
            for (k, sub) in map {
                if k == "properties" {
                    sub.as_object().unwrap().values().for_each(assert_strict);
                } else {
                    assert_strict(sub);
                }
            }
        } else if let Some(items) = v.as_array() {
            items.iter().for_each(assert_strict);
        }
    }

    #[test]
    fn nested_types_become_strict() {
        let s = strict_schema_for::<Triage>().unwrap();
        assert_strict(&s);
        assert_eq!(s["description"], "A triaged ticket.");
        assert_eq!(s["properties"]["note"]["type"], serde_json::json!(["string", "null"]));
        assert!(s["properties"]["score"].get("format").is_none());
        assert_eq!(s["properties"]["author"]["required"], serde_json::json!(["email", "name"]));
        // A reply with nulls for the optional fields parses back into the type.
        let reply = r#"{"title":"t","score":1,"tags":[],"note":null,"kind":"Feature",
            "author":{"name":"n","email":null},"maybe_author":null}"#;
        assert!(OutputSchema::of::<Triage>().unwrap().parse(reply).is_ok());
    }

    #[test]
    fn unsupported_shapes_are_rejected_with_a_reason() {
        let e = strict_schema_for::<std::collections::HashMap<String, i32>>().unwrap_err();
        assert!(e.to_string().contains("free-form keys"), "{e}");
        let e = strict_schema_for::<Vec<String>>().unwrap_err();
        assert!(e.to_string().contains("must be an object"), "{e}");
        #[derive(JsonSchema)]
        #[allow(dead_code)]
        struct Loose {
            any: Value,
        }
        let e = strict_schema_for::<Loose>().unwrap_err();
        assert!(e.to_string().contains("$.any"), "{e}");
    }

    #[test]
    fn code_fences_are_tolerated() {
        assert_eq!(strip_code_fence("```json\n{}\n```"), "{}");
        assert_eq!(strip_code_fence(" {} "), "{}");
    }
}
