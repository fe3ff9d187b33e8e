//! The command line's grammar.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand, ValueEnum};
use flow_core::store::{RunCursor, RunStatus};
use uuid::Uuid;

const AFTER_HELP: &str = "\
Store: the first of --db, --database-url, $FLOWS_DB (a SQLite file), $DATABASE_URL (PostgreSQL).

Exit codes:
  0  done
  1  usage or other error (a bad argument, a malformed run id)
  2  not found: no such run, or no such checkpoint of it
  3  store unavailable: none given, cannot be opened or reached, newer schema, locked, failing
  4  refused: a run is held by a live lease (being executed), so it was left alone
  5  damaged: a stored row cannot be read
  6  invalid answer: it does not fit the question's schema (nothing was written)
  7  wrong status: the run is not paused (answer), not failed (retry) or has ended (cancel)
  8  not confirmed: cancel without --yes where no one can be asked (not a terminal)";

/// See and tend the runs of a flows store, SQLite or PostgreSQL, without the flows' code.
#[derive(Debug, Parser)]
#[command(name = "flows", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    /// The SQLite store file (as written by `SqliteStore`); default `$FLOWS_DB`.
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "database_url")]
    pub db: Option<PathBuf>,

    /// The PostgreSQL store, as postgres://user:password@host:port/database; default
    /// `$DATABASE_URL`.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// Print one JSON document for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// When to colour tables: `auto` colours only a terminal, and never when NO_COLOR is set.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,

    #[command(subcommand)]
    pub command: Command,
}

/// What `flows plot` draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlotFormat {
    Html,
    Svg,
    Mermaid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List runs, newest first.
    #[command(
        after_help = "Examples:\n  flows runs --status paused\n  flows runs --flow review --since 2h --limit 0\n  \
                            flows runs --before 30d --status failed\n  \
                            flows runs --limit 100 --after 1733500000000_0193a5c2-7d41-7e1b-9c3a-5f2e8d6b4a10\n\n\
                            A listing cut by --limit prints the cursor of its next page: pass it as --after."
    )]
    Runs {
        /// Only runs in these statuses (repeat or separate with commas): queued, running,
        /// paused, completed, failed, escalated, cancelled, compensated.
        #[arg(long, value_name = "STATUS", value_delimiter = ',', value_parser = parse_status)]
        status: Vec<RunStatus>,
        /// Only runs of this flow.
        #[arg(long)]
        flow: Option<String>,
        /// Only runs created within this long, such as 30m, 2h or 7d.
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        since: Option<Age>,
        /// Only runs created longer ago than this, such as 30m, 2h or 7d (also --before).
        #[arg(long, visible_alias = "before", value_name = "AGE", value_parser = parse_age)]
        older_than: Option<Age>,
        /// At most this many runs; 0 lists them all.
        #[arg(long, default_value_t = 50, value_name = "N")]
        limit: usize,
        /// The next page: the runs after this cursor, which the page before printed.
        #[arg(long, value_name = "CURSOR", value_parser = parse_cursor)]
        after: Option<RunCursor>,
    },
    /// Show one run: status, steps, errors, its question and checkpoints.
    ///
    /// Its status, lease, error or output; each step with its status, attempts and error; the
    /// question a paused run waits on and the type its answer must have; the checkpoints kept.
    Show {
        /// The run's id.
        #[arg(value_parser = parse_run_id)]
        run: Uuid,
    },
    /// Print a run's state as JSON, at its newest checkpoint or at another one.
    ///
    /// With --json, the state comes wrapped as {"run_id", "seq", "state"}.
    State {
        /// The run's id.
        #[arg(value_parser = parse_run_id)]
        run: Uuid,
        /// The checkpoint's number (`flows show RUN` lists those kept).
        #[arg(long, value_name = "SEQ")]
        at: Option<u64>,
    },
    /// What changed in a run's state between two checkpoints.
    ///
    /// Each JSON path added, removed or changed, with its old and new value.
    #[command(after_help = "Paths are JSON Pointers (RFC 6901): /items/0/name. Arrays are compared index by index.")]
    Diff {
        /// The run's id.
        #[arg(value_parser = parse_run_id)]
        run: Uuid,
        /// The earlier checkpoint's number.
        from: u64,
        /// The later checkpoint's number.
        to: u64,
    },
    /// Draw a run's flow from the graph stored with the run.
    ///
    /// A run id plots that run's graph; a flow's name plots the graph of its newest run. Runs
    /// stored before graphs were have none to plot. With --json, prints the graph as data.
    #[command(after_help = "\
The format follows -o's extension (.html, .svg, .mmd), else --format; Mermaid text when neither says.

