//! Every example ends by printing the `flows` command that shows its run (issue 18, point 6).
//! Each test runs the example's compiled binary offline against a store of its own, takes the
//! `flows ... show RUN` line from what it printed, runs that command with the `flows` binary
//! exactly as printed, and checks that it shows that run.
//!
//! `cargo test --workspace` builds the example binaries beside this test's; when this test is
//! run on its own and they are missing, it builds them first.

#[allow(dead_code, reason = "the PostgreSQL helpers other test crates use")]
#[path = "../../tests/pg_support/mod.rs"]
mod pg_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// `target/<profile>/examples/NAME`, beside the `flows` binary under test.
fn example_binary(name: &str) -> std::result::Result<PathBuf, String> {
    let flows = Path::new(env!("CARGO_BIN_EXE_flows"));
    let dir = flows.parent().ok_or("the flows binary has no directory")?.join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    static BUILT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    if !path.exists() {
        BUILT
            .get_or_init(|| {
                let status = Command::new(env!("CARGO"))
                    .args(["build", "-p", "flow-examples", "--examples"])
                    .status()
                    .map_err(|e| format!("could not run cargo to build the examples: {e}"))?;
                if status.success() { Ok(()) } else { Err(format!("building the examples failed ({status})")) }
            })
            .clone()?;
    }
    if path.exists() { Ok(path) } else { Err(format!("no example binary at {}", path.display())) }
}

/// The `flows` binary, with nothing about stores inherited from the environment.
fn flows() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flows"));
    for var in ["FLOWS_DB", "DATABASE_URL", "NO_COLOR", "TERM"] {
        cmd.env_remove(var);
    }
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn explain(what: &str, out: &Output) -> String {
    format!("{what} exited with {}\nstdout:\n{}\nstderr:\n{}", out.status, text(&out.stdout), text(&out.stderr))
}

/// The words of the printed `flows ... show RUN` line, and the run id it names.
fn show_command(printed: &str) -> Option<(Vec<String>, String)> {
    printed.lines().map(str::trim).find_map(|line| {
        let words = shlex::split(line)?;
        let at = words.iter().position(|w| w == "show")?;
        (words.first().map(String::as_str) == Some("flows") && at + 2 == words.len())
            .then(|| (words[1..].to_vec(), words[at + 1].clone()))
    })
}

/// Runs the example offline in a fresh directory, then the `show` command it printed, from the
/// same directory (the example prints its database path relative to where it ran).
fn example_prints_a_working_show_command(name: &str, args: &[&str], env: &[(&str, &str)]) -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut example = Command::new(example_binary(name)?);
    example
        .args(args)
        .current_dir(dir.path())
        .env("FLOWS_DB", dir.path().join("runs.db"))
        .env("FLOWS_OFFLINE", "1")
        .env("FLOWS_TRACE", "quiet")
        .env_remove("OPENAI_API_KEY")
        .env_remove("DATABASE_URL");
    for (key, value) in env {
        example.env(key, value);
    }
    let out = example.output()?;
    assert!(out.status.success(), "{}", explain(name, &out));
    let printed = text(&out.stdout);
    let (words, run_id) =
        show_command(&printed).ok_or_else(|| format!("{name} printed no `flows ... show RUN` line:\n{printed}"))?;
    assert!(uuid::Uuid::parse_str(&run_id).is_ok(), "{name} printed `show {run_id}`, which is not a run id");

    // A URL with a password is printed as `"$DATABASE_URL"`, which the shell would expand.
    let database_url = env.iter().find(|(key, _)| *key == "DATABASE_URL").map(|(_, url)| *url);
    let words: Vec<String> = words
        .into_iter()
        .map(|w| match database_url {
            Some(url) if w == "$DATABASE_URL" => url.to_string(),
            _ => w,
        })
        .collect();
    let mut show = flows();
    show.args(&words).current_dir(dir.path());
    let shown = show.output()?;
    assert!(shown.status.success(), "{}", explain(&format!("flows {}", words.join(" ")), &shown));
    let page = text(&shown.stdout);
    assert!(page.contains(&run_id), "`flows show` did not show run {run_id}:\n{page}");
    Ok(())
}

#[test]
fn content_pipeline_prints_its_show_command() -> TestResult {
    example_prints_a_working_show_command("content_pipeline", &[], &[])
}

#[test]
fn lead_enrichment_prints_its_show_command() -> TestResult {
    example_prints_a_working_show_command("lead_enrichment", &[], &[])
}

#[test]
fn invoice_processing_prints_its_show_command() -> TestResult {
    example_prints_a_working_show_command("invoice_processing", &[], &[])
}

#[test]
fn order_return_prints_its_show_command() -> TestResult {
    example_prints_a_working_show_command("order_return", &[], &[])
}

#[test]
fn ticket_routing_prints_its_show_command() -> TestResult {
    example_prints_a_working_show_command("ticket_routing", &[], &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_submit_prints_its_show_command() -> TestResult {
    let Some(db) = pg_support::database("cli_examples_fleet").await else { return Ok(()) };
    let url = db.url();
    tokio::task::spawn_blocking(move || {
        example_prints_a_working_show_command("fleet", &["submit", "3"], &[("DATABASE_URL", &url)])
            .map_err(|e| e.to_string())
    })
    .await??;
    Ok(())
}
