//! Memory across runs: what a flow learned (about a company, from a reviewer's correction),
//! kept in the run's store and recalled by meaning in later runs.
//!
//! Inside a step, [`Ctx::remember`](crate::Ctx::remember) stores a record and
//! [`Ctx::recall`](crate::Ctx::recall) finds the records closest to a query; both are journaled
//! effects, so a step that runs again after a crash gets the same recall and does not store
//! the same memory twice. [`Ctx::forget`](crate::Ctx::forget) erases records.
//!
//! **Scopes** are paths of `/`-separated segments: `company/acme`, `flow/lead_enrichment`. A
//! recall on a scope includes the scopes below it (`company` finds `company/acme`) unless
//! [`Recall::exact_scope`] says not to; [`Forget::Scope`] always erases the scopes below too.
//!
//! **Ranking.** Each record in scope that matches the metadata filter and has not expired is
//! scored
//!
//! ```text
//! score = w_sim * similarity + w_lex * lexical + w_rec * 0.5^(age / half_life) + w_imp * importance
//! ```
//!
//! where `similarity` is the cosine of the query's and the record's embeddings clamped to
//! `[0, 1]`, `lexical` the share of the query's words (letters and digits, lower-cased, stop
//! words left out) that occur in the record's content, `age` is the time since the record was
//! remembered and `importance` is the record's own (`[0, 1]`, default 0.5). The `k` best come
//! back, best first; ties go to the newer record. [`Weights::default`] is `w_sim = 1`,
//! `w_lex = 0.3`, `w_rec = 0.2`, `w_imp = 0.2`, a half-life of 30 days. Every store scores
//! with the same code, so a record scores the same whichever store holds it.
//!
//! **Large scopes.** The durable stores do not score every record of a large scope exactly:
//! they keep a 1,024-bit sketch of each embedding (the signs of fixed random projections,
//! whose differing bits estimate the angle between two embeddings) and a full-text index of
//! the content (SQLite's FTS5, PostgreSQL's `tsvector`). A recall reads 128 bytes of sketch per
//! record of the scope and scores exactly a shortlist of a few hundred: the best by the sketch's
//! estimate with recency and importance, the best by recency and importance alone, and the
//! newest records sharing the query's words (all of them, then any). A scope of up to 256
//! records (16 × `k` for larger `k`) is scored exactly throughout, and so is a recall with a
//! metadata filter, which may leave out any share of the scope. On PostgreSQL with pgvector
//! (`PgStore::pgvector`, feature `postgres`) the server scores every record of the scope with
//! the same blend, so the ranking is exact.
//!
//! **Time to live.** A record remembered with [`Remember::ttl`] is never recalled once expired,
//! and every store deletes expired records when it stores a new one
//! ([`Store::memory_put`]) or when asked
//! ([`Store::memory_purge_expired`]).
//!
//! **Embeddings** come from the runner's [`Embedder`] ([`Runner::with_embedder`](crate::Runner::with_embedder)):
//! `flow_llm::OpenAiEmbedder` asks an OpenAI-compatible endpoint, and without one the
//! [`HashEmbedder`] (deterministic, offline, lexical) is used.
//!
//! ```
//! use flow_core::prelude::*;
//! use flow_core::memory::Recall;
//! use flow_core::store::MemoryStore;
//! use serde::{Deserialize, Serialize};
//! use serde_json::json;
//!
//! #[derive(Clone, Default, Serialize, Deserialize)]
//! struct Lead { company: String, known: Vec<String> }
//! struct Research;
//!
//! #[flow(state = Lead)]
//! impl Research {
//!     #[start]
//!     async fn research(&self, cx: &Ctx<Lead>) -> Result<()> {
//!         let company = cx.read(|s| s.company.clone());
//!         let scope = format!("company/{company}");
//!         let known = cx.recall(&scope, "how many employees", 3).await?;
//!         cx.update(move |s| s.known = known.iter().map(|r| r.content.clone()).collect());
//!         cx.remember(&scope, format!("{company} has 120 employees"), json!({ "source": "research" })).await?;
//!         Ok(())
//!     }
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! let runner = Runner::new(Research).with_store(MemoryStore::new());
//! let lead = Lead { company: "acme".into(), known: vec![] };
//! let first = runner.kickoff(lead.clone()).await?.completed()?;
//! assert!(first.state.known.is_empty());
//! // The second run recalls what the first one remembered.
//! let second = runner.kickoff(lead).await?.completed()?;
//! assert_eq!(second.state.known, ["acme has 120 employees"]);
//! # Ok(()) }
//! ```

