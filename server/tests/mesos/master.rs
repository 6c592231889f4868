//! A Mesos master for tests, speaking the real wire protocol and behaving
//! as the recordings of a real Mesos 1.12 master show
//! (`../shared/fixtures/mesos/scenarios/`; `conformance.rs` replays each
//! one against this master and compares). Where a recording is silent it
//! follows Mesos' `src/master/http.cpp` and `master.cpp`.
//!
//! - SUBSCRIBE: protobuf RecordIO over a chunked response with a
//!   `Mesos-Stream-Id`. A refusal (root user without `--root_submissions`,
//!   a role an ACL forbids, a removed framework id) is `200` with one ERROR
//!   event and the terminating chunk. A second connection for the same
//!   framework takes over, and the first gets ERROR "Framework failed over".
//! - Calls are checked in Mesos' order: HTTP Basic authentication (401),
//!   leader (307 with a scheme-less `Location`, 503), recovery (503),
//!   method (405), Content-Type (415), body (400), validation (400), the
//!   framework (400 "cannot be found", 403 "not subscribed"), the stream id
//!   (400). Errors are plain text; success is an empty 202.
//! - Agents offer their resources by reservation (unreserved `*` and static
//!   reservations for a role) in the format the framework's capabilities
//!   ask for (`role`, `allocation_info` with MULTI_ROLE, `reservations` with
//!   RESERVATION_REFINEMENT). A launch asking one pool for more than it
//!   offered gets TASK_ERROR.
//! - Agents run tasks for real: URIs fetched over HTTP, the command under
//!   `sh -c` in a sandbox, TASK_STARTING, TASK_RUNNING, then FINISHED /
//!   FAILED / KILLED, each from the executor with a uuid and retried on
//!   resubscription until acknowledged. Updates the master makes itself
//!   (agent lost, invalid launch, reconciliation) carry no uuid and are never
//!   retried.
//! - Each agent serves the files API with Mesos' quirks: `/files/read` puts
//!   raw file bytes in its JSON (invalid UTF-8 where a window splits a
//!   character), at most 64 KiB a read.
//!
//! - Each agent serves `/monitor/statistics` and `/containers` as the
//!   agent-monitor recording shows: one entry per running executor (the
//!   executor id is the task id), cumulative CPU seconds and resident
//!   memory of the task's whole process group, limits with the command
//!   executor's overhead (0.1 cpus, 32 MiB), a fractional epoch timestamp.
//!
//! TLS on demand: `start_tls` serves the master and every agent over
//! HTTPS with a certificate the test makes, and offers then name agents
//! with `scheme: "https"`, as agents started with `LIBPROCESS_SSL_ENABLED`
//! do.
//!
//! Faults on demand: drop or break the stream, stop heartbeats, fail over
//! to the other master, no leader, restart the master (recovery, agents not
//! yet re-registered), kill and restart an agent (with or without
//! checkpointing), an agent removed after ping timeouts and then marked
//! gone, rescinded offers, duplicate or out-of-order updates, a removed
//! framework. It records every call for assertions. A test tool only:
//! never a backend users run.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use proto_reexport::*;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use tokio::sync::mpsc;

mod proto_reexport {
    pub use proto::mesos::framework_info::capability::Type as Cap;
    pub use proto::mesos::scheduler::{call, event};
    pub use proto::mesos::task_status::{Reason, Source};
    pub use proto::mesos::{self, TaskState};
    pub use proto::recordio;
    pub use proto::{Call, Event, Message};
}

/// The unreserved pool's key; any other key is the role a reservation is for.
pub const UNRESERVED: &str = "*";

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Res {
    pub cpus: f64,
    pub mem: f64,
    pub gpus: f64,
    pub ports: Vec<(u64, u64)>,
}

/// An agent's resources by reservation.
pub type Pools = BTreeMap<String, Res>;

/// `(pool, cpus, mem, ports)`.
pub type PoolSpec<'a> = (&'a str, f64, f64, Option<(u64, u64)>);

/// Pools from `(pool, cpus, mem, ports)`: `*` unreserved, any other key a
/// static reservation for that role.
pub fn pools(list: &[PoolSpec]) -> Pools {
    list.iter()
        .map(|(k, cpus, mem, ports)| {
            let r = Res {
                cpus: *cpus,
                mem: *mem,
                ports: ports.iter().copied().collect(),
                ..Res::default()
            };
            (k.to_string(), r)
        })
        .collect()
}

impl Res {
    fn is_empty(&self) -> bool {
        self.cpus < 1e-9 && self.mem < 1e-9 && self.gpus < 1e-9 && self.ports.is_empty()
    }

    fn contains(&self, want: &Res) -> bool {
        want.cpus <= self.cpus + 1e-9
            && want.mem <= self.mem + 1e-9
            && want.gpus <= self.gpus + 1e-9
            && want
                .ports
                .iter()
                .all(|(b, e)| (*b..=*e).all(|p| self.ports.iter().any(|(x, y)| *x <= p && p <= *y)))
    }

    fn take(&mut self, r: &Res) {
        self.cpus -= r.cpus;
        self.mem -= r.mem;
        self.gpus -= r.gpus;
        for (b, e) in &r.ports {
            for p in *b..=*e {
                self.ports = remove_port(&self.ports, p);
            }
        }
    }

    fn give(&mut self, r: &Res) {
        self.cpus += r.cpus;
        self.mem += r.mem;
        self.gpus += r.gpus;
        self.ports.extend(r.ports.iter().copied());
        self.ports.sort();
    }

    /// Mesos' rendering in TASK_ERROR messages: `cpus(allocated: r):1.5; mem(...):64`.
    fn describe(&self, pool: &str, alloc: &str) -> Vec<String> {
        let tag = if pool == UNRESERVED {
            format!("(allocated: {alloc})")
        } else {
            format!("(allocated: {alloc})(reservations: [(STATIC,{pool})])")
        };
        let mut out = vec![];
        if self.cpus > 0.0 {
            out.push(format!("cpus{tag}:{}", self.cpus));
        }
        if self.mem > 0.0 {
            out.push(format!("mem{tag}:{}", self.mem));
        }
        if self.gpus > 0.0 {
            out.push(format!("gpus{tag}:{}", self.gpus));
        }
        if !self.ports.is_empty() {
            let r: Vec<String> = self.ports.iter().map(|(b, e)| format!("{b}-{e}")).collect();
            out.push(format!("ports{tag}:[{}]", r.join(", ")));
        }
        out
    }
}

fn give_pools(to: &mut Pools, from: &Pools) {
    for (k, r) in from {
        to.entry(k.clone()).or_default().give(r);
    }
}

fn remove_port(ranges: &[(u64, u64)], p: u64) -> Vec<(u64, u64)> {
    let mut out = vec![];
    for &(b, e) in ranges {
        if p < b || p > e {
            out.push((b, e));
            continue;
        }
        if p > b {
            out.push((b, p - 1));
        }
        if p < e {
            out.push((p + 1, e));
        }
    }
    out
}

/// The pool a requested resource is served from: its last reservation's
/// role (refinement format), else its `role`, else unreserved.
fn pool_of(r: &mesos::Resource) -> String {
    if let Some(last) = r.reservations.last() {
        return last.role.clone().unwrap_or_else(|| UNRESERVED.into());
    }
    r.role.clone().unwrap_or_else(|| UNRESERVED.into())
}

