//! The dashboard's HTML. maud compiles these templates into the binary and escapes every value
//! it interpolates, so nothing a flow stored or a person typed is ever read as markup.

use std::collections::BTreeMap;

use flow_core::PauseRequest;
use flow_core::TokenUsage;
use flow_core::store::{CheckpointInfo, RunRecord, RunStatus, RunSummary, StepRecord};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

use super::data::{self, Cursor};
use super::form::{self, Kind};
use crate::diff::Change;
use crate::output;

const STATUSES: [RunStatus; 8] = RunStatus::ALL;

fn layout(title: &str, body_attrs: (&str, &str), content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · flows" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body data-page=(body_attrs.0) data-fingerprint=(body_attrs.1) {
                header.top {
                    a.brand href="/runs" { "flows" }
                    span.live-state #live-state title="Live updates" { "" }
                }
                main { (content) }
            }
        }
    }
}

fn status_badge(status: &str) -> Markup {
    html! { span class={ "badge status-" (status) } { (status) } }
}

/// The runs list's filters, as they stay in links.
#[derive(Clone, Debug, Default)]
pub struct RunsQuery {
    pub status: Option<RunStatus>,
    pub flow: Option<String>,
}

impl RunsQuery {
    /// The query string (without `?`), with `before` when given; values are URL-encoded.
    pub fn to_query(&self, before: Option<&Cursor>) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.status {
            parts.push(format!("status={}", s.as_str()));
        }
        if let Some(f) = &self.flow {
            parts.push(format!("flow={}", url_encode(f)));
        }
        if let Some(c) = before {
            parts.push(format!("before={c}"));
        }
        parts.join("&")
    }
}

pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The table rows of a page of runs (also sent alone when the list changes).
pub fn run_rows(runs: &[RunSummary], now: i64) -> Markup {
    html! {
        @for r in runs {
            tr data-run=(r.run_id) data-status=(r.status.as_str()) {
                td { a href={ "/runs/" (r.run_id) } { code { (r.run_id) } } }
                td { (r.flow) }
                td.status { (status_badge(r.status.as_str())) }
                td title=(output::time(r.created_at_ms)) { (output::age(r.created_at_ms, now)) " ago" }
                td title=(output::time(r.updated_at_ms)) { (output::age(r.updated_at_ms, now)) " ago" }
                td.question {
                    @if let Some(p) = r.pause.as_ref().filter(|_| r.status == RunStatus::Paused)
                        .and_then(|p| p.get("prompt")).and_then(Value::as_str) {
                        (output::line(p, 80))
                    }
                }
            }
        }
        @if runs.is_empty() {
            tr.empty { td colspan="6" { "No runs match." } }
        }
    }
}

pub struct RunsView<'a> {
    pub query: &'a RunsQuery,
    pub page: &'a data::Page,
    pub before: Option<Cursor>,
    pub fingerprint: &'a str,
    pub now: i64,
}

pub fn runs_page(v: &RunsView<'_>) -> Markup {
    let next = v.page.runs.last().filter(|_| v.page.more).map(Cursor::of);
    let content = html! {
        h1 { "Runs" }
        @let query = v.query.to_query(v.before.as_ref());
        div #live hidden
            data-events={ "/events/runs?" (query) "&since=" (v.fingerprint) }
            data-refresh={ "/runs/rows?" (query) } {}
        form.filters method="get" action="/runs" {
            label { "Status "
                select name="status" {
                    option value="" selected[v.query.status.is_none()] { "any" }
                    @for s in STATUSES {
                        option value=(s.as_str()) selected[v.query.status == Some(s)] { (s.as_str()) }
                    }
                }
            }
            label { "Flow " input type="text" name="flow" value=[v.query.flow.as_deref()] placeholder="any"; }
            button type="submit" { "Filter" }
        }
        @if v.page.damaged > 0 {
            p.warning { (v.page.damaged) " runs on this page cannot be read and are left out (`flows runs` names them)." }
        }
        table.runs #runs data-query=(v.query.to_query(v.before.as_ref())) {
            thead { tr { th { "Run" } th { "Flow" } th { "Status" } th { "Created" } th { "Updated" } th { "Waiting for" } } }
            tbody #run-rows { (run_rows(&v.page.runs, v.now)) }
        }
        nav.pager {
            @if v.before.is_some() {
                a href={ "/runs?" (v.query.to_query(None)) } { "« Newest" }
            }
            @if let Some(c) = next {
                a.next href={ "/runs?" (v.query.to_query(Some(&c))) } { "Older »" }
            }
        }
    };
    layout("Runs", ("runs", v.fingerprint), content)
}

