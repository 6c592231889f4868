//! Retention: deleting old finished jobs (`--keep-jobs`, `--keep-days`,
//! `--keep-app`) with everything they left (rows, events, usage, sandboxes,
//! archive), then the blobs no app version or kept job uses, then giving the
//! database's freed pages back; and measuring the data directory for the
//! cluster page.
//!
//! A sweep runs at start, every `--retention-every-secs`, and when an app is
//! deleted. Its cost follows what it deletes, not the history: each app's
//! expired jobs are found on an index (`jobs_app`, `jobs_app_ended`), jobs
//! go in batches of [`BATCH`] (one transaction each, so the database lock is
//! never held long), and only the blobs those jobs used are looked at. The
//! first sweep also collects every unused blob and the directories a stop
//! left between a job's rows and its files.
//!
//! Rows go first, then files: a crash between leaves a directory whose job
//! has a tombstone, and the next start removes it. A deleted job's id
//! answers 410 with when and why (`deleted_jobs`), never "no such job".

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::model::StorageView;

use crate::blobs::BlobStore;
use crate::db::{self, Db, Why};
use crate::error::Internal;

/// Jobs deleted per transaction.
pub const BATCH: usize = 200;
/// Due times that started no job kept per schedule (the rest are pruned).
pub const SCHEDULE_SKIPS_KEPT: u64 = 1000;

/// How many finished jobs and how many days an app keeps (`None`: no limit).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub jobs: Option<u64>,
    pub days: Option<f64>,
}

impl Limits {
    fn is_unlimited(&self) -> bool {
        self.jobs.is_none() && self.days.is_none()
    }

    fn describe(&self) -> String {
        match (self.jobs, self.days) {
            (None, None) => "every job".into(),
            (Some(n), None) => format!("the {n} newest finished jobs"),
            (None, Some(d)) => format!("jobs that ended in the last {} days", days(d)),
            (Some(n), Some(d)) => format!(
                "the {n} newest finished jobs, of those ended in the last {} days",
                days(d)
            ),
        }
    }
}

fn days(d: f64) -> String {
    format!("{d}")
}

/// The retention policy: limits for every app, and apps that differ.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    pub default: Limits,
    pub apps: HashMap<String, Limits>,
}

impl Policy {
    /// Reads `--keep-jobs`, `--keep-days` and each `--keep-app NAME:jobs=N,days=D`.
    pub fn parse(
        keep_jobs: Option<u64>,
        keep_days: Option<f64>,
        keep_app: &[String],
    ) -> Result<Policy, String> {
        let check_days = |d: f64, what: &str| {
            if d.is_finite() && d >= 0.0 {
                Ok(d)
            } else {
                Err(format!("{what}: {d} is not a number of days (0 or more)"))
            }
        };
        let default = Limits {
            jobs: keep_jobs,
            days: keep_days
                .map(|d| check_days(d, "--keep-days"))
                .transpose()?,
        };
        let mut apps = HashMap::new();
        for spec in keep_app {
            let bad = |why: &str| {
                format!("--keep-app {spec:?}: {why} (write NAME:jobs=N,days=D, e.g. nightly:jobs=500,days=all)")
            };
            let (name, parts) = spec
                .split_once(':')
                .ok_or_else(|| bad("no ':' after the app name"))?;
            if let Err(crate::error::ApiError::Client { message, .. }) =
                crate::service::check_name("app name", name)
            {
                return Err(bad(&message));
            }
            let mut l = default;
            for part in parts.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| bad(&format!("{part:?} has no '='")))?;
                let all = v.trim() == "all";
                match k.trim() {
                    "jobs" => {
                        l.jobs = if all {
                            None
                        } else {
                            Some(v.trim().parse().map_err(|_| {
                                bad(&format!("jobs={v:?} is not a whole number or `all`"))
                            })?)
                        }
                    }
                    "days" => {
                        l.days = if all {
                            None
                        } else {
                            let d: f64 = v.trim().parse().map_err(|_| {
                                bad(&format!("days={v:?} is not a number or `all`"))
                            })?;
                            Some(check_days(d, "--keep-app").map_err(|e| bad(&e))?)
                        }
                    }
                    other => return Err(bad(&format!("{other:?} is neither `jobs` nor `days`"))),
                }
            }
            if apps.insert(name.to_string(), l).is_some() {
                return Err(bad("this app is named twice"));
            }
        }
        Ok(Policy { default, apps })
    }

    pub fn for_app(&self, app: &str) -> Limits {
        self.apps.get(app).copied().unwrap_or(self.default)
    }

    /// Whether any job may ever be deleted.
    pub fn deletes_anything(&self) -> bool {
        !self.default.is_unlimited() || self.apps.values().any(|l| !l.is_unlimited())
    }

    /// In words, for the cluster page: "per app, the 100 newest finished
    /// jobs; nightly: every job".
    pub fn describe(&self) -> String {
        let mut s = format!("per app, {}", self.default.describe());
        let mut apps: Vec<_> = self.apps.iter().collect();
        apps.sort_by(|a, b| a.0.cmp(b.0));
        for (name, l) in apps {
            s.push_str(&format!("; {name}: {}", l.describe()));
        }
        s
    }
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Swept {
    pub jobs: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Database pages given back to the file system.
    pub pages: u64,
}

