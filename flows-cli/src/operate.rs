//! `flows answer`, `flows cancel` and `flows retry`: the operations of `flows_cli::ops`, with
//! their input, their confirmation and what they print; and `flows memory forget`.

use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;

use flow_core::memory::Forget;
use flow_core::store::RunStatus;
use flows_cli::ops::{self, CancelOptions};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::commands::{Ctx, Done, json_text};
use crate::error::{CliError, Exit};
use crate::output::Paint;

/// The answer's JSON text, from the argument, the file or standard input.
fn answer_text(answer: Option<String>, file: Option<PathBuf>) -> Result<(String, String), CliError> {
    match (answer, file) {
        (_, Some(path)) => std::fs::read_to_string(&path)
            .map(|text| (text, format!("file {}", path.display())))
            .map_err(|e| CliError::other(format!("cannot read the answer from {}: {e}", path.display()))),
        (Some(dash), None) if dash == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::other(format!("cannot read the answer from standard input: {e}")))?;
            Ok((text, "standard input".into()))
        }
        (Some(text), None) => Ok((text, "the argument".into())),
        (None, None) => Err(CliError::other(
            "no answer given: pass it as JSON (flows answer RUN '{\"approve\": true}'), from a file (--file F) or \
             from standard input (flows answer RUN -)",
        )),
    }
}

pub(crate) async fn answer(
    ctx: &Ctx,
    run_id: Uuid,
    answer: Option<String>,
    file: Option<PathBuf>,
) -> Result<Done, CliError> {
    let (text, from) = answer_text(answer, file)?;
    let value: Value = serde_json::from_str(text.trim()).map_err(|e| {
        CliError::new(
            Exit::Invalid,
            format!(
                "run {run_id}: the answer from {from} is not JSON ({e}); nothing was written: quote text as JSON \
                 (\"yes\"), and give objects as {{\"field\": value}}"
            ),
        )
    })?;
    let answered = ops::answer(ctx.store.as_ref(), run_id, value).await?;
    if ctx.json {
        let body = json!({
            "run_id": run_id,
            "step_key": answered.step_key,
            "validated": answered.validated,
            "status": RunStatus::Queued.as_str(),
        });
        return Ok(Done::ok(json_text(&body)));
    }
    let mut stderr = String::new();
    let checked = if answered.validated {
        "it fits the type the question asks for"
    } else {
        let _ = writeln!(
            stderr,
            "warning: the answer was not validated: the run's question stores no schema (it paused under an older \
             build); the step checks it when it runs, and pauses again if it does not fit"
        );
        "not validated"
    };
    let out = format!(
        "run {run_id}: answer stored for step `{}` ({checked}); the run waits in its queue for a worker to continue \
         it\n",
        answered.step_key
    );
    Ok(Done { stdout: out, stderr, exit: Exit::Ok })
}

/// Asks on the terminal; refuses where no one can be asked.
fn confirm(plan: &str) -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::new(
            Exit::NotConfirmed,
            format!("{plan}\nnothing was done: standard input is not a terminal to ask on; pass --yes to do it"),
        ));
    }
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "{plan}\nProceed? [y/N] ");
    let _ = stderr.flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::new(Exit::NotConfirmed, format!("cannot read the confirmation: {e}")))?;
    if matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(CliError::new(Exit::NotConfirmed, "not confirmed; nothing was done"))
    }
}

