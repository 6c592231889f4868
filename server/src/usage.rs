//! Resource usage of running peers, sampled every `--usage-every-secs`.
//!
//! Local backend: a peer in a cgroup v2 of its own (see `cgroup`) is read
//! from its `cpu.stat` (every process it ever held) and memory. Otherwise
//! it leads its own process group; its CPU seconds (user + system, reaped
//! children included through `cutime`/`cstime`) and resident memory are
//! summed over the group's processes in `/proc`. Mesos: the agents'
//! `/monitor/statistics`, one request per agent per round, matched to a task
//! by executor id (scenarios/agent-monitor: cumulative CPU seconds, RSS of
//! the whole container, the command executor included).
//!
//! CPU is cumulative at the source: a sample's `cpu` is the cores used since
//! the previous one. Samples are stored (at most `db::USAGE_POINTS` per peer)
//! and announced as `usage` events on the job's stream.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::db::Db;
use crate::events::Bus;
use crate::mesos::files::Files;
use crate::runner::RunnerHandle;

/// A peer to sample.
#[derive(Clone, Debug)]
pub enum Target {
    /// A local peer: its cgroup when it has one, else its process group.
    Process {
        job: u64,
        peer: u32,
        pgid: i32,
        cgroup: Option<std::path::PathBuf>,
    },
    /// A Mesos task: found through the job's task rows.
    Task { job: u64, peer: u32 },
}

/// One sample of one peer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    pub job: u64,
    pub peer: u32,
    /// Milliseconds since the epoch.
    pub t_ms: u64,
    /// Cores used since the previous sample.
    pub cpu: f64,
    pub rss_bytes: u64,
}

impl Sample {
    /// As the usage route and the `usage` events give it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "peer": self.peer,
            "time": rfc3339(self.t_ms),
            "cpu": (self.cpu * 1000.0).round() / 1000.0,
            "rss_bytes": self.rss_bytes,
        })
    }
}

pub fn rfc3339(t_ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(t_ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t_ms.to_string())
}

/// CPU seconds and resident bytes of a process group, read from `/proc`.
pub fn process_group(pgid: i32) -> Option<(f64, u64)> {
    process_groups(&[pgid]).remove(&pgid)
}

/// What `/proc/<pid>/stat` says of one process.
pub struct ProcStat {
    pub pgrp: i32,
    /// Its own CPU seconds and those of the children it reaped.
    pub cpu_secs: f64,
    pub rss_pages: u64,
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(stat: &str) -> Option<ProcStat> {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // The fields after the command, which is in parentheses and may hold
    // anything.
    let (_, rest) = stat.rsplit_once(") ")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.len() < 22 {
        return None;
    }
    let n = |i: usize| f[i].parse::<f64>().unwrap_or(0.0);
    Some(ProcStat {
        pgrp: f[2].parse().ok()?,
        cpu_secs: (n(11) + n(12) + n(13) + n(14)) / tick,
        rss_pages: f[21].parse().unwrap_or(0),
    })
}

/// CPU seconds and resident bytes of each of these process groups, in one
/// pass over `/proc` (a round costs one scan, whatever the peer count).
pub fn process_groups(pgids: &[i32]) -> HashMap<i32, (f64, u64)> {
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let wanted: std::collections::HashSet<i32> = pgids.iter().copied().collect();
    let mut out: HashMap<i32, (f64, u64)> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Some(s) = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
        else {
            continue;
        };
        if !wanted.contains(&s.pgrp) {
            continue;
        }
        let e = out.entry(s.pgrp).or_default();
        e.0 += s.cpu_secs;
        e.1 += s.rss_pages * page;
    }
    out
}

