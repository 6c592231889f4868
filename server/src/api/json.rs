//! The JSON API under `/api/`: apps, versions, jobs (paginated, filtered),
//! job detail with peers, kill, replay, validation and the cluster view.

use axum::body::Bytes;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use app::model::{JobDetail, JobOptions, JobPage, JobState, Validation};

use super::job_id;
use crate::db::{self, JobFilter};
use crate::error::ApiError;
use crate::service::{self, AppState};

pub async fn health(State(st): State<AppState>) -> Json<Value> {
    Json(
        json!({ "status": "ok", "backend": st.settings.backend, "version": env!("CARGO_PKG_VERSION") }),
    )
}

pub async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let jobs_by_state = st.db.call(|c| db::jobs_by_state(c)).await?;
    let view = st.runner.cluster().await;
    let limits = &st.settings.limits;
    let gauges = crate::metrics::Gauges {
        jobs_by_state,
        peers_running: view
            .as_ref()
            .map_or(0, |v| v.hosts.iter().map(|h| h.peers as u64).sum()),
        waiting: view.as_ref().map_or(0, |v| v.waiting.len()),
        streams: limits.max_streams - limits.streams.available_permits(),
        mesos: view.and_then(|v| v.mesos),
        storage: st.retention.storage(),
    };
    Ok((
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        st.bus.metrics().render(&gauges),
    )
        .into_response())
}

pub async fn list_apps(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let apps = st.db.call(|c| db::apps(c)).await?;
    Ok(Json(json!({ "apps": apps })))
}

pub async fn get_app(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let versions = service::versions(&st, &name).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("there is no app {name:?}")));
    }
    Ok(Json(json!({ "name": name, "versions": versions })))
}

pub async fn upload_app(State(st): State<AppState>, mp: Multipart) -> Result<Response, ApiError> {
    let (v, created) = service::upload(&st, mp).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "version": v, "created": created }))).into_response())
}

pub async fn delete_app(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let removed = crate::service::delete_app(&st, &name).await?;
    if removed == 0 {
        return Err(ApiError::not_found(format!("there is no app {name:?}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct JobQuery {
    app: Option<String>,
    state: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
    before: Option<u64>,
}

pub async fn list_jobs(
    State(st): State<AppState>,
    Query(q): Query<JobQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            let all: Vec<_> = JobState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(format!("state {s:?} is not one of {}", all.join(", ")))
        })?),
    };
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request(format!(
            "limit {limit} must be between 1 and 1000"
        )));
    }
    let filter = JobFilter {
        app: q.app.filter(|a| !a.is_empty()),
        state,
        before: q.before,
        limit,
        offset: q.offset.unwrap_or(0),
    };
    Ok(Json(st.db.call(move |c| db::jobs(c, &filter)).await?))
}

#[derive(Deserialize)]
pub struct SubmitBody {
    app: String,
    #[serde(default)]
    uid: Option<String>,
    role_file: String,
    #[serde(default)]
    options: JobOptions,
}

/// A JSON body must say so: a `text/plain` body is one another site's page
/// can send without the browser asking first (no CORS preflight).
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "the body must be JSON with `Content-Type: application/json`, not {:?}",
                if ct.is_empty() { "(none)" } else { ct }
            ),
        ))
    }
}

pub async fn submit(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let req: SubmitBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not a job request ({{app, uid?, role_file, options?}}): {e}"
        ))
    })?;
    if req.role_file.len() > st.settings.limits.max_role_file {
        return Err(st.settings.limits.role_file_too_large());
    }
    let s = service::submit(
        &st,
        &req.app,
        req.uid.as_deref(),
        req.role_file,
        req.options,
        None,
    )
    .await?;
    Ok(submitted(s))
}

fn submitted(s: service::Submitted) -> Response {
    let body = json!({ "id": s.id, "state": "SUBMITTED", "submitted": s.time, "warnings": s.warnings, "url": format!("/api/jobs/{}", s.id) });
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/jobs/{}", s.id))],
        Json(body),
    )
        .into_response()
}

pub async fn get_job(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobDetail>, ApiError> {
    Ok(Json(service::job_detail(&st, job_id(&id)?).await?))
}

/// A peer's usage samples, oldest first: `[{peer, time, cpu, rss_bytes}]`.
pub async fn peer_usage(
    State(st): State<AppState>,
    Path((id, peer)): Path<(String, u32)>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    super::job_with_peer(&st, id, peer).await?;
    let samples = st.db.call(move |c| db::usage_of(c, id, peer)).await?;
    Ok(Json(Value::Array(
        samples.iter().map(crate::usage::Sample::to_json).collect(),
    )))
}

pub async fn kill(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let j = service::kill(&st, job_id(&id)?).await?;
    Ok(Json(json!({ "job": j })))
}

pub async fn replay(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(submitted(service::replay(&st, job_id(&id)?).await?))
}

pub async fn archive(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    super::k3::send_archive(&st, job_id(&id)?).await
}

/// Validates a role file without submitting it. The body is the role file
/// itself, or JSON `{"role_file": "..."}`.
pub async fn validate(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Validation>, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let text = if is_json {
        #[derive(Deserialize)]
        struct B {
            role_file: String,
        }
        serde_json::from_slice::<B>(&body)
            .map_err(|e| {
                ApiError::bad_request(format!("expected {{\"role_file\": \"...\"}}: {e}"))
            })?
            .role_file
    } else {
        String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::bad_request("the role file is not UTF-8 text"))?
    };
    if text.len() > st.settings.limits.max_role_file {
        return Err(st.settings.limits.role_file_too_large());
    }
    if text.is_empty() {
        return Err(ApiError::bad_request(
            "the body is empty: send the role file (or JSON {\"role_file\": \"...\"})",
        ));
    }
    let report = app::check(&text);
    let mut diagnostics = report.diagnostics;
    let (peers, roles) = report
        .role_file
        .as_ref()
        .map(|rf| {
            (
                rf.total_peers(),
                rf.roles().iter().map(|r| r.name.clone()).collect(),
            )
        })
        .unwrap_or_default();
    let mut ok = report.role_file.is_some();
    // What the parser accepts may still be unable to run here.
    if let Some(rf) = &report.role_file {
        if let Err(message) = service::runnable_here(&st, rf) {
            ok = false;
            diagnostics.push(app::Diagnostic {
                severity: app::Severity::Error,
                line: 1,
                column: 1,
                path: String::new(),
                message,
            });
        }
    }
    Ok(Json(Validation {
        ok,
        peers,
        roles,
        diagnostics,
    }))
}

