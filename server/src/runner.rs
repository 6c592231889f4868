//! The driver of the scheduling core: one task that owns the core and the
//! backend and reads one queue (submissions, kills, peer starts and exits,
//! ticks). Each message becomes core inputs; the actions that come back are
//! carried out in order: events recorded, peers launched or killed, archives
//! built. No lock guards a scheduling decision because only this task makes
//! them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use app::model::{ClusterView, EventKind, HostView, JobOptions, JobState, WaitingJob};
use app::peer::{build_peers, JobContext};
use app::RoleFile;
use tokio::sync::{mpsc, oneshot};

use crate::events::Bus;
use crate::local::{list_data, LocalBackend};
use crate::sched::{Action, Core, Input, PeerUpdate};

pub enum Msg {
    Submit {
        job: u64,
        roles: Arc<RoleFile>,
        meta: JobMeta,
    },
    Kill {
        job: u64,
        reason: String,
        done: oneshot::Sender<bool>,
    },
    Peer {
        job: u64,
        index: u32,
        update: PeerUpdate,
    },
    Exited {
        job: u64,
        index: u32,
        status: Result<std::process::ExitStatus, String>,
    },
    Tick,
    Cluster(oneshot::Sender<ClusterView>),
    Shutdown(oneshot::Sender<()>),
}

/// What a job needs besides its roles to start its peers.
#[derive(Clone, Debug)]
pub struct JobMeta {
    pub app: String,
    pub sha256: String,
    pub options: JobOptions,
}

/// A cheap handle to the runner's queue.
#[derive(Clone)]
pub struct RunnerHandle {
    tx: mpsc::UnboundedSender<Msg>,
}

impl RunnerHandle {
    pub fn submit(&self, job: u64, roles: Arc<RoleFile>, meta: JobMeta) {
        let _ = self.tx.send(Msg::Submit { job, roles, meta });
    }

    /// Asks for a kill; true if the job was still active.
    pub async fn kill(&self, job: u64, reason: String) -> bool {
        let (done, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Kill { job, reason, done });
        rx.await.unwrap_or(false)
    }

    pub async fn cluster(&self) -> Option<ClusterView> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Cluster(tx));
        rx.await.ok()
    }

    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

pub struct Runner {
    core: Core,
    backend: LocalBackend,
    bus: Bus,
    jobs_dir: PathBuf,
    blobs: crate::blobs::BlobStore,
    meta: HashMap<u64, (Arc<RoleFile>, JobMeta)>,
    archive_cap: u64,
    rx: mpsc::UnboundedReceiver<Msg>,
}

