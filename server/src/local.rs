//! The local backend: this machine is the one host; peers are child
//! processes, each in its own process group and sandbox directory.
//!
//! It offers what is free of the machine's configured cpus, memory and port
//! range, starts the peers a placement names, and reports each start and exit
//! to the runner's queue. Killing a peer signals its whole process group and,
//! when it has one, its cgroup (which also holds what left the group):
//! SIGTERM, then SIGKILL after a grace period.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use app::model::PeerState;
use app::peer::{PeerSpec, CONFIG_FILE};
use app::placement::{remove_port, Offer, PortRange};
use tokio::sync::mpsc;

use crate::cgroup::{self, Cgroups};
use crate::queue::Msg;
use crate::sched::PeerUpdate;

/// What this machine offers to jobs.
#[derive(Clone, Debug)]
pub struct Capacity {
    pub host: String,
    pub address: String,
    pub cpus_milli: u64,
    pub mem_mb: u64,
    pub ports: PortRange,
}

struct Live {
    pid: u32,
    cgroup: Option<PathBuf>,
    cpus_milli: u64,
    mem_mb: u64,
    port: u16,
    killing: bool,
}

pub struct LocalBackend {
    cap: Capacity,
    live: HashMap<(u64, u32), Live>,
    tx: mpsc::UnboundedSender<Msg>,
    grace: Duration,
    cgroups: Option<Arc<Cgroups>>,
}

/// A live peer's process group and cgroup, to signal.
type Stop = (u32, Option<PathBuf>);

impl LocalBackend {
    pub fn new(
        cap: Capacity,
        tx: mpsc::UnboundedSender<Msg>,
        grace: Duration,
        cgroups: Option<Arc<Cgroups>>,
    ) -> LocalBackend {
        LocalBackend {
            cap,
            live: HashMap::new(),
            tx,
            grace,
            cgroups,
        }
    }

    /// Where peers' cgroups are made, if they get any.
    pub fn cgroups(&self) -> Option<&Cgroups> {
        self.cgroups.as_deref()
    }

    /// Live peers' process groups (each peer leads its own).
    pub fn targets(&self) -> Vec<crate::usage::Target> {
        self.live
            .iter()
            .filter(|(_, l)| !l.killing)
            .map(|(&(job, peer), l)| crate::usage::Target::Process {
                job,
                peer,
                pgid: l.pid as i32,
                cgroup: l.cgroup.clone(),
            })
            .collect()
    }

    pub fn capacity(&self) -> &Capacity {
        &self.cap
    }

    /// The whole machine as one offer, as if nothing ran.
    pub fn total_offer(&self) -> Offer {
        Offer {
            id: "local".into(),
            host: self.cap.host.clone(),
            address: self.cap.address.clone(),
            cpus_milli: self.cap.cpus_milli,
            mem_mb: self.cap.mem_mb,
            // Peers run as plain processes here: no GPU is handed out, so a
            // role asking for one is refused with "short of gpus".
            gpus: 0,
            ports: vec![self.cap.ports],
        }
    }

    /// What is free now.
    pub fn offer(&self) -> Offer {
        let mut o = self.total_offer();
        for l in self.live.values() {
            o.cpus_milli = o.cpus_milli.saturating_sub(l.cpus_milli);
            o.mem_mb = o.mem_mb.saturating_sub(l.mem_mb);
            o.ports = remove_port(&o.ports, l.port);
        }
        o
    }

    pub fn used(&self) -> (u64, u64, usize) {
        let cpus = self.live.values().map(|l| l.cpus_milli).sum();
        let mem = self.live.values().map(|l| l.mem_mb).sum();
        (cpus, mem, self.live.len())
    }