pub(crate) async fn cancel(
    ctx: &Ctx,
    run_id: Uuid,
    reason: String,
    compensate: bool,
    yes: bool,
) -> Result<Done, CliError> {
    let store = ctx.store.as_ref();
    if !yes {
        let run = store.run_summary(run_id).await?;
        let how = if compensate {
            format!(
                "a worker serving queue `{}` with flow `{}`'s code runs the undo steps of its completed steps, newest \
                 first, then ends it cancelled",
                run.placement.queue, run.flow
            )
        } else {
            "it ends cancelled at once, and its completed steps are NOT undone".to_string()
        };
        confirm(&format!("This cancels run {run_id} (flow `{}`, {}): {how}.", run.flow, run.status))?;
    }
    let options = CancelOptions { reason: reason.clone(), compensate };
    let done = ops::cancel(store, run_id, options).await?;
    if ctx.json {
        let body = json!({
            "run_id": run_id,
            "was": done.was.as_str(),
            "status": done.status.as_str(),
            "compensate": done.compensate,
            "reason": reason,
        });
        return Ok(Done::ok(json_text(&body)));
    }
    let status = ctx.style.paint(Paint::of_run(done.status), done.status.as_str());
    let what = match done.status {
        RunStatus::Cancelled => "ended at once; nothing was undone".to_string(),
        RunStatus::Running => "its worker stops it at its next lease renewal, compensates and ends it cancelled".into(),
        _ => "a worker serving its queue compensates it and ends it cancelled; `flows show` follows it".into(),
    };
    Ok(Done::ok(format!("run {run_id}: cancel requested ({reason}); it is {status}: {what}\n")))
}

pub(crate) async fn retry(ctx: &Ctx, run_id: Uuid) -> Result<Done, CliError> {
    let done = ops::retry(ctx.store.as_ref(), run_id).await?;
    if ctx.json {
        let body = json!({
            "run_id": run_id,
            "status": RunStatus::Queued.as_str(),
            "failed_steps": done.failed_steps,
        });
        return Ok(Done::ok(json_text(&body)));
    }
    let steps = if done.failed_steps.is_empty() {
        "its failed step".to_string()
    } else {
        done.failed_steps.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
    };
    Ok(Done::ok(format!(
        "run {run_id}: back in its queue; a worker serving it runs {steps} again with a fresh retry budget\n"
    )))
}

/// `flows memory forget`: what to erase from the arguments (clap requires one of them), said
/// and confirmed, then erased.
pub(crate) async fn forget_memory(
    ctx: &Ctx,
    record: Option<String>,
    scope: Option<String>,
    matching: Vec<(String, Value)>,
    yes: bool,
) -> Result<Done, CliError> {
    let (forget, what) = match (record, scope) {
        (Some(id), _) => (Forget::Record(id.clone()), format!("the memory record `{id}`")),
        (None, scope) if !matching.is_empty() => {
            let metadata: serde_json::Map<String, Value> = matching.into_iter().collect();
            let place = match &scope {
                Some(s) => format!("in scope `{s}` and the scopes below it"),
                None => "in every scope".to_string(),
            };
            let what = format!("every memory whose metadata has {} {place}", Value::Object(metadata.clone()));
            (Forget::Matching { scope, metadata }, what)
        }
        (None, Some(scope)) => {
            (Forget::Scope(scope.clone()), format!("every memory in scope `{scope}` and the scopes below it"))
        }
        (None, None) => {
            return Err(CliError::new(
                Exit::Usage,
                "say what to forget: --record ID, --scope SCOPE, or --matching KEY=VALUE (with --scope to narrow it)",
            ));
        }
    };
    if !yes {
        confirm(&format!("This erases {what}; it cannot be undone."))?;
    }
    let forgotten = ctx.store.memory_forget(&forget).await?;
    if ctx.json {
        let body = match &forget {
            Forget::Record(id) => json!({ "forgotten": forgotten, "record": id }),
            Forget::Scope(scope) => json!({ "forgotten": forgotten, "scope": scope }),
            Forget::Matching { scope, metadata } => {
                json!({ "forgotten": forgotten, "scope": scope, "matching": metadata })
            }
        };
        return Ok(Done::ok(json_text(&body)));
    }
    let records = if forgotten == 1 { "record" } else { "records" };
    Ok(Done::ok(format!("forgot {forgotten} memory {records}: {what}\n")))
}
