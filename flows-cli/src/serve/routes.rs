//! The dashboard's routes: pages, their live streams, the actions, and the guard in front.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use flow_core::PauseRequest;
use flow_core::store::{RunStatus, Store, StoreError};
use flows_cli::ops::{self, OpError};
use maud::Markup;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::data::{self, Cursor};
use super::live::{self, Watch};
use super::pages::{self, RunView, RunsQuery};
use super::{App, assets, form, security};
use crate::diff::diff;
use crate::output;

/// Runs on one page of the list.
pub const PAGE_SIZE: usize = 50;

/// A failure shown as the error page, with its status; nothing was changed.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
}

impl PageError {
    fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        PageError { status, title, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad request", message)
    }
}

/// The status and title a store failure is shown with.
fn store_status(e: &StoreError) -> (StatusCode, &'static str) {
    match e {
        StoreError::NotFound(_) | StoreError::CheckpointNotFound { .. } => (StatusCode::NOT_FOUND, "Not found"),
        StoreError::NotWaiting { .. } | StoreError::Locked { .. } => (StatusCode::CONFLICT, "Not possible now"),
        StoreError::Unsupported { .. } => (StatusCode::NOT_IMPLEMENTED, "Not supported"),
        StoreError::Corrupt { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "Damaged run"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "Store unavailable"),
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        let (status, title) = store_status(&e);
        PageError::new(status, title, e.to_string())
    }
}

impl From<OpError> for PageError {
    fn from(e: OpError) -> Self {
        let (status, title) = match &e {
            OpError::Store(e) => store_status(e),
            OpError::InvalidAnswer { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Answer refused"),
            OpError::BadQuestion { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "Unusable question"),
            _ => (StatusCode::CONFLICT, "Not possible now"),
        };
        PageError::new(status, title, e.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        (self.status, pages::error_page(self.status.as_u16(), self.title, &self.message)).into_response()
    }
}

fn html(markup: Markup) -> Response {
    let mut response = markup.into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/runs") }))
        .route("/runs", get(runs_page))
        .route("/runs/rows", get(runs_rows))
        .route("/events/runs", get(runs_events))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/events", get(run_events))
        .route("/runs/{id}/answer", post(answer))
        .route("/runs/{id}/cancel", post(cancel))
        .route("/runs/{id}/retry", post(retry))
        .route("/login", get(login_page).post(login))
        .route("/assets/{name}", get(asset))
        .fallback(|| async { PageError::new(StatusCode::NOT_FOUND, "Not found", "There is no such page here.") })
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// In front of every route: the Host check, the token, and headers that keep the pages from
/// being framed or running scripts from elsewhere.
async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let token = app.token.as_deref();
    let mut response = if !security::host_allowed(headers, app.bound, token) {
        PageError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "Wrong address",
            "This dashboard answers only at its loopback address (127.0.0.1 or localhost); open it there.",
        )
        .into_response()
    } else if request.uri().path() == "/login"
        || request.uri().path().starts_with("/assets/")
        || security::authorized(headers, token, &app.session)
    {
        next.run(request).await
    } else if request.method() == Method::GET {
        let next = request.uri().path_and_query().map_or("/runs", |p| p.as_str());
        Redirect::to(&format!("/login?next={}", pages::url_encode(next))).into_response()
    } else {
        PageError::new(StatusCode::UNAUTHORIZED, "Sign in first", "This dashboard needs its token: sign in at /login.")
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

async fn asset(Path(name): Path<String>) -> Response {
    match assets::get(&name) {
        Some((body, mime)) => ([(header::CONTENT_TYPE, mime)], body).into_response(),
        None => PageError::new(StatusCode::NOT_FOUND, "Not found", format!("No asset `{name}`.")).into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    status: Option<String>,
    flow: Option<String>,
    before: Option<String>,
    since: Option<String>,
}

impl ListQuery {
    fn parse(&self) -> Result<(RunsQuery, Option<Cursor>), PageError> {
        let status = match self.status.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
                PageError::bad_request(format!(
                    "`{s}` is not a run status; use one of queued, running, paused, completed, failed, escalated"
                ))
            })?),
        };
        let flow = self.flow.as_deref().map(str::trim).filter(|f| !f.is_empty()).map(str::to_string);
        let before = match self.before.as_deref().filter(|b| !b.is_empty()) {
            None => None,
            Some(b) => Some(b.parse::<Cursor>().map_err(|_| {
                PageError::bad_request(format!("`{b}` is not a page position; follow the links under the list"))
            })?),
        };
        Ok((RunsQuery { status, flow }, before))
    }
}