impl Runner {
    pub fn new(
        backend_for: impl FnOnce(mpsc::UnboundedSender<Msg>) -> LocalBackend,
        bus: Bus,
        jobs_dir: PathBuf,
        blobs: crate::blobs::BlobStore,
        archive_cap: u64,
    ) -> (Runner, RunnerHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let backend = backend_for(tx.clone());
        let ticker = tx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if ticker.send(Msg::Tick).is_err() {
                    break;
                }
            }
        });
        (
            Runner {
                core: Core::new(),
                backend,
                bus,
                jobs_dir,
                blobs,
                meta: HashMap::new(),
                archive_cap,
                rx,
            },
            RunnerHandle { tx },
        )
    }

    pub fn total_offer(&self) -> app::placement::Offer {
        self.backend.total_offer()
    }

    pub async fn run(mut self) {
        while let Some(msg) = self.rx.recv().await {
            let input = match msg {
                Msg::Submit { job, roles, meta } => {
                    let time_limit = meta
                        .options
                        .time_limit
                        .or(roles.time_limit().map(|t| t.secs()));
                    self.meta.insert(job, (roles.clone(), meta));
                    Input::Submit {
                        job,
                        roles,
                        time_limit,
                    }
                }
                Msg::Kill { job, reason, done } => {
                    let _ = done.send(self.core.is_active(job));
                    Input::Kill { job, reason }
                }
                Msg::Peer { job, index, update } => Input::Peer { job, index, update },
                Msg::Exited { job, index, status } => {
                    let update = self.backend.exited(job, index, status);
                    Input::Peer { job, index, update }
                }
                Msg::Tick => Input::Tick {
                    now_ms: crate::util::now_ms(),
                },
                Msg::Cluster(reply) => {
                    let _ = reply.send(self.view());
                    continue;
                }
                Msg::Shutdown(reply) => {
                    self.shutdown().await;
                    let _ = reply.send(());
                    return;
                }
            };
            let is_tick = matches!(input, Input::Tick { .. });
            let actions = self.core.handle(input);
            self.carry_out(actions).await;
            if self.core.waiting() > 0 && !is_tick {
                let offers = vec![self.backend.offer()];
                let actions = self.core.handle(Input::Offers(offers));
                self.carry_out(actions).await;
            }
        }
    }

    fn view(&self) -> ClusterView {
        let cap = self.backend.capacity();
        let (cpus, mem, peers) = self.backend.used();
        ClusterView {
            backend: "local".into(),
            offers: vec![self.backend.offer()],
            hosts: vec![HostView {
                host: cap.host.clone(),
                address: cap.address.clone(),
                cpus: cap.cpus_milli as f64 / 1000.0,
                cpus_used: cpus as f64 / 1000.0,
                mem_mb: cap.mem_mb,
                mem_used_mb: mem,
                ports: format!("{}-{}", cap.ports.begin, cap.ports.end),
                peers,
            }],
            waiting: self
                .core
                .wait_reasons()
                .into_iter()
                .map(|(job, reason)| WaitingJob { job, reason })
                .collect(),
            running: self.core.running(),
        }
    }

    async fn carry_out(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Record { job, kind } => self.record(job, kind).await,
                Action::Launch { job, placement } => {
                    let Some((roles, meta)) = self.meta.get(&job).cloned() else {
                        continue;
                    };
                    let ctx = JobContext {
                        job_id: job,
                        binary: &meta.app,
                        options: &meta.options,
                    };
                    let specs =
                        build_peers(&ctx, &roles, &placement, &|path: &str, _host: &str| {
                            list_data(path)
                        });
                    let pids = self
                        .backend
                        .launch(
                            job,
                            self.jobs_dir.join(job.to_string()),
                            self.blobs.path(&meta.sha256),
                            meta.app.clone(),
                            specs,
                        )
                        .await;
                    let db = self.bus.db().clone();
                    let res = db
                        .call(move |c| {
                            for (idx, pid) in pids {
                                crate::db::set_pid(c, job, idx, pid)?;
                            }
                            Ok(())
                        })
                        .await;
                    if let Err(e) = res {
                        tracing::error!(job, error = %e, "could not record peer pids");
                    }
                }
                Action::Kill { job, peers } => self.backend.kill(job, &peers),
                Action::Ended { job, state } => {
                    let meta = self.meta.remove(&job);
                    tracing::info!(job, %state, "job ended");
                    let binary = meta.map(|(_, m)| m.app).unwrap_or_default();
                    spawn_archive(
                        self.bus.clone(),
                        self.jobs_dir.clone(),
                        job,
                        binary,
                        self.archive_cap,
                    );
                }
            }
        }
    }

    async fn record(&self, job: u64, kind: EventKind) {
        if let Err(e) = self.bus.record(job, kind).await {
            tracing::error!(job, error = %e, "could not record an event");
        }
    }

    /// Stops every peer and records why its job ended.
    async fn shutdown(&mut self) {
        self.backend.kill_all_now().await;
        for job in self.core.running() {
            self.record(
                job,
                EventKind::Job {
                    state: JobState::Failed,
                    reason: "the dispatcher shut down while this job was running".into(),
                },
            )
            .await;
        }
    }
}

/// Builds a job's archive off the queue, then records it.
pub fn spawn_archive(bus: Bus, jobs_dir: PathBuf, job: u64, binary: String, cap: u64) {
    let job_dir = jobs_dir.join(job.to_string());
    tokio::spawn(async move {
        let built =
            tokio::task::spawn_blocking(move || crate::archive::build(&job_dir, &binary, cap))
                .await;
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
