//! Sandboxes through the agents' files API: `/files/read` for live logs (by
//! byte offset), `/files/browse` and `/files/download` to copy a finished
//! peer's sandbox next to the local ones before the job is archived.
//!
//! A command task's executor id is its task id, so its sandbox is
//! `/frameworks/<framework>/executors/<task>/runs/latest` on its agent.

use std::path::{Component, Path};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

pub fn sandbox(framework_id: &str, task_id: &str) -> String {
    format!("/frameworks/{framework_id}/executors/{task_id}/runs/latest")
}

#[derive(Clone)]
pub struct Files {
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct Read {
    data: String,
    offset: u64,
}

#[derive(Deserialize, Debug)]
pub struct Entry {
    pub path: String,
    pub mode: String,
    pub size: u64,
}

impl Default for Files {
    fn default() -> Self {
        Files::new()
    }
}

impl Files {
    pub fn new() -> Files {
        Files {
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(600))
                .build()
                .expect("an HTTP client without TLS builds"),
        }
    }

    /// Up to `length` bytes of `path` from `offset`; an empty answer at the
    /// file's end.
    pub async fn read(
        &self,
        agent: &str,
        path: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, String> {
        let r: Read = self
            .client
            .get(format!("{agent}/files/read"))
            .query(&[
                ("path", path.to_string()),
                ("offset", offset.to_string()),
                ("length", length.to_string()),
            ])
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("files API read of {path} on {agent}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("files API read of {path} on {agent}: {e}"))?;
        if r.offset != offset {
            return Err(format!(
                "files API read of {path}: asked offset {offset}, got {}",
                r.offset
            ));
        }
        Ok(r.data.into_bytes())
    }

    pub async fn browse(&self, agent: &str, path: &str) -> Result<Vec<Entry>, String> {
        self.client
            .get(format!("{agent}/files/browse"))
            .query(&[("path", path)])
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("files API browse of {path} on {agent}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("files API browse of {path} on {agent}: {e}"))
    }

    /// Copies a sandbox into `dest`, recursively; `skip` (the app binary)
    /// is left out; a file keeps at most `cap + 1` bytes, so the archive
    /// sees it as over the cap and records the truncation.
    pub async fn copy_sandbox(
        &self,
        agent: &str,
        sandbox: &str,
        dest: &Path,
        skip: &str,
        cap: u64,
    ) -> Result<usize, String> {
        let mut copied = 0;
        let mut dirs = vec![sandbox.to_string()];
        while let Some(dir) = dirs.pop() {
            for e in self.browse(agent, &dir).await? {
                let Some(rel) = e.path.strip_prefix(sandbox) else {
                    continue;
                };
                let rel = Path::new(rel.trim_start_matches('/'));
                // The agent's answer names the path; it may not leave `dest`.
                if rel.as_os_str().is_empty()
                    || rel.components().any(|c| !matches!(c, Component::Normal(_)))
                {
                    continue;
                }
                if e.mode.starts_with('d') {
                    dirs.push(e.path.clone());
                    continue;
                }
                if dir == sandbox && rel == Path::new(skip) {
                    continue;
                }
                let target = dest.join(rel);
                if let Some(parent) = target.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|err| format!("{}: {err}", parent.display()))?;
                }
                self.download(agent, &e.path, &target, cap + 1).await?;
                copied += 1;
            }
        }
        Ok(copied)
    }

    async fn download(
        &self,
        agent: &str,
        path: &str,
        target: &Path,
        max: u64,
    ) -> Result<(), String> {
        let resp = self
            .client
            .get(format!("{agent}/files/download"))
            .query(&[("path", path)])
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("files API download of {path} on {agent}: {e}"))?;
        let mut file = tokio::fs::File::create(target)
            .await
            .map_err(|e| format!("{}: {e}", target.display()))?;
        let mut left = max;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("files API download of {path}: {e}"))?;
            let n = (chunk.len() as u64).min(left) as usize;
            file.write_all(&chunk[..n])
                .await
                .map_err(|e| format!("{}: {e}", target.display()))?;
            left -= n as u64;
            if left == 0 {
                break;
            }
        }
        file.flush()
            .await
            .map_err(|e| format!("{}: {e}", target.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/mesos");

    #[test]
    fn the_recorded_browse_answer_parses_and_lives_under_the_task_sandbox() {
        let v: Vec<Entry> = serde_json::from_slice(
            &std::fs::read(format!("{FIXTURES}/agent-files-browse.json")).unwrap(),
        )
        .unwrap();
        let sb = sandbox("35782cdd-ad53-4cd7-8d66-b479cddc06a4-0000", "job1.peer0");
        assert!(v.iter().all(|e| e.path.starts_with(&sb)));
        let stdout = v.iter().find(|e| e.path.ends_with("/stdout")).unwrap();
        assert_eq!((stdout.size, stdout.mode.as_str()), (27, "-rw-r--r--"));
        let r: Read = serde_json::from_slice(
            &std::fs::read(format!("{FIXTURES}/agent-files-read-stdout-tail.json")).unwrap(),
        )
        .unwrap();
        assert_eq!((r.data.as_str(), r.offset), ("", 27));
    }
}
