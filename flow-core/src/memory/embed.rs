//! Where embeddings come from: the [`Embedder`] trait, and [`HashEmbedder`], a deterministic
//! offline one for tests, examples and recall without a model.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::error::Error;

/// Turns texts into embedding vectors, for [`Memory`](crate::memory::Memory) to compare a
/// query with what was remembered. `flow_llm::OpenAiEmbedder` asks an OpenAI-compatible
/// endpoint's `/v1/embeddings`; [`HashEmbedder`] needs nothing.
///
/// Vectors of one embedder must all have the same length; records embedded by another model
/// (another length) are never similar to a query.
///
/// ```
/// use flow_core::memory::{Embedder, HashEmbedder};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), flow_core::Error> {
/// let vectors = HashEmbedder::default().embed(&["an invoice from Acme".to_string()]).await?;
/// assert_eq!(vectors[0].len(), HashEmbedder::DEFAULT_DIMENSIONS);
/// # Ok(()) }
/// ```
#[async_trait::async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// One vector per text, in order. A failure that may pass (rate limit, timeout) should be
    /// [`Error::transient`], so the step's retry policy applies.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error>;

    /// The model's name, kept with each record (for telling records of different models apart).
    fn model(&self) -> &str;
}

/// A deterministic embedder that needs no model: each text becomes a bag of normalised word
/// stems and their character trigrams, hashed into a fixed number of dimensions and
/// L2-normalised.
///
/// What it matches: shared content words in any form ("invoices" / "invoice", "priced" /
/// "pricing"), a small table of everyday synonyms ("firm" / "company", "buy" / "purchase",
/// "fix" / "correction"), and words sharing most of their letters. Stop words ("the", "of")
/// count for nothing. It is no language model: a paraphrase without a shared or synonymous
/// word is not found. The project's test server serves it as `/v1/embeddings`, so tests and
/// examples recall by meaning offline.
///
/// ```
/// use flow_core::memory::{Embedder, HashEmbedder, cosine};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), flow_core::Error> {
/// let e = HashEmbedder::default();
/// let v = e.embed(&[
///     "Acme corrected the VAT rate on their invoices".to_string(),
///     "which tax rate fixes did the invoice of Acme need".to_string(),
///     "the weather in Lisbon is sunny".to_string(),
/// ]).await?;
/// assert!(cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct HashEmbedder {
    dimensions: usize,
}

impl HashEmbedder {
    /// The dimensions of [`HashEmbedder::default`].
    pub const DEFAULT_DIMENSIONS: usize = 384;

    /// The model name it reports (and the test server answers with).
    pub const MODEL: &'static str = "flows-hash-embedding";

    /// An embedder of `dimensions` dimensions (at least 1).
    ///
    /// ```
    /// assert_eq!(flow_core::memory::HashEmbedder::new(64).dimensions(), 64);
    /// ```
    pub fn new(dimensions: usize) -> Self {
        HashEmbedder { dimensions: dimensions.max(1) }
    }

    /// The length of its vectors.
    ///
    /// ```
    /// assert_eq!(flow_core::memory::HashEmbedder::default().dimensions(), 384);
    /// ```
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// The vector of one text (all zeros for a text of stop words only).
    ///
    /// ```
    /// let e = flow_core::memory::HashEmbedder::default();
    /// assert_eq!(e.vector("Invoices"), e.vector("invoice"));
    /// ```
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; self.dimensions];
        for word in words(text) {
            let stem = canonical(&stem(&word));
            if stem.is_empty() {
                continue;
            }
            add(&mut v, &format!("w:{stem}"), 1.0);
            // Trigrams of the padded stem catch forms the stemmer leaves apart.
            let padded: Vec<char> = format!("<{stem}>").chars().collect();
            if padded.len() > 4 {
                for gram in padded.windows(3) {
                    let gram: String = gram.iter().collect();
                    add(&mut v, &format!("g:{gram}"), 0.35);
                }
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

impl Default for HashEmbedder {
    fn default() -> Self {
        HashEmbedder::new(Self::DEFAULT_DIMENSIONS)
    }
}

#[async_trait::async_trait]
impl Embedder for HashEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }

    fn model(&self) -> &str {
        Self::MODEL
    }
}

fn add(v: &mut [f32], feature: &str, weight: f32) {
    let h = fnv(feature.as_bytes());
    let len = v.len() as u64;
    let index = usize::try_from(h % len).unwrap_or(0);
    // A second hash bit signs the feature, so collisions cancel out on average.
    let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
    v[index] += sign * weight;
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Lower-cased words of letters and digits, stop words left out.
pub(crate) fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
}

