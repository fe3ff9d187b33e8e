//! Embeddings from an OpenAI-compatible endpoint's `/v1/embeddings`, for flow-core's memory
//! ([`flow_core::memory`]): [`OpenAiEmbedder`].

use std::fmt;

use async_openai::types::embeddings::{CreateEmbeddingRequest, EmbeddingInput};
use flow_core::memory::Embedder;

use crate::error::LlmError;
use crate::openai::OpenAiLlm;

/// The embedding model [`OpenAiEmbedder::new`] asks for unless told otherwise.
pub const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";

/// An [`Embedder`] that asks an OpenAI-compatible endpoint (`POST /v1/embeddings`, through
/// async-openai), with the endpoint, key, timeout, retry policy and concurrency limit of an
/// [`OpenAiLlm`]. Give it to a runner with
/// [`Runner::with_embedder`](flow_core::Runner::with_embedder); the runs' `cx.remember` and
/// `cx.recall` then embed through it (journaled: a replayed recall calls nothing).
///
/// ```
/// use flow_core::memory::Embedder;
/// use flow_llm::{OpenAiEmbedder, TestServer};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestServer::start().await?;
/// let embedder = OpenAiEmbedder::new(&server.llm_builder().build()?);
/// let vectors = embedder.embed(&["Acme sells rockets".to_string()]).await.map_err(|e| e.to_string())?;
/// assert_eq!(vectors[0].len(), flow_core::memory::HashEmbedder::DEFAULT_DIMENSIONS);
/// assert_eq!(server.embedding_requests(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct OpenAiEmbedder {
    llm: OpenAiLlm,
    model: String,
    dimensions: Option<u32>,
}

impl fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("base_url", &self.llm.base_url())
            .field("model", &self.model)
            .field("dimensions", &self.dimensions)
            .finish_non_exhaustive()
    }
}

impl OpenAiEmbedder {
    /// Embeds with [`DEFAULT_EMBEDDING_MODEL`] at the endpoint of `llm`.
    pub fn new(llm: &OpenAiLlm) -> Self {
        OpenAiEmbedder { llm: llm.clone(), model: DEFAULT_EMBEDDING_MODEL.to_string(), dimensions: None }
    }

    /// Another embedding model.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let llm = flow_llm::OpenAiLlm::builder().base_url("http://127.0.0.1:9/v1").build()?;
    /// let e = flow_llm::OpenAiEmbedder::new(&llm).model("text-embedding-3-large");
    /// assert_eq!(flow_core::memory::Embedder::model(&e), "text-embedding-3-large");
    /// # Ok(()) }
    /// ```
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Asks for vectors of this many dimensions (`text-embedding-3` models and later).
    pub fn dimensions(mut self, dimensions: u32) -> Self {
        self.dimensions = Some(dimensions);
        self
    }

    async fn embed_once(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        let request = CreateEmbeddingRequest {
            model: self.model.clone(),
            input: EmbeddingInput::StringArray(texts.to_vec()),
            encoding_format: None,
            user: None,
            dimensions: self.dimensions,
        };
        let response = self.llm.embeddings(request).await?;
        let mut data = response.data;
        data.sort_by_key(|e| e.index);
        if data.len() != texts.len() || data.iter().enumerate().any(|(i, e)| e.index as usize != i) {
            return Err(LlmError::InvalidRequest(format!(
                "{}: /embeddings answered {} vectors for {} texts; the endpoint does not speak OpenAI's embeddings API",
                self.llm.base_url(),
                data.len(),
                texts.len()
            )));
        }
        Ok(data.into_iter().map(|e| e.embedding).collect())
    }
}

#[async_trait::async_trait]
impl Embedder for OpenAiEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, flow_core::Error> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.embed_once(texts).await.map_err(flow_core::Error::from)
    }

    fn model(&self) -> &str {
        &self.model
    }
}
