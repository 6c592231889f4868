//! The driver of the scheduling core: one task that owns the core and the
//! backend and reads one queue (submissions, kills, peer starts and exits,
//! Mesos events, ticks). Each message becomes core inputs; the actions that
//! come back are carried out in order: events recorded, peers launched or
//! killed, archives built. No lock guards a scheduling decision because only
//! this task makes them.
//!
//! The backend is this machine (`local`) or a Mesos framework, whose pure
//! core (`mesos::framework`) sits next to the scheduling core: offers it
//! holds are what placement sees, placements become ACCEPTs, task updates
//! become peer updates.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use app::model::{
    ClusterView, EventKind, HostView, JobOptions, JobState, MesosView, PeerState, WaitingJob,
};
use app::peer::{build_peers, JobContext};
use app::placement::Offer;
use app::RoleFile;
use proto::Call;
use tokio::sync::{mpsc, oneshot, watch};

use crate::db::TaskRow;
use crate::events::Bus;
use crate::local::{list_data, LocalBackend};
use crate::mesos::conn::ConnEvent;
use crate::mesos::files::{self, Files};
use crate::mesos::framework::{Framework, Launch};
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
    /// A job that was running before a restart (Mesos: its tasks live on).
    Adopt {
        job: u64,
        roles: Arc<RoleFile>,
        meta: JobMeta,
        peers: Vec<(String, String, u16, PeerState)>,
        tasks: Vec<TaskRow>,
    },
    Mesos(ConnEvent),
    /// Unregister the framework: the master kills every task.
    Teardown(oneshot::Sender<Result<String, String>>),
    /// The master's answer to a TEARDOWN call.
    TornDown {
        id: String,
        result: Result<(), String>,
        reply: oneshot::Sender<Result<String, String>>,
    },
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

/// What the Mesos side of the runner keeps besides the framework core.
pub struct MesosBackend {
    pub fw: Framework,
    pub calls: mpsc::UnboundedSender<crate::mesos::conn::Outgoing>,
    /// The framework id the connection subscribes with.
    pub fw_id: watch::Sender<Option<String>>,
    /// Base URL agents fetch app binaries from.
    pub advertise: String,
    pub files: Files,
    pub masters: String,
    master: Option<String>,
    heartbeat_secs: f64,
    state: &'static str,
    last_error: Option<String>,
    disconnected_at: Option<Instant>,
    agents: BTreeMap<String, AgentRec>,
    /// Resources our live tasks hold, per agent.
    task_res: HashMap<(u64, u32), (String, u64, u64)>,
    pending: Vec<Launch>,
    teardown: Vec<oneshot::Sender<Result<String, String>>>,
    /// A TEARDOWN is on its way to the master.
    tearing_down: bool,
    /// Given to each task's kill policy.
    pub kill_grace: Duration,
    /// The runner's own queue (answers of calls come back through it).
    queue: Option<mpsc::UnboundedSender<Msg>>,
}

struct AgentRec {
    host: String,
    address: String,
    free: Offer,
}

impl MesosBackend {
    pub fn new(
        fw: Framework,
        calls: mpsc::UnboundedSender<crate::mesos::conn::Outgoing>,
        fw_id: watch::Sender<Option<String>>,
        advertise: String,
        masters: String,
        files: Files,
    ) -> MesosBackend {
        MesosBackend {
            fw,
            calls,
            fw_id,
            advertise,
            files,
            masters,
            master: None,
            heartbeat_secs: 0.0,
            state: "connecting",
            last_error: None,
            disconnected_at: None,
            agents: BTreeMap::new(),
            task_res: HashMap::new(),
            pending: vec![],
            teardown: vec![],
            tearing_down: false,
            kill_grace: Duration::from_secs(5),
            queue: None,
        }
    }

    fn send(&self, calls: Vec<Call>) {
        for c in calls {
            let _ = self.calls.send((c, None));
        }
    }
}

pub enum Backend {
    Local(LocalBackend),
    Mesos(Box<MesosBackend>),
}

/// The agent's HTTP endpoint (files API) from its offer.
fn agent_url(o: &proto::mesos::Offer) -> String {
    match &o.url {
        Some(u) => {
            let host = u
                .address
                .ip
                .clone()
                .or_else(|| u.address.hostname.clone())
                .unwrap_or_else(|| o.hostname.clone());
            format!("{}://{host}:{}", u.scheme, u.address.port)
        }
        None => format!("http://{}:5051", o.hostname),
    }
}

