//! The driver of the scheduling core: one task that owns the core and the
//! backend and reads one queue (submissions, kills, peer starts and exits,
//! Mesos events, ticks). Each message becomes core inputs; the actions that
//! come back are carried out in order: events recorded, peers launched or
//! killed, archives built. No lock guards a scheduling decision because only
//! this task makes them.
//!
//! The backend is this machine (`local::LocalBackend`) or a Mesos framework
//! (`mesos::backend::MesosBackend`). The runner only asks a backend for
//! offers, hands it placements and kills, and feeds the core what the
//! backend reports; what a backend does with them is its own (Mesos: tasks,
//! ACCEPTs, acknowledgements, teardown). Messages come through
//! `queue::Msg`, which backends send to without knowing the runner.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use app::model::{ClusterView, EventKind, HostView, JobState, PeerState, WaitingJob};
use app::peer::{build_peers, JobContext};
use app::placement::Offer;
use app::RoleFile;
use tokio::sync::{mpsc, oneshot};

use crate::db::TaskRow;
use crate::events::Bus;
use crate::local::{list_data, LocalBackend};
use crate::mesos::backend::{MesosBackend, TeardownReply};
use crate::queue::{JobMeta, Msg};
use crate::sched::{Action, Core, Input, PeerUpdate};

/// A cheap handle to the runner's queue.
/// Most Mesos events handled in one go (see `Msg::Mesos` in `run`).
const MESOS_BATCH: usize = 1024;

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

    pub async fn targets(&self) -> Vec<crate::usage::Target> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Targets(tx));
        rx.await.unwrap_or_default()
    }

    pub async fn cluster(&self) -> Option<ClusterView> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Cluster(tx));
        rx.await.ok()
    }

    pub fn adopt(
        &self,
        job: u64,
        roles: Arc<RoleFile>,
        meta: JobMeta,
        peers: Vec<(String, String, u16, PeerState)>,
        tasks: Vec<TaskRow>,
    ) {
        let _ = self.tx.send(Msg::Adopt {
            job,
            roles,
            meta,
            peers,
            tasks,
        });
    }

    /// Tears the Mesos framework down; the answer names the framework.
    pub async fn teardown(&self) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Teardown(tx));
        rx.await
            .unwrap_or_else(|_| Err("the dispatcher is stopping".into()))
    }

    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

pub enum Backend {
    Local(LocalBackend),
    Mesos(Box<MesosBackend>),
}

pub struct Runner {
    core: Core,
    backend: Backend,
    bus: Bus,
    jobs_dir: PathBuf,
    blobs: crate::blobs::BlobStore,
    meta: HashMap<u64, (Arc<RoleFile>, JobMeta)>,
    /// When each job was submitted and launched, for `/metrics`.
    timing: HashMap<u64, (Instant, Option<Instant>)>,
    archive_cap: u64,
    /// Copies of earlier attempts' sandboxes under way (Mesos), awaited
    /// before the job's archive is built.
    attempt_copies: HashMap<u64, Vec<tokio::task::JoinHandle<()>>>,
    rx: mpsc::UnboundedReceiver<Msg>,
}

