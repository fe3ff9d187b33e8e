//! `scripts/bench-compare` end to end on this package's `flow-bench` binary, one repetition on
//! one thread: without the reference engines it runs ours alone and says so; with their results
//! it puts both in one table. Figures are not checked (a debug build measures nothing useful);
//! the rows, the targets and the files are.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether `python3` runs; if not, says that `test` is skipped where `cargo test` shows it,
/// and under `CI=true` fails instead: CI installs python3, so a skip there hides a broken setup.
fn has_python(test: &str) -> bool {
    let found = Command::new("python3").arg("--version").output().is_ok_and(|out| out.status.success());
    if !found {
        let why = format!("{test}: python3 is not installed, and scripts/bench-compare needs it");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{why} (CI=true: install python3; a skip is a failure here)"
        );
        // Straight to the process's stderr: libtest captures `eprintln!` of a passing test.
        let _ = writeln!(std::io::stderr(), "SKIPPED {why}");
    }
    found
}

/// Runs the script with `args` on the test build of `flow-bench`, with no reference engines
/// installed (`ANCHORS_VENV` names a folder that does not exist).
fn compare(dir: &Path, args: &[&str]) -> Result<Output, std::io::Error> {
    Command::new("python3")
        .arg(repo().join("scripts/bench-compare"))
        .args(["--reps", "1", "--rt", "current", "--out"])
        .arg(dir.join("out"))
        .args(args)
        .env("FLOW_BENCH_EXE", env!("CARGO_BIN_EXE_flow-bench"))
        .env("ANCHORS_VENV", dir.join("no-venv"))
        .output()
}

/// The rows and targets every summary has, whatever the reference figures.
fn assert_table(stdout: &str, dir: &Path) -> TestResult {
    for row in [
        "| W1 N=100 | µs/step |",
        "| W2 K=10,000 | µs/iter |",
        "| W3S F=100 | ms wall |",
        "| W4 M=1,000 | runs/s |",
        "| W5 N=100 | µs/step |",
        "| STARTUP N=10 | ms to result |",
        "## Targets",
        "| W1 N=100 ≤ 2 µs/step, ≤ 10× limit |",
        "| W4 M=10000 ≥ 50,000 runs/s |",
        "| W5 N=100 ≤ 1.3× bare commit |",
        "| W5 1,000 in flight share commits |",
        "| startup ≤ 10 ms, RSS ≤ 15 MiB |",
    ] {
        assert!(stdout.contains(row), "no `{row}` in the summary:\n{stdout}");
    }
    // Every workload row has our figure (third cell) wherever the reference engines' are missing.
    let figures = stdout.split("## Targets").next().unwrap_or_default();
    let rows: Vec<&str> = figures.lines().filter(|l| l.starts_with("| W") || l.starts_with("| STARTUP")).collect();
    assert_eq!(rows.len(), 13, "{stdout}");
    for row in rows {
        let ours = row.split('|').nth(3).map(str::trim);
        assert!(ours.is_some_and(|c| c.chars().next().is_some_and(|c| c.is_ascii_digit())), "no figure of ours: {row}");
    }
    let summary = std::fs::read_to_string(dir.join("out/summary.md"))?;
    assert!(stdout.starts_with(&summary), "summary.md is not the printed table:\n{summary}");
    let raw = std::fs::read_to_string(dir.join("out/flows-current.jsonl"))?;
    let records: Vec<serde_json::Value> =
        raw.lines().filter(|l| l.starts_with('{')).map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert!(records.len() > 20, "{raw}");
    assert!(records.iter().all(|r| r["ok"] == serde_json::Value::Bool(true)), "{raw}");
    Ok(())
}

#[test]
fn without_the_reference_engines_it_runs_ours_alone_and_says_so() -> TestResult {
    if !has_python("without_the_reference_engines_it_runs_ours_alone_and_says_so") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let out = compare(dir.path(), &[])?;
    let (stdout, stderr) = (String::from_utf8(out.stdout)?, String::from_utf8(out.stderr)?);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no reference engines installed")
            && stderr.contains("running flows alone and comparing with the published figures"),
        "{stderr}"
    );
    assert!(stdout.contains("Reference figures: the published figures of ANCHORS.md"), "{stdout}");
    assert_table(&stdout, dir.path())
}

#[test]
fn with_the_reference_engines_results_it_prints_both_side_by_side() -> TestResult {
    if !has_python("with_the_reference_engines_results_it_prints_both_side_by_side") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    // One reference result, on a figure far from the published one, so the table shows which it used.
    let raw = dir.path().join("anchors-raw.jsonl");
    std::fs::write(
        &raw,
        concat!(
            r#"{"id": "langgraph:default:w1:100", "rc": 0, "result": {"engine": "langgraph", "workload": "w1", "#,
            r#""size": 100, "ok": true, "wall_s": 12.3456, "steps": 100, "per_step_us": 123456.0, "peak_rss_kb": 1}}"#,
            "\n",
        ),
    )?;
    let out = compare(dir.path(), &["--anchor-raw", raw.to_str().ok_or("temp path is not UTF-8")?])?;
    let (stdout, stderr) = (String::from_utf8(out.stdout)?, String::from_utf8(out.stderr)?);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("no reference engines installed"), "{stderr}");
    assert!(stdout.contains("Reference figures: the reference engines' results in"), "{stdout}");
    let w1 = stdout.lines().find(|l| l.starts_with("| W1 N=100 |")).ok_or("no W1 N=100 row")?;
    assert!(w1.contains("123,456"), "the W1 row does not show the given LangGraph figure: {w1}");
    assert_table(&stdout, dir.path())
}
