//! The scheduling core: a pure state machine `(state, input) -> actions`.
//!
//! It owns the queue of waiting jobs and the life of running ones. It never
//! touches the network, the disk or the clock: the driver (`runner`) feeds it
//! inputs (submissions, offers of free resources, peer updates, kills,
//! ticks carrying the time) and carries out the actions it returns, in order.
//! Tests drive it by chaining inputs and looking at the actions.

use std::collections::BTreeMap;
use std::sync::Arc;

use app::model::{EventKind, JobState, PeerState, RetryOn};
use app::placement::{place, subtract, Offer, Placement};
use app::RoleFile;

#[derive(Clone, Debug, PartialEq)]
pub struct PeerUpdate {
    pub state: PeerState,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: String,
}

/// When a failed attempt is tried again.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Retry {
    /// Attempts after the first.
    pub retries: u32,
    pub on: RetryOn,
    /// The wait before the second attempt; it doubles for each one after,
    /// up to `MAX_BACKOFF_S`.
    pub backoff_s: u64,
}

pub const MAX_BACKOFF_S: u64 = 300;

impl Retry {
    /// The wait after attempt `n` failed.
    pub fn backoff_after(&self, n: u32) -> u64 {
        let doubled = self
            .backoff_s
            .saturating_mul(1u64 << (n.saturating_sub(1)).min(20));
        doubled.min(MAX_BACKOFF_S.max(self.backoff_s))
    }
}

#[derive(Clone, Debug)]
pub enum Input {
    Submit {
        job: u64,
        roles: Arc<RoleFile>,
        time_limit: Option<u64>,
        /// 1 for a new job; more for one that was retried before a restart.
        attempt: u32,
        retry: Retry,
    },
    /// Free resources now; the core places waiting jobs onto them.
    Offers(Vec<Offer>),
    Kill {
        job: u64,
        reason: String,
    },
    Peer {
        job: u64,
        index: u32,
        update: PeerUpdate,
    },
    Tick {
        now_ms: u64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Persist and broadcast.
    Record { job: u64, kind: EventKind },
    /// Start every peer of the placement.
    Launch {
        job: u64,
        attempt: u32,
        placement: Placement,
    },
    /// Attempt `attempt` failed and every peer of it has ended; the job
    /// will be placed again. Its sandboxes are kept apart.
    Retry { job: u64, attempt: u32 },
    /// Stop these peers.
    Kill { job: u64, peers: Vec<u32> },
    /// The job has ended: release what it held and archive its sandboxes.
    Ended { job: u64, state: JobState },
}

#[derive(Debug)]
struct PeerRt {
    role: String,
    host: String,
    port: u16,
    state: PeerState,
}

#[derive(Debug)]
struct JobRt {
    roles: Arc<RoleFile>,
    state: JobState,
    wait_reason: String,
    time_limit: Option<u64>,
    deadline_ms: Option<u64>,
    peers: Vec<PeerRt>,
    /// Why the job is being brought down, when it is.
    failure: Option<String>,
    /// The failure is the infrastructure's (a peer LOST), not the program's.
    lost: bool,
    killed: Option<String>,
    attempt: u32,
    retry: Retry,
    /// While waiting to be retried: when the job goes back in the queue.
    retry_at_ms: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Core {
    jobs: BTreeMap<u64, JobRt>,
    /// Waiting jobs, oldest first.
    queue: Vec<u64>,
    now_ms: u64,
    /// A retried job went back in the queue since the last look.
    requeued: bool,
}

impl Core {
    pub fn new() -> Core {
        Core::default()
    }

