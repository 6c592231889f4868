//! The HTTP surface: K3's routes ([`k3`]), the JSON API under `/api/`
//! ([`json`]), its server-sent events ([`sse`]) and live peer logs ([`logs`]). [`router`] builds it all
//! apart from serving, so tests bind it to a real socket on port 0.

pub mod json;
pub mod k3;
pub mod logs;
pub mod openapi;
pub mod session;
pub mod sse;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::access::Grant;
use crate::error::ApiError;
use crate::service::AppState;

/// Registers each route and its description together: the OpenAPI document
/// is made from this list, so it names every route and only real ones.
macro_rules! routes {
    ($ops:ident, $access:ident, [$($method:ident $path:literal => $handler:path, $op:expr;)*]) => {{
        let r = Router::new();
        $(
            let r = r.route($path, axum::routing::$method($handler));
            $ops.push(openapi::Op {
                method: stringify!($method),
                path: $path,
                access: openapi::Access::$access,
                ..$op
            });
        )*
        r
    }};
}

pub fn router(state: AppState) -> Router {
    let upload_max = state.settings.max_upload.saturating_add(1 << 20);
    let upload_limit = DefaultBodyLimit::max(upload_max as usize);
    let upload_cap = body_cap(upload_max, "--max-upload-mb");
    // A role file, in JSON or a form, with room for the other fields.
    let role_max = state.settings.limits.max_role_file as u64 * 2 + (64 << 10);
    let role_limit = DefaultBodyLimit::max(role_max as usize);
    let role_cap = body_cap(role_max, "--max-role-file-kb");

    use openapi::{op, Answer::*, Body, Body::*};
    let mut ops: Vec<openapi::Op> = Vec::new();
    const K3_FORM: Body = Form(&["file", "name", "uid", "tag"]);
    const JOB_FORM: Body = Form(&[
        "file",
        "text",
        "jsonfinal",
        "jsonlog",
        "logging",
        "core_dump",
        "perf_profile",
        "perf_frequency",
        "cmd_prefix",
        "archive",
        "time_limit",
        "retries",
        "retry_on",
    ]);

    // Routes that change something; the token, when set, guards them all
    // (K3's kill and replay are GETs, so they are here too).
    let uploads = routes!(ops, Write, [
        post "/apps" => k3::upload_app, op("k3", "Upload an app (K3: curl -F file=@prog)", Reply(200, "K3")).body(K3_FORM);
        post "/app" => k3::upload_app, op("k3", "Upload an app (K3's singular path)", Reply(200, "K3")).body(K3_FORM);
        post "/api/apps" => json::upload_app, op("apps", "Upload an app version (201 when new, 200 when the same bytes were stored already)", Reply(201, "Uploaded")).body(K3_FORM);
    ])
    .layer(upload_limit)
    .layer(middleware::from_fn_with_state(upload_cap, cap_body));
    let submissions = routes!(ops, Write, [
        post "/jobs/{app}" => k3::submit_latest, op("k3", "Submit a job of the app's latest version (K3: -F file=@role.yaml or -F text=...)", Reply(202, "K3")).body(JOB_FORM);
        post "/jobs/{app}/{uid}" => k3::submit_version, op("k3", "Submit a job of one app version", Reply(202, "K3")).body(JOB_FORM);
        post "/api/jobs" => json::submit, op("jobs", "Submit a job", Reply(202, "Submitted")).body(JsonBody("JobRequest"));
        post "/api/schedules" => json::create_schedule, op("schedules", "Create a schedule: an app, a role file, options and when (an ISO 8601 repeating interval, or cron with a time zone)", Reply(201, "Schedule")).body(JsonBody("ScheduleRequest"));
        post "/api/sweeps" => json::submit_sweep, op("sweeps", "Submit a sweep: one job per combination of the parameters' values, times repeat; every combination is checked first", Reply(202, "SweepSubmitted")).body(JsonBody("SweepRequest"));
    ])
    .layer(role_limit)
    .layer(middleware::from_fn_with_state(role_cap, cap_body));
    let mutating = routes!(ops, Write, [
        post "/delete/app/{name}" => k3::delete_app, op("k3", "Delete an app and its versions", Reply(200, "K3"));
        get "/jobs/{app}/{id}/kill" => k3::kill_job, op("k3", "Kill a job (K3 used GET)", Reply(200, "K3"));
        post "/jobs/{app}/{id}/kill" => k3::kill_job, op("k3", "Kill a job", Reply(200, "K3"));
        get "/job/{id}/kill" => k3::kill_job_by_id, op("k3", "Kill a job by id (K3 used GET)", Reply(200, "K3"));
        post "/job/{id}/kill" => k3::kill_job_by_id, op("k3", "Kill a job by id", Reply(200, "K3"));
        get "/jobs/{app}/{id}/replay" => k3::replay_job, op("k3", "Run a job again (K3 used GET)", Reply(202, "K3"));
        post "/jobs/{app}/{id}/replay" => k3::replay_job, op("k3", "Run a job again", Reply(202, "K3"));
        get "/job/{id}/replay" => k3::replay_job_by_id, op("k3", "Run a job again by id (K3 used GET)", Reply(202, "K3"));
        post "/job/{id}/replay" => k3::replay_job_by_id, op("k3", "Run a job again by id", Reply(202, "K3"));
        delete "/api/apps/{name}" => json::delete_app, op("apps", "Delete an app and its versions", Empty);
        post "/api/jobs/{id}/kill" => json::kill, op("jobs", "Kill a job", Reply(200, "Killed"));
        post "/api/jobs/{id}/replay" => json::replay, op("jobs", "Run a job again with the same app version and role file", Reply(202, "Submitted"));
        post "/api/schedules/{id}/pause" => json::pause_schedule, op("schedules", "Pause a schedule (no run starts)", Reply(200, "Schedule"));
        post "/api/schedules/{id}/resume" => json::resume_schedule, op("schedules", "Resume a schedule from its next due time", Reply(200, "Schedule"));
        delete "/api/schedules/{id}" => json::delete_schedule, op("schedules", "Delete a schedule (its jobs stay)", Empty);
        post "/api/sweeps/{id}/kill" => json::kill_sweep, op("sweeps", "Kill every job of the sweep that has not ended", Reply(200, "SweepKilled"));
        post "/api/framework/teardown" => json::teardown, op("cluster", "Mesos: unregister the framework (the master kills its tasks)", Reply(200, "TornDown"));
    ])
    .merge(uploads)
    .merge(submissions)
    .route_layer(middleware::from_fn_with_state(state.clone(), require_write));

    let reads = routes!(ops, Read, [
        get "/" => k3::index, op("k3", "K3's index", Reply(200, "K3"));
        get "/index" => k3::index, op("k3", "K3's index", Reply(200, "K3"));
        get "/apps" => k3::list_apps, op("k3", "List apps", Reply(200, "K3"));
        get "/app" => k3::list_apps, op("k3", "List apps", Reply(200, "K3"));
        get "/apps/{name}" => k3::get_app, op("k3", "An app's versions", Reply(200, "K3"));
        get "/app/{name}" => k3::get_app, op("k3", "An app's versions", Reply(200, "K3"));
        get "/jobs" => k3::list_jobs, op("k3", "List jobs", Reply(200, "K3"));
        get "/job" => k3::list_jobs, op("k3", "List jobs", Reply(200, "K3"));
        get "/jobs/{app}" => k3::app_jobs, op("k3", "An app's jobs", Reply(200, "K3"));
        get "/jobs/{app}/{uid}" => k3::app_jobs_version, op("k3", "An app version's jobs", Reply(200, "K3"));
        get "/job/{id}" => k3::job_status_by_id, op("k3", "A job's status", Reply(200, "K3"));
        get "/jobs/{app}/{id}/status" => k3::job_status, op("k3", "A job's status", Reply(200, "K3"));
        get "/job/{id}/archive" => k3::archive_by_id, op("k3", "A finished job's sandboxes (.tar.gz)", Bytes("application/gzip"));
        get "/jobs/{app}/{id}/archive" => k3::archive, op("k3", "A finished job's sandboxes (.tar.gz)", Bytes("application/gzip"));
        get "/api/apps" => json::list_apps, op("apps", "List apps", Reply(200, "AppList"));
        get "/api/apps/{name}" => json::get_app, op("apps", "An app's versions, newest first", Reply(200, "AppDetail"));
        get "/api/jobs" => json::list_jobs, op("jobs", "List jobs, newest first", Reply(200, "JobPage")).query(&[("app", "string", "only this app's jobs"), ("state", "string", "only jobs in this state"), ("limit", "integer", "at most this many (default 50)"), ("offset", "integer", "skip this many (costs as many rows; prefer before)"), ("before", "integer", "only jobs older than this id: the previous page's next_before (keyset pagination, as cheap deep as shallow)")]);
        get "/api/jobs/{id}" => json::get_job, op("jobs", "A job: state, peers, role file", Reply(200, "JobDetail"));
        get "/api/schedules" => json::list_schedules, op("schedules", "Schedules, newest first, with their next runs and last outcome", Reply(200, "ScheduleList"));
        get "/api/schedules/{id}" => json::get_schedule, op("schedules", "A schedule with next_runs and its jobs (history, newest first)", Reply(200, "Schedule"));
        get "/api/sweeps" => json::list_sweeps, op("sweeps", "Sweeps, newest first", Reply(200, "SweepList"));
        get "/api/sweeps/{id}" => json::get_sweep, op("sweeps", "A sweep: each combination's runs, with median, min and max duration of those that finished", Reply(200, "SweepDetail"));
        get "/api/sweeps/{id}/csv" => json::sweep_csv, op("sweeps", "A sweep as CSV, one row per run", Bytes("text/csv"));
        get "/api/jobs/{id}/archive" => json::archive, op("jobs", "A finished job's sandboxes (.tar.gz)", Bytes("application/gzip"));
        post "/api/validate" => json::validate, op("jobs", "Check a role file without submitting it", Reply(200, "Validation")).body(RoleFile);
        get "/metrics" => json::metrics, op("meta", "Prometheus metrics (text format 0.0.4)", Bytes("text/plain"));
        get "/api/cluster" => json::cluster, op("cluster", "The backend: capacity, use, and for Mesos the master, framework and agents", Reply(200, "Cluster"));
        get "/api/events" => sse::all_events, op("events", "Every job's events from now on (after=0: the whole history first); the first frame is an id alone, where the stream starts", Events).query(&[("after", "integer", "resume after this event id; 0 replays every event ever recorded")]);
        get "/api/jobs/{id}/events" => sse::job_events, op("events", "One job's events, live; ends once its archive is ready, with a last `end` event (no id)", Events).query(&[("after", "integer", "resume after this event id")]);
        get "/api/jobs/{id}/peers/{peer}/usage" => json::peer_usage, op("jobs", "A peer's CPU (cores) and resident memory over time, sampled every --usage-every-secs", Reply(200, "Usage"));
        get "/api/jobs/{id}/peers/{peer}/logs" => logs::peer_logs, op("events", "A peer's stdout or stderr, live", Events).query(&[("stream", "string", "stdout (default) or stderr"), ("offset", "integer", "start at this byte"), ("follow", "boolean", "keep the stream open while the peer runs (default true)")]);
    ])
    .route_layer(middleware::from_fn_with_state(state.clone(), require_read));

    // Open to all: liveness, signing in, this description, and the binaries
    // agents fetch (by content hash, so knowing the URL already means
    // knowing the content).
    let open = routes!(ops, Open, [
        get "/api/health" => json::health, op("meta", "Liveness and version", Reply(200, "Health"));
        get "/api/openapi.json" => openapi::serve, op("meta", "This description", Reply(200, "K3"));
        get "/api/session" => session::show, op("meta", "What this browser or token may do", Reply(200, "Session"));
        post "/api/session" => session::sign_in, op("meta", "Sign the dashboard in: sets a session cookie", Reply(200, "Session")).body(JsonBody("SignIn"));
        delete "/api/session" => session::sign_out, op("meta", "Sign out", Reply(200, "Session"));
        get "/api/blobs/{sha256}" => json::blob, op("apps", "An app binary by sha256 (what Mesos agents fetch)", Bytes("application/octet-stream"));
    ]);
    openapi::publish(&ops);

    mutating
        .merge(reads)
        .merge(open)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(crate::web::dashboard))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(
            state.bus.metrics().clone(),
            crate::metrics::track,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            // The path only: query strings are the client's and stay out.
            let id = req
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
        }))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

