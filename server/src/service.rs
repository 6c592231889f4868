//! What the HTTP routes do, shared by the K3-compatible routes and the JSON
//! API: store an uploaded app version, submit, kill and replay jobs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use app::model::{AppVersion, JobOptions};
use app::placement::{place, Offer};
use app::{Diagnostic, RoleFile};
use axum::extract::multipart::{Field, Multipart};
use axum::http::StatusCode;

use crate::blobs::{Blob, BlobStore, WriteError};
use crate::db::{self, Db, NewJob};
use crate::error::ApiError;
use crate::events::Bus;
use crate::queue::JobMeta;
use crate::runner::RunnerHandle;

/// Everything a request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub bus: Bus,
    pub blobs: BlobStore,
    pub runner: RunnerHandle,
    pub settings: Arc<Settings>,
    pub retention: Arc<crate::retention::Retention>,
    /// Becomes true when the server shuts down; live streams end then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

pub struct Settings {
    pub jobs_dir: PathBuf,
    pub access: crate::access::Access,
    pub limits: Limits,
    pub max_upload: u64,
    /// The machine as one offer with nothing running: a job that does not fit
    /// this can never run here and is refused at submission.
    pub total_offer: Option<Offer>,
    pub backend: &'static str,
    /// Mesos: the agents' files API (sandboxes of live and finished peers).
    pub files: Option<crate::mesos::files::Files>,
    /// How often running peers' usage is sampled (none: not at all).
    pub usage_every: Option<Duration>,
}

/// What one request may ask for; each is a flag (see `Config`) and each
/// refusal names it.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_role_file: usize,
    pub max_peers_per_job: u32,
    pub max_roles: usize,
    /// Uploads received at once.
    pub uploads: Arc<tokio::sync::Semaphore>,
    pub max_uploads: usize,
    /// Event and log streams open at once.
    pub streams: Arc<tokio::sync::Semaphore>,
    pub max_streams: usize,
}

impl Limits {
    pub fn new(
        max_role_file: usize,
        max_peers_per_job: u32,
        max_roles: usize,
        max_uploads: usize,
        max_streams: usize,
    ) -> Limits {
        Limits {
            max_role_file,
            max_peers_per_job,
            max_roles,
            uploads: Arc::new(tokio::sync::Semaphore::new(max_uploads)),
            max_uploads,
            streams: Arc::new(tokio::sync::Semaphore::new(max_streams)),
            max_streams,
        }
    }

    /// The role-file size refusal, naming the flag.
    pub fn role_file_too_large(&self) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the role file is larger than the limit of {} KiB (--max-role-file-kb)",
                self.max_role_file >> 10
            ),
        )
    }

    /// A place among the open event streams, or 503 with Retry-After.
    pub fn stream_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            ApiError::busy(format!(
                "{} event and log streams are open, the most this dispatcher serves at once (--max-event-streams); try again shortly",
                self.max_streams
            ))
        })
    }

    /// A place among the uploads in progress, or 503 with Retry-After.
    pub fn upload_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.uploads.clone().try_acquire_owned().map_err(|_| {
            ApiError::busy(format!(
                "{} uploads are in progress, the most this dispatcher receives at once (--max-uploads); try again shortly",
                self.max_uploads
            ))
        })
    }
}

/// Text fields of a form other than the role file (`name`, `uid`, options).
const MAX_FIELD: usize = 64 << 10;

/// A multipart form: the uploaded file (streamed to the blob store, or kept
/// in memory when small and `keep_in_memory`) and the text fields.
pub struct Form {
    pub file_name: Option<String>,
    pub blob: Option<Blob>,
    pub bytes: Option<Vec<u8>>,
    pub fields: HashMap<String, String>,
}

impl Form {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// K3's boolean flags: present means on, unless it says otherwise.
    pub fn flag(&self, name: &str) -> bool {
        self.fields.get(name).is_some_and(|v| {
            !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "false" | "0" | "no" | "off"
            )
        })
    }
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::new(
        e.status(),
        format!("could not read the upload: {}", e.body_text()),
    )
}

