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

impl Internal {
    /// True when the fault is a full disk (or quota): the client can be told,
    /// since the remedy is theirs or the operator's, and nothing was stored.
    /// The checks read the OS error code Rust appends, and SQLite's own
    /// fixed message, so they hold however the error was wrapped.
    pub fn is_storage_full(&self) -> bool {
        let m = &self.0;
        m.contains("(os error 28)")
            || m.contains("(os error 122)")
            || m.contains("database or disk is full")
    }
}

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

    /// 503 with `Retry-After`: a load limit, not a fault.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// The same error, its message led by `what` it is about.
    pub fn context(self, what: &str) -> Self {
        match self {
            ApiError::Client {
                status,
                message,
                details,
            } => ApiError::Client {
                status,
                message: format!("{what}: {message}"),
                details,
            },
            other => other,
        }
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
            } => {
                let mut resp = (
                    status,
                    Json(app::model::ApiErrorBody {
                        error: message,
                        details,
                    }),
                )
                    .into_response();
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    resp.headers_mut().insert(
                        axum::http::header::RETRY_AFTER,
                        axum::http::HeaderValue::from_static("5"),
                    );
                }
                resp
            }
            ApiError::Internal(e) if e.is_storage_full() => {
                tracing::error!(error = %e, "the data directory's filesystem is full");
                let body = app::model::ApiErrorBody {
                    error: "the dispatcher's data directory is full: nothing was stored; free space there (old archives, apps) and try again".into(),
                    details: vec![],
                };
                (StatusCode::INSUFFICIENT_STORAGE, Json(body)).into_response()
            }
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