pub async fn cluster(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut view = st.runner.cluster().await.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler is shutting down",
        )
    })?;
    view.storage = st.retention.storage();
    Ok(Json(serde_json::to_value(view)?))
}

/// An app binary by its sha256, for the Mesos fetcher: the URL names the
/// content, so agents may cache it.
pub async fn blob(
    State(st): State<AppState>,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    if !crate::blobs::is_sha256(&sha256) {
        return Err(ApiError::bad_request(format!(
            "{sha256:?} is not a sha256 (64 lowercase hex digits)"
        )));
    }
    let file = match tokio::fs::File::open(st.blobs.path(&sha256)).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found(format!(
                "no stored binary has sha256 {sha256}"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata().await?.len();
    let body = axum::body::Body::from_stream(super::k3::tokio_util_stream(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CACHE_CONTROL,
                "public, max-age=31536000, immutable".to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

/// Unregisters the Mesos framework: the master kills every task and the
/// running jobs end KILLED. The dispatcher then subscribes as a new framework.
pub async fn teardown(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    if st.settings.backend != "mesos" {
        return Err(ApiError::conflict(
            "teardown is for the Mesos backend (start the dispatcher with --master)",
        ));
    }
    let id = st.runner.teardown().await.map_err(ApiError::conflict)?;
    Ok(Json(json!({ "torn_down": id })))
}

fn sweep_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("sweep id {raw:?} is not a number")))
}

/// `POST /api/sweeps`: one job per combination of the parameters' values
/// (times `repeat`), all checked before any is submitted.
pub async fn submit_sweep(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let req: app::sweep::SweepRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not a sweep request ({{app, uid?, role_file, parameters: {{\"<role>.<field>\": [values]}}, repeat?, options?}}): {e}"
        ))
    })?;
    if req.role_file.len() > st.settings.limits.max_role_file {
        return Err(st.settings.limits.role_file_too_large());
    }
    let (id, jobs) = service::submit_sweep(&st, req).await?;
    let url = format!("/api/sweeps/{id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, url.clone())],
        Json(json!({ "id": id, "jobs": jobs, "url": url })),
    )
        .into_response())
}

pub async fn list_sweeps(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let sweeps = st.db.call(|c| db::sweeps(c, 200)).await?;
    Ok(Json(json!({ "sweeps": sweeps })))
}

async fn sweep_detail(st: &AppState, raw: &str) -> Result<app::sweep::SweepDetail, ApiError> {
    let id = sweep_id(raw)?;
    st.db
        .call(move |c| db::sweep(c, id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no sweep {id}")))
}

pub async fn get_sweep(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<app::sweep::SweepDetail>, ApiError> {
    Ok(Json(sweep_detail(&st, &id).await?))
}

/// One row per run, a column per parameter: for a spreadsheet or pandas.
pub async fn sweep_csv(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let d = sweep_detail(&st, &id).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"sweep-{}.csv\"", d.id),
            ),
        ],
        app::sweep::csv(&d),
    )
        .into_response())
}

/// Kills every job of the sweep that has not ended.
pub async fn kill_sweep(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let d = sweep_detail(&st, &id).await?;
    let sweep = d.id;
    let live = st.db.call(move |c| db::sweep_live_jobs(c, sweep)).await?;
    for job in &live {
        st.runner
            .kill(*job, format!("killed with sweep {sweep}"))
            .await;
    }
    Ok(Json(json!({ "sweep": sweep, "killed": live })))
}

fn schedule_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("schedule id {raw:?} is not a number")))
}

/// `POST /api/schedules`.
pub async fn create_schedule(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let req: app::model::ScheduleRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not a schedule ({{name?, app, uid?, role_file, options?, schedule | cron (+ tz), concurrency?: skip|queue|replace, missed?: skip|run_once}}): {e}"
        ))
    })?;
    let v = crate::scheduler::create(&st, req).await?;
    let url = format!("/api/schedules/{}", v.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, url)], Json(v)).into_response())
}

pub async fn list_schedules(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let list = crate::scheduler::list(&st).await?;
    Ok(Json(json!({ "schedules": list })))
}

pub async fn get_schedule(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<app::model::ScheduleView>, ApiError> {
    Ok(Json(
        crate::scheduler::get(&st, schedule_id(&id)?, true).await?,
    ))
}

pub async fn pause_schedule(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<app::model::ScheduleView>, ApiError> {
    Ok(Json(
        crate::scheduler::set_paused(&st, schedule_id(&id)?, true).await?,
    ))
}

pub async fn resume_schedule(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<app::model::ScheduleView>, ApiError> {
    Ok(Json(
        crate::scheduler::set_paused(&st, schedule_id(&id)?, false).await?,
    ))
}

pub async fn delete_schedule(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    crate::scheduler::delete(&st, schedule_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
