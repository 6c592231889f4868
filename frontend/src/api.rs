//! Talking to the dispatcher's JSON API (same origin).

use app::model::ApiErrorBody;
use gloo_net::http::{Request, Response};
use serde::de::DeserializeOwned;

/// An API failure as the user should read it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub message: String,
    pub details: Vec<serde_json::Value>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn network(e: impl std::fmt::Display) -> ApiError {
    ApiError {
        message: format!("cannot reach the dispatcher: {e}"),
        details: vec![],
    }
}

async fn decode<T: DeserializeOwned>(r: Response) -> Result<T, ApiError> {
    if r.ok() {
        return r.json::<T>().await.map_err(|e| ApiError {
            message: format!("unexpected answer: {e}"),
            details: vec![],
        });
    }
    let status = r.status();
    let body = r.json::<ApiErrorBody>().await;
    if status == 401 {
        let reason = body
            .as_ref()
            .map(|b| b.error.clone())
            .unwrap_or_else(|_| "This needs the dispatcher's token.".into());
        // A wrong token at the sign-in itself is shown in the dialog, not reopened.
        if !r.url().ends_with("/api/session") {
            crate::auth::ask(&reason);
        }
    }
    match body {
        Ok(b) => Err(ApiError {
            message: b.error,
            details: b.details,
        }),
        Err(_) => Err(ApiError {
            message: format!("the dispatcher answered {status}"),
            details: vec![],
        }),
    }
}

pub async fn get<T: DeserializeOwned>(url: &str) -> Result<T, ApiError> {
    let r = Request::get(url)
        .header("Accept", "application/json")
        .send()
        .await
        .map_err(network)?;
    decode(r).await
}

pub async fn post_json<T: DeserializeOwned>(
    url: &str,
    body: &impl serde::Serialize,
) -> Result<T, ApiError> {
    let r = Request::post(url)
        .header("Accept", "application/json")
        .json(body)
        .map_err(network)?
        .send()
        .await
        .map_err(network)?;
    decode(r).await
}

pub async fn post_empty<T: DeserializeOwned>(url: &str) -> Result<T, ApiError> {
    let r = Request::post(url)
        .header("Accept", "application/json")
        .send()
        .await
        .map_err(network)?;
    decode(r).await
}

pub async fn delete(url: &str) -> Result<(), ApiError> {
    let r = Request::delete(url).send().await.map_err(network)?;
    if r.ok() {
        Ok(())
    } else {
        decode::<serde_json::Value>(r).await.map(|_| ())
    }
}

pub fn origin() -> String {
    web_sys::window()
        .and_then(|w| w.location().origin().ok())
        .unwrap_or_default()
}
