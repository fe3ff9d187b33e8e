//! `flows`: see and tend the runs of any flows store from a shell, with no flow code compiled in.
//!
//! It opens a SQLite file or a PostgreSQL database through the `flow_core::store::Store` trait,
//! so both behave the same, and reads only what the store holds: runs, their steps, their
//! pending questions and the state at every retained checkpoint.
//!
//! ```text
//! flows runs [--status S]... [--flow F] [--since 2h | --older-than 7d] [--limit N]
//! flows show RUN
//! flows state RUN [--at SEQ]
//! flows diff RUN A B
//! flows plot RUN|FLOW [--format html|svg|mermaid] [-o FILE]
//! flows prune --older-than 30d [--status S]... [--flow F] [--dry-run]
//! flows answer RUN [JSON | - | --file F]
//! flows cancel RUN [--reason TEXT] [--no-compensate] [--yes]
//! flows retry RUN
//! flows serve [--bind ADDR] [--port N] [--token T]
//! ```
//!
//! `flows serve` is a web dashboard of the same store (see the `serve` module): it binds
//! 127.0.0.1 unless `--bind` says otherwise, and any other address needs `--token` (or
//! `$FLOWS_TOKEN`). It prints `listening on http://ADDR/` and serves until interrupted.
//!
//! # Which store
//!
//! The first of these that is set: `--db PATH` (a SQLite file), `--database-url URL`
//! (PostgreSQL), `$FLOWS_DB` (a SQLite file), `$DATABASE_URL` (PostgreSQL). `flows` never
//! creates a store: a path that does not exist is an error, not a new empty file.
//!
//! # Output
//!
//! Tables for people, coloured only when standard output is a terminal and `NO_COLOR` is not
//! set (`--color always|never` decides otherwise). `--json` prints one JSON document on
//! standard output instead, with field names that stay stable; on failure it prints
//! `{"error": {"kind": ..., "exit_code": ..., "message": ...}}` on standard error.
//!
//! The `--json` documents, by command (times are RFC 3339 in UTC beside the same instant in
//! milliseconds since the Unix epoch, `*_at` and `*_at_ms`):
//!
//! - `runs`: `{runs: [{run_id, flow, status, queue, concurrency_key, created_at, created_at_ms,
//!   updated_at, updated_at_ms, pause}], truncated, next, damaged: [{run_id, error}]}`, newest
//!   first; `truncated` says more runs match than `--limit` let through, and `next` is the
//!   cursor that lists them (`--after NEXT`), or null.
//! - `show`: `{run_id, flow, status, parent_run_id, created_at, updated_at, version, epoch,
//!   lease: {owner, expires_at, live} | null, output, error, pause, answer_fields, steps:
//!   [{step_key, method, status, attempt, error, input, output, recorded_at, started_at,
//!   finished_at, duration_ms, usage: {prompt_tokens, completion_tokens, total_tokens} | null}],
//!   checkpoints: [{seq, step_key, status, created_at, edited_by, edit_reason}], damaged}`; `damaged` names why the newest
//!   checkpoint cannot be read (the fields it would give are then `null`). `pause` is the
//!   stored question, its `answer_schema` the JSON Schema of the answer; `answer_fields`
//!   summarizes it as `[{name, type, required}]` (`null` when the answer is not an object).
//! - `plot`: `{run_id, flow, graph}`, the graph as stored (`flow_core::graph::GraphDoc`).
//! - `state`: `{run_id, seq, state}`.
//! - `diff`: `{run_id, from, to, changes: [{op, path, old, new}]}`: `op` is `added` (no `old`),
//!   `removed` (no `new`) or `changed`; `path` is a JSON Pointer.
//! - `prune`: `{dry_run, older_than, cutoff, statuses, flow, runs: [{run_id, flow, status,
//!   updated_at, result, reason}], deleted, would_delete, refused, damaged}`; `result` is
//!   `deleted`, `would_delete`, `refused` (with a `reason`) or `gone` (deleted meanwhile).
//! - `answer`: `{run_id, step_key, validated, status}`; an answer that does not fit fails with
//!   `error.details.violations: [{pointer, message}]`.
//! - `cancel`: `{run_id, was, status, compensate, reason}`; `status` is `cancelled` (at once),
//!   `queued` (a worker compensates it) or `running` (its worker stops it).
//! - `retry`: `{run_id, status, failed_steps}`.
//!
//! A listing that meets a damaged row lists the others, names it on standard error (and in
//! `damaged`), and still exits 0.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | usage or other error: a bad argument, a malformed run id, an operation the store lacks |
//! | 2 | not found: no such run, or no such checkpoint of it |
//! | 3 | store unavailable: none given, cannot be opened or reached, newer schema, locked, failing |
//! | 4 | refused: a run is held by a live lease (being executed), so `prune` left it alone |
//! | 5 | damaged: a stored row cannot be read |
//! | 6 | invalid answer: it does not fit the question's schema (nothing was written) |
//! | 7 | wrong status: the run is not paused (answer), not failed (retry) or has ended (cancel) |
//! | 8 | not confirmed: `cancel` without `--yes` where no one can be asked (not a terminal) |

mod cli;
mod commands;
mod diff;
mod error;
mod operate;
mod output;
mod schema;
mod serve;
mod source;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::error::{CliError, Exit};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` go to stdout and succeed; every other parse failure is a
            // usage error, exit 1 (clap's own code, 2, means "not found" here).
            let code = if e.use_stderr() { Exit::Usage } else { Exit::Ok };
            let _ = e.print();
            return code.into();
        }
    };
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return report(&CliError::other(format!("cannot start the async runtime: {e}")), json),
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(done) => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(done.stdout.as_bytes()).and_then(|()| stdout.flush()) {
                // A reader that went away (`flows runs | head`) has what it wanted.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return report(&CliError::other(format!("cannot write to standard output: {e}")), json);
                }
                _ => {}
            }
            if !done.stderr.is_empty() {
                let _ = std::io::stderr().lock().write_all(done.stderr.as_bytes());
            }
            done.exit.into()
        }
        Err(e) => report(&e, json),
    }
}

/// Says what went wrong on standard error, as text or as JSON.
fn report(e: &CliError, json: bool) -> ExitCode {
    let text = if json {
        let body = serde_json::json!({
            "error": { "kind": e.exit.kind(), "exit_code": e.exit.code(), "message": e.message, "details": e.details }
        });
        format!("{body}\n")
    } else {
        format!("error: {}\n", e.message)
    };
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
    e.exit.into()
}