async fn read_text(mut field: Field<'_>, limit: usize, what: &str) -> Result<Vec<u8>, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{what} is larger than {limit} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

async fn read_role_file(field: Field<'_>, limits: &Limits) -> Result<Vec<u8>, ApiError> {
    read_text(field, limits.max_role_file, "the role file")
        .await
        .map_err(|e| match e {
            ApiError::Client { status, .. } if status == StatusCode::PAYLOAD_TOO_LARGE => {
                limits.role_file_too_large()
            }
            e => e,
        })
}

/// Reads a multipart form. With `stream_file`, the `file` field goes to the
/// blob store as it arrives (constant memory); otherwise it is read into
/// memory up to the role-file limit.
pub async fn read_form(
    blobs: &BlobStore,
    mut mp: Multipart,
    stream_file: bool,
    max_upload: u64,
    limits: &Limits,
) -> Result<Form, ApiError> {
    let mut form = Form {
        file_name: None,
        blob: None,
        bytes: None,
        fields: HashMap::new(),
    };
    while let Some(mut field) = mp.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" && (form.blob.is_some() || form.bytes.is_some())
            || form.fields.contains_key(&name)
        {
            return Err(ApiError::bad_request(format!(
                "the form has two parts named `{name}`; send each field once"
            )));
        }
        if name == "file" {
            form.file_name = field.file_name().map(str::to_string);
            if stream_file {
                let mut w = blobs.writer(max_upload).await?;
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    match w.write(&chunk).await {
                        Ok(()) => {}
                        Err(WriteError::TooLarge(limit)) => {
                            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the file is larger than the limit of {limit} bytes (--max-upload-mb)")))
                        }
                        Err(WriteError::Io(e)) => return Err(e.into()),
                    }
                }
                form.blob = Some(blobs.commit(w).await?);
            } else {
                form.bytes = Some(read_role_file(field, limits).await?);
            }
        } else if name == "text" {
            let bytes = read_role_file(field, limits).await?;
            let text = String::from_utf8(bytes).map_err(|_| {
                ApiError::bad_request("field `text` (the role file) is not UTF-8 text")
            })?;
            form.fields.insert(name, text);
        } else {
            let bytes = read_text(field, MAX_FIELD, &format!("field `{name}`")).await?;
            let text = String::from_utf8(bytes)
                .map_err(|_| ApiError::bad_request(format!("field `{name}` is not UTF-8 text")))?;
            // Names, tags and command parts end up in listings, logs and shells.
            if let Some(c) = text
                .chars()
                .find(|c| app::yaml::forbidden_char(*c) || *c == '\n' || *c == '\r')
            {
                return Err(ApiError::bad_request(format!(
                    "field `{name}` holds the control character U+{:04X}; use printable text on one line",
                    c as u32
                )));
            }
            form.fields.insert(name, text);
        }
    }
    Ok(form)
}

/// K3 named apps after the uploaded file, made safe (werkzeug's
/// `secure_filename`): letters, digits, `.`, `_`, `-`; spaces become `_`.
pub fn app_name_from(file_name: &str) -> Result<String, ApiError> {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect();
    let cleaned = cleaned.trim_start_matches(['.', '_', '-']).to_string();
    if cleaned.is_empty() || cleaned.len() > 128 {
        return Err(ApiError::bad_request(format!("file name {file_name:?} does not make a usable app name (letters, digits, '.', '_', '-'; at most 128)")));
    }
    Ok(cleaned)
}

pub fn check_name(kind: &str, s: &str) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !s.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("{kind} {s:?} is not valid: use letters, digits, '.', '_' and '-' (at most 128, not starting with '.')")))
    }
}

/// Receives an app upload (multipart `file`, optional `name`, `uid`, `tag`)
/// and records it; returns the version and whether it is new.
pub async fn upload(st: &AppState, mp: Multipart) -> Result<(AppVersion, bool), ApiError> {
    let _permit = st.settings.limits.upload_permit()?;
    let started = std::time::Instant::now();
    let form = read_form(
        &st.blobs,
        mp,
        true,
        st.settings.max_upload,
        &st.settings.limits,
    )
    .await?;
    let Some(blob) = form.blob.clone() else {
        return Err(ApiError::bad_request(
            "no file received: send the program as a multipart field named `file` (curl -F file=@prog)",
        ));
    };
    let name = match (form.field("name"), form.file_name.as_deref()) {
        (Some(n), _) => {
            check_name("app name", n)?;
            n.to_string()
        }
        (None, Some(f)) => app_name_from(f)?,
        (None, None) => {
            return Err(ApiError::bad_request(
                "the app has no name: give the `file` part a file name (curl -F file=@prog) or send a `name` field",
            ))
        }
    };
    let uid = form.field("uid").map(str::to_string);
    let tag = form.field("tag").unwrap_or_default().to_string();
    let size = blob.size;
    let (v, created) = add_version(st, name, blob, uid, tag).await?;
    st.bus.metrics().upload(size, started.elapsed());
    tracing::info!(app = %v.app, uid = %v.uid, size = v.size, created, "app version stored");
    Ok((v, created))
}

