//! Integration tests of flow-llm. Everything runs against the crate's own OpenAI-compatible
//! `TestServer` on 127.0.0.1 through the real async-openai client; nothing reaches the internet.
//!
//! One test binary (modules below) so the heavy dependency tree is linked once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client;
mod common;
mod crew;
mod feedback;
mod flow;
mod journal;
mod mcp;
mod memory;
mod replay;
mod resilience;
mod run_stream;
mod scripted;
mod server;
mod streaming;
mod structured;
mod tools;