pub struct Runner {
    core: Core,
    backend: Backend,
    bus: Bus,
    jobs_dir: PathBuf,
    blobs: crate::blobs::BlobStore,
    meta: HashMap<u64, (Arc<RoleFile>, JobMeta)>,
    archive_cap: u64,
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
            m.queue = Some(tx.clone());
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
                archive_cap,
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
        while let Some(msg) = self.rx.recv().await {
            let now = crate::util::now_ms();
            let mut place = false;
            let input = match msg {
                Msg::Submit { job, roles, meta } => {
                    let time_limit = meta
                        .options
                        .time_limit
                        .or(roles.time_limit().map(|t| t.secs()));
                    self.meta.insert(job, (roles.clone(), meta));
                    if let Backend::Mesos(m) = &mut self.backend {
                        m.fw.job_arrived();
                    }
                    place = true;
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
                    let Backend::Local(b) = &mut self.backend else {
                        continue;
                    };
                    let update = b.exited(job, index, status);
                    Input::Peer { job, index, update }
                }
                Msg::Tick => {
                    if let Backend::Mesos(m) = &mut self.backend {
                        let out = m.fw.tick(now);
                        m.send(out.calls);
                    }
                    Input::Tick { now_ms: now }
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
                    self.meta.insert(job, (roles.clone(), meta));
                    if let Backend::Mesos(m) = &mut self.backend {
                        for t in &tasks {
                            let live = peers
                                .get(t.idx as usize)
                                .is_some_and(|p| !p.3.is_terminal());
                            if live {
                                m.fw.adopt(job, t.idx, Some(t.agent_id.clone()), now);
                            }
                        }
                    }
                    let actions = self.core.adopt(job, roles, time_limit, peers);
                    self.carry_out(actions).await;
                    continue;
                }
                Msg::Mesos(ev) => {
                    let Some((inputs, acks)) = self.mesos_event(now, ev).await else {
                        continue;
                    };
                    for input in inputs {
                        let actions = self.core.handle(input);
                        self.carry_out(actions).await;
                    }
                    // The updates are recorded (or changed nothing): only
                    // now may the agent forget them.
                    if let Backend::Mesos(m) = &self.backend {
                        m.send(acks);
                    }
                    self.place_and_settle(now, true).await;
                    // A teardown asked while disconnected is done once subscribed.
                    if let Backend::Mesos(m) = &mut self.backend {
                        if m.fw.is_subscribed() && !m.tearing_down && !m.teardown.is_empty() {
                            for reply in std::mem::take(&mut m.teardown) {
                                self.teardown(reply).await;
                            }
                        }
                    }
                    continue;
                }
                Msg::Teardown(reply) => {
                    self.teardown(reply).await;
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
            Backend::Mesos(m) => m.fw.placeable(),
        };
        if place && self.core.waiting() > 0 && !offers.is_empty() {
            let actions = self.core.handle(Input::Offers(offers));
            self.carry_out(actions).await;
        }
        let waiting = self.core.waiting() > 0;
        if let Backend::Mesos(m) = &mut self.backend {
            let launches = std::mem::take(&mut m.pending);
            let mut calls = if launches.is_empty() {
                vec![]
            } else {
                m.fw.accept(now, launches)
            };
            calls.extend(m.fw.settle(now, waiting));
            m.send(calls);
        }
    }

    /// A Mesos connection event: the framework core's view changes, calls
    /// go out, and peer updates come back as core inputs.
    async fn mesos_event(&mut self, now: u64, ev: ConnEvent) -> Option<(Vec<Input>, Vec<Call>)> {
        let waiting = self.core.waiting() > 0;
        let Backend::Mesos(m) = &mut self.backend else {
            return None;
        };
        let out = match ev {
            ConnEvent::Connected { master, stream_id } => {
                tracing::info!(%master, %stream_id, "subscription stream open");
                m.master = Some(master);
                m.state = "subscribing";
                return None;
            }
            ConnEvent::Disconnected { why } => {
                m.fw.disconnected();
                // A refusal ends its stream: the refusal is what to show.
                if m.state != "refused" {
                    m.last_error = Some(why.clone());
                    m.state = "disconnected";
                }
                m.disconnected_at = Some(Instant::now());
                tracing::warn!(%why, "disconnected from the master");
                return None;
            }
            ConnEvent::Refused { why } => {
                // The master answered SUBSCRIBE with an HTTP error (401 and
                // 400 for credentials and principals): nothing was decided
                // about the framework; it is retried with the same id.
                tracing::error!(%why, "the master refused the subscription");
                m.state = "refused";
                m.last_error = Some(why);
                return None;
            }
            ConnEvent::Event(ev) => {
                if let Some(o) = ev.offers.as_ref() {
                    for o in &o.offers {
                        let view = crate::mesos::offer_from(o, m.fw.role());
                        m.agents.insert(
                            o.agent_id.value.clone(),
                            AgentRec {
                                host: o.hostname.clone(),
                                address: view.address.clone(),
                                free: view,
                            },
                        );
                    }
                }
                m.fw.event(now, *ev, waiting)
            }
        };
        if let Some(id) = &out.new_id {
            // Durable before anything is launched under it.
            let (db, id2) = (self.bus.db().clone(), id.clone());
            if let Err(e) = db
                .call(move |c| crate::db::set_kv(c, "framework_id", Some(&id2)))
                .await
            {
                tracing::error!(error = %e, "could not store the framework id");
            }
            m.fw_id.send_replace(Some(id.clone()));
        }
        if let Some(secs) = out.heartbeat_secs {
            m.heartbeat_secs = secs;
        }
        if m.fw.is_subscribed() && m.state != "subscribed" {
            m.state = "subscribed";
            let after = m
                .disconnected_at
                .take()
                .map(|t| t.elapsed().as_millis() as u64);
            tracing::info!(
                framework_id = m.fw.id().unwrap_or_default(),
                reconnect_ms = after,
                "subscribed"
            );
        }
        let Backend::Mesos(m) = &mut self.backend else {
            return None;
        };
        m.send(out.calls);
        let mut inputs: Vec<Input> = out
            .updates
            .into_iter()
            .map(|(job, index, update)| {
                if update.state.is_terminal() {
                    m.task_res.remove(&(job, index));
                }
                Input::Peer { job, index, update }
            })
            .collect();
        if let Some(why) = out.refused {
            // Not a removal: the tasks still run and the id is still ours;
            // the subscription is retried (with backoff) until the master
            // lets it in.
            tracing::error!(%why, "the master refused the subscription (ERROR event)");
            m.state = "refused";
            m.last_error = Some(format!("the master refused the subscription: {why}"));
        }
        if let Some(why) = out.removed {
            tracing::error!(%why, "the master ended the framework; its tasks are gone");
            m.last_error = Some(format!("the master ended the framework: {why}"));
            m.fw_id.send_replace(None);
            m.task_res.clear();
            let db = self.bus.db().clone();
            if let Err(e) = db
                .call(|c| crate::db::set_kv(c, "framework_id", None))
                .await
            {
                tracing::error!(error = %e, "could not clear the framework id");
            }
            for job in self.core.running() {
                for index in self.core.live(job) {
                    inputs.push(Input::Peer {
                        job,
                        index,
                        update: PeerUpdate {
                            state: PeerState::Lost,
                            exit_code: None,
                            signal: None,
                            reason: format!("the master ended the framework: {why}"),
                        },
                    });
                }
            }
        }
        Some((inputs, out.acks))
    }

    /// TEARDOWN: the master kills every task; jobs end KILLED. The
    /// framework id is forgotten only once the master has the call; a call
    /// that does not arrive is sent again after the next subscription.
    async fn teardown(&mut self, reply: oneshot::Sender<Result<String, String>>) {
        let Backend::Mesos(m) = &mut self.backend else {
            let _ = reply.send(Err("teardown is for the Mesos backend".into()));
            return;
        };
        if m.fw.id().is_none() {
            let _ = reply.send(Err("the framework is not registered".into()));
            return;
        }
        if !m.fw.is_subscribed() || m.tearing_down {
            // Done as soon as the subscription is back (or the call under
            // way is answered).
            m.teardown.push(reply);
            return;
        }
        let Some(call) = m.fw.teardown() else {
            let _ = reply.send(Err("the framework is not registered".into()));
            return;
        };
        let id = m.fw.id().unwrap_or_default().to_string();
        m.tearing_down = true;
        let (done, delivered) = oneshot::channel();
        let _ = m.calls.send((call, Some(done)));
        let queue = m.queue.clone();
        tokio::spawn(async move {
            let result = delivered
                .await
                .unwrap_or_else(|_| Err("the dispatcher is stopping".into()));
            if let Some(q) = queue {
                let _ = q.send(Msg::TornDown { id, result, reply });
            }
        });
    }

    async fn torn_down(
        &mut self,
        id: String,
        result: Result<(), String>,
        reply: oneshot::Sender<Result<String, String>>,
    ) {
        let Backend::Mesos(m) = &mut self.backend else {
            return;
        };
        m.tearing_down = false;
        if let Err(e) = result {
            tracing::warn!(error = %e, "TEARDOWN did not reach the master; sent again once subscribed");
            m.teardown.push(reply);
            return;
        }
        tracing::info!(framework_id = %id, "framework torn down");
        m.fw.torn_down();
        m.fw_id.send_replace(None);
        m.task_res.clear();
        for r in std::mem::take(&mut m.teardown).into_iter().chain([reply]) {
            let _ = r.send(Ok(id.clone()));
        }
        let db = self.bus.db().clone();
        if let Err(e) = db
            .call(|c| crate::db::set_kv(c, "framework_id", None))
            .await
        {
            tracing::error!(error = %e, "could not clear the framework id");
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
                }
            }
            Backend::Mesos(m) => {
                let mut hosts = Vec::new();
                for (id, a) in &m.agents {
                    let (mut cpus, mut mem, mut peers) = (0u64, 0u64, 0usize);
                    for (agent, c, me) in m.task_res.values() {
                        if agent == id {
                            cpus += c;
                            mem += me;
                            peers += 1;
                        }
                    }
                    hosts.push(HostView {
                        host: a.host.clone(),
                        address: a.address.clone(),
                        cpus: (a.free.cpus_milli + cpus) as f64 / 1000.0,
                        cpus_used: cpus as f64 / 1000.0,
                        mem_mb: a.free.mem_mb + mem,
                        mem_used_mb: mem,
                        ports: a
                            .free
                            .ports
                            .iter()
                            .map(|r| format!("{}-{}", r.begin, r.end))
                            .collect::<Vec<_>>()
                            .join(","),
                        peers,
                    });
                }
                let now = crate::util::now_ms();
                ClusterView {
                    backend: "mesos".into(),
                    offers: m.agents.values().map(|a| a.free.clone()).collect(),
                    hosts,
                    waiting,
                    running: self.core.running(),
                    mesos: Some(MesosView {
                        masters: m.masters.clone(),
                        leader: m.master.clone(),
                        framework_id: m.fw.id().map(str::to_string),
                        state: m.state.into(),
                        last_error: m.last_error.clone(),
                        heartbeat_interval_secs: m.heartbeat_secs,
                        last_heartbeat_secs_ago: m
                            .fw
                            .last_heartbeat_ms()
                            .map(|t| now.saturating_sub(t) as f64 / 1000.0),
                        offers_held: m.fw.placeable().len(),
                        suppressed: m.fw.is_suppressed(),
                        reconciling: m.fw.reconciling(),
                        tasks: m.fw.task_count(),
                    }),
                }
            }
        }
    }

    async fn carry_out(&mut self, actions: Vec<Action>) {
        let mut records = Vec::new();
        for a in actions {
            // Consecutive records go to the database together.
            if let Action::Record { job, kind } = a {
                records.push((job, kind));
                continue;
            }
            self.flush_records(&mut records).await;
            match a {
                Action::Record { .. } => unreachable!("records are batched"),
                Action::Launch { job, placement } => {
                    let Some((roles, meta)) = self.meta.get(&job).cloned() else {
                        continue;
                    };
                    let ctx = JobContext {
                        job_id: job,
                        binary: &meta.app,
                        options: &meta.options,
                    };
                    match &mut self.backend {
                        Backend::Local(backend) => {
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
                            // Data files live on the agents; only explicit
                            // paths are passed on (see docs/role-files.md).
                            let specs = build_peers(
                                &ctx,
                                &roles,
                                &placement,
                                &|path: &str, _host: &str| vec![path.to_string()],
                            );
                            let url = format!("{}/api/blobs/{}", m.advertise, meta.sha256);
                            let mut rows = Vec::new();
                            let mut launches = Vec::new();
                            for (spec, slot) in specs.iter().zip(&placement.peers) {
                                let Some(offer) = m.fw.agent_of(slot.offer) else {
                                    continue;
                                };
                                let agent = offer.agent_id.value.clone();
                                let task = crate::mesos::task_info(
                                    job,
                                    spec,
                                    &roles.roles()[slot.role],
                                    &agent,
                                    &url,
                                    &meta.app,
                                    m.kill_grace,
                                );
                                rows.push(TaskRow {
                                    idx: spec.index,
                                    task_id: task.task_id.value.clone(),
                                    framework_id: m.fw.id().unwrap_or_default().to_string(),
                                    agent_id: agent.clone(),
                                    agent_url: agent_url(offer),
                                });
                                m.task_res.insert(
                                    (job, spec.index),
                                    (agent, spec.cpus_milli as u64, spec.mem_mb),
                                );
                                launches.push(Launch {
                                    offer: slot.offer,
                                    task,
                                });
                            }
                            // Where each peer runs is durable before it is launched.
                            let db = self.bus.db().clone();
                            if let Err(e) = db
                                .call(move |c| crate::db::insert_tasks(c, job, &rows))
                                .await
                            {
                                tracing::error!(job, error = %e, "could not record the tasks");
                            }
                            m.pending.extend(launches);
                        }
                    }
                }
                Action::Kill { job, peers } => match &mut self.backend {
                    Backend::Local(b) => b.kill(job, &peers),
                    Backend::Mesos(m) => {
                        let calls = m.fw.kill(job, &peers);
                        m.send(calls);
                    }
                },
                Action::Ended { job, state } => {
                    let meta = self.meta.remove(&job);
                    tracing::info!(job, %state, "job ended");
                    let binary = meta.map(|(_, m)| m.app).unwrap_or_default();
                    let fetch = match &self.backend {
                        Backend::Local(_) => None,
                        Backend::Mesos(m) => Some(m.files.clone()),
                    };
                    spawn_archive(
                        self.bus.clone(),
                        self.jobs_dir.clone(),
                        job,
                        binary,
                        self.archive_cap,
                        fetch,
                    );
                }
            }
        }
        self.flush_records(&mut records).await;
    }

    async fn flush_records(&self, records: &mut Vec<(u64, EventKind)>) {
        match records.len() {
            0 => {}
            1 => {
                let (job, kind) = records.pop().expect("one record");
                self.record(job, kind).await;
            }
            _ => {
                if let Err(e) = self.bus.record_many(std::mem::take(records)).await {
                    tracing::error!(error = %e, "could not record events");
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

/// Builds a job's archive off the queue, then records it. On Mesos the
/// sandboxes are first copied from the agents (files API) into the job's
/// directory, where the local backend keeps them.
pub fn spawn_archive(
    bus: Bus,
    jobs_dir: PathBuf,
    job: u64,
    binary: String,
    cap: u64,
    fetch: Option<Files>,
) {
    let job_dir = jobs_dir.join(job.to_string());
    tokio::spawn(async move {
        if let Some(files) = fetch {
            let rows = match bus.db().call(move |c| crate::db::tasks_of(c, job)).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(job, error = %e, "cannot read the job's tasks");
                    vec![]
                }
            };
            for r in rows {
                let dest = job_dir.join(format!("peer-{}", r.idx));
                if let Err(e) = tokio::fs::create_dir_all(&dest).await {
                    tracing::error!(job, error = %e, "cannot create {}", dest.display());
                    continue;
                }
                let sandbox = files::sandbox(&r.framework_id, &r.task_id);
                match files
                    .copy_sandbox(&r.agent_url, &sandbox, &dest, &binary, cap)
                    .await
                {
                    Ok(n) => tracing::debug!(job, peer = r.idx, files = n, "sandbox copied"),
                    Err(e) => {
                        tracing::warn!(job, peer = r.idx, error = %e, "cannot copy the sandbox");
                        let note = format!("The sandbox of this peer could not be fetched: {e}\n");
                        let _ = tokio::fs::write(dest.join("SANDBOX-MISSING.txt"), note).await;
                    }
                }
            }
        }
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