/// An app's versions, newest first; empty when there is no such app.
pub async fn versions(st: &AppState, name: &str) -> Result<Vec<AppVersion>, ApiError> {
    let n = name.to_string();
    Ok(st.db.call(move |c| db::versions(c, &n)).await?)
}

/// Records an uploaded blob as a version of `app`. Uploading the same bytes
/// again without a uid returns the existing version; a uid that is taken by
/// different bytes is a conflict.
pub async fn add_version(
    st: &AppState,
    app: String,
    blob: Blob,
    uid: Option<String>,
    tag: String,
) -> Result<(AppVersion, bool), ApiError> {
    if let Some(u) = &uid {
        check_name("uid", u)?;
    }
    if tag.len() > 256 {
        return Err(ApiError::bad_request("tag is longer than 256 characters"));
    }
    let res = st
        .db
        .call(move |c| {
            let tx = c.transaction()?;
            if let Some(u) = &uid {
                if let Some(v) = db::version(&tx, &app, u)? {
                    return Ok(if v.sha256 == blob.sha256 {
                        Ok((v, false))
                    } else {
                        Err(v)
                    });
                }
            } else if let Some(v) = db::version_by_sha(&tx, &app, &blob.sha256)? {
                return Ok(Ok((v, false)));
            }
            let uid = uid.unwrap_or_else(|| blob.sha256[..12].to_string());
            let v = AppVersion {
                app,
                uid,
                sha256: blob.sha256,
                size: blob.size,
                tag,
                uploaded: crate::util::now_rfc3339(),
            };
            db::insert_version(&tx, &v)?;
            tx.commit()?;
            Ok(Ok((v, true)))
        })
        .await?;
    res.map_err(|v| {
        ApiError::conflict(format!(
            "version {:?} of app {:?} already exists with different content (sha256 {})",
            v.uid, v.app, v.sha256
        ))
    })
}

pub struct Submitted {
    pub id: u64,
    pub time: String,
    pub warnings: Vec<Diagnostic>,
}

fn diagnostics_error(message: &str, diags: &[Diagnostic]) -> ApiError {
    let first = diags
        .iter()
        .find(|d| d.is_error())
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    ApiError::bad_request(format!("{message}{first}")).with_details(
        diags
            .iter()
            .map(|d| serde_json::to_value(d).unwrap_or_default())
            .collect(),
    )
}

/// Parses a role file and checks it can run on this backend at all.
pub fn accept_role_file(
    st: &AppState,
    text: &str,
) -> Result<(RoleFile, Vec<Diagnostic>), ApiError> {
    let (rf, warnings) =
        RoleFile::parse(text).map_err(|d| diagnostics_error("the role file has errors", &d))?;
    runnable_here(st, &rf).map_err(ApiError::bad_request)?;
    Ok((rf, warnings))
}

/// Why a valid role file still cannot run on this backend, if it cannot.
pub fn runnable_here(st: &AppState, rf: &RoleFile) -> Result<(), String> {
    let limits = &st.settings.limits;
    if rf.roles().len() > limits.max_roles {
        return Err(format!(
            "the role file has {} roles, more than the limit of {} (--max-roles)",
            rf.roles().len(),
            limits.max_roles
        ));
    }
    if rf.total_peers() > limits.max_peers_per_job {
        return Err(format!(
            "the job asks for {} peers, more than the limit of {} per job (--max-peers-per-job)",
            rf.total_peers(),
            limits.max_peers_per_job
        ));
    }
    if st.settings.backend == "local" {
        if let Some(r) = rf.roles().iter().find(|r| r.image.is_some()) {
            return Err(format!(
                "role '{}' (line {}) asks for a Docker image; the local backend runs peers as plain processes (use --master for Mesos)",
                r.name, r.line
            ));
        }
        if let Some(total) = &st.settings.total_offer {
            if let Err(short) = place(rf.roles(), std::slice::from_ref(total)) {
                return Err(format!("this job can never run on this machine: {short}"));
            }
        }
    }
    Ok(())
}

/// What a job is submitted for besides itself, recorded with it.
#[derive(Clone, Debug, Default)]
pub struct Link {
    pub replay_of: Option<u64>,
    /// The schedule's run it is, recorded with it.
    pub schedule: Option<crate::db::DueRecord>,
}

/// Records a job (SUBMITTED) and hands it to the runner.
pub async fn submit(
    st: &AppState,
    app: &str,
    uid: Option<&str>,
    role_text: String,
    options: JobOptions,
    replay_of: Option<u64>,
) -> Result<Submitted, ApiError> {
    submit_linked(
        st,
        app,
        uid,
        role_text,
        options,
        Link {
            replay_of,
            ..Link::default()
        },
    )
    .await
}

