//! The K3 Dispatcher's routes, answering as K3 did (JSON for
//! `Accept: application/json`, which is what its README's curl commands send;
//! this server answers JSON either way).

use axum::body::Body;
use axum::extract::{Multipart, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use app::model::{JobOptions, JobSummary};

use super::job_id;
use crate::db::{self, JobFilter};
use crate::error::ApiError;
use crate::service::{self, AppState, Form};

pub async fn index() -> Json<Value> {
    Json(json!({
        "name": "dispatcher",
        "version": env!("CARGO_PKG_VERSION"),
        "message": "Welcome to Dispatcher",
        "api": "/api/",
    }))
}

/// A job in K3's shape (`jobId`, `appName`, `hash`, `status`, `time`) with ours beside it.
pub fn k3_job(j: &JobSummary) -> Value {
    let mut v = serde_json::to_value(j).unwrap_or_default();
    if let Value::Object(m) = &mut v {
        m.insert("jobId".into(), json!(j.id));
        m.insert("appName".into(), json!(j.app));
        m.insert("hash".into(), json!(j.uid));
        m.insert("status".into(), json!(j.state));
        m.insert("time".into(), json!(j.submitted));
        m.insert("complete".into(), json!(j.ended));
    }
    v
}

pub async fn upload_app(
    State(st): State<AppState>,
    mp: Multipart,
) -> Result<Json<Value>, ApiError> {
    let (v, created) = service::upload(&st, mp).await?;
    Ok(Json(
        json!({ "name": v.app, "uid": v.uid, "status": "SUCCESS", "sha256": v.sha256, "size": v.size, "tag": v.tag, "created": created }),
    ))
}

pub async fn list_apps(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let apps = st.db.call(|c| db::apps(c)).await?;
    let list: Vec<Value> = apps
        .iter()
        .map(|a| json!({ "name": a.name, "uid": a.latest.uid, "hash": a.latest.tag, "sha256": a.latest.sha256, "size": a.latest.size, "date": a.latest.uploaded, "versions": a.versions }))
        .collect();
    Ok(Json(json!({ "apps": list })))
}

pub async fn get_app(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let versions = service::versions(&st, &name).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!(
            "Application {name} does not exist"
        )));
    }
    Ok(Json(json!({ "name": name, "versions": versions })))
}

pub async fn delete_app(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let removed = crate::service::delete_app(&st, &name).await?;
    if removed == 0 {
        return Err(ApiError::not_found(format!(
            "Application {name} does not exist"
        )));
    }
    Ok(Json(
        json!({ "app": name, "status": "DELETED", "versions": removed }),
    ))
}

pub async fn list_jobs(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let page = st
        .db
        .call(|c| {
            db::jobs(
                c,
                &JobFilter {
                    app: None,
                    state: None,
                    before: None,
                    limit: 1000,
                    offset: 0,
                },
            )
        })
        .await?;
    Ok(Json(
        json!({ "LaunchJobs": page.jobs.iter().map(k3_job).collect::<Vec<_>>(), "CompilingJobs": [] }),
    ))
}

pub async fn app_jobs(
    State(st): State<AppState>,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app_jobs_inner(st, app).await
}

pub async fn app_jobs_version(
    State(st): State<AppState>,
    Path((app, _uid)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    app_jobs_inner(st, app).await
}

async fn app_jobs_inner(st: AppState, app: String) -> Result<Json<Value>, ApiError> {
    let a = app.clone();
    let exists = st
        .db
        .call(move |c| db::latest_version(c, &a))
        .await?
        .is_some();
    if !exists {
        return Err(ApiError::not_found(format!(
            "There is no application, {app}"
        )));
    }
    let page = st
        .db
        .call(move |c| {
            db::jobs(
                c,
                &JobFilter {
                    app: Some(app),
                    state: None,
                    before: None,
                    limit: 1000,
                    offset: 0,
                },
            )
        })
        .await?;
    Ok(Json(
        json!({ "jobs": page.jobs.iter().map(k3_job).collect::<Vec<_>>() }),
    ))
}

fn options_from(form: &Form) -> Result<JobOptions, ApiError> {
    let time_limit = match form.field("time_limit") {
        None => None,
        Some(t) => Some(
            app::role::TimeLimit::parse(t)
                .map_err(|e| ApiError::bad_request(format!("time_limit {t:?}: {e}")))?
                .secs(),
        ),
    };
    let retries = match form.field("retries") {
        None => None,
        Some(r) => Some(
            r.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= app::role::MAX_RETRIES)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "retries {r:?}: expected a whole number from 0 to {}",
                        app::role::MAX_RETRIES
                    ))
                })?,
        ),
    };
    let retry_on = match form.field("retry_on") {
        None => None,
        Some(r) => Some(
            app::model::RetryOn::parse(r)
                .map_err(|e| ApiError::bad_request(format!("retry_on {r:?}: {e}")))?,
        ),
    };
    Ok(JobOptions {
        user: form.field("user").unwrap_or("anonymous").to_string(),
        tag: form.field("tag").unwrap_or_default().to_string(),
        cmd_prefix: form.field("cmd_prefix").unwrap_or_default().to_string(),
        cmd_infix: form.field("cmd_infix").unwrap_or_default().to_string(),
        cmd_suffix: form.field("cmd_suffix").unwrap_or_default().to_string(),
        logging: form.flag("logging"),
        // K3: jsonfinal implies jsonlog.
        jsonlog: form.flag("jsonlog") || form.flag("jsonfinal"),
        jsonfinal: form.flag("jsonfinal"),
        time_limit,
        retries,
        retry_on,
    })
}

pub async fn submit_latest(
    State(st): State<AppState>,
    Path(app): Path<String>,
    mp: Multipart,
) -> Result<Response, ApiError> {
    submit_form(st, app, None, mp).await
}

