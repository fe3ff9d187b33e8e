//! The README's quickstart, as a newcomer runs it: a fresh cargo project outside this workspace
//! whose `Cargo.toml` holds the README's dependencies (with `flow-core`'s path pointing here) and
//! whose `main.rs` is the README's example, built and run with cargo. The example's own code is
//! also a flow-core doctest; this checks what a doctest cannot: that the crate works as a
//! dependency of someone else's project, with the features and dependencies the README lists.
//!
//! It builds into `target/quickstart` (its own dependency graph, so it cannot share the
//! workspace's artifacts) and prints how long cargo took: on a fresh checkout that is the cold
//! build time of a flow-core user recorded in BENCHMARKS.md. Nothing is fetched: the project
//! reuses this workspace's `Cargo.lock` and builds `--offline` from what `cargo test` already
//! downloaded.

#![allow(clippy::print_stderr, reason = "the build time is a figure for BENCHMARKS.md, not an assertion")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The body of the first fenced block opened with `fence` after `heading`.
fn block_after<'a>(readme: &'a str, heading: &str, fence: &str) -> Option<&'a str> {
    let section = &readme[readme.find(heading)?..];
    let start = section.find(&format!("\n{fence}\n"))? + fence.len() + 2;
    let body = &section[start..];
    Some(&body[..body.find("\n```")? + 1])
}

#[test]
fn the_readme_quickstart_builds_and_runs_as_a_project_of_its_own() -> TestResult {
    let workspace: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("no workspace")?.to_path_buf();
    let readme = std::fs::read_to_string(workspace.join("README.md"))?;
    let deps = block_after(&readme, "## Quickstart", "```toml").ok_or("README: no toml block under Quickstart")?;
    let main =
        block_after(&readme, "## Quickstart", "```rust,no_run").ok_or("README: no rust block under Quickstart")?;
    let local = format!("path = {:?}", workspace.join("flow-core").display().to_string());
    assert!(deps.contains("path = \"flow-core\""), "the README's dependency on flow-core changed:\n{deps}");
    let deps = deps.replace("path = \"flow-core\"", &local);

    let project = tempfile::tempdir()?;
    std::fs::create_dir(project.path().join("src"))?;
    std::fs::write(
        project.path().join("Cargo.toml"),
        format!("[package]\nname = \"quickstart\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n{deps}\n[workspace]\n"),
    )?;
    std::fs::write(project.path().join("src/main.rs"), main)?;
    std::fs::copy(workspace.join("Cargo.lock"), project.path().join("Cargo.lock"))?;

    let started = Instant::now();
    let built = Command::new(env!("CARGO"))
        .args(["build", "--offline", "--quiet"])
        .current_dir(project.path())
        .env("CARGO_TARGET_DIR", workspace.join("target").join("quickstart"))
        .env_remove("RUSTFLAGS")
        .output()?;
    let build_secs = started.elapsed().as_secs_f64();
    assert!(built.status.success(), "the quickstart did not build:\n{}", String::from_utf8_lossy(&built.stderr));
    eprintln!("quickstart: cargo build took {build_secs:.1} s (cold only when target/quickstart was empty)");

    let ran = Command::new(
        workspace.join("target/quickstart/debug").join(format!("quickstart{}", std::env::consts::EXE_SUFFIX)),
    )
    .current_dir(project.path())
    .env_remove("FLOWS_DB")
    .output()?;
    let out = String::from_utf8_lossy(&ran.stdout);
    assert!(ran.status.success(), "the quickstart failed:\n{out}\n{}", String::from_utf8_lossy(&ran.stderr));
    assert!(out.starts_with("run ") && out.trim_end().ends_with("ended completed"), "unexpected output: {out}");
    Ok(())
}