fn pools_of(resources: &[mesos::Resource]) -> Pools {
    let mut pools = Pools::new();
    for x in resources {
        let r = pools.entry(pool_of(x)).or_default();
        match x.name.as_str() {
            "cpus" => r.cpus += x.scalar.as_ref().map_or(0.0, |s| s.value),
            "mem" => r.mem += x.scalar.as_ref().map_or(0.0, |s| s.value),
            "gpus" => r.gpus += x.scalar.as_ref().map_or(0.0, |s| s.value),
            "ports" => {
                for rg in x.ranges.iter().flat_map(|x| &x.range) {
                    r.ports.push((rg.begin, rg.end));
                }
            }
            _ => {}
        }
    }
    pools
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AgentState {
    /// Registered and connected.
    Active,
    /// Its process died; still registered (deactivated) until it comes back.
    Down,
    /// Removed after missed pings (unreachable).
    Unreachable,
    /// Marked gone by an operator.
    Gone,
    /// Known from the registry after a master restart, not re-registered yet.
    Recovered,
}

struct Agent {
    hostname: String,
    files_port: u16,
    /// It has GPUs: offered only to frameworks with GPU_RESOURCES
    /// (the master's default `--filter_gpu_resources=true`).
    has_gpus: bool,
    free: Pools,
    offered: bool,
    declined_until: Option<Instant>,
    state: AgentState,
    /// Executor updates made while the agent was down, sent when it is back.
    held: Vec<mesos::TaskStatus>,
}

struct TaskRec {
    agent: String,
    state: TaskState,
    res: Pools,
    pgid: Option<i32>,
    killing: bool,
}

/// What the master keeps of the subscribed framework.
#[derive(Clone, Debug)]
pub struct FwInfo {
    pub id: String,
    pub user: String,
    pub checkpoint: bool,
    pub partition_aware: bool,
    pub multi_role: bool,
    pub refinement: bool,
    pub gpu_resources: bool,
    /// The role offers are allocated to ("*" without a role).
    pub role: String,
    pub principal: Option<String>,
    pub info: mesos::FrameworkInfo,
}

struct Stream {
    id: String,
    tx: mpsc::UnboundedSender<Result<Bytes, std::io::Error>>,
    endpoint: usize,
}

#[derive(Default)]
pub struct Record {
    /// Every call received, by type, in order.
    pub calls: Vec<(String, Call)>,
    /// HTTP status of every call answered, with its type.
    pub answers: Vec<(String, u16)>,
    /// ACKNOWLEDGEs for an update that had no uuid or an unknown one.
    pub bad_acks: usize,
    /// LAUNCHes per task id.
    pub launches: BTreeMap<String, usize>,
    /// Framework ids SUBSCRIBE named (None for a first subscription).
    pub subscribes: Vec<Option<String>>,
    /// SUBSCRIBE requests left unanswered by `stall_subscribe`.
    pub stalled_subscribes: usize,
    /// Calls held back by `hold_next` (answered late).
    pub held_calls: usize,
    /// Every OFFERS event sent (when, how many offers) and every ACCEPT received.
    pub offer_events: Vec<(Instant, usize)>,
    /// ACCEPTs naming an offer that was rescinded or never made.
    pub invalid_accepts: usize,
    pub accepts_at: Vec<Instant>,
    /// Authorization headers of every request to the files API.
    pub files_auth: Vec<Option<String>>,
    /// Every download the agents' fetchers made: (agent, URI).
    pub fetches: Vec<(String, String)>,
}

struct Cluster {
    /// Serve HTTPS with this configuration (master and agents).
    tls: Option<Arc<rustls::ServerConfig>>,
    /// A forgotten subscription whose connection is kept open and silent.
    orphaned: Option<Stream>,
    stall_subscribe: bool,
    /// Launched tasks stay STAGING: the agents never start them (a bench of
    /// launches measures the framework, not 10,000 processes on one machine).
    stage_only: bool,
    leader: Option<usize>,
    endpoints: Vec<SocketAddr>,
    fw: Option<FwInfo>,
    removed: BTreeSet<String>,
    next_id: u64,
    stream: Option<Stream>,
    heartbeat_secs: f64,
    heartbeats: bool,
    agents: BTreeMap<String, Agent>,
    offers: BTreeMap<String, (String, Pools)>,
    tasks: BTreeMap<String, TaskRec>,
    /// Tasks of agents that became unreachable, by task: the agent.
    unreachable: BTreeMap<String, String>,
    suppressed: bool,
    root_submissions: bool,
    forbidden_roles: BTreeSet<String>,
    /// HTTP Basic credentials every request must carry (principal, secret).
    credentials: Option<(String, String)>,
    /// Credentials the agents' files API asks for.
    files_credentials: Option<(String, String)>,
    /// SUBSCRIBE and calls answer 503 "Master has not finished recovery" until then.
    recovering_until: Option<Instant>,
    unacked: BTreeMap<Vec<u8>, mesos::TaskStatus>,
    /// Run once a terminal update's ACKNOWLEDGE has been taken (the
    /// master has forgotten the task), before the call is answered.
    on_terminal_ack: Option<Arc<dyn Fn() + Send + Sync>>,
    /// The next call of this type is answered only after this long (a
    /// slow network or a busy master), checked as it stands by then.
    hold_next: Option<(call::Type, Duration)>,
    record: Record,
    root: PathBuf,
    /// The dispatcher's binary URLs are fetched with this client.
    http: reqwest::Client,
    /// Each agent's fetcher cache: a URI with `cache: true` is downloaded
    /// once per agent, and tasks starting together wait for that one
    /// download (docs/fetcher.md, fetcher-cache-internals.md).
    fetch_cache: HashMap<(String, String), FetchCell>,
}

type FetchCell = Arc<tokio::sync::OnceCell<Option<Bytes>>>;

#[derive(Clone)]
pub struct TestMaster {
    c: Arc<Mutex<Cluster>>,
    pub root: Arc<tempfile::TempDir>,
}

type Shared = Arc<Mutex<Cluster>>;

/// A version-4-looking UUID from a counter (Mesos' stream ids and update
/// uuids are random UUIDs; tests only need them unique).
fn uuid(n: u64) -> Vec<u8> {
    let mut v = n.to_be_bytes().to_vec();
    v.extend_from_slice(&(n ^ 0x5a5a_5a5a).to_be_bytes());
    v
}

fn uuid_text(n: u64) -> String {
    let h = hex::encode(uuid(n));
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// RFC 4648 base64, for the expected `Authorization` header.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn basic(principal: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64(format!("{principal}:{secret}").as_bytes())
    )
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

/// Serves `app` on `listener`, over TLS when a configuration is given.
fn serve(listener: tokio::net::TcpListener, app: Router, tls: Option<Arc<rustls::ServerConfig>>) {
    match tls {
        None => {
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        }
        Some(cfg) => {
            let tls = TlsListener {
                tcp: listener,
                acceptor: tokio_rustls::TlsAcceptor::from(cfg),
            };
            tokio::spawn(async move { axum::serve(tls, app).await.unwrap() });
        }
    }
}

/// Accepts TCP connections and completes each TLS handshake; a client
/// that refuses the certificate only ends its own connection.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            let handshake = self.acceptor.accept(tcp);
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

impl TestMaster {
    /// Two master endpoints (the first leads) and no agents yet.
    pub async fn start(heartbeat_secs: f64) -> TestMaster {
        Self::start_with(heartbeat_secs, None).await
    }

    /// As `start`, serving HTTPS with this certificate chain and key (PEM).
    pub async fn start_tls(heartbeat_secs: f64, chain_pem: &str, key_pem: &str) -> TestMaster {
        let chain = rustls_pemfile_certs(chain_pem);
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        Self::start_with(heartbeat_secs, Some(Arc::new(cfg))).await
    }

    async fn start_with(heartbeat_secs: f64, tls: Option<Arc<rustls::ServerConfig>>) -> TestMaster {
        let root = Arc::new(tempfile::tempdir().unwrap());
        let c = Arc::new(Mutex::new(Cluster {
            tls: tls.clone(),
            orphaned: None,
            stall_subscribe: false,
            stage_only: false,
            leader: Some(0),
            endpoints: vec![],
            fw: None,
            removed: BTreeSet::new(),
            next_id: 1,
            stream: None,
            heartbeat_secs,
            heartbeats: true,
            agents: BTreeMap::new(),
            offers: BTreeMap::new(),
            tasks: BTreeMap::new(),
            unreachable: BTreeMap::new(),
            suppressed: false,
            root_submissions: true,
            forbidden_roles: BTreeSet::new(),
            credentials: None,
            files_credentials: None,
            recovering_until: None,
            unacked: BTreeMap::new(),
            on_terminal_ack: None,
            hold_next: None,
            record: Record::default(),
            root: root.path().to_path_buf(),
            http: reqwest::Client::new(),
            fetch_cache: HashMap::new(),
        }));
        for i in 0..2 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            c.lock()
                .unwrap()
                .endpoints
                .push(listener.local_addr().unwrap());
            let app = Router::new()
                .route("/api/v1/scheduler", post(scheduler).get(not_post))
                .route("/master/api/v1/scheduler", post(scheduler).get(not_post))
                .with_state((c.clone(), i));
            serve(listener, app, tls.clone());
        }
        let tick = c.clone();
        tokio::spawn(async move {
            let mut last_hb = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mut c = tick.lock().unwrap();
                let hb = Duration::from_secs_f64(c.heartbeat_secs);
                if c.heartbeats && last_hb.elapsed() >= hb {
                    last_hb = Instant::now();
                    c.send(Event {
                        r#type: Some(event::Type::Heartbeat as i32),
                        ..Default::default()
                    });
                }
                c.make_offers();
            }
        });
        TestMaster { c, root }
    }

    /// `host:port` of master endpoint `i` (0 leads at first).
    pub fn addr(&self, i: usize) -> String {
        self.c.lock().unwrap().endpoints[i].to_string()
    }

    /// An agent with unreserved resources and its own files API; returns its id.
    pub async fn add_agent(&self, cpus: f64, mem: f64, ports: (u64, u64)) -> String {
        let n = self.c.lock().unwrap().agents.len();
        let mut pools = Pools::new();
        pools.insert(
            UNRESERVED.into(),
            Res {
                cpus,
                mem,
                ports: vec![ports],
                ..Res::default()
            },
        );
        self.add_agent_with(&format!("host{n}"), pools).await
    }

    /// An agent named `hostname` with these pools (`*` unreserved, other
    /// keys a static reservation for that role).
    pub async fn add_agent_with(&self, hostname: &str, free: Pools) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let id = {
            let mut c = self.c.lock().unwrap();
            let id = format!("agent-S{}", c.agents.len());
            c.agents.insert(
                id.clone(),
                Agent {
                    hostname: hostname.into(),
                    files_port: port,
                    has_gpus: free.values().any(|r| r.gpus > 0.0),
                    free,
                    offered: false,
                    declined_until: None,
                    state: AgentState::Active,
                    held: vec![],
                },
            );
            id
        };
        let app = Router::new()
            .route("/files/read", get(files_read))
            .route("/files/browse", get(files_browse))
            .route("/files/download", get(files_download))
            .route("/monitor/statistics", get(monitor_statistics))
            .route("/containers", get(containers))
            .route("/api/v1", post(agent_operator))
            .with_state((self.c.clone(), id.clone()));
        let tls = self.c.lock().unwrap().tls.clone();
        serve(listener, app, tls);
        id
    }

    /// The id of the one agent, when there is exactly one.
    pub fn only_agent(&self) -> Option<String> {
        let c = self.c.lock().unwrap();
        (c.agents.len() == 1).then(|| c.agents.keys().next().unwrap().clone())
    }

    /// `http://127.0.0.1:<port>` of an agent's HTTP endpoint (files API, monitor).
    pub fn agent_url(&self, id: &str) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.c.lock().unwrap().agents[id].files_port
        )
    }

    pub fn record<T>(&self, f: impl FnOnce(&Record) -> T) -> T {
        f(&self.c.lock().unwrap().record)
    }

    pub fn calls_of(&self, kind: call::Type) -> Vec<Call> {
        self.record(|r| {
            r.calls
                .iter()
                .filter(|(k, _)| k == kind.as_str_name())
                .map(|(_, c)| c.clone())
                .collect()
        })
    }

    pub fn framework_id(&self) -> Option<String> {
        self.c.lock().unwrap().fw.as_ref().map(|f| f.id.clone())
    }

    pub fn framework(&self) -> Option<FwInfo> {
        self.c.lock().unwrap().fw.clone()
    }

    pub fn is_subscribed(&self) -> bool {
        self.c.lock().unwrap().stream.is_some()
    }

    pub fn task_state(&self, task: &str) -> Option<TaskState> {
        self.c.lock().unwrap().tasks.get(task).map(|t| t.state)
    }

    /// Task processes alive right now.
    pub fn running_processes(&self) -> usize {
        self.c
            .lock()
            .unwrap()
            .tasks
            .values()
            .filter(|t| t.pgid.is_some())
            .count()
    }

    /// The ids of the live tasks on one agent.
    pub fn tasks_on(&self, agent: &str) -> Vec<String> {
        self.c.lock().unwrap().live_tasks_on(agent)
    }

    /// Tasks the master knows that have not ended.
    pub fn live_tasks(&self) -> usize {
        let g = self.c.lock().unwrap();
        g.tasks
            .values()
            .filter(|t| !proto::calls::is_terminal(t.state))
            .count()
    }

    pub fn unacked(&self) -> usize {
        self.c.lock().unwrap().unacked.len()
    }

    pub fn suppressed(&self) -> bool {
        self.c.lock().unwrap().suppressed
    }

    pub fn outstanding_offers(&self) -> usize {
        self.c.lock().unwrap().offers.len()
    }

    /// The master forgets the subscription but the connection stays open and
    /// silent (as after a master failover the old connection may linger):
    /// the next call is answered 403 "Framework is not subscribed".
    pub fn orphan_stream(&self) {
        let mut c = self.c.lock().unwrap();
        c.orphaned = c.stream.take();
    }

    /// SUBSCRIBE requests hang: the connection is taken, nothing is answered.
    /// Runs `f` each time a terminal update's ACKNOWLEDGE is taken, before
    /// the call is answered: a test can kill the framework right there.
    pub fn on_terminal_ack(&self, f: impl Fn() + Send + Sync + 'static) {
        self.c.lock().unwrap().on_terminal_ack = Some(Arc::new(f));
    }

    /// Holds the next call of type `t` for `d` before handling it.
    pub fn hold_next(&self, t: call::Type, d: Duration) {
        self.c.lock().unwrap().hold_next = Some((t, d));
    }

    /// Tasks launched from now on are kept STAGING, never started.
    pub fn stage_only(&self, on: bool) {
        self.c.lock().unwrap().stage_only = on;
    }

    pub fn stall_subscribe(&self, on: bool) {
        self.c.lock().unwrap().stall_subscribe = on;
    }

    /// Closes the subscription stream with its terminating chunk.
    pub fn drop_stream(&self) {
        self.c.lock().unwrap().stream = None;
    }

    /// Breaks the subscription connection mid-body (no terminating chunk),
    /// as when the master process dies.
    pub fn break_stream(&self) {
        let mut c = self.c.lock().unwrap();
        if let Some(s) = c.stream.take() {
            let _ = s.tx.send(Err(std::io::Error::other("master died")));
        }
    }

    /// `--root_submissions=false`: SUBSCRIBE as user root is refused.
    pub fn set_root_submissions(&self, on: bool) {
        self.c.lock().unwrap().root_submissions = on;
    }

    /// An ACL that refuses frameworks registering with this role.
    pub fn forbid_role(&self, role: &str) {
        self.c
            .lock()
            .unwrap()
            .forbidden_roles
            .insert(role.to_string());
    }

    pub fn allow_all_roles(&self) {
        self.c.lock().unwrap().forbidden_roles.clear();
    }

    /// `--authenticate_http_frameworks --http_framework_authenticators=basic`.
    pub fn require_auth(&self, principal: &str, secret: &str) {
        self.c.lock().unwrap().credentials = Some((principal.into(), secret.into()));
    }

    /// Agents with `--authenticate_http_readonly`: the files API asks too.
    pub fn require_files_auth(&self, principal: &str, secret: &str) {
        self.c.lock().unwrap().files_credentials = Some((principal.into(), secret.into()));
    }

    pub fn set_heartbeats(&self, on: bool) {
        self.c.lock().unwrap().heartbeats = on;
    }

    /// The other endpoint becomes the leader; the old one redirects to it.
    /// Framework, agents and tasks carry over (as a new leader recovers them
    /// once the agents re-register through ZooKeeper).
    pub fn fail_over(&self) {
        let mut c = self.c.lock().unwrap();
        c.leader = Some(1 - c.leader.unwrap_or(0));
        c.stream = None;
        c.clear_offers();
    }

    pub fn set_leader(&self, leader: Option<usize>) {
        let mut c = self.c.lock().unwrap();
        c.leader = leader;
        c.stream = None;
    }

    /// The master process is killed and started again on its replicated
    /// log: the stream breaks, SUBSCRIBE answers 503 "Master has not
    /// finished recovery" for `recovery`, then the old framework id is
    /// accepted. Agents are only "recovered" until `reregister_agents`:
    /// meanwhile the master knows none of their tasks and reconciliation
    /// answers nothing for them.
    pub fn restart_master(&self, recovery: Duration) {
        let mut c = self.c.lock().unwrap();
        if let Some(s) = c.stream.take() {
            let _ = s.tx.send(Err(std::io::Error::other("master died")));
        }
        c.clear_offers();
        c.recovering_until = Some(Instant::now() + recovery);
        for a in c.agents.values_mut() {
            if a.state == AgentState::Active || a.state == AgentState::Down {
                a.state = AgentState::Recovered;
            }
        }
    }

    /// Agents re-register with a restarted master; nothing is sent for
    /// their tasks, which are known again.
    pub fn reregister_agents(&self) {
        let mut c = self.c.lock().unwrap();
        for a in c.agents.values_mut() {
            if a.state == AgentState::Recovered {
                a.state = AgentState::Active;
            }
        }
    }

    /// The agent process is `kill -9`ed. A checkpointing framework sees
    /// nothing and its tasks run on; otherwise every task goes TASK_LOST
    /// (REASON_AGENT_DISCONNECTED, no uuid) at once and its processes die
    /// with their executors.
    pub fn kill_agent(&self, id: &str) {
        let mut c = self.c.lock().unwrap();
        c.agents.get_mut(id).unwrap().state = AgentState::Down;
        c.rescind_agent_offers(id);
        let checkpoint = c.fw.as_ref().is_some_and(|f| f.checkpoint);
        if checkpoint {
            return;
        }
        let host = c.agents[id].hostname.clone();
        for t in c.live_tasks_on(id) {
            c.kill_process(&t);
            c.tasks.remove(&t);
            c.master_update(
                &t,
                Some(id),
                TaskState::TaskLost,
                &format!("Agent {host} disconnected"),
                Reason::AgentDisconnected,
            );
        }
    }

    /// The agent comes back on the same work directory: it re-registers,
    /// recovers the executors of checkpointed tasks and sends the updates
    /// they made meanwhile. Nothing is sent for the re-registration itself.
    pub fn restart_agent(&self, id: &str) {
        let mut c = self.c.lock().unwrap();
        let a = c.agents.get_mut(id).unwrap();
        a.state = AgentState::Active;
        a.offered = false;
        let held = std::mem::take(&mut a.held);
        for s in held {
            c.unacked.insert(s.uuid.clone().unwrap(), s.clone());
            c.send(update_event(s));
        }
    }

    /// The agent missed its pings (`--agent_ping_timeout` ×
    /// `--max_agent_ping_timeouts`) and is removed: TASK_UNREACHABLE for a
    /// partition-aware framework, TASK_LOST otherwise, REASON_AGENT_REMOVED,
    /// no uuid, then a FAILURE event naming the agent. (Real processes run
    /// on, unreported; here they are stopped so that tests leave none.)
    pub fn remove_agent(&self, id: &str) {
        let mut c = self.c.lock().unwrap();
        c.agents.get_mut(id).unwrap().state = AgentState::Unreachable;
        c.rescind_agent_offers(id);
        let pa = c.fw.as_ref().is_some_and(|f| f.partition_aware);
        let state = if pa {
            TaskState::TaskUnreachable
        } else {
            TaskState::TaskLost
        };
        for t in c.live_tasks_on(id) {
            c.kill_process(&t);
            c.tasks.remove(&t);
            c.unreachable.insert(t.clone(), id.to_string());
            c.master_update(
                &t,
                Some(id),
                state,
                "health check timed out",
                Reason::AgentRemoved,
            );
        }
        c.send(Event {
            r#type: Some(event::Type::Failure as i32),
            failure: Some(event::Failure {
                agent_id: Some(mesos::AgentId { value: id.into() }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    /// Operator MARK_AGENT_GONE on an unreachable agent.
    pub fn mark_agent_gone(&self, id: &str) {
        let mut c = self.c.lock().unwrap();
        c.agents.get_mut(id).unwrap().state = AgentState::Gone;
        let pa = c.fw.as_ref().is_some_and(|f| f.partition_aware);
        let (state, reason) = if pa {
            (
                TaskState::TaskGoneByOperator,
                Reason::AgentRemovedByOperator,
            )
        } else {
            (TaskState::TaskLost, Reason::AgentRemoved)
        };
        let tasks: Vec<String> = c
            .unreachable
            .iter()
            .filter(|(_, a)| *a == id)
            .map(|(t, _)| t.clone())
            .collect();
        for t in tasks {
            c.master_update(&t, Some(id), state, "Agent has been marked gone", reason);
        }
    }

    /// The master forgets the framework (as when its failover timeout
    /// passed): tasks killed, stream closed; resubscribing with the old id
    /// gets ERROR "Framework has been removed".
    pub fn remove_framework(&self) {
        let mut c = self.c.lock().unwrap();
        c.remove_framework_locked();
    }

    pub fn rescind_all(&self) -> usize {
        let mut c = self.c.lock().unwrap();
        let ids: Vec<String> = c.offers.keys().cloned().collect();
        for o in &ids {
            c.rescind_locked(o);
        }
        ids.len()
    }

    /// Sends an update for a task as its executor would (with a uuid) or as
    /// a reconciliation answer (without).
    pub fn inject_update(&self, task: &str, state: TaskState, with_uuid: bool) {
        let mut c = self.c.lock().unwrap();
        if with_uuid {
            c.executor_update(task, state, "injected");
        } else {
            let agent = c.tasks.get(task).map(|t| t.agent.clone());
            c.master_update(
                task,
                agent.as_deref(),
                state,
                "Reconciliation: Latest task state",
                Reason::Reconciliation,
            );
        }
    }

    /// Sends the last acknowledged executor update of a task once more (a
    /// duplicate, as an agent retrying would).
    pub fn duplicate_last(&self, task: &str) -> bool {
        let mut c = self.c.lock().unwrap();
        let last = c.record.calls.iter().rev().find_map(|(k, call)| {
            (k == "ACKNOWLEDGE" && call.acknowledge.as_ref().unwrap().task_id.value == task)
                .then(|| call.acknowledge.clone().unwrap())
        });
        let Some(ack) = last else { return false };
        let state = c.tasks.get(task).map(|t| t.state).unwrap();
        let status = mesos::TaskStatus {
            task_id: ack.task_id,
            state: state as i32,
            agent_id: Some(ack.agent_id),
            uuid: Some(ack.uuid.clone()),
            source: Some(Source::Executor as i32),
            ..Default::default()
        };
        c.unacked.insert(ack.uuid, status.clone());
        c.send(update_event(status));
        true
    }
}

fn update_event(status: mesos::TaskStatus) -> Event {
    Event {
        r#type: Some(event::Type::Update as i32),
        update: Some(event::Update { status }),
        ..Default::default()
    }
}

fn error_event(message: &str) -> Event {
    Event {
        r#type: Some(event::Type::Error as i32),
        error: Some(event::Error {
            message: message.into(),
        }),
        ..Default::default()
    }
}

impl Cluster {
    fn send(&mut self, ev: Event) -> bool {
        let Some(s) = &self.stream else { return false };
        let bytes = recordio::encode(&ev.encode_to_vec());
        if s.tx.send(Ok(Bytes::from(bytes))).is_err() {
            self.stream = None;
            return false;
        }
        true
    }

    fn partition_aware(&self) -> bool {
        self.fw.as_ref().is_some_and(|f| f.partition_aware)
    }

    fn clear_offers(&mut self) {
        let offers = std::mem::take(&mut self.offers);
        for (_, (agent, pools)) in offers {
            if let Some(a) = self.agents.get_mut(&agent) {
                give_pools(&mut a.free, &pools);
                a.offered = false;
            }
        }
    }

    fn rescind_agent_offers(&mut self, agent: &str) {
        let offers: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, (a, _))| a == agent)
            .map(|(o, _)| o.clone())
            .collect();
        for o in offers {
            self.rescind_locked(&o);
        }
    }

    fn live_tasks_on(&self, agent: &str) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|(_, t)| t.agent == agent && !proto::calls::is_terminal(t.state))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn kill_process(&mut self, task: &str) {
        if let Some(pg) = self.tasks.get_mut(task).and_then(|t| t.pgid.take()) {
            unsafe { libc::kill(-pg, libc::SIGKILL) };
        }
    }

    fn remove_framework_locked(&mut self) {
        if let Some(fw) = self.fw.take() {
            self.removed.insert(fw.id);
        }
        let tasks: Vec<String> = self.tasks.keys().cloned().collect();
        for t in tasks {
            self.kill_process(&t);
        }
        self.tasks.clear();
        self.unreachable.clear();
        self.unacked.clear();
        self.clear_offers();
        self.stream = None;
    }

    fn rescind_locked(&mut self, offer: &str) {
        if let Some((agent, pools)) = self.offers.remove(offer) {
            if let Some(a) = self.agents.get_mut(&agent) {
                give_pools(&mut a.free, &pools);
                a.offered = false;
            }
            self.send(Event {
                r#type: Some(event::Type::Rescind as i32),
                rescind: Some(event::Rescind {
                    offer_id: mesos::OfferId {
                        value: offer.into(),
                    },
                }),
                ..Default::default()
            });
        }
    }

    /// Offer resources in the format the framework's capabilities ask for.
    fn offer_resources(&self, pools: &Pools) -> Vec<mesos::Resource> {
        let fw = self.fw.as_ref().unwrap();
        let alloc = fw.multi_role.then(|| mesos::resource::AllocationInfo {
            role: Some(fw.role.clone()),
        });
        let mut out = vec![];
        // Reservations first, as Mesos lists them.
        let mut keys: Vec<&String> = pools.keys().collect();
        keys.sort_by_key(|k| (k.as_str() == UNRESERVED, k.as_str()));
        for pool in keys {
            let r = &pools[pool];
            let (role, reservations) = match (pool.as_str(), fw.refinement) {
                (UNRESERVED, true) => (None, vec![]),
                (UNRESERVED, false) => (Some(UNRESERVED.to_string()), vec![]),
                (p, true) => (
                    None,
                    vec![mesos::resource::ReservationInfo {
                        role: Some(p.into()),
                        r#type: Some(mesos::resource::reservation_info::Type::Static as i32),
                        principal: None,
                    }],
                ),
                (p, false) => (Some(p.to_string()), vec![]),
            };
            let base = mesos::Resource {
                role,
                reservations,
                allocation_info: alloc.clone(),
                ..Default::default()
            };
            let scalar = |n: &str, v: f64| mesos::Resource {
                name: n.into(),
                r#type: mesos::value::Type::Scalar as i32,
                scalar: Some(mesos::value::Scalar { value: v }),
                ..base.clone()
            };
            if r.cpus > 0.0 {
                out.push(scalar("cpus", r.cpus));
            }
            if r.mem > 0.0 {
                out.push(scalar("mem", r.mem));
            }
            if r.gpus > 0.0 {
                out.push(scalar("gpus", r.gpus));
            }
            if !r.ports.is_empty() {
                out.push(mesos::Resource {
                    name: "ports".into(),
                    r#type: mesos::value::Type::Ranges as i32,
                    ranges: Some(mesos::value::Ranges {
                        range: r
                            .ports
                            .iter()
                            .map(|(b, e)| mesos::value::Range { begin: *b, end: *e })
                            .collect(),
                    }),
                    ..base.clone()
                });
            }
        }
        out
    }

    fn make_offers(&mut self) {
        if self.stream.is_none() || self.suppressed {
            return;
        }
        let Some(fw) = self.fw.clone() else { return };
        let now = Instant::now();
        let mut list = vec![];
        let ids: Vec<String> = self.agents.keys().cloned().collect();
        for id in ids {
            let a = &self.agents[&id];
            if a.state != AgentState::Active || a.offered {
                continue;
            }
            if a.declined_until.is_some_and(|t| now < t) {
                continue;
            }
            if a.has_gpus && !fw.gpu_resources {
                continue;
            }
            // Only unreserved resources and those reserved for the
            // framework's role are offered to it.
            let offered: Pools = a
                .free
                .iter()
                .filter(|(k, r)| (*k == UNRESERVED || **k == fw.role) && !r.is_empty())
                .map(|(k, r)| (k.clone(), r.clone()))
                .collect();
            if offered.values().all(|r| r.cpus < 0.01) {
                continue;
            }
            let resources = self.offer_resources(&offered);
            let oid = format!("master-O{}", self.next_id);
            self.next_id += 1;
            let a = self.agents.get_mut(&id).unwrap();
            a.offered = true;
            for k in offered.keys() {
                a.free.remove(k);
            }
            list.push(mesos::Offer {
                id: mesos::OfferId { value: oid.clone() },
                framework_id: mesos::FrameworkId {
                    value: fw.id.clone(),
                },
                agent_id: mesos::AgentId { value: id.clone() },
                hostname: a.hostname.clone(),
                resources,
                url: Some(mesos::Url {
                    scheme: if self.tls.is_some() { "https" } else { "http" }.into(),
                    address: mesos::Address {
                        hostname: Some(a.hostname.clone()),
                        ip: Some("127.0.0.1".into()),
                        port: a.files_port as i32,
                    },
                    path: Some("/slave(1)".into()),
                    ..Default::default()
                }),
                allocation_info: fw.multi_role.then(|| mesos::resource::AllocationInfo {
                    role: Some(fw.role.clone()),
                }),
                ..Default::default()
            });
            self.offers.insert(oid, (id.clone(), offered));
        }
        if list.is_empty() {
            return;
        }
        self.record.offer_events.push((Instant::now(), list.len()));
        self.send(Event {
            r#type: Some(event::Type::Offers as i32),
            offers: Some(event::Offers { offers: list }),
            ..Default::default()
        });
    }

    /// An update from the task's executor: a uuid, retried until
    /// acknowledged; held while its agent is down.
    fn executor_update(&mut self, task: &str, state: TaskState, message: &str) {
        let Some(t) = self.tasks.get_mut(task) else {
            return;
        };
        t.state = state;
        let agent = t.agent.clone();
        let id = self.next_id;
        self.next_id += 1;
        let status = mesos::TaskStatus {
            task_id: mesos::TaskId { value: task.into() },
            state: state as i32,
            message: (!message.is_empty()).then(|| message.to_string()),
            agent_id: Some(mesos::AgentId {
                value: agent.clone(),
            }),
            executor_id: Some(mesos::ExecutorId { value: task.into() }),
            timestamp: Some(0.0),
            source: Some(Source::Executor as i32),
            uuid: Some(uuid(id)),
            ..Default::default()
        };
        if let Some(a) = self.agents.get_mut(&agent) {
            if a.state != AgentState::Active {
                a.held.push(status);
                return;
            }
        }
        self.unacked
            .insert(status.uuid.clone().unwrap(), status.clone());
        self.send(update_event(status));
    }

    /// An update the master makes itself: no uuid, never retried (lost if
    /// the framework is not connected).
    fn master_update(
        &mut self,
        task: &str,
        agent: Option<&str>,
        state: TaskState,
        message: &str,
        reason: Reason,
    ) {
        if let Some(t) = self.tasks.get_mut(task) {
            t.state = state;
        }
        let status = mesos::TaskStatus {
            task_id: mesos::TaskId { value: task.into() },
            state: state as i32,
            message: Some(message.into()),
            agent_id: agent.map(|a| mesos::AgentId { value: a.into() }),
            timestamp: Some(0.0),
            source: Some(Source::Master as i32),
            reason: Some(reason as i32),
            unreachable_time: (state == TaskState::TaskUnreachable)
                .then_some(mesos::TimeInfo { nanoseconds: 0 }),
            ..Default::default()
        };
        self.send(update_event(status));
    }

    /// Mesos' explicit reconciliation of one task (`master.cpp`,
    /// `Master::reconcile`): the latest state of a known task; nothing while
    /// its agent is recovered but not back; otherwise by the agent's state.
    fn reconcile_one(&mut self, task: &str, agent: Option<&str>) {
        let pa = self.partition_aware();
        let lost_unless_pa = |s: TaskState| if pa { s } else { TaskState::TaskLost };
        let agent_state = |c: &Cluster, a: &str| c.agents.get(a).map(|x| x.state);
        if let Some(t) = self.tasks.get(task) {
            if agent_state(self, &t.agent) != Some(AgentState::Recovered) {
                let (a, s) = (t.agent.clone(), t.state);
                self.master_update(
                    task,
                    Some(&a),
                    s,
                    "Reconciliation: Latest task state",
                    Reason::Reconciliation,
                );
                return;
            }
        }
        let any_recovered = self
            .agents
            .values()
            .any(|a| a.state == AgentState::Recovered);
        let (state, message) = match agent.map(|a| agent_state(self, a)) {
            Some(Some(AgentState::Recovered)) => return,
            None if any_recovered => return,
            Some(Some(AgentState::Active | AgentState::Down)) => (
                lost_unless_pa(TaskState::TaskGone),
                "Reconciliation: Task is unknown to the agent",
            ),
            Some(Some(AgentState::Unreachable)) => (
                lost_unless_pa(TaskState::TaskUnreachable),
                "Reconciliation: Task is unreachable",
            ),
            Some(Some(AgentState::Gone)) => (
                lost_unless_pa(TaskState::TaskGoneByOperator),
                "Reconciliation: Task is gone",
            ),
            _ => (
                lost_unless_pa(TaskState::TaskUnknown),
                "Reconciliation: Task is unknown",
            ),
        };
        self.master_update(task, agent, state, message, Reason::Reconciliation);
    }

    fn sandbox(&self, agent: &str, fw: &str, task: &str) -> PathBuf {
        self.root
            .join(agent)
            .join("frameworks")
            .join(fw)
            .join("executors")
            .join(task)
            .join("runs/latest")
    }
}

fn text(code: StatusCode, msg: &str) -> Response {
    (
        code,
        [("content-type", "text/plain; charset=utf-8")],
        msg.to_string(),
    )
        .into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            ("www-authenticate", "Basic realm=\"mesos-master-scheduler\""),
            ("content-type", "text/plain; charset=utf-8"),
        ],
        "401 Unauthorized.",
    )
        .into_response()
}

