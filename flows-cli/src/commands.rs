//! What each command does with the store, and what it prints.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flow_core::PauseRequest;
use flow_core::TokenUsage;
use flow_core::store::{
    CheckpointInfo, DamagedRun, RunCursor, RunFilter, RunRecord, RunStatus, RunSummary, Snapshot, StepRecord, Store,
    StoreError,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::cli::{Age, Cli, Command, MemoryCommand, Operation, PlotFormat};
use crate::diff::{Change, diff};
use crate::error::{CliError, Exit};
use crate::output::{self, Paint, Style, Table};
use crate::schema::{self, Shape};
use crate::source;

/// What a command printed and how it ends.
pub struct Done {
    pub stdout: String,
    pub stderr: String,
    pub exit: Exit,
}

impl Done {
    pub(crate) fn ok(stdout: String) -> Self {
        Done { stdout, stderr: String::new(), exit: Exit::Ok }
    }
}

/// What every command works with.
pub(crate) struct Ctx {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) json: bool,
    pub(crate) style: Style,
    pub(crate) now: i64,
}

/// Opens the store the command line names and runs its command.
pub async fn run(cli: Cli) -> Result<Done, CliError> {
    let source = source::select(cli.db, cli.database_url, |name| std::env::var(name).ok())?;
    let writes =
        matches!(cli.command, Command::Prune { dry_run: false, .. } | Command::Serve { .. } | Command::Operation(_));
    let store = source::open(&source, writes).await?;
    let color = !cli.json && output::color_for_stdout(cli.color);
    let ctx = Ctx { store, json: cli.json, style: Style { color }, now: output::now_ms() };
    match cli.command {
        Command::Runs { status, flow, since, older_than, limit, after } => {
            let page = Page { since: since.as_ref(), before: older_than.as_ref(), limit, after };
            runs(&ctx, &status, flow, page).await
        }
        Command::Show { run } => show(&ctx, run).await,
        Command::State { run, at } => state(&ctx, run, at).await,
        Command::Diff { run, from, to } => state_diff(&ctx, run, from, to).await,
        Command::Plot { target, format, output } => plot(&ctx, &target, format, output.as_deref()).await,
        Command::Prune { older_than, status, flow, dry_run } => prune(&ctx, &older_than, &status, flow, dry_run).await,
        Command::Serve { bind, port, token } => {
            let options = crate::serve::Options { bind, port, token };
            crate::serve::run(ctx.store, options).await?;
            Ok(Done::ok(String::new()))
        }
        Command::Operation(op) => operate(&ctx, op).await,
    }
}

