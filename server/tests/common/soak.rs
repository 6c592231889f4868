//! The kill soak: the real `dispatcher` binary is SIGKILLed at random
//! moments while uploads, submissions, kills and job runs are in flight,
//! restarted on the same data directory each time, and checked after every
//! restart:
//!
//! - every upload answered 2xx is present and its bytes hash to its sha256;
//! - every job answered 202 (SUBMITTED) exists;
//! - no job is RUNNING without a live peer process;
//! - no peer ran twice (each peer appends to its own run file);
//! - SQLite's `PRAGMA integrity_check` is `ok` (checked while it is down);
//! - nothing is left in `tmp/` once it is back up.
//!
//! `SOAK_KILLS` sets the number of kills (default 12, the suite's short
//! mode; the long mode is `SOAK_KILLS=200`). `SOAK_SEED` replays a run.
//! It prints its figures on one `soak:` line. Used by `tests/soak.rs`
//! (local backend) and `tests/mesos/soak.rs` (the test master).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A small deterministic generator (xorshift), so a seed replays a run.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Default)]
struct Acked {
    /// app name -> (uid, sha256) of every upload answered 2xx.
    uploads: Vec<(String, String, String)>,
    /// Job ids answered 202.
    jobs: BTreeSet<u64>,
    ops: BTreeMap<&'static str, u64>,
}

use crate::ports::free_port;

