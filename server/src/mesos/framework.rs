//! The framework's pure core: what the dispatcher knows of its Mesos
//! subscription (framework id, offers held, tasks launched, reconciliation
//! in progress) and the calls each event or tick makes it send.
//!
//! It never touches the network or the clock: the runner feeds it events
//! from the subscription stream, the placements the scheduling core made,
//! kills and ticks carrying the time, and sends the calls it returns in
//! order. Tests chain inputs and read the calls.

use std::collections::{BTreeMap, BTreeSet};

use app::model::PeerState;
use app::placement::Offer;
use proto::calls;
use proto::mesos::scheduler::event;
use proto::mesos::{self, offer::operation, TaskState};
use proto::{Call, Event};

use super::task::{parse_task_id, peer_state, task_id};
use crate::sched::PeerUpdate;

/// Time and rate settings; tests shorten them.
#[derive(Clone, Debug)]
pub struct Tunables {
    /// How long unused offers are held while a gang waits for more.
    pub hold_ms: u64,
    /// Filter on offers declined while jobs wait (they come back soon).
    pub busy_refuse_secs: f64,
    /// Filter on offers declined when nothing waits.
    pub idle_refuse_secs: f64,
    /// REVIVE at most this often.
    pub revive_min_ms: u64,
    /// First retry of an unanswered explicit reconciliation; doubles up to the cap.
    pub reconcile_base_ms: u64,
    pub reconcile_cap_ms: u64,
    /// Implicit reconciliation period.
    pub implicit_every_ms: u64,
    /// A launched task with no update for this long is reconciled.
    pub staging_timeout_ms: u64,
}

impl Default for Tunables {
    fn default() -> Tunables {
        Tunables {
            hold_ms: 10_000,
            busy_refuse_secs: 2.0,
            idle_refuse_secs: 120.0,
            revive_min_ms: 1_000,
            reconcile_base_ms: 2_000,
            reconcile_cap_ms: 60_000,
            implicit_every_ms: 600_000,
            staging_timeout_ms: 60_000,
        }
    }
}

#[derive(Clone, Debug)]
struct Held {
    offer: mesos::Offer,
    view: Offer,
    since_ms: u64,
}

#[derive(Clone, Debug)]
struct Task {
    job: u64,
    peer: u32,
    agent_id: Option<String>,
    /// None until the first update (a task adopted after a restart).
    state: Option<TaskState>,
    last_ms: u64,
    killing: bool,
}

#[derive(Debug)]
struct Recon {
    pending: BTreeSet<String>,
    next_ms: u64,
    backoff_ms: u64,
}

/// What one input produced.
#[derive(Debug, Default)]
pub struct Out {
    pub calls: Vec<Call>,
    /// Peer state changes for the scheduling core.
    pub updates: Vec<(u64, u32, PeerUpdate)>,
    /// New offers arrived: waiting jobs may now fit.
    pub offers_changed: bool,
    /// ACKNOWLEDGEs for the updates in `updates`: sent only once those are
    /// recorded, so that a crash in between makes the agent send them again.
    pub acks: Vec<Call>,
    /// The master gave a (new) framework id: persist it.
    pub new_id: Option<String>,
    pub heartbeat_secs: Option<f64>,
    /// The master removed the framework (ERROR "Framework has been
    /// removed"): its id is dead and its tasks are gone.
    pub removed: Option<String>,
    /// The master refused the subscription (any other ERROR: an ACL, the
    /// root user, a role, a failover by another scheduler). The id and the
    /// tasks stay ours; the subscription is retried.
    pub refused: Option<String>,
}

/// The one ERROR message that means the framework id is dead
/// (`master.cpp`, `Master::subscribe`); every other ERROR is a refusal.
pub const REMOVED: &str = "Framework has been removed";

/// A task to launch on a held offer (by its index in `placeable()`).
pub struct Launch {
    pub offer: usize,
    pub task: mesos::TaskInfo,
}

#[derive(Debug)]
pub struct Framework {
    id: Option<String>,
    /// The role offers are allocated to: resources reserved for it and
    /// unreserved ones are ours to use.
    role: String,
    subscribed: bool,
    held: Vec<Held>,
    tasks: BTreeMap<String, Task>,
    suppressed: bool,
    revive_due: bool,
    last_revive_ms: Option<u64>,
    recon: Option<Recon>,
    next_implicit_ms: u64,
    last_heartbeat_ms: Option<u64>,
    t: Tunables,
}

