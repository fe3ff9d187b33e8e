//! `cargo run --example content_pipeline`: a research crew with structured output, a quality
//! router that loops back for deeper research at most twice, writing and editing.
//!
//! Offline by default (scripted replies from flow-llm's test server, started in-process); set
//! `OPENAI_API_KEY` (and optionally `OPENAI_BASE_URL`, `FLOWS_MODEL`) to use a real endpoint,
//! `CONTENT_TOPIC` / `CONTENT_AUDIENCE` to write about something else, `FLOWS_DB` to store the
//! run elsewhere. The article's draft is printed as the writer's model streams it.
//!
//! Built with `--features otel` and run with `OTEL_EXPORTER_OTLP_ENDPOINT` set (for example
//! `http://localhost:4318`), the run's spans go to that OpenTelemetry collector.

#![allow(clippy::print_stdout)] // an example's output is its point

use flow_examples::content_pipeline::{self, Config, Draft};
use std::io::Write as _;

use flow_examples::setup::{StoreLocation, display_path, exit_code, init_telemetry, operate_hint};
use flow_examples::trace::clip;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let telemetry = init_telemetry("content_pipeline");
    let code = exit_code(example().await);
    drop(telemetry);
    code
}

async fn example() -> Result<(), flow_examples::ExampleError> {
    let config = Config::from_env();
    println!("Content pipeline: \"{}\" for {}\n", config.topic, config.audience);

    let mut started = false;
    let out = content_pipeline::run_streaming(config, |draft| match draft {
        Draft::Token(token) => {
            if !started {
                started = true;
                println!("\n--- the writer's draft, as the model streams it ---");
            }
            print!("{token}");
            // Shown as it arrives, not when a line is full.
            let _ = std::io::stdout().flush();
        }
        Draft::Done => println!("\n--- end of the draft ---\n"),
    })
    .await?;

    println!("\nQuality checks (at most {} deeper rounds):", content_pipeline::MAX_DEEPENING);
    for check in &out.state.checks {
        let gaps = if check.gaps.is_empty() { "meets the bar".to_owned() } else { check.gaps.join("; ") };
        println!(
            "  round {}: confidence {:.2}, {} sources, {} statistics → {:?} ({gaps})",
            check.round, check.confidence, check.sources, check.statistics, check.verdict
        );
    }
    if let Some(brief) = &out.state.research {
        println!(
            "Final brief: confidence {:.2}, {} statistics, {} sources",
            brief.confidence,
            brief.key_statistics.len(),
            brief.sources.len()
        );
        for source in &brief.sources {
            println!("  - {} <{}>", source.title, source.url);
        }
    }
    if !out.state.quality_gaps.is_empty() {
        println!("Written with caveats: {}", out.state.quality_gaps.join("; "));
    }
    if let Some(article) = &out.state.article {
        println!("\nArticle: {}\n  {}", article.title, clip(&article.body, 160));
        for note in &article.editor_notes {
            println!("  editor: {note}");
        }
    }
    println!(
        "\nTokens: {} ({} prompt + {} completion){}",
        out.usage.total_tokens,
        out.usage.prompt_tokens,
        out.usage.completion_tokens,
        out.llm_requests.map(|n| format!(" over {n} LLM requests")).unwrap_or_default()
    );
    println!("Run {} is {} in {}", out.run_id, out.stored_status, display_path(&out.db_path));
    println!("{}", operate_hint(StoreLocation::Sqlite(&out.db_path), Some(out.run_id)));
    Ok(())
}