impl Runner {
    pub fn new(
        backend_for: impl FnOnce(mpsc::UnboundedSender<Msg>) -> Backend,
        bus: Bus,
        jobs_dir: PathBuf,
        blobs: crate::blobs::BlobStore,
        archive_cap: u64,
    ) -> (Runner, RunnerHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut backend = backend_for(tx.clone());
        if let Backend::Mesos(m) = &mut backend {
            m.set_queue(tx.clone());
            m.set_metrics(bus.metrics().clone());
        }
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
                timing: HashMap::new(),
                archive_cap,
                attempt_copies: HashMap::new(),
                rx,
            },
            RunnerHandle { tx },
        )
    }

    /// The machine as one offer (local backend), for checks at submission.
    pub fn total_offer(&self) -> Option<Offer> {
        match &self.backend {
            Backend::Local(b) => Some(b.total_offer()),
            Backend::Mesos(_) => None,
        }
    }

    pub async fn run(mut self) {
        // A message taken from the queue while gathering Mesos events, to
        // be handled next.
        let mut next: Option<Msg> = None;
        loop {
            let msg = match next.take() {
                Some(m) => m,
                None => match self.rx.recv().await {
                    Some(m) => m,
                    None => return,
                },
            };
            let now = crate::util::now_ms();
            let mut place = false;
            let input = match msg {
                Msg::Submit { job, roles, meta } => {
                    let time_limit = meta
                        .options
                        .time_limit
                        .or(roles.time_limit().map(|t| t.secs()));
                    let (attempt, retry) = (meta.attempt, meta.retry(&roles));
                    self.meta.insert(job, (roles.clone(), meta));
                    self.timing.insert(job, (Instant::now(), None));
                    if let Backend::Mesos(m) = &mut self.backend {
                        m.job_arrived();
                    }
                    place = true;
                    Input::Submit {
                        job,
                        roles,
                        time_limit,
                        attempt,
                        retry,
                    }
                }
                Msg::Kill { job, reason, done } => {
                    let _ = done.send(self.core.is_active(job));
                    Input::Kill { job, reason }
                }
                Msg::Peer { job, index, update } => Input::Peer { job, index, update },
                Msg::Exited { job, index, status } => {
                    let Backend::Local(b) = &mut self.backend else {
                        continue;
                    };
                    let update = b.exited(job, index, status);
                    Input::Peer { job, index, update }
                }
                Msg::Tick => {
                    if let Backend::Mesos(m) = &mut self.backend {
                        m.tick(now);
                    }
                    Input::Tick { now_ms: now }
                }
                Msg::Targets(reply) => {
                    let targets = match &self.backend {
                        Backend::Local(b) => b.targets(),
                        Backend::Mesos(_) => self
                            .core
                            .running()
                            .into_iter()
                            .flat_map(|job| {
                                self.core
                                    .live(job)
                                    .into_iter()
                                    .map(move |peer| crate::usage::Target::Task { job, peer })
                            })
                            .collect(),
                    };
                    let _ = reply.send(targets);
                    continue;
                }
                Msg::Cluster(reply) => {
                    let _ = reply.send(self.view());
                    continue;
                }
                Msg::Shutdown(reply) => {
                    self.shutdown().await;
                    let _ = reply.send(());
                    return;
                }
                Msg::Adopt {
                    job,
                    roles,
                    meta,
                    peers,
                    tasks,
                } => {
                    let time_limit = meta
                        .options
                        .time_limit
                        .or(roles.time_limit().map(|t| t.secs()));
                    let (attempt, retry) = (meta.attempt, meta.retry(&roles));
                    self.meta.insert(job, (roles.clone(), meta));
                    if let Backend::Mesos(m) = &mut self.backend {
                        m.adopt(job, &tasks, &peers, now);
                    }
                    let actions = self
                        .core
                        .adopt(job, roles, time_limit, attempt, retry, peers);
                    self.carry_out(actions).await;
                    continue;
                }
                Msg::Mesos(ev) => {
                    let arrived = Instant::now();
                    // The events already queued behind this one are handled
                    // with it: their records go to the database in one
                    // transaction (one fsync for the thousand updates of a
                    // big gang's end, not a thousand), then all their ACKs.
                    let mut evs = vec![ev];
                    while evs.len() < MESOS_BATCH {
                        match self.rx.try_recv() {
                            Ok(Msg::Mesos(ev)) => evs.push(ev),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let mut records = Vec::new();
                    let mut acks = Vec::new();
                    let mut acked = 0;
                    let mut changed = false;
                    for ev in evs {
                        let waiting = self.core.waiting() > 0;
                        let Backend::Mesos(m) = &mut self.backend else {
                            break;
                        };
                        let core = &self.core;
                        let live = || {
                            core.running()
                                .into_iter()
                                .flat_map(|j| core.live(j).into_iter().map(move |i| (j, i)))
                                .collect()
                        };
                        let Some(out) = m.event(self.bus.db(), now, ev, waiting, live).await else {
                            continue;
                        };
                        changed = true;
                        for input in out.inputs {
                            let actions = self.core.handle(input);
                            self.carry_out_into(actions, &mut records).await;
                        }
                        acked += usize::from(!out.acks.is_empty());
                        acks.extend(out.acks);
                    }
                    flush_records(&self.bus, &mut records).await;
                    // The updates are recorded (or changed nothing): only
                    // now may the agents forget them.
                    if let Backend::Mesos(m) = &self.backend {
                        for _ in 0..acked {
                            self.bus.metrics().mesos_acked(arrived.elapsed());
                        }
                        m.send(acks);
                    }
                    if !changed {
                        continue;
                    }
                    self.place_and_settle(now, true).await;
                    // A teardown asked while disconnected is done once subscribed.
                    let due = match &mut self.backend {
                        Backend::Mesos(m) => m.due_teardowns(),
                        Backend::Local(_) => vec![],
                    };
                    for reply in due {
                        self.teardown(reply);
                    }
                    continue;
                }
                Msg::Teardown(reply) => {
                    self.teardown(reply);
                    continue;
                }
                Msg::TornDown { id, result, reply } => {
                    self.torn_down(id, result, reply).await;
                    continue;
                }
            };
            let is_tick = matches!(input, Input::Tick { .. });
            let actions = self.core.handle(input);
            self.carry_out(actions).await;
            // A retried job back in the queue after its backoff.
            if self.core.take_requeued() {
                place = true;
                if let Backend::Mesos(m) = &mut self.backend {
                    m.job_arrived();
                }
            }
            let is_tick = is_tick && !place;
            match &self.backend {
                Backend::Local(_) => {
                    if self.core.waiting() > 0 && !is_tick {
                        self.place_and_settle(now, true).await;
                    }
                }
                Backend::Mesos(_) => self.place_and_settle(now, place).await,
            }
        }
    }

    /// Offers waiting jobs what is free; on Mesos, launches what was placed
    /// (one ACCEPT per offer) and settles the offers left over.
    async fn place_and_settle(&mut self, now: u64, place: bool) {
        let offers = match &self.backend {
            Backend::Local(b) => vec![b.offer()],
            Backend::Mesos(m) => m.offers(),
        };
        if place && self.core.waiting() > 0 && !offers.is_empty() {
            let actions = self.core.handle(Input::Offers(offers));
            self.carry_out(actions).await;
        }
        let waiting = self.core.waiting() > 0;
        if let Backend::Mesos(m) = &mut self.backend {
            m.settle(now, waiting);
        }
    }

    /// TEARDOWN: the master kills every task; jobs end KILLED.
    fn teardown(&mut self, reply: TeardownReply) {
        match &mut self.backend {
            Backend::Local(_) => {
                let _ = reply.send(Err("teardown is for the Mesos backend".into()));
            }
            Backend::Mesos(m) => m.teardown(reply),
        }
    }

    /// The master's answer to a TEARDOWN: once it is in, every job ends.
    async fn torn_down(&mut self, id: String, result: Result<(), String>, reply: TeardownReply) {
        let Backend::Mesos(m) = &mut self.backend else {
            return;
        };
        if !m.torn_down(self.bus.db(), id, result, reply).await {
            return;
        }
        for job in self.core.running() {
            let actions = self.core.handle(Input::Kill {
                job,
                reason: "the framework was torn down".into(),
            });
            self.carry_out(actions).await;
            for index in self.core.live(job) {
                let actions = self.core.handle(Input::Peer {
                    job,
                    index,
                    update: PeerUpdate {
                        state: PeerState::Killed,
                        exit_code: None,
                        signal: None,
                        reason: "the framework was torn down".into(),
                    },
                });
                self.carry_out(actions).await;
            }
        }
        for (job, _) in self.core.wait_reasons() {
            let actions = self.core.handle(Input::Kill {
                job,
                reason: "the framework was torn down".into(),
            });
            self.carry_out(actions).await;
        }
    }

    fn view(&self) -> ClusterView {
        let waiting = self
            .core
            .wait_reasons()
            .into_iter()
            .map(|(job, reason)| WaitingJob { job, reason })
            .collect();
        match &self.backend {
            Backend::Local(b) => {
                let cap = b.capacity();
                let (cpus, mem, peers) = b.used();
                ClusterView {
                    backend: "local".into(),
                    offers: vec![b.offer()],
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
                    waiting,
                    running: self.core.running(),
                    mesos: None,
                    storage: None,
                }
            }
            Backend::Mesos(m) => m.view(waiting, self.core.running()),
        }
    }

    async fn carry_out(&mut self, actions: Vec<Action>) {
        let mut records = Vec::new();
        self.carry_out_into(actions, &mut records).await;
        flush_records(&self.bus, &mut records).await;
    }

    /// Carries out `actions`, leaving their last records in `records` for
    /// the caller to write with more (records before any other action are
    /// written first, so the order holds).
    async fn carry_out_into(&mut self, actions: Vec<Action>, records: &mut Vec<(u64, EventKind)>) {
        for a in actions {
            // Consecutive records go to the database together.
            if let Action::Record { job, kind } = a {
                records.push((job, kind));
                continue;
            }
            // A launch on Mesos prepares its tasks while the records
            // before it are written (below); anything else waits for them.
            if !matches!(
                (&a, &self.backend),
                (Action::Launch { .. }, Backend::Mesos(_))
            ) {
                flush_records(&self.bus, records).await;
            }
            match a {
                Action::Record { .. } => unreachable!("records are batched"),
                Action::Launch {
                    job,
                    attempt,
                    placement,
                } => {
                    let Some((roles, meta)) = self.meta.get(&job).cloned() else {
                        flush_records(&self.bus, records).await;
                        continue;
                    };
                    if let Some((submitted, launched)) = self.timing.get_mut(&job) {
                        self.bus.metrics().launched(submitted.elapsed());
                        *launched = Some(Instant::now());
                    }
                    // What each peer was given, for its usage to be read against.
                    let allot: Vec<(u32, u32, u64)> = placement
                        .peers
                        .iter()
                        .map(|s| (s.index, s.cpus_milli, s.mem_mb))
                        .collect();
                    let ctx = JobContext {
                        job_id: job,
                        binary: &meta.app,
                        options: &meta.options,
                        attempt,
                    };
                    match &mut self.backend {
                        Backend::Local(backend) => {
                            let res = self
                                .bus
                                .db()
                                .call(move |c| {
                                    let tx = c.transaction()?;
                                    crate::db::insert_allot(&tx, job, &allot)?;
                                    tx.commit()?;
                                    Ok(())
                                })
                                .await;
                            if let Err(e) = res {
                                tracing::error!(job, error = %e, "could not record what the peers were given");
                            }
                            let specs = build_peers(
                                &ctx,
                                &roles,
                                &placement,
                                &|path: &str, _host: &str| list_data(path),
                            );
                            let pids = backend
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
                        Backend::Mesos(m) => {
                            // The records' transaction starts on the
                            // database's thread at the first poll, before
                            // the tasks are built on this one; the tasks are
                            // recorded after it, so the order on disk holds.
                            let (_, prepared) = tokio::join!(
                                flush_records(&self.bus, records),
                                m.prepare_launch(&self.blobs, &ctx, &roles, &meta, &placement),
                            );
                            m.record_launch(self.bus.db(), prepared, allot).await;
                        }
                    }
                }
                Action::Retry { job, attempt } => {
                    let job_dir = self.jobs_dir.join(job.to_string());
                    let kept = match &mut self.backend {
                        // The sandboxes are here: they move aside, at once,
                        // before the next attempt makes its own.
                        Backend::Local(_) => {
                            if let Err(e) = crate::archive::keep_attempt(&job_dir, attempt) {
                                tracing::error!(job, attempt, error = %e, "could not keep the attempt's sandboxes");
                            }
                            None
                        }
                        // They are on the agents: copied while the next
                        // attempt waits and runs; the archive waits for it.
                        Backend::Mesos(m) => {
                            // The tasks' rows are this attempt's until the
                            // next launch replaces them: read them now.
                            let rows = self
                                .bus
                                .db()
                                .call(move |c| crate::db::tasks_of(c, job))
                                .await
                                .unwrap_or_else(|e| {
                                    tracing::error!(job, error = %e, "cannot read the attempt's tasks");
                                    vec![]
                                });
                            let files = m.files();
                            let binary = self
                                .meta
                                .get(&job)
                                .map(|(_, m)| m.app.clone())
                                .unwrap_or_default();
                            let cap = self.archive_cap;
                            let dest = job_dir.join(format!("attempt-{attempt}"));
                            Some(tokio::spawn(async move {
                                crate::archive::copy_sandboxes(
                                    &files, job, rows, &dest, &binary, cap,
                                )
                                .await
                            }))
                        }
                    };
                    if let Some(task) = kept {
                        self.attempt_copies.entry(job).or_default().push(task);
                    }
                    self.bus.metrics().retried();
                    tracing::info!(job, attempt, "attempt failed; the job will be retried");
                }
                Action::Kill { job, peers } => match &mut self.backend {
                    Backend::Local(b) => b.kill(job, &peers),
                    Backend::Mesos(m) => m.kill(job, &peers),
                },
                Action::Ended { job, state } => {
                    let meta = self.meta.remove(&job);
                    tracing::info!(job, %state, "job ended");
                    if let (Some((_, Some(launched))), Some((_, m))) =
                        (self.timing.remove(&job), meta.as_ref())
                    {
                        self.bus.metrics().ended(&m.app, launched.elapsed());
                    }
                    let binary = meta.map(|(_, m)| m.app).unwrap_or_default();
                    let fetch = match &mut self.backend {
                        Backend::Local(_) => None,
                        Backend::Mesos(m) => {
                            m.job_ended(job);
                            Some(m.files())
                        }
                    };
                    crate::archive::spawn(
                        self.bus.clone(),
                        self.jobs_dir.clone(),
                        job,
                        binary,
                        self.archive_cap,
                        fetch,
                        self.attempt_copies.remove(&job).unwrap_or_default(),
                    );
                }
            }
        }
    }

    async fn record(&self, job: u64, kind: EventKind) {
        record(&self.bus, job, kind).await
    }

    /// Stops every peer and records why its job ended.
    async fn shutdown(&mut self) {
        let Backend::Local(b) = &mut self.backend else {
            // Mesos tasks run on: a restarted dispatcher resubscribes with
            // the same framework id and takes its jobs back.
            return;
        };
        b.kill_all_now().await;
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

/// Writes the records gathered so far, in one transaction when several.
async fn flush_records(bus: &Bus, records: &mut Vec<(u64, EventKind)>) {
    match records.len() {
        0 => {}
        1 => {
            let (job, kind) = records.pop().expect("one record");
            record(bus, job, kind).await;
        }
        _ => {
            if let Err(e) = bus.record_many(std::mem::take(records)).await {
                tracing::error!(error = %e, "could not record events");
            }
        }
    }
}

async fn record(bus: &Bus, job: u64, kind: EventKind) {
    if let Err(e) = bus.record(job, kind).await {
        tracing::error!(job, error = %e, "could not record an event");
    }
}
