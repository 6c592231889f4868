//! The dashboard's sign-in: `POST /api/session {"token"}` checks a token and
//! sets an HttpOnly, SameSite=Strict session cookie (for the browser session
//! only), so that fetches, uploads with progress, event streams and archive
//! links all carry it without the page ever holding the token. curl and
//! scripts keep using `Authorization: Bearer`.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::access::{self, Grant};
use crate::error::ApiError;
use crate::service::AppState;

fn describe(st: &AppState, grant: Grant) -> serde_json::Value {
    let a = &st.settings.access;
    json!({
        "access": grant,
        "write_token": a.write.is_some() || a.read.is_some(),
        "read_token": a.read.is_some(),
    })
}

/// What this browser (or this request's token) may do, and which tokens the
/// dispatcher asks for.
pub async fn show(State(st): State<AppState>, headers: HeaderMap) -> Json<serde_json::Value> {
    Json(describe(&st, st.settings.access.grant(&headers)))
}

#[derive(Deserialize)]
pub struct SignIn {
    token: String,
}

pub async fn sign_in(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if let Some(why) = st.settings.access.cross_site(&headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("signing in from another site's page is refused ({why})"),
        ));
    }
    super::json::require_json(&headers)?;
    let req: SignIn = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"token\": \"...\"}}: {e}")))?;
    let a = &st.settings.access;
    let Some(secret) = a.secret_for(&req.token) else {
        tracing::info!("a sign-in with a wrong token");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "that token is not this dispatcher's token",
        ));
    };
    let grant = a.grant_for_token(&req.token);
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict",
        access::COOKIE,
        secret.cookie_value()
    );
    Ok(([(header::SET_COOKIE, cookie)], Json(describe(&st, grant))).into_response())
}

pub async fn sign_out(State(st): State<AppState>) -> Response {
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        access::COOKIE
    );
    let open = st.settings.access.grant(&HeaderMap::new());
    ([(header::SET_COOKIE, cookie)], Json(describe(&st, open))).into_response()
}