async fn operate(ctx: &Ctx, op: Operation) -> Result<Done, CliError> {
    match op {
        Operation::Answer { run, answer, file } => crate::operate::answer(ctx, run, answer, file).await,
        Operation::Cancel { run, reason, no_compensate, yes } => {
            crate::operate::cancel(ctx, run, reason, !no_compensate, yes).await
        }
        Operation::Retry { run } => crate::operate::retry(ctx, run).await,
        Operation::Memory(MemoryCommand::Forget { record, scope, matching, yes }) => {
            crate::operate::forget_memory(ctx, record, scope, matching, yes).await
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn json_text(value: &Value) -> String {
    // Serializing a `Value` cannot fail: its keys are strings and its numbers finite.
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// Each status once, in the order given; none means every status.
fn statuses(given: &[RunStatus]) -> Vec<Option<RunStatus>> {
    let mut out: Vec<Option<RunStatus>> = Vec::new();
    for s in given {
        if !out.contains(&Some(*s)) {
            out.push(Some(*s));
        }
    }
    if out.is_empty() { vec![None] } else { out }
}

/// Lists runs in each of `statuses` (each with the rest of `base`), merged newest first.
async fn list(
    store: &dyn Store,
    statuses: &[Option<RunStatus>],
    base: &RunFilter,
) -> Result<(Vec<RunSummary>, Vec<DamagedRun>), StoreError> {
    let (mut items, mut damaged) = (Vec::new(), Vec::new());
    for status in statuses {
        let listing = store.list_runs_checked(&RunFilter { status: *status, ..base.clone() }).await?;
        items.extend(listing.items);
        damaged.extend(listing.damaged);
    }
    items.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(b.run_id.cmp(&a.run_id)));
    Ok((items, damaged))
}

fn damaged_json(damaged: &[DamagedRun]) -> Value {
    damaged.iter().map(|d| json!({ "run_id": d.run_id, "error": d.error.to_string() })).collect()
}

fn damaged_warnings(damaged: &[DamagedRun]) -> String {
    let mut out = String::new();
    for d in damaged {
        let _ = writeln!(out, "warning: run {} cannot be read and was left out: {}", d.run_id, d.error);
    }
    out
}

fn summary_json(r: &RunSummary) -> Value {
    json!({
        "run_id": r.run_id,
        "flow": r.flow,
        "status": r.status.as_str(),
        "queue": r.placement.queue,
        "concurrency_key": r.placement.key,
        "created_at": output::rfc3339(r.created_at_ms),
        "created_at_ms": r.created_at_ms,
        "updated_at": output::rfc3339(r.updated_at_ms),
        "updated_at_ms": r.updated_at_ms,
        "pause": r.pause,
    })
}

/// Which page of runs `flows runs` lists.
struct Page<'a> {
    since: Option<&'a Age>,
    before: Option<&'a Age>,
    limit: usize,
    after: Option<RunCursor>,
}

/// The question of a stored pause request (`PauseRequest`), if it has one.
fn prompt_of(pause: &Value) -> Option<&str> {
    pause.get("prompt").and_then(Value::as_str)
}

async fn runs(ctx: &Ctx, status: &[RunStatus], flow: Option<String>, page: Page<'_>) -> Result<Done, CliError> {
    let filter = RunFilter {
        flow,
        created_from_ms: page.since.map(|a| ctx.now.saturating_sub(millis(a.duration))),
        created_before_ms: page.before.map(|a| ctx.now.saturating_sub(millis(a.duration))),
        after: page.after,
        ..RunFilter::default()
    };
    let listed = flows_cli::ops::page(ctx.store.as_ref(), status, filter, page.limit).await?;
    let (items, damaged, next) = (listed.runs, listed.damaged, listed.next);
    let truncated = next.is_some();

    if ctx.json {
        let body = json!({
            "runs": items.iter().map(summary_json).collect::<Vec<_>>(),
            "truncated": truncated,
            "next": next.map(|c| c.to_string()),
            "damaged": damaged_json(&damaged),
        });
        return Ok(Done::ok(json_text(&body)));
    }
    let mut stderr = damaged_warnings(&damaged);
    if items.is_empty() {
        stderr.push_str("no runs found\n");
        return Ok(Done { stdout: String::new(), stderr, exit: Exit::Ok });
    }
    let mut table = Table::new(&["RUN", "FLOW", "STATUS", "CREATED", "UPDATED", "WAITING FOR"]);
    for r in &items {
        let question = r.pause.as_ref().filter(|_| r.status == RunStatus::Paused).and_then(prompt_of);
        table.row(vec![
            (r.run_id.to_string(), Paint::Plain),
            (r.flow.clone(), Paint::Plain),
            (r.status.to_string(), Paint::of_run(r.status)),
            (format!("{} ago", output::age(r.created_at_ms, ctx.now)), Paint::Plain),
            (format!("{} ago", output::age(r.updated_at_ms, ctx.now)), Paint::Plain),
            (question.map(|q| output::line(q, 60)).unwrap_or_default(), Paint::Plain),
        ]);
    }
    if let Some(next) = next {
        let shown =
            if page.after.is_some() { format!("{} more", items.len()) } else { format!("the newest {}", items.len()) };
        let _ =
            writeln!(stderr, "showing {shown}; the next page: --after {next} (--limit N shows more, --limit 0 all)");
    }
    Ok(Done { stdout: table.render(ctx.style, ""), stderr, exit: Exit::Ok })
}

/// The lease as `--json` shows it.
fn lease_json(r: &RunRecord, now: i64) -> Value {
    match (&r.lease_owner, r.lease_expires_at_ms) {
        (Some(owner), Some(expires)) => json!({
            "owner": owner,
            "expires_at": output::rfc3339(expires),
            "expires_at_ms": expires,
            "live": expires > now,
        }),
        _ => Value::Null,
    }
}

fn lease_text(r: &RunRecord, now: i64) -> String {
    match (&r.lease_owner, r.lease_expires_at_ms) {
        (Some(owner), Some(expires)) if expires > now => {
            format!("held by `{owner}` until {} (being executed)", output::time(expires))
        }
        (Some(owner), Some(expires)) => format!(
            "`{owner}`'s lease expired {} ago: its process stopped without finishing; resuming the run continues it",
            output::age(expires, now)
        ),
        _ => "none (nothing is executing it)".to_string(),
    }
}

/// When each step's completion or failure was checkpointed, from the retained history.
fn recorded_at<'a>(step: &StepRecord, checkpoints: &'a [CheckpointInfo]) -> Option<&'a CheckpointInfo> {
    checkpoints.iter().rev().find(|c| c.step_key.as_deref() == Some(step.step_key.as_str()))
}