mod embed;
mod rank;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use self::embed::{Embedder, HashEmbedder, cosine};
#[cfg(feature = "postgres")]
pub(crate) use self::rank::tsquery;
pub(crate) use self::rank::{
    LEXICAL_CANDIDATES, Ranked, RecalledParts, Shortlist, TopK, cosine_bytes, decode_metadata, from_bytes, fts5_query,
    lexical, metadata_matches, query_terms, recalled, scope_matches, score, sketch, subscope_range, to_bytes,
};
use crate::ctx::Ctx;
use crate::error::Error;
use crate::flow::State;
use crate::journal::{Journal, request_hash};
use crate::store::{Store, StoreError, now_ms};

/// A record as stored: what [`Store::memory_put`] keeps.
///
/// ```
/// use flow_core::memory::MemoryRecord;
/// let r = MemoryRecord::new("id-1", "company/acme", "Acme has 120 employees", vec![0.6, 0.8]);
/// assert_eq!((r.importance, r.expires_at_ms), (0.5, None));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryRecord {
    /// Unique in the store; storing a record whose id is stored already changes nothing.
    pub id: String,
    /// Where it belongs: a `/`-separated path.
    pub scope: String,
    /// What was learned.
    pub content: String,
    /// Labels to filter and erase by (`{"customer": "acme"}`).
    pub metadata: Map<String, Value>,
    /// How much it counts in a recall, in `[0, 1]`.
    pub importance: f32,
    /// When it was remembered, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// When it expires (never recalled from then on, and purged), ms since the Unix epoch.
    pub expires_at_ms: Option<i64>,
    /// The embedder's model.
    pub model: String,
    /// The content's embedding.
    pub embedding: Vec<f32>,
}

impl MemoryRecord {
    /// A record made now, with no metadata, importance 0.5 and no expiry.
    ///
    /// ```
    /// let r = flow_core::memory::MemoryRecord::new("a", "notes", "hello", vec![1.0]);
    /// assert!(r.created_at_ms > 0);
    /// ```
    pub fn new(
        id: impl Into<String>,
        scope: impl Into<String>,
        content: impl Into<String>,
        embedding: Vec<f32>,
    ) -> Self {
        MemoryRecord {
            id: id.into(),
            scope: scope.into(),
            content: content.into(),
            metadata: Map::new(),
            importance: DEFAULT_IMPORTANCE,
            created_at_ms: now_ms(),
            expires_at_ms: None,
            model: String::new(),
            embedding,
        }
    }
}

const DEFAULT_IMPORTANCE: f32 = 0.5;

/// How a recall weighs similarity, shared words, recency and importance (see the
/// [module](self) docs for the formula).
///
/// ```
/// use std::time::Duration;
/// use flow_core::memory::Weights;
/// // Prefer what was learned lately: recency counts as much as meaning, halving every week.
/// let w = Weights { recency: 1.0, half_life: Duration::from_secs(7 * 86_400), ..Weights::default() };
/// assert_eq!(w.similarity, 1.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// Weight of the cosine similarity of query and record.
    pub similarity: f32,
    /// Weight of the share of the query's words found in the record. A journaled recall made
    /// with the default (0.3) records no value for it, so recalls journaled before it existed
    /// replay as they were.
    #[serde(default = "default_lexical", skip_serializing_if = "is_default_lexical")]
    pub lexical: f32,
    /// Weight of `0.5^(age / half_life)`.
    pub recency: f32,
    /// Weight of the record's importance.
    pub importance: f32,
    /// The age at which a record's recency term is halved.
    #[serde(with = "millis")]
    pub half_life: Duration,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            similarity: 1.0,
            lexical: DEFAULT_LEXICAL,
            recency: 0.2,
            importance: 0.2,
            half_life: Duration::from_secs(30 * 86_400),
        }
    }
}

