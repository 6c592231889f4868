//! The dashboard, served from the binary: embedded `dist/` files (brotli or
//! gzip when the browser takes it), and the single-page app's `index.html` for any
//! browser navigation (a GET that prefers HTML) to a page route. API routes,
//! archives and non-browser clients (curl's `*/*`, K3's
//! `Accept: application/json`) are untouched, as K3 answered HTML to browsers
//! and JSON to its API clients on the same paths.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// A dashboard file: its path, then its bytes as built, gzip and brotli.
type Asset = (&'static str, &'static [u8], &'static [u8], &'static [u8]);

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

const NOT_BUILT: &str = "<!doctype html><meta charset=utf-8><title>Dispatcher</title>\
<h1>Dispatcher</h1><p>This binary was built without the dashboard. Build it with \
<code>./dev run</code> (or <code>trunk build --release --offline</code>, then rebuild the server). \
The API is at <a href=/api/health>/api/</a>.</p>";

fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.0 == path)
}

/// Whether `Accept-Encoding` takes this coding (`q=0` refuses it).
fn accepts(req: &Request, coding: &str) -> bool {
    let Some(v) = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    v.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (name.eq_ignore_ascii_case(coding) || name == "*") && !refused
    })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn serve(req: &Request, entry: &'static Asset) -> Response {
    let (path, raw, gz, br) = entry;
    let (body, coding) = if accepts(req, "br") {
        (*br, Some("br"))
    } else if accepts(req, "gzip") {
        (*gz, Some("gzip"))
    } else {
        (*raw, None)
    };
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(coding) = coding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
    }
    // Every path but index.html carries a content hash: Trunk's in the
    // names, frontend/split.sh's in the chunks' directory.
    let cache = if *path == "/index.html" {
        "no-cache"
    } else {
        "public, max-age=31536000, immutable"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

fn wants_html(req: &Request) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// Serves assets and page navigations before the API router sees them.
pub async fn dashboard(req: Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    if path != "/index.html" {
        if let Some(entry) = asset(&path) {
            return serve(&req, entry);
        }
    }
    let page = !path.starts_with("/api/") && !path.ends_with("/archive") && !path.contains('.');
    if page && wants_html(&req) {
        return match asset("/index.html") {
            Some(entry) => serve(&req, entry),
            None => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                NOT_BUILT,
            )
                .into_response(),
        };
    }
    next.run(req).await
}