/// What a run page shows.
pub struct RunView {
    pub summary: RunSummary,
    pub record: Option<RunRecord>,
    pub damage: Option<String>,
    pub steps: Vec<StepRecord>,
    pub checkpoints: Vec<CheckpointInfo>,
    /// The checkpoint shown, its state (or why it cannot be shown), and the change from the
    /// kept checkpoint before it.
    pub at: Option<u64>,
    pub state: Result<Value, String>,
    pub changes: Option<(u64, Vec<Change>)>,
    pub graph: Option<String>,
    pub llm_calls: Vec<data::LlmCall>,
    pub csrf: String,
    pub fingerprint: String,
    pub now: i64,
    /// What was wrong with a submitted answer, and what was submitted (to fill the form again).
    pub answer_errors: Vec<String>,
    pub submitted: Vec<(String, String)>,
}

/// Each method's status, for colouring the graph: the status of its latest step record, and
/// `paused` for the method a paused run waits in.
pub fn node_statuses(v: &RunView) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for s in &v.steps {
        map.insert(s.method.clone(), s.status.as_str().to_string());
    }
    if v.summary.status == RunStatus::Paused
        && let Some(method) = v.summary.pause.as_ref().and_then(|p| p.get("method")).and_then(Value::as_str)
    {
        map.insert(method.to_string(), "paused".into());
    }
    map
}

/// A step's duration from its stored millisecond timestamps, as the console prints durations.
fn duration(ms: i64) -> String {
    flow_core::console::human_duration(std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

fn tokens(usage: &TokenUsage) -> String {
    format!("{} in / {} out", usage.prompt_tokens, usage.completion_tokens)
}

fn actions(v: &RunView) -> Markup {
    let id = v.summary.run_id;
    let status = v.summary.status;
    html! {
        div.actions #run-actions data-live {
            @if !status.is_terminal() {
                form method="post" action={ "/runs/" (id) "/cancel" } {
                    input type="hidden" name="csrf" value=(v.csrf);
                    button.danger type="submit" #cancel { "Cancel" }
                }
            }
            @if matches!(status, RunStatus::Failed) {
                form method="post" action={ "/runs/" (id) "/retry" } {
                    input type="hidden" name="csrf" value=(v.csrf);
                    button type="submit" #retry { "Retry" }
                }
            }
        }
    }
}

fn question(v: &RunView) -> Markup {
    let pause = v.summary.pause.as_ref().filter(|_| v.summary.status == RunStatus::Paused);
    let key = pause.and_then(PauseRequest::stored_step_key).unwrap_or_default();
    let submitted = |name: &str| v.submitted.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    html! {
        section #run-question data-live data-key=(key) {
            @if let Some(pause) = pause {
                h2 { "Waiting for an answer" }
                p.prompt { (pause.get("prompt").and_then(Value::as_str).unwrap_or("(no question text)")) }
                @if let Some(meta) = pause.get("metadata").filter(|m| !m.is_null()) {
                    pre.metadata { (serde_json::to_string_pretty(meta).unwrap_or_default()) }
                }
                @if !v.answer_errors.is_empty() {
                    div.errors #answer-errors role="alert" {
                        p { "The answer was not stored:" }
                        ul { @for e in &v.answer_errors { li { (e) } } }
                    }
                }
                @let schema = PauseRequest::stored_answer_schema(pause);
                form.answer #answer-form method="post" action={ "/runs/" (v.summary.run_id) "/answer" } {
                    input type="hidden" name="csrf" value=(v.csrf);
                    input type="hidden" name="step_key" value=(key);
                    @if let Some(schema) = schema {
                        @let f = form::form_for(schema);
                        @for field in &f.fields {
                            @let name = field.input_name();
                            @let given = submitted(&name);
                            div.field {
                                label for=(name) { (field.label) @if field.required && field.kind != Kind::Bool { " *" } }
                                @match &field.kind {
                                    Kind::Bool => { input type="checkbox" id=(name) name=(name) checked[given.is_some()]; }
                                    Kind::Integer => { input type="number" step="1" id=(name) name=(name) value=[given]; }
                                    Kind::Number => { input type="number" step="any" id=(name) name=(name) value=[given]; }
                                    Kind::Text => { input type="text" id=(name) name=(name) value=[given]; }
                                    Kind::Select(options) => {
                                        select id=(name) name=(name) {
                                            @for o in options {
                                                option value=(o) selected[given == Some(o.as_str())] { (o.trim_matches('"')) }
                                            }
                                        }
                                    }
                                    Kind::Json => { textarea id=(name) name=(name) rows="3" placeholder="JSON" { (given.unwrap_or_default()) } }
                                }
                                @if let Some(d) = &field.description { small { (d) } }
                            }
                        }
                        details.raw open[submitted("json").is_some_and(|j| !j.trim().is_empty())] {
                            summary { "…or answer as JSON" }
                            textarea name="json" #answer-json rows="4" placeholder="overrides the fields above" { (submitted("json").unwrap_or_default()) }
                        }
                    } @else {
                        label for="answer-json" {
                            "Answer, as JSON"
                            @if let Some(t) = pause.get("expected_type").and_then(Value::as_str) { " (read as " code { (t) } ")" }
                        }
                        textarea name="json" #answer-json rows="4" { (submitted("json").unwrap_or_default()) }
                    }
                    button type="submit" #answer-submit { "Answer" }
                }
            }
        }
    }
}

