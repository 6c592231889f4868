//! The OpenAPI 3.1 description of the whole HTTP API, served at
//! `GET /api/openapi.json`.
//!
//! It is built from the same list that builds the router (the `routes!`
//! macro in `api/mod.rs` registers a handler and its [`Op`] together), so a
//! route cannot exist undescribed, and a described route cannot be missing.
//! What each operation takes and answers is written next to its route; the
//! Schemathesis run in the test suite checks real answers against it.

use std::sync::{Arc, OnceLock};

use axum::Json;
use serde_json::{json, Map, Value};

/// Who may call an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Needs the write token when one is set.
    Write,
    /// Needs the read token when one is set.
    Read,
    Open,
}

/// A request body.
#[derive(Clone, Copy, Debug)]
pub enum Body {
    None,
    /// JSON of a schema in `components`.
    JsonBody(&'static str),
    /// A multipart form with these fields; `file` is binary.
    Form(&'static [&'static str]),
    /// A role file as text, or JSON `{role_file}`.
    RoleFile,
}

/// A success answer.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// JSON of a schema in `components`.
    Reply(u16, &'static str),
    /// A stream of server-sent events.
    Events,
    /// Bytes of this media type.
    Bytes(&'static str),
    /// No body: 204.
    Empty,
}

/// One operation: a method on a path.
#[derive(Clone, Debug)]
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    pub tag: &'static str,
    pub body: Body,
    pub answer: Answer,
    /// Query parameters: name, JSON type, description.
    pub query: &'static [(&'static str, &'static str, &'static str)],
}

/// Starts an [`Op`]; the macro fills in method, path and access.
pub fn op(tag: &'static str, summary: &'static str, answer: Answer) -> Op {
    Op {
        method: "",
        path: "",
        access: Access::Open,
        summary,
        tag,
        body: Body::None,
        answer,
        query: &[],
    }
}

impl Op {
    pub fn body(mut self, body: Body) -> Op {
        self.body = body;
        self
    }

    pub fn query(mut self, q: &'static [(&'static str, &'static str, &'static str)]) -> Op {
        self.query = q;
        self
    }
}

static DOC: OnceLock<Arc<Value>> = OnceLock::new();

/// Records the operations the router was built with.
pub fn publish(ops: &[Op]) {
    let _ = DOC.set(Arc::new(document(ops)));
}

pub async fn serve() -> Json<Value> {
    Json(
        DOC.get()
            .map(|d| (**d).clone())
            .unwrap_or_else(|| json!({})),
    )
}

fn error_responses(op: &Op) -> Map<String, Value> {
    let mut m = Map::new();
    let err = |desc: &str| json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    m.insert(
        "4XX".into(),
        err("A mistake in the request: the message says what and where"),
    );
    if op.access != Access::Open {
        m.insert(
            "401".into(),
            err("A token is needed (see `--token`, `--read-token`)"),
        );
    }
    m.insert("5XX".into(), err("503 with Retry-After for a load limit, 507 when the data directory is full, 500 for an internal fault"));
    m
}

fn success(op: &Op) -> (String, Value) {
    match op.answer {
        Answer::Reply(status, schema) => (
            status.to_string(),
            json!({"description": op.summary, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}),
        ),
        Answer::Events => (
            "200".into(),
            json!({"description": "server-sent events (`text/event-stream`); each event's id resumes the stream with Last-Event-ID", "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/SseEvent"}}}}),
        ),
        Answer::Empty => ("204".into(), json!({"description": op.summary})),
        Answer::Bytes(media) => (
            "200".into(),
            json!({"description": op.summary, "content": {media: {"schema": {"type": "string", "format": "binary"}}}}),
        ),
    }
}

fn parameters(op: &Op) -> Vec<Value> {
    let mut ps = Vec::new();
    for seg in op.path.split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let schema = match name {
                "peer" => json!({"type": "integer", "minimum": 0, "maximum": 4294967295u64}),
                // K3 wrote ids with a suffix too: `12.tar`.
                "id" => json!({"type": "string", "pattern": "^[0-9]{1,18}(\\.[A-Za-z0-9.]*)?$"}),
                "sha256" => json!({"type": "string", "pattern": "^[0-9a-f]{64}$"}),
                _ => json!({"$ref": "#/components/schemas/Name"}),
            };
            ps.push(json!({"name": name, "in": "path", "required": true, "schema": schema}));
        }
    }
    for (name, ty, desc) in op.query {
        let schema = match *ty {
            "integer" if *name == "limit" => {
                json!({"type": "integer", "minimum": 1, "maximum": 1000})
            }
            "integer" => json!({"type": "integer", "minimum": 0}),
            _ if *name == "state" => {
                json!({"enum": ["", "SUBMITTED", "WAITING", "RUNNING", "FINISHED", "FAILED", "KILLED"], "description": "empty: any state"})
            }
            other => json!({"type": other}),
        };
        ps.push(
            json!({"name": name, "in": "query", "required": false, "description": desc, "schema": schema}),
        );
    }
    if matches!(op.answer, Answer::Events) {
        ps.push(json!({"name": "Last-Event-ID", "in": "header", "required": false, "description": "resume after this event id (or byte offset, for logs)", "schema": {"type": "string"}}));
    }
    ps
}

