//! Shared helpers: client builders with fast retries. Journaling is tested through the real
//! journal, a flow method's `Ctx` on a store (`journal.rs`, `replay.rs`).

use std::time::Duration;

use flow_llm::{ConcurrencyLimit, OpenAiLlm, RetryPolicy, TestServer};

/// Retries quickly, so tests of retry counts stay fast.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy::default()
        .max_retries(2)
        .initial_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(40))
}

/// A client for `server` with its own concurrency limit (tests run in parallel; the shared
/// process-wide limit would couple them).
pub fn llm(server: &TestServer) -> OpenAiLlm {
    server.llm_builder().retry(fast_retry()).concurrency(ConcurrencyLimit::new(64)).build().unwrap()
}
