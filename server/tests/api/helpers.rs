//! Test helpers: a real dispatcher on a loopback port with its own temporary
//! data directory, and small clients for its API.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dispatcher::{Application, Config};
use serde_json::Value;

pub struct TestApp {
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

pub fn config(dir: &Path) -> Config {
    use clap::Parser;
    let mut c = Config::parse_from(["dispatcher"]);
    c.master = None;
    c.dir = dir.to_path_buf();
    c.port = 0;
    c.ip = "127.0.0.1".parse().unwrap();
    c.token = None;
    c.token_file = None;
    c.read_token = None;
    c.read_token_file = None;
    c.cpus = Some(8.0);
    c.mem_mb = Some(8192);
    c.ports = "0-0".into();
    c.peer_address = "127.0.0.1".into();
    c.kill_grace_secs = 2;
    c.archive_file_cap_mb = 64;
    c.max_upload_mb = 1024;
    c
}

/// Waits until a server started as a process answers its health check.
pub async fn wait_up(client: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if client
            .get(format!("{base}/api/health"))
            .send()
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("dispatcher did not come up at {base}");
}

/// A free block of ports for one test's peers, so tests in parallel do not collide.
pub fn port_block(n: u16) -> String {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base =
        20000 + (std::process::id() as u16 % 40) * 500 + NEXT.fetch_add(n, Ordering::Relaxed);
    format!("{}-{}", base, base + n - 1)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    spawn_in(dir, tweak).await
}

pub async fn spawn_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut cfg = config(dir.path());
    cfg.ports = port_block(40);
    tweak(&mut cfg);
    let app = Application::build(cfg).await.expect("the app builds");
    let addr = format!("http://{}", app.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until(async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    TestApp {
        addr,
        dir,
        client: reqwest::Client::new(),
        stop: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.addr, path)
    }

    /// Stops the server gracefully and gives back its data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), s).await;
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    /// Uploads `script` as an app named `name`; returns the JSON answer.
    pub async fn upload(&self, name: &str, script: &str) -> Value {
        let part =
            reqwest::multipart::Part::bytes(script.as_bytes().to_vec()).file_name(name.to_string());
        let form = reqwest::multipart::Form::new().part("file", part);
        let r = self
            .client
            .post(self.url("/apps"))
            .header("Accept", "application/json")
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "upload of {name}");
        r.json().await.unwrap()
    }

    /// Submits a role file through the JSON API; returns the job id.
    pub async fn submit(&self, app: &str, role_file: &str) -> u64 {
        let (status, body) = self.submit_raw(app, role_file, serde_json::json!({})).await;
        assert_eq!(status, 202, "submit: {body}");
        body["id"].as_u64().unwrap()
    }

    pub async fn submit_raw(&self, app: &str, role_file: &str, options: Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url("/api/jobs"))
            .json(&serde_json::json!({ "app": app, "role_file": role_file, "options": options }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// POSTs JSON to a path: the status and the JSON answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// GETs a path and reads its JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// GETs a path and reads its body as text (event streams that end).
    pub async fn get_text(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn job(&self, id: u64) -> Value {
        self.get_json(&format!("/api/jobs/{id}")).await
    }

    /// Polls until the job's state satisfies `done`; panics after 30 s.
    pub async fn wait_for(&self, id: u64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let j = self.job(id).await;
            if done(&j) {
                return j;
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!("job {id} never reached {what}: {j:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `/api/cluster` until `done` holds of it (30 s at most).
    pub async fn wait_cluster(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let c = self.get_json("/api/cluster").await;
            if done(&c) {
                return c;
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!("the cluster never showed {what}: {c:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until `GET /api/jobs/<id>` answers 410 (retention deleted the
    /// job); returns its message. Panics after 30 s.
    pub async fn wait_gone(&self, id: u64) -> String {
        let start = Instant::now();
        loop {
            let r = self
                .client
                .get(self.url(&format!("/api/jobs/{id}")))
                .send()
                .await
                .unwrap();
            if r.status() == 410 {
                let body: Value = r.json().await.unwrap();
                return body["error"].as_str().unwrap_or_default().to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "job {id} was never deleted (last status {})",
                r.status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_state(&self, id: u64, state: &str) -> Value {
        self.wait_for(id, state, |j| j["state"] == state).await
    }

    /// Waits for the job to end and its archive to be ready.
    pub async fn wait_archived(&self, id: u64) -> Value {
        self.wait_for(id, "an archive", |j| !j["archive_size"].is_null())
            .await
    }

    pub async fn archive(&self, id: u64) -> Vec<(String, Vec<u8>)> {
        let r = self
            .client
            .get(self.url(&format!("/api/jobs/{id}/archive")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        untar(&r.bytes().await.unwrap())
    }

    pub fn sandbox(&self, id: u64, peer: u32) -> PathBuf {
        std::fs::canonicalize(self.dir.path())
            .unwrap()
            .join("jobs")
            .join(id.to_string())
            .join(format!("peer-{peer}"))
    }
}

pub fn untar(gz: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((name, data));
    }
    out
}

pub fn file<'a>(entries: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    &entries
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| {
            panic!(
                "{name} not in {:?}",
                entries.iter().map(|e| &e.0).collect::<Vec<_>>()
            )
        })
        .1
}

/// Where `--cgroup auto` makes the peers' cgroups of a dispatcher started
/// by this test process, if this machine lets it make them.
pub fn writable_cgroup_v2() -> Option<PathBuf> {
    let own = dispatcher::cgroup::own_cgroup()?;
    let probe = own.join(format!("dispatcher-probe-{}", std::process::id()));
    let ok = std::fs::create_dir(&probe).is_ok();
    let _ = std::fs::remove_dir(&probe);
    ok.then_some(own)
}

/// True while a process with this pid exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Runs `promtool check metrics` on the text; panics with its findings.
pub fn promtool_accepts(text: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is missing: install Debian's prometheus package (./dev test does)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the one sample named exactly `series` (name and labels).
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

/// `docs/grafana-dashboard.json` only queries metric families that `text`
/// (a full `/metrics`, Mesos included) holds, and every query is PromQL
/// that Prometheus' own parser takes (`promtool check rules`, with Grafana's
/// variables given values).
pub fn grafana_dashboard_matches(text: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    );
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let families: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for (i, p) in panels.iter().enumerate() {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{p}");
        for (k, t) in targets.iter().enumerate() {
            let expr = t["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("dispatcher_"))
                .collect();
            assert!(!names.is_empty(), "{expr}");
            for n in names {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| n.strip_suffix(s).filter(|f| families.contains(f)))
                    .unwrap_or(n);
                assert!(families.contains(family), "{n} (in {expr:?}) is not served");
            }
            let concrete = expr
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*");
            rules.push_str(&format!(
                "      - record: dashboard:p{i}_{k}\n        expr: {}\n",
                serde_json::to_string(&concrete).unwrap()
            ));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
