//! The HTTP surface: K3's routes ([`k3`]), the JSON API under `/api/`
//! ([`json`]), its server-sent events ([`sse`]) and live peer logs ([`logs`]). [`router`] builds it all
//! apart from serving, so tests bind it to a real socket on port 0.

pub mod json;
pub mod k3;
pub mod logs;
pub mod sse;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::service::AppState;

pub fn router(state: AppState) -> Router {
    let upload_limit =
        DefaultBodyLimit::max(state.settings.max_upload.saturating_add(1 << 20) as usize);

    // Routes that change something; the token, when set, guards them all
    // (K3's kill and replay are GETs, so they are here too).
    let mutating = Router::new()
        .route("/apps", post(k3::upload_app).layer(upload_limit))
        .route("/app", post(k3::upload_app).layer(upload_limit))
        .route("/delete/app/{name}", post(k3::delete_app))
        .route("/jobs/{app}", post(k3::submit_latest))
        .route("/jobs/{app}/{uid}", post(k3::submit_version))
        .route(
            "/jobs/{app}/{id}/kill",
            get(k3::kill_job).post(k3::kill_job),
        )
        .route(
            "/job/{id}/kill",
            get(k3::kill_job_by_id).post(k3::kill_job_by_id),
        )
        .route(
            "/jobs/{app}/{id}/replay",
            get(k3::replay_job).post(k3::replay_job),
        )
        .route(
            "/job/{id}/replay",
            get(k3::replay_job_by_id).post(k3::replay_job_by_id),
        )
        .route("/api/apps", post(json::upload_app).layer(upload_limit))
        .route("/api/apps/{name}", axum::routing::delete(json::delete_app))
        .route("/api/jobs", post(json::submit))
        .route("/api/jobs/{id}/kill", post(json::kill))
        .route("/api/jobs/{id}/replay", post(json::replay))
        .route("/api/framework/teardown", post(json::teardown))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));

    let reads = Router::new()
        .route("/", get(k3::index))
        .route("/index", get(k3::index))
        .route("/apps", get(k3::list_apps))
        .route("/app", get(k3::list_apps))
        .route("/apps/{name}", get(k3::get_app))
        .route("/app/{name}", get(k3::get_app))
        .route("/jobs", get(k3::list_jobs))
        .route("/job", get(k3::list_jobs))
        .route("/jobs/{app}", get(k3::app_jobs))
        .route("/jobs/{app}/{uid}", get(k3::app_jobs_version))
        .route("/job/{id}", get(k3::job_status_by_id))
        .route("/jobs/{app}/{id}/status", get(k3::job_status))
        .route("/job/{id}/archive", get(k3::archive_by_id))
        .route("/jobs/{app}/{id}/archive", get(k3::archive))
        .route("/api/health", get(json::health))
        .route("/api/apps", get(json::list_apps))
        .route("/api/apps/{name}", get(json::get_app))
        .route("/api/jobs", get(json::list_jobs))
        .route("/api/jobs/{id}", get(json::get_job))
        .route("/api/jobs/{id}/archive", get(json::archive))
        .route("/api/validate", post(json::validate))
        .route("/api/cluster", get(json::cluster))
        .route("/api/blobs/{sha256}", get(json::blob))
        .route("/api/events", get(sse::all_events))
        .route("/api/jobs/{id}/events", get(sse::job_events))
        .route("/api/jobs/{id}/peers/{peer}/logs", get(logs::peer_logs));

    mutating
        .merge(reads)
        .fallback(not_found)
        .layer(middleware::from_fn(crate::web::dashboard))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see the README's API section")
}

/// Checks `Authorization: Bearer <token>` when the server has a token.
async fn require_token(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = st.settings.token.as_deref() else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        next.run(req).await
    } else {
        let mut resp = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this route needs the dispatcher's token: send `Authorization: Bearer <token>`",
        )
        .into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        resp
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses a job id from a path segment (K3 allowed `12.tar`-like suffixes).
pub fn job_id(raw: &str) -> Result<u64, ApiError> {
    raw.split('.')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::bad_request(format!("job id {raw:?} is not a number")))
}
