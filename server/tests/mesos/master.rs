//! A Mesos master for tests, speaking the real wire protocol: SUBSCRIBE
//! answered with protobuf RecordIO over a chunked response and a
//! `Mesos-Stream-Id`, calls checked against that id, 307 redirects from a
//! non-leader (with Mesos' scheme-less `Location`), 503 without a leader,
//! heartbeats, and agents whose free resources are sent as offers.
//!
//! Agents run tasks for real: the command's URIs are fetched over HTTP
//! (from the dispatcher), the command runs under `sh -c` in a sandbox with
//! its environment, and its exit becomes TASK_FINISHED / TASK_FAILED /
//! TASK_KILLED. Each agent serves the files API (`/files/read`,
//! `/files/browse`, `/files/download`) over its sandboxes.
//!
//! Faults on demand: drop the stream, stop heartbeats, fail over to the
//! other master, no leader, lose an agent, rescind offers, duplicate or
//! out-of-order updates. It records every call for assertions. A test
//! tool only: never a backend users run.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
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
use axum::{Json, Router};
use dispatcher_proto_reexport::*;
use serde::Deserialize;
use tokio::sync::mpsc;

/// The proto crate, under the name the server exposes it.
mod dispatcher_proto_reexport {
    pub use proto::mesos::scheduler::{call, event};
    pub use proto::mesos::{self, TaskState};
    pub use proto::recordio;
    pub use proto::{Call, Event, Message};
}

#[derive(Clone, Debug)]
pub struct Res {
    pub cpus: f64,
    pub mem: f64,
    pub ports: Vec<(u64, u64)>,
}

impl Res {
    fn to_proto(&self) -> Vec<mesos::Resource> {
        let scalar = |n: &str, v: f64| mesos::Resource {
            name: n.into(),
            r#type: mesos::value::Type::Scalar as i32,
            scalar: Some(mesos::value::Scalar { value: v }),
            role: Some("*".into()),
            ..Default::default()
        };
        let mut v = vec![scalar("cpus", self.cpus), scalar("mem", self.mem)];
        if !self.ports.is_empty() {
            v.push(mesos::Resource {
                name: "ports".into(),
                r#type: mesos::value::Type::Ranges as i32,
                ranges: Some(mesos::value::Ranges {
                    range: self
                        .ports
                        .iter()
                        .map(|(b, e)| mesos::value::Range { begin: *b, end: *e })
                        .collect(),
                }),
                role: Some("*".into()),
                ..Default::default()
            });
        }
        v
    }

    fn of(resources: &[mesos::Resource]) -> Res {
        let mut r = Res {
            cpus: 0.0,
            mem: 0.0,
            ports: vec![],
        };
        for x in resources {
            match x.name.as_str() {
                "cpus" => r.cpus += x.scalar.as_ref().map_or(0.0, |s| s.value),
                "mem" => r.mem += x.scalar.as_ref().map_or(0.0, |s| s.value),
                "ports" => {
                    for rg in x.ranges.iter().flat_map(|x| &x.range) {
                        r.ports.push((rg.begin, rg.end));
                    }
                }
                _ => {}
            }
        }
        r
    }

    fn contains(&self, want: &Res) -> bool {
        want.cpus <= self.cpus + 1e-9
            && want.mem <= self.mem + 1e-9
            && want
                .ports
                .iter()
                .all(|(b, e)| (*b..=*e).all(|p| self.ports.iter().any(|(x, y)| *x <= p && p <= *y)))
    }

    fn take(&mut self, r: &Res) {
        self.cpus -= r.cpus;
        self.mem -= r.mem;
        for (b, e) in &r.ports {
            for p in *b..=*e {
                self.ports = remove_port(&self.ports, p);
            }
        }
    }

