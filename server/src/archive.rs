//! Job archives: every peer's sandbox in one `tar.gz` (`peer-<n>/...`).
//! A job that was retried has every attempt's: `attempt-<k>/peer-<n>/...`,
//! the last attempt's included.
//!
//! The app binary is left out (it is stored once, by hash); files larger than
//! the cap keep their first `cap` bytes and are listed in `TRUNCATED.txt`.
//! The archive is written to a temp file, fsynced and renamed into place.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

use app::model::EventKind;

use crate::events::Bus;

pub const ARCHIVE_FILE: &str = "archive.tar.gz";

/// Builds `<job_dir>/archive.tar.gz` and returns its size in bytes.
pub fn build(job_dir: &Path, binary: &str, cap: u64) -> std::io::Result<u64> {
    // A job killed (or failed) before it launched has no sandbox at all; it
    // still gets its (empty) archive, so that its event stream ends.
    std::fs::create_dir_all(job_dir)?;
    let tmp = job_dir.join(".archive.tar.gz.tmp");
    let file = File::create(&tmp)?;
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    tar.mode(tar::HeaderMode::Deterministic);
    let mut truncated = Vec::new();
    let earlier = numbered(job_dir, "attempt-")?;
    // The last attempt's sandboxes are where every job's are; beside
    // earlier attempts they are named as one too.
    let last = earlier.last().map(|(n, _)| n + 1);
    let mut sandboxes: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (_, dir) in &earlier {
        for (_, peer) in numbered(dir, "peer-")? {
            let prefix = PathBuf::from(name_of(dir)).join(name_of(&peer));
            sandboxes.push((peer, prefix));
        }
    }
    for (_, peer) in numbered(job_dir, "peer-")? {
        let prefix = match last {
            Some(n) => PathBuf::from(format!("attempt-{n}")).join(name_of(&peer)),
            None => PathBuf::from(name_of(&peer)),
        };
        sandboxes.push((peer, prefix));
    }
    for (sandbox, prefix) in &sandboxes {
        add_dir(&mut tar, sandbox, prefix, Some(binary), cap, &mut truncated)?;
    }
    if !truncated.is_empty() {
        let text = truncated.join("\n") + "\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "TRUNCATED.txt", text.as_bytes())?;
    }
    let gz = tar.into_inner()?;
    let file = gz.finish()?;
    file.sync_all()?;
    let size = file.metadata()?.len();
    drop(file);
    let dest = job_dir.join(ARCHIVE_FILE);
    std::fs::rename(&tmp, &dest)?;
    crate::util::sync_dir(job_dir)?;
    Ok(size)
}

/// The directories `<prefix><n>` in `dir`, by number.
fn numbered(dir: &Path, prefix: &str) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out: Vec<(u64, PathBuf)> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .filter_map(|p| {
                let n = name_of(&p).strip_prefix(prefix)?.parse().ok()?;
                Some((n, p))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(e),
    };
    out.sort();
    Ok(out)
}

/// Moves the sandboxes of a failed attempt (`peer-<n>`) to
/// `attempt-<k>/peer-<n>`, out of the way of the next attempt's.
pub fn keep_attempt(job_dir: &Path, attempt: u32) -> std::io::Result<()> {
    let dest = job_dir.join(format!("attempt-{attempt}"));
    std::fs::create_dir_all(&dest)?;
    for (_, peer) in numbered(job_dir, "peer-")? {
        std::fs::rename(&peer, dest.join(name_of(&peer)))?;
    }
    crate::util::sync_dir(&dest)?;
    crate::util::sync_dir(job_dir)
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string()
}

fn add_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    prefix: &Path,
    skip: Option<&str>,
    cap: u64,
    truncated: &mut Vec<String>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().to_string();
        if Some(name.as_str()) == skip {
            continue;
        }
        let ft = e.file_type()?;
        let inner = prefix.join(&name);
        if ft.is_dir() {
            add_dir(tar, &e.path(), &inner, None, cap, truncated)?;
        } else if ft.is_file() {
            let meta = e.metadata()?;
            let size = meta.len().min(cap);
            if meta.len() > cap {
                truncated.push(format!(
                    "{} ({} bytes, first {} kept)",
                    inner.display(),
                    meta.len(),
                    cap
                ));
            }
            let mut h = tar::Header::new_gnu();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_mtime(
                meta.modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            );
            // A file still growing past its size at stat time is cut there.
            let reader = File::open(e.path())?.take(size);
            tar.append_data(
                &mut h,
                &inner,
                PadTo {
                    inner: reader,
                    left: size,
                },
            )?;
        }
        // Symlinks and special files are not archived: they could point
        // anywhere on this machine.
    }
    Ok(())
}

