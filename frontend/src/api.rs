//! Talking to the dispatcher's JSON API (same origin).

use std::cell::RefCell;

use app::model::ApiErrorBody;
use gloo_net::http::{Request, Response};
use serde::de::DeserializeOwned;
use wasm_bindgen::JsCast;

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

thread_local! {
    /// A GET started by [`prefetch`], waiting for its page's `get`.
    static EARLY: RefCell<Option<(String, js_sys::Promise)>> = const { RefCell::new(None) };
}

/// Starts a GET of `url` now, for the next [`get`] of the same URL to take
/// over: a lazily loaded page's data then travels alongside its code
/// instead of after it. Each navigation's prefetch replaces the last.
pub fn prefetch(url: &str) {
    let Some(window) = web_sys::window() else {
        return;
    };
    let init = web_sys::RequestInit::new();
    let headers = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&headers, &"Accept".into(), &"application/json".into());
    init.set_headers(&headers);
    let promise = window.fetch_with_str_and_init(url, &init);
    EARLY.with(|e| *e.borrow_mut() = Some((url.to_string(), promise)));
}

pub async fn get<T: DeserializeOwned>(url: &str) -> Result<T, ApiError> {
    let early = EARLY.with(|e| {
        let mut e = e.borrow_mut();
        match &*e {
            Some((u, _)) if u == url => e.take().map(|(_, p)| p),
            _ => None,
        }
    });
    let r = match early {
        Some(p) => match wasm_bindgen_futures::JsFuture::from(p).await {
            Ok(v) => Response::from(v.unchecked_into::<web_sys::Response>()),
            Err(e) => {
                return Err(network(
                    e.as_string()
                        .or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| e.message().into()))
                        .unwrap_or_else(|| "the request failed".into()),
                ))
            }
        },
        None => Request::get(url)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(network)?,
    };
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