fn start(dir: &Path, port: u16, ports: &str, extra: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .args(["-d", dir.to_str().unwrap(), "-p", &port.to_string()])
        .args(["--cpus", "4", "--mem-mb", "4096", "--ports", ports])
        .args(["--kill-grace-secs", "1"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.with_extension("log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn()
        .expect("dispatcher starts")
}

async fn wait_up(c: &reqwest::Client, base: &str) {
    for _ in 0..400 {
        if let Ok(r) = c.get(format!("{base}/api/health")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the dispatcher did not come back up");
}

fn script(shared: &Path, extra: usize, rng: &mut Rng) -> Vec<u8> {
    let mut s = format!(
        "#!/bin/sh\nd={}\necho $$ > \"$d/pid-$DISPATCHER_JOB_ID-$DISPATCHER_PEER_INDEX\"\necho run >> \"$d/runs-$DISPATCHER_JOB_ID-$DISPATCHER_PEER_INDEX\"\nsleep {}\n",
        shared.display(),
        rng.below(3)
    )
    .into_bytes();
    s.push(b'#');
    // Random bytes after a comment line make each upload distinct.
    s.extend((0..extra).map(|_| b'a' + (rng.below(26) as u8)));
    s.push(b'\n');
    s
}

async fn workload(
    c: reqwest::Client,
    base: String,
    shared: PathBuf,
    acked: Arc<Mutex<Acked>>,
    mut rng: Rng,
) {
    loop {
        // A client's pace, not a flood: the backlog of waiting jobs would
        // otherwise grow with every round and a long soak with it.
        tokio::time::sleep(Duration::from_millis(rng.below(80))).await;
        let n = rng.below(10);
        if n < 3 {
            let name = format!("app{}", rng.below(4));
            // Mostly small programs, now and then a few MiB.
            let size = if rng.below(10) == 0 {
                3 << 20
            } else {
                64 << 10
            };
            let bytes = script(&shared, rng.below(size) as usize, &mut rng);
            let sha = hex::encode(Sha256::digest(&bytes));
            let part = reqwest::multipart::Part::bytes(bytes).file_name(name.clone());
            let form = reqwest::multipart::Form::new()
                .text("name", name.clone())
                .part("file", part);
            let Ok(r) = c
                .post(format!("{base}/api/apps"))
                .multipart(form)
                .send()
                .await
            else {
                continue;
            };
            let ok = r.status().is_success();
            let Ok(v) = r.json::<Value>().await else {
                continue;
            };
            if ok {
                let uid = v["version"]["uid"].as_str().unwrap().to_string();
                assert_eq!(v["version"]["sha256"], sha.as_str());
                let mut a = acked.lock().unwrap();
                a.uploads.push((name, uid, sha));
                *a.ops.entry("uploads").or_default() += 1;
            }
        } else if n < 8 {
            let app = {
                let a = acked.lock().unwrap();
                if a.uploads.is_empty() {
                    continue;
                }
                let i = rng.below(a.uploads.len() as u64) as usize;
                a.uploads[i].0.clone()
            };
            let peers = rng.below(3) + 1;
            let role = format!("name: r\npeers: {peers}\ncpu: 0.2\nmem: 0.016\n");
            let Ok(r) = c
                .post(format!("{base}/api/jobs"))
                .json(&json!({"app": app, "role_file": role}))
                .send()
                .await
            else {
                continue;
            };
            let ok = r.status() == 202;
            let Ok(v) = r.json::<Value>().await else {
                continue;
            };
            if ok {
                let mut a = acked.lock().unwrap();
                a.jobs.insert(v["id"].as_u64().unwrap());
                *a.ops.entry("submissions").or_default() += 1;
            }
        } else {
            let id = {
                let a = acked.lock().unwrap();
                let Some(&last) = a.jobs.iter().next_back() else {
                    continue;
                };
                last.saturating_sub(rng.below(5)).max(1)
            };
            if c.post(format!("{base}/api/jobs/{id}/kill"))
                .send()
                .await
                .is_ok()
            {
                *acked.lock().unwrap().ops.entry("kills").or_default() += 1;
            }
        }
    }
}

fn integrity(dir: &Path) -> String {
    let db = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "db" || x == "sqlite"))
        .expect("the database file");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .unwrap()
}

fn alive(pid: i32) -> bool {
    // A zombie has exited; only a live process counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Checks the invariants against a running server; returns how many checks ran.
async fn check(
    c: &reqwest::Client,
    base: &str,
    dir: &Path,
    shared: &Path,
    acked: &Acked,
) -> Result<u64, String> {
    let mut checks = 0;
    let get = |url: String| async move {
        c.get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json::<Value>()
            .await
            .map_err(|e| e.to_string())
    };
    // Each app's versions once, each stored binary hashed once.
    let mut versions: BTreeMap<&str, Value> = BTreeMap::new();
    let mut hashed: BTreeSet<&str> = BTreeSet::new();
    for (app, uid, sha) in &acked.uploads {
        if !versions.contains_key(app.as_str()) {
            versions.insert(app, get(format!("{base}/api/apps/{app}")).await?);
        }
        let v = &versions[app.as_str()];
        let found = v["versions"].as_array().is_some_and(|vs| {
            vs.iter()
                .any(|x| x["uid"] == uid.as_str() && x["sha256"] == sha.as_str())
        });
        if !found {
            return Err(format!("acknowledged upload {app} {uid} is missing: {v}"));
        }
        checks += 1;
        if hashed.insert(sha) {
            let bytes = std::fs::read(dir.join("blobs").join(&sha[..2]).join(sha))
                .map_err(|e| format!("blob {sha}: {e}"))?;
            if hex::encode(Sha256::digest(&bytes)) != *sha {
                return Err(format!("blob {sha} does not hash to its name"));
            }
            checks += 1;
        }
    }
    // Every job, a page at a time.
    let mut states: BTreeMap<u64, String> = BTreeMap::new();
    let mut offset = 0;
    loop {
        let page = get(format!("{base}/api/jobs?limit=1000&offset={offset}")).await?;
        let jobs = page["jobs"].as_array().cloned().unwrap_or_default();
        for j in &jobs {
            states.insert(
                j["id"].as_u64().unwrap_or(0),
                j["state"].as_str().unwrap_or("").to_string(),
            );
        }
        offset += jobs.len();
        if jobs.len() < 1000 {
            break;
        }
    }
    for id in &acked.jobs {
        let Some(state) = states.get(id) else {
            return Err(format!("acknowledged job {id} is missing"));
        };
        checks += 1;
        if state != "RUNNING" {
            continue;
        }
        let j = get(format!("{base}/api/jobs/{id}")).await?;
        // A job being launched (peers STARTING, pid files not yet written)
        // or just ending (a peer exited, its end not yet recorded) is fine;
        // one that stays RUNNING for 3 s with no live peer process is not.
        let mut j = j;
        let mut live = false;
        for _ in 0..15 {
            if j["state"] != "RUNNING" {
                live = true;
                break;
            }
            for p in j["peers"].as_array().unwrap() {
                if p["state"] != "RUNNING" && p["state"] != "STARTING" {
                    continue;
                }
                let pid_file = shared.join(format!("pid-{id}-{}", p["index"]));
                if let Some(pid) = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    live |= alive(pid);
                }
            }
            if live {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            j = get(format!("{base}/api/jobs/{id}")).await?;
        }
        if !live {
            return Err(format!(
                "job {id} stayed RUNNING for 3 s without a live peer: {j}"
            ));
        }
        checks += 1;
    }
    for e in std::fs::read_dir(shared).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("runs-") {
            let runs = std::fs::read_to_string(e.path()).unwrap_or_default();
            if runs.lines().count() > 1 {
                return Err(format!("peer {name} ran {} times", runs.lines().count()));
            }
            checks += 1;
        }
    }
    let tmp: Vec<_> = std::fs::read_dir(dir.join("tmp"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    if !tmp.is_empty() {
        return Err(format!("tmp/ holds {tmp:?} after a restart"));
    }
    Ok(checks + 1)
}

/// Runs the soak with these extra dispatcher flags (the backend); `label`
/// names it on the figures line.
pub async fn soak(label: &str, extra: &[String]) {
    let kills: u64 = std::env::var("SOAK_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("soak ({label}): seed {seed} (SOAK_SEED={seed} replays it)");
    let data = tempfile::tempdir().unwrap();
    let shared = tempfile::tempdir().unwrap();
    let port = free_port();
    let ports = "47000-47199";
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut checks = 0u64;
    let mut in_flight_at_kill = 0u64;
    let mut violations = Vec::new();
    for round in 0..kills {
        let mut server = start(data.path(), port, ports, extra);
        wait_up(&c, &base).await;
        let snapshot = {
            let a = acked.lock().unwrap();
            Acked {
                uploads: a.uploads.clone(),
                jobs: a.jobs.clone(),
                ops: BTreeMap::new(),
            }
        };
        match check(&c, &base, data.path(), shared.path(), &snapshot).await {
            Ok(n) => checks += n,
            Err(v) => violations.push(format!("after kill {round}: {v}")),
        }
        if !violations.is_empty() {
            let _ = server.kill();
            let _ = server.wait();
            break;
        }
        // Three clients at once, then a kill at a random moment.
        let clients: Vec<_> = (0..3)
            .map(|i| {
                tokio::spawn(workload(
                    c.clone(),
                    base.clone(),
                    shared.path().to_path_buf(),
                    acked.clone(),
                    Rng((rng.next() + i) | 1),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200 + rng.below(1500))).await;
        server.kill().unwrap();
        server.wait().unwrap();
        in_flight_at_kill += clients.len() as u64;
        // Aborted and awaited: a client still running could send its next
        // request to the restarted server while the check looks at tmp/.
        for t in &clients {
            t.abort();
        }
        for t in clients {
            let _ = t.await;
        }
        let ic = integrity(data.path());
        checks += 1;
        if ic != "ok" {
            violations.push(format!("after kill {round}: integrity_check says {ic}"));
            break;
        }
    }
    // One last start: everything acknowledged is there, and every job ends.
    let mut server = start(data.path(), port, ports, extra);
    wait_up(&c, &base).await;
    let a = {
        let a = acked.lock().unwrap();
        Acked {
            uploads: a.uploads.clone(),
            jobs: a.jobs.clone(),
            ops: a.ops.clone(),
        }
    };
    if violations.is_empty() {
        match check(&c, &base, data.path(), shared.path(), &a).await {
            Ok(n) => checks += n,
            Err(v) => violations.push(format!("at the end: {v}")),
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    let peers_run = std::fs::read_dir(shared.path())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("runs-"))
                .count()
        })
        .unwrap_or(0);
    let figures = format!(
        "soak: backend={label} kills={kills} peers_run={peers_run} uploads_acked={} jobs_acked={} submissions={} kills_sent={} clients_in_flight_at_kills={in_flight_at_kill} invariant_checks={checks} violations={} seconds={:.0}",
        a.uploads.len(),
        a.jobs.len(),
        a.ops.get("submissions").copied().unwrap_or(0),
        a.ops.get("kills").copied().unwrap_or(0),
        violations.len(),
        started.elapsed().as_secs_f64()
    );
    println!("{figures}");
    // The test harness keeps stdout of passing tests; `./dev test` prints this file.
    let _ = std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("soak-{label}.txt")),
        format!("{figures}\n"),
    );
    if !violations.is_empty() {
        // Keep what is needed to see why.
        let kept = data.keep();
        let shared = shared.keep();
        panic!(
            "seed {seed}: {}\n(data directory kept at {}, its log at {}, peers' run files in {})",
            violations.join("\n"),
            kept.display(),
            kept.with_extension("log").display(),
            shared.display()
        );
    }
    assert!(
        a.jobs.len() as u64 >= kills / 2,
        "the workload ran: {} jobs",
        a.jobs.len()
    );
}