const REQUEST_ID: &str = "x-request-id";

/// Gives every request an id, shown in its log lines and answered in
/// `X-Request-Id`: the caller's own (letters, digits, `.`, `_`, `-`; at
/// most 64) or a new one.
async fn request_id(mut req: Request, next: Next) -> Response {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let given = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
        .map(str::to_string);
    let id = given.unwrap_or_else(|| {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{:x}-{n}", std::process::id())
    });
    let value = header::HeaderValue::from_str(&id).expect("checked or made of safe bytes");
    req.headers_mut().insert(REQUEST_ID, value.clone());
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(REQUEST_ID, value);
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see the README's API section or /api/openapi.json")
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not a method {} takes; see /api/openapi.json",
            req.method(),
            req.uri().path()
        ),
    )
}

#[derive(Clone, Copy)]
struct BodyCap {
    max: u64,
    flag: &'static str,
}

fn body_cap(max: u64, flag: &'static str) -> BodyCap {
    BodyCap { max, flag }
}

/// Answers 413 at once when `Content-Length` already says the body is over
/// the cap, instead of reading (or waiting for) a body that will be refused.
async fn cap_body(State(cap): State<BodyCap>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|len| *len > cap.max) {
        let mut resp = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is {len} bytes, more than this route accepts ({} bytes; see {})",
                cap.max, cap.flag
            ),
        )
        .into_response();
        // The unread body makes the connection unusable for another request.
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return resp;
    }
    next.run(req).await
}

