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

/// An embedding read back from its stored bytes ([`to_bytes`]).
pub(crate) fn from_bytes(bytes: &[u8]) -> Vec<f32> {
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

/// A record's score from its parts. `similarity` is clamped to `[0, 1]`; `lexical` is
/// [`lexical`]'s.
pub(crate) fn score(search: &MemorySearch, similarity: f32, lexical: f32, created_at_ms: i64, importance: f32) -> f32 {
    let w = &search.weights;
    let similarity = similarity.clamp(0.0, 1.0);
    w.similarity * similarity
        + w.lexical * lexical
        + w.recency * recency(search, created_at_ms)
        + w.importance * importance.clamp(0.0, 1.0)
}

/// The words of a query that count for its lexical match: lower-cased runs of letters and
/// digits, stop words left out, each once. The full-text indexes (SQLite's FTS5, PostgreSQL's
/// `simple` text search) split text the same way, so these are what they are asked for.
pub(crate) fn query_terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in super::embed::words(query) {
        if !terms.contains(&word) {
            terms.push(word);
        }
    }
    terms
}

/// The share of the query's `terms` that occur as words of `content`: 1 when every term does,
/// 0 when none does (or the query has none). It is computed here, the same way for every store,
/// rather than taken from a full-text index's own rank (bm25 in SQLite, `ts_rank` in
/// PostgreSQL): those are unbounded and depend on the rest of the corpus, so a record's score
/// would differ from store to store and drift as other records come and go.
pub(crate) fn lexical(terms: &[String], content: &str) -> f32 {
    if terms.is_empty() {
        return 0.0;
    }
    let words: std::collections::HashSet<String> = super::embed::words(content).collect();
    let found = terms.iter().filter(|t| words.contains(t.as_str())).count();
    found as f32 / terms.len() as f32
}

/// Bits in an embedding's sketch.
pub(crate) const SKETCH_BITS: usize = 1024;

/// An embedding's sketch: the signs of its projections on [`SKETCH_BITS`] fixed random
/// hyperplanes (±1 coefficients drawn from a seeded hash of the dimension and the bit), packed
/// little-endian. The share of bits two sketches differ in estimates the angle between their
/// embeddings (`P(bit differs) = angle / π`), so a recall can rank a large scope by reading
/// 128 bytes per record instead of the whole vector, and score exactly only the best of them.
/// With 1,024 bits the estimate's standard deviation is about 0.05 in cosine near 0.
pub(crate) fn sketch(embedding: &[f32]) -> Vec<u8> {
    const WORDS: usize = SKETCH_BITS / 64;
    let mut acc = [0.0f32; SKETCH_BITS];
    for (i, &x) in embedding.iter().enumerate() {
        if x == 0.0 || !x.is_finite() {
            continue;
        }
        for w in 0..WORDS {
            let signs = mix(((i as u64) << 5) | w as u64);
            let lane = &mut acc[w * 64..(w + 1) * 64];
            for (j, a) in lane.iter_mut().enumerate() {
                // Flipping the sign bit of `x` where the coefficient is -1.
                let flip = (((signs >> j) & 1) as u32) << 31;
                *a += f32::from_bits(x.to_bits() ^ flip);
            }
        }
    }
    let mut out = vec![0u8; SKETCH_BITS / 8];
    for (bit, a) in acc.iter().enumerate() {
        if *a > 0.0 {
            out[bit / 8] |= 1 << (bit % 8);
        }
    }
    out
}

/// splitmix64's finaliser: a well-mixed 64-bit word from a counter.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The cosine two sketches estimate (`cos(π · differing bits / bits)`), clamped to `[0, 1]`;
/// 0 for sketches of different lengths.
pub(crate) fn sketch_similarity(a: &[u8], b: &[u8]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let differing: u32 = a
        .chunks(8)
        .zip(b.chunks(8))
        .map(|(x, y)| {
            let mut xa = [0u8; 8];
            let mut ya = [0u8; 8];
            xa[..x.len()].copy_from_slice(x);
            ya[..y.len()].copy_from_slice(y);
            (u64::from_le_bytes(xa) ^ u64::from_le_bytes(ya)).count_ones()
        })
        .sum();
    let angle = std::f32::consts::PI * differing as f32 / (a.len() * 8) as f32;
    angle.cos().clamp(0.0, 1.0)
}

/// How many records of a large scope a recall scores exactly from each of the shortlist's two
/// rankings ([`Shortlist`]): enough that one whose true similarity stands about 0.15 above the
/// crowd's is among the sketch's best even in a scope of 100,000.
pub(crate) fn coarse_candidates(k: usize) -> usize {
    k.saturating_mul(16).max(256)
}