const DEFAULT_LEXICAL: f32 = 0.3;

fn default_lexical() -> f32 {
    DEFAULT_LEXICAL
}

fn is_default_lexical(w: &f32) -> bool {
    w.to_bits() == DEFAULT_LEXICAL.to_bits()
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// What a store is asked for by [`Store::memory_search`]:
/// a recall with its query embedded and its clock read.
#[derive(Clone, Debug, PartialEq)]
pub struct MemorySearch {
    /// The scope searched.
    pub scope: String,
    /// The query's text, for the lexical part of the score and the full-text candidates
    /// (empty: none).
    pub query: String,
    /// Whether scopes below `scope` are searched too.
    pub subscopes: bool,
    /// Metadata every result has (equal values under these keys).
    pub filter: Map<String, Value>,
    /// The query's embedding.
    pub embedding: Vec<f32>,
    /// How many results at most.
    pub k: usize,
    /// How results are ranked.
    pub weights: Weights,
    /// The time the recall is made at, ms since the Unix epoch: records expired by then are
    /// left out and ages are counted to it.
    pub now_ms: i64,
}

/// A recalled record and its score: what [`Ctx::recall`](crate::Ctx::recall) returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recalled {
    /// The record's id (for [`Forget::Record`]).
    pub id: String,
    /// Its scope.
    pub scope: String,
    /// What was remembered.
    pub content: String,
    /// Its metadata.
    pub metadata: Map<String, Value>,
    /// Its importance.
    pub importance: f32,
    /// When it was remembered, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// When it expires.
    pub expires_at_ms: Option<i64>,
    /// The cosine similarity to the query, clamped to `[0, 1]`.
    pub similarity: f32,
    /// Its score under the recall's [`Weights`].
    pub score: f32,
}

/// What to erase ([`Ctx::forget`], [`Store::memory_forget`]).
///
/// ```
/// use flow_core::memory::Forget;
/// // Everything stored about one customer, in every scope:
/// let erase = Forget::matching(serde_json::json!({ "customer": "acme" }))?;
/// # let _ = erase;
/// # Ok::<(), flow_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Forget {
    /// One record, by id.
    Record(String),
    /// A scope and every scope below it.
    Scope(String),
    /// Records whose metadata has these values, in `scope` and below it (everywhere when
    /// `None`).
    Matching {
        /// Where to look; `None`: in every scope.
        scope: Option<String>,
        /// The values every erased record has.
        metadata: Map<String, Value>,
    },
}

impl Forget {
    /// Records matching `metadata` (a JSON object) in every scope.
    ///
    /// ```
    /// assert!(flow_core::memory::Forget::matching(serde_json::json!("not an object")).is_err());
    /// ```
    pub fn matching(metadata: Value) -> Result<Forget, Error> {
        let metadata = object(metadata, "the metadata to forget by")?;
        if metadata.is_empty() {
            return Err(Error::permanent(
                "forgetting by metadata needs at least one key: an empty match would erase every record; use Forget::Scope for a scope",
            ));
        }
        Ok(Forget::Matching { scope: None, metadata })
    }

