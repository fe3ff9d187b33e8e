//! What `cargo run --example content_pipeline` prints around the console's lines: the topic,
//! the draft as the writer's model streams it, the quality checks, the brief, the article and
//! where the run is stored.

#![allow(clippy::print_stdout)] // an example's output is its point

use std::io::Write as _;

use flow_core::console::clip;

use super::{Config, Draft, MAX_DEEPENING, Outcome};
use crate::setup::{StoreLocation, display_path, operate_hint};

/// The first line: what is written, for whom.
pub fn heading(config: &Config) {
    println!("Content pipeline: \"{}\" for {}\n", config.topic, config.audience);
}

/// Prints the draft as it streams, framed by a header and a footer.
#[derive(Debug, Default)]
pub struct DraftPrinter {
    started: bool,
}

impl DraftPrinter {
    /// Prints one piece of the draft (the header before the first).
    pub fn print(&mut self, draft: Draft<'_>) {
        match draft {
            Draft::Token(token) => {
                if !self.started {
                    self.started = true;
                    println!("\n--- the writer's draft, as the model streams it ---");
                }
                print!("{token}");
                // Shown as it arrives, not when a line is full.
                let _ = std::io::stdout().flush();
            }
            Draft::Done => println!("\n--- end of the draft ---\n"),
        }
    }
}

/// Everything after the run: the quality checks, the final brief, the article, the tokens and
/// where to look at the run with `flows`.
pub fn summary(out: &Outcome) {
    println!("\nQuality checks (at most {MAX_DEEPENING} deeper rounds):");
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
}