/// The records of a large scope worth scoring exactly, chosen from what a covering index holds
/// (sketch, age, importance) without reading any vector: the best by the sketch's similarity
/// estimate with recency and importance, the best by recency and importance alone (so the
/// estimate's noise cannot hide what would win on standing when no record is much like the
/// query), and every record without a sketch.
pub(crate) struct Shortlist<'a, T> {
    search: &'a MemorySearch,
    query_sketch: Vec<u8>,
    blank: bool,
    by_estimate: TopK<T>,
    by_standing: TopK<T>,
    unsketched: Vec<T>,
}

impl<'a, T: Clone> Shortlist<'a, T> {
    pub(crate) fn new(search: &'a MemorySearch) -> Self {
        let n = coarse_candidates(search.k);
        Shortlist {
            search,
            query_sketch: sketch(&search.embedding),
            blank: search.embedding.iter().all(|x| *x == 0.0),
            by_estimate: TopK::new(n),
            by_standing: TopK::new(n),
            unsketched: Vec::new(),
        }
    }

    pub(crate) fn offer(&mut self, item: T, stored: Option<&[u8]>, created_at_ms: i64, importance: f32) {
        let Some(stored) = stored else {
            self.unsketched.push(item);
            return;
        };
        let standing = score(self.search, 0.0, 0.0, created_at_ms, importance);
        if self.by_standing.admits(standing) {
            let id = String::new();
            self.by_standing.push(Ranked { score: standing, similarity: 0.0, created_at_ms, id, item: item.clone() });
        }
        if self.blank {
            return;
        }
        let estimate = sketch_similarity(&self.query_sketch, stored);
        let rough = standing + self.search.weights.similarity * estimate;
        if self.by_estimate.admits(rough) {
            self.by_estimate.push(Ranked {
                score: rough,
                similarity: estimate,
                created_at_ms,
                id: String::new(),
                item,
            });
        }
    }

    /// The shortlisted items (an item may come twice).
    pub(crate) fn into_items(self) -> impl Iterator<Item = T> {
        let estimate = self.by_estimate.into_sorted().into_iter().map(|r| r.item);
        let standing = self.by_standing.into_sorted().into_iter().map(|r| r.item);
        self.unsketched.into_iter().chain(estimate).chain(standing)
    }
}

/// How many of the newest records sharing the query's words a recall scores exactly, besides
/// the sketch's candidates: those that share every word, and those that share any.
pub(crate) const LEXICAL_CANDIDATES: i64 = 64;

/// The full-text query for records containing every (`all`) or any of `terms`, in FTS5's
/// syntax: each term a quoted string (terms are letters and digits only, so they need no
/// escaping).
pub(crate) fn fts5_query(terms: &[String], all: bool) -> String {
    let quoted: Vec<String> = terms.iter().map(|t| format!("\"{t}\"")).collect();
    quoted.join(if all { " AND " } else { " OR " })
}

/// The same in PostgreSQL's `tsquery` syntax, each term a quoted lexeme.
#[cfg(feature = "postgres")]
pub(crate) fn tsquery(terms: &[String], all: bool) -> String {
    let quoted: Vec<String> = terms.iter().map(|t| format!("'{t}'")).collect();
    quoted.join(if all { " & " } else { " | " })
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
    fn sketches_estimate_the_angle() {
        let e = crate::memory::HashEmbedder::default();
        let a = e.vector("Acme corrected the VAT rate on their invoices");
        let near = e.vector("which tax rate fixes did the invoice of Acme need");
        let far = e.vector("the weather in Lisbon is sunny");
        let (sa, snear, sfar) = (sketch(&a), sketch(&near), sketch(&far));
        assert_eq!(sa.len(), SKETCH_BITS / 8);
        assert_eq!(sketch_similarity(&sa, &sa), 1.0);
        let exact = crate::memory::cosine(&a, &near);
        assert!((sketch_similarity(&sa, &snear) - exact).abs() < 0.2, "{exact}");
        assert!(sketch_similarity(&sa, &snear) > sketch_similarity(&sa, &sfar));
        assert_eq!(sketch_similarity(&sa, &sa[..64]), 0.0, "different lengths");
        assert_eq!(sketch(&[0.0; 8]), vec![0u8; SKETCH_BITS / 8]);
    }

    #[test]
    fn lexical_is_the_share_of_query_words_found() {
        let terms = query_terms("the Acme invoice, the ACME total");
        assert_eq!(terms, ["acme", "invoice", "total"]);
        assert!((lexical(&terms, "Acme's invoice was late") - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(lexical(&terms, "nothing here"), 0.0);
        assert_eq!(lexical(&[], "Acme"), 0.0);
        assert_eq!(fts5_query(&terms, true), "\"acme\" AND \"invoice\" AND \"total\"");
        #[cfg(feature = "postgres")]
        assert_eq!(tsquery(&terms, false), "'acme' | 'invoice' | 'total'");
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