    /// Jobs whose peers were launched and have not all ended.
    pub fn running(&self) -> Vec<u64> {
        self.jobs
            .iter()
            .filter(|(_, j)| j.state == JobState::Running)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// True once after a retried job went back in the queue: offers are
    /// wanted again.
    pub fn take_requeued(&mut self) -> bool {
        std::mem::take(&mut self.requeued)
    }

    pub fn is_active(&self, job: u64) -> bool {
        self.jobs.contains_key(&job)
    }

    /// Why each waiting job waits, oldest first.
    pub fn wait_reasons(&self) -> Vec<(u64, String)> {
        self.queue
            .iter()
            .map(|j| (*j, self.jobs[j].wait_reason.clone()))
            .collect()
    }

    /// The live peers of a running job.
    pub fn live(&self, job: u64) -> Vec<u32> {
        self.jobs.get(&job).map(live_peers).unwrap_or_default()
    }

    /// Takes back a job that was running before the dispatcher restarted
    /// (its peers kept running on the cluster). Peers that had ended keep
    /// their state; a job with none left ends now.
    #[allow(clippy::too_many_arguments)]
    pub fn adopt(
        &mut self,
        job: u64,
        roles: Arc<RoleFile>,
        time_limit: Option<u64>,
        attempt: u32,
        retry: Retry,
        peers: Vec<(String, String, u16, PeerState)>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let failed = peers
            .iter()
            .enumerate()
            .find(|(_, p)| p.3.is_terminal() && p.3 != PeerState::Finished)
            .map(|(i, p)| {
                (
                    format!("peer {i} (role '{}') ended {}", p.0, p.3),
                    p.3 == PeerState::Lost,
                )
            });
        self.jobs.insert(
            job,
            JobRt {
                roles,
                state: JobState::Running,
                wait_reason: String::new(),
                time_limit,
                deadline_ms: time_limit.map(|s| self.now_ms + s * 1000),
                peers: peers
                    .into_iter()
                    .map(|(role, host, port, state)| PeerRt {
                        role,
                        host,
                        port,
                        state,
                    })
                    .collect(),
                failure: None,
                lost: false,
                killed: None,
                attempt,
                retry,
                retry_at_ms: None,
            },
        );
        if let Some((f, lost)) = failed {
            self.bring_down(job, f, lost, &mut out);
        }
        self.finish_if_done(job, &mut out);
        out
    }

    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Submit {
                job,
                roles,
                time_limit,
                attempt,
                retry,
            } => {
                self.jobs.insert(
                    job,
                    JobRt {
                        roles,
                        state: JobState::Submitted,
                        wait_reason: String::new(),
                        time_limit,
                        deadline_ms: None,
                        peers: vec![],
                        failure: None,
                        lost: false,
                        killed: None,
                        attempt: attempt.max(1),
                        retry,
                        retry_at_ms: None,
                    },
                );
                self.queue.push(job);
            }
            Input::Offers(offers) => self.place_waiting(offers, &mut out),
            Input::Kill { job, reason } => self.kill(job, reason, &mut out),
            Input::Peer { job, index, update } => self.peer_update(job, index, update, &mut out),
            Input::Tick { now_ms } => {
                self.now_ms = now_ms;
                let expired: Vec<u64> = self
                    .jobs
                    .iter()
                    .filter(|(_, j)| {
                        j.state == JobState::Running
                            && j.failure.is_none()
                            && j.killed.is_none()
                            && j.deadline_ms.is_some_and(|d| d <= now_ms)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in expired {
                    let limit = self.jobs[&id].time_limit.unwrap_or_default();
                    self.bring_down(
                        id,
                        format!("time limit of {limit}s exceeded"),
                        false,
                        &mut out,
                    );
                }
                let due: Vec<u64> = self
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.retry_at_ms.is_some_and(|t| t <= now_ms))
                    .map(|(id, _)| *id)
                    .collect();
                for id in due {
                    if let Some(j) = self.jobs.get_mut(&id) {
                        j.retry_at_ms = None;
                    }
                    // FIFO by submission: the retried job keeps its place.
                    let at = self.queue.partition_point(|q| *q < id);
                    self.queue.insert(at, id);
                    self.requeued = true;
                }
            }
        }
        out
    }