    /// Whether a record falls under this (for stores that filter in Rust).
    pub(crate) fn covers(&self, id: &str, scope: &str, metadata: &Map<String, Value>) -> bool {
        match self {
            Forget::Record(wanted) => id == wanted,
            Forget::Scope(wanted) => scope_matches(scope, wanted, true),
            Forget::Matching { scope: wanted, metadata: filter } => {
                wanted.as_deref().is_none_or(|w| scope_matches(scope, w, true)) && metadata_matches(metadata, filter)
            }
        }
    }
}

/// A record to remember ([`Ctx::remember_with`](crate::Ctx::remember_with)).
///
/// ```
/// use std::time::Duration;
/// use flow_core::memory::Remember;
/// let r = Remember::new("supplier/globex", "Globex invoices in EUR, never USD")
///     .metadata(serde_json::json!({ "kind": "correction", "reviewer": "ana" }))
///     .importance(0.9)
///     .ttl(Duration::from_secs(365 * 86_400));
/// # let _ = r;
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Remember {
    scope: String,
    content: String,
    metadata: Value,
    importance: f32,
    ttl_ms: Option<u64>,
}

impl Remember {
    /// `content` in `scope`, importance 0.5, no metadata, kept until forgotten.
    pub fn new(scope: impl Into<String>, content: impl Into<String>) -> Self {
        Remember {
            scope: scope.into(),
            content: content.into(),
            metadata: Value::Object(Map::new()),
            importance: DEFAULT_IMPORTANCE,
            ttl_ms: None,
        }
    }

    /// Labels to filter and erase by: a JSON object (`null` for none).
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// How much it counts in a recall, `[0, 1]` (clamped).
    pub fn importance(mut self, importance: f32) -> Self {
        self.importance = if importance.is_nan() { DEFAULT_IMPORTANCE } else { importance.clamp(0.0, 1.0) };
        self
    }

    /// How long it is kept: never recalled after, and purged.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl_ms = Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        self
    }
}

/// A recall ([`Ctx::recall_with`](crate::Ctx::recall_with)): the `k` records of a scope
/// that rank best for a query.
///
/// ```
/// use flow_core::memory::{Recall, Weights};
/// let r = Recall::new("supplier/globex", "currency of the invoice")
///     .k(3)
///     .exact_scope()
///     .filter("kind", "correction")
///     .weights(Weights { importance: 0.5, ..Weights::default() });
/// # let _ = r;
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recall {
    scope: String,
    query: String,
    k: usize,
    subscopes: bool,
    filter: Map<String, Value>,
    weights: Weights,
}

impl Recall {
    /// The 5 best records for `query` in `scope` and the scopes below it, ranked with
    /// [`Weights::default`].
    pub fn new(scope: impl Into<String>, query: impl Into<String>) -> Self {
        Recall {
            scope: scope.into(),
            query: query.into(),
            k: 5,
            subscopes: true,
            filter: Map::new(),
            weights: Weights::default(),
        }
    }

    /// How many records at most.
    pub fn k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }

    /// Only records of this very scope, not of the scopes below it.
    pub fn exact_scope(mut self) -> Self {
        self.subscopes = false;
        self
    }

    /// Only records whose metadata has `value` under `key` (filters add up).
    pub fn filter(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.filter.insert(key.into(), value.into());
        self
    }

    /// How records are ranked.
    pub fn weights(mut self, weights: Weights) -> Self {
        self.weights = weights;
        self
    }
}

/// Memory over a store and an embedder, for code that is given a [`Journal`]: a flow's
/// [`Ctx`] (whose `remember` / `recall` / `forget` call this) or [`NoJournal`](crate::NoJournal)
/// outside a flow.
///
/// ```
/// use std::sync::Arc;
/// use flow_core::NoJournal;
/// use flow_core::memory::{HashEmbedder, Memory, Recall, Remember};
/// use flow_core::store::MemoryStore;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), flow_core::Error> {
/// let memory = Memory::new(Arc::new(MemoryStore::new()), Arc::new(HashEmbedder::default()));
/// memory.remember(&NoJournal, Remember::new("company/acme", "Acme sells rockets")).await?;
/// memory.remember(&NoJournal, Remember::new("company/globex", "Globex sells pumps")).await?;
/// let found = memory.recall(&NoJournal, Recall::new("company", "who sells rockets").k(1)).await?;
/// assert_eq!(found[0].content, "Acme sells rockets");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Memory {
    store: Arc<dyn Store>,
    embedder: Arc<dyn Embedder>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").field("model", &self.embedder.model()).finish()
    }
}