    /// Starts every peer of a job. Sandboxes are prepared first; a peer that
    /// cannot start is reported FAILED with the reason.
    pub async fn launch(
        &mut self,
        job: u64,
        job_dir: PathBuf,
        binary_src: PathBuf,
        binary: String,
        specs: Vec<PeerSpec>,
    ) -> Vec<(u32, Option<u32>)> {
        let prepared = {
            let specs = specs.clone();
            let (job_dir, binary) = (job_dir.clone(), binary.clone());
            tokio::task::spawn_blocking(move || {
                specs
                    .iter()
                    .map(|s| prepare_sandbox(&job_dir, &binary_src, &binary, s))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_else(|e| vec![Err(std::io::Error::other(e.to_string()))])
        };
        let mut pids = Vec::new();
        for (spec, prep) in specs.into_iter().zip(prepared) {
            let index = spec.index;
            let started = match prep {
                Ok(sandbox) => self.spawn(job, &spec, &sandbox),
                Err(e) => Err(format!("could not prepare the sandbox: {e}")),
            };
            match started {
                Ok(pid) => pids.push((index, Some(pid))),
                Err(reason) => {
                    tracing::warn!(job, peer = index, %reason, "peer did not start");
                    let _ = self.tx.send(Msg::Peer {
                        job,
                        index,
                        update: PeerUpdate {
                            state: PeerState::Failed,
                            exit_code: None,
                            signal: None,
                            reason,
                        },
                    });
                    pids.push((index, None));
                }
            }
        }
        pids
    }

    fn spawn(&mut self, job: u64, spec: &PeerSpec, sandbox: &Path) -> Result<u32, String> {
        let cg = self.cgroups.as_ref().and_then(|c| {
            c.create(job, spec.index)
                .map_err(|e| tracing::warn!(job, peer = spec.index, error = %e, "no cgroup for the peer; it runs as a process group"))
                .ok()
        });
        match self.spawn_in(job, spec, sandbox, cg.as_deref()) {
            Err(e) if cg.is_some() => {
                // Entering the cgroup failed (or exec did): nothing of the
                // peer ran, so it can start again without one.
                tracing::warn!(job, peer = spec.index, error = %e, "could not start the peer in its cgroup; trying without");
                if let Some(cg) = &cg {
                    cgroup::remove_when_empty(cg, Duration::ZERO);
                }
                self.spawn_in(job, spec, sandbox, None)
            }
            r => r,
        }
    }

    fn spawn_in(
        &mut self,
        job: u64,
        spec: &PeerSpec,
        sandbox: &Path,
        cg: Option<&Path>,
    ) -> Result<u32, String> {
        let stdout = std::fs::File::create(sandbox.join("stdout")).map_err(|e| e.to_string())?;
        let stderr = std::fs::File::create(sandbox.join("stderr")).map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&spec.command)
            .current_dir(sandbox)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("DISPATCHER_SANDBOX", sandbox)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        if let Some(cg) = cg {
            let enter = cgroup::Enter::new(cg).map_err(|e| e.to_string())?;
            // SAFETY: `enter` makes only async-signal-safe calls.
            unsafe {
                cmd.pre_exec(move || enter.enter());
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("could not start /bin/sh: {e}"))?;
        let pid = child
            .id()
            .ok_or("the peer exited before it could be watched")?;
        self.live.insert(
            (job, spec.index),
            Live {
                pid,
                cgroup: cg.map(Path::to_path_buf),
                cpus_milli: spec.cpus_milli as u64,
                mem_mb: spec.mem_mb,
                port: spec.port,
                killing: false,
            },
        );
        let tx = self.tx.clone();
        let index = spec.index;
        let _ = tx.send(Msg::Peer {
            job,
            index,
            update: PeerUpdate {
                state: PeerState::Running,
                exit_code: None,
                signal: None,
                reason: String::new(),
            },
        });
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tx.send(Msg::Exited {
                job,
                index,
                status: status.map_err(|e| e.to_string()),
            });
        });
        Ok(pid)
    }