fn steps_table(v: &RunView) -> Markup {
    let recorded =
        |s: &StepRecord| v.checkpoints.iter().rev().find(|c| c.step_key.as_deref() == Some(s.step_key.as_str()));
    html! {
        section #run-steps data-live {
            h2 { "Steps (" (v.steps.len()) ")" }
            @if v.steps.is_empty() {
                p.muted { "None recorded yet (a step's row is written when it first finishes or fails)." }
            } @else {
                table.steps {
                    thead { tr { th { "Step" } th { "Method" } th { "Status" } th { "Attempts" } th { "Started" } th { "Took" } th { "Tokens" } th { "Error" } } }
                    tbody {
                        @for s in &v.steps {
                            @let (started, finished) = (s.started_at_ms, s.finished_at_ms);
                            tr data-step=(s.step_key) {
                                td { code { (s.step_key) } }
                                td { (s.method) }
                                td { (status_badge(s.status.as_str())) }
                                td { (s.attempt) }
                                td {
                                    @if let Some(t) = started { (output::time(t)) }
                                    @else if let Some(c) = recorded(s) { "recorded " (output::time(c.created_at_ms)) }
                                }
                                td { @if let (Some(a), Some(b)) = (started, finished) { (duration(b - a)) } }
                                td { @if let Some(u) = &s.usage { (tokens(u)) } }
                                td.error { @if let Some(e) = &s.error { (e) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn llm(v: &RunView) -> Markup {
    let total = v.llm_calls.iter().filter_map(|c| c.usage).fold(TokenUsage::default(), |sum, u| sum + u);
    html! {
        section #run-llm data-live {
            h2 { "LLM calls (" (v.llm_calls.len()) ")" }
            @if v.llm_calls.is_empty() {
                p.muted { "None journaled." }
            } @else {
                table.llm {
                    thead { tr { th { "Step" } th { "#" } th { "Model" } th { "Tokens" } } }
                    tbody {
                        @for c in &v.llm_calls {
                            tr {
                                td { code { (c.step_key) } }
                                td { (c.seq) }
                                td { (c.model) }
                                td { @if let Some(u) = &c.usage { (tokens(u)) } }
                            }
                        }
                    }
                }
                p.muted { "Total: " (tokens(&total)) }
            }
        }
    }
}

fn history(v: &RunView) -> Markup {
    let id = v.summary.run_id;
    let shown = v.at.or(v.checkpoints.last().map(|c| c.seq));
    html! {
        section #run-history data-live {
            h2 { "Checkpoints (" (v.checkpoints.len()) " kept)" }
            ol.checkpoints {
                @for c in &v.checkpoints {
                    li.current[Some(c.seq) == shown] {
                        a href={ "/runs/" (id) "?at=" (c.seq) } {
                            (c.seq) " · "
                            @if let Some(k) = &c.step_key { "after " code { (k) } } @else if let Some(e) = &c.edit { (e.to_string()) } @else if c.seq == 1 { "start" } @else { (c.status.as_str()) }
                        }
                        " " span.muted { (output::time(c.created_at_ms)) }
                    }
                }
            }
            h3 { "State" @if let Some(s) = shown { " at checkpoint " (s) } }
            @match &v.state {
                Ok(state) => { pre.state #state { (serde_json::to_string_pretty(state).unwrap_or_default()) } }
                Err(e) => { p.warning { (e) } }
            }
            @if let Some((from, changes)) = &v.changes {
                h3 { "Changed since checkpoint " (from) }
                @if changes.is_empty() { p.muted { "No change." } }
                ul.diff {
                    @for c in changes {
                        @let path = if c.path().is_empty() { "(the whole state)" } else { c.path() };
                        @match c {
                            Change::Added { new, .. } => { li.added { "+ " code { (path) } ": " (new.to_string()) } }
                            Change::Removed { old, .. } => { li.removed { "− " code { (path) } ": " (old.to_string()) } }
                            Change::Changed { old, new, .. } => { li.changed { "~ " code { (path) } ": " (old.to_string()) " → " (new.to_string()) } }
                        }
                    }
                }
            }
        }
    }
}

pub fn run_page(v: &RunView) -> Markup {
    let s = &v.summary;
    let statuses = serde_json::to_string(&node_statuses(v)).unwrap_or_default();
    let content = html! {
        @let page = match v.at { Some(at) => format!("/runs/{}?at={at}", s.run_id), None => format!("/runs/{}", s.run_id) };
        div #live hidden
            data-events={ "/runs/" (s.run_id) "/events?since=" (v.fingerprint) }
            data-refresh=(page) data-canonical=(page) {}
        p.crumbs { a href="/runs" { "Runs" } " / " code { (s.run_id) } }
        section.summary #run-summary data-live data-status=(s.status.as_str()) {
            h1 { (s.flow) " " span #run-status { (status_badge(s.status.as_str())) } }
            dl {
                dt { "Run" } dd { code { (s.run_id) } }
                dt { "Created" } dd { (output::when(s.created_at_ms, v.now)) }
                dt { "Updated" } dd { (output::when(s.updated_at_ms, v.now)) }
                @if let Some(r) = &v.record {
                    @if let Some(p) = r.parent_run_id { dt { "Began from" } dd { a href={ "/runs/" (p) } { code { (p) } } } }
                    dt { "Checkpoints written" } dd { (r.version) }
                    @if let Some(e) = &r.error { dt { "Error" } dd.error #run-error { (e) } }
                    @if let Some(o) = r.output.as_ref().filter(|_| r.status == RunStatus::Completed) {
                        dt { "Output" } dd { pre { (serde_json::to_string_pretty(o).unwrap_or_default()) } }
                    }
                }
                @if let Some(d) = &v.damage { dt { "Damaged" } dd.warning { (d) } }
            }
        }
        (actions(v))
        (question(v))
        section #run-graph data-live data-steps=(statuses) {
            h2 { "Graph" }
            @match &v.graph {
                // Drawn by flow_core::plot, which escapes every name it writes.
                Some(svg) => { div.graph { (PreEscaped(svg)) } }
                None => { p.muted { "This store keeps no graph of the run's flow." } }
            }
        }
        (steps_table(v))
        (llm(v))
        (history(v))
    };
    layout(&format!("{} {}", s.flow, s.run_id), ("run", &v.fingerprint), content)
}

/// A page saying what went wrong and what to do; nothing was changed.
pub fn error_page(status: u16, title: &str, message: &str) -> Markup {
    let content = html! {
        section.error-page {
            h1 { (title) }
            p #error-message { (message) }
            p.muted { "Error " (status) ". Nothing was changed." }
            p { a href="/runs" { "Back to the runs" } }
        }
    };
    layout(title, ("error", ""), content)
}

/// The sign-in form of a dashboard guarded by a token.
pub fn login_page(next: &str, csrf: &str, failed: bool) -> Markup {
    let content = html! {
        section.login {
            h1 { "Sign in" }
            @if failed { p.errors role="alert" { "That token is not this dashboard's." } }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="next" value=(next);
                label for="token" { "Token (as given to " code { "flows serve" } ")" }
                input type="password" id="token" name="token" autocomplete="current-password" autofocus;
                button type="submit" { "Sign in" }
            }
        }
    };
    layout("Sign in", ("login", ""), content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_url_encoded() {
        let q = RunsQuery { status: Some(RunStatus::Paused), flow: Some("a b&c=<".into()) };
        assert_eq!(q.to_query(None), "status=paused&flow=a%20b%26c%3D%3C");
    }

    #[test]
    fn the_error_page_escapes_its_message() {
        let page = error_page(400, "Bad <request>", "<script>alert(1)</script>").into_string();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{page}");
        assert!(page.contains("Bad &lt;request&gt;"));
    }
}