fn request_body(op: &Op) -> Option<Value> {
    match op.body {
        Body::None => None,
        Body::JsonBody(schema) => Some(
            json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}),
        ),
        Body::Form(fields) => {
            let mut props = Map::new();
            for f in fields {
                let schema = if *f == "file" {
                    json!({"type": "string", "format": "binary"})
                } else {
                    json!({"type": "string"})
                };
                props.insert((*f).into(), schema);
            }
            Some(
                json!({"required": true, "content": {"multipart/form-data": {"schema": {"type": "object", "properties": props}}}}),
            )
        }
        Body::RoleFile => Some(json!({"required": true, "content": {
            "text/plain": {"schema": {"type": "string", "minLength": 1}},
            "application/json": {"schema": {"type": "object", "required": ["role_file"], "properties": {"role_file": {"type": "string", "minLength": 1}}}}
        }})),
    }
}

/// The document for these operations.
pub fn document(ops: &[Op]) -> Value {
    let mut paths = Map::new();
    for op in ops {
        let mut o = Map::new();
        o.insert("summary".into(), json!(op.summary));
        o.insert("tags".into(), json!([op.tag]));
        o.insert(
            "operationId".into(),
            json!(format!(
                "{}{}",
                op.method,
                op.path
                    .replace(['{', '}'], "")
                    .replace('/', "_")
                    .trim_end_matches('_')
            )),
        );
        let ps = parameters(op);
        if !ps.is_empty() {
            o.insert("parameters".into(), Value::Array(ps));
        }
        if let Some(b) = request_body(op) {
            o.insert("requestBody".into(), b);
        }
        let mut responses = error_responses(op);
        let (status, ok) = success(op);
        // An upload of bytes already stored answers 200 with the old version.
        if matches!(op.answer, Answer::Reply(201, "Uploaded")) {
            responses.insert("200".into(), ok.clone());
        }
        responses.insert(status, ok);
        o.insert("responses".into(), Value::Object(responses));
        o.insert(
            "security".into(),
            match op.access {
                Access::Open => json!([]),
                _ => json!([{}, {"bearer": []}, {"session": []}]),
            },
        );
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        entry[op.method] = Value::Object(o);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Dispatcher",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Run distributed, multi-peer programs on this machine or on Apache Mesos. \
    The JSON API lives under /api/; the K3 Dispatcher's routes keep their paths and answers. \
    Every error is JSON {error, details}. With --token, changes need `Authorization: Bearer <token>`; \
    with --read-token, reads do too. The dashboard signs in with POST /api/session and a cookie."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": crate::access::COOKIE}
            },
            "schemas": schemas()
        }
    })
}

fn obj(required: &[&str], props: Value) -> Value {
    json!({"type": "object", "required": required, "properties": props})
}