    /// FIFO, but a job that fits may pass one that does not (as K3 did).
    fn place_waiting(&mut self, mut offers: Vec<Offer>, out: &mut Vec<Action>) {
        let mut still = Vec::new();
        for id in std::mem::take(&mut self.queue) {
            let job = self.jobs.get_mut(&id).expect("queued job exists");
            match place(job.roles.roles(), &offers) {
                Ok(placement) => {
                    offers = subtract(&offers, &placement);
                    job.state = JobState::Running;
                    job.deadline_ms = job.time_limit.map(|s| self.now_ms + s * 1000);
                    job.peers = placement
                        .peers
                        .iter()
                        .map(|p| PeerRt {
                            role: job.roles.roles()[p.role].name.clone(),
                            host: p.host.clone(),
                            port: p.port,
                            state: PeerState::Starting,
                        })
                        .collect();
                    out.push(Action::Record {
                        job: id,
                        kind: EventKind::Job {
                            state: JobState::Running,
                            reason: String::new(),
                        },
                    });
                    for (i, p) in job.peers.iter().enumerate() {
                        out.push(Action::Record {
                            job: id,
                            kind: peer_event(i as u32, p, None, None, String::new()),
                        });
                    }
                    out.push(Action::Launch {
                        job: id,
                        attempt: job.attempt,
                        placement,
                    });
                }
                Err(short) => {
                    let reason = short.to_string();
                    if job.state != JobState::Waiting || job.wait_reason != reason {
                        job.state = JobState::Waiting;
                        job.wait_reason = reason.clone();
                        out.push(Action::Record {
                            job: id,
                            kind: EventKind::Job {
                                state: JobState::Waiting,
                                reason,
                            },
                        });
                    }
                    still.push(id);
                }
            }
        }
        self.queue = still;
    }

    fn kill(&mut self, id: u64, reason: String, out: &mut Vec<Action>) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if job.state == JobState::Running {
            if job.killed.is_none() {
                job.killed = Some(reason);
                let live = live_peers(job);
                if !live.is_empty() {
                    out.push(Action::Kill {
                        job: id,
                        peers: live,
                    });
                }
            }
            return;
        }
        self.queue.retain(|j| *j != id);
        self.jobs.remove(&id);
        out.push(Action::Record {
            job: id,
            kind: EventKind::Job {
                state: JobState::Killed,
                reason,
            },
        });
        out.push(Action::Ended {
            job: id,
            state: JobState::Killed,
        });
    }

    fn bring_down(&mut self, id: u64, reason: String, lost: bool, out: &mut Vec<Action>) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if job.failure.is_some() || job.killed.is_some() {
            return;
        }
        job.failure = Some(reason);
        job.lost = lost;
        let live = live_peers(job);
        if !live.is_empty() {
            out.push(Action::Kill {
                job: id,
                peers: live,
            });
        }
    }

    fn peer_update(&mut self, id: u64, index: u32, u: PeerUpdate, out: &mut Vec<Action>) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let Some(peer) = job.peers.get_mut(index as usize) else {
            return;
        };
        // Updates about a peer that already ended are stale (a late exit
        // after a kill, a duplicate): the first terminal state stands.
        if peer.state.is_terminal() || peer.state == u.state {
            return;
        }
        peer.state = u.state;
        let (role, state) = (peer.role.clone(), u.state);
        let peer_kind = peer_event(index, peer, u.exit_code, u.signal, u.reason.clone());
        out.push(Action::Record {
            job: id,
            kind: peer_kind,
        });
        if state.is_terminal() && state != PeerState::Finished {
            let what = match (u.exit_code, u.signal) {
                (Some(c), _) => format!("exited with code {c}"),
                (None, Some(s)) => format!("was killed by signal {s}"),
                _ if u.reason.is_empty() => format!("ended {state}"),
                _ => u.reason.clone(),
            };
            self.bring_down(
                id,
                format!("peer {index} (role '{role}') {what}"),
                state == PeerState::Lost,
                out,
            );
        }
        self.finish_if_done(id, out);
    }

    /// Ends the job once none of its peers can run any more.
    fn finish_if_done(&mut self, id: u64, out: &mut Vec<Action>) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        if job.peers.iter().all(|p| p.state.is_terminal()) {
            if let (None, Some(failure)) = (&job.killed, &job.failure) {
                if job.attempt <= job.retry.retries && job.retry.on.covers(job.lost) {
                    let n = job.attempt;
                    let wait = job.retry.backoff_after(n);
                    let reason = failure.clone();
                    let lost = job.lost;
                    let job = self.jobs.get_mut(&id).expect("job exists");
                    job.attempt = n + 1;
                    job.failure = None;
                    job.lost = false;
                    job.state = JobState::Waiting;
                    job.deadline_ms = None;
                    job.retry_at_ms = Some(self.now_ms + wait * 1000);
                    let of = job.retry.retries + 1;
                    job.wait_reason = format!(
                        "attempt {n} failed ({reason}); attempt {} of {of} in {wait}s",
                        n + 1
                    );
                    out.push(Action::Record {
                        job: id,
                        kind: EventKind::Attempt {
                            attempt: n,
                            state: JobState::Failed,
                            reason,
                            lost,
                            retry_in_s: wait,
                        },
                    });
                    out.push(Action::Record {
                        job: id,
                        kind: EventKind::Job {
                            state: JobState::Waiting,
                            reason: job.wait_reason.clone(),
                        },
                    });
                    out.push(Action::Retry {
                        job: id,
                        attempt: n,
                    });
                    return;
                }
            }
            let (state, reason) = match (&job.killed, &job.failure) {
                (Some(k), _) => (JobState::Killed, k.clone()),
                (None, Some(f)) => (JobState::Failed, f.clone()),
                (None, None) => (JobState::Finished, String::new()),
            };
            self.jobs.remove(&id);
            out.push(Action::Record {
                job: id,
                kind: EventKind::Job { state, reason },
            });
            out.push(Action::Ended { job: id, state });
        }
    }
}