async fn not_post() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [("allow", "POST")],
        "405 Method Not Allowed. Expecting one of { 'POST' }, but received 'GET'.",
    )
        .into_response()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn scheduler(
    State((c, me)): State<(Shared, usize)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let kind = Call::decode(body.clone()).ok().and_then(|c| c.r#type);
    let is_subscribe = kind.is_some_and(|t| t == call::Type::Subscribe as i32);
    let hold = {
        let mut g = c.lock().unwrap();
        match g.hold_next {
            Some((t, d)) if kind == Some(t as i32) => {
                g.hold_next = None;
                g.record.held_calls += 1;
                Some(d)
            }
            _ => None,
        }
    };
    if let Some(d) = hold {
        tokio::time::sleep(d).await;
    }
    if is_subscribe {
        // A master that takes the connection and never answers (a hung
        // process, a black-holed network).
        let stalled = {
            let mut g = c.lock().unwrap();
            g.record.stalled_subscribes += g.stall_subscribe as usize;
            g.stall_subscribe
        };
        if stalled {
            std::future::pending::<()>().await;
        }
    }
    let mut g = c.lock().unwrap();
    let (kind, resp) = handle_scheduler(&mut g, me, &headers, body, &c);
    g.record.answers.push((kind, resp.status().as_u16()));
    resp
}

fn handle_scheduler(
    g: &mut Cluster,
    me: usize,
    headers: &HeaderMap,
    body: Bytes,
    shared: &Shared,
) -> (String, Response) {
    let decoded = Call::decode(body.clone()).ok();
    let kind = decoded
        .as_ref()
        .and_then(|c| c.r#type)
        .and_then(|t| call::Type::try_from(t).ok())
        .unwrap_or(call::Type::Unknown)
        .as_str_name()
        .to_string();
    let answer = |r: Response| (kind.clone(), r);
    // The HTTP authenticator runs before the handler.
    let principal = match &g.credentials {
        None => None,
        Some((p, s)) => {
            if header(headers, "authorization") != Some(basic(p, s).as_str()) {
                return answer(unauthorized());
            }
            Some(p.clone())
        }
    };
    match g.leader {
        None => return answer(text(StatusCode::SERVICE_UNAVAILABLE, "No leader elected")),
        Some(l) if l != me => {
            let loc = format!("//{}/master/api/v1/scheduler", g.endpoints[l]);
            return answer((StatusCode::TEMPORARY_REDIRECT, [("location", loc)]).into_response());
        }
        _ => {}
    }
    if g.recovering_until.is_some_and(|t| Instant::now() < t) {
        return answer(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Master has not finished recovery",
        ));
    }
    match header(headers, "content-type") {
        None => {
            return answer(text(
                StatusCode::BAD_REQUEST,
                "Expecting 'Content-Type' to be present",
            ))
        }
        Some("application/x-protobuf") => {}
        // Mesos also takes JSON; the dispatcher never sends it.
        Some("application/json") => {
            return answer(text(
                StatusCode::BAD_REQUEST,
                "this test master reads protobuf calls only",
            ))
        }
        Some(_) => {
            return answer(text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Expecting 'Content-Type' of application/json or application/x-protobuf",
            ))
        }
    }
    let Some(call) = decoded else {
        return answer(text(
            StatusCode::BAD_REQUEST,
            "Failed to parse body into Call protobuf",
        ));
    };
    g.record.calls.push((kind.clone(), call.clone()));
    let invalid = |what: &str| {
        text(
            StatusCode::BAD_REQUEST,
            &format!("Failed to validate scheduler::Call: {what}"),
        )
    };
    let t = call::Type::try_from(call.r#type.unwrap_or(0)).unwrap_or(call::Type::Unknown);
    if t == call::Type::Subscribe {
        let Some(sub) = &call.subscribe else {
            return answer(invalid("Expecting 'subscribe' to be present"));
        };
        if let (Some(p), Some(fp)) = (&principal, &sub.framework_info.principal) {
            if p != fp {
                return answer(invalid(&format!(
                    "Authenticated principal '{p}' does not match principal '{fp}' set in `FrameworkInfo`"
                )));
            }
        }
        if headers.contains_key("mesos-stream-id") {
            return answer(text(
                StatusCode::BAD_REQUEST,
                "Subscribe calls should not include the 'Mesos-Stream-Id' header",
            ));
        }
        return answer(subscribe(g, me, call, principal));
    }
    let Some(fw_id) = call.framework_id.as_ref().map(|f| f.value.clone()) else {
        return answer(invalid("Expecting 'framework_id' to be present"));
    };
    let body_missing = match t {
        call::Type::Accept => call.accept.is_none().then_some("accept"),
        call::Type::Decline => call.decline.is_none().then_some("decline"),
        call::Type::Kill => call.kill.is_none().then_some("kill"),
        call::Type::Acknowledge => call.acknowledge.is_none().then_some("acknowledge"),
        call::Type::Reconcile => call.reconcile.is_none().then_some("reconcile"),
        _ => None,
    };
    if let Some(field) = body_missing {
        return answer(invalid(&format!("Expecting '{field}' to be present")));
    }
    if g.fw.as_ref().map(|f| f.id.as_str()) != Some(fw_id.as_str()) {
        return answer(text(StatusCode::BAD_REQUEST, "Framework cannot be found"));
    }
    let Some(stream) = &g.stream else {
        return answer(text(StatusCode::FORBIDDEN, "Framework is not subscribed"));
    };
    let Some(sid) = header(headers, "mesos-stream-id") else {
        return answer(text(
            StatusCode::BAD_REQUEST,
            "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
        ));
    };
    if sid != stream.id {
        return answer(text(
            StatusCode::BAD_REQUEST,
            &format!(
                "The stream ID '{sid}' included in this request didn't match the stream ID currently associated with framework ID {fw_id}"
            ),
        ));
    }
    match t {
        call::Type::Accept => accept(g, call.accept.unwrap(), shared),
        call::Type::Decline => {
            let d = call.decline.unwrap();
            let refuse = d.filters.and_then(|f| f.refuse_seconds).unwrap_or(5.0);
            for o in d.offer_ids {
                if let Some((agent, pools)) = g.offers.remove(&o.value) {
                    let a = g.agents.get_mut(&agent).unwrap();
                    give_pools(&mut a.free, &pools);
                    a.offered = false;
                    a.declined_until = Some(Instant::now() + Duration::from_secs_f64(refuse));
                }
            }
        }
        call::Type::Kill => {
            let k = call.kill.unwrap();
            let t = k.task_id.value;
            let live = g
                .tasks
                .get(&t)
                .is_some_and(|x| !proto::calls::is_terminal(x.state));
            if !live {
                // An unknown task is answered as a reconciliation would be
                // (`master.cpp`, `Master::kill`).
                if !g.tasks.contains_key(&t) {
                    let agent = k.agent_id.map(|a| a.value);
                    g.reconcile_one(&t, agent.as_deref());
                }
            } else {
                let pg = g.tasks[&t].pgid;
                g.tasks.get_mut(&t).unwrap().killing = true;
                match pg {
                    Some(pg) => {
                        unsafe { libc::kill(-pg, libc::SIGTERM) };
                        g.executor_update(&t, TaskState::TaskKilling, "");
                    }
                    None => {
                        // Not started yet.
                        let res = g.tasks[&t].res.clone();
                        let agent = g.tasks[&t].agent.clone();
                        if let Some(a) = g.agents.get_mut(&agent) {
                            give_pools(&mut a.free, &res);
                        }
                        g.executor_update(&t, TaskState::TaskKilled, "");
                    }
                }
            }
        }
        call::Type::Acknowledge => {
            let a = call.acknowledge.unwrap();
            match g.unacked.remove(&a.uuid) {
                None => g.record.bad_acks += 1,
                Some(s) => {
                    // A terminal update acknowledged: the master forgets the task.
                    let st = TaskState::try_from(s.state).unwrap_or(TaskState::TaskUnknown);
                    if proto::calls::is_terminal(st)
                        && g.tasks
                            .get(&s.task_id.value)
                            .is_some_and(|t| t.state == st && t.pgid.is_none())
                    {
                        g.tasks.remove(&s.task_id.value);
                    }
                    if proto::calls::is_terminal(st) {
                        if let Some(f) = g.on_terminal_ack.clone() {
                            f();
                        }
                    }
                }
            }
        }
        call::Type::Reconcile => {
            let r = call.reconcile.unwrap();
            if r.tasks.is_empty() {
                let known: Vec<(String, String, TaskState)> = g
                    .tasks
                    .iter()
                    .filter(|(_, t)| {
                        g.agents.get(&t.agent).map(|a| a.state) != Some(AgentState::Recovered)
                    })
                    .map(|(k, t)| (k.clone(), t.agent.clone(), t.state))
                    .collect();
                for (task, agent, state) in known {
                    g.master_update(
                        &task,
                        Some(&agent),
                        state,
                        "Reconciliation: Latest task state",
                        Reason::Reconciliation,
                    );
                }
            } else {
                for t in r.tasks {
                    let agent = t.agent_id.map(|a| a.value);
                    g.reconcile_one(&t.task_id.value, agent.as_deref());
                }
            }
        }
        call::Type::Suppress => g.suppressed = true,
        call::Type::Revive => {
            g.suppressed = false;
            for a in g.agents.values_mut() {
                a.declined_until = None;
            }
        }
        call::Type::Teardown => g.remove_framework_locked(),
        _ => return answer(text(StatusCode::NOT_IMPLEMENTED, "")),
    }
    answer(
        Response::builder()
            .status(StatusCode::ACCEPTED)
            .header("content-length", "0")
            .body(Body::empty())
            .unwrap(),
    )
}

fn subscribe(g: &mut Cluster, me: usize, call: Call, principal: Option<String>) -> Response {
    let info = call.subscribe.unwrap().framework_info;
    let asked = info.id.as_ref().map(|i| i.value.clone());
    g.record.subscribes.push(asked.clone());
    let (tx, rx) = mpsc::unbounded_channel();
    let sid = uuid_text(g.next_id);
    g.next_id += 1;
    let caps: BTreeSet<i32> = info.capabilities.iter().filter_map(|c| c.r#type).collect();
    let multi_role = caps.contains(&(Cap::MultiRole as i32));
    let roles: Vec<String> = if multi_role {
        info.roles.clone()
    } else {
        vec![info.role.clone().unwrap_or_else(|| "*".into())]
    };
    // A refusal: 200, one ERROR event, the terminating chunk.
    let refuse = |tx: mpsc::UnboundedSender<Result<Bytes, std::io::Error>>, why: &str| {
        let ev = error_event(why);
        let _ = tx.send(Ok(Bytes::from(recordio::encode(&ev.encode_to_vec()))));
        drop(tx);
    };
    if !g.root_submissions && info.user == "root" {
        refuse(
            tx,
            "User 'root' is not allowed to run frameworks without --root_submissions set",
        );
        return stream_response(&sid, rx);
    }
    if let Some(r) = roles.iter().find(|r| g.forbidden_roles.contains(*r)) {
        let who = principal.clone().unwrap_or_default();
        refuse(
            tx,
            &format!("Not authorized to register framework {who} with roles {{ {r} }}"),
        );
        return stream_response(&sid, rx);
    }
    if let Some(a) = &asked {
        if g.removed.contains(a) {
            refuse(tx, "Framework has been removed");
            return stream_response(&sid, rx);
        }
    }
    let id = match (&asked, &g.fw) {
        (Some(a), _) => a.clone(),
        (None, _) => {
            let id = format!("master-{:04}", g.next_id);
            g.next_id += 1;
            id
        }
    };
    // A second connection for the same framework takes over.
    if g.fw.as_ref().is_some_and(|f| f.id == id) {
        if let Some(old) = g.stream.take() {
            let ev = error_event("Framework failed over");
            let _ = old
                .tx
                .send(Ok(Bytes::from(recordio::encode(&ev.encode_to_vec()))));
        }
    }
    // `checkpoint` cannot change on re-subscription (Mesos keeps the old one).
    let checkpoint = match &g.fw {
        Some(f) if f.id == id => f.checkpoint,
        _ => info.checkpoint.unwrap_or(false),
    };
    g.fw = Some(FwInfo {
        id: id.clone(),
        user: info.user.clone(),
        checkpoint,
        partition_aware: caps.contains(&(Cap::PartitionAware as i32)),
        multi_role,
        refinement: caps.contains(&(Cap::ReservationRefinement as i32)),
        gpu_resources: caps.contains(&(Cap::GpuResources as i32)),
        role: roles.first().cloned().unwrap_or_else(|| "*".into()),
        principal: info.principal.clone().or(principal),
        info: info.clone(),
    });
    g.stream = Some(Stream {
        id: sid.clone(),
        tx,
        endpoint: me,
    });
    g.clear_offers();
    g.suppressed = false;
    let addr = g.endpoints[me];
    g.send(Event {
        r#type: Some(event::Type::Subscribed as i32),
        subscribed: Some(event::Subscribed {
            framework_id: mesos::FrameworkId { value: id },
            heartbeat_interval_seconds: Some(g.heartbeat_secs),
            master_info: Some(mesos::MasterInfo {
                id: format!("master-{me}"),
                ip: 0x0100007f,
                port: addr.port() as u32,
                hostname: Some("127.0.0.1".into()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    });
    g.send(Event {
        r#type: Some(event::Type::Heartbeat as i32),
        ..Default::default()
    });
    // Agents retry executor updates that were never acknowledged.
    let pending: Vec<mesos::TaskStatus> = g.unacked.values().cloned().collect();
    for s in pending {
        g.send(update_event(s));
    }
    stream_response(&sid, rx)
}

fn stream_response(
    sid: &str,
    rx: mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>,
) -> Response {
    let body = Body::from_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    Response::builder()
        .status(200)
        .header("content-type", "application/x-protobuf")
        .header("mesos-stream-id", sid)
        .body(body)
        .unwrap()
}

fn accept(g: &mut Cluster, a: call::Accept, shared: &Shared) {
    g.record.accepts_at.push(Instant::now());
    let fw = g.fw.clone().unwrap();
    let pa = fw.partition_aware;
    for oid in &a.offer_ids {
        let Some((agent, mut pools)) = g.offers.remove(&oid.value) else {
            // An offer rescinded or unknown: its tasks are dropped.
            g.record.invalid_accepts += 1;
            for op in &a.operations {
                for t in op.launch.iter().flat_map(|l| &l.task_infos) {
                    *g.record
                        .launches
                        .entry(t.task_id.value.clone())
                        .or_default() += 1;
                    g.master_update(
                        &t.task_id.value,
                        Some(&t.agent_id.value),
                        if pa {
                            TaskState::TaskDropped
                        } else {
                            TaskState::TaskLost
                        },
                        &format!(
                            "Task launched with invalid offers: Offer {} is no longer valid",
                            oid.value
                        ),
                        Reason::InvalidOffers,
                    );
                }
            }
            continue;
        };
        for op in &a.operations {
            for t in op.launch.iter().flat_map(|l| &l.task_infos) {
                let tid = t.task_id.value.clone();
                *g.record.launches.entry(tid.clone()).or_default() += 1;
                let need = pools_of(&t.resources);
                let fits = need
                    .iter()
                    .all(|(pool, r)| pools.get(pool).is_some_and(|have| have.contains(r)));
                if !fits || t.agent_id.value != agent {
                    let asked: Vec<String> = need
                        .iter()
                        .flat_map(|(p, r)| r.describe(p, &fw.role))
                        .collect();
                    let have: Vec<String> = pools
                        .iter()
                        .flat_map(|(p, r)| r.describe(p, &fw.role))
                        .collect();
                    g.master_update(
                        &tid,
                        Some(&agent),
                        TaskState::TaskError,
                        &format!(
                            "Total resources {} required by task and its executor is more than available {}",
                            asked.join("; "),
                            have.join("; ")
                        ),
                        Reason::TaskInvalid,
                    );
                    continue;
                }
                for (pool, r) in &need {
                    pools.get_mut(pool).unwrap().take(r);
                }
                g.tasks.insert(
                    tid.clone(),
                    TaskRec {
                        agent: agent.clone(),
                        state: TaskState::TaskStaging,
                        res: need,
                        pgid: None,
                        killing: false,
                    },
                );
                if g.stage_only {
                    continue;
                }
                let sandbox = g.sandbox(&agent, &fw.id, &tid);
                tokio::spawn(run_task(
                    shared.clone(),
                    tid,
                    agent.clone(),
                    sandbox,
                    t.command.clone().unwrap_or_default(),
                    g.http.clone(),
                ));
            }
        }
        let a = g.agents.get_mut(&agent).unwrap();
        give_pools(&mut a.free, &pools);
        a.offered = false;
    }
}

/// The agent's side of a task: fetch, run, report.
async fn run_task(
    c: Shared,
    tid: String,
    agent: String,
    sandbox: PathBuf,
    cmd: mesos::CommandInfo,
    http: reqwest::Client,
) {
    std::fs::create_dir_all(&sandbox).unwrap();
    for uri in &cmd.uris {
        let name = uri
            .output_file
            .clone()
            .unwrap_or_else(|| uri.value.rsplit('/').next().unwrap().to_string());
        let download = || async {
            c.lock()
                .unwrap()
                .record
                .fetches
                .push((agent.clone(), uri.value.clone()));
            match http.get(&uri.value).send().await {
                Ok(r) if r.status().is_success() => r.bytes().await.ok(),
                _ => None,
            }
        };
        let got = if uri.cache == Some(true) {
            let cell = c
                .lock()
                .unwrap()
                .fetch_cache
                .entry((agent.clone(), uri.value.clone()))
                .or_default()
                .clone();
            let got = cell.get_or_init(download).await.clone();
            if got.is_none() {
                // A failed download is not cached: the next task tries again.
                c.lock()
                    .unwrap()
                    .fetch_cache
                    .remove(&(agent.clone(), uri.value.clone()));
            }
            got
        } else {
            download().await
        };
        let Some(bytes) = got else {
            c.lock().unwrap().executor_update(
                &tid,
                TaskState::TaskFailed,
                &format!("Failed to fetch '{}'", uri.value),
            );
            return;
        };
        let path = sandbox.join(&name);
        std::fs::write(&path, &bytes).unwrap();
        if uri.executable == Some(true) {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(cmd.value.clone().unwrap_or_default())
        .current_dir(&sandbox)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(sandbox.join("stdout")).unwrap())
        .stderr(std::fs::File::create(sandbox.join("stderr")).unwrap())
        .process_group(0)
        .env("MESOS_SANDBOX", &sandbox);
    for v in cmd.environment.iter().flat_map(|e| &e.variables) {
        command.env(&v.name, v.value.clone().unwrap_or_default());
    }
    let mut child = {
        let mut g = c.lock().unwrap();
        let killed_before_start = g.tasks.get(&tid).is_none_or(|t| t.killing);
        if killed_before_start {
            return;
        }
        g.executor_update(&tid, TaskState::TaskStarting, "");
        let child = command.spawn().unwrap();
        let pid = child.id().unwrap() as i32;
        g.tasks.get_mut(&tid).unwrap().pgid = Some(pid);
        g.executor_update(&tid, TaskState::TaskRunning, "");
        child
    };
    let st = child.wait().await.unwrap();
    let mut g = c.lock().unwrap();
    let Some(t) = g.tasks.get_mut(&tid) else {
        return;
    };
    if t.pgid.is_none() {
        // Lost with its agent, or torn down: no exit is reported.
        return;
    }
    t.pgid = None;
    let (agent, res, killing) = (t.agent.clone(), t.res.clone(), t.killing);
    if let Some(a) = g.agents.get_mut(&agent) {
        give_pools(&mut a.free, &res);
    }
    use std::os::unix::process::ExitStatusExt;
    let (state, message) = match (killing, st.code(), st.signal()) {
        (true, _, _) => (
            TaskState::TaskKilled,
            "Command terminated with signal Terminated".to_string(),
        ),
        (_, Some(0), _) => (
            TaskState::TaskFinished,
            "Command exited with status 0".to_string(),
        ),
        (_, Some(n), _) => (
            TaskState::TaskFailed,
            format!("Command exited with status {n}"),
        ),
        (_, None, s) => (
            TaskState::TaskFailed,
            format!("Command terminated with signal {}", s.unwrap_or(0)),
        ),
    };
    g.executor_update(&tid, state, &message);
}

#[derive(Deserialize)]
struct FileQuery {
    path: String,
    offset: Option<String>,
    length: Option<String>,
}

/// The agent's files API paths are virtual (`/frameworks/...`); here they
/// live under the agent's directory of the test master's root.
fn real_path(c: &Cluster, agent: &str, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(c.root.join(agent).join(rel))
}

/// Checks the files API's credentials (agents with
/// `--authenticate_http_readonly`), recording what came.
fn files_denied(c: &mut Cluster, headers: &HeaderMap) -> Option<Response> {
    let got = header(headers, "authorization").map(str::to_string);
    c.record.files_auth.push(got.clone());
    let (p, s) = c.files_credentials.as_ref()?;
    if got.as_deref() == Some(basic(p, s).as_str()) {
        return None;
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"mesos-agent-readonly\"")],
            "401 Unauthorized.",
        )
            .into_response(),
    )
}

/// The real path behind a files API request, once its credentials pass.
#[allow(clippy::result_large_err)] // the error is the answer itself
fn files_path(
    c: &Shared,
    agent: &str,
    headers: &HeaderMap,
    path: &str,
) -> Result<PathBuf, Response> {
    let mut g = c.lock().unwrap();
    if let Some(denied) = files_denied(&mut g, headers) {
        return Err(denied);
    }
    real_path(&g, agent, path).ok_or_else(|| text(StatusCode::BAD_REQUEST, "bad path"))
}

/// A JSON string of raw bytes as Mesos writes it (rapidjson without UTF-8
/// validation): `"` and `\` escaped, control characters as `\n` `\t` `\r`
/// or upper-case `\u00XX`, every other byte (DEL and bytes ≥ 0x80 included)
/// as it is.
pub fn mesos_json_bytes(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 2);
    out.push(b'"');
    for &b in data {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => out.extend_from_slice(format!("\\u{b:04X}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'"');
    out
}

/// CPU seconds (user, system) and resident bytes of every process in a
/// process group, from `/proc/<pid>/stat`; reaped children count through
/// their parent's `cutime`/`cstime`, as the kernel accounts them.
fn group_usage(pgid: i32) -> (f64, f64, u64) {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let (mut user, mut sys, mut rss) = (0.0, 0.0, 0u64);
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the command, which is in parentheses and may hold spaces.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 22 || f[2].parse::<i32>().ok() != Some(pgid) {
            continue;
        }
        let n = |i: usize| f[i].parse::<f64>().unwrap_or(0.0);
        user += (n(11) + n(13)) / tick;
        sys += (n(12) + n(14)) / tick;
        rss += f[21].parse::<u64>().unwrap_or(0) * page;
    }
    (user, sys, rss)
}

/// One running executor's entry, as `/monitor/statistics` gives it.
fn executor_statistics(fw: &str, task: &str, t: &TaskRec) -> serde_json::Value {
    let (user, sys, rss) = group_usage(t.pgid.unwrap_or(0));
    let cpus: f64 = t.res.values().map(|r| r.cpus).sum();
    let mem: f64 = t.res.values().map(|r| r.mem).sum();
    // The command executor's own share, which the agent adds to the task's.
    let mem_limit = ((mem + 32.0) * 1024.0 * 1024.0) as u64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    serde_json::json!({
        "executor_id": task,
        "executor_name": format!("Command Executor (Task: {task}) (Command: sh -c '...')"),
        "framework_id": fw,
        "source": task,
        "statistics": {
            "cpus_soft_limit": ((cpus + 0.1) * 1000.0).round() / 1000.0,
            "cpus_system_time_secs": sys,
            "cpus_user_time_secs": user,
            "mem_limit_bytes": mem_limit,
            "mem_rss_bytes": rss,
            "mem_soft_limit_bytes": mem_limit,
            "timestamp": now,
        }
    })
}

/// The agent's running executors (tasks with a live process group).
fn running_executors(c: &Shared, agent: &str) -> Vec<(String, serde_json::Value, i32)> {
    let g = c.lock().unwrap();
    let fw = g.fw.as_ref().map(|f| f.id.clone()).unwrap_or_default();
    g.tasks
        .iter()
        .filter(|(_, t)| {
            t.agent == agent && t.pgid.is_some() && !proto::calls::is_terminal(t.state)
        })
        .map(|(id, t)| (id.clone(), executor_statistics(&fw, id, t), t.pgid.unwrap()))
        .collect()
}

async fn monitor_statistics(State((c, agent)): State<(Shared, String)>) -> Response {
    let list: Vec<serde_json::Value> = running_executors(&c, &agent)
        .into_iter()
        .map(|(_, v, _)| v)
        .collect();
    axum::Json(list).into_response()
}

async fn containers(State((c, agent)): State<(Shared, String)>) -> Response {
    let list: Vec<serde_json::Value> = running_executors(&c, &agent)
        .into_iter()
        .map(|(task, mut v, pgid)| {
            // A container id per task, stable for its life.
            let cid = format!("container-{task}");
            let o = v.as_object_mut().unwrap();
            o.insert("container_id".into(), cid.clone().into());
            o.insert(
                "status".into(),
                serde_json::json!({"container_id": {"value": cid}, "executor_pid": pgid}),
            );
            v
        })
        .collect();
    axum::Json(list).into_response()
}

/// The agent's v1 operator API, JSON only and GET_CONTAINERS only (what
/// the recording holds).
async fn agent_operator(State((c, agent)): State<(Shared, String)>, body: Bytes) -> Response {
    let call: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("Failed to parse body into JSON: {e}"),
            )
        }
    };
    if call["type"] != "GET_CONTAINERS" {
        return text(
            StatusCode::NOT_IMPLEMENTED,
            "the test master's agents answer GET_CONTAINERS only",
        );
    }
    let containers: Vec<serde_json::Value> = running_executors(&c, &agent)
        .into_iter()
        .map(|(task, v, pgid)| {
            let cid = format!("container-{task}");
            serde_json::json!({
                "framework_id": {"value": v["framework_id"]},
                "executor_id": {"value": task},
                "executor_name": v["executor_name"],
                "container_id": {"value": cid},
                "container_status": {"container_id": {"value": cid}, "executor_pid": pgid},
                "resource_statistics": v["statistics"],
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "type": "GET_CONTAINERS",
        "get_containers": {"containers": containers},
    }))
    .into_response()
}

/// Mesos caps a read at 16 pages.
const READ_CAP: usize = 65536;

async fn files_read(
    State((c, agent)): State<(Shared, String)>,
    headers: HeaderMap,
    Query(q): Query<FileQuery>,
) -> Response {
    let p = match files_path(&c, &agent, &headers, &q.path) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if p.is_dir() {
        return text(StatusCode::BAD_REQUEST, "Cannot read a directory.\n");
    }
    let Ok(data) = std::fs::read(&p) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let offset: i64 = match q.offset.as_deref() {
        None => -1,
        Some(o) => match o.parse() {
            Ok(n) => n,
            Err(_) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("Failed to parse offset: Failed to convert '{o}' to number.\n"),
                )
            }
        },
    };
    let length: usize = match q.length.as_deref() {
        None => READ_CAP,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if n >= 0 => (n as usize).min(READ_CAP),
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("Failed to parse length: Failed to convert '{l}' to number.\n"),
                )
            }
        },
    };
    let (chunk, offset): (&[u8], i64) = if offset < 0 {
        (&[], data.len() as i64)
    } else {
        let start = (offset as usize).min(data.len());
        let end = (start + length).min(data.len());
        (&data[start..end], offset)
    };
    let mut body = b"{\"data\":".to_vec();
    body.extend(mesos_json_bytes(chunk));
    body.extend(format!(",\"offset\":{offset}}}").as_bytes());
    ([("content-type", "application/json")], body).into_response()
}

