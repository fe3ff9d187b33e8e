//! Five business flows that run out of the box, offline, with one command each.
//!
//! Every example lives in its own module, which reads top down: the typed state, the flow (its
//! `#[flow]` impl), then `run(config)`. What a reader can skip at first sits in sibling files
//! next to it: the scripted replies the offline LLM server answers with (`replies.rs`), the
//! fake services the flow talks to (`services.rs`), sample inputs (`samples.rs`), and what the
//! binary prints (`report`). The example binaries (`cargo run --example NAME`) and the
//! integration tests drive the same `run`.
//!
//! | module | what it shows |
//! |---|---|
//! | [`content_pipeline`] | a research crew with structured output, a quality router that loops back at most twice, writing and editing |
//! | [`lead_enrichment`] | validation with a handled invalid branch, enrichment, scoring, a hot/warm/cold router; a hot lead's email waits for a person |
//! | [`invoice_processing`] | extraction with a confidence, auto-approve / human review / fallback extraction, an autonomy threshold from the environment |
//! | [`order_return`] | eligibility escalation, retries and timeouts on a flaky label service, a non-critical email, a crash and a resume |
//! | [`fleet`] | order fulfilment served by many worker processes over one PostgreSQL (needs a server) |
//! | [`ticket_routing`] | many tickets at once with a bounded number of LLM calls in flight, SQLite and notification tools, compensation |
//!
//! Shared pieces: [`setup`] picks the LLM endpoint (a real OpenAI-compatible one when
//! `OPENAI_API_KEY` is set, otherwise flow-llm's [`TestServer`](flow_llm::TestServer) started
//! in-process with the example's scripted replies), the SQLite file runs are stored in, and
//! the console the runs print on: flow-core's [`console`](flow_core::console), which any
//! program turns on with one line.

#![warn(missing_docs)]

pub mod content_pipeline;
pub mod error;
pub mod fleet;
pub mod invoice_processing;
pub mod lead_enrichment;
pub mod order_return;
mod service_db;
pub mod setup;
pub mod ticket_routing;

pub use error::ExampleError;