/// Progress order of the non-terminal states: an update that goes back
/// (a late STARTING after RUNNING) is out of order and ignored.
fn rank(s: TaskState) -> u8 {
    match s {
        TaskState::TaskStaging => 0,
        TaskState::TaskStarting => 1,
        TaskState::TaskRunning => 2,
        TaskState::TaskKilling => 3,
        _ => 4,
    }
}

fn is_final(s: TaskState) -> bool {
    // For the job, a task that is lost, unreachable or unknown has ended:
    // the gang is broken and the job policy applies.
    peer_state(s).is_terminal()
}

/// `Command exited with status 3` → 3.
fn exit_code(message: &str) -> Option<i32> {
    let rest = message.split("exited with status ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit() && c != '-')
        .next()?
        .parse()
        .ok()
}

fn state_name(s: TaskState) -> &'static str {
    s.as_str_name()
}

impl Framework {
    pub fn new(id: Option<String>, t: Tunables) -> Framework {
        Framework {
            id,
            role: "*".into(),
            subscribed: false,
            held: vec![],
            tasks: BTreeMap::new(),
            suppressed: false,
            revive_due: false,
            last_revive_ms: None,
            recon: None,
            next_implicit_ms: 0,
            last_heartbeat_ms: None,
            t,
        }
    }

    /// The framework subscribes with this role.
    pub fn for_role(mut self, role: &str) -> Framework {
        self.role = role.to_string();
        self
    }

    pub fn role(&self) -> &str {
        &self.role
    }

    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub fn is_subscribed(&self) -> bool {
        self.subscribed
    }

    pub fn is_suppressed(&self) -> bool {
        self.suppressed
    }

    pub fn last_heartbeat_ms(&self) -> Option<u64> {
        self.last_heartbeat_ms
    }

    pub fn reconciling(&self) -> usize {
        self.recon.as_ref().map_or(0, |r| r.pending.len())
    }

    /// Tasks the framework tracks (launched, not known to have ended).
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// A task launched before a restart. The runner adopts before the
    /// first SUBSCRIBED is read, which reconciles every task; one adopted
    /// later is caught by the silent-task reconciliation of `tick`.
    pub fn adopt(&mut self, tid: &str, agent_id: Option<String>, now_ms: u64) {
        let Some((job, peer, _)) = parse_task_id(tid) else {
            return;
        };
        self.tasks.insert(
            tid.to_string(),
            Task {
                job,
                peer,
                agent_id,
                state: None,
                last_ms: now_ms,
                killing: false,
            },
        );
    }

    /// Held offers as placement sees them, in a stable order (launches
    /// name them by index).
    pub fn placeable(&self) -> Vec<Offer> {
        self.held.iter().map(|h| h.view.clone()).collect()
    }

    pub fn agent_of(&self, offer: usize) -> Option<&mesos::Offer> {
        self.held.get(offer).map(|h| &h.offer)
    }

    fn fw(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }

    /// The stream is gone: offers die with it; tasks stay ours.
    pub fn disconnected(&mut self) {
        self.subscribed = false;
        self.held.clear();
        self.recon = None;
    }