/// Every error answer is the documented JSON `{error, details}`, including
/// the ones axum's extractors make themselves (bad paths, query strings,
/// multipart framing, body limits) in plain text.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, 16 << 10).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let error = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!("{error}: the body is larger than this route accepts")
    } else {
        error
    };
    let body = serde_json::to_vec(&app::model::ApiErrorBody {
        error,
        details: vec![],
    })
    .unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

fn unauthorized(msg: &str) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, msg).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

/// Changes need the write token (when one is set) and must not come from
/// another site's page.
async fn require_write(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(why) = st.settings.access.cross_site(req.headers()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "a change from another site's page is refused ({why}); use the dashboard or curl"
            ),
        )
        .into_response();
    }
    match st.settings.access.grant(req.headers()) {
        Grant::Write => next.run(req).await,
        Grant::Read => unauthorized(
            "this route changes something and needs the dispatcher's token: send `Authorization: Bearer <token>` (or sign in on the dashboard)",
        ),
        Grant::None => unauthorized(
            "this dispatcher needs a token for everything: send `Authorization: Bearer <token>` (or sign in on the dashboard)",
        ),
    }
}

/// Reads need the read token (or the write token) when one is set.
async fn require_read(State(st): State<AppState>, req: Request, next: Next) -> Response {
    match st.settings.access.grant(req.headers()) {
        Grant::None => unauthorized(
            "this dispatcher's jobs are private: send `Authorization: Bearer <read token>` (or sign in on the dashboard)",
        ),
        _ => next.run(req).await,
    }
}

/// Parses a job id from a path segment (K3 allowed `12.tar`-like suffixes).
/// A job that has peer `peer`, or a 404 that says which is missing.
pub async fn job_with_peer(
    st: &AppState,
    id: u64,
    peer: u32,
) -> Result<app::model::JobDetail, ApiError> {
    let job = crate::service::job_detail(st, id).await?;
    if peer >= job.job.peers_total {
        return Err(ApiError::not_found(format!(
            "job {id} has {} peers; there is no peer {peer}",
            job.job.peers_total
        )));
    }
    Ok(job)
}

pub fn job_id(raw: &str) -> Result<u64, ApiError> {
    raw.split('.')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::bad_request(format!("job id {raw:?} is not a number")))
}