impl Memory {
    /// Memory kept in `store`, embedded by `embedder`.
    pub fn new(store: Arc<dyn Store>, embedder: Arc<dyn Embedder>) -> Self {
        Memory { store, embedder }
    }

    /// Stores a record and returns its id. Journaled: replayed, it returns the recorded id
    /// without embedding or storing again; and the id is derived from the step
    /// ([`Journal::idempotency_key`]) and the request, so a record stored just before a crash
    /// is not stored a second time when the step runs again.
    pub async fn remember(&self, journal: &dyn Journal, remember: Remember) -> Result<String, Error> {
        check_scope(&remember.scope)?;
        let metadata = object(remember.metadata.clone(), "the metadata of a memory")?;
        let request = serde_json::to_value(&remember).map_err(|e| Error::permanent(format!("memory request: {e}")))?;
        let key = journal.idempotency_key();
        let id = if key.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            format!("{key}:{:016x}", request_hash(&request))
        };
        let effect = Box::pin(async move {
            let embedding = self.embed_one(&remember.content).await?;
            let created_at_ms = now_ms();
            let expires_at_ms =
                remember.ttl_ms.map(|ttl| created_at_ms.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)));
            let record = MemoryRecord {
                id: id.clone(),
                scope: remember.scope,
                content: remember.content,
                metadata,
                importance: remember.importance,
                created_at_ms,
                expires_at_ms,
                model: self.embedder.model().to_string(),
                embedding,
            };
            self.store.memory_put(record).await.map_err(store_error)?;
            Ok(Value::String(id))
        });
        let value = journal.record("memory", "remember", &request, effect).await?;
        value.as_str().map(str::to_string).ok_or_else(|| recorded_mismatch("remember", "an id"))
    }

    /// The records that rank best for the recall (see the [module](self) docs). Journaled:
    /// replayed, it returns the recorded records without embedding or searching again.
    pub async fn recall(&self, journal: &dyn Journal, recall: Recall) -> Result<Vec<Recalled>, Error> {
        check_scope(&recall.scope)?;
        let request = serde_json::to_value(&recall).map_err(|e| Error::permanent(format!("memory request: {e}")))?;
        let effect = Box::pin(async move {
            let embedding = self.embed_one(&recall.query).await?;
            let search = MemorySearch {
                scope: recall.scope,
                query: recall.query,
                subscopes: recall.subscopes,
                filter: recall.filter,
                embedding,
                k: recall.k,
                weights: recall.weights,
                now_ms: now_ms(),
            };
            let found = self.store.memory_search(&search).await.map_err(store_error)?;
            serde_json::to_value(found).map_err(|e| Error::permanent(format!("recalled records: {e}")))
        });
        let value = journal.record("memory", "recall", &request, effect).await?;
        serde_json::from_value(value).map_err(|_| recorded_mismatch("recall", "a list of records"))
    }

    /// Erases records and returns how many. Journaled like the others.
    pub async fn forget(&self, journal: &dyn Journal, forget: Forget) -> Result<u64, Error> {
        match &forget {
            Forget::Scope(scope) | Forget::Matching { scope: Some(scope), .. } => check_scope(scope)?,
            Forget::Record(_) | Forget::Matching { scope: None, .. } => {}
        }
        let request = serde_json::to_value(&forget).map_err(|e| Error::permanent(format!("memory request: {e}")))?;
        let effect = Box::pin(async move {
            let n = self.store.memory_forget(&forget).await.map_err(store_error)?;
            Ok(json!(n))
        });
        let value = journal.record("memory", "forget", &request, effect).await?;
        value.as_u64().ok_or_else(|| recorded_mismatch("forget", "a count"))
    }

    async fn embed_one(&self, text: &str) -> Result<Vec<f32>, Error> {
        let mut vectors = self.embedder.embed(&[text.to_string()]).await?;
        match vectors.pop() {
            Some(v) if vectors.is_empty() => Ok(v),
            _ => Err(Error::transient(format!(
                "the embedder `{}` did not return exactly one vector for one text; check the embedding endpoint",
                self.embedder.model()
            ))),
        }
    }
}