    pub fn event(&mut self, now_ms: u64, ev: Event, waiting: bool) -> Out {
        let mut out = Out::default();
        let kind = ev.r#type.and_then(|t| event::Type::try_from(t).ok());
        match kind {
            Some(event::Type::Subscribed) => {
                let Some(s) = ev.subscribed else {
                    return out;
                };
                out.heartbeat_secs = s.heartbeat_interval().map(|d| d.as_secs_f64());
                let id = s.framework_id.value;
                if self.id.as_deref() != Some(id.as_str()) {
                    out.new_id = Some(id.clone());
                }
                self.id = Some(id);
                self.subscribed = true;
                self.held.clear();
                // A subscription starts unsuppressed. Filters from earlier
                // declines may still hold at the master, and a REVIVE sent
                // on the old stream may never have arrived: with anything
                // waiting, revive (rate-limited by `settle`).
                self.suppressed = false;
                self.revive_due = true;
                self.last_heartbeat_ms = Some(now_ms);
                // Kills asked for while disconnected are sent now.
                for (tid, t) in &self.tasks {
                    if t.killing {
                        out.calls
                            .push(calls::kill(self.fw(), tid, t.agent_id.as_deref()));
                    }
                }
                self.recon = None;
                let all: BTreeSet<String> = self.tasks.keys().cloned().collect();
                self.start_reconcile(now_ms, all, &mut out);
                self.next_implicit_ms = now_ms + self.t.implicit_every_ms;
                if !waiting {
                    out.calls.push(calls::suppress(self.fw()));
                    self.suppressed = true;
                }
            }
            Some(event::Type::Offers) => {
                for o in ev.offers.map(|o| o.offers).unwrap_or_default() {
                    let view = super::task::offer_from(&o, &self.role);
                    self.held.push(Held {
                        offer: o,
                        view,
                        since_ms: now_ms,
                    });
                }
                out.offers_changed = true;
            }
            Some(event::Type::Rescind) => {
                if let Some(r) = ev.rescind {
                    self.held.retain(|h| h.offer.id.value != r.offer_id.value);
                }
            }
            Some(event::Type::Update) => {
                if let Some(u) = ev.update {
                    self.update(now_ms, u.status, &mut out);
                }
            }
            Some(event::Type::Heartbeat) => self.last_heartbeat_ms = Some(now_ms),
            Some(event::Type::Error) => {
                let message = ev.error.map(|e| e.message).unwrap_or_default();
                if message == REMOVED {
                    out.removed = Some(message);
                    self.forget_everything();
                } else {
                    // The master ends the stream after it; offers die with it.
                    self.disconnected();
                    out.refused = Some(message);
                }
            }
            // FAILURE (an agent or executor is gone) is followed by task
            // updates for a partition-aware framework; MESSAGE and inverse
            // offers are not used.
            _ => {}
        }
        out
    }

    /// The framework no longer exists at the master.
    fn forget_everything(&mut self) {
        self.id = None;
        self.subscribed = false;
        self.held.clear();
        self.tasks.clear();
        self.recon = None;
    }

    fn update(&mut self, now_ms: u64, status: mesos::TaskStatus, out: &mut Out) {
        if let Some(ack) = calls::acknowledge(self.fw(), &status) {
            out.acks.push(ack);
        }
        let tid = status.task_id.value.clone();
        let state = TaskState::try_from(status.state).unwrap_or(TaskState::TaskUnknown);
        if let Some(r) = &mut self.recon {
            r.pending.remove(&tid);
            if r.pending.is_empty() {
                self.recon = None;
            }
        }
        let Some(task) = self.tasks.get_mut(&tid) else {
            // Nobody owns it: a task from a job that ended, or from another
            // life of this framework. A live one is killed.
            if !is_final(state) {
                let agent = status.agent_id.as_ref().map(|a| a.value.as_str());
                out.calls.push(calls::kill(self.fw(), &tid, agent));
            }
            return;
        };
        task.last_ms = now_ms;
        if let Some(a) = &status.agent_id {
            task.agent_id = Some(a.value.clone());
        }
        if let Some(prev) = task.state {
            if !is_final(state) && rank(state) <= rank(prev) {
                return;
            }
        }
        task.state = Some(state);
        let message = status.message.clone().unwrap_or_default();
        let reason = status
            .reason
            .and_then(|r| mesos::task_status::Reason::try_from(r).ok())
            .map(|r| r.as_str_name().to_string());
        let peer = peer_state(state);
        let (exit, signal) = match state {
            TaskState::TaskFinished => (Some(0), None),
            TaskState::TaskFailed => (exit_code(&message), None),
            _ => (None, None),
        };
        let text = if peer.is_terminal() && peer != PeerState::Finished {
            let mut t = state_name(state).to_string();
            if !message.is_empty() {
                t = format!("{t}: {message}");
            }
            if let Some(r) = reason {
                t = format!("{t} ({r})");
            }
            t
        } else {
            String::new()
        };
        let (job, index) = (task.job, task.peer);
        if is_final(state) {
            self.tasks.remove(&tid);
        }
        out.updates.push((
            job,
            index,
            PeerUpdate {
                state: peer,
                exit_code: exit,
                signal,
                reason: text,
            },
        ));
    }

    fn start_reconcile(&mut self, now_ms: u64, tasks: BTreeSet<String>, out: &mut Out) {
        if tasks.is_empty() || !self.subscribed {
            return;
        }
        out.calls.push(self.reconcile_call(&tasks));
        self.recon = Some(Recon {
            pending: tasks,
            next_ms: now_ms + self.t.reconcile_base_ms,
            backoff_ms: self.t.reconcile_base_ms,
        });
    }

