//! The real `dispatcher` binary for a benchmark: started on a free port
//! over a data directory, driven over HTTP, killed when dropped.

#![allow(dead_code)] // each benchmark uses its own part

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub base: String,
    pub client: reqwest::Client,
}

impl Server {
    /// Starts it with `-d dir -p <port>` and `extra`, and waits until it
    /// answers its health check.
    pub async fn start(dir: &std::path::Path, extra: &[&str]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_dispatcher"))
            .args(["-d", dir.to_str().unwrap(), "-p", &port.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dispatcher starts");
        let s = Server {
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        for _ in 0..400 {
            if s.client.get(s.url("/api/health")).send().await.is_ok() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the dispatcher did not answer");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Uploads a small app (a script) under `name`.
    pub async fn upload(&self, name: &str, script: &str) {
        let part =
            reqwest::multipart::Part::bytes(script.as_bytes().to_vec()).file_name(name.to_string());
        let r = self
            .client
            .post(self.url("/api/apps"))
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "upload: {}", r.status());
    }

    /// Submits a job; its id.
    pub async fn submit(&self, app: &str, role_file: &str) -> u64 {
        let j: serde_json::Value = self
            .client
            .post(self.url("/api/jobs"))
            .json(&serde_json::json!({"app": app, "role_file": role_file}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        j["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("not submitted: {j}"))
    }

    /// GET `path`, as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A job's state.
    pub async fn job_state(&self, id: u64) -> String {
        let j = self.get_json(&format!("/api/jobs/{id}")).await;
        j["state"].as_str().unwrap_or_default().to_string()
    }

    /// The id the next submitted job will get.
    pub async fn next_job_id(&self) -> u64 {
        let page = self.get_json("/api/jobs?limit=1").await;
        page["jobs"][0]["id"].as_u64().unwrap_or(0) + 1
    }

    /// A line of `/proc/<pid>/status`, e.g. `VmRSS:` (kB) or `Threads:`.
    pub fn status(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }
}

/// CPU time a process has used so far, in milliseconds: (user, kernel).
/// `pid` 0 is this process. From `/proc/<pid>/stat`, in clock ticks (10 ms).
#[allow(dead_code)]
pub fn cpu_ms(pid: u32) -> (f64, f64) {
    let path = if pid == 0 {
        "/proc/self/stat".to_string()
    } else {
        format!("/proc/{pid}/stat")
    };
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ms = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) * 10.0;
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    (ms(11), ms(12))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