/// Reads exactly `left` bytes, padding with zeros if the file shrank.
struct PadTo<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for PadTo<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..want])?;
        let n = if n == 0 {
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.left -= n as u64;
        Ok(n)
    }
}

/// Copies the tasks' sandboxes from their agents to `<dest>/peer-<n>`.
pub async fn copy_sandboxes(
    files: &crate::mesos::files::Files,
    job: u64,
    rows: Vec<crate::db::TaskRow>,
    dest: &Path,
    binary: &str,
    cap: u64,
) {
    for r in rows {
        let dest = dest.join(format!("peer-{}", r.idx));
        if let Err(e) = tokio::fs::create_dir_all(&dest).await {
            tracing::error!(job, error = %e, "cannot create {}", dest.display());
            continue;
        }
        let sandbox = crate::mesos::files::sandbox(&r.framework_id, &r.task_id);
        match files
            .copy_sandbox(&r.agent_url, &sandbox, &dest, binary, cap)
            .await
        {
            Ok(n) => tracing::debug!(job, peer = r.idx, files = n, "sandbox copied"),
            Err(e) => {
                tracing::warn!(job, peer = r.idx, error = %e, "cannot copy the sandbox");
                let note = format!("The sandbox of this peer could not be fetched: {e}\n");
                let _ = tokio::fs::write(dest.join("SANDBOX-MISSING.txt"), note).await;
            }
        }
    }
}

/// Each peer's usage samples as `peer-<n>/usage.csv`, beside its sandbox.
async fn write_usage(bus: &Bus, job_dir: &Path, job: u64) {
    let peers = match bus.db().call(move |c| crate::db::job(c, job)).await {
        Ok(Some(j)) => j.job.peers_total,
        _ => 0,
    };
    for peer in 0..peers {
        let samples = match bus
            .db()
            .call(move |c| crate::db::usage_of(c, job, peer))
            .await
        {
            Ok(s) if !s.is_empty() => s,
            _ => continue,
        };
        // Beside the last sandbox the peer had: a retried job killed in
        // its backoff has its sandboxes under its last attempt only.
        let mut dir = job_dir.join(format!("peer-{peer}"));
        if !dir.exists() {
            let last = numbered(job_dir, "attempt-")
                .ok()
                .and_then(|a| a.last().map(|(_, d)| d.join(format!("peer-{peer}"))));
            if let Some(d) = last.filter(|d| d.exists()) {
                dir = d;
            }
        }
        let written = async {
            tokio::fs::create_dir_all(&dir).await?;
            tokio::fs::write(dir.join("usage.csv"), crate::usage::csv(&samples)).await
        };
        if let Err(e) = written.await {
            tracing::warn!(job, peer, error = %e, "cannot write usage.csv");
        }
    }
}

/// Builds a job's archive off the queue, then records it. On Mesos the
/// sandboxes are first copied from the agents (files API) into the job's
/// directory, where the local backend keeps them.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    bus: Bus,
    jobs_dir: PathBuf,
    job: u64,
    binary: String,
    cap: u64,
    fetch: Option<crate::mesos::files::Files>,
    earlier: Vec<tokio::task::JoinHandle<()>>,
) {
    let job_dir = jobs_dir.join(job.to_string());
    tokio::spawn(async move {
        for copy in earlier {
            let _ = copy.await;
        }
        if let Some(files) = fetch {
            let rows = match bus.db().call(move |c| crate::db::tasks_of(c, job)).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(job, error = %e, "cannot read the job's tasks");
                    vec![]
                }
            };
            copy_sandboxes(&files, job, rows, &job_dir, &binary, cap).await;
        }
        write_usage(&bus, &job_dir, job).await;
        let built = tokio::task::spawn_blocking(move || build(&job_dir, &binary, cap)).await;
        match built {
            Ok(Ok(size)) => {
                if let Err(e) = bus.record(job, EventKind::Archive { size }).await {
                    tracing::error!(job, error = %e, "could not record the archive");
                }
            }
            Ok(Err(e)) => tracing::error!(job, error = %e, "archive failed"),
            Err(e) => tracing::error!(job, error = %e, "archive task failed"),
        }
    });
}