/// Options no submission may carry, whatever its route.
pub fn check_options(options: &JobOptions) -> Result<(), ApiError> {
    if let Some(r) = options.retries.filter(|r| *r > app::role::MAX_RETRIES) {
        return Err(ApiError::bad_request(format!(
            "options.retries {r}: at most {} attempts after the first",
            app::role::MAX_RETRIES
        )));
    }
    Ok(())
}

/// The app's version `uid`, or its latest one.
pub async fn resolve_version(
    st: &AppState,
    app: &str,
    uid: Option<&str>,
) -> Result<AppVersion, ApiError> {
    let (a, u) = (app.to_string(), uid.map(str::to_string));
    let version = st
        .db
        .call(move |c| match &u {
            Some(u) => db::version(c, &a, u),
            None => db::latest_version(c, &a),
        })
        .await?;
    version.ok_or_else(|| match uid {
        Some(u) => ApiError::not_found(format!("app {app:?} has no version {u:?}")),
        None => ApiError::not_found(format!("there is no app {app:?}")),
    })
}

/// 410 when a version's binary is gone (deleted with its app, and no kept
/// job used it).
fn binary_stored(st: &AppState, app: &str, uid: &str, sha256: &str) -> Result<(), ApiError> {
    if st.blobs.path(sha256).exists() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::GONE,
        format!("the binary of {app} version {uid} is no longer stored: the version was deleted and no kept job used it; upload it again to run this"),
    ))
}

/// `submit`, recording what the job is for in the same transaction.
pub async fn submit_linked(
    st: &AppState,
    app: &str,
    uid: Option<&str>,
    role_text: String,
    options: JobOptions,
    link: Link,
) -> Result<Submitted, ApiError> {
    check_options(&options)?;
    let version = resolve_version(st, app, uid).await?;
    submit_version(
        st,
        version.app,
        version.uid,
        version.sha256,
        role_text,
        options,
        link,
    )
    .await
}

/// Expands a sweep into its jobs and submits them all, once every
/// combination has passed the checks a submission makes; an error names the
/// combination and submits nothing.
pub async fn submit_sweep(
    st: &AppState,
    req: app::sweep::SweepRequest,
) -> Result<(u64, Vec<u64>), ApiError> {
    use app::sweep::{apply, combinations, describe, MAX_REPEAT, MAX_SWEEP_JOBS};
    check_options(&req.options)?;
    let repeat = req.repeat.unwrap_or(1);
    if !(1..=MAX_REPEAT).contains(&repeat) {
        return Err(ApiError::bad_request(format!(
            "repeat {repeat}: each combination runs 1 to {MAX_REPEAT} times"
        )));
    }
    let version = resolve_version(st, &req.app, req.uid.as_deref()).await?;
    binary_stored(st, &version.app, &version.uid, &version.sha256)?;
    accept_role_file(st, &req.role_file)?;
    let combos = combinations(&req.parameters).map_err(ApiError::bad_request)?;
    if combos.len() * repeat as usize > MAX_SWEEP_JOBS {
        return Err(ApiError::bad_request(format!(
            "{} combinations × repeat {repeat} is {} jobs; a sweep submits at most {MAX_SWEEP_JOBS}",
            combos.len(),
            combos.len() * repeat as usize
        )));
    }
    let mut parsed = Vec::with_capacity(combos.len());
    for (i, c) in combos.iter().enumerate() {
        let what = format!(
            "combination {} of {} ({})",
            i + 1,
            combos.len(),
            describe(c)
        );
        let text =
            apply(&req.role_file, c).map_err(|e| ApiError::bad_request(format!("{what}: {e}")))?;
        if text.len() > st.settings.limits.max_role_file {
            return Err(ApiError::bad_request(format!(
                "{what}: its role file is {} bytes, over the limit of {} (--max-role-file-kb)",
                text.len(),
                st.settings.limits.max_role_file
            )));
        }
        let (rf, _) = accept_role_file(st, &text).map_err(|e| e.context(&what))?;
        parsed.push((text, Arc::new(rf)));
    }
    let mut new_jobs = Vec::with_capacity(parsed.len() * repeat as usize);
    let mut role_files = Vec::with_capacity(new_jobs.capacity());
    for (point, (text, rf)) in parsed.iter().enumerate() {
        for rep in 1..=repeat {
            new_jobs.push(NewJob {
                app: version.app.clone(),
                uid: version.uid.clone(),
                sha256: version.sha256.clone(),
                role_file: text.clone(),
                options: req.options.clone(),
                peers_total: rf.total_peers(),
                replay_of: None,
                // The sweep's id is known inside the transaction.
                sweep: Some((0, point as u32, rep)),
                schedule: None,
            });
            role_files.push(rf.clone());
        }
    }
    let options = req.options.clone();
    let (sweep, events) = st
        .bus
        .insert_sweep(req, version.uid.clone(), repeat, new_jobs)
        .await?;
    tracing::info!(sweep, app = %version.app, jobs = events.len(), "sweep submitted");
    let meta = JobMeta {
        app: version.app,
        sha256: version.sha256,
        options,
        attempt: 1,
    };
    let mut jobs = Vec::with_capacity(events.len());
    for (ev, rf) in events.iter().zip(role_files) {
        st.runner.submit(ev.job, rf, meta.clone());
        jobs.push(ev.job);
    }
    Ok((sweep, jobs))
}