Examples:
  flows plot 0190d5c6-0000-7000-8000-000000000000 -o run.html
  flows plot content_pipeline --format mermaid")]
    Plot {
        /// A run's id, or a flow's name (its newest run).
        target: String,
        /// html (a page with an inline SVG), svg, or mermaid.
        #[arg(long, value_enum, value_name = "FORMAT")]
        format: Option<PlotFormat>,
        /// Write to this file instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Delete runs that have not changed for a while.
    ///
    /// Each run goes with its steps, checkpoints and journal. Lists every run it deletes;
    /// --dry-run lists them and deletes nothing.
    #[command(after_help = "\
Only completed runs are deleted unless --status names others: failed, paused and escalated runs may
still be resumed or answered. A run being executed (a live lease) is never deleted; it is listed as
refused and the exit code is 4.

Examples:
  flows prune --older-than 30d --dry-run
  flows prune --older-than 7d --status completed,failed")]
    Prune {
        /// Delete runs last changed longer ago than this, such as 30d or 12h.
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: Age,
        /// Only runs in these statuses (repeat or separate with commas); default completed.
        #[arg(long, value_name = "STATUS", value_delimiter = ',', value_parser = parse_status)]
        status: Vec<RunStatus>,
        /// Only runs of this flow.
        #[arg(long)]
        flow: Option<String>,
        /// List what would be deleted, and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Serve a web dashboard of the store's runs: live lists, run pages, answers.
    ///
    /// Prints the address it listens on (`listening on http://ADDR/`), then serves until
    /// interrupted. The pages update themselves as runs move; answering, cancelling and
    /// retrying are forms that post back to it.
    #[command(after_help = "\
Binds 127.0.0.1 unless told otherwise. Any other address needs a token (--token or $FLOWS_TOKEN):
browsers sign in with it once, scripts send it as `Authorization: Bearer TOKEN`.

Examples:
  flows serve --db runs.db
  flows serve --db runs.db --port 0
  FLOWS_TOKEN=s3cret flows serve --database-url postgres://localhost/app --bind 0.0.0.0")]
    Serve {
        /// The address to listen on; one that is not loopback needs --token.
        #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
        bind: IpAddr,
        /// The port to listen on; 0 picks a free one (printed on start).
        #[arg(long, default_value_t = 7070, value_name = "N")]
        port: u16,
        /// The token that lets a person or a script in; required to bind a non-loopback
        /// address.
        #[arg(long, env = "FLOWS_TOKEN", hide_env_values = true, value_name = "T")]
        token: Option<String>,
    },
    #[command(flatten)]
    Operation(Operation),
}

/// The tail of the grammar: the operations that change a run (kept apart so that other
/// commands can be added above without touching these).
#[derive(Debug, Subcommand)]
pub enum Operation {
    /// Answer a paused run's question; a worker then continues the run.
    ///
    /// The answer is JSON, given as an argument, from a file (--file) or from standard input
    /// (`-`). It is checked against the schema of the type the question asks for, when the run
    /// stored one: an answer that does not fit is refused with every violation and its JSON
    /// Pointer, nothing is written, the run stays paused and the exit code is 6.
    #[command(after_help = "\
Examples:
  flows answer 0193a5c2-7d41-7e1b-9c3a-5f2e8d6b4a10 '{\"approve\": true}'
  flows answer RUN --file answer.json
  echo true | flows answer RUN -

See the question and its expected type with `flows show RUN`.")]
    Answer {
        /// The run's id.
        #[arg(value_parser = parse_run_id)]
        run: Uuid,
        /// The answer as JSON, or `-` to read it from standard input.
        #[arg(value_name = "JSON", conflicts_with = "file")]
        answer: Option<String>,
        /// Read the answer from this file.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Cancel a run: undo its completed steps (compensation), then end it cancelled.
    ///
    /// A run at rest (queued, paused, failed, escalated, sleeping) goes back to its queue, where
    /// a worker with the flow's code runs the undo steps (`#[compensate]`) of its completed
    /// steps, newest first, and ends it cancelled. A running run's worker does the same once
    /// its next lease renewal tells it. --no-compensate ends a run at rest at once and undoes
    /// nothing. Says what it will do and asks first; --yes skips the question, and without a
    /// terminal to ask on it is required (exit code 8).
    #[command(after_help = "\
Examples:
  flows cancel RUN --reason 'ordered twice'
  flows cancel RUN --yes --json
  flows cancel RUN --no-compensate --yes

Completed, cancelled and compensated runs cannot be cancelled (exit code 7).")]
    Cancel {
        /// The run's id.
        #[arg(value_parser = parse_run_id)]
        run: Uuid,
        /// Why, stored on the run.
        #[arg(long, value_name = "TEXT", default_value = "cancelled with `flows cancel`")]
        reason: String,
        /// End the run at once without running any undo step (only for a run at rest).
        #[arg(long)]
        no_compensate: bool,
        /// Do it without asking.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Erase memories that runs kept (`cx.remember`), such as everything about one customer.
    #[command(subcommand)]
    Memory(MemoryCommand),
    /// Put a failed run back in its queue: a worker runs its failed step again.
    ///
    /// The failed step gets a fresh retry budget; the steps completed before it do not run
    /// again. A run whose completed steps were compensated after the failure cannot be retried
    /// (exit code 7).
    #[command(after_help = "Example:\n  flows runs --status failed\n  flows retry RUN")]
    Retry {
        /// The run's id.
        #[arg(value_parser = parse_run_id)]
        run: Uuid,
    },
}

/// `flows memory ...`: what runs remembered across runs.
#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// Erase memories: one record (--record), a scope and every scope below it (--scope), or
    /// every record whose metadata has all the given values (--matching), in --scope and below
    /// it or everywhere.
    ///
    /// Says what it will erase and asks first; --yes skips the question, and without a terminal
    /// to ask on it is required (exit code 8). Prints how many records were erased.
    #[command(
        group(ArgGroup::new("what").required(true).multiple(true).args(["record", "scope", "matching"])),
        after_help = "\
Examples:
  flows memory forget --matching customer=acme --yes
  flows memory forget --matching customer=acme --scope company
  flows memory forget --scope company/acme
  flows memory forget --record 3f2a9c1e

A --matching value is read as JSON when it is JSON (3, true, \"3\", {\"a\": 1}), else as text:
customer=acme matches the string \"acme\", tier=3 the number 3."
    )]
    Forget {
        /// The id of one record.
        #[arg(long, value_name = "ID", conflicts_with_all = ["scope", "matching"])]
        record: Option<String>,
        /// A scope, such as company/acme: with --matching, where to look; alone, erase it and
        /// every scope below it.
        #[arg(long, value_name = "SCOPE")]
        scope: Option<String>,
        /// A metadata key and the value an erased record has (repeat for several: a record
        /// must have them all).
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_match)]
        matching: Vec<(String, serde_json::Value)>,
        /// Do it without asking.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

fn parse_match(s: &str) -> Result<(String, serde_json::Value), String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(format!("`{s}` is not KEY=VALUE; write it as customer=acme"));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("`{s}` has no key before `=`; write it as customer=acme"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

/// A length of time as the person wrote it (`30d`) and as a duration.
#[derive(Clone, Debug)]
pub struct Age {
    pub text: String,
    pub duration: Duration,
}

const STATUSES: &str = "queued, running, paused, completed, failed, escalated, cancelled, compensated";

fn parse_status(s: &str) -> Result<RunStatus, String> {
    RunStatus::parse(&s.trim().to_ascii_lowercase())
        .ok_or_else(|| format!("`{s}` is not a run status; use one of {STATUSES}"))
}

fn parse_age(s: &str) -> Result<Age, String> {
    let duration = humantime::parse_duration(s.trim()).map_err(|e| {
        format!("`{s}` is not a length of time ({e}); write it as a number and a unit, such as 30m, 2h, 7d or 4w")
    })?;
    Ok(Age { text: s.trim().to_string(), duration })
}

fn parse_cursor(s: &str) -> Result<RunCursor, String> {
    s.parse()
}

fn parse_run_id(s: &str) -> Result<Uuid, String> {
    Uuid::parse_str(s.trim()).map_err(|e| {
        format!("`{s}` is not a run id ({e}); a run id is a UUID such as 0193a5c2-7d41-7e1b-9c3a-5f2e8d6b4a10: list runs with `flows runs`")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_people_write_them() -> Result<(), String> {
        assert_eq!(parse_age("30m")?.duration, Duration::from_secs(30 * 60));
        assert_eq!(parse_age("2h")?.duration, Duration::from_secs(2 * 3600));
        assert_eq!(parse_age(" 7d ")?.duration, Duration::from_secs(7 * 86_400));
        assert_eq!(parse_age("1w 2d")?.duration, Duration::from_secs(9 * 86_400));
        assert_eq!(parse_age("7d")?.text, "7d");
        let e = parse_age("soon").err().ok_or("`soon` parsed")?;
        assert!(e.contains("`soon`") && e.contains("30m"), "{e}");
        assert!(parse_age("30").is_err(), "a number without a unit is ambiguous");
        Ok(())
    }

    #[test]
    fn statuses_and_ids_say_what_is_accepted() {
        assert_eq!(parse_status("Paused"), Ok(RunStatus::Paused));
        let e = parse_status("done").err().unwrap_or_default();
        assert!(e.contains("`done`") && e.contains("completed"), "{e}");
        let e = parse_run_id("abc").err().unwrap_or_default();
        assert!(e.contains("`abc` is not a run id") && e.contains("flows runs"), "{e}");
        assert!(parse_run_id("0193a5c2-7d41-7e1b-9c3a-5f2e8d6b4a10").is_ok());
    }

    #[test]
    fn the_grammar_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