    /// Turns a process exit into a peer update and frees its resources.
    pub fn exited(
        &mut self,
        job: u64,
        index: u32,
        status: Result<std::process::ExitStatus, String>,
    ) -> PeerUpdate {
        let live = self.live.remove(&(job, index));
        let killing = live.as_ref().map(|l| l.killing).unwrap_or(false);
        // Children the peer left behind, in its group or its cgroup, go
        // with it; then the cgroup is removed.
        if let Some(l) = live {
            let stop = [(l.pid, l.cgroup)];
            signal(&stop, libc::SIGKILL);
            if let [(_, Some(cg))] = stop {
                tokio::task::spawn_blocking(move || {
                    cgroup::remove_when_empty(&cg, Duration::from_secs(5))
                });
            }
        }
        match status {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(0), _) => PeerUpdate {
                    state: PeerState::Finished,
                    exit_code: Some(0),
                    signal: None,
                    reason: String::new(),
                },
                (Some(c), _) if killing => PeerUpdate {
                    state: PeerState::Killed,
                    exit_code: Some(c),
                    signal: None,
                    reason: "stopped by the dispatcher".into(),
                },
                (Some(c), _) => PeerUpdate {
                    state: PeerState::Failed,
                    exit_code: Some(c),
                    signal: None,
                    reason: format!("exited with code {c}"),
                },
                (None, Some(sig)) if killing => PeerUpdate {
                    state: PeerState::Killed,
                    exit_code: None,
                    signal: Some(sig),
                    reason: "stopped by the dispatcher".into(),
                },
                (None, sig) => PeerUpdate {
                    state: PeerState::Failed,
                    exit_code: None,
                    signal: sig,
                    reason: format!("killed by signal {}", sig.unwrap_or(0)),
                },
            },
            Err(e) => PeerUpdate {
                state: PeerState::Lost,
                exit_code: None,
                signal: None,
                reason: format!("lost track of the process: {e}"),
            },
        }
    }

    /// SIGTERM to each peer's process group now, SIGKILL after the grace period.
    pub fn kill(&mut self, job: u64, peers: &[u32]) {
        let mut stop: Vec<Stop> = Vec::new();
        for idx in peers {
            if let Some(l) = self.live.get_mut(&(job, *idx)) {
                l.killing = true;
                stop.push((l.pid, l.cgroup.clone()));
            }
        }
        signal(&stop, libc::SIGTERM);
        let grace = self.grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            signal(&stop, libc::SIGKILL);
        });
    }

    /// Stops everything now (shutdown): SIGTERM, a moment, SIGKILL.
    pub async fn kill_all_now(&mut self) {
        let stop: Vec<Stop> = self
            .live
            .values()
            .map(|l| (l.pid, l.cgroup.clone()))
            .collect();
        signal(&stop, libc::SIGTERM);
        tokio::time::sleep(Duration::from_millis(200)).await;
        signal(&stop, libc::SIGKILL);
    }
}

/// Signals peers' process groups and cgroups (SIGKILL: the whole cgroup at
/// once).
fn signal(stop: &[Stop], sig: i32) {
    let groups: Vec<u32> = stop.iter().map(|s| s.0).collect();
    signal_groups(&groups, sig);
    for cg in stop.iter().filter_map(|s| s.1.as_deref()) {
        if sig == libc::SIGKILL {
            cgroup::kill(cg);
        } else {
            cgroup::signal(cg, sig);
        }
    }
}

pub fn signal_groups(pgids: &[u32], sig: i32) {
    for pgid in pgids {
        // SAFETY: killpg only sends a signal; a group that is gone gives ESRCH.
        unsafe {
            libc::killpg(*pgid as libc::pid_t, sig);
        }
    }
}

/// Creates `peer-<n>/` with the binary (hard-linked from the blob store when
/// possible) and `peer.yaml`.
fn prepare_sandbox(
    job_dir: &Path,
    binary_src: &Path,
    binary: &str,
    spec: &PeerSpec,
) -> std::io::Result<PathBuf> {
    let sandbox = job_dir.join(format!("peer-{}", spec.index));
    std::fs::create_dir_all(&sandbox)?;
    let dest = sandbox.join(binary);
    if !dest.exists() && std::fs::hard_link(binary_src, &dest).is_err() {
        std::fs::copy(binary_src, &dest)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::write(sandbox.join(CONFIG_FILE), spec.config())?;
    Ok(sandbox)
}

/// Lists a `k3_data` path on this machine: a directory's regular files
/// (sorted, hidden ones skipped), a file itself, or nothing if it is absent.
pub fn list_data(path: &str) -> Vec<String> {
    let p = Path::new(path);
    if p.is_file() {
        return vec![path.to_string()];
    }
    let Ok(rd) = std::fs::read_dir(p) else {
        return vec![];
    };
    let mut files: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path().to_string_lossy().to_string())
        .collect();
    files.sort();
    files
}

/// Stops peers a previous run of the dispatcher left behind: a process is
/// signalled only if its environment names this job, so a recycled pid is
/// never hit.
pub fn stop_leftovers(job: u64, pids: &[(u32, i64)]) -> usize {
    let marker = format!("DISPATCHER_JOB_ID={job}");
    let mut stopped = 0;
    for (_, pid) in pids {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
            signal_groups(&[*pid as u32], libc::SIGKILL);
            stopped += 1;
        }
    }
    stopped
}

/// This machine's memory in MB, from /proc/meminfo.
pub fn machine_mem_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(1024)
}

pub fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