fn schemas() -> Value {
    let diag = obj(
        &["severity", "line", "column", "path", "message"],
        json!({
            "severity": {"enum": ["error", "warning"]},
            "line": {"type": "integer"}, "column": {"type": "integer"},
            "path": {"type": "string"}, "message": {"type": "string"}
        }),
    );
    json!({
        "Error": obj(&["error", "details"], json!({
            "error": {"type": "string", "description": "what went wrong, and where"},
            "details": {"type": "array", "description": "for role files: diagnostics with line and column"}
        })),
        "Diagnostic": diag,
        "SseEvent": {"type": "object", "description": "one server-sent event", "required": ["data"], "properties": {
            "event": {"enum": ["job", "peer", "archive", "log", "end", "gap", "usage"]},
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "data": {"type": "string", "description": "jobs: an event as JSON; logs: the bytes as text"}
        }},
        "Name": {"type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$",
            "description": "letters, digits, '.', '_' and '-'; at most 128, not starting with '.'"},
        "Usage": {"type": "array", "items": obj(&["peer", "time", "cpu", "rss_bytes"], json!({
            "peer": {"type": "integer", "minimum": 0},
            "time": {"type": "string", "format": "date-time"},
            "cpu": {"type": "number", "minimum": 0, "description": "cores used since the previous sample"},
            "rss_bytes": {"type": "integer", "minimum": 0}
        }))},
        "Health": obj(&["status", "backend", "version"], json!({
            "status": {"const": "ok"}, "backend": {"enum": ["local", "mesos"]}, "version": {"type": "string"}
        })),
        "Session": obj(&["access", "write_token", "read_token"], json!({
            "access": {"enum": ["none", "read", "write"]},
            "write_token": {"type": "boolean"}, "read_token": {"type": "boolean"}
        })),
        "SignIn": obj(&["token"], json!({"token": {"type": "string"}})),
        "AppVersion": obj(&["app", "uid", "sha256", "size", "tag", "uploaded"], json!({
            "app": {"type": "string"}, "uid": {"type": "string"},
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "size": {"type": "integer"},
            "tag": {"type": "string"}, "uploaded": {"type": "string"}
        })),
        "Uploaded": obj(&["version", "created"], json!({
            "version": {"$ref": "#/components/schemas/AppVersion"}, "created": {"type": "boolean"}
        })),
        "AppList": obj(&["apps"], json!({"apps": {"type": "array"}})),
        "AppDetail": obj(&["name", "versions"], json!({
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"$ref": "#/components/schemas/AppVersion"}}
        })),
        "JobPage": obj(&["jobs", "total", "events_seq"], json!({"jobs": {"type": "array"}, "total": {"type": "integer"}, "next_before": {"type": ["integer", "null"]}, "events_seq": {"type": "integer"}})),
        "JobDetail": obj(&["id", "state", "role_file", "peers"], json!({
            "id": {"type": "integer"}, "state": {"type": "string"},
            "role_file": {"type": "string"}, "peers": {"type": "array"}
        })),
        "JobRequest": obj(&["app", "role_file"], json!({
            "app": {"$ref": "#/components/schemas/Name"},
            "uid": {"anyOf": [{"$ref": "#/components/schemas/Name"}, {"type": "null"}]},
            "role_file": {"type": "string", "minLength": 1}, "options": {"$ref": "#/components/schemas/JobOptions"}
        })),
        "JobOptions": {"type": "object", "properties": {
            "user": {"type": "string"}, "tag": {"type": "string"},
            "cmd_prefix": {"type": "string"}, "cmd_infix": {"type": "string"}, "cmd_suffix": {"type": "string"},
            "logging": {"type": "boolean"}, "jsonlog": {"type": "boolean"}, "jsonfinal": {"type": "boolean"},
            "time_limit": {"type": ["integer", "null"], "minimum": 1},
            "retries": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
            "retry_on": {"anyOf": [{"type": "null"}, {"enum": ["failed", "lost", "failed,lost", "lost,failed", "both"]}]}
        }},
        "ScheduleRequest": obj(&["app", "role_file"], json!({
            "name": {"type": "string", "maxLength": 200},
            "app": {"$ref": "#/components/schemas/Name"},
            "uid": {"anyOf": [{"$ref": "#/components/schemas/Name"}, {"type": "null"}]},
            "role_file": {"type": "string", "minLength": 1},
            "options": {"$ref": "#/components/schemas/JobOptions"},
            "schedule": {"type": ["string", "null"]},
            "cron": {"type": ["string", "null"]},
            "tz": {"type": ["string", "null"]},
            "concurrency": {"enum": ["skip", "queue", "replace"]},
            "missed": {"enum": ["skip", "run_once"]}
        })),
        "Schedule": obj(&["id", "app", "next_runs", "paused", "runs"], json!({
            "id": {"type": "integer"}, "app": {"type": "string"},
            "next_runs": {"type": "array", "items": {"type": "string"}},
            "paused": {"type": "boolean"}, "runs": {"type": "integer"},
            "jobs": {"type": "array"}
        })),
        "ScheduleList": obj(&["schedules"], json!({"schedules": {"type": "array"}})),
        "SweepRequest": obj(&["app", "role_file", "parameters"], json!({
            "app": {"$ref": "#/components/schemas/Name"},
            "uid": {"anyOf": [{"$ref": "#/components/schemas/Name"}, {"type": "null"}]},
            "role_file": {"type": "string", "minLength": 1},
            "parameters": {"type": "object", "additionalProperties": {"type": "array", "minItems": 1}},
            "repeat": {"type": ["integer", "null"], "minimum": 1, "maximum": 100},
            "options": {"$ref": "#/components/schemas/JobOptions"}
        })),
        "SweepSubmitted": obj(&["id", "jobs"], json!({"id": {"type": "integer"}, "jobs": {"type": "array", "items": {"type": "integer"}}})),
        "SweepList": obj(&["sweeps"], json!({"sweeps": {"type": "array"}})),
        "SweepDetail": obj(&["id", "points", "parameters"], json!({
            "id": {"type": "integer"}, "parameters": {"type": "object"},
            "points": {"type": "array", "items": obj(&["values", "jobs"], json!({
                "values": {"type": "object"}, "jobs": {"type": "array"},
                "median_s": {"type": ["number", "null"]}, "min_s": {"type": ["number", "null"]}, "max_s": {"type": ["number", "null"]}
            }))}
        })),
        "SweepKilled": obj(&["sweep", "killed"], json!({"sweep": {"type": "integer"}, "killed": {"type": "array"}})),
        "Submitted": obj(&["id", "state"], json!({"id": {"type": "integer"}, "state": {"const": "SUBMITTED"}})),
        "Killed": obj(&["job"], json!({"job": {"type": "object"}})),
        "Validation": obj(&["ok", "peers", "roles", "diagnostics"], json!({
            "ok": {"type": "boolean"}, "peers": {"type": "integer"},
            "roles": {"type": "array", "items": {"type": "string"}},
            "diagnostics": {"type": "array", "items": {"$ref": "#/components/schemas/Diagnostic"}}
        })),
        "Cluster": {"type": "object"},
        "TornDown": obj(&["torn_down"], json!({"torn_down": {"type": "string"}})),
        "K3": {"type": ["object", "array"], "description": "the K3 Dispatcher's JSON answer, unchanged"}
    })
}
