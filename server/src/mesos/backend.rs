//! The Mesos backend as the runner drives it: placements become tasks
//! (recorded before they are launched) and ACCEPTs, kills become KILLs, the
//! connection's events become peer updates for the scheduling core, and a
//! TEARDOWN is seen through. The runner knows none of this; it calls these
//! methods and hands the core what comes back. `start` wires the
//! subscription, the call sender and this backend from the configuration.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use app::model::{ClusterView, HostView, MesosView, PeerState, WaitingJob};
use app::peer::{build_peers, JobContext};
use app::placement::{Offer, Placement};
use app::RoleFile;
use proto::Call;
use tokio::sync::{mpsc, oneshot, watch};

use super::conn::{call_kind, ConnEvent};
use super::files::Files;
use super::framework::{Framework, Launch};
use crate::config::Config;
use crate::db::{Db, TaskRow};
use crate::queue::{JobMeta, Msg};
use crate::sched::{Input, PeerUpdate};

/// A placement's tasks, built but not yet recorded (see
/// [`MesosBackend::prepare_launch`]).
pub struct PreparedLaunch {
    job: u64,
    /// Pins the stored peer list until the job's row names it.
    peer_list: Option<crate::blobs::Blob>,
    rows: Vec<TaskRow>,
    launches: Vec<Launch>,
}

/// What a connection event means for the scheduling core.
pub struct EventOutcome {
    /// Peer updates for the core.
    pub inputs: Vec<Input>,
    /// Acknowledgements: sent (`send`) only once the inputs are recorded,
    /// so that a crash in between loses nothing the agent forgot.
    pub acks: Vec<Call>,
}

/// A TEARDOWN's reply.
pub type TeardownReply = oneshot::Sender<Result<String, String>>;

/// The Mesos backend as the runner drives it: the framework core, the
/// agents it has heard of, the resources its tasks hold, and what is on
/// its way to the master.
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
    /// The attempt each active job runs: its tasks' ids name it.
    attempts: HashMap<u64, u32>,
    pending: Vec<Launch>,
    teardown: Vec<oneshot::Sender<Result<String, String>>>,
    /// A TEARDOWN is on its way to the master.
    tearing_down: bool,
    /// Given to each task's kill policy.
    pub kill_grace: Duration,
    /// The runner's own queue (answers of calls come back through it).
    queue: Option<mpsc::UnboundedSender<Msg>>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
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
            attempts: HashMap::new(),
            pending: vec![],
            teardown: vec![],
            tearing_down: false,
            kill_grace: Duration::from_secs(5),
            queue: None,
            metrics: Default::default(),
        }
    }

    pub fn send(&self, calls: Vec<Call>) {
        for c in calls {
            self.metrics.mesos_call(call_kind(&c));
            if let Some(d) = &c.decline {
                self.metrics.mesos_declined(d.offer_ids.len());
            }
            let _ = self.calls.send((c, None));
        }
    }
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

impl MesosBackend {
    /// Where answers of calls (a TEARDOWN's) come back.
    pub fn set_queue(&mut self, queue: mpsc::UnboundedSender<Msg>) {
        self.queue = Some(queue);
    }

    /// Where calls, offers and subscriptions are counted.
    pub fn set_metrics(&mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) {
        self.metrics = metrics;
    }

    pub fn files(&self) -> Files {
        self.files.clone()
    }

    /// A job arrived: offers are wanted again.
    pub fn job_arrived(&mut self) {
        self.fw.job_arrived();
    }

    pub fn tick(&mut self, now: u64) {
        let out = self.fw.tick(now);
        self.send(out.calls);
    }

    /// A job from before a restart: its live tasks are the framework's again.
    pub fn adopt(
        &mut self,
        job: u64,
        tasks: &[TaskRow],
        peers: &[(String, String, u16, PeerState)],
        now: u64,
    ) {
        for t in tasks {
            let live = peers
                .get(t.idx as usize)
                .is_some_and(|p| !p.3.is_terminal());
            if live {
                self.fw.adopt(&t.task_id, Some(t.agent_id.clone()), now);
                if let Some((_, _, attempt)) = super::task::parse_task_id(&t.task_id) {
                    self.attempts.insert(job, attempt);
                }
            }
        }
    }

