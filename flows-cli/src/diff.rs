//! The change between two JSON values, as a list of paths added, removed or changed.
//!
//! Objects are compared key by key; arrays index by index (an element inserted at the front
//! shows as every later index changed and one added at the end, which is what the stored
//! arrays literally hold); any other pair of different values, including a value whose type
//! changed, is one change at its path. Paths are JSON Pointers (RFC 6901): `/items/0/name`,
//! with `~` written `~0` and `/` written `~1`; the whole value is the empty path.

use serde_json::Value;

/// One difference.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Added { path: String, new: Value },
    Removed { path: String, old: Value },
    Changed { path: String, old: Value, new: Value },
}

impl Change {
    pub fn path(&self) -> &str {
        match self {
            Change::Added { path, .. } | Change::Removed { path, .. } | Change::Changed { path, .. } => path,
        }
    }

    /// `added`, `removed` or `changed`, as `--json` names it.
    pub fn op(&self) -> &'static str {
        match self {
            Change::Added { .. } => "added",
            Change::Removed { .. } => "removed",
            Change::Changed { .. } => "changed",
        }
    }

    /// The change for `--json`: `op` and `path`, with `old` for what was there and `new` for
    /// what is (an added path has no `old`, a removed one no `new`, so a JSON `null` value is
    /// never confused with an absent one).
    pub fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        out.insert("op".into(), self.op().into());
        out.insert("path".into(), self.path().into());
        match self {
            Change::Added { new, .. } => {
                out.insert("new".into(), new.clone());
            }
            Change::Removed { old, .. } => {
                out.insert("old".into(), old.clone());
            }
            Change::Changed { old, new, .. } => {
                out.insert("old".into(), old.clone());
                out.insert("new".into(), new.clone());
            }
        }
        Value::Object(out)
    }
}

/// Every difference from `old` to `new`, in document order (object keys sorted).
pub fn diff(old: &Value, new: &Value) -> Vec<Change> {
    let mut changes = Vec::new();
    walk(old, new, &mut String::new(), &mut changes);
    changes
}

fn walk(old: &Value, new: &Value, path: &mut String, out: &mut Vec<Change>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))).collect();
            keys.sort();
            for key in keys {
                let len = path.len();
                path.push('/');
                path.push_str(&escape(key));
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => walk(x, y, path, out),
                    (Some(x), None) => out.push(Change::Removed { path: path.clone(), old: x.clone() }),
                    (None, Some(y)) => out.push(Change::Added { path: path.clone(), new: y.clone() }),
                    (None, None) => {}
                }
                path.truncate(len);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                match (a.get(i), b.get(i)) {
                    (Some(x), Some(y)) => walk(x, y, path, out),
                    (Some(x), None) => out.push(Change::Removed { path: path.clone(), old: x.clone() }),
                    (None, Some(y)) => out.push(Change::Added { path: path.clone(), new: y.clone() }),
                    (None, None) => {}
                }
                path.truncate(len);
            }
        }
        (a, b) if a != b => out.push(Change::Changed { path: path.clone(), old: a.clone(), new: b.clone() }),
        _ => {}
    }
}

/// A key as one JSON Pointer reference token.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn added(path: &str, new: Value) -> Change {
        Change::Added { path: path.into(), new }
    }
    fn removed(path: &str, old: Value) -> Change {
        Change::Removed { path: path.into(), old }
    }
    fn changed(path: &str, old: Value, new: Value) -> Change {
        Change::Changed { path: path.into(), old, new }
    }

    #[test]
    fn equal_values_have_no_change() {
        let v = json!({ "a": [1, { "b": null }], "c": "x" });
        assert!(diff(&v, &v.clone()).is_empty());
        assert!(diff(&json!(null), &json!(null)).is_empty());
    }

    #[test]
    fn scalars_and_type_changes_are_one_change_at_their_path() {
        assert_eq!(diff(&json!(1), &json!(2)), [changed("", json!(1), json!(2))]);
        assert_eq!(
            diff(&json!({ "a": { "x": 1 } }), &json!({ "a": [1] })),
            [changed("/a", json!({ "x": 1 }), json!([1]))],
            "an object that became an array is not walked into"
        );
        assert_eq!(diff(&json!({ "n": 1 }), &json!({ "n": 1.0 })), [changed("/n", json!(1), json!(1.0))]);
        assert_eq!(diff(&json!({ "s": "1" }), &json!({ "s": 1 })), [changed("/s", json!("1"), json!(1))]);
    }

    #[test]
    fn nested_objects_report_each_key_in_sorted_order() {
        let old = json!({ "count": 1, "draft": "text", "doc": { "title": "a", "tags": ["x"] } });
        let new = json!({ "count": 3, "doc": { "title": "b", "tags": ["x"], "author": "me" }, "items": [] });
        assert_eq!(
            diff(&old, &new),
            [
                changed("/count", json!(1), json!(3)),
                added("/doc/author", json!("me")),
                changed("/doc/title", json!("a"), json!("b")),
                removed("/draft", json!("text")),
                added("/items", json!([])),
            ]
        );
    }

    #[test]
    fn arrays_compare_index_by_index() {
        assert_eq!(diff(&json!([1, 2]), &json!([1, 2, 3])), [added("/2", json!(3))]);
        assert_eq!(diff(&json!([1, 2, 3]), &json!([1])), [removed("/1", json!(2)), removed("/2", json!(3))]);
        assert_eq!(
            diff(&json!({ "l": [{ "id": 1, "ok": false }] }), &json!({ "l": [{ "id": 1, "ok": true }] })),
            [changed("/l/0/ok", json!(false), json!(true))]
        );
        assert_eq!(
            diff(&json!(["b"]), &json!(["a", "b"])),
            [changed("/0", json!("b"), json!("a")), added("/1", json!("b"))]
        );
    }

    #[test]
    fn null_is_a_value_not_an_absence() {
        assert_eq!(diff(&json!({}), &json!({ "k": null })), [added("/k", json!(null))]);
        assert_eq!(diff(&json!({ "k": null }), &json!({})), [removed("/k", json!(null))]);
        assert_eq!(diff(&json!({ "k": null }), &json!({ "k": 0 })), [changed("/k", json!(null), json!(0))]);
        let json = added("/k", json!(null)).to_json();
        assert_eq!(json, json!({ "op": "added", "path": "/k", "new": null }));
        assert!(json.get("old").is_none());
        assert_eq!(removed("/k", json!(1)).to_json(), json!({ "op": "removed", "path": "/k", "old": 1 }));
        assert_eq!(
            changed("", json!(1), json!(2)).to_json(),
            json!({ "op": "changed", "path": "", "old": 1, "new": 2 })
        );
    }

    #[test]
    fn keys_are_escaped_as_json_pointer_tokens() {
        let changes = diff(&json!({ "a/b": 1, "m~n": 1, "": 1 }), &json!({ "a/b": 2, "m~n": 2, "": 2 }));
        let paths: Vec<&str> = changes.iter().map(Change::path).collect();
        assert_eq!(paths, ["/", "/a~1b", "/m~0n"]);
        // Each path finds its value again through serde_json's own JSON Pointer lookup.
        let new = json!({ "a/b": 2, "m~n": 2, "": 2 });
        for change in &changes {
            assert_eq!(new.pointer(change.path()), Some(&json!(2)), "{}", change.path());
        }
    }
}