    fn reconcile_call(&self, tasks: &BTreeSet<String>) -> Call {
        let list: Vec<(&str, Option<&str>)> = tasks
            .iter()
            .map(|t| {
                let agent = self.tasks.get(t).and_then(|x| x.agent_id.as_deref());
                (t.as_str(), agent)
            })
            .collect();
        calls::reconcile(self.fw(), &list)
    }

    /// ACCEPTs for these launches, one per offer; the offers are used up
    /// (what a task does not take goes back to the master).
    pub fn accept(&mut self, now_ms: u64, launches: Vec<Launch>) -> Vec<Call> {
        let mut per_offer: BTreeMap<usize, Vec<mesos::TaskInfo>> = BTreeMap::new();
        for l in launches {
            per_offer.entry(l.offer).or_default().push(l.task);
        }
        let used: BTreeSet<usize> = per_offer.keys().copied().collect();
        let mut out = Vec::new();
        for (idx, mut infos) in per_offer {
            let Some(h) = self.held.get(idx) else {
                continue;
            };
            super::task::take_from_pools(&h.offer, &self.role, &mut infos);
            for t in &infos {
                if let Some((job, peer, _)) = parse_task_id(&t.task_id.value) {
                    self.tasks.insert(
                        t.task_id.value.clone(),
                        Task {
                            job,
                            peer,
                            agent_id: Some(h.offer.agent_id.value.clone()),
                            state: None,
                            last_ms: now_ms,
                            killing: false,
                        },
                    );
                }
            }
            out.push(accept_call(self.fw(), &h.offer.id.value, infos));
        }
        let mut i = 0;
        self.held.retain(|_| {
            let keep = !used.contains(&i);
            i += 1;
            keep
        });
        out
    }

    /// After the scheduling core has had the held offers: decline what is
    /// not worth holding, and suppress or revive offers.
    pub fn settle(&mut self, now_ms: u64, waiting: bool) -> Vec<Call> {
        let mut out = Vec::new();
        if !self.subscribed {
            return out;
        }
        let (decline, refuse): (Vec<String>, f64) = if waiting {
            let (old, keep): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
                .into_iter()
                .partition(|h| now_ms >= h.since_ms + self.t.hold_ms);
            self.held = keep;
            // Declined offers must come back while others are still held,
            // or offers from different agents never meet in one gang.
            (
                old.into_iter().map(|h| h.offer.id.value).collect(),
                self.t.busy_refuse_secs.min(self.t.hold_ms as f64 / 2000.0),
            )
        } else {
            (
                std::mem::take(&mut self.held)
                    .into_iter()
                    .map(|h| h.offer.id.value)
                    .collect(),
                self.t.idle_refuse_secs,
            )
        };
        if !decline.is_empty() {
            let ids: Vec<&str> = decline.iter().map(String::as_str).collect();
            out.push(calls::decline(self.fw(), &ids, refuse));
        }
        if waiting {
            let due = self
                .last_revive_ms
                .is_none_or(|t| now_ms >= t + self.t.revive_min_ms);
            if (self.suppressed || self.revive_due) && due {
                out.push(calls::revive(self.fw()));
                self.suppressed = false;
                self.revive_due = false;
                self.last_revive_ms = Some(now_ms);
            } else if self.suppressed {
                self.revive_due = true;
            }
        } else if !self.suppressed {
            out.push(calls::suppress(self.fw()));
            self.suppressed = true;
            self.revive_due = false;
        }
        out
    }

    /// A job arrived: its offers may have been filtered by declines, so
    /// the master is asked again (rate-limited by `settle`).
    pub fn job_arrived(&mut self) {
        self.revive_due = true;
    }

    pub fn kill(&mut self, job: u64, attempt: u32, peers: &[u32]) -> Vec<Call> {
        let mut out = Vec::new();
        for p in peers {
            let tid = task_id(job, *p, attempt);
            if let Some(t) = self.tasks.get_mut(&tid) {
                t.killing = true;
                if self.subscribed {
                    out.push(calls::kill(
                        self.id.as_deref().unwrap_or_default(),
                        &tid,
                        t.agent_id.as_deref(),
                    ));
                }
            }
        }
        out
    }