async fn files_browse(
    State((c, agent)): State<(Shared, String)>,
    headers: HeaderMap,
    Query(q): Query<FileQuery>,
) -> Response {
    let p = match files_path(&c, &agent, &headers, &q.path) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Ok(rd) = std::fs::read_dir(&p) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut out = vec![];
    for e in rd.flatten() {
        let m = e.metadata().unwrap();
        out.push(serde_json::json!({
            "path": format!("{}/{}", q.path.trim_end_matches('/'), e.file_name().to_string_lossy()),
            "mode": if m.is_dir() { "drwxr-xr-x" } else { "-rw-r--r--" },
            "size": m.len(),
            "nlink": 1,
            "mtime": 0.0,
            "uid": "root",
            "gid": "root",
        }));
    }
    axum::Json(out).into_response()
}

async fn files_download(
    State((c, agent)): State<(Shared, String)>,
    headers: HeaderMap,
    Query(q): Query<FileQuery>,
) -> Response {
    let p = match files_path(&c, &agent, &headers, &q.path) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match std::fs::read(&p) {
        Ok(d) => (
            [
                ("content-type", "application/octet-stream".to_string()),
                (
                    "content-disposition",
                    format!(
                        "attachment; filename={}",
                        p.file_name().unwrap_or_default().to_string_lossy()
                    ),
                ),
            ],
            d,
        )
            .into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}
