//! Errors: [`ApiError`] is what a client sees (a status and a JSON body
//! `{error, details[]}`); [`Internal`] is a fault of ours, logged in full and
//! shown to the client only as a generic 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

/// An internal fault with its detail, never sent to clients.
#[derive(Debug)]
pub struct Internal(pub String);

impl std::fmt::Display for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Internal {}

macro_rules! internal_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Internal {
            fn from(e: $t) -> Self { Internal(e.to_string()) }
        }
    )*};
}
internal_from!(
    rusqlite::Error,
    std::io::Error,
    serde_json::Error,
    String,
    &str
);

#[derive(Debug)]
pub enum ApiError {
    /// A client mistake: status, message and optional structured details.
    Client {
        status: StatusCode,
        message: String,
        details: Vec<Value>,
    },
    Internal(Internal),
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError::Client {
            status,
            message: message.into(),
            details: vec![],
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn with_details(self, details: Vec<Value>) -> Self {
        match self {
            ApiError::Client {
                status, message, ..
            } => ApiError::Client {
                status,
                message,
                details,
            },
            other => other,
        }
    }
}

impl<E: Into<Internal>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Client {
                status,
                message,
                details,
            } => (
                status,
                Json(app::model::ApiErrorBody {
                    error: message,
                    details,
                }),
            )
                .into_response(),
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                let body = app::model::ApiErrorBody {
                    error: "internal server error (the details are in the server log)".into(),
                    details: vec![],
                };
                (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
            }
        }
    }
}
