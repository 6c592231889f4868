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
    creds: Option<super::Credentials>,
}

/// Largest `/files/read` answer accepted: Mesos sends at most 64 KiB of
/// data, which JSON escaping can make up to six times longer.
const MAX_READ_BODY: usize = 6 * 65536 + 1024;

/// One executor in `/monitor/statistics`.
#[derive(Deserialize, Debug)]
pub struct MonitorEntry {
    pub executor_id: String,
    pub framework_id: String,
    pub statistics: MonitorStatistics,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub struct MonitorStatistics {
    pub timestamp: f64,
    pub cpus_user_time_secs: f64,
    pub cpus_system_time_secs: f64,
    pub mem_rss_bytes: u64,
}

#[derive(Deserialize, Debug)]
pub struct Entry {
    pub path: String,
    pub mode: String,
    pub size: u64,
}

impl Default for Files {
    fn default() -> Self {
        Files::new(None, &super::Transport::default())
    }
}

/// What an agent's error answer means for the user.
fn explain(what: &str, status: reqwest::StatusCode, creds: Option<&super::Credentials>) -> String {
    match (status.as_u16(), creds) {
        (401, None) => format!(
            "{what}: the agent requires authentication (401); start the dispatcher with --mesos-principal and --mesos-secret-file"
        ),
        (401, Some(c)) => format!(
            "{what}: the agent rejected the credentials of principal '{}' (401)",
            c.principal
        ),
        (403, _) => format!("{what}: the agent does not allow this principal to read sandboxes (403)"),
        (s, _) => format!("{what}: the agent answered {s}"),
    }
}

impl Files {
    pub fn new(creds: Option<super::Credentials>, transport: &super::Transport) -> Files {
        Files {
            client: transport
                .client()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(600))
                .build()
                .expect("an HTTP client with the system's TLS roots builds"),
            creds,
        }
    }

    async fn get(
        &self,
        what: &str,
        agent: &str,
        endpoint: &str,
        query: &[(&str, String)],
    ) -> Result<reqwest::Response, String> {
        let req = self
            .client
            .get(format!("{agent}/files/{endpoint}"))
            .query(query);
        let resp = super::authorized(req, self.creds.as_ref())
            .send()
            .await
            .map_err(|e| format!("{what} on {agent}: {e}"))?;
        if !resp.status().is_success() {
            return Err(explain(
                &format!("{what} on {agent}"),
                resp.status(),
                self.creds.as_ref(),
            ));
        }
        Ok(resp)
    }