    /// The offers held, as placement sees them.
    pub fn offers(&self) -> Vec<Offer> {
        self.fw.placeable()
    }

    /// Launches what was placed (one ACCEPT per offer) and settles the
    /// offers left over (held while something waits, else declined).
    pub fn settle(&mut self, now: u64, waiting: bool) {
        let launches = std::mem::take(&mut self.pending);
        let mut calls = if launches.is_empty() {
            vec![]
        } else {
            self.fw.accept(now, launches)
        };
        calls.extend(self.fw.settle(now, waiting));
        self.send(calls);
    }

    /// A placement becomes tasks: their TaskInfos are built and the job's
    /// peer list stored, nothing recorded yet. The runner does this while
    /// the placement's events are being written (it is most of a big
    /// gang's time before its ACCEPTs), then records it with
    /// [`Self::record_launch`].
    pub async fn prepare_launch(
        &mut self,
        blobs: &crate::blobs::BlobStore,
        ctx: &JobContext<'_>,
        roles: &RoleFile,
        meta: &JobMeta,
        placement: &Placement,
    ) -> PreparedLaunch {
        let job = ctx.job_id;
        self.attempts.insert(job, ctx.attempt);
        // Data files live on the agents; only explicit paths are passed on
        // (see docs/role-files.md).
        let specs = build_peers(ctx, roles, placement, &|path: &str, _host: &str| {
            vec![path.to_string()]
        });
        let url = format!("{}/api/blobs/{}", self.advertise, meta.sha256);
        // The job's peer list is stored once, by hash, for the agents to
        // fetch; should that fail, every task carries it as before.
        // Held (pinned against collection) until the job's row names it.
        let mut peer_list = None;
        let peers_url = match specs.first() {
            Some(s) => match blobs.put(s.peer_list.as_bytes()).await {
                Ok(b) => {
                    let url = format!("{}/api/blobs/{}", self.advertise, b.sha256);
                    peer_list = Some(b);
                    Some(url)
                }
                Err(e) => {
                    tracing::warn!(job, error = %e, "could not store the peer list; each task carries it");
                    None
                }
            },
            None => None,
        };
        let mut rows = Vec::new();
        let mut launches = Vec::new();
        for (spec, slot) in specs.iter().zip(&placement.peers) {
            let Some(offer) = self.fw.agent_of(slot.offer) else {
                continue;
            };
            let agent = offer.agent_id.value.clone();
            let task = super::task_info(
                job,
                ctx.attempt,
                spec,
                &roles.roles()[slot.role],
                &agent,
                &url,
                &meta.app,
                peers_url.as_deref(),
                self.kill_grace,
            );
            rows.push(TaskRow {
                idx: spec.index,
                task_id: task.task_id.value.clone(),
                framework_id: self.fw.id().unwrap_or_default().to_string(),
                agent_id: agent.clone(),
                agent_url: agent_url(offer),
            });
            self.task_res.insert(
                (job, spec.index),
                (agent, spec.cpus_milli as u64, spec.mem_mb),
            );
            launches.push(Launch {
                offer: slot.offer,
                task,
            });
        }
        PreparedLaunch {
            job,
            peer_list,
            rows,
            launches,
        }
    }

    /// Records where each peer runs and what it was given (`allot`: index,
    /// cpus in thousandths, MB), in one transaction, before the next
    /// `settle` launches the tasks.
    pub async fn record_launch(
        &mut self,
        db: &Db,
        prepared: PreparedLaunch,
        allot: Vec<(u32, u32, u64)>,
    ) {
        let PreparedLaunch {
            job,
            peer_list,
            rows,
            launches,
        } = prepared;
        let list_sha = peer_list.as_ref().map(|b| b.sha256.clone());
        if let Err(e) = db
            .call(move |c| {
                let tx = c.transaction()?;
                if let Some(sha) = &list_sha {
                    crate::db::insert_job_blob(&tx, job, sha)?;
                }
                crate::db::insert_allot(&tx, job, &allot)?;
                crate::db::insert_tasks(&tx, job, &rows)?;
                tx.commit()?;
                Ok(())
            })
            .await
        {
            tracing::error!(job, error = %e, "could not record the tasks");
        }
        drop(peer_list);
        self.pending.extend(launches);
    }