async fn submit_version(
    st: &AppState,
    app: String,
    uid: String,
    sha256: String,
    role_text: String,
    options: JobOptions,
    link: Link,
) -> Result<Submitted, ApiError> {
    binary_stored(st, &app, &uid, &sha256)?;
    let (rf, warnings) = accept_role_file(st, &role_text)?;
    let meta = JobMeta {
        app: app.clone(),
        sha256: sha256.clone(),
        options: options.clone(),
        attempt: 1,
    };
    let ev = st
        .bus
        .insert_job(NewJob {
            app,
            uid,
            sha256,
            role_file: role_text,
            options,
            peers_total: rf.total_peers(),
            replay_of: link.replay_of,
            // A sweep's jobs are recorded together: db::insert_sweep.
            sweep: None,
            schedule: link.schedule,
        })
        .await?;
    // Inside the request's span: this line ties its request id to the job.
    tracing::info!(job = ev.job, app = %meta.app, peers = rf.total_peers(), "job submitted");
    st.runner.submit(ev.job, Arc::new(rf), meta);
    Ok(Submitted {
        id: ev.job,
        time: ev.time,
        warnings,
    })
}

/// Deletes an app's versions (jobs keep theirs: they name the binary by
/// hash); the binaries no kept job uses are collected at once.
pub async fn delete_app(st: &AppState, name: &str) -> Result<usize, ApiError> {
    let n = name.to_string();
    let (removed, shas) = st.db.call(move |c| db::delete_app(c, &n)).await?;
    st.retention.consider(shas);
    Ok(removed)
}

/// A job's detail, or why there is none: 404 for an id never used, 410
/// for a job retention deleted (saying when and why).
pub async fn job_detail(st: &AppState, id: u64) -> Result<app::model::JobDetail, ApiError> {
    match st.db.call(move |c| db::job(c, id)).await? {
        Some(j) => Ok(j),
        None => Err(no_job(st, id).await),
    }
}

/// The error for a job id with no job behind it.
pub async fn no_job(st: &AppState, id: u64) -> ApiError {
    match st.db.call(move |c| db::deleted_job(c, id)).await {
        Ok(Some((app, when, why))) => ApiError::new(
            StatusCode::GONE,
            format!("job {id} (app {app:?}) was deleted on {when} by the retention policy: {why}"),
        ),
        Ok(None) => ApiError::not_found(format!("there is no job {id}")),
        Err(e) => e.into(),
    }
}

/// Kills a job; a job that already ended is left as it is.
pub async fn kill(st: &AppState, id: u64) -> Result<app::model::JobSummary, ApiError> {
    let job = job_detail(st, id).await?;
    if !job.job.state.is_terminal() {
        st.runner.kill(id, "killed by request".into()).await;
    }
    // The kill is asynchronous for running jobs; report the state now.
    let job = job_detail(st, id).await?;
    Ok(job.job)
}

/// Submits a job again with the same app version, role file and options.
pub async fn replay(st: &AppState, id: u64) -> Result<Submitted, ApiError> {
    let job = job_detail(st, id).await?;
    let sha = st
        .db
        .call(move |c| db::sha_of_job(c, id))
        .await?
        .map(|(_, _, s)| s)
        .unwrap_or_default();
    let mut options = job.options.clone();
    options.tag = if job.job.tag.is_empty() {
        format!("REPLAY: {id}")
    } else {
        format!("REPLAY: {}", job.job.tag)
    };
    submit_version(
        st,
        job.job.app,
        job.job.uid,
        sha,
        job.role_file,
        options,
        Link {
            replay_of: Some(id),
            ..Link::default()
        },
    )
    .await
}