/// A scope is one or more non-empty `/`-separated segments.
fn check_scope(scope: &str) -> Result<(), Error> {
    if scope.is_empty() || scope.split('/').any(str::is_empty) {
        return Err(Error::permanent(format!(
            "memory scope `{scope}` is not a path of non-empty `/`-separated segments (like `company/acme`)"
        )));
    }
    Ok(())
}

fn object(value: Value, what: &str) -> Result<Map<String, Value>, Error> {
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => Err(Error::permanent(format!("{what} must be a JSON object, not `{other}`"))),
    }
}

fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::Backend(_) | StoreError::Busy(_) => Error::transient(format!("memory: {e}")),
        _ => Error::permanent(format!("memory: {e}")),
    }
}

fn recorded_mismatch(what: &str, expected: &str) -> Error {
    Error::permanent(format!(
        "the journaled result of memory `{what}` is not {expected}; the journal was written by other code: fork the run to start this step afresh"
    ))
}

/// Memory in a step. Records live in the run's store (a run needs one: see
/// [`Runner::with_store`](crate::Runner::with_store)); embeddings come from the runner's
/// [`Embedder`] ([`HashEmbedder`] unless [`Runner::with_embedder`](crate::Runner::with_embedder)
/// says otherwise).
impl<S: State> Ctx<S> {
    /// The run's memory, for code that takes a [`Memory`] and a [`Journal`] (pass `self`).
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct S;
    /// struct NoStore;
    /// #[flow(state = S)]
    /// impl NoStore {
    ///     #[start]
    ///     async fn go(&self, cx: &Ctx<S>) -> Result<bool> { Ok(cx.memory().is_ok()) }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), FlowError> {
    /// // Without a store there is nowhere to keep memory.
    /// assert_eq!(NoStore.kickoff(S).await?.completed()?.output::<bool>()?, false);
    /// # Ok(()) }
    /// ```
    pub fn memory(&self) -> Result<Memory, Error> {
        let run = self.run_shared();
        let store = run.store.clone().ok_or_else(|| {
            Error::permanent(format!(
                "run {}: memory is kept in the run's store and this run has none; give the runner one with `Runner::with_store`",
                run.run_id
            ))
        })?;
        let embedder = run.embedder.clone().unwrap_or_else(|| Arc::new(HashEmbedder::default()));
        Ok(Memory::new(store, embedder))
    }