async fn show(ctx: &Ctx, run_id: Uuid) -> Result<Done, CliError> {
    let store = ctx.store.as_ref();
    // A run whose newest state cannot be read still has a summary, steps and a history.
    let (record, damage) = match store.load_run(run_id).await {
        Ok(record) => (Some(record), None),
        Err(e @ StoreError::Corrupt { .. }) => (None, Some(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let summary = match &record {
        Some(r) => RunSummary::from(r),
        None => store.run_summary(run_id).await?,
    };
    let steps = store.steps(run_id).await?;
    let checkpoints = store.checkpoints(run_id).await?;
    let pause = summary.pause.as_ref().filter(|_| summary.status == RunStatus::Paused);

    if ctx.json {
        let steps: Vec<Value> = steps
            .iter()
            .map(|s| {
                json!({
                    "step_key": s.step_key,
                    "method": s.method,
                    "status": s.status.as_str(),
                    "attempt": s.attempt,
                    "error": s.error,
                    "input": s.input,
                    "output": s.output,
                    "recorded_at": recorded_at(s, &checkpoints).map(|c| output::rfc3339(c.created_at_ms)),
                    "started_at": s.started_at_ms.map(output::rfc3339),
                    "started_at_ms": s.started_at_ms,
                    "finished_at": s.finished_at_ms.map(output::rfc3339),
                    "finished_at_ms": s.finished_at_ms,
                    "duration_ms": s.duration_ms(),
                    "usage": s.usage,
                })
            })
            .collect();
        let checkpoints: Vec<Value> = checkpoints
            .iter()
            .map(|c| {
                json!({
                    "seq": c.seq,
                    "step_key": c.step_key,
                    "status": c.status.as_str(),
                    "created_at": output::rfc3339(c.created_at_ms),
                    "created_at_ms": c.created_at_ms,
                    "edited_by": c.edit.as_ref().map(|e| &e.author),
                    "edit_reason": c.edit.as_ref().map(|e| &e.reason),
                })
            })
            .collect();
        let body = json!({
            "run_id": summary.run_id,
            "flow": summary.flow,
            "status": summary.status.as_str(),
            "parent_run_id": record.as_ref().and_then(|r| r.parent_run_id),
            "created_at": output::rfc3339(summary.created_at_ms),
            "created_at_ms": summary.created_at_ms,
            "updated_at": output::rfc3339(summary.updated_at_ms),
            "updated_at_ms": summary.updated_at_ms,
            "version": record.as_ref().map(|r| r.version),
            "epoch": record.as_ref().map(|r| r.epoch),
            "lease": record.as_ref().map_or(Value::Null, |r| lease_json(r, ctx.now)),
            "queue": summary.placement.queue,
            "concurrency_key": summary.placement.key,
            "due_at": summary.available_at_ms.filter(|_| summary.status == RunStatus::Queued).map(output::rfc3339),
            "due_at_ms": summary.available_at_ms.filter(|_| summary.status == RunStatus::Queued),
            "cancel_requested": record.as_ref().and_then(|r| r.cancel_requested.clone()),
            "output": record.as_ref().and_then(|r| r.output.clone()),
            "error": record.as_ref().and_then(|r| r.error.clone()),
            "pause": pause,
            "answer_fields": pause.and_then(answer_shape).map(|shape| match shape {
                Shape::Object(fields) => fields
                    .iter()
                    .map(|f| json!({ "name": f.name, "type": f.ty, "required": f.required }))
                    .collect::<Value>(),
                Shape::Value(_) => Value::Null,
            }),
            "steps": steps,
            "checkpoints": checkpoints,
            "damaged": damage,
        });
        return Ok(Done::ok(json_text(&body)));
    }

    let style = ctx.style;
    let mut out = String::new();
    let field = |out: &mut String, name: &str, value: &str| {
        let _ = writeln!(out, "{}  {value}", style.paint(Paint::Bold, &format!("{name:<8}")));
    };
    field(&mut out, "run", &summary.run_id.to_string());
    field(&mut out, "flow", &summary.flow);
    field(&mut out, "status", &style.paint(Paint::of_run(summary.status), summary.status.as_str()));
    field(&mut out, "created", &output::when(summary.created_at_ms, ctx.now));
    field(&mut out, "updated", &output::when(summary.updated_at_ms, ctx.now));
    if let Some(r) = &record {
        if let Some(parent) = r.parent_run_id {
            field(&mut out, "parent", &format!("{parent} (forked or restarted from it)"));
        }
        field(&mut out, "version", &format!("{} (checkpoints written)", r.version));
        field(&mut out, "lease", &lease_text(r, ctx.now));
        let key = r.placement.key.as_deref().map(|k| format!(", concurrency key `{k}`")).unwrap_or_default();
        field(&mut out, "queue", &format!("{}{key}", r.placement.queue));
        if let Some(due) = r.available_at_ms.filter(|_| r.status == RunStatus::Queued) {
            let when =
                if due <= ctx.now { "now (waiting for a worker)".to_string() } else { output::when(due, ctx.now) };
            field(&mut out, "due", &when);
        }
        if let Some(reason) = r.cancel_requested.as_deref() {
            let what = if r.status == RunStatus::Cancelled {
                format!("cancelled: {reason}")
            } else {
                format!("requested ({reason}): a worker compensates and ends it cancelled")
            };
            field(&mut out, "cancel", &style.paint(Paint::Yellow, &what));
        }
        if let Some(error) = &r.error {
            let label = if r.status == RunStatus::Escalated { "reason" } else { "error" };
            field(&mut out, label, error);
        }
        if let Some(output) = r.output.as_ref().filter(|_| r.status == RunStatus::Completed) {
            field(&mut out, "output", &output.to_string());
        }
    }
    let mut stderr = String::new();
    if let Some(damage) = &damage {
        let _ = writeln!(stderr, "warning: the run's newest checkpoint cannot be read: {damage}");
    }

    if let Some(pause) = pause {
        let _ = writeln!(out, "\n{}", style.paint(Paint::Bold, "waiting for input"));
        match prompt_of(pause) {
            Some(prompt) => {
                let text = |key: &str| pause.get(key).and_then(Value::as_str).unwrap_or("?");
                let _ = writeln!(out, "  question  {prompt}");
                let _ = writeln!(out, "  step      {} (method `{}`)", text("step_key"), text("method"));
                let _ = writeln!(out, "  answer    JSON that reads as `{}`", text("expected_type"));
                if let Some(shape) = answer_shape(pause) {
                    let _ = writeln!(out, "  fields    {}", schema::summary(&shape));
                }
                if let Some(metadata) = pause.get("metadata").filter(|m| !m.is_null()) {
                    let _ = writeln!(out, "  metadata  {metadata}");
                }
            }
            None => {
                let _ = writeln!(out, "  {pause}");
            }
        }
    }

    let _ = writeln!(out, "\n{}", style.paint(Paint::Bold, &format!("steps ({})", steps.len())));
    if steps.is_empty() {
        let _ = writeln!(out, "  none recorded yet (a step's row is written when it first finishes or fails)");
    } else {
        let mut table = Table::new(&["STEP", "METHOD", "STATUS", "ATTEMPTS", "DURATION", "TOKENS", "RECORDED"]);
        for s in &steps {
            table.row(vec![
                (s.step_key.clone(), Paint::Plain),
                (s.method.clone(), Paint::Plain),
                (s.status.as_str().to_string(), Paint::of_step(s.status)),
                (s.attempt.to_string(), Paint::Plain),
                (s.duration_ms().map(duration_text).unwrap_or_default(), Paint::Plain),
                (s.usage.map(|u| tokens_text(&u)).unwrap_or_default(), Paint::Plain),
                (recorded_at(s, &checkpoints).map(|c| output::time(c.created_at_ms)).unwrap_or_default(), Paint::Plain),
            ]);
        }
        out.push_str(&table.render(style, "  "));
        let failed: Vec<&StepRecord> = steps.iter().filter(|s| s.error.is_some()).collect();
        if !failed.is_empty() {
            let _ = writeln!(out, "\n{}", style.paint(Paint::Bold, "errors"));
            for s in failed {
                let error = s.error.as_deref().unwrap_or_default();
                let _ = writeln!(out, "  {} (attempt {}): {}", s.step_key, s.attempt, style.paint(Paint::Red, error));
            }
        }
    }

    let _ = writeln!(out, "\n{}", style.paint(Paint::Bold, &format!("checkpoints ({} kept)", checkpoints.len())));
    let mut table = Table::new(&["SEQ", "AFTER STEP", "STATUS", "AT"]);
    for c in &checkpoints {
        table.row(vec![
            (c.seq.to_string(), Paint::Plain),
            (
                match (&c.step_key, &c.edit) {
                    (Some(key), _) => key.clone(),
                    (None, Some(edit)) => format!("({edit})"),
                    (None, None) if c.seq == 1 => "(start)".into(),
                    (None, None) => "-".into(),
                },
                Paint::Plain,
            ),
            (c.status.as_str().to_string(), Paint::of_run(c.status)),
            (output::time(c.created_at_ms), Paint::Plain),
        ]);
    }
    out.push_str(&table.render(style, "  "));
    if let (Some(first), Some(last)) = (checkpoints.first(), checkpoints.last()) {
        let _ = writeln!(
            out,
            "\n{}",
            style.paint(
                Paint::Dim,
                &format!(
                    "state: flows state {run_id} [--at SEQ]; changes: flows diff {run_id} {} {}",
                    first.seq, last.seq
                )
            )
        );
    }
    Ok(Done { stdout: out, stderr, exit: Exit::Ok })
}

/// The summarized answer schema of a stored pause, when it has one.
fn answer_shape(pause: &Value) -> Option<Shape> {
    PauseRequest::stored_answer_schema(pause).and_then(schema::shape)
}

/// A step's duration: `850ms`, `2.4s`, `3m 20s`.
fn duration_text(ms: i64) -> String {
    match ms {
        ..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1_000.0),
        _ => format!("{}m {}s", ms / 60_000, (ms % 60_000) / 1_000),
    }
}

/// A step's tokens: `150 (120 in, 30 out)`.
fn tokens_text(u: &TokenUsage) -> String {
    format!("{} ({} in, {} out)", u.total_tokens, u.prompt_tokens, u.completion_tokens)
}

/// The run a plot target names: a run id as it is, a flow's name as its newest run.
async fn plot_target(ctx: &Ctx, target: &str) -> Result<RunSummary, CliError> {
    if let Ok(run_id) = Uuid::parse_str(target) {
        return Ok(ctx.store.run_summary(run_id).await?);
    }
    let filter = RunFilter { flow: Some(target.to_string()), limit: Some(1), ..RunFilter::default() };
    ctx.store.list_runs(&filter).await?.into_iter().next().ok_or_else(|| {
        CliError::new(
            Exit::NotFound,
            format!("`{target}` is neither a run id nor the name of a flow with runs in this store (`flows runs` lists them)"),
        )
    })
}

async fn plot(ctx: &Ctx, target: &str, format: Option<PlotFormat>, path: Option<&Path>) -> Result<Done, CliError> {
    let run = plot_target(ctx, target).await?;
    let graph = ctx.store.run_graph(run.run_id).await?.ok_or_else(|| {
        CliError::new(
            Exit::NotFound,
            format!(
                "run {} of `{}` has no graph stored: it was created before its store kept graphs; \
                 plot a newer run of the flow, or the flow itself with `flow_core::plot`",
                run.run_id, run.flow
            ),
        )
    })?;
    if ctx.json {
        let body = json!({ "run_id": run.run_id, "flow": run.flow, "graph": graph });
        return Ok(Done::ok(json_text(&body)));
    }
    let by_extension = path.and_then(|p| p.extension()).and_then(|e| e.to_str()).and_then(|e| match e {
        "html" | "htm" => Some(PlotFormat::Html),
        "svg" => Some(PlotFormat::Svg),
        "mmd" | "mermaid" => Some(PlotFormat::Mermaid),
        _ => None,
    });
    let text = match by_extension.or(format).unwrap_or(PlotFormat::Mermaid) {
        PlotFormat::Html => flow_core::plot::html_doc(&graph),
        PlotFormat::Svg => flow_core::plot::svg_doc(&graph),
        PlotFormat::Mermaid => graph.to_mermaid(),
    };
    match path {
        None => Ok(Done::ok(text)),
        Some(path) => {
            std::fs::write(path, text)
                .map_err(|e| CliError::other(format!("cannot write the plot to {}: {e}", path.display())))?;
            let note = format!("wrote the graph of run {} ({}) to {}\n", run.run_id, run.flow, path.display());
            Ok(Done { stdout: String::new(), stderr: note, exit: Exit::Ok })
        }
    }
}

/// Loads checkpoint `seq`; a missing one names the checkpoints the run keeps.
async fn checkpoint(ctx: &Ctx, run_id: Uuid, seq: u64, kept: &[CheckpointInfo]) -> Result<Value, CliError> {
    let snapshot: Snapshot = match ctx.store.load_checkpoint(run_id, seq).await {
        Ok(snapshot) => snapshot,
        Err(StoreError::CheckpointNotFound { .. }) => {
            let range = match (kept.first(), kept.last()) {
                (Some(first), Some(last)) if first.seq == last.seq => format!("it keeps checkpoint {}", first.seq),
                (Some(first), Some(last)) => format!("it keeps checkpoints {} to {}", first.seq, last.seq),
                _ => "it keeps none".to_string(),
            };
            let why = match kept.first() {
                Some(first) if seq < first.seq => " (older ones were removed by retention)",
                _ => "",
            };
            return Err(CliError::new(
                Exit::NotFound,
                format!("run {run_id} has no checkpoint {seq}: {range}{why}; `flows show {run_id}` lists them"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    snapshot.state_as::<Value>().map_err(|e| {
        CliError::new(Exit::Damaged, format!("run {run_id}: the state of checkpoint {seq} is not JSON ({e})"))
    })
}

async fn state(ctx: &Ctx, run_id: Uuid, at: Option<u64>) -> Result<Done, CliError> {
    let (seq, value) = match at {
        Some(seq) => {
            let kept = ctx.store.checkpoints(run_id).await?;
            (seq, checkpoint(ctx, run_id, seq, &kept).await?)
        }
        None => {
            let record = ctx.store.load_run(run_id).await?;
            let value = record.snapshot.state_as::<Value>().map_err(|e| {
                CliError::new(Exit::Damaged, format!("run {run_id}: its newest state is not JSON ({e})"))
            })?;
            (record.version, value)
        }
    };
    if ctx.json {
        return Ok(Done::ok(json_text(&json!({ "run_id": run_id, "seq": seq, "state": value }))));
    }
    Ok(Done::ok(json_text(&value)))
}

fn describe(seq: u64, kept: &[CheckpointInfo]) -> String {
    match kept.iter().find(|c| c.seq == seq) {
        Some(c) => format!(
            "checkpoint {seq} ({}, {})",
            match (&c.step_key, c.seq) {
                (Some(key), _) => format!("after {key}"),
                (None, 1) => "at the start".to_string(),
                (None, _) => c.status.as_str().to_string(),
            },
            output::time(c.created_at_ms)
        ),
        None => format!("checkpoint {seq}"),
    }
}

async fn state_diff(ctx: &Ctx, run_id: Uuid, from: u64, to: u64) -> Result<Done, CliError> {
    let kept = ctx.store.checkpoints(run_id).await?;
    let old = checkpoint(ctx, run_id, from, &kept).await?;
    let new = checkpoint(ctx, run_id, to, &kept).await?;
    let changes = diff(&old, &new);
    if ctx.json {
        let body = json!({
            "run_id": run_id,
            "from": from,
            "to": to,
            "changes": changes.iter().map(Change::to_json).collect::<Vec<_>>(),
        });
        return Ok(Done::ok(json_text(&body)));
    }
    let style = ctx.style;
    let mut out = format!("run {run_id}: state from {} to {}\n", describe(from, &kept), describe(to, &kept));
    if changes.is_empty() {
        out.push_str("no change\n");
        return Ok(Done::ok(out));
    }
    let shown = |path: &str| if path.is_empty() { "(the whole state)".to_string() } else { path.to_string() };
    let (mut added, mut removed, mut changed) = (0, 0, 0);
    for change in &changes {
        let line = match change {
            Change::Added { path, new } => {
                added += 1;
                style.paint(Paint::Green, &format!("+ {}: {new}", shown(path)))
            }
            Change::Removed { path, old } => {
                removed += 1;
                style.paint(Paint::Red, &format!("- {}: {old}", shown(path)))
            }
            Change::Changed { path, old, new } => {
                changed += 1;
                style.paint(Paint::Yellow, &format!("~ {}: {old} → {new}", shown(path)))
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    let plural = if changes.len() == 1 { "" } else { "s" };
    let _ = writeln!(out, "{} change{plural}: {added} added, {removed} removed, {changed} changed", changes.len());
    Ok(Done::ok(out))
}

/// What prune did, or would do, to one run.
enum Outcome {
    Deleted,
    WouldDelete,
    Refused(String),
    Gone,
}

impl Outcome {
    fn name(&self) -> &'static str {
        match self {
            Outcome::Deleted => "deleted",
            Outcome::WouldDelete => "would_delete",
            Outcome::Refused(_) => "refused",
            Outcome::Gone => "gone",
        }
    }

    fn text(&self) -> String {
        match self {
            Outcome::Deleted => "deleted".into(),
            Outcome::WouldDelete => "would delete".into(),
            Outcome::Refused(why) => format!("refused: {why}"),
            Outcome::Gone => "already gone".into(),
        }
    }
}

fn held(owner: &str, expires_at_ms: i64) -> String {
    format!("held by `{owner}` until {} (being executed)", output::time(expires_at_ms))
}

async fn prune(
    ctx: &Ctx,
    older_than: &Age,
    status: &[RunStatus],
    flow: Option<String>,
    dry_run: bool,
) -> Result<Done, CliError> {
    let store = ctx.store.as_ref();
    let statuses = statuses(if status.is_empty() { &[RunStatus::Completed] } else { status });
    let cutoff = ctx.now.saturating_sub(millis(older_than.duration));
    let base = RunFilter { flow: flow.clone(), ..RunFilter::default() };
    let (mut candidates, damaged) = list(store, &statuses, &base).await?;
    candidates.retain(|r| r.updated_at_ms < cutoff);
    candidates.sort_by(|a, b| a.updated_at_ms.cmp(&b.updated_at_ms).then(a.run_id.cmp(&b.run_id)));

    let mut results: Vec<(RunSummary, Outcome)> = Vec::with_capacity(candidates.len());
    for run in candidates {
        let outcome = if dry_run {
            // Whatever its status, a run someone is executing holds a live lease (a paused run
            // being resumed is still `paused` until its next checkpoint).
            match store.load_run(run.run_id).await {
                Ok(r) => match (r.lease_owner, r.lease_expires_at_ms) {
                    (Some(owner), Some(expires)) if expires > ctx.now => Outcome::Refused(held(&owner, expires)),
                    _ => Outcome::WouldDelete,
                },
                Err(StoreError::NotFound(_)) => Outcome::Gone,
                // Its lease cannot be read; deleting it is what a damaged run needs anyway.
                Err(StoreError::Corrupt { .. }) => Outcome::WouldDelete,
                Err(e) => return Err(e.into()),
            }
        } else {
            match store.delete_run(run.run_id).await {
                Ok(()) => Outcome::Deleted,
                Err(StoreError::Locked { owner, expires_at_ms, .. }) => Outcome::Refused(held(&owner, expires_at_ms)),
                Err(StoreError::NotFound(_)) => Outcome::Gone,
                Err(e) => {
                    let deleted = results.iter().filter(|(_, o)| matches!(o, Outcome::Deleted)).count();
                    let e = CliError::from(e);
                    return Err(CliError::new(
                        e.exit,
                        format!("deleted {deleted} runs, then failed on run {}: {}", run.run_id, e.message),
                    ));
                }
            }
        };
        results.push((run, outcome));
    }
    let count = |name: &str| results.iter().filter(|(_, o)| o.name() == name).count();
    let refused = count("refused");
    let exit = if refused > 0 { Exit::Refused } else { Exit::Ok };
    let status_names: Vec<&str> = statuses.iter().flatten().map(|s| s.as_str()).collect();

    if ctx.json {
        let runs: Vec<Value> = results
            .iter()
            .map(|(r, o)| {
                let mut v = json!({
                    "run_id": r.run_id,
                    "flow": r.flow,
                    "status": r.status.as_str(),
                    "updated_at": output::rfc3339(r.updated_at_ms),
                    "updated_at_ms": r.updated_at_ms,
                    "result": o.name(),
                });
                if let (Outcome::Refused(why), Some(map)) = (o, v.as_object_mut()) {
                    map.insert("reason".into(), why.clone().into());
                }
                v
            })
            .collect();
        let body = json!({
            "dry_run": dry_run,
            "older_than": older_than.text,
            "cutoff": output::rfc3339(cutoff),
            "statuses": status_names,
            "flow": flow,
            "runs": runs,
            "deleted": count("deleted"),
            "would_delete": count("would_delete"),
            "refused": refused,
            "damaged": damaged_json(&damaged),
        });
        return Ok(Done { stdout: json_text(&body), stderr: String::new(), exit });
    }

    let style = ctx.style;
    let mut out = String::new();
    if !results.is_empty() {
        let mut table = Table::new(&["RUN", "FLOW", "STATUS", "UPDATED", "RESULT"]);
        for (r, o) in &results {
            let paint = match o {
                Outcome::Deleted | Outcome::WouldDelete => Paint::Plain,
                Outcome::Refused(_) => Paint::Red,
                Outcome::Gone => Paint::Dim,
            };
            table.row(vec![
                (r.run_id.to_string(), Paint::Plain),
                (r.flow.clone(), Paint::Plain),
                (r.status.to_string(), Paint::of_run(r.status)),
                (format!("{} ago", output::age(r.updated_at_ms, ctx.now)), Paint::Plain),
                (o.text(), paint),
            ]);
        }
        out.push_str(&table.render(style, ""));
    }
    let runs = |n: usize| format!("{n} {} run{}", status_names.join("/"), if n == 1 { "" } else { "s" });
    let which = format!(
        "{} last changed more than {} ago",
        flow.as_deref().map(|f| format!(" of flow `{f}`")).unwrap_or_default(),
        older_than.text
    );
    let _ = if dry_run {
        writeln!(out, "would delete {}{which}; run again without --dry-run to delete them", runs(count("would_delete")))
    } else {
        writeln!(out, "deleted {}{which}", runs(count("deleted")))
    };
    if refused > 0 {
        let _ = writeln!(out, "left {refused} alone: being executed (a live lease); prune again once they are at rest");
    }
    let stderr = damaged_warnings(&damaged);
    Ok(Done { stdout: out, stderr, exit })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_deduplicated_and_none_means_all() {
        assert_eq!(statuses(&[]), [None]);
        assert_eq!(
            statuses(&[RunStatus::Paused, RunStatus::Failed, RunStatus::Paused]),
            [Some(RunStatus::Paused), Some(RunStatus::Failed)]
        );
    }
}
