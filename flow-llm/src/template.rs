//! [`Inputs`] and `{name}` templating of task descriptions and agent texts.
//!
//! ```
//! use flow_llm::Inputs;
//!
//! let inputs = Inputs::new().with("topic", "solid-state batteries").with("year", 2025);
//! assert_eq!(inputs.get("year"), Some("2025"));
//! ```

use std::collections::BTreeMap;
use std::fmt;

use crate::error::LlmError;

/// Named values substituted for `{name}` placeholders when a crew or task is kicked off.
///
/// ```
/// use flow_llm::Inputs;
/// let a = Inputs::from([("topic", "AI")]);
/// let b: Inputs = [("topic", "AI")].into_iter().collect();
/// assert_eq!(a, b);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs(BTreeMap<String, String>);

impl Inputs {
    /// No inputs.
    ///
    /// ```
    /// assert!(flow_llm::Inputs::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an input.
    ///
    /// ```
    /// assert_eq!(flow_llm::Inputs::new().with("n", 3).get("n"), Some("3"));
    /// ```
    pub fn with(mut self, name: impl Into<String>, value: impl fmt::Display) -> Self {
        self.insert(name, value);
        self
    }

    /// Sets an input.
    ///
    /// ```
    /// let mut i = flow_llm::Inputs::new();
    /// i.insert("k", "v");
    /// assert_eq!(i.get("k"), Some("v"));
    /// ```
    pub fn insert(&mut self, name: impl Into<String>, value: impl fmt::Display) {
        self.0.insert(name.into(), value.to_string());
    }

    /// An input's value.
    ///
    /// ```
    /// assert_eq!(flow_llm::Inputs::new().get("missing"), None);
    /// ```
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Whether there are no inputs.
    ///
    /// ```
    /// assert!(!flow_llm::Inputs::from([("a", "b")]).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Replaces every `{name}` in `text` with the input of that name; `{{` and `}}` stand for
    /// literal braces, and braces around anything that is not an identifier (JSON examples)
    /// are left alone. A placeholder without an input is an error naming `place`.
    ///
    /// ```
    /// use flow_llm::Inputs;
    /// let i = Inputs::from([("topic", "AI")]);
    /// assert_eq!(i.render("About {topic}: {{braces}} {\"k\": 1}", "task").unwrap(), "About AI: {braces} {\"k\": 1}");
    /// assert!(i.render("{missing}", "task `t`").is_err());
    /// ```
    pub fn render(&self, text: &str, place: &str) -> Result<String, LlmError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(pos) = rest.find(['{', '}']) {
            out.push_str(&rest[..pos]);
            let tail = &rest[pos..];
            if let Some(after) = tail.strip_prefix("{{") {
                out.push('{');
                rest = after;
            } else if let Some(after) = tail.strip_prefix("}}") {
                out.push('}');
                rest = after;
            } else if let Some(after) = tail.strip_prefix('{')
                && let Some(end) = after.find('}')
                && is_identifier(&after[..end])
            {
                let name = &after[..end];
                let value = self
                    .get(name)
                    .ok_or_else(|| LlmError::MissingInput { name: name.to_owned(), place: place.to_owned() })?;
                out.push_str(value);
                rest = &after[end + 1..];
            } else {
                out.push_str(&tail[..1]);
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl<K: Into<String>, V: fmt::Display> FromIterator<(K, V)> for Inputs {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut inputs = Inputs::new();
        for (k, v) in iter {
            inputs.insert(k, v);
        }
        inputs
    }
}

impl<K: Into<String>, V: fmt::Display, const N: usize> From<[(K, V); N]> for Inputs {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_reports_missing_inputs() {
        let i = Inputs::from([("a", "1"), ("b_2", "two")]);
        assert_eq!(i.render("{a}+{b_2}={a}{b_2}", "x").unwrap(), "1+two=1two");
        assert_eq!(i.render("no placeholders", "x").unwrap(), "no placeholders");
        assert_eq!(i.render("{ a }", "x").unwrap(), "{ a }");
        assert_eq!(i.render("unclosed {a", "x").unwrap(), "unclosed {a");
        assert_eq!(i.render("é{a}ü", "x").unwrap(), "é1ü");
        let err = i.render("needs {c}", "task `t`").unwrap_err();
        assert!(matches!(&err, LlmError::MissingInput { name, .. } if name == "c"));
        assert!(err.to_string().contains("task `t`"));
    }
}
