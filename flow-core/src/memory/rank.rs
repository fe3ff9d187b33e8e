//! How a recall ranks records, the same in every store: the score, scope and metadata matching,
//! and the byte form embeddings are stored in.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde_json::{Map, Value};

use super::{MemorySearch, Recalled};

/// Whether `scope` is `wanted`, or (with `subscopes`) below it: `company/acme` is below
/// `company`, `companyx` is not.
pub(crate) fn scope_matches(scope: &str, wanted: &str, subscopes: bool) -> bool {
    scope == wanted
        || (subscopes
            && scope.len() > wanted.len()
            && scope.starts_with(wanted)
            && scope.as_bytes()[wanted.len()] == b'/')
}

/// Whether every key of `filter` has the same value in `metadata`.
pub(crate) fn metadata_matches(metadata: &Map<String, Value>, filter: &Map<String, Value>) -> bool {
    filter.iter().all(|(k, v)| metadata.get(k) == Some(v))
}

/// Stored metadata read back; a damaged value leaves its record out of recalls (logged) rather
/// than failing every recall of its scope.
pub(crate) fn decode_metadata(id: &str, text: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Some(map),
        Ok(other) => {
            tracing::warn!(record = id, value = %other, "memory record's metadata is not a JSON object; left out");
            None
        }
        Err(e) => {
            tracing::warn!(record = id, error = %e, "memory record's metadata is not JSON; left out");
            None
        }
    }
}

/// The upper bound of the scopes below `scope` in byte order: scopes below it sort in
/// `[scope + "/", scope + "0")`, as `0` follows `/`.
pub(crate) fn subscope_range(scope: &str) -> (String, String) {
    (format!("{scope}/"), format!("{scope}0"))
}

/// An embedding as stored: its floats in little-endian order.
pub(crate) fn to_bytes(embedding: &[f32]) -> Vec<u8> {
    embedding.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[cfg(test)]
fn from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The cosine of a query and a stored embedding, without decoding the latter into a vector.
pub(crate) fn cosine_bytes(query: &[f32], query_norm: f32, stored: &[u8]) -> f32 {
    if stored.len() != query.len() * 4 || query_norm == 0.0 {
        return 0.0;
    }
    let (mut dot, mut norm) = (0.0f32, 0.0f32);
    for (q, c) in query.iter().zip(stored.chunks_exact(4)) {
        let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        dot += q * x;
        norm += x * x;
    }
    if norm == 0.0 { 0.0 } else { dot / (query_norm * norm.sqrt()) }
}

/// The parts of a record's score. `similarity` is clamped to `[0, 1]`.
pub(crate) fn score(search: &MemorySearch, similarity: f32, created_at_ms: i64, importance: f32) -> f32 {
    let w = &search.weights;
    let similarity = similarity.clamp(0.0, 1.0);
    w.similarity * similarity + w.recency * recency(search, created_at_ms) + w.importance * importance.clamp(0.0, 1.0)
}

/// `0.5 ^ (age / half_life)`: 1 for a record made now, 0.5 for one a half-life old.
pub(crate) fn recency(search: &MemorySearch, created_at_ms: i64) -> f32 {
    let half_life = search.weights.half_life.as_millis() as f64;
    if half_life <= 0.0 {
        return 0.0;
    }
    let age = (search.now_ms - created_at_ms).max(0) as f64;
    0.5f64.powf(age / half_life) as f32
}

/// A candidate in the running top k: the lowest score on top of the heap, so it is the one
/// pushed out. Ties go to the newer record, then to the id, so every store ranks alike.
#[derive(Debug)]
pub(crate) struct Ranked<T> {
    pub(crate) score: f32,
    pub(crate) similarity: f32,
    pub(crate) created_at_ms: i64,
    pub(crate) id: String,
    pub(crate) item: T,
}

impl<T> Ranked<T> {
    fn better(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(self.created_at_ms.cmp(&other.created_at_ms))
            .then_with(|| other.id.cmp(&self.id))
    }
}

impl<T> PartialEq for Ranked<T> {
    fn eq(&self, other: &Self) -> bool {
        self.better(other) == Ordering::Equal
    }
}
impl<T> Eq for Ranked<T> {}
impl<T> PartialOrd for Ranked<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Ranked<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: the heap's top is the worst of the kept ones.
        other.better(self)
    }
}

/// Keeps the `k` best candidates seen.
pub(crate) struct TopK<T> {
    k: usize,
    heap: BinaryHeap<Ranked<T>>,
}

impl<T> TopK<T> {
    pub(crate) fn new(k: usize) -> Self {
        TopK { k, heap: BinaryHeap::with_capacity(k.min(1024) + 1) }
    }

    /// Whether a candidate with this score could still make it (saves decoding losers).
    pub(crate) fn admits(&self, score: f32) -> bool {
        self.k > 0 && (self.heap.len() < self.k || self.heap.peek().is_some_and(|worst| score >= worst.score))
    }

    pub(crate) fn push(&mut self, candidate: Ranked<T>) {
        if self.k == 0 {
            return;
        }
        self.heap.push(candidate);
        if self.heap.len() > self.k {
            self.heap.pop();
        }
    }

    /// The kept candidates, best first.
    pub(crate) fn into_sorted(self) -> Vec<Ranked<T>> {
        // `into_sorted_vec` sorts by `Ord` ascending, which is best first here.
        self.heap.into_sorted_vec()
    }
}

/// A recalled record from its parts.
pub(crate) fn recalled(ranked: Ranked<()>, parts: RecalledParts) -> Recalled {
    Recalled {
        id: ranked.id,
        scope: parts.scope,
        content: parts.content,
        metadata: parts.metadata,
        importance: parts.importance,
        created_at_ms: ranked.created_at_ms,
        expires_at_ms: parts.expires_at_ms,
        similarity: ranked.similarity,
        score: ranked.score,
    }
}

/// What a store reads of a winning record after ranking.
pub(crate) struct RecalledParts {
    pub(crate) scope: String,
    pub(crate) content: String,
    pub(crate) metadata: Map<String, Value>,
    pub(crate) importance: f32,
    pub(crate) expires_at_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_match_by_whole_segments() {
        assert!(scope_matches("company/acme", "company", true));
        assert!(!scope_matches("company/acme", "company", false));
        assert!(!scope_matches("companyx", "company", true));
        assert!(scope_matches("company", "company", false));
        let (low, high) = subscope_range("company");
        assert!("company/acme".as_bytes() >= low.as_bytes() && "company/acme".as_bytes() < high.as_bytes());
        assert!("company.x" < low.as_str() || "company.x" >= high.as_str());
    }

    #[test]
    fn embeddings_round_trip_through_bytes() {
        let v = vec![0.5f32, -1.25, 3.0];
        assert_eq!(from_bytes(&to_bytes(&v)), v);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((cosine_bytes(&v, norm, &to_bytes(&v)) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn top_k_keeps_the_best_first() {
        let mut top = TopK::new(2);
        for (i, s) in [0.1f32, 0.9, 0.5, 0.7].into_iter().enumerate() {
            top.push(Ranked { score: s, similarity: s, created_at_ms: 0, id: i.to_string(), item: () });
        }
        let ids: Vec<String> = top.into_sorted().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["1", "3"]);
    }
}