fn parse_run_id(id: &str) -> Result<Uuid, PageError> {
    Uuid::parse_str(id).map_err(|_| PageError::bad_request(format!("`{id}` is not a run id (a UUID)")))
}

async fn list_page(app: &App, query: &RunsQuery, before: Option<Cursor>) -> Result<data::Page, PageError> {
    Ok(data::page(app.store.as_ref(), query.status, query.flow.clone(), before, PAGE_SIZE).await?)
}

async fn runs_page(State(app): State<Arc<App>>, Query(q): Query<ListQuery>) -> Result<Response, PageError> {
    let (query, before) = q.parse()?;
    let page = list_page(&app, &query, before).await?;
    let fingerprint = live::runs_fingerprint(&page);
    let view = pages::RunsView { query: &query, page: &page, before, fingerprint: &fingerprint, now: output::now_ms() };
    Ok(html(pages::runs_page(&view)))
}

async fn runs_rows(State(app): State<Arc<App>>, Query(q): Query<ListQuery>) -> Result<Response, PageError> {
    let (query, before) = q.parse()?;
    let page = list_page(&app, &query, before).await?;
    let mut response = html(pages::run_rows(&page.runs, output::now_ms()));
    if let Ok(v) = HeaderValue::from_str(&live::runs_fingerprint(&page)) {
        response.headers_mut().insert("x-fingerprint", v);
    }
    Ok(response)
}

async fn runs_events(State(app): State<Arc<App>>, Query(q): Query<ListQuery>) -> Result<Response, PageError> {
    let (query, before) = q.parse()?;
    let watch = Watch::Runs { status: query.status, flow: query.flow, before, size: PAGE_SIZE };
    Ok(live::stream(app.store.clone(), watch, q.since.unwrap_or_default()).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct RunQuery {
    at: Option<String>,
    since: Option<String>,
}

async fn run_view(app: &App, run_id: Uuid, at: Option<u64>) -> Result<RunView, PageError> {
    let store: &dyn Store = app.store.as_ref();
    let (record, damage) = match store.load_run(run_id).await {
        Ok(r) => (Some(r), None),
        Err(e @ StoreError::Corrupt { .. }) => (None, Some(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let summary = match &record {
        Some(r) => flow_core::store::RunSummary::from(r),
        None => store.run_summary(run_id).await?,
    };
    let steps = store.steps(run_id).await?;
    let checkpoints = store.checkpoints(run_id).await?;
    if let Some(seq) = at
        && !checkpoints.iter().any(|c| c.seq == seq)
    {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("run {run_id} keeps no checkpoint {seq}; pick one from its list of checkpoints"),
        ));
    }
    let load = |seq: u64| async move {
        match store.load_checkpoint(run_id, seq).await {
            Ok(s) => s.state_as::<Value>().map_err(|e| format!("the state of checkpoint {seq} is not JSON ({e})")),
            Err(e) => Err(e.to_string()),
        }
    };
    let shown = at.or(checkpoints.last().map(|c| c.seq));
    let (state, changes) = match shown {
        Some(seq) => {
            let state = load(seq).await;
            let before = checkpoints.iter().rev().find(|c| c.seq < seq).map(|c| c.seq);
            let changes = match (&state, before) {
                (Ok(new), Some(prev)) => load(prev).await.ok().map(|old| (prev, diff(&old, new))),
                _ => None,
            };
            (state, changes)
        }
        None => match &record {
            Some(r) => (r.snapshot.state_as::<Value>().map_err(|e| format!("the state is not JSON ({e})")), None),
            None => (Err("the run's state cannot be read".to_string()), None),
        },
    };
    let graph = data::graph_svg(store, run_id).await.unwrap_or_else(|e| {
        tracing::warn!("run {run_id}: cannot read its graph: {e}");
        None
    });
    let llm_calls = data::llm_calls(store, run_id, &steps).await?;
    Ok(RunView {
        llm_calls,
        fingerprint: live::run_fingerprint(&summary),
        summary,
        record,
        damage,
        steps,
        checkpoints,
        at,
        state,
        changes,
        graph,
        csrf: app.csrf.clone(),
        now: output::now_ms(),
        answer_errors: Vec::new(),
        submitted: Vec::new(),
    })
}

fn parse_at(at: Option<&str>) -> Result<Option<u64>, PageError> {
    match at.filter(|a| !a.is_empty()) {
        None => Ok(None),
        Some(a) => a.parse().map(Some).map_err(|_| PageError::bad_request(format!("`{a}` is not a checkpoint number"))),
    }
}

async fn run_page(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<RunQuery>,
) -> Result<Response, PageError> {
    let run_id = parse_run_id(&id)?;
    let at = parse_at(q.at.as_deref())?;
    let view = run_view(&app, run_id, at).await?;
    Ok(html(pages::run_page(&view)))
}

async fn run_events(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<RunQuery>,
) -> Result<Response, PageError> {
    let run_id = parse_run_id(&id)?;
    Ok(live::stream(app.store.clone(), Watch::Run(run_id), q.since.unwrap_or_default()).into_response())
}

type Fields = Result<Form<Vec<(String, String)>>, FormRejection>;

/// The submitted fields of an action, once its CSRF token and origin pass.
fn action_fields(app: &App, headers: &HeaderMap, fields: Fields) -> Result<Vec<(String, String)>, PageError> {
    let Form(fields) = fields.map_err(|e| PageError::bad_request(format!("the form could not be read: {e}")))?;
    let csrf = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str());
    security::check_action(headers, csrf, &app.csrf)
        .map_err(|m| PageError::new(StatusCode::FORBIDDEN, "Refused", m))?;
    Ok(fields)
}

fn back_to(run_id: Uuid) -> Response {
    Redirect::to(&format!("/runs/{run_id}")).into_response()
}

async fn answer(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    fields: Fields,
) -> Result<Response, PageError> {
    let fields = action_fields(&app, &headers, fields)?;
    let run_id = parse_run_id(&id)?;
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let summary = app.store.run_summary(run_id).await?;
    let pause = summary.pause.as_ref().filter(|_| summary.status == RunStatus::Paused).ok_or_else(|| {
        PageError::new(
            StatusCode::CONFLICT,
            "Not waiting",
            format!("run {run_id} is not waiting for an answer (it is {}); reload its page", summary.status),
        )
    })?;
    let waiting_at = PauseRequest::stored_step_key(pause).unwrap_or_default();
    if get("step_key") != Some(waiting_at) {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            "Question changed",
            format!("run {run_id} now waits on another question; reload its page to answer that one"),
        ));
    }
    let schema = PauseRequest::stored_answer_schema(pause);
    let raw = get("json").map(str::trim).filter(|j| !j.is_empty());
    let value = match (raw, schema) {
        (Some(raw), _) => serde_json::from_str::<Value>(raw).map_err(|e| vec![format!("the answer is not JSON: {e}")]),
        (None, Some(schema)) => form::answer_from(&form::form_for(schema), &fields),
        (None, None) => Err(vec!["type the answer, as JSON".to_string()]),
    };
    // The operation checks the answer against the question's schema before it writes.
    let errors = match value {
        Ok(value) => match ops::answer(app.store.as_ref(), run_id, value).await {
            Ok(_) => return Ok(back_to(run_id)),
            Err(OpError::InvalidAnswer { violations, .. }) => violations.iter().map(ToString::to_string).collect(),
            Err(e) => return Err(e.into()),
        },
        Err(errors) => errors,
    };
    let mut view = run_view(&app, run_id, None).await?;
    view.answer_errors = errors;
    view.submitted = fields.into_iter().filter(|(k, _)| k != "csrf").collect();
    Ok((StatusCode::UNPROCESSABLE_ENTITY, html(pages::run_page(&view))).into_response())
}