    /// The agent's `/monitor/statistics`: one entry per running executor,
    /// with cumulative CPU seconds and resident memory
    /// (scenarios/agent-monitor).
    pub async fn monitor_statistics(&self, agent: &str) -> Result<Vec<MonitorEntry>, String> {
        let req = self
            .client
            .get(format!("{agent}/monitor/statistics"))
            .timeout(Duration::from_secs(10));
        let resp = super::authorized(req, self.creds.as_ref())
            .send()
            .await
            .map_err(|e| format!("monitor statistics of {agent}: {e}"))?;
        if !resp.status().is_success() {
            return Err(explain(
                &format!("monitor statistics of {agent}"),
                resp.status(),
                self.creds.as_ref(),
            ));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("monitor statistics of {agent}: {e}"))?;
        if body.len() > 16 << 20 {
            return Err(format!(
                "monitor statistics of {agent}: {} bytes",
                body.len()
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("monitor statistics of {agent}: {e}"))
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
        let what = format!("files API read of {path}");
        let mut resp = self
            .get(
                &what,
                agent,
                "read",
                &[
                    ("path", path.to_string()),
                    ("offset", offset.to_string()),
                    ("length", length.to_string()),
                ],
            )
            .await?;
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("{what} on {agent}: {e}"))?
        {
            if body.len() + chunk.len() > MAX_READ_BODY {
                return Err(format!(
                    "{what} on {agent}: the answer is over {MAX_READ_BODY} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let (data, got) = parse_read(&body).map_err(|e| format!("{what} on {agent}: {e}"))?;
        if got != offset {
            return Err(format!("{what}: asked offset {offset}, got {got}"));
        }
        Ok(data)
    }

    pub async fn browse(&self, agent: &str, path: &str) -> Result<Vec<Entry>, String> {
        let what = format!("files API browse of {path}");
        self.get(&what, agent, "browse", &[("path", path.to_string())])
            .await?
            .json()
            .await
            .map_err(|e| format!("{what} on {agent}: {e}"))
    }

    /// Copies a sandbox into `dest`, recursively; `skip` (the app binary)
    /// and the fetched peer list (in `peer.yaml` already) are left out; a file keeps at most `cap + 1` bytes, so the archive
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
                if dir == sandbox
                    && (rel == Path::new(skip) || rel == Path::new(super::task::PEER_LIST_FILE))
                {
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
        let what = format!("files API download of {path}");
        let resp = self
            .get(&what, agent, "download", &[("path", path.to_string())])
            .await?;
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

/// Reads `/files/read`'s answer, `{"data": "...", "offset": N}`, from its
/// bytes. Mesos writes the file's bytes into the JSON string unvalidated
/// (scenarios/files-read-bytes): a window that splits a UTF-8 character, or
/// a file that is not UTF-8, makes the body invalid UTF-8 and so invalid
/// JSON for a strict parser. The string is read as bytes here: escapes are
/// decoded, every other byte is kept as it is.
pub fn parse_read(body: &[u8]) -> Result<(Vec<u8>, u64), String> {
    let mut p = Cursor { b: body, i: 0 };
    let (mut data, mut offset) = (None, None);
    p.expect(b'{')?;
    loop {
        let key = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        match key.as_slice() {
            b"data" => data = Some(p.string()?),
            b"offset" => offset = Some(p.number()?),
            other => {
                return Err(format!(
                    "unexpected key {:?} in the answer",
                    String::from_utf8_lossy(other)
                ))
            }
        }
        p.ws();
        match p.next() {
            Some(b',') => continue,
            Some(b'}') => break,
            _ => return Err(format!("malformed answer at byte {}", p.i)),
        }
    }
    match (data, offset) {
        (Some(d), Some(o)) => Ok((d, o)),
        _ => Err("the answer lacks `data` or `offset`".into()),
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        self.i += 1;
        c
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.next() == Some(c) {
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", c as char, self.i - 1))
        }
    }

    fn number(&mut self) -> Result<u64, String> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        std::str::from_utf8(&self.b[start..self.i])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("expected a number at byte {start}"))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let h = self
            .b
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| format!("bad \\u escape at byte {}", self.i))?;
        self.i += 4;
        Ok(h)
    }

    /// A JSON string whose unescaped bytes may be anything.
    fn string(&mut self) -> Result<Vec<u8>, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.next() {
                None => return Err("unterminated string".into()),
                Some(b'"') => return Ok(out),
                Some(b'\\') => match self.next() {
                    Some(b'"') => out.push(b'"'),
                    Some(b'\\') => out.push(b'\\'),
                    Some(b'/') => out.push(b'/'),
                    Some(b'n') => out.push(b'\n'),
                    Some(b't') => out.push(b'\t'),
                    Some(b'r') => out.push(b'\r'),
                    Some(b'b') => out.push(0x08),
                    Some(b'f') => out.push(0x0c),
                    Some(b'u') => {
                        let mut cp = self.hex4()?;
                        if (0xD800..0xDC00).contains(&cp)
                            && self.b.get(self.i..self.i + 2) == Some(&b"\\u"[..])
                        {
                            self.i += 2;
                            let lo = self.hex4()?;
                            cp =
                                0x10000 + ((cp - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF);
                        }
                        let ch = char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER);
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    }
                    _ => return Err(format!("bad escape at byte {}", self.i - 1)),
                },
                Some(c) => out.push(c),
            }
        }
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
        let r = parse_read(
            &std::fs::read(format!("{FIXTURES}/agent-files-read-stdout-tail.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(r, (vec![], 27));
    }

    /// Every `/files/read` body the real agent sent (scenarios/files-read-bytes)
    /// gives back exactly the file's bytes at that offset, whatever they are.
    #[test]
    fn every_recorded_read_gives_the_files_exact_bytes() {
        let dir = format!("{FIXTURES}/scenarios/files-read-bytes");
        let expected = std::fs::read(format!("{dir}/expected-stdout.bin")).unwrap();
        for (file, offset, length) in [
            ("files-read-0-65536.bin", 0usize, 65536usize),
            ("files-read-0-nolength.bin", 0, 65536),
            ("files-read-65535-10.bin", 65535, 10),
            ("files-read-65536-10.bin", 65536, 10),
            ("files-read-69996-10.bin", 69996, 10),
            ("files-read-69999-2.bin", 69999, 2),
            ("files-read-70998-64.bin", 70998, 64),
            ("files-read-beyond-eof.bin", 100000, 0),
            ("files-read-at-eof.bin", 71047, 0),
        ] {
            let body = std::fs::read(format!("{dir}/{file}")).unwrap();
            let (data, got) = parse_read(&body).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(got as usize, offset, "{file}");
            let end = (offset + length).min(expected.len());
            let want = expected.get(offset..end).unwrap_or(&[]);
            assert_eq!(data, want, "{file}");
        }
        // serde_json cannot read them: this is the failure the parser avoids.
        let split = std::fs::read(format!("{dir}/files-read-0-65536.bin")).unwrap();
        assert!(serde_json::from_slice::<serde_json::Value>(&split).is_err());
        for bad in [
            &b"{\"data\":\"abc"[..],
            b"{\"offset\":1}",
            b"[1]",
            b"{\"data\":\"\\q\",\"offset\":0}",
        ] {
            assert!(parse_read(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
