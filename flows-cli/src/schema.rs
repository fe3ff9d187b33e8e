//! A question's answer schema (the JSON Schema `Ctx::ask` stores with a pause), summarized for
//! a person: each field with its type, or the type alone when the answer is not an object.

use serde_json::{Map, Value};

/// One field of an object answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// `string`, `integer`, `boolean`, `array of string`, `one of "a", "b"`, a type's name...
    pub ty: String,
    pub required: bool,
}

/// What the answer must look like.
#[derive(Debug, PartialEq, Eq)]
pub enum Shape {
    /// An object with these fields.
    Object(Vec<Field>),
    /// Anything else, by its type.
    Value(String),
}

/// One property of an object answer, its schema followed through `$ref`.
#[derive(Debug)]
pub struct Property<'a> {
    pub name: &'a str,
    /// As written: a `$ref` keeps the name of the type it refers to.
    pub written: &'a Value,
    /// Followed through `$ref`.
    pub schema: &'a Value,
    pub required: bool,
}

/// The properties of an object answer (the root followed through `$ref`), in schema order;
/// `None` when the answer is not an object with properties. The one reading of an answer
/// schema's structure, for `flows show` and the dashboard's form alike.
pub fn properties(schema: &Value) -> Option<Vec<Property<'_>>> {
    let root = schema.as_object()?;
    let object = resolve(schema, root).as_object()?;
    let properties = object.get("properties").and_then(Value::as_object)?;
    let required: Vec<&str> =
        object.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    Some(
        properties
            .iter()
            .map(|(name, s)| Property {
                name: name.as_str(),
                written: s,
                schema: resolve(s, root),
                required: required.contains(&name.as_str()),
            })
            .collect(),
    )
}

/// Summarizes `schema`; `None` when there is none (a pause stored before schemas were).
pub fn shape(schema: &Value) -> Option<Shape> {
    let root = schema.as_object()?;
    Some(match properties(schema) {
        Some(properties) => Shape::Object(
            properties
                .iter()
                .map(|p| Field { name: p.name.to_string(), ty: type_text(p.written, root), required: p.required })
                .collect(),
        ),
        None => Shape::Value(type_text(schema, root)),
    })
}

/// The shape in one line: `approve: boolean, note?: string`.
pub fn summary(shape: &Shape) -> String {
    match shape {
        Shape::Value(ty) => ty.clone(),
        Shape::Object(fields) if fields.is_empty() => "an empty object".into(),
        Shape::Object(fields) => fields
            .iter()
            .map(|f| format!("{}{}: {}", f.name, if f.required { "" } else { "?" }, f.ty))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// `{"$ref": "#/$defs/Name"}` followed to its definition in `root`; anything else as it is.
pub fn resolve<'a>(schema: &'a Value, root: &'a Map<String, Value>) -> &'a Value {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/").or_else(|| r.strip_prefix("#/definitions/")))
        .and_then(|name| root.get("$defs").or_else(|| root.get("definitions")).and_then(|d| d.get(name)))
        .unwrap_or(schema)
}

fn type_text(schema: &Value, root: &Map<String, Value>) -> String {
    let Some(s) = schema.as_object() else {
        // `true` accepts anything.
        return "any".into();
    };
    if let Some(name) = s.get("$ref").and_then(Value::as_str) {
        let resolved = resolve(schema, root);
        if let Some(values) = resolved.get("enum").and_then(Value::as_array) {
            return one_of(values);
        }
        return name.rsplit('/').next().unwrap_or(name).to_string();
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        return one_of(values);
    }
    if let Some(value) = s.get("const") {
        return value.to_string();
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(parts) = s.get(key).and_then(Value::as_array) {
            return parts.iter().map(|p| type_text(p, root)).collect::<Vec<_>>().join(" | ");
        }
    }
    let single = |t: &str| match t {
        "array" => match s.get("items") {
            Some(items) => format!("array of {}", type_text(items, root)),
            None => "array".into(),
        },
        other => other.to_string(),
    };
    match s.get("type") {
        Some(Value::String(t)) => single(t),
        Some(Value::Array(types)) => types.iter().filter_map(Value::as_str).map(single).collect::<Vec<_>>().join(" | "),
        _ => "any".into(),
    }
}

fn one_of(values: &[Value]) -> String {
    format!("one of {}", values.iter().map(Value::to_string).collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_answer_lists_its_fields_with_their_types() {
        // As schemars writes `struct Approval { approve: bool, note: Option<String>, tags: Vec<String>, level: Level }`.
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Approval",
            "type": "object",
            "properties": {
                "approve": { "type": "boolean" },
                "note": { "type": ["string", "null"] },
                "tags": { "type": "array", "items": { "type": "string" } },
                "level": { "$ref": "#/$defs/Level" }
            },
            "required": ["approve", "tags", "level"],
            "$defs": { "Level": { "type": "string", "enum": ["low", "high"] } }
        });
        assert_eq!(
            shape(&schema).map(|s| summary(&s)).as_deref(),
            Some(r#"approve: boolean, level: one of "low", "high", note?: string | null, tags: array of string"#)
        );
    }

    #[test]
    fn a_plain_answer_is_its_type_and_no_schema_is_none() {
        assert_eq!(shape(&json!({ "type": "boolean", "title": "Boolean" })), Some(Shape::Value("boolean".into())));
        assert_eq!(shape(&Value::Null), None);
    }
}
