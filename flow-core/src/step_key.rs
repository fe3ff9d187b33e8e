//! [`StepKey`]: the name of one activation, `method#n`, kept as its parts until something
//! needs the text.
//!
//! Most steps of an in-memory run never show their key to anyone (no event subscriber, no
//! store, no span, no journal), so formatting it for every step would be pure overhead. The
//! text is the same either way: what is persisted, shown in events or errors and returned by
//! `Ctx::step_key` does not depend on which form the key is held in.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `method#n`: the n-th activation of `method` in its run.
#[derive(Clone, Debug)]
pub(crate) enum StepKey {
    /// Scheduled in this process.
    Parts { method: &'static str, n: u32 },
    /// Read back from a checkpoint: kept exactly as stored.
    Text(Arc<str>),
}

impl StepKey {
    /// Whether the key reads as `text`. Used on paths that run once per pause or resume, so
    /// it may allocate.
    pub(crate) fn is(&self, text: &str) -> bool {
        match self {
            StepKey::Text(t) => **t == *text,
            StepKey::Parts { .. } => self.to_string() == text,
        }
    }
}

impl fmt::Display for StepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepKey::Parts { method, n } => write!(f, "{method}#{n}"),
            StepKey::Text(t) => f.write_str(t),
        }
    }
}

impl PartialEq for StepKey {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (StepKey::Parts { method: a, n: x }, StepKey::Parts { method: b, n: y }) => a == b && x == y,
            (StepKey::Text(a), b) | (b, StepKey::Text(a)) => b.is(a),
        }
    }
}

// The wire form is the text, as it was when keys were plain strings.
impl Serialize for StepKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            StepKey::Text(t) => serializer.serialize_str(t),
            StepKey::Parts { .. } => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for StepKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|s| StepKey::Text(s.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_read_and_persist_the_same() {
        let parts = StepKey::Parts { method: "review", n: 12 };
        let text = StepKey::Text("review#12".into());
        assert_eq!(parts.to_string(), "review#12");
        assert_eq!(parts, text);
        assert_eq!(text, parts);
        assert!(parts.is("review#12") && !parts.is("review#1"));
        assert_ne!(parts, StepKey::Parts { method: "review", n: 2 });
        let wire = serde_json::to_string(&parts).unwrap();
        assert_eq!(wire, r#""review#12""#);
        assert_eq!(serde_json::to_string(&text).unwrap(), wire);
        let back: StepKey = serde_json::from_str(&wire).unwrap();
        assert_eq!(back, parts);
    }

    #[test]
    fn an_activation_persists_as_it_did_with_a_text_key() {
        use crate::progress::Activation;
        let a = Activation {
            method: 3,
            step_key: StepKey::Parts { method: "review", n: 2 },
            payload: None,
            clock: vec![(3, 2)],
            attempt: 1,
            not_before_ms: None,
            sleeping: false,
            paused: None,
            undo_of: None,
            slot: Some(7),
            wake: None,
        };
        let wire = serde_json::to_string(&a).unwrap();
        assert_eq!(wire, r#"{"method":3,"step_key":"review#2","clock":[[3,2]],"attempt":1}"#);
        let back: Activation = serde_json::from_str(&wire).unwrap();
        assert_eq!(back.step_key.to_string(), "review#2");
        assert_eq!(back, Activation { slot: None, ..a });
    }
}