async fn cancel(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    fields: Fields,
) -> Result<Response, PageError> {
    action_fields(&app, &headers, fields)?;
    let run_id = parse_run_id(&id)?;
    data::cancel(app.store.as_ref(), run_id).await?;
    Ok(back_to(run_id))
}

async fn retry(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    fields: Fields,
) -> Result<Response, PageError> {
    action_fields(&app, &headers, fields)?;
    let run_id = parse_run_id(&id)?;
    ops::retry(app.store.as_ref(), run_id).await?;
    Ok(back_to(run_id))
}

#[derive(Debug, Default, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// Where to go after signing in: a path of this site only.
fn local_path(next: Option<&str>) -> &str {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\')).unwrap_or("/runs")
}

async fn login_page(State(app): State<Arc<App>>, Query(q): Query<LoginQuery>) -> Response {
    html(pages::login_page(local_path(q.next.as_deref()), &app.csrf, false))
}

async fn login(State(app): State<Arc<App>>, headers: HeaderMap, fields: Fields) -> Result<Response, PageError> {
    let fields = action_fields(&app, &headers, fields)?;
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let next = local_path(get("next"));
    let Some(expected) = app.token.as_deref() else {
        return Ok(Redirect::to(next).into_response());
    };
    let given = get("token").unwrap_or_default();
    if !security::same_secret(given, expected) {
        return Ok((StatusCode::UNAUTHORIZED, html(pages::login_page(next, &app.csrf, true))).into_response());
    }
    let cookie = format!("{}={}; HttpOnly; SameSite=Strict; Path=/", security::SESSION_COOKIE, app.session);
    let mut response = Redirect::to(next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}
