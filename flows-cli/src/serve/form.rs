//! The answer form a pending question's JSON Schema gives, and reading what a person submitted
//! back into JSON (checked against the schema by `flows_cli::ops::answer` before it is stored).
//!
//! An object's primitive properties become inputs (an `enum` a select, a boolean a checkbox,
//! numbers number inputs); anything else a JSON textarea.

use serde_json::{Map, Number, Value};

/// What kind of input a value gets.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Text,
    Integer,
    Number,
    Bool,
    /// The allowed values, each as its JSON text.
    Select(Vec<String>),
    Json,
}

/// One input of the form.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// The property's name; `value` for a schema that is not an object.
    pub name: String,
    pub label: String,
    pub description: Option<String>,
    pub kind: Kind,
    pub required: bool,
    pub nullable: bool,
}

impl Field {
    /// The input's `name` in the form: prefixed so no property collides with the form's own
    /// fields.
    pub fn input_name(&self) -> String {
        format!("f.{}", self.name)
    }
}

/// The form's shape: an object's properties, or one value.
#[derive(Clone, Debug, PartialEq)]
pub struct Form {
    pub object: bool,
    pub fields: Vec<Field>,
}

/// The schema's types: `"type": "x"` or `"type": ["x", "null"]`.
fn types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn field(name: &str, schema: &Value, required: bool) -> Field {
    let types = types(schema);
    let nullable = types.contains(&"null");
    let main: Vec<&str> = types.iter().copied().filter(|t| *t != "null").collect();
    let kind = if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        Kind::Select(options.iter().map(Value::to_string).collect())
    } else {
        match main.as_slice() {
            ["string"] => Kind::Text,
            ["integer"] => Kind::Integer,
            ["number"] => Kind::Number,
            ["boolean"] => Kind::Bool,
            _ => Kind::Json,
        }
    };
    let label = schema.get("title").and_then(Value::as_str).unwrap_or(name).to_string();
    let description = schema.get("description").and_then(Value::as_str).map(str::to_string);
    Field { name: name.to_string(), label, description, kind, required, nullable }
}

/// The form for answers fitting `schema`: one input per property of an object answer (each
/// property followed through `$ref`, so a nested enum is a select), else one for the value.
pub fn form_for(schema: &Value) -> Form {
    match crate::schema::properties(schema) {
        Some(properties) => {
            Form { object: true, fields: properties.iter().map(|p| field(p.name, p.schema, p.required)).collect() }
        }
        None => Form { object: false, fields: vec![field("value", schema, true)] },
    }
}

/// Reads one input back into JSON; `None` leaves an optional property out.
fn read(field: &Field, submitted: Option<&str>) -> Result<Option<Value>, String> {
    let name = &field.name;
    if field.kind == Kind::Bool {
        // An unticked checkbox is not sent at all.
        return Ok(Some(Value::Bool(submitted.is_some())));
    }
    let text = submitted.unwrap_or_default();
    if text.trim().is_empty() && field.kind != Kind::Text {
        return match (field.nullable, field.required) {
            (true, _) => Ok(Some(Value::Null)),
            (false, false) => Ok(None),
            (false, true) => Err(format!("`{name}` is required")),
        };
    }
    let value = match &field.kind {
        Kind::Text => Value::String(text.to_string()),
        Kind::Integer => {
            let n: i64 = text.trim().parse().map_err(|_| format!("`{name}` must be a whole number, not `{text}`"))?;
            Value::from(n)
        }
        Kind::Number => {
            let n: f64 = text.trim().parse().map_err(|_| format!("`{name}` must be a number, not `{text}`"))?;
            Value::Number(Number::from_f64(n).ok_or_else(|| format!("`{name}` must be a finite number"))?)
        }
        Kind::Select(options) => {
            if !options.iter().any(|o| o == text) {
                return Err(format!("`{name}` must be one of {}, not `{text}`", options.join(", ")));
            }
            serde_json::from_str(text).map_err(|e| format!("`{name}`: {e}"))?
        }
        Kind::Json => serde_json::from_str(text).map_err(|e| format!("`{name}` is not JSON ({e})"))?,
        Kind::Bool => Value::Bool(true),
    };
    Ok(Some(value))
}

/// The answer a submitted form gives: each field from its input (`f.NAME`).
pub fn answer_from(form: &Form, submitted: &[(String, String)]) -> Result<Value, Vec<String>> {
    let get = |name: &str| submitted.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let mut errors = Vec::new();
    let mut object = Map::new();
    for f in &form.fields {
        match read(f, get(&f.input_name())) {
            Ok(Some(v)) if !form.object => return Ok(v),
            Ok(Some(v)) => {
                object.insert(f.name.clone(), v);
            }
            Ok(None) if !form.object => return Ok(Value::Null),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() { Ok(Value::Object(object)) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "approved": {"type": "boolean"},
                "amount": {"type": "integer", "minimum": 0},
                "note": {"type": ["string", "null"], "description": "why"},
                "tier": {"type": "string", "enum": ["gold", "silver"]},
                "tags": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["approved", "amount", "tier"]
        })
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn an_object_schema_gives_an_input_per_property() {
        let form = form_for(&schema());
        assert!(form.object);
        let kind = |name: &str| form.fields.iter().find(|f| f.name == name).map(|f| f.kind.clone());
        assert_eq!(kind("approved"), Some(Kind::Bool));
        assert_eq!(kind("amount"), Some(Kind::Integer));
        assert_eq!(kind("note"), Some(Kind::Text));
        assert_eq!(kind("tier"), Some(Kind::Select(vec!["\"gold\"".into(), "\"silver\"".into()])));
        assert_eq!(kind("tags"), Some(Kind::Json));
        // As schemars writes a nested enum: a `$ref` into `$defs`.
        let nested = form_for(&json!({
            "type": "object",
            "properties": { "level": { "$ref": "#/$defs/Level" } },
            "required": ["level"],
            "$defs": { "Level": { "type": "string", "enum": ["low", "high"] } }
        }));
        assert_eq!(nested.fields[0].kind, Kind::Select(vec!["\"low\"".into(), "\"high\"".into()]));
        let one = form_for(&json!({"type": "boolean"}));
        assert!(!one.object);
        assert_eq!(one.fields[0].kind, Kind::Bool);
    }

    #[test]
    fn submitted_inputs_read_back_as_typed_json() {
        let form = form_for(&schema());
        let got = answer_from(
            &form,
            &pairs(&[
                ("f.approved", "on"),
                ("f.amount", "12"),
                ("f.note", "ok"),
                ("f.tier", "\"gold\""),
                ("f.tags", "[\"a\"]"),
            ]),
        );
        assert_eq!(got, Ok(json!({"approved": true, "amount": 12, "note": "ok", "tier": "gold", "tags": ["a"]})));
        let unticked = answer_from(&form, &pairs(&[("f.amount", "1"), ("f.tier", "\"silver\"")]));
        assert_eq!(unticked.ok().and_then(|v| v.get("approved").cloned()), Some(json!(false)));
        let errors = answer_from(&form, &pairs(&[("f.amount", "lots"), ("f.tier", "\"bronze\""), ("f.tags", "[")]))
            .err()
            .unwrap_or_default();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("`amount` must be a whole number, not `lots`"), "{errors:?}");
    }
}