pub struct Retention {
    policy: Policy,
    db: Db,
    blobs: BlobStore,
    data_dir: PathBuf,
    jobs_dir: PathBuf,
    /// Blobs whose last users were deleted (jobs, an app), to look at next.
    candidates: Mutex<HashSet<String>>,
    wake: tokio::sync::Notify,
    storage: Mutex<Option<StorageView>>,
    jobs_deleted: AtomicU64,
    blobs_deleted: AtomicU64,
    /// One sweep at a time.
    running: tokio::sync::Mutex<()>,
}

impl Retention {
    pub fn new(policy: Policy, db: Db, blobs: BlobStore, data_dir: PathBuf) -> Arc<Retention> {
        Arc::new(Retention {
            policy,
            db,
            blobs,
            jobs_dir: data_dir.join("jobs"),
            data_dir,
            candidates: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            storage: Mutex::default(),
            jobs_deleted: AtomicU64::new(0),
            blobs_deleted: AtomicU64::new(0),
            running: tokio::sync::Mutex::new(()),
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Blobs that may have lost their last user (an app was deleted): they
    /// are collected by a sweep started now.
    pub fn consider(&self, shas: Vec<String>) {
        self.candidates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(shas);
        self.wake.notify_one();
    }

    /// The data directory as last measured.
    pub fn storage(&self) -> Option<StorageView> {
        let mut v = self
            .storage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        v.jobs_deleted = self.jobs_deleted.load(Ordering::Relaxed);
        v.blobs_deleted = self.blobs_deleted.load(Ordering::Relaxed);
        Some(v)
    }

    /// Sweeps at start (`full`: every blob and leftover directory), then
    /// every `every` and whenever woken, until `stop`.
    pub fn spawn(self: Arc<Self>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        tokio::spawn(async move {
            let mut full = true;
            loop {
                match self.sweep(full).await {
                    Ok(s) if s != Swept::default() => tracing::info!(
                        jobs = s.jobs,
                        blobs = s.blobs,
                        blob_bytes = s.blob_bytes,
                        pages = s.pages,
                        "retention sweep"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "retention sweep failed"),
                }
                full = false;
                self.measure().await;
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = self.wake.notified() => {}
                    _ = stop.changed() => return,
                }
                if *stop.borrow() {
                    return;
                }
            }
        });
    }

    /// Deletes what the policy no longer keeps, then the blobs that leaves
    /// unused, then vacuums what that freed.
    pub async fn sweep(&self, full: bool) -> Result<Swept, Internal> {
        let _one = self.running.lock().await;
        let mut out = Swept::default();
        if full {
            self.remove_leftover_dirs().await?;
        }
        if self.policy.deletes_anything() {
            let now = time::OffsetDateTime::now_utc();
            let stale = rfc3339(now - time::Duration::days(1));
            let apps = self.db.call(|c| db::job_apps(c)).await?;
            for app in apps {
                let limits = self.policy.for_app(&app);
                if limits.is_unlimited() {
                    continue;
                }
                let cut = limits
                    .days
                    .map(|d| rfc3339(now - time::Duration::seconds_f64(d * 86_400.0)));
                loop {
                    let (a, c, s) = (app.clone(), cut.clone(), stale.clone());
                    let expired = self
                        .db
                        .call(move |conn| {
                            db::expired_jobs(conn, &a, limits.jobs, c.as_deref(), &s, BATCH)
                        })
                        .await?;
                    if expired.is_empty() {
                        break;
                    }
                    let n = expired.len();
                    let batch: Vec<(u64, String)> = expired
                        .into_iter()
                        .map(|(id, why)| (id, reason(&app, why, &limits)))
                        .collect();
                    let ids: Vec<u64> = batch.iter().map(|(id, _)| *id).collect();
                    let shas = self.db.call(move |c| db::delete_jobs(c, &batch)).await?;
                    self.remove_dirs(ids).await;
                    out.jobs += n as u64;
                    self.jobs_deleted.fetch_add(n as u64, Ordering::Relaxed);
                    self.candidates
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(shas);
                    if n < BATCH {
                        break;
                    }
                }
            }
        }
        // A schedule's due times that started nothing (skipped, missed)
        // are history, not data: each keeps its newest ones.
        self.db
            .call(|c| db::prune_schedule_skips(c, SCHEDULE_SKIPS_KEPT))
            .await?;
        let candidates: Vec<String> = if full {
            let blobs = self.blobs.clone();
            tokio::task::spawn_blocking(move || blobs.list())
                .await
                .map_err(|e| Internal(e.to_string()))??
        } else {
            std::mem::take(&mut *self.candidates.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect()
        };
        for chunk in candidates.chunks(500) {
            let (blobs, chunk) = (self.blobs.clone(), chunk.to_vec());
            let (n, bytes) = self
                .db
                .call(move |c| blobs.remove_unused(&chunk, |s| db::blob_in_use(c, s)))
                .await?;
            out.blobs += n;
            out.blob_bytes += bytes;
        }
        self.blobs_deleted.fetch_add(out.blobs, Ordering::Relaxed);
        // A few megabytes a step, so requests get the connection between.
        let start = self.db.call(|c| db::free_pages(c)).await?;
        let mut left = start;
        while left > 0 {
            let now = self.db.call(|c| db::vacuum_step(c, 1024)).await?;
            if now >= left {
                break;
            }
            left = now;
        }
        out.pages = start - left;
        Ok(out)
    }

    async fn remove_dirs(&self, ids: Vec<u64>) {
        let dir = self.jobs_dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for id in ids {
                let d = dir.join(id.to_string());
                match std::fs::remove_dir_all(&d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(job = id, error = %e, "cannot delete {}", d.display()),
                }
            }
        })
        .await;
    }

    /// Directories of jobs whose rows were deleted by a sweep a stop cut short.
    async fn remove_leftover_dirs(&self) -> Result<(), Internal> {
        let dir = self.jobs_dir.clone();
        let ids: Vec<u64> = tokio::task::spawn_blocking(move || {
            std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        })
        .await
        .map_err(|e| Internal(e.to_string()))?;
        let gone = self.db.call(move |c| db::deleted_among(c, &ids)).await?;
        if !gone.is_empty() {
            tracing::info!(n = gone.len(), "removing directories of deleted jobs");
            self.remove_dirs(gone).await;
        }
        Ok(())
    }

    /// Walks the data directory (on a blocking thread) and keeps the figures.
    pub async fn measure(&self) {
        let dir = self.data_dir.clone();
        let retention = if self.policy.deletes_anything() {
            self.policy.describe()
        } else {
            "every job is kept (no --keep-jobs, --keep-days or --keep-app)".into()
        };
        let measured = tokio::task::spawn_blocking(move || {
            let db_bytes = ["dispatcher.db", "dispatcher.db-wal", "dispatcher.db-shm"]
                .iter()
                .map(|f| du(&dir.join(f)))
                .sum();
            let apps = du(&dir.join("blobs"));
            let jobs = du(&dir.join("jobs"));
            let total = du(&dir);
            StorageView {
                dir: dir.display().to_string(),
                total_bytes: total,
                database_bytes: db_bytes,
                apps_bytes: apps,
                jobs_bytes: jobs,
                free_bytes: free_space(&dir),
                measured: crate::util::now_rfc3339(),
                retention,
                jobs_deleted: 0,
                blobs_deleted: 0,
            }
        })
        .await;
        if let Ok(v) = measured {
            *self.storage.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
        }
    }
}

fn reason(app: &str, why: Why, l: &Limits) -> String {
    match why {
        Why::Count => format!(
            "it was older than the {} newest finished jobs app {app:?} keeps",
            l.jobs.unwrap_or(0)
        ),
        Why::Age => format!(
            "it ended more than {} days ago, longer than app {app:?} keeps jobs",
            days(l.days.unwrap_or(0.0))
        ),
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Bytes allocated under `path`, as `du` counts them (symlinks not followed).
pub fn du(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        total += m.blocks() * 512;
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        }
    }
    total
}

fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some(s.f_bavail as u64 * s.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_reads_defaults_and_per_app_overrides_that_inherit_what_they_leave_out() {
        let p = Policy::parse(
            Some(100),
            Some(30.0),
            &["nightly:days=all,jobs=500".into(), "tpch:days=7".into()],
        )
        .unwrap();
        assert_eq!(
            p.for_app("other"),
            Limits {
                jobs: Some(100),
                days: Some(30.0)
            }
        );
        assert_eq!(
            p.for_app("nightly"),
            Limits {
                jobs: Some(500),
                days: None
            }
        );
        assert_eq!(
            p.for_app("tpch"),
            Limits {
                jobs: Some(100),
                days: Some(7.0)
            }
        );
        assert!(p.deletes_anything());
        assert!(!Policy::parse(None, None, &[]).unwrap().deletes_anything());
        assert!(Policy::parse(None, None, &["keep:jobs=all".into()])
            .unwrap()
            .describe()
            .contains("keep: every job"));
    }

    #[test]
    fn a_bad_keep_app_says_what_is_wrong_and_how_to_write_it() {
        for (spec, says) in [
            ("nightly", "no ':'"),
            ("nightly:jobs", "has no '='"),
            ("nightly:jobs=many", "\"many\" is not a whole number"),
            ("nightly:days=-1", "not a number of days"),
            ("nightly:weeks=2", "\"weeks\" is neither"),
            ("../x:jobs=1", "is not valid"),
        ] {
            let e = Policy::parse(None, None, &[spec.into()]).unwrap_err();
            assert!(
                e.contains(says) && e.contains("NAME:jobs=N,days=D"),
                "{spec}: {e}"
            );
        }
        let e = Policy::parse(None, None, &["a:jobs=1".into(), "a:days=2".into()]).unwrap_err();
        assert!(e.contains("named twice"), "{e}");
        assert!(Policy::parse(None, Some(f64::NAN), &[]).is_err());
    }
}