/// Cumulative readings (CPU seconds, resident bytes, when in seconds) of
/// every target that could be read.
async fn read(
    db: &Db,
    files: Option<&Files>,
    targets: &[Target],
    tasks: &mut HashMap<u64, Vec<crate::db::TaskRow>>,
) -> Vec<((u64, u32), f64, u64, f64)> {
    let now = || crate::util::now_ms() as f64 / 1000.0;
    let mut out = Vec::new();
    // Mesos targets, by agent: one request each.
    let mut by_agent: HashMap<String, Vec<(u64, u32, String)>> = HashMap::new();
    let local: Vec<(u64, u32, i32, Option<std::path::PathBuf>)> = targets
        .iter()
        .filter_map(|t| match t {
            Target::Process {
                job,
                peer,
                pgid,
                cgroup,
            } => Some((*job, *peer, *pgid, cgroup.clone())),
            Target::Task { .. } => None,
        })
        .collect();
    if !local.is_empty() {
        let at = now();
        let read = tokio::task::spawn_blocking(move || {
            let pgids: Vec<i32> = local
                .iter()
                .filter(|l| l.3.is_none())
                .map(|l| l.2)
                .collect();
            let groups = if pgids.is_empty() {
                HashMap::new()
            } else {
                process_groups(&pgids)
            };
            local
                .into_iter()
                .filter_map(|(job, peer, pgid, cg)| {
                    let got = match cg {
                        Some(cg) => crate::cgroup::usage(&cg),
                        None => groups.get(&pgid).copied(),
                    };
                    got.map(|(cpu, rss)| ((job, peer), cpu, rss))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        out.extend(read.into_iter().map(|(k, cpu, rss)| (k, cpu, rss, at)));
    }
    for t in targets {
        match t {
            Target::Process { .. } => {}
            &Target::Task { job, peer } => {
                if let std::collections::hash_map::Entry::Vacant(e) = tasks.entry(job) {
                    if let Ok(rows) = db.call(move |c| crate::db::tasks_of(c, job)).await {
                        e.insert(rows);
                    }
                }
                if let Some(row) = tasks
                    .get(&job)
                    .and_then(|r| r.iter().find(|r| r.idx == peer))
                {
                    by_agent.entry(row.agent_url.clone()).or_default().push((
                        job,
                        peer,
                        row.task_id.clone(),
                    ));
                }
            }
        }
    }
    let Some(files) = files else {
        return out;
    };
    for (agent, wanted) in by_agent {
        match files.monitor_statistics(&agent).await {
            Ok(entries) => {
                for (job, peer, task) in wanted {
                    if let Some(e) = entries.iter().find(|e| e.executor_id == task) {
                        let s = &e.statistics;
                        out.push((
                            (job, peer),
                            s.cpus_user_time_secs + s.cpus_system_time_secs,
                            s.mem_rss_bytes,
                            s.timestamp,
                        ));
                    }
                }
            }
            Err(e) => tracing::debug!(%agent, error = %e, "cannot read the agent's usage"),
        }
    }
    out
}

/// Samples every running peer every `every` until the server stops.
pub fn spawn_sampler(
    bus: Bus,
    runner: RunnerHandle,
    files: Option<Files>,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The previous cumulative reading of each peer: (CPU seconds, when).
        let mut prev: HashMap<(u64, u32), (f64, f64)> = HashMap::new();
        let mut tasks: HashMap<u64, Vec<crate::db::TaskRow>> = HashMap::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let targets = runner.targets().await;
            let live: std::collections::HashSet<(u64, u32)> = targets
                .iter()
                .map(|t| match *t {
                    Target::Process { job, peer, .. } | Target::Task { job, peer } => (job, peer),
                })
                .collect();
            prev.retain(|k, _| live.contains(k));
            tasks.retain(|job, _| live.iter().any(|(j, _)| j == job));
            let readings = read(bus.db(), files.as_ref(), &targets, &mut tasks).await;
            let mut samples = Vec::new();
            for (key, cpu_secs, rss, at) in readings {
                if let Some((p_cpu, p_at)) = prev.insert(key, (cpu_secs, at)) {
                    if at > p_at {
                        samples.push(Sample {
                            job: key.0,
                            peer: key.1,
                            t_ms: (at * 1000.0) as u64,
                            cpu: ((cpu_secs - p_cpu) / (at - p_at)).max(0.0),
                            rss_bytes: rss,
                        });
                    }
                }
            }
            if samples.is_empty() {
                continue;
            }
            let stored = samples.clone();
            if let Err(e) = bus
                .db()
                .call(move |c| crate::db::insert_usage(c, &stored))
                .await
            {
                tracing::error!(error = %e, "could not store usage samples");
                continue;
            }
            for s in samples {
                bus.publish_usage(s);
            }
        }
    });
}

/// A peer's samples as CSV, for its archive.
pub fn csv(samples: &[Sample]) -> String {
    let mut out = String::from("time,cpu,rss_bytes\n");
    for s in samples {
        out.push_str(&format!(
            "{},{:.3},{}\n",
            rfc3339(s.t_ms),
            s.cpu,
            s.rss_bytes
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_group_is_read_and_a_missing_one_is_none() {
        let me = unsafe { libc::getpgrp() };
        let (cpu, rss) = process_group(me).expect("the test's own group");
        assert!(cpu >= 0.0 && rss > 0);
        assert!(process_group(i32::MAX).is_none());
    }

    #[test]
    fn csv_has_a_header_and_one_line_per_sample() {
        let s = Sample {
            job: 1,
            peer: 0,
            t_ms: 1_796_193_864_163,
            cpu: 0.97,
            rss_bytes: 671_154_176,
        };
        assert_eq!(
            csv(&[s]),
            "time,cpu,rss_bytes\n2026-12-02T06:44:24.163Z,0.970,671154176\n"
        );
    }
}
