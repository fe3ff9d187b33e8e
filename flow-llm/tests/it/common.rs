//! Shared helpers: a journal that records and replays like flow-core's durable one, and client
//! builders with fast retries.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flow_core::{Journal, TokenUsage};
use flow_llm::{ConcurrencyLimit, OpenAiLlm, RetryPolicy, TestServer};
use futures::future::BoxFuture;
use serde_json::Value;

/// One recorded effect.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub kind: String,
    pub name: String,
    pub request: Value,
    pub value: Value,
}

/// Records effects by position and replays them on a second execution, as flow-core's durable
/// journal does for a step that runs again after a crash.
#[derive(Default)]
pub struct ReplayJournal {
    entries: Mutex<BTreeMap<usize, Entry>>,
    cursor: AtomicUsize,
    pub executed: AtomicUsize,
    usage: Mutex<Vec<(String, TokenUsage)>>,
}

impl ReplayJournal {
    /// Starts the step again from its first effect.
    pub fn restart(&self) {
        self.cursor.store(0, Ordering::SeqCst);
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.entries.lock().unwrap().values().cloned().collect()
    }

    pub fn usage_reports(&self) -> Vec<(String, TokenUsage)> {
        self.usage.lock().unwrap().clone()
    }

    pub fn reported_total(&self) -> TokenUsage {
        self.usage_reports().into_iter().fold(TokenUsage::default(), |acc, (_, u)| acc + u)
    }
}

impl Journal for ReplayJournal {
    fn record<'a>(
        &'a self,
        kind: &'a str,
        name: &'a str,
        request: &'a Value,
        effect: BoxFuture<'a, Result<Value, flow_core::Error>>,
    ) -> BoxFuture<'a, Result<Value, flow_core::Error>> {
        // Positions are taken when `record` is called, like the real journal: callers must call
        // it in a deterministic order even when the effects then run concurrently.
        let seq = self.cursor.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let recorded = self.entries.lock().unwrap().get(&seq).cloned();
            if let Some(entry) = recorded {
                if entry.kind != kind || entry.name != name || entry.request != *request {
                    return Err(flow_core::Error::permanent(format!(
                        "non-determinism at effect {seq}: recorded {} `{}`, now {kind} `{name}`",
                        entry.kind, entry.name
                    )));
                }
                return Ok(entry.value);
            }
            let value = effect.await?;
            self.executed.fetch_add(1, Ordering::SeqCst);
            self.entries.lock().unwrap().insert(
                seq,
                Entry { kind: kind.to_owned(), name: name.to_owned(), request: request.clone(), value: value.clone() },
            );
            Ok(value)
        })
    }

    fn report_usage(&self, model: &str, usage: TokenUsage) {
        self.usage.lock().unwrap().push((model.to_owned(), usage));
    }
}

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