fn live_peers(job: &JobRt) -> Vec<u32> {
    job.peers
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.state.is_terminal())
        .map(|(i, _)| i as u32)
        .collect()
}

fn peer_event(
    index: u32,
    p: &PeerRt,
    exit_code: Option<i32>,
    signal: Option<i32>,
    reason: String,
) -> EventKind {
    EventKind::Peer {
        index,
        role: p.role.clone(),
        host: p.host.clone(),
        port: p.port,
        state: p.state,
        exit_code,
        signal,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::placement::PortRange;

    fn roles(src: &str) -> Arc<RoleFile> {
        Arc::new(RoleFile::parse(src).unwrap().0)
    }

    fn host(cpus: u64) -> Vec<Offer> {
        vec![Offer {
            id: "local".into(),
            host: "h".into(),
            address: "127.0.0.1".into(),
            cpus_milli: cpus * 1000,
            mem_mb: 1024,
            gpus: 0,
            ports: vec![PortRange {
                begin: 9000,
                end: 9099,
            }],
        }]
    }

    fn exit(code: i32) -> PeerUpdate {
        PeerUpdate {
            state: if code == 0 {
                PeerState::Finished
            } else {
                PeerState::Failed
            },
            exit_code: Some(code),
            signal: None,
            reason: String::new(),
        }
    }

    fn killed() -> PeerUpdate {
        PeerUpdate {
            state: PeerState::Killed,
            exit_code: None,
            signal: Some(15),
            reason: String::new(),
        }
    }

    fn running() -> PeerUpdate {
        PeerUpdate {
            state: PeerState::Running,
            exit_code: None,
            signal: None,
            reason: String::new(),
        }
    }

    fn job_states(actions: &[Action]) -> Vec<(u64, JobState)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Record {
                    job,
                    kind: EventKind::Job { state, .. },
                } => Some((*job, *state)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_job_that_fits_launches_and_finishes_when_every_peer_exits_zero() {
        let mut c = Core::new();
        c.handle(Input::Submit {
            job: 1,
            roles: roles("name: a\npeers: 2\n"),
            time_limit: None,
            attempt: 1,
            retry: Retry::default(),
        });
        let a = c.handle(Input::Offers(host(4)));
        assert_eq!(job_states(&a), vec![(1, JobState::Running)]);
        assert!(
            matches!(a.last(), Some(Action::Launch { job: 1, placement, .. }) if placement.peers.len() == 2)
        );
        c.handle(Input::Peer {
            job: 1,
            index: 0,
            update: running(),
        });
        assert!(c
            .handle(Input::Peer {
                job: 1,
                index: 0,
                update: exit(0)
            })
            .iter()
            .all(|a| !matches!(a, Action::Ended { .. })));
        let a = c.handle(Input::Peer {
            job: 1,
            index: 1,
            update: exit(0),
        });
        assert_eq!(job_states(&a), vec![(1, JobState::Finished)]);
        assert_eq!(
            a.last(),
            Some(&Action::Ended {
                job: 1,
                state: JobState::Finished
            })
        );
        assert!(!c.is_active(1));
    }

    #[test]
    fn one_failing_peer_kills_the_rest_and_fails_the_job_with_the_reason() {
        let mut c = Core::new();
        c.handle(Input::Submit {
            job: 1,
            roles: roles("name: w\npeers: 3\n"),
            time_limit: None,
            attempt: 1,
            retry: Retry::default(),
        });
        c.handle(Input::Offers(host(4)));
        let a = c.handle(Input::Peer {
            job: 1,
            index: 1,
            update: exit(3),
        });
        assert!(
            a.contains(&Action::Kill {
                job: 1,
                peers: vec![0, 2]
            }),
            "{a:?}"
        );
        // Killed peers report back; the job's reason stays the first failure.
        c.handle(Input::Peer {
            job: 1,
            index: 0,
            update: killed(),
        });
        let a = c.handle(Input::Peer {
            job: 1,
            index: 2,
            update: killed(),
        });
        let reason = a.iter().find_map(|a| match a {
            Action::Record {
                kind:
                    EventKind::Job {
                        state: JobState::Failed,
                        reason,
                    },
                ..
            } => Some(reason.clone()),
            _ => None,
        });
        assert_eq!(
            reason.as_deref(),
            Some("peer 1 (role 'w') exited with code 3")
        );
    }

    #[test]
    fn a_job_that_does_not_fit_waits_with_a_reason_and_a_smaller_one_passes_it() {
        let mut c = Core::new();
        c.handle(Input::Submit {
            job: 1,
            roles: roles("name: big\npeers: 8\n"),
            time_limit: None,
            attempt: 1,
            retry: Retry::default(),
        });
        c.handle(Input::Submit {
            job: 2,
            roles: roles("name: small\npeers: 2\n"),
            time_limit: None,
            attempt: 1,
            retry: Retry::default(),
        });
        let a = c.handle(Input::Offers(host(4)));
        assert_eq!(
            job_states(&a),
            vec![(1, JobState::Waiting), (2, JobState::Running)]
        );
        assert_eq!(
            c.wait_reasons()[0].1,
            "role 'big' needs 8 peers, offers fit 4 (1 host short of cpus (1 per peer))"
        );
        // The same offers again change nothing and repeat no event.
        assert!(c.handle(Input::Offers(host(4))).is_empty());
        let a = c.handle(Input::Offers(host(8)));
        assert_eq!(job_states(&a), vec![(1, JobState::Running)]);
    }

    #[test]
    fn kill_of_a_waiting_job_ends_it_at_once_and_of_a_running_job_kills_its_peers() {
        let mut c = Core::new();
        c.handle(Input::Submit {
            job: 1,
            roles: roles("name: a\npeers: 9\n"),
            time_limit: None,
            attempt: 1,
            retry: Retry::default(),
        });
        c.handle(Input::Offers(host(1)));
        let a = c.handle(Input::Kill {
            job: 1,
            reason: "killed by request".into(),
        });
        assert_eq!(job_states(&a), vec![(1, JobState::Killed)]);
        assert_eq!(c.waiting(), 0);

        c.handle(Input::Submit {
            job: 2,
            roles: roles("name: a\npeers: 1\n"),
            time_limit: None,
            attempt: 1,
            retry: Retry::default(),
        });
        c.handle(Input::Offers(host(1)));
        assert_eq!(
            c.handle(Input::Kill {
                job: 2,
                reason: "killed by request".into()
            }),
            vec![Action::Kill {
                job: 2,
                peers: vec![0]
            }]
        );
        let a = c.handle(Input::Peer {
            job: 2,
            index: 0,
            update: killed(),
        });
        assert_eq!(job_states(&a), vec![(2, JobState::Killed)]);
    }

    #[test]
    fn the_time_limit_brings_a_job_down_as_failed() {
        let mut c = Core::new();
        c.handle(Input::Tick { now_ms: 1_000 });
        c.handle(Input::Submit {
            job: 1,
            roles: roles("name: a\npeers: 1\n"),
            time_limit: Some(5),
            attempt: 1,
            retry: Retry::default(),
        });
        c.handle(Input::Offers(host(1)));
        assert!(c.handle(Input::Tick { now_ms: 5_999 }).is_empty());
        assert_eq!(
            c.handle(Input::Tick { now_ms: 6_000 }),
            vec![Action::Kill {
                job: 1,
                peers: vec![0]
            }]
        );
        let a = c.handle(Input::Peer {
            job: 1,
            index: 0,
            update: killed(),
        });
        assert!(a.contains(&Action::Record {
            job: 1,
            kind: EventKind::Job {
                state: JobState::Failed,
                reason: "time limit of 5s exceeded".into()
            }
        }));
    }

    #[test]
    fn an_adopted_job_continues_and_one_with_a_failed_peer_is_brought_down() {
        let mut c = Core::new();
        let a = c.adopt(
            4,
            roles("name: a\npeers: 2\n"),
            None,
            1,
            Retry::default(),
            vec![
                ("a".into(), "h".into(), 1, PeerState::Running),
                ("a".into(), "h".into(), 2, PeerState::Finished),
            ],
        );
        assert!(a.is_empty());
        assert_eq!(c.running(), vec![4]);
        let a = c.handle(Input::Peer {
            job: 4,
            index: 0,
            update: exit(0),
        });
        assert_eq!(job_states(&a), vec![(4, JobState::Finished)]);

        let a = c.adopt(
            5,
            roles("name: a\npeers: 2\n"),
            None,
            1,
            Retry::default(),
            vec![
                ("a".into(), "h".into(), 1, PeerState::Running),
                ("a".into(), "h".into(), 2, PeerState::Lost),
            ],
        );
        assert_eq!(
            a,
            vec![Action::Kill {
                job: 5,
                peers: vec![0]
            }]
        );
    }

    #[test]
    fn stale_and_duplicate_peer_updates_are_ignored() {
        let mut c = Core::new();
        c.handle(Input::Submit {
            job: 1,
            roles: roles("name: a\npeers: 2\n"),
            time_limit: None,
            attempt: 1,
            retry: Retry::default(),
        });
        c.handle(Input::Offers(host(2)));
        c.handle(Input::Peer {
            job: 1,
            index: 0,
            update: exit(0),
        });
        assert!(c
            .handle(Input::Peer {
                job: 1,
                index: 0,
                update: exit(1)
            })
            .is_empty());
        assert!(c
            .handle(Input::Peer {
                job: 9,
                index: 0,
                update: exit(1)
            })
            .is_empty());
    }

    fn lost() -> PeerUpdate {
        PeerUpdate {
            state: PeerState::Lost,
            exit_code: None,
            signal: None,
            reason: "TASK_LOST: agent removed".into(),
        }
    }

    fn submit_retried(c: &mut Core, retry: Retry) {
        c.handle(Input::Tick { now_ms: 10_000 });
        c.handle(Input::Submit {
            job: 1,
            roles: roles("name: a\npeers: 2\n"),
            time_limit: None,
            attempt: 1,
            retry,
        });
        c.handle(Input::Offers(host(4)));
        for index in 0..2 {
            c.handle(Input::Peer {
                job: 1,
                index,
                update: running(),
            });
        }
    }

    fn launches(actions: &[Action]) -> Vec<u32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Launch { attempt, .. } => Some(*attempt),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_failed_attempt_is_placed_again_after_its_backoff_and_the_second_can_finish() {
        let mut c = Core::new();
        let retry = Retry {
            retries: 1,
            on: RetryOn::parse("failed").unwrap(),
            backoff_s: 2,
        };
        submit_retried(&mut c, retry);
        let a = c.handle(Input::Peer {
            job: 1,
            index: 0,
            update: exit(3),
        });
        assert_eq!(
            a,
            vec![
                Action::Record {
                    job: 1,
                    kind: peer_event(
                        0,
                        &PeerRt {
                            role: "a".into(),
                            host: "h".into(),
                            port: 9000,
                            state: PeerState::Failed
                        },
                        Some(3),
                        None,
                        String::new()
                    )
                },
                Action::Kill {
                    job: 1,
                    peers: vec![1]
                }
            ]
        );
        let a = c.handle(Input::Peer {
            job: 1,
            index: 1,
            update: killed(),
        });
        assert!(a.contains(&Action::Record {
            job: 1,
            kind: EventKind::Attempt {
                attempt: 1,
                state: JobState::Failed,
                reason: "peer 0 (role 'a') exited with code 3".into(),
                lost: false,
                retry_in_s: 2,
            }
        }));
        assert_eq!(job_states(&a), vec![(1, JobState::Waiting)]);
        assert_eq!(a.last(), Some(&Action::Retry { job: 1, attempt: 1 }));
        assert!(!a.iter().any(|x| matches!(x, Action::Ended { .. })));
        assert!(c.is_active(1));

        // Not before the backoff is over, even with room.
        assert!(launches(&c.handle(Input::Offers(host(4)))).is_empty());
        c.handle(Input::Tick { now_ms: 11_999 });
        assert!(!c.take_requeued());
        c.handle(Input::Tick { now_ms: 12_000 });
        assert!(c.take_requeued());
        assert!(!c.take_requeued(), "told once");
        let a = c.handle(Input::Offers(host(4)));
        assert_eq!(launches(&a), vec![2]);
        assert_eq!(job_states(&a), vec![(1, JobState::Running)]);
        for index in 0..2 {
            c.handle(Input::Peer {
                job: 1,
                index,
                update: running(),
            });
        }
        c.handle(Input::Peer {
            job: 1,
            index: 0,
            update: exit(0),
        });
        let a = c.handle(Input::Peer {
            job: 1,
            index: 1,
            update: exit(0),
        });
        assert_eq!(job_states(&a), vec![(1, JobState::Finished)]);
        assert!(a.contains(&Action::Ended {
            job: 1,
            state: JobState::Finished
        }));
    }

    #[test]
    fn retry_on_lost_does_not_retry_a_program_that_failed_but_retries_a_lost_peer() {
        let retry = Retry {
            retries: 2,
            on: RetryOn::default(),
            backoff_s: 1,
        };
        let mut c = Core::new();
        submit_retried(&mut c, retry);
        c.handle(Input::Peer {
            job: 1,
            index: 0,
            update: exit(1),
        });
        let a = c.handle(Input::Peer {
            job: 1,
            index: 1,
            update: killed(),
        });
        assert_eq!(job_states(&a), vec![(1, JobState::Failed)]);

        let mut c = Core::new();
        submit_retried(&mut c, retry);
        c.handle(Input::Peer {
            job: 1,
            index: 1,
            update: lost(),
        });
        let a = c.handle(Input::Peer {
            job: 1,
            index: 0,
            update: killed(),
        });
        assert!(a.iter().any(|x| matches!(
            x,
            Action::Record {
                kind: EventKind::Attempt {
                    attempt: 1,
                    lost: true,
                    ..
                },
                ..
            }
        )));
        assert_eq!(a.last(), Some(&Action::Retry { job: 1, attempt: 1 }));
    }

    #[test]
    fn the_last_attempt_s_failure_ends_the_job_and_backoff_doubles() {
        let retry = Retry {
            retries: 1,
            on: RetryOn::parse("both").unwrap(),
            backoff_s: 3,
        };
        assert_eq!(
            (
                retry.backoff_after(1),
                retry.backoff_after(2),
                retry.backoff_after(9)
            ),
            (3, 6, MAX_BACKOFF_S)
        );
        let mut c = Core::new();
        submit_retried(&mut c, retry);
        c.handle(Input::Peer {
            job: 1,
            index: 0,
            update: exit(1),
        });
        c.handle(Input::Peer {
            job: 1,
            index: 1,
            update: exit(1),
        });
        c.handle(Input::Tick { now_ms: 13_000 });
        c.handle(Input::Offers(host(4)));
        c.handle(Input::Peer {
            job: 1,
            index: 0,
            update: exit(2),
        });
        let a = c.handle(Input::Peer {
            job: 1,
            index: 1,
            update: killed(),
        });
        assert_eq!(job_states(&a), vec![(1, JobState::Failed)]);
        assert!(a.contains(&Action::Ended {
            job: 1,
            state: JobState::Failed
        }));
    }

    #[test]
    fn a_kill_during_the_backoff_ends_the_job_and_nothing_is_retried() {
        let retry = Retry {
            retries: 3,
            on: RetryOn::parse("failed").unwrap(),
            backoff_s: 60,
        };
        let mut c = Core::new();
        submit_retried(&mut c, retry);
        c.handle(Input::Peer {
            job: 1,
            index: 0,
            update: exit(1),
        });
        c.handle(Input::Peer {
            job: 1,
            index: 1,
            update: killed(),
        });
        let a = c.handle(Input::Kill {
            job: 1,
            reason: "killed by alice".into(),
        });
        assert_eq!(job_states(&a), vec![(1, JobState::Killed)]);
        assert!(!c.is_active(1));
        c.handle(Input::Tick { now_ms: 1_000_000 });
        assert!(!c.take_requeued());
        assert!(launches(&c.handle(Input::Offers(host(4)))).is_empty());
    }
}
