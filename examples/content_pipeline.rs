//! `cargo run --example content_pipeline`: a research crew with structured output, a quality
//! router that loops back for deeper research at most twice, writing and editing.
//!
//! The state, the flow and its run are in `examples/src/content_pipeline.rs`
//! ([`flow_examples::content_pipeline`]); this binary runs it and prints the outcome.
//!
//! Offline by default (scripted replies from flow-llm's test server, started in-process); set
//! `OPENAI_API_KEY` (and optionally `OPENAI_BASE_URL`, `FLOWS_MODEL`) to use a real endpoint,
//! `CONTENT_TOPIC` / `CONTENT_AUDIENCE` to write about something else, `FLOWS_DB` to store the
//! run elsewhere. The article's draft is printed as the writer's model streams it.
//!
//! Built with `--features otel` and run with `OTEL_EXPORTER_OTLP_ENDPOINT` set (for example
//! `http://localhost:4318`), the run's spans go to that OpenTelemetry collector.

use flow_examples::content_pipeline::{self, Config, report};
use flow_examples::setup::{exit_code, init_telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let telemetry = init_telemetry("content_pipeline");
    let code = exit_code(example().await);
    drop(telemetry);
    code
}

async fn example() -> Result<(), flow_examples::ExampleError> {
    let config = Config::from_env();
    report::heading(&config);
    let mut draft = report::DraftPrinter::default();
    let out = content_pipeline::run_streaming(config, |piece| draft.print(piece)).await?;
    report::summary(&out);
    Ok(())
}