    /// Remembers `content` in `scope` with `metadata` (a JSON object, or `null`); returns the
    /// record's id. A journaled effect: see [`Memory::remember`].
    ///
    /// ```
    /// # use flow_core::prelude::*;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S;
    /// # struct F;
    /// # #[flow(state = S)]
    /// # impl F {
    /// #[start]
    /// async fn learn(&self, cx: &Ctx<S>) -> Result<String> {
    ///     cx.remember("company/acme", "Acme's CFO is Dana", serde_json::json!({ "customer": "acme" })).await
    /// }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let id = Runner::new(F).with_store(flow_core::store::MemoryStore::new()).kickoff(S).await?.completed()?.output::<String>()?;
    /// assert!(!id.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn remember(&self, scope: &str, content: impl Into<String>, metadata: Value) -> Result<String, Error> {
        self.remember_with(Remember::new(scope, content).metadata(metadata)).await
    }

    /// Remembers a record with importance and time to live ([`Remember`]).
    pub async fn remember_with(&self, remember: Remember) -> Result<String, Error> {
        self.memory()?.remember(self, remember).await
    }

    /// The `k` records of `scope` (and the scopes below it) that rank best for `query`, with
    /// the default [`Weights`]. A journaled effect: see [`Memory::recall`].
    pub async fn recall(&self, scope: &str, query: &str, k: usize) -> Result<Vec<Recalled>, Error> {
        self.recall_with(Recall::new(scope, query).k(k)).await
    }

    /// A recall with filters, weights or an exact scope ([`Recall`]).
    pub async fn recall_with(&self, recall: Recall) -> Result<Vec<Recalled>, Error> {
        self.memory()?.recall(self, recall).await
    }

    /// Erases records ([`Forget`]) and returns how many.
    ///
    /// ```
    /// # use flow_core::prelude::*;
    /// # use flow_core::memory::Forget;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S;
    /// # struct F;
    /// # #[flow(state = S)]
    /// # impl F {
    /// #[start]
    /// async fn erase(&self, cx: &Ctx<S>) -> Result<u64> {
    ///     cx.remember("company/acme", "Acme's CFO is Dana", serde_json::json!({ "customer": "acme" })).await?;
    ///     cx.forget(Forget::matching(serde_json::json!({ "customer": "acme" }))?).await
    /// }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let erased = Runner::new(F).with_store(flow_core::store::MemoryStore::new()).kickoff(S).await?.completed()?.output::<u64>()?;
    /// assert_eq!(erased, 1);
    /// # Ok(()) }
    /// ```
    pub async fn forget(&self, forget: Forget) -> Result<u64, Error> {
        self.memory()?.forget(self, forget).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use futures::future::BoxFuture;

    /// A journal that lost its entry: every effect runs again, as after a crash between the
    /// store's write and the journal's.
    struct Forgetful;

    impl Journal for Forgetful {
        fn record<'a>(
            &'a self,
            _kind: &'a str,
            _name: &'a str,
            _request: &'a Value,
            effect: BoxFuture<'a, Result<Value, Error>>,
        ) -> BoxFuture<'a, Result<Value, Error>> {
            effect
        }

        fn idempotency_key(&self) -> String {
            "run-1:learn#1".to_string()
        }
    }

    #[tokio::test]
    async fn a_remember_run_again_without_its_journal_entry_stores_nothing_twice() -> Result<(), Error> {
        let store = Arc::new(MemoryStore::new());
        let memory = Memory::new(store.clone(), Arc::new(HashEmbedder::default()));
        let first = memory.remember(&Forgetful, Remember::new("notes", "the same fact")).await?;
        let again = memory.remember(&Forgetful, Remember::new("notes", "the same fact")).await?;
        assert_eq!(first, again);
        let other = memory.remember(&Forgetful, Remember::new("notes", "another fact")).await?;
        assert_ne!(first, other);
        let found = memory.recall(&Forgetful, Recall::new("notes", "fact").k(10)).await?;
        assert_eq!(found.len(), 2, "{found:?}");
        Ok(())
    }

    #[tokio::test]
    async fn bad_scopes_and_metadata_are_refused() {
        let memory = Memory::new(Arc::new(MemoryStore::new()), Arc::new(HashEmbedder::default()));
        for scope in ["", "/a", "a/", "a//b"] {
            let err = memory.remember(&crate::NoJournal, Remember::new(scope, "x")).await.unwrap_err();
            assert!(err.to_string().contains("not a path"), "{err}");
        }
        let err = memory.remember(&crate::NoJournal, Remember::new("a", "x").metadata(json!([1]))).await.unwrap_err();
        assert!(err.to_string().contains("must be a JSON object"), "{err}");
        assert!(Forget::matching(json!({})).is_err());
    }
}
