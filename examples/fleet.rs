//! `cargo run --example fleet -- worker NAME | submit [COUNT] | watch`: order fulfilment served
//! by any number of worker processes over one PostgreSQL (`$DATABASE_URL`, else
//! postgres://postgres@127.0.0.1:5432/postgres). See the README's "Running on many machines".
//!
//! Workers log which run they claimed, finished or took over at `info` (`RUST_LOG` overrides),
//! coloured only on a terminal so that logs sent to a file stay greppable.

use flow_examples::fleet;
use flow_examples::setup::exit_code;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("flow_core=info,flow_examples=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    exit_code(fleet::cli(&args).await)
}