    /// Time-driven work: retries of an unanswered reconciliation, tasks
    /// silent since launch, the periodic implicit reconciliation.
    pub fn tick(&mut self, now_ms: u64) -> Out {
        let mut out = Out::default();
        if !self.subscribed {
            return out;
        }
        if let Some(r) = &mut self.recon {
            if now_ms >= r.next_ms {
                r.backoff_ms = (r.backoff_ms * 2).min(self.t.reconcile_cap_ms);
                r.next_ms = now_ms + r.backoff_ms;
                let pending = r.pending.clone();
                out.calls.push(self.reconcile_call(&pending));
            }
            return out;
        }
        let silent: BTreeSet<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| {
                t.state.is_none_or(|s| rank(s) == 0)
                    && now_ms >= t.last_ms + self.t.staging_timeout_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        if !silent.is_empty() {
            self.start_reconcile(now_ms, silent, &mut out);
            return out;
        }
        if now_ms >= self.next_implicit_ms {
            self.next_implicit_ms = now_ms + self.t.implicit_every_ms;
            out.calls.push(calls::reconcile(self.fw(), &[]));
        }
        out
    }

    /// The TEARDOWN call. Nothing is forgotten until the master has it
    /// (`torn_down`): if it is lost, the framework still exists there.
    pub fn teardown(&self) -> Option<Call> {
        self.id.as_deref().map(calls::teardown)
    }

    /// The master answered the TEARDOWN: it kills every task and forgets
    /// the framework.
    pub fn torn_down(&mut self) {
        self.forget_everything();
    }
}

fn accept_call(framework_id: &str, offer_id: &str, tasks: Vec<mesos::TaskInfo>) -> Call {
    use proto::mesos::scheduler::call;
    Call {
        framework_id: Some(mesos::FrameworkId {
            value: framework_id.into(),
        }),
        r#type: Some(call::Type::Accept as i32),
        accept: Some(call::Accept {
            offer_ids: vec![mesos::OfferId {
                value: offer_id.into(),
            }],
            operations: vec![mesos::offer::Operation {
                r#type: Some(operation::Type::Launch as i32),
                launch: Some(operation::Launch { task_infos: tasks }),
            }],
            filters: Some(mesos::Filters {
                refuse_seconds: Some(0.0),
            }),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::mesos::scheduler::call::Type as C;

    fn t() -> Tunables {
        Tunables {
            hold_ms: 1_000,
            revive_min_ms: 500,
            reconcile_base_ms: 100,
            reconcile_cap_ms: 400,
            implicit_every_ms: 10_000,
            staging_timeout_ms: 2_000,
            ..Tunables::default()
        }
    }

    fn subscribed(id: &str) -> Event {
        Event {
            r#type: Some(event::Type::Subscribed as i32),
            subscribed: Some(event::Subscribed {
                framework_id: mesos::FrameworkId { value: id.into() },
                heartbeat_interval_seconds: Some(15.0),
                master_info: None,
            }),
            ..Default::default()
        }
    }

    fn offer(id: &str, agent: &str) -> mesos::Offer {
        let scalar = |n: &str, v: f64| mesos::Resource {
            name: n.into(),
            r#type: mesos::value::Type::Scalar as i32,
            scalar: Some(mesos::value::Scalar { value: v }),
            ..Default::default()
        };
        mesos::Offer {
            id: mesos::OfferId { value: id.into() },
            framework_id: mesos::FrameworkId { value: "fw".into() },
            agent_id: mesos::AgentId {
                value: agent.into(),
            },
            hostname: agent.into(),
            resources: vec![
                scalar("cpus", 4.0),
                scalar("mem", 1024.0),
                mesos::Resource {
                    name: "ports".into(),
                    r#type: mesos::value::Type::Ranges as i32,
                    ranges: Some(mesos::value::Ranges {
                        range: vec![mesos::value::Range {
                            begin: 31000,
                            end: 31010,
                        }],
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    fn offers(list: Vec<mesos::Offer>) -> Event {
        Event {
            r#type: Some(event::Type::Offers as i32),
            offers: Some(event::Offers { offers: list }),
            ..Default::default()
        }
    }

    fn update(task: &str, state: TaskState, uuid: Option<&[u8]>, message: &str) -> Event {
        Event {
            r#type: Some(event::Type::Update as i32),
            update: Some(event::Update {
                status: mesos::TaskStatus {
                    task_id: mesos::TaskId { value: task.into() },
                    state: state as i32,
                    agent_id: Some(mesos::AgentId { value: "a1".into() }),
                    uuid: uuid.map(|u| u.to_vec()),
                    message: (!message.is_empty()).then(|| message.into()),
                    ..Default::default()
                },
            }),
            ..Default::default()
        }
    }

    fn kinds(calls: &[Call]) -> Vec<C> {
        calls
            .iter()
            .map(|c| C::try_from(c.r#type.unwrap()).unwrap())
            .collect()
    }

    fn task(job: u64, peer: u32) -> mesos::TaskInfo {
        mesos::TaskInfo {
            name: task_id(job, peer, 1),
            task_id: mesos::TaskId {
                value: task_id(job, peer, 1),
            },
            ..Default::default()
        }
    }

    #[test]
    fn subscribing_with_nothing_waiting_suppresses_and_stores_the_id() {
        let mut f = Framework::new(None, t());
        let out = f.event(0, subscribed("fw-1"), false);
        assert_eq!(out.new_id.as_deref(), Some("fw-1"));
        assert_eq!(kinds(&out.calls), [C::Suppress]);
        // The same id again is not news.
        f.disconnected();
        assert!(f.event(10, subscribed("fw-1"), false).new_id.is_none());
    }

    #[test]
    fn a_launch_accepts_each_used_offer_once_and_the_rest_are_held_then_declined() {
        let mut f = Framework::new(None, t());
        f.event(0, subscribed("fw"), true);
        let out = f.event(0, offers(vec![offer("o1", "a1"), offer("o2", "a2")]), true);
        assert!(out.offers_changed);
        assert_eq!(f.placeable().len(), 2);
        let calls = f.accept(
            5,
            vec![
                Launch {
                    offer: 1,
                    task: task(1, 0),
                },
                Launch {
                    offer: 1,
                    task: task(1, 1),
                },
            ],
        );
        assert_eq!(kinds(&calls), [C::Accept]);
        let acc = calls[0].accept.as_ref().unwrap();
        assert_eq!(acc.offer_ids[0].value, "o2");
        assert_eq!(
            acc.operations[0].launch.as_ref().unwrap().task_infos.len(),
            2
        );
        assert_eq!(f.placeable().len(), 1);
        // Another job waits: o1 is held until the hold time is over. The
        // subscription's one REVIVE (old filters may hold) goes meanwhile.
        assert_eq!(kinds(&f.settle(500, true)), [C::Revive]);
        let c = f.settle(1_000, true);
        assert_eq!(kinds(&c), [C::Decline]);
        assert_eq!(c[0].decline.as_ref().unwrap().offer_ids[0].value, "o1");
        assert!(f.placeable().is_empty());
    }

    #[test]
    fn nothing_waiting_declines_with_the_long_filter_and_suppresses_once() {
        let mut f = Framework::new(None, t());
        f.event(0, subscribed("fw"), true);
        f.event(0, offers(vec![offer("o1", "a1")]), false);
        let c = f.settle(1, false);
        assert_eq!(kinds(&c), [C::Decline, C::Suppress]);
        assert_eq!(
            c[0].decline
                .as_ref()
                .unwrap()
                .filters
                .as_ref()
                .unwrap()
                .refuse_seconds,
            Some(120.0)
        );
        assert!(f.settle(2, false).is_empty());
        // A job arrives: one REVIVE, and not a storm of them.
        f.job_arrived();
        assert_eq!(kinds(&f.settle(3, true)), [C::Revive]);
        f.job_arrived();
        assert!(f.settle(4, true).is_empty());
        assert_eq!(kinds(&f.settle(600, true)), [C::Revive]);
    }

    #[test]
    fn a_rescinded_offer_is_no_longer_placeable() {
        let mut f = Framework::new(None, t());
        f.event(0, subscribed("fw"), true);
        f.event(0, offers(vec![offer("o1", "a1"), offer("o2", "a1")]), true);
        f.event(
            1,
            Event {
                r#type: Some(event::Type::Rescind as i32),
                rescind: Some(event::Rescind {
                    offer_id: mesos::OfferId { value: "o1".into() },
                }),
                ..Default::default()
            },
            true,
        );
        assert_eq!(f.placeable().len(), 1);
        assert_eq!(f.placeable()[0].id, "o2");
    }

    #[test]
    fn updates_are_acknowledged_only_with_a_uuid_and_map_to_peer_states() {
        let mut f = Framework::new(None, t());
        f.event(0, subscribed("fw"), true);
        f.event(0, offers(vec![offer("o1", "a1")]), true);
        f.accept(
            0,
            vec![Launch {
                offer: 0,
                task: task(3, 0),
            }],
        );
        let out = f.event(
            1,
            update("job3.peer0", TaskState::TaskRunning, Some(b"u1"), ""),
            true,
        );
        assert_eq!(kinds(&out.acks), [C::Acknowledge]);
        assert!(out.calls.is_empty());
        assert_eq!(out.updates[0].2.state, PeerState::Running);
        // A reconciliation answer (no uuid) is not acknowledged, and a
        // repeat of the same state is not news.
        let out = f.event(
            2,
            update("job3.peer0", TaskState::TaskRunning, None, ""),
            true,
        );
        assert!(out.calls.is_empty() && out.acks.is_empty() && out.updates.is_empty());
        // Out of order: STARTING after RUNNING is ignored (but acknowledged).
        let out = f.event(
            3,
            update("job3.peer0", TaskState::TaskStarting, Some(b"u0"), ""),
            true,
        );
        assert_eq!(kinds(&out.acks), [C::Acknowledge]);
        assert!(out.calls.is_empty());
        assert!(out.updates.is_empty());
        let out = f.event(
            4,
            update(
                "job3.peer0",
                TaskState::TaskFailed,
                Some(b"u2"),
                "Command exited with status 3",
            ),
            true,
        );
        let u = &out.updates[0].2;
        assert_eq!((u.state, u.exit_code), (PeerState::Failed, Some(3)));
        assert_eq!(u.reason, "TASK_FAILED: Command exited with status 3");
        // A duplicate of the terminal update is acknowledged and nothing more.
        let out = f.event(
            5,
            update(
                "job3.peer0",
                TaskState::TaskFailed,
                Some(b"u2"),
                "Command exited with status 3",
            ),
            true,
        );
        assert_eq!(kinds(&out.acks), [C::Acknowledge]);
        assert!(out.calls.is_empty());
        assert!(out.updates.is_empty());
    }

    #[test]
    fn every_lossy_state_ends_the_peer_as_lost() {
        for s in [
            TaskState::TaskUnreachable,
            TaskState::TaskGone,
            TaskState::TaskUnknown,
            TaskState::TaskLost,
        ] {
            let mut f = Framework::new(None, t());
            f.event(0, subscribed("fw"), true);
            f.adopt("job1.peer0", Some("a1".into()), 0);
            let out = f.event(1, update("job1.peer0", s, Some(b"u"), "agent gone"), true);
            assert_eq!(out.updates[0].2.state, PeerState::Lost, "{s:?}");
            assert!(out.updates[0].2.reason.starts_with(s.as_str_name()));
        }
        let mut f = Framework::new(None, t());
        f.event(0, subscribed("fw"), true);
        f.adopt("job1.peer0", None, 0);
        let out = f.event(
            1,
            update("job1.peer0", TaskState::TaskDropped, None, ""),
            true,
        );
        assert_eq!(out.updates[0].2.state, PeerState::Failed);
    }

    #[test]
    fn a_live_task_nobody_owns_is_killed() {
        let mut f = Framework::new(None, t());
        f.event(0, subscribed("fw"), true);
        let out = f.event(
            1,
            update("job9.peer0", TaskState::TaskRunning, None, ""),
            true,
        );
        assert_eq!(kinds(&out.calls), [C::Kill]);
        let out = f.event(
            1,
            update("job9.peer1", TaskState::TaskFinished, None, ""),
            true,
        );
        assert!(out.calls.is_empty());
    }

    #[test]
    fn resubscribing_reconciles_every_task_and_retries_with_backoff_until_answered() {
        let mut f = Framework::new(Some("fw".into()), t());
        f.adopt("job1.peer0", Some("a1".into()), 0);
        f.adopt("job1.peer1", Some("a1".into()), 0);
        let out = f.event(0, subscribed("fw"), true);
        assert_eq!(kinds(&out.calls), [C::Reconcile]);
        assert_eq!(out.calls[0].reconcile.as_ref().unwrap().tasks.len(), 2);
        assert_eq!(f.reconciling(), 2);
        f.event(
            50,
            update("job1.peer0", TaskState::TaskRunning, None, ""),
            true,
        );
        assert!(f.tick(99).calls.is_empty());
        let c = f.tick(100).calls;
        assert_eq!(
            c[0].reconcile.as_ref().unwrap().tasks.len(),
            1,
            "only the unanswered one"
        );
        // Backoff doubles (200, then 400, capped at 400).
        assert!(f.tick(299).calls.is_empty());
        assert_eq!(f.tick(300).calls.len(), 1);
        assert!(f.tick(699).calls.is_empty());
        assert_eq!(f.tick(700).calls.len(), 1);
        assert_eq!(f.tick(1100).calls.len(), 1);
        f.event(
            1200,
            update("job1.peer1", TaskState::TaskRunning, None, ""),
            true,
        );
        assert_eq!(f.reconciling(), 0);
        // Then only the implicit one, on its period.
        assert!(f.tick(5_000).calls.is_empty());
        let c = f.tick(10_000).calls;
        assert_eq!(kinds(&c), [C::Reconcile]);
        assert!(c[0].reconcile.as_ref().unwrap().tasks.is_empty());
    }

    #[test]
    fn a_launched_task_silent_past_the_timeout_is_reconciled() {
        let mut f = Framework::new(None, t());
        f.event(0, subscribed("fw"), true);
        f.event(0, offers(vec![offer("o1", "a1")]), true);
        f.accept(
            0,
            vec![Launch {
                offer: 0,
                task: task(1, 0),
            }],
        );
        assert!(f.tick(1_999).calls.is_empty());
        let c = f.tick(2_000).calls;
        assert_eq!(kinds(&c), [C::Reconcile]);
        assert_eq!(
            c[0].reconcile.as_ref().unwrap().tasks[0].task_id.value,
            "job1.peer0"
        );
    }

    #[test]
    fn kills_asked_while_disconnected_are_sent_after_resubscribing() {
        let mut f = Framework::new(Some("fw".into()), t());
        f.adopt("job1.peer0", Some("a1".into()), 0);
        assert!(f.kill(1, 1, &[0]).is_empty());
        let out = f.event(1, subscribed("fw"), true);
        assert_eq!(kinds(&out.calls), [C::Kill, C::Reconcile]);
    }

    fn error(message: &str) -> Event {
        Event {
            r#type: Some(event::Type::Error as i32),
            error: Some(event::Error {
                message: message.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_refusal_keeps_the_framework_id_and_its_tasks() {
        // The ERROR messages a real master sends for a refused SUBSCRIBE
        // (scenarios/refused-subscription).
        for why in [
            "User 'root' is not allowed to run frameworks without --root_submissions set",
            "Not authorized to register framework  with roles { forbidden }",
            "Framework failed over",
        ] {
            let mut f = Framework::new(Some("fw".into()), t());
            f.adopt("job1.peer0", Some("a1".into()), 0);
            f.event(0, subscribed("fw"), true);
            f.event(0, offers(vec![offer("o1", "a1")]), true);
            let out = f.event(1, error(why), true);
            assert_eq!(out.refused.as_deref(), Some(why));
            assert!(out.removed.is_none() && out.updates.is_empty());
            assert_eq!(f.id(), Some("fw"));
            assert_eq!(f.task_count(), 1);
            assert!(!f.is_subscribed() && f.placeable().is_empty());
        }
    }

    #[test]
    fn an_error_event_forgets_the_framework() {
        let mut f = Framework::new(Some("fw".into()), t());
        f.adopt("job1.peer0", None, 0);
        f.event(0, subscribed("fw"), true);
        let out = f.event(
            1,
            Event {
                r#type: Some(event::Type::Error as i32),
                error: Some(event::Error {
                    message: "Framework has been removed".into(),
                }),
                ..Default::default()
            },
            true,
        );
        assert_eq!(out.removed.as_deref(), Some("Framework has been removed"));
        assert_eq!(f.id(), None);
        assert_eq!(f.task_count(), 0);
    }

    #[test]
    fn exit_codes_are_read_from_the_executor_message() {
        assert_eq!(exit_code("Command exited with status 3"), Some(3));
        assert_eq!(exit_code("Command exited with status 127 (foo)"), Some(127));
        assert_eq!(exit_code("Command terminated with signal Killed"), None);
    }
}