pub async fn submit_version(
    State(st): State<AppState>,
    Path((app, uid)): Path<(String, String)>,
    mp: Multipart,
) -> Result<Response, ApiError> {
    submit_form(st, app, Some(uid), mp).await
}

async fn submit_form(
    st: AppState,
    app: String,
    uid: Option<String>,
    mp: Multipart,
) -> Result<Response, ApiError> {
    let form = service::read_form(
        &st.blobs,
        mp,
        false,
        st.settings.max_upload,
        &st.settings.limits,
    )
    .await?;
    let text = match (&form.bytes, form.fields.get("text")) {
        (Some(b), _) if !b.is_empty() => String::from_utf8(b.clone())
            .map_err(|_| ApiError::bad_request("the role file is not UTF-8 text"))?,
        (_, Some(t)) if !t.trim().is_empty() => t.clone(),
        _ => {
            return Err(ApiError::bad_request(
                "no role file: send it as `-F file=@role.yaml` or `-F text=...`",
            ))
        }
    };
    let options = options_from(&form)?;
    let s = service::submit(&st, &app, uid.as_deref(), text, options, None).await?;
    Ok(submitted_response(&app, s))
}

pub fn submitted_response(app: &str, s: service::Submitted) -> Response {
    let body = json!({
        "jobId": s.id,
        "time": s.time,
        "status": "SUBMITTED",
        "url": format!("/api/jobs/{}", s.id),
        "events": format!("/api/jobs/{}/events", s.id),
        "archive": format!("/jobs/{}/{}/archive", app, s.id),
        "warnings": s.warnings,
    });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// A job id from a K3 path that names its app too: the job must be that
/// app's, or it is not found (K3's `/jobs/<app>/<id>/...`).
async fn job_of_app(st: &AppState, app: &str, id: &str) -> Result<u64, ApiError> {
    let id = job_id(id)?;
    let owner = st
        .db
        .call(move |c| db::sha_of_job(c, id))
        .await?
        .map(|(a, _, _)| a);
    match owner {
        Some(a) if a == app => Ok(id),
        Some(_) => Err(ApiError::not_found(format!(
            "job {id} is not a job of app {app:?}"
        ))),
        None => Err(ApiError::not_found(format!("Job ID, {id}, does not exist"))),
    }
}

async fn status_json(st: &AppState, id: u64) -> Result<Json<Value>, ApiError> {
    let job = st
        .db
        .call(move |c| db::job(c, id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Job ID, {id}, does not exist")))?;
    let mut v = k3_job(&job.job);
    if let Value::Object(m) = &mut v {
        m.insert("roles".into(), json!(job.role_file));
        m.insert("url".into(), json!(format!("/api/jobs/{id}")));
        m.insert("peers".into(), json!(job.peers));
        m.insert(
            "master".into(),
            json!(job.peers.first().map(|p| format!("{}:{}", p.host, p.port))),
        );
        let dir = st.settings.jobs_dir.join(id.to_string());
        let mut sandbox: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        sandbox.sort();
        m.insert("sandbox".into(), json!(sandbox));
    }
    Ok(Json(v))
}

pub async fn job_status(
    State(st): State<AppState>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    status_json(&st, job_of_app(&st, &app, &id).await?).await
}

pub async fn job_status_by_id(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    status_json(&st, job_id(&id)?).await
}

async fn kill_json(st: &AppState, id: u64) -> Result<Json<Value>, ApiError> {
    let j = service::kill(st, id).await?;
    Ok(Json(
        json!({ "jobId": id, "status": j.state, "message": if j.state.is_terminal() { "the job has ended" } else { "the job is being killed" } }),
    ))
}

pub async fn kill_job(
    State(st): State<AppState>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    kill_json(&st, job_of_app(&st, &app, &id).await?).await
}

pub async fn kill_job_by_id(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    kill_json(&st, job_id(&id)?).await
}

async fn replay_json(st: &AppState, id: u64) -> Result<Response, ApiError> {
    let app = st
        .db
        .call(move |c| db::sha_of_job(c, id))
        .await?
        .map(|(a, _, _)| a)
        .ok_or_else(|| ApiError::not_found(format!("There is no Job, {id}")))?;
    let s = service::replay(st, id).await?;
    Ok(submitted_response(&app, s))
}

pub async fn replay_job(
    State(st): State<AppState>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    replay_json(&st, job_of_app(&st, &app, &id).await?).await
}

pub async fn replay_job_by_id(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    replay_json(&st, job_id(&id)?).await
}

/// Streams a job's archive once it exists.
pub async fn send_archive(st: &AppState, id: u64) -> Result<Response, ApiError> {
    let job = st
        .db
        .call(move |c| db::job(c, id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Job ID, {id}, does not exist")))?;
    if job.job.archive_size.is_none() {
        let msg = if job.job.state.is_terminal() {
            "the archive is being built; try again in a moment"
        } else {
            "the job has not ended yet; its archive is made when it ends"
        };
        return Err(ApiError::conflict(msg));
    }
    let path = st
        .settings
        .jobs_dir
        .join(id.to_string())
        .join(crate::archive::ARCHIVE_FILE);
    let file = tokio::fs::File::open(&path).await?;
    let len = file.metadata().await?.len();
    let body = Body::from_stream(tokio_util_stream(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"job-{id}.tar.gz\""),
            ),
        ],
        body,
    )
        .into_response())
}

pub fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}

pub async fn archive(
    State(st): State<AppState>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    send_archive(&st, job_of_app(&st, &app, &id).await?).await
}

pub async fn archive_by_id(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    send_archive(&st, job_id(&id)?).await
}
