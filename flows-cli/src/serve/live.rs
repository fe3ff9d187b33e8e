//! Live updates: server-sent event streams that say "changed" when what a page shows has
//! changed in the store, so the page fetches its fresh parts and swaps them in.
//!
//! The stores cannot notify a reader of every change, so each stream polls a cheap summary
//! (one indexed page of runs, or one run's row) every [`POLL`] and compares its fingerprint
//! with the last one sent; the page passes the fingerprint it was rendered with, so a change
//! between rendering and subscribing is not missed.

use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use flow_core::store::{RunStatus, RunSummary, Store, StoreError};
use flows_cli::ops::OpError;
use futures::Stream;
use uuid::Uuid;

use super::data::{self, Cursor};

/// How often a stream looks at the store.
pub const POLL: Duration = Duration::from_millis(300);

/// A page of runs' fingerprint: which runs, in which status, last changed when.
pub fn runs_fingerprint(page: &data::Page) -> String {
    let mut h = DefaultHasher::new();
    for r in &page.runs {
        (r.run_id, r.status.as_str(), r.updated_at_ms).hash(&mut h);
    }
    (page.more, page.damaged).hash(&mut h);
    format!("{:016x}", h.finish())
}

/// A run's fingerprint: its status and when it last changed.
pub fn run_fingerprint(run: &RunSummary) -> String {
    format!("{}-{}", run.status.as_str(), run.updated_at_ms)
}

/// What a stream watches.
#[derive(Clone)]
pub enum Watch {
    Runs { status: Option<RunStatus>, flow: Option<String>, before: Option<Cursor>, size: usize },
    Run(Uuid),
}

async fn fingerprint(store: &dyn Store, watch: &Watch) -> Result<String, OpError> {
    match watch {
        Watch::Runs { status, flow, before, size } => {
            let page = data::page(store, *status, flow.clone(), *before, *size).await?;
            Ok(runs_fingerprint(&page))
        }
        Watch::Run(run_id) => match store.run_summary(*run_id).await {
            Ok(run) => Ok(run_fingerprint(&run)),
            Err(StoreError::NotFound(_)) => Ok("gone".into()),
            Err(e) => Err(e.into()),
        },
    }
}

/// The stream: a `changed` event (its data the new fingerprint) whenever the fingerprint
/// differs from the last one the page has.
pub fn stream(
    store: Arc<dyn Store>,
    watch: Watch,
    since: String,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = futures::stream::unfold((store, watch, since), |(store, watch, mut last)| async move {
        loop {
            match fingerprint(store.as_ref(), &watch).await {
                Ok(now) if now != last => {
                    last = now.clone();
                    let event = Event::default().event("changed").data(now);
                    return Some((Ok(event), (store, watch, last)));
                }
                Ok(_) => {}
                // The page keeps what it shows; the next poll tries again.
                Err(e) => tracing::warn!("live update: cannot read the store: {e}"),
            }
            tokio::time::sleep(POLL).await;
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