    /// The job has ended: nothing of it is tracked any more.
    pub fn job_ended(&mut self, job: u64) {
        self.attempts.remove(&job);
    }

    pub fn kill(&mut self, job: u64, peers: &[u32]) {
        let attempt = self.attempts.get(&job).copied().unwrap_or(1);
        let calls = self.fw.kill(job, attempt, peers);
        self.send(calls);
    }

    /// A connection event: the framework core's view changes, calls go
    /// out, and peer updates come back for the scheduling core. `live`
    /// names the peers still running, for a master that ends the framework.
    pub async fn event(
        &mut self,
        db: &Db,
        now: u64,
        ev: ConnEvent,
        waiting: bool,
        live: impl FnOnce() -> Vec<(u64, u32)>,
    ) -> Option<EventOutcome> {
        let out = match ev {
            ConnEvent::Connected { master, stream_id } => {
                tracing::info!(%master, %stream_id, "subscription stream open");
                self.master = Some(master);
                self.state = "subscribing";
                return None;
            }
            ConnEvent::Disconnected { why } => {
                self.fw.disconnected();
                // A refusal ends its stream: the refusal is what to show.
                if self.state != "refused" {
                    self.last_error = Some(why.clone());
                    self.state = "disconnected";
                }
                self.disconnected_at = Some(Instant::now());
                tracing::warn!(%why, "disconnected from the master");
                return None;
            }
            ConnEvent::Refused { why } => {
                // The master answered SUBSCRIBE with an HTTP error (401 and
                // 400 for credentials and principals): nothing was decided
                // about the framework; it is retried with the same id.
                tracing::error!(%why, "the master refused the subscription");
                self.state = "refused";
                self.last_error = Some(why);
                return None;
            }
            ConnEvent::Event(ev) => {
                if let Some(o) = ev.offers.as_ref() {
                    self.metrics.mesos_offers(o.offers.len());
                    for o in &o.offers {
                        let view = super::offer_from(o, self.fw.role());
                        self.agents.insert(
                            o.agent_id.value.clone(),
                            AgentRec {
                                host: o.hostname.clone(),
                                address: view.address.clone(),
                                free: view,
                            },
                        );
                    }
                }
                self.fw.event(now, *ev, waiting)
            }
        };
        if let Some(id) = &out.new_id {
            // Durable before anything is launched under it.
            let id2 = id.clone();
            if let Err(e) = db
                .call(move |c| crate::db::set_kv(c, "framework_id", Some(&id2)))
                .await
            {
                tracing::error!(error = %e, "could not store the framework id");
            }
            self.fw_id.send_replace(Some(id.clone()));
        }
        if let Some(secs) = out.heartbeat_secs {
            self.heartbeat_secs = secs;
        }
        if self.fw.is_subscribed() && self.state != "subscribed" {
            self.state = "subscribed";
            self.metrics.mesos_subscribed();
            let after = self
                .disconnected_at
                .take()
                .map(|t| t.elapsed().as_millis() as u64);
            tracing::info!(
                framework_id = self.fw.id().unwrap_or_default(),
                reconnect_ms = after,
                "subscribed"
            );
        }
        self.send(out.calls);
        let mut inputs: Vec<Input> = out
            .updates
            .into_iter()
            .map(|(job, index, update)| {
                if update.state.is_terminal() {
                    self.task_res.remove(&(job, index));
                }
                Input::Peer { job, index, update }
            })
            .collect();
        if let Some(why) = out.refused {
            // Not a removal: the tasks still run and the id is still ours;
            // the subscription is retried (with backoff) until the master
            // lets it in.
            tracing::error!(%why, "the master refused the subscription (ERROR event)");
            self.state = "refused";
            self.last_error = Some(format!("the master refused the subscription: {why}"));
        }
        if let Some(why) = out.removed {
            tracing::error!(%why, "the master ended the framework; its tasks are gone");
            self.last_error = Some(format!("the master ended the framework: {why}"));
            self.fw_id.send_replace(None);
            self.task_res.clear();
            if let Err(e) = db
                .call(|c| crate::db::set_kv(c, "framework_id", None))
                .await
            {
                tracing::error!(error = %e, "could not clear the framework id");
            }
            for (job, index) in live() {
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
        Some(EventOutcome {
            inputs,
            acks: out.acks,
        })
    }

    /// Teardowns asked while disconnected, due now that the framework is
    /// subscribed and no TEARDOWN is under way.
    pub fn due_teardowns(&mut self) -> Vec<TeardownReply> {
        if self.fw.is_subscribed() && !self.tearing_down {
            std::mem::take(&mut self.teardown)
        } else {
            vec![]
        }
    }

    /// TEARDOWN: the master kills every task. The framework id is
    /// forgotten only once the master has the call (`torn_down`); a call
    /// that does not arrive is sent again after the next subscription.
    pub fn teardown(&mut self, reply: TeardownReply) {
        if self.fw.id().is_none() {
            let _ = reply.send(Err("the framework is not registered".into()));
            return;
        }
        if !self.fw.is_subscribed() || self.tearing_down {
            // Done as soon as the subscription is back (or the call under
            // way is answered).
            self.teardown.push(reply);
            return;
        }
        let Some(call) = self.fw.teardown() else {
            let _ = reply.send(Err("the framework is not registered".into()));
            return;
        };
        let id = self.fw.id().unwrap_or_default().to_string();
        self.tearing_down = true;
        self.metrics.mesos_call("TEARDOWN");
        let (done, delivered) = oneshot::channel();
        let _ = self.calls.send((call, Some(done)));
        let queue = self.queue.clone();
        tokio::spawn(async move {
            let result = delivered
                .await
                .unwrap_or_else(|_| Err("the dispatcher is stopping".into()));
            if let Some(q) = queue {
                let _ = q.send(Msg::TornDown { id, result, reply });
            }
        });
    }

    /// The master's answer to a TEARDOWN. True when the framework is gone
    /// (the runner then ends every job); false when the call is to be sent
    /// again.
    pub async fn torn_down(
        &mut self,
        db: &Db,
        id: String,
        result: Result<(), String>,
        reply: TeardownReply,
    ) -> bool {
        self.tearing_down = false;
        if let Err(e) = result {
            tracing::warn!(error = %e, "TEARDOWN did not reach the master; sent again once subscribed");
            self.teardown.push(reply);
            return false;
        }
        tracing::info!(framework_id = %id, "framework torn down");
        self.fw.torn_down();
        self.fw_id.send_replace(None);
        self.task_res.clear();
        for r in std::mem::take(&mut self.teardown)
            .into_iter()
            .chain([reply])
        {
            let _ = r.send(Ok(id.clone()));
        }
        if let Err(e) = db
            .call(|c| crate::db::set_kv(c, "framework_id", None))
            .await
        {
            tracing::error!(error = %e, "could not clear the framework id");
        }
        true
    }

    /// The cluster as the framework sees it.
    pub fn view(&self, waiting: Vec<WaitingJob>, running: Vec<u64>) -> ClusterView {
        let mut hosts = Vec::new();
        for (id, a) in &self.agents {
            let (mut cpus, mut mem, mut peers) = (0u64, 0u64, 0usize);
            for (agent, c, me) in self.task_res.values() {
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
            offers: self.agents.values().map(|a| a.free.clone()).collect(),
            hosts,
            waiting,
            running,
            mesos: Some(MesosView {
                masters: self.masters.clone(),
                leader: self.master.clone(),
                framework_id: self.fw.id().map(str::to_string),
                state: self.state.into(),
                last_error: self.last_error.clone(),
                heartbeat_interval_secs: self.heartbeat_secs,
                last_heartbeat_secs_ago: self
                    .fw
                    .last_heartbeat_ms()
                    .map(|t| now.saturating_sub(t) as f64 / 1000.0),
                offers_held: self.fw.placeable().len(),
                suppressed: self.fw.is_suppressed(),
                reconciling: self.fw.reconciling(),
                tasks: self.fw.task_count(),
            }),
            storage: None,
        }
    }
}

/// What the Mesos backend is started from, read from the configuration.
pub struct Parts {
    pub masters: crate::mesos::detect::Masters,
    pub framework_id: Option<String>,
    pub creds: Option<crate::mesos::Credentials>,
    pub transport: crate::mesos::Transport,
    pub files: Files,
}

/// Starts the subscription, the call sender and the event relay, and
/// builds the backend the runner drives. Events wait until `go` is sent:
/// the jobs of before a restart are taken back first.
pub fn start(
    cfg: &Config,
    bound: SocketAddr,
    parts: Parts,
    tx: mpsc::UnboundedSender<Msg>,
) -> (MesosBackend, oneshot::Sender<()>) {
    let Parts {
        masters,
        framework_id,
        creds,
        transport,
        files,
    } = parts;
    use super::conn;
    use super::framework::Tunables;

    let host = crate::local::machine_hostname();
    let advertise = cfg
        .advertise_url
        .clone()
        .unwrap_or_else(|| {
            let h = if bound.ip().is_unspecified() {
                host.clone()
            } else {
                bound.ip().to_string()
            };
            format!("http://{h}:{}", bound.port())
        })
        .trim_end_matches('/')
        .to_string();
    if bound.ip().is_loopback() && cfg.advertise_url.is_none() {
        tracing::warn!(%advertise, "agents fetch binaries from a loopback address; on a real cluster use --ip 0.0.0.0 or --advertise-url");
    }
    let user = cfg.mesos_user.clone().unwrap_or_else(|| {
        std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "root".into())
    });
    let fw_settings = proto::calls::FrameworkSettings {
        id: framework_id.clone(),
        hostname: Some(host),
        webui_url: Some(format!("{advertise}/")),
        failover_timeout: cfg.failover_timeout_secs as f64,
        role: Some(cfg.mesos_role.clone()),
        multi_role: true,
        checkpoint: !cfg.mesos_no_checkpoint,
        principal: creds.as_ref().map(|c| c.principal.clone()),
        // Agents with GPUs are offered only to frameworks that say they
        // can use them; placement keeps GPU-less peers off them when it can.
        gpus: true,
        ..proto::calls::FrameworkSettings::new(&user, &cfg.framework_name)
    };
    let mut t = Tunables {
        hold_ms: cfg.offer_hold_secs * 1000,
        implicit_every_ms: cfg.reconcile_every_secs * 1000,
        ..Tunables::default()
    };
    let (mut base, mut cap) = (Duration::from_millis(500), Duration::from_secs(30));
    if cfg.fast_timers {
        t.reconcile_base_ms = 200;
        t.reconcile_cap_ms = 2_000;
        t.staging_timeout_ms = 5_000;
        t.revive_min_ms = 200;
        base = Duration::from_millis(50);
        cap = Duration::from_millis(1_000);
    }
    let (id_tx, id_rx) = watch::channel(framework_id.clone());
    let (calls_tx, calls_rx) = mpsc::unbounded_channel();
    let (session_tx, session_rx) = watch::channel(None);
    // Calls that find the subscription gone name the stream they were sent
    // on, so that a stale report never ends a newer subscription.
    let (reconnect_tx, reconnect_rx) = mpsc::unbounded_channel();
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let detector = super::detect::Detector::new(masters);
    let masters_text = detector.describe();
    tracing::info!(masters = %masters_text, framework_id = ?framework_id, %advertise, "Mesos backend");
    let settings = conn::ConnSettings {
        framework: fw_settings,
        creds,
        transport: transport.clone(),
        subscribe_timeout: Duration::from_secs(if cfg.fast_timers { 5 } else { 75 }),
        missed_heartbeats: cfg.missed_heartbeats.max(1),
        backoff_base: base,
        backoff_cap: cap,
    };
    let call_creds = settings.creds.clone();
    tokio::spawn(conn::run(
        settings,
        detector,
        id_rx,
        events_tx,
        session_tx,
        reconnect_rx,
    ));
    tokio::spawn(conn::send_calls(
        calls_rx,
        session_rx,
        reconnect_tx,
        call_creds,
        transport,
    ));
    // Events wait until the jobs of before a restart are taken back, so
    // that the first SUBSCRIBED finds their tasks to reconcile.
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        if go_rx.await.is_err() {
            return;
        }
        while let Some(ev) = events_rx.recv().await {
            if tx.send(Msg::Mesos(ev)).is_err() {
                break;
            }
        }
    });
    let mut mesos = MesosBackend::new(
        Framework::new(framework_id, t).for_role(&cfg.mesos_role),
        calls_tx,
        id_tx,
        advertise,
        masters_text,
        files,
    );
    mesos.kill_grace = Duration::from_secs(cfg.kill_grace_secs);
    (mesos, go_tx)
}