const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "did", "do", "does", "for", "from", "had", "has", "have", "in",
    "is", "it", "its", "of", "on", "or", "our", "so", "that", "the", "their", "them", "they", "this", "to", "was",
    "we", "were", "what", "when", "which", "who", "will", "with", "you", "your", "about", "any", "all", "been", "can",
    "could", "how", "into", "it's", "me", "my", "no", "not", "than", "then", "there", "these", "those", "us", "would",
    "should",
];

/// A crude suffix-stripping stemmer: enough for plural and verb forms of the same word to meet.
fn stem(word: &str) -> String {
    let mut w = word.to_string();
    for suffix in
        ["ational", "ization", "ations", "ation", "ments", "ment", "ingly", "edly", "ings", "ing", "ies", "ied"]
    {
        if w.len() > suffix.len() + 2 && w.ends_with(suffix) {
            w.truncate(w.len() - suffix.len());
            if suffix.starts_with("ie") {
                w.push('y');
            }
            return trim_tail(w);
        }
    }
    for suffix in ["es", "ed", "ly", "er", "s"] {
        if w.len() > suffix.len() + 2 && w.ends_with(suffix) && !w.ends_with("ss") {
            w.truncate(w.len() - suffix.len());
            return trim_tail(w);
        }
    }
    trim_tail(w)
}

/// Drops a final `e` and undoubles a final consonant, so "price" / "pric(ed)" and
/// "ship" / "shipp(ed)" meet.
fn trim_tail(mut w: String) -> String {
    if w.len() > 3 && w.ends_with('e') {
        w.pop();
    }
    let bytes = w.as_bytes();
    if bytes.len() > 3
        && bytes[bytes.len() - 1] == bytes[bytes.len() - 2]
        && !b"aeiouls".contains(&bytes[bytes.len() - 1])
    {
        w.pop();
    }
    w
}

/// Synonym groups: every word of a group (after stemming) stands for its first.
const SYNONYMS: &[&[&str]] = &[
    &["company", "firm", "business", "organisation", "organization", "corporation", "vendor", "supplier"],
    &["buy", "purchase", "order", "acquire"],
    &["fix", "correct", "correction", "repair", "amend", "adjust"],
    &["mistake", "error", "wrong", "incorrect"],
    &["price", "cost", "pricing", "fee", "charge"],
    &["customer", "client", "buyer"],
    &["big", "large", "huge"],
    &["small", "little", "tiny"],
    &["tax", "vat"],
    &["employee", "staff", "headcount", "worker", "people"],
    &["ceo", "chief", "founder", "head"],
    &["raise", "funding", "invest", "investment", "round"],
    &["email", "mail", "message"],
    &["reply", "answer", "respond", "response"],
    &["deliver", "delivery", "ship", "shipment", "shipping"],
];

fn canonical(stemmed: &str) -> String {
    static TABLE: OnceLock<HashMap<String, String>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = HashMap::new();
        for group in SYNONYMS {
            let head = stem(group[0]);
            for word in *group {
                table.insert(stem(word), head.clone());
            }
        }
        table
    });
    table.get(stemmed).cloned().unwrap_or_else(|| stemmed.to_string())
}

/// The cosine similarity of two vectors: 0 when their lengths differ or either is all zeros.
///
/// ```
/// use flow_core::memory::cosine;
/// assert_eq!(cosine(&[1.0, 0.0], &[2.0, 0.0]), 1.0);
/// assert_eq!(cosine(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
/// assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
/// ```
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na.sqrt() * nb.sqrt()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_of_a_word_meet() {
        for (a, b) in [("invoices", "invoice"), ("priced", "price"), ("shipped", "ship"), ("companies", "company")] {
            assert_eq!(canonical(&stem(a)), canonical(&stem(b)), "{a} / {b}");
        }
        assert_eq!(canonical(&stem("firms")), canonical(&stem("company")));
        assert_ne!(canonical(&stem("invoice")), canonical(&stem("weather")));
    }

    #[test]
    fn a_paraphrase_is_closer_than_a_distractor() {
        let e = HashEmbedder::default();
        let record = e.vector("Acme Corp raised a Series B round and has 120 employees");
        let paraphrase = e.vector("how many staff does the Acme company have after its funding");
        let distractor = e.vector("Globex ships industrial pumps to Brazil");
        assert!(cosine(&record, &paraphrase) > 0.2);
        assert!(cosine(&record, &paraphrase) > 2.0 * cosine(&record, &distractor));
    }
}