    fn give(&mut self, r: &Res) {
        self.cpus += r.cpus;
        self.mem += r.mem;
        self.ports.extend(r.ports.iter().copied());
        self.ports.sort();
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

struct Agent {
    id: String,
    hostname: String,
    files_port: u16,
    free: Res,
    offered: bool,
    declined_until: Option<Instant>,
    alive: bool,
}

struct TaskRec {
    agent: String,
    state: TaskState,
    res: Res,
    pgid: Option<i32>,
    killing: bool,
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
    /// ACKNOWLEDGEs for an update that had no uuid or an unknown one.
    pub bad_acks: usize,
    /// LAUNCHes per task id.
    pub launches: BTreeMap<String, usize>,
    /// Framework ids SUBSCRIBE named (None for a first subscription).
    pub subscribes: Vec<Option<String>>,
    /// Every OFFERS event sent (when, how many offers) and every ACCEPT received.
    pub offer_events: Vec<(Instant, usize)>,
    /// ACCEPTs naming an offer that was rescinded or never made.
    pub invalid_accepts: usize,
    pub accepts_at: Vec<Instant>,
}

struct Cluster {
    leader: Option<usize>,
    endpoints: Vec<SocketAddr>,
    framework_id: Option<String>,
    removed: BTreeSet<String>,
    next_id: u64,
    stream: Option<Stream>,
    heartbeat_secs: f64,
    heartbeats: bool,
    agents: BTreeMap<String, Agent>,
    offers: BTreeMap<String, (String, Res)>,
    tasks: BTreeMap<String, TaskRec>,
    suppressed: bool,
    /// SUBSCRIBE answers 403 (authorization refused).
    forbid: bool,
    unacked: BTreeMap<Vec<u8>, mesos::TaskStatus>,
    record: Record,
    root: PathBuf,
    /// The dispatcher's binary URLs are fetched with this client.
    http: reqwest::Client,
}

#[derive(Clone)]
pub struct TestMaster {
    c: Arc<Mutex<Cluster>>,
    pub root: Arc<tempfile::TempDir>,
}

type Shared = Arc<Mutex<Cluster>>;

fn uuid(n: u64) -> Vec<u8> {
    let mut v = n.to_be_bytes().to_vec();
    v.extend_from_slice(&(n ^ 0x5a5a_5a5a).to_be_bytes());
    v
}

impl TestMaster {
    /// Two master endpoints (the first leads) and no agents yet.
    pub async fn start(heartbeat_secs: f64) -> TestMaster {
        let root = Arc::new(tempfile::tempdir().unwrap());
        let c = Arc::new(Mutex::new(Cluster {
            leader: Some(0),
            endpoints: vec![],
            framework_id: None,
            removed: BTreeSet::new(),
            next_id: 1,
            stream: None,
            heartbeat_secs,
            heartbeats: true,
            agents: BTreeMap::new(),
            offers: BTreeMap::new(),
            tasks: BTreeMap::new(),
            suppressed: false,
            forbid: false,
            unacked: BTreeMap::new(),
            record: Record::default(),
            root: root.path().to_path_buf(),
            http: reqwest::Client::new(),
        }));
        for i in 0..2 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            c.lock()
                .unwrap()
                .endpoints
                .push(listener.local_addr().unwrap());
            let app = Router::new()
                .route("/api/v1/scheduler", post(scheduler))
                .route("/master/api/v1/scheduler", post(scheduler))
                .with_state((c.clone(), i));
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
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

    /// An agent with these resources and its own files API; returns its id.
    pub async fn add_agent(&self, cpus: f64, mem: f64, ports: (u64, u64)) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let id = {
            let mut c = self.c.lock().unwrap();
            let n = c.agents.len();
            let id = format!("agent-S{n}");
            c.agents.insert(
                id.clone(),
                Agent {
                    id: id.clone(),
                    hostname: format!("host{n}"),
                    files_port: port,
                    free: Res {
                        cpus,
                        mem,
                        ports: vec![ports],
                    },
                    offered: false,
                    declined_until: None,
                    alive: true,
                },
            );
            id
        };
        let app = Router::new()
            .route("/files/read", get(files_read))
            .route("/files/browse", get(files_browse))
            .route("/files/download", get(files_download))
            .with_state((self.c.clone(), id.clone()));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        id
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
        self.c.lock().unwrap().framework_id.clone()
    }

    pub fn is_subscribed(&self) -> bool {
        self.c.lock().unwrap().stream.is_some()
    }

    pub fn task_state(&self, task: &str) -> Option<TaskState> {
        self.c.lock().unwrap().tasks.get(task).map(|t| t.state)
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

    /// Closes the subscription stream (as a network fault would).
    pub fn drop_stream(&self) {
        self.c.lock().unwrap().stream = None;
    }

    pub fn set_forbid(&self, on: bool) {
        self.c.lock().unwrap().forbid = on;
    }

    pub fn set_heartbeats(&self, on: bool) {
        self.c.lock().unwrap().heartbeats = on;
    }

    /// The other endpoint becomes the leader; the old one redirects to it.
    /// Framework, agents and tasks carry over (as a new leader recovers them).
    pub fn fail_over(&self) {
        let mut c = self.c.lock().unwrap();
        c.leader = Some(1 - c.leader.unwrap_or(0));
        c.stream = None;
        c.offers.clear();
        for a in c.agents.values_mut() {
            a.offered = false;
        }
    }

    pub fn set_leader(&self, leader: Option<usize>) {
        let mut c = self.c.lock().unwrap();
        c.leader = leader;
        c.stream = None;
    }

    /// The agent stops answering: its offers are rescinded, its tasks
    /// become TASK_UNREACHABLE (their processes are stopped here).
    pub fn lose_agent(&self, id: &str) {
        let mut c = self.c.lock().unwrap();
        c.agents.get_mut(id).unwrap().alive = false;
        let offers: Vec<String> = c
            .offers
            .iter()
            .filter(|(_, (a, _))| a == id)
            .map(|(o, _)| o.clone())
            .collect();
        for o in offers {
            c.rescind_locked(&o);
        }
        let tasks: Vec<String> = c
            .tasks
            .iter()
            .filter(|(_, t)| t.agent == id && !proto::calls::is_terminal(t.state))
            .map(|(k, _)| k.clone())
            .collect();
        for t in tasks {
            if let Some(pg) = c.tasks[&t].pgid {
                unsafe { libc::kill(-pg, libc::SIGKILL) };
            }
            let rec = c.tasks.get_mut(&t).unwrap();
            rec.pgid = None;
            c.update(
                &t,
                TaskState::TaskUnreachable,
                "agent unreachable",
                Some(mesos::task_status::Reason::AgentDisconnected),
                true,
            );
        }
    }

    /// The master forgets the framework (as when its failover timeout
    /// passed): tasks killed, stream closed; resubscribing with the old id
    /// gets an ERROR.
    pub fn remove_framework(&self) {
        let mut c = self.c.lock().unwrap();
        if let Some(fw) = c.framework_id.take() {
            c.removed.insert(fw);
        }
        for t in c.tasks.values_mut() {
            if let Some(pg) = t.pgid.take() {
                unsafe { libc::kill(-pg, libc::SIGKILL) };
            }
            t.state = TaskState::TaskKilled;
        }
        c.unacked.clear();
        c.stream = None;
    }

    pub fn rescind_all(&self) -> usize {
        let mut c = self.c.lock().unwrap();
        let ids: Vec<String> = c.offers.keys().cloned().collect();
        for o in &ids {
            c.rescind_locked(o);
        }
        ids.len()
    }

    /// Sends an update for a task as the agent would (with a uuid) or as
    /// a reconciliation answer (without).
    pub fn inject_update(&self, task: &str, state: TaskState, with_uuid: bool) {
        self.c
            .lock()
            .unwrap()
            .update(task, state, "injected", None, with_uuid);
    }

    /// Sends the last update of a task once more (a duplicate).
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
            source: Some(mesos::task_status::Source::Executor as i32),
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

    fn rescind_locked(&mut self, offer: &str) {
        if let Some((agent, res)) = self.offers.remove(offer) {
            if let Some(a) = self.agents.get_mut(&agent) {
                a.free.give(&res);
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

    fn make_offers(&mut self) {
        if self.stream.is_none() || self.suppressed {
            return;
        }
        let fw = self.framework_id.clone().unwrap();
        let now = Instant::now();
        let mut list = vec![];
        let ids: Vec<String> = self.agents.keys().cloned().collect();
        for id in ids {
            let a = self.agents.get_mut(&id).unwrap();
            if !a.alive || a.offered || a.free.cpus < 0.01 {
                continue;
            }
            if a.declined_until.is_some_and(|t| now < t) {
                continue;
            }
            a.offered = true;
            let res = a.free.clone();
            a.free = Res {
                cpus: 0.0,
                mem: 0.0,
                ports: vec![],
            };
            let oid = format!("offer-O{}", self.next_id);
            self.next_id += 1;
            list.push(mesos::Offer {
                id: mesos::OfferId { value: oid.clone() },
                framework_id: mesos::FrameworkId { value: fw.clone() },
                agent_id: mesos::AgentId { value: id.clone() },
                hostname: a.hostname.clone(),
                resources: res.to_proto(),
                url: Some(mesos::Url {
                    scheme: "http".into(),
                    address: mesos::Address {
                        hostname: Some(a.hostname.clone()),
                        ip: Some("127.0.0.1".into()),
                        port: a.files_port as i32,
                    },
                    path: Some("/slave(1)".into()),
                    ..Default::default()
                }),
                ..Default::default()
            });
            self.offers.insert(oid, (id.clone(), res));
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

    /// Records and sends a status update for a task.
    fn update(
        &mut self,
        task: &str,
        state: TaskState,
        message: &str,
        reason: Option<mesos::task_status::Reason>,
        with_uuid: bool,
    ) {
        let agent = self.tasks.get(task).map(|t| t.agent.clone());
        if let Some(t) = self.tasks.get_mut(task) {
            t.state = state;
        }
        let id = self.next_id;
        self.next_id += 1;
        let status = mesos::TaskStatus {
            task_id: mesos::TaskId { value: task.into() },
            state: state as i32,
            message: (!message.is_empty()).then(|| message.to_string()),
            agent_id: agent.map(|a| mesos::AgentId { value: a }),
            timestamp: Some(0.0),
            source: Some(mesos::task_status::Source::Executor as i32),
            reason: reason.map(|r| r as i32),
            uuid: with_uuid.then(|| uuid(id)),
            ..Default::default()
        };
        if let Some(u) = &status.uuid {
            self.unacked.insert(u.clone(), status.clone());
        }
        self.send(update_event(status));
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

fn status(code: StatusCode, msg: &str) -> Response {
    (code, msg.to_string()).into_response()
}

async fn scheduler(
    State((c, me)): State<(Shared, usize)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = match Call::decode(body) {
        Ok(c) => c,
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                &format!("Failed to parse body: {e}"),
            )
        }
    };
    let kind = call
        .r#type
        .and_then(|t| call::Type::try_from(t).ok())
        .unwrap_or(call::Type::Unknown);
    let mut g = c.lock().unwrap();
    match g.leader {
        None => return status(StatusCode::SERVICE_UNAVAILABLE, "No leader elected"),
        Some(l) if l != me => {
            let loc = format!("//{}/master/api/v1/scheduler", g.endpoints[l]);
            return (StatusCode::TEMPORARY_REDIRECT, [("location", loc)]).into_response();
        }
        _ => {}
    }
    g.record
        .calls
        .push((kind.as_str_name().to_string(), call.clone()));
    if kind == call::Type::Subscribe {
        if g.forbid {
            return status(
                StatusCode::FORBIDDEN,
                "Not authorized to subscribe with role '*'",
            );
        }
        return subscribe(&mut g, me, call);
    }
    let sid = headers
        .get("mesos-stream-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match &g.stream {
        Some(s) if s.id == sid => {}
        _ => {
            return status(
                StatusCode::BAD_REQUEST,
                &format!("The stream ID '{sid}' included in this request didn't match the stream ID currently associated with framework ID"),
            )
        }
    }
    if call.framework_id.as_ref().map(|f| &f.value) != g.framework_id.as_ref() {
        return status(StatusCode::BAD_REQUEST, "framework id mismatch");
    }
    match kind {
        call::Type::Accept => accept(&mut g, call.accept.unwrap(), &c),
        call::Type::Decline => {
            let d = call.decline.unwrap();
            let refuse = d.filters.and_then(|f| f.refuse_seconds).unwrap_or(5.0);
            for o in d.offer_ids {
                if let Some((agent, res)) = g.offers.remove(&o.value) {
                    let a = g.agents.get_mut(&agent).unwrap();
                    a.free.give(&res);
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
            if live {
                let pg = g.tasks[&t].pgid;
                g.tasks.get_mut(&t).unwrap().killing = true;
                match pg {
                    Some(pg) => {
                        unsafe { libc::kill(-pg, libc::SIGTERM) };
                        g.update(&t, TaskState::TaskKilling, "", None, true);
                    }
                    None => {
                        // Not started yet, or its agent is gone.
                        let res = g.tasks[&t].res.clone();
                        let agent = g.tasks[&t].agent.clone();
                        if let Some(a) = g.agents.get_mut(&agent) {
                            a.free.give(&res);
                        }
                        g.update(&t, TaskState::TaskKilled, "", None, true);
                    }
                }
            }
        }
        call::Type::Acknowledge => {
            let a = call.acknowledge.unwrap();
            if g.unacked.remove(&a.uuid).is_none() {
                g.record.bad_acks += 1;
            }
        }
        call::Type::Reconcile => {
            let r = call.reconcile.unwrap();
            let list: Vec<String> = if r.tasks.is_empty() {
                g.tasks
                    .iter()
                    .filter(|(_, t)| !proto::calls::is_terminal(t.state))
                    .map(|(k, _)| k.clone())
                    .collect()
            } else {
                r.tasks.into_iter().map(|t| t.task_id.value).collect()
            };
            for t in list {
                let st = match g.tasks.get(&t) {
                    Some(x) if !proto::calls::is_terminal(x.state) => x.state,
                    _ => TaskState::TaskGone,
                };
                let agent = g.tasks.get(&t).map(|x| x.agent.clone());
                let status = mesos::TaskStatus {
                    task_id: mesos::TaskId { value: t.clone() },
                    state: st as i32,
                    agent_id: agent.map(|a| mesos::AgentId { value: a }),
                    source: Some(mesos::task_status::Source::Master as i32),
                    reason: Some(mesos::task_status::Reason::Reconciliation as i32),
                    ..Default::default()
                };
                g.send(update_event(status));
            }
        }
        call::Type::Suppress => g.suppressed = true,
        call::Type::Revive => {
            g.suppressed = false;
            for a in g.agents.values_mut() {
                a.declined_until = None;
            }
        }
        call::Type::Teardown => {
            let fw = g.framework_id.take().unwrap();
            g.removed.insert(fw);
            for t in g.tasks.values_mut() {
                if let Some(pg) = t.pgid.take() {
                    unsafe { libc::kill(-pg, libc::SIGKILL) };
                }
                t.state = TaskState::TaskKilled;
            }
            g.stream = None;
        }
        _ => return status(StatusCode::BAD_REQUEST, "unsupported call"),
    }
    StatusCode::ACCEPTED.into_response()
}

fn subscribe(g: &mut Cluster, me: usize, call: Call) -> Response {
    let info = call.subscribe.unwrap().framework_info;
    let asked = info.id.map(|i| i.value);
    g.record.subscribes.push(asked.clone());
    let (tx, rx) = mpsc::unbounded_channel();
    let sid = format!("stream-{}", g.next_id);
    g.next_id += 1;
    if let Some(a) = &asked {
        if g.removed.contains(a) {
            let ev = Event {
                r#type: Some(event::Type::Error as i32),
                error: Some(event::Error {
                    message: "Framework has been removed".into(),
                }),
                ..Default::default()
            };
            let _ = tx.send(Ok(Bytes::from(recordio::encode(&ev.encode_to_vec()))));
            drop(tx);
            return stream_response(&sid, rx);
        }
    }
    let id = match (&asked, &g.framework_id) {
        (Some(a), _) => a.clone(),
        (None, _) => {
            let id = format!("fw-{}", g.next_id);
            g.next_id += 1;
            id
        }
    };
    g.framework_id = Some(id.clone());
    // A new subscription replaces the old stream and its offers.
    g.stream = Some(Stream {
        id: sid.clone(),
        tx,
        endpoint: me,
    });
    let offers: Vec<String> = g.offers.keys().cloned().collect();
    for o in offers {
        let (agent, res) = g.offers.remove(&o).unwrap();
        let a = g.agents.get_mut(&agent).unwrap();
        a.free.give(&res);
        a.offered = false;
    }
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
    // Agents retry updates that were never acknowledged.
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
    let fw = g.framework_id.clone().unwrap();
    for oid in &a.offer_ids {
        let Some((agent, mut res)) = g.offers.remove(&oid.value) else {
            // An offer rescinded or unknown: its tasks are dropped.
            g.record.invalid_accepts += 1;
            for op in &a.operations {
                for t in op.launch.iter().flat_map(|l| &l.task_infos) {
                    *g.record
                        .launches
                        .entry(t.task_id.value.clone())
                        .or_default() += 1;
                    g.tasks.insert(
                        t.task_id.value.clone(),
                        TaskRec {
                            agent: t.agent_id.value.clone(),
                            state: TaskState::TaskStaging,
                            res: Res::of(&t.resources),
                            pgid: None,
                            killing: false,
                        },
                    );
                    g.update(
                        &t.task_id.value,
                        TaskState::TaskDropped,
                        "Task launched with invalid offers",
                        Some(mesos::task_status::Reason::InvalidOffers),
                        true,
                    );
                }
            }
            continue;
        };
        for op in &a.operations {
            for t in op.launch.iter().flat_map(|l| &l.task_infos) {
                let tid = t.task_id.value.clone();
                *g.record.launches.entry(tid.clone()).or_default() += 1;
                let need = Res::of(&t.resources);
                g.tasks.insert(
                    tid.clone(),
                    TaskRec {
                        agent: agent.clone(),
                        state: TaskState::TaskStaging,
                        res: need.clone(),
                        pgid: None,
                        killing: false,
                    },
                );
                if !res.contains(&need) || t.agent_id.value != agent {
                    g.update(
                        &tid,
                        TaskState::TaskError,
                        "Task uses more resources than offered",
                        Some(mesos::task_status::Reason::TaskInvalid),
                        true,
                    );
                    continue;
                }
                res.take(&need);
                let sandbox = g.sandbox(&agent, &fw, &tid);
                tokio::spawn(run_task(
                    shared.clone(),
                    tid,
                    sandbox,
                    t.command.clone().unwrap_or_default(),
                    g.http.clone(),
                ));
            }
        }
        let a = g.agents.get_mut(&agent).unwrap();
        a.free.give(&res);
        a.offered = false;
    }
}

/// The agent's side of a task: fetch, run, report.
async fn run_task(
    c: Shared,
    tid: String,
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
        let got = match http.get(&uri.value).send().await {
            Ok(r) if r.status().is_success() => r.bytes().await.ok(),
            _ => None,
        };
        let Some(bytes) = got else {
            c.lock().unwrap().update(
                &tid,
                TaskState::TaskFailed,
                &format!("Failed to fetch '{}'", uri.value),
                Some(mesos::task_status::Reason::ContainerLaunchFailed),
                true,
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
        let child = command.spawn().unwrap();
        let pid = child.id().unwrap() as i32;
        g.tasks.get_mut(&tid).unwrap().pgid = Some(pid);
        g.update(&tid, TaskState::TaskRunning, "", None, true);
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
        a.free.give(&res);
    }
    use std::os::unix::process::ExitStatusExt;
    match (killing, st.code(), st.signal()) {
        (true, _, _) => g.update(
            &tid,
            TaskState::TaskKilled,
            "Command terminated with signal Terminated",
            None,
            true,
        ),
        (_, Some(0), _) => g.update(
            &tid,
            TaskState::TaskFinished,
            "Command exited with status 0",
            None,
            true,
        ),
        (_, Some(n), _) => g.update(
            &tid,
            TaskState::TaskFailed,
            &format!("Command exited with status {n}"),
            None,
            true,
        ),
        (_, None, s) => g.update(
            &tid,
            TaskState::TaskFailed,
            &format!("Command terminated with signal {}", s.unwrap_or(0)),
            None,
            true,
        ),
    }
}

#[derive(Deserialize)]
struct FileQuery {
    path: String,
    offset: Option<i64>,
    length: Option<u64>,
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

async fn files_read(
    State((c, agent)): State<(Shared, String)>,
    Query(q): Query<FileQuery>,
) -> Response {
    let Some(p) = real_path(&c.lock().unwrap(), &agent, &q.path) else {
        return status(StatusCode::BAD_REQUEST, "bad path");
    };
    let Ok(data) = std::fs::read(&p) else {
        return status(StatusCode::NOT_FOUND, "No such file or directory");
    };
    let offset = q.offset.unwrap_or(0);
    if offset < 0 {
        return Json(serde_json::json!({ "data": "", "offset": data.len() })).into_response();
    }
    let start = (offset as usize).min(data.len());
    let end = (start + q.length.unwrap_or(u64::MAX).min(1 << 20) as usize).min(data.len());
    Json(serde_json::json!({
        "data": String::from_utf8_lossy(&data[start..end]),
        "offset": offset,
    }))
    .into_response()
}

async fn files_browse(
    State((c, agent)): State<(Shared, String)>,
    Query(q): Query<FileQuery>,
) -> Response {
    let Some(p) = real_path(&c.lock().unwrap(), &agent, &q.path) else {
        return status(StatusCode::BAD_REQUEST, "bad path");
    };
    let Ok(rd) = std::fs::read_dir(&p) else {
        return status(StatusCode::NOT_FOUND, "No such file or directory");
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
    Json(out).into_response()
}

async fn files_download(
    State((c, agent)): State<(Shared, String)>,
    Query(q): Query<FileQuery>,
) -> Response {
    let Some(p) = real_path(&c.lock().unwrap(), &agent, &q.path) else {
        return status(StatusCode::BAD_REQUEST, "bad path");
    };
    match std::fs::read(&p) {
        Ok(d) => d.into_response(),
        Err(_) => status(StatusCode::NOT_FOUND, "No such file or directory"),
    }
}
