//! The test master against the recordings of a real Mesos 1.12 master
//! (`../shared/fixtures/mesos/scenarios/`): each test drives the test
//! master through a scenario's steps with the calls the recorder sent
//! (ids rewritten to the test master's) and compares what comes back with
//! what the real master answered: HTTP statuses, the headers and bodies
//! that matter, and the streams' events summarised as `events.json` does
//! (type; for an UPDATE the task, state, reason, source, message and
//! whether it has a uuid), per task in order. Ids, timestamps and
//! hostnames are ignored; HEARTBEAT, OFFERS and RESCIND timing is the
//! allocator's and is left out of the comparison.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use proto::mesos::scheduler::event;
use proto::recordio::Decoder;
use proto::{Call, Event, Message};
use serde_json::{json, Value};

use super::eventually;
use super::master::{base64, pools, Pools, TestMaster};

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/mesos/scenarios"
);

fn read(scenario: &str, name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{scenario}/{name}"))
        .unwrap_or_else(|e| panic!("{scenario}/{name}: {e}"))
}

fn json_of(scenario: &str, name: &str) -> Value {
    serde_json::from_slice(&read(scenario, name)).unwrap()
}

/// An event as `events.json` summarises it, without ids and times.
fn summary(ev: &Event) -> Value {
    let kind = event::Type::try_from(ev.r#type.unwrap_or(0))
        .map(|t| t.as_str_name())
        .unwrap_or("UNKNOWN");
    let mut v = json!({ "type": kind });
    if let Some(u) = &ev.update {
        let s = &u.status;
        v["task"] = json!(s.task_id.value);
        v["state"] = json!(proto::mesos::TaskState::try_from(s.state)
            .unwrap()
            .as_str_name());
        v["uuid"] = json!(s.uuid.is_some());
        if let Some(r) = s.reason {
            v["reason"] = json!(proto::mesos::task_status::Reason::try_from(r)
                .unwrap()
                .as_str_name());
        }
        if let Some(src) = s.source {
            v["source"] = json!(proto::mesos::task_status::Source::try_from(src)
                .unwrap()
                .as_str_name());
        }
        if let Some(m) = &s.message {
            v["message"] = json!(normalise(m));
        }
    }
    if let Some(e) = &ev.error {
        v["message"] = json!(e.message);
    }
    v
}

/// Hostnames and the resource list of TASK_ERROR messages differ by machine.
fn normalise(m: &str) -> String {
    let m = m.split(" required by task").next().unwrap_or(m);
    if m.starts_with("Agent ") && m.ends_with(" disconnected") {
        return "Agent <host> disconnected".into();
    }
    if m.starts_with("Total resources") {
        return "Total resources <asked>".into();
    }
    m.to_string()
}

/// The recorded summaries of one stream, without allocator timing.
fn recorded(scenario: &str, stream: &str) -> Vec<Value> {
    json_of(scenario, "events.json")
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["stream"] == stream && !skipped(e["type"].as_str().unwrap()))
        .map(|e| {
            let mut v = json!({ "type": e["type"] });
            for k in ["task", "state", "uuid", "reason", "source"] {
                if !e[k].is_null() {
                    v[k] = e[k].clone();
                }
            }
            if let Some(m) = e["message"].as_str() {
                v["message"] = json!(normalise(m));
            }
            v
        })
        .collect()
}

fn skipped(kind: &str) -> bool {
    matches!(kind, "HEARTBEAT" | "OFFERS" | "RESCIND")
}

/// Same event types in the same order, and per task the same updates in
/// the same order (tasks of one moment may interleave differently).
fn assert_same(what: &str, got: &[Value], want: &[Value]) {
    let kinds = |v: &[Value]| v.iter().map(|e| e["type"].clone()).collect::<Vec<_>>();
    assert_eq!(
        kinds(got),
        kinds(want),
        "{what}: event types\n got {got:#?}"
    );
    let per_task = |v: &[Value]| {
        let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for e in v.iter().filter(|e| e["type"] == "UPDATE") {
            m.entry(e["task"].as_str().unwrap().to_string())
                .or_default()
                .push(e.clone());
        }
        m
    };
    assert_eq!(per_task(got), per_task(want), "{what}: updates per task");
    let others = |v: &[Value]| {
        v.iter()
            .filter(|e| e["type"] != "UPDATE")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(others(got), others(want), "{what}: other events");
}

/// A scheduler client speaking the wire protocol by hand, sending
/// recorded calls.
struct Raw {
    http: reqwest::Client,
    url: String,
    /// Recorded framework id → the test master's.
    fw: Option<(String, String)>,
    /// Every recorded framework id seen → the test master's.
    known: BTreeMap<String, String>,
    /// The test master's agent: recorded calls name the recorded one.
    agent: Option<String>,
    auth: Option<String>,
}

/// One SUBSCRIBE's stream as read so far.
#[derive(Clone, Default)]
struct Stream {
    id: String,
    events: Arc<Mutex<Vec<Event>>>,
    /// How it ended: "chunk" (terminating chunk), "error", or open.
    end: Arc<Mutex<Option<&'static str>>>,
}

impl Stream {
    fn summaries(&self) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(summary)
            .filter(|s| !skipped(s["type"].as_str().unwrap()))
            .collect()
    }

    fn all(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    async fn wait(&self, what: &str, f: impl Fn(&[Event]) -> bool) {
        eventually(what, 20, || f(&self.events.lock().unwrap()).then_some(())).await
    }
}

impl Raw {
    fn new(m: &TestMaster) -> Raw {
        Raw {
            http: reqwest::Client::new(),
            url: format!("http://{}/api/v1/scheduler", m.addr(0)),
            fw: None,
            known: BTreeMap::new(),
            agent: m.only_agent(),
            auth: None,
        }
    }

    /// A recorded call with its framework id made the test master's.
    fn call(&self, scenario: &str, name: &str) -> Vec<u8> {
        let mut c = Call::decode(&read(scenario, &format!("call-{name}.pb"))[..]).unwrap();
        if let Some(f) = c.framework_id.as_mut() {
            if let Some(ours) = self.known.get(&f.value) {
                f.value = ours.clone();
            }
        }
        if let Some(agent) = &self.agent {
            if let Some(r) = c.reconcile.as_mut() {
                for t in &mut r.tasks {
                    if let Some(a) = t.agent_id.as_mut() {
                        a.value = agent.clone();
                    }
                }
            }
            if let Some(a) = c.kill.as_mut().and_then(|k| k.agent_id.as_mut()) {
                a.value = agent.clone();
            }
        }
        if let Some(id) = c
            .subscribe
            .as_mut()
            .and_then(|s| s.framework_info.id.as_mut())
        {
            if let Some(ours) = self.known.get(&id.value) {
                id.value = ours.clone();
            }
        }
        c.encode_to_vec()
    }

    async fn subscribe(
        &mut self,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (u16, Option<Stream>, reqwest::header::HeaderMap) {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/x-protobuf")
            .header("accept", "application/x-protobuf");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.body(body).send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if status != 200 {
            return (status, None, headers);
        }
        let s = Stream {
            id: headers["mesos-stream-id"].to_str().unwrap().to_string(),
            ..Default::default()
        };
        let (events, end) = (s.events.clone(), s.end.clone());
        tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut d = Decoder::new(16 << 20);
            loop {
                match body.next().await {
                    None => {
                        *end.lock().unwrap() = Some("chunk");
                        return;
                    }
                    Some(Err(_)) => {
                        *end.lock().unwrap() = Some("error");
                        return;
                    }
                    Some(Ok(c)) => d.feed(&c),
                }
                while let Some(r) = d.next_record().unwrap() {
                    events.lock().unwrap().push(Event::decode(r).unwrap());
                }
            }
        });
        (status, Some(s), headers)
    }

    /// SUBSCRIBEs with a recorded call and learns the framework id.
    async fn subscribe_as(&mut self, scenario: &str, recorded_stream: &str) -> Stream {
        let body = self.call(scenario, &format!("subscribe-{recorded_stream}"));
        let (status, s, _) = self.subscribe(body, &[]).await;
        assert_eq!(status, 200);
        let s = s.unwrap();
        s.wait("SUBSCRIBED or ERROR", |e| !e.is_empty()).await;
        if let Some(sub) = &s.all()[0].subscribed {
            let rec = json_of(scenario, "events.json")
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["stream"] == recorded_stream && e["type"] == "SUBSCRIBED")
                .and_then(|e| e["framework_id"].as_str().map(str::to_string));
            if let Some(rec) = rec {
                self.known
                    .insert(rec.clone(), sub.framework_id.value.clone());
                self.fw = Some((rec, sub.framework_id.value.clone()));
            }
        }
        s
    }

    async fn send(&self, body: Vec<u8>, headers: &[(&str, String)]) -> (u16, String) {
        let mut req = self.http.post(&self.url);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        let r = req.body(body).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(&self, body: Vec<u8>, stream: &str) -> (u16, String) {
        self.send(
            body,
            &[
                ("content-type", "application/x-protobuf".into()),
                ("mesos-stream-id", stream.into()),
            ],
        )
        .await
    }

    /// Acknowledges every update with a uuid, as the recorder did.
    async fn ack_all(&self, s: &Stream, done: &mut usize) {
        let evs = s.all();
        let fw = self.fw.as_ref().unwrap().1.clone();
        for ev in &evs[*done..] {
            if let Some(u) = &ev.update {
                if let Some(ack) = proto::calls::acknowledge(&fw, &u.status) {
                    assert_eq!(self.post(ack.encode_to_vec(), &s.id).await.0, 202);
                }
            }
        }
        *done = evs.len();
    }

    /// Launches a recorded ACCEPT on the newest offer of the stream (its
    /// offer and agent ids made the test master's; `sleep 60` shortened).
    async fn launch(
        &self,
        scenario: &str,
        name: &str,
        s: &Stream,
        used: &mut usize,
    ) -> (u16, String) {
        let seen_offers = *used;
        s.wait("an offer", |e| {
            e.iter().filter(|e| e.offers.is_some()).count() > seen_offers
        })
        .await;
        *used = offers_seen(s);
        let offer = s
            .all()
            .iter()
            .rev()
            .find_map(|e| e.offers.clone())
            .unwrap()
            .offers[0]
            .clone();
        let mut c = Call::decode(&self.call(scenario, name)[..]).unwrap();
        let a = c.accept.as_mut().unwrap();
        a.offer_ids = vec![offer.id.clone()];
        for op in &mut a.operations {
            for t in op.launch.iter_mut().flat_map(|l| &mut l.task_infos) {
                t.agent_id = offer.agent_id.clone();
                if let Some(cmd) = t.command.as_mut() {
                    if let Some(v) = cmd.value.as_mut() {
                        *v = v.replace("sleep 60", "sleep 4");
                    }
                }
            }
        }
        self.post(c.encode_to_vec(), &s.id).await
    }
}

fn offers_seen(s: &Stream) -> usize {
    s.all().iter().filter(|e| e.offers.is_some()).count()
}

fn updates(s: &Stream) -> usize {
    s.all().iter().filter(|e| e.update.is_some()).count()
}

fn one_agent_pools() -> Pools {
    pools(&[("*", 4.0, 4096.0, Some((31000, 32000)))])
}

/// agent-restart-checkpoint and agent-restart-no-checkpoint (both
/// frameworks): launch, kill the agent, restart it, reconcile, end.
async fn agent_restart(scenario: &str, stream: &str, calls: &str) -> Vec<Value> {
    let m = TestMaster::start(15.0).await;
    let agent = m.add_agent_with("127.0.0.1", one_agent_pools()).await;
    let mut raw = Raw::new(&m);
    let s = raw.subscribe_as(scenario, stream).await;
    let launched = json_of(scenario, "events.json")
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["stream"] == stream && e["state"] == "TASK_RUNNING" && e["uuid"] == true)
        .count();
    assert_eq!(
        raw.launch(scenario, &format!("{calls}accept-launch"), &s, &mut 0)
            .await
            .0,
        202
    );
    let mut acked = 0;
    s.wait("TASK_RUNNING", |e| {
        e.iter()
            .filter(|e| e.update.as_ref().is_some_and(|u| u.status.state == 1))
            .count()
            == launched
    })
    .await;
    raw.ack_all(&s, &mut acked).await;
    m.kill_agent(&agent);
    tokio::time::sleep(Duration::from_millis(300)).await;
    m.restart_agent(&agent);
    let before = updates(&s);
    for r in ["reconcile-explicit-1", "reconcile-implicit-1"] {
        assert_eq!(
            raw.post(raw.call(scenario, &format!("{calls}{r}")), &s.id)
                .await
                .0,
            202
        );
    }
    let answers = recorded(scenario, stream)
        .iter()
        .filter(|e| e["reason"] == "REASON_RECONCILIATION")
        .count();
    s.wait("the reconciliation answers", |e| {
        e.iter().filter(|e| e.update.is_some()).count() >= before + answers
    })
    .await;
    // Give a wrong extra answer the time to show.
    tokio::time::sleep(Duration::from_millis(200)).await;
    raw.ack_all(&s, &mut acked).await;
    if scenario == "agent-restart-checkpoint" {
        s.wait("the tasks finish", |e| {
            e.iter()
                .filter(|e| e.update.as_ref().is_some_and(|u| u.status.state == 2))
                .count()
                == launched
        })
        .await;
        raw.ack_all(&s, &mut acked).await;
    }
    s.summaries()
}

#[tokio::test]
async fn agent_restart_with_checkpointing_matches_the_recording() {
    let s = "agent-restart-checkpoint";
    let got = agent_restart(s, "subscribe", "").await;
    assert_same(s, &got, &recorded(s, "subscribe"));
}

#[tokio::test]
async fn agent_restart_without_checkpointing_matches_the_recording_for_both_frameworks() {
    let s = "agent-restart-no-checkpoint";
    let got = agent_restart(s, "subscribe", "").await;
    assert_same("partition-aware", &got, &recorded(s, "subscribe"));
    let got = agent_restart(s, "subscribe-nonpa", "nonpa-").await;
    assert_same("not partition-aware", &got, &recorded(s, "subscribe-nonpa"));
}

#[tokio::test]
async fn agent_removal_and_marking_it_gone_match_the_recording_for_both_frameworks() {
    let sc = "agent-removed";
    for (stream, p) in [("pa", "pa-"), ("nonpa", "nonpa-")] {
        let m = TestMaster::start(15.0).await;
        let agent = m.add_agent_with("127.0.0.1", one_agent_pools()).await;
        let mut raw = Raw::new(&m);
        let s = raw.subscribe_as(sc, stream).await;
        assert_eq!(
            raw.launch(sc, &format!("{p}accept-launch"), &s, &mut 0)
                .await
                .0,
            202
        );
        s.wait("running", |e| {
            e.iter()
                .any(|e| e.update.as_ref().is_some_and(|u| u.status.state == 1))
        })
        .await;
        let mut acked = 0;
        raw.ack_all(&s, &mut acked).await;
        m.remove_agent(&agent);
        for r in ["reconcile-explicit", "reconcile-implicit"] {
            assert_eq!(
                raw.post(raw.call(sc, &format!("{p}{r}")), &s.id).await.0,
                202
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        m.mark_agent_gone(&agent);
        for r in [
            "reconcile-explicit-after-gone",
            "reconcile-implicit-after-gone",
        ] {
            assert_eq!(
                raw.post(raw.call(sc, &format!("{p}{r}")), &s.id).await.0,
                202
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_same(stream, &s.summaries(), &recorded(sc, stream));
    }
}

#[tokio::test]
async fn a_master_restart_matches_the_recording() {
    let sc = "master-restart";
    let m = TestMaster::start(15.0).await;
    m.add_agent_with("127.0.0.1", one_agent_pools()).await;
    let mut raw = Raw::new(&m);
    let first = raw.subscribe_as(sc, "first").await;
    assert_eq!(raw.launch(sc, "accept-launch", &first, &mut 0).await.0, 202);
    first
        .wait("running", |e| {
            e.iter()
                .any(|e| e.update.as_ref().is_some_and(|u| u.status.state == 1))
        })
        .await;
    let mut acked = 0;
    raw.ack_all(&first, &mut acked).await;
    m.restart_master(Duration::from_millis(200));
    // The stream ends without its terminating chunk.
    eventually("the stream broken", 10, || *first.end.lock().unwrap()).await;
    assert_eq!(*first.end.lock().unwrap(), Some("error"));
    // 503 "Master has not finished recovery", then the old id is accepted.
    let (status, _, _) = raw
        .subscribe(raw.call(sc, "subscribe-resubscribe-1"), &[])
        .await;
    assert_eq!(status, 503);
    let mut second = None;
    for _ in 0..100 {
        let (status, s, _) = raw
            .subscribe(raw.call(sc, "subscribe-resubscribe-2"), &[])
            .await;
        if status == 200 {
            second = s;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = second.expect("subscribed after recovery");
    second.wait("SUBSCRIBED", |e| !e.is_empty()).await;
    assert_eq!(
        second.all()[0]
            .subscribed
            .as_ref()
            .unwrap()
            .framework_id
            .value,
        raw.fw.as_ref().unwrap().1
    );
    // Before the agent is back, reconciliation answers nothing.
    for r in [
        "reconcile-explicit-before-agent",
        "reconcile-implicit-before-agent",
    ] {
        assert_eq!(raw.post(raw.call(sc, r), &second.id).await.0, 202);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(updates(&second), 0, "{:#?}", second.summaries());
    m.reregister_agents();
    for r in [
        "reconcile-explicit-after-agent",
        "reconcile-implicit-after-agent",
        "kill",
    ] {
        assert_eq!(raw.post(raw.call(sc, r), &second.id).await.0, 202);
    }
    second
        .wait("killed", |e| {
            e.iter()
                .any(|e| e.update.as_ref().is_some_and(|u| u.status.state == 4))
        })
        .await;
    assert_same("first", &first.summaries(), &recorded(sc, "first"));
    assert_same(
        "resubscribe-2",
        &second.summaries(),
        &recorded(sc, "resubscribe-2"),
    );
}

#[tokio::test]
async fn refused_subscriptions_are_errors_on_a_200_stream_as_recorded() {
    let sc = "refused-subscription";
    let m = TestMaster::start(15.0).await;
    m.set_root_submissions(false);
    m.forbid_role("forbidden");
    let mut raw = Raw::new(&m);
    for stream in [
        "root-user",
        "nobody-user",
        "acl-forbidden-role",
        "acl-forbidden-role-no-principal",
    ] {
        // Part B ran on another master, one with ACLs and root allowed.
        m.set_root_submissions(!stream.starts_with("root"));
        let s = raw.subscribe_as(sc, stream).await;
        if stream == "nobody-user" {
            let fw = raw.fw.as_ref().unwrap().1.clone();
            assert_eq!(
                raw.post(proto::calls::teardown(&fw).encode_to_vec(), &s.id)
                    .await
                    .0,
                202
            );
        }
        eventually("the stream ends", 10, || *s.end.lock().unwrap()).await;
        assert_eq!(
            *s.end.lock().unwrap(),
            Some("chunk"),
            "{stream}: the terminating chunk"
        );
        assert_same(stream, &s.summaries(), &recorded(sc, stream));
    }
    m.allow_all_roles();
    // C: a second connection takes over; the first gets "Framework failed over".
    let first = raw.subscribe_as(sc, "first").await;
    let second = raw.subscribe_as(sc, "second").await;
    eventually("the first stream ends", 10, || *first.end.lock().unwrap()).await;
    assert_same("first", &first.summaries(), &recorded(sc, "first"));
    let (st, body) = raw
        .post(raw.call(sc, "reconcile-with-first-stream-id"), &first.id)
        .await;
    assert_eq!(st, 400);
    assert!(body.starts_with(&format!(
        "The stream ID '{}' included in this request didn't match",
        first.id
    )));
    assert_eq!(
        raw.post(raw.call(sc, "reconcile-with-second-stream-id"), &second.id)
            .await
            .0,
        202
    );
    assert_eq!(
        raw.post(raw.call(sc, "second-teardown-1"), &second.id)
            .await
            .0,
        202
    );
    assert_same("second", &second.summaries(), &recorded(sc, "second"));
    // D: an id never issued is accepted as it is; E: a removed id is refused.
    let unknown = raw.subscribe_as(sc, "unknown-id").await;
    assert_eq!(
        unknown.all()[0]
            .subscribed
            .as_ref()
            .unwrap()
            .framework_id
            .value,
        "00000000-0000-0000-0000-000000000000-0042"
    );
    let removed = raw.subscribe_as(sc, "removed-id").await;
    eventually("the stream ends", 10, || *removed.end.lock().unwrap()).await;
    assert_same(
        "removed-id",
        &removed.summaries(),
        &recorded(sc, "removed-id"),
    );
}

/// Replays `calls.json` in order: each call with its recorded headers
/// (stream ids mapped to the test master's), expecting the recorded status
/// and body.
async fn replay_calls(sc: &str, m: &TestMaster, credentials: bool) {
    let mut raw = Raw::new(m);
    let calls = json_of(sc, "calls.json");
    let closes: Vec<(f64, String)> = json_of(sc, "steps.json")
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            let step = s["step"]
                .as_str()?
                .strip_prefix("recorder closes stream ")?;
            Some((s["t"].as_f64()?, step.to_string()))
        })
        .collect();
    let mut streams: BTreeMap<String, Stream> = BTreeMap::new();
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut closed: Vec<String> = vec![];
    let subscribed_at: BTreeMap<String, f64> = json_of(sc, "steps.json")
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            let stream = s["step"].as_str()?.strip_prefix("SUBSCRIBE ")?;
            Some((stream.to_string(), s["t"].as_f64()?))
        })
        .collect();
    for c in calls.as_array().unwrap() {
        let name = c["call"].as_str().unwrap();
        let t = c["t"]
            .as_f64()
            .or_else(|| {
                c["stream"]
                    .as_str()
                    .and_then(|st| subscribed_at.get(st).copied())
            })
            .unwrap_or(0.0);
        for (at, s) in &closes {
            if *at <= t && !closed.contains(s) {
                closed.push(s.clone());
                // Closing our side of the SUBSCRIBE connection.
                streams.remove(s);
                m.drop_stream();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let want_status = c["status"].as_u64().unwrap() as u16;
        let headers = c["request_headers"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let header = |k: &str| headers.get(k).and_then(|v| v.as_str()).map(str::to_string);
        if let Some(stream) = c["stream"].as_str() {
            let mut extra: Vec<(&str, String)> = vec![];
            if let Some(a) = header("Authorization") {
                extra.push(("authorization", a));
            }
            let h: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let before = raw.fw.clone();
            let body = raw.call(sc, name);
            let (status, s, resp_headers) = raw.subscribe(body, &h).await;
            assert_eq!(status, want_status, "{name}");
            let www = c["headers"]["WWW-Authenticate"].as_str();
            assert_eq!(
                resp_headers
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap()),
                www,
                "{name}"
            );
            if let Some(s) = s {
                s.wait("SUBSCRIBED", |e| !e.is_empty()).await;
                let rec_fw = json_of(sc, "events.json")
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["stream"] == stream && e["type"] == "SUBSCRIBED")
                    .and_then(|e| e["framework_id"].as_str().map(str::to_string));
                if let (Some(rec), Some(sub)) = (rec_fw, &s.all()[0].subscribed) {
                    raw.known
                        .insert(rec.clone(), sub.framework_id.value.clone());
                    raw.fw = Some((rec, sub.framework_id.value.clone()));
                } else {
                    raw.fw = before;
                }
                let rec_sid = c["headers"]["Mesos-Stream-Id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                ids.insert(rec_sid, s.id.clone());
                streams.insert(stream.to_string(), s);
            }
            if credentials {
                raw.auth = header("Authorization");
            }
            continue;
        }
        if name.starts_with("GET ") {
            let r = raw.http.get(&raw.url).send().await.unwrap();
            assert_eq!(r.status().as_u16(), want_status, "{name}");
            assert_eq!(r.headers()["allow"], "POST");
            assert_eq!(r.text().await.unwrap(), c["body"].as_str().unwrap());
            continue;
        }
        let body = match std::fs::read(format!("{DIR}/{sc}/call-{name}.pb")) {
            Ok(_) => raw.call(sc, name),
            Err(_) => read(sc, &format!("call-{name}.body")),
        };
        let mut send: Vec<(&str, String)> = vec![];
        for (k, v) in &headers {
            let v = v.as_str().unwrap().to_string();
            match k.as_str() {
                "Mesos-Stream-Id" => {
                    send.push(("mesos-stream-id", ids.get(&v).cloned().unwrap_or(v)))
                }
                "Content-Type" => send.push(("content-type", v)),
                "Authorization" => send.push(("authorization", v)),
                _ => {}
            }
        }
        let saved = raw.auth.take();
        if !headers.contains_key("Authorization") {
            raw.auth = None;
        }
        let (status, text) = raw.send(body, &send).await;
        raw.auth = saved;
        assert_eq!(status, want_status, "{name}: {text}");
        let mut want = c["body"].as_str().unwrap_or("").to_string();
        for (rec, ours) in &ids {
            want = want.replace(rec, ours);
        }
        if let Some((rec, ours)) = &raw.fw {
            want = want.replace(rec, ours);
        }
        assert_eq!(text.trim(), want.trim(), "{name}");
    }
}

#[tokio::test]
async fn calls_without_a_subscription_or_with_the_wrong_ids_are_answered_as_recorded() {
    let m = TestMaster::start(15.0).await;
    m.add_agent_with("127.0.0.1", one_agent_pools()).await;
    replay_calls("not-subscribed-call", &m, false).await;
}

#[tokio::test]
async fn http_basic_authentication_is_answered_as_recorded() {
    let m = TestMaster::start(15.0).await;
    m.add_agent_with("127.0.0.1", one_agent_pools()).await;
    let creds = json_of("http-auth", "credentials.json");
    let c = &creds["credentials"][0];
    m.require_auth(
        c["principal"].as_str().unwrap(),
        c["secret"].as_str().unwrap(),
    );
    assert_eq!(base64(b"dispatch:s3cret"), "ZGlzcGF0Y2g6czNjcmV0");
    replay_calls("http-auth", &m, true).await;
}

#[tokio::test]
async fn the_files_api_answers_reads_with_the_same_bytes_as_the_real_agent() {
    let sc = "files-read-bytes";
    let m = TestMaster::start(15.0).await;
    let agent = m.add_agent_with("127.0.0.1", one_agent_pools()).await;
    let mut raw = Raw::new(&m);
    let s = raw.subscribe_as(sc, "subscribe").await;
    assert_eq!(raw.launch(sc, "accept-launch", &s, &mut 0).await.0, 202);
    s.wait("finished", |e| {
        e.iter()
            .any(|e| e.update.as_ref().is_some_and(|u| u.status.state == 2))
    })
    .await;
    let fw = raw.fw.as_ref().unwrap().1.clone();
    let base = m.agent_url(&agent);
    let index = json_of(sc, "files-index.json");
    let mut compared = 0;
    for r in index.as_array().unwrap() {
        let req = r["request"].as_str().unwrap().strip_prefix("GET ").unwrap();
        let req = req.replace("<framework id>", &fw);
        let resp = raw.http.get(format!("{base}{req}")).send().await.unwrap();
        assert_eq!(
            resp.status().as_u16() as u64,
            r["status"].as_u64().unwrap(),
            "{req}"
        );
        let body = resp.bytes().await.unwrap();
        if req.starts_with("/files/browse") {
            let names = |v: &[u8]| {
                let v: Value = serde_json::from_slice(v).unwrap();
                let mut n: Vec<(String, String)> = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        let p = e["path"].as_str().unwrap();
                        (
                            p.rsplit('/').next().unwrap().to_string(),
                            e["mode"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                n.sort();
                n
            };
            assert_eq!(names(&body), names(&read(sc, "files-browse.json")), "{req}");
        } else if req.starts_with("/files/download") {
            assert_eq!(&body[..], &read(sc, "expected-stdout.bin")[..]);
        } else if let Some(f) = r["file"].as_str() {
            assert_eq!(
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(&read(sc, f)),
                "{req}"
            );
            assert_eq!(&body[..], &read(sc, f)[..], "{req}: byte for byte");
        }
        compared += 1;
    }
    assert!(compared >= 14, "{compared}");
}

#[tokio::test]
async fn offers_and_launches_on_reserved_resources_match_the_recording() {
    let sc = "reserved-resources";
    for (stream, prefix, launches) in [
        (
            "multirole",
            "multi-",
            &[
                "plain-unreserved",
                "reserved-no-allocation-info",
                "reserved-as-offered",
                "unreserved-as-offered",
                "plain-too-much",
                "reserved-too-much",
                "other-role",
            ][..],
        ),
        (
            "singlerole",
            "single-",
            &["single-plain", "single-reserved"][..],
        ),
        (
            "refinement",
            "refine-",
            &["refine-reserved-as-offered", "refine-old-format"][..],
        ),
    ] {
        let m = TestMaster::start(15.0).await;
        let pools = pools(&[
            ("dispatch", 2.0, 1024.0, None),
            ("*", 2.0, 2048.0, Some((31000, 32000))),
        ]);
        m.add_agent_with("127.0.0.1", pools).await;
        let mut raw = Raw::new(&m);
        let s = raw.subscribe_as(sc, stream).await;
        // The offer's format: per resource, role / reservations /
        // allocation_info present or not, as recorded (disk aside).
        s.wait("an offer", |e| e.iter().any(|e| e.offers.is_some()))
            .await;
        let shape = |r: &proto::mesos::Resource| {
            (
                r.name.clone(),
                r.role.clone(),
                r.reservations
                    .iter()
                    .map(|x| x.role.clone())
                    .collect::<Vec<_>>(),
                r.allocation_info.as_ref().and_then(|a| a.role.clone()),
            )
        };
        let recorded_offer =
            proto::mesos::Offer::decode(&read(sc, &format!("{stream}-offer.pb"))[..]).unwrap();
        let mut want: Vec<_> = recorded_offer
            .resources
            .iter()
            .filter(|r| r.name != "disk")
            .map(shape)
            .collect();
        let offer = s
            .all()
            .iter()
            .find_map(|e| e.offers.clone())
            .unwrap()
            .offers[0]
            .clone();
        let mut got: Vec<_> = offer.resources.iter().map(shape).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{stream}: offer resources");
        assert_eq!(
            offer.allocation_info.is_some(),
            recorded_offer.allocation_info.is_some(),
            "{stream}"
        );
        let (mut acked, mut used) = (0, 0);
        for l in launches {
            assert_eq!(
                raw.launch(sc, &format!("{prefix}accept-{l}"), &s, &mut used)
                    .await
                    .0,
                202
            );
            // Wait until the task is RUNNING or refused.
            s.wait("RUNNING or TASK_ERROR", |e| {
                e.iter().any(|e| {
                    e.update.as_ref().is_some_and(|u| {
                        u.status.task_id.value == *l && (u.status.state == 1 || u.status.state == 7)
                    })
                })
            })
            .await;
            raw.ack_all(&s, &mut acked).await;
        }
        assert_same(stream, &s.summaries(), &recorded(sc, stream));
    }
}

/// The keys of a JSON object, sorted (nested objects by their own keys).
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().take(1).map(shape).collect()),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        other => other.clone(),
    }
}

/// agent-monitor: a peer that holds ~200 MB and burns a core, read twice
/// through the agent's `/monitor/statistics`, `/containers` and the v1
/// operator API's GET_CONTAINERS, as the recorder read the real agent.
#[tokio::test]
async fn an_agents_resource_statistics_for_a_busy_task_have_the_recorded_shape_and_meaning() {
    const BURN: &str = "#!/usr/bin/env python3\nimport time\nb = bytearray(200 * 1024 * 1024)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\nt = time.time()\nwhile time.time() - t < 12:\n    pass\n";
    let m = TestMaster::start(1.0).await;
    let agent = m.add_agent(4.0, 4096.0, (31000, 32000)).await;
    let app = super::helpers::spawn_app_with(|c| {
        c.master = Some(m.addr(0));
        c.fast_timers = true;
    })
    .await;
    app.upload("burn", BURN).await;
    // cpus:1, mem:512 as `mesos-execute` asked in the recording.
    let id = app
        .submit("burn", "name: burn\npeers: 1\ncpu: 1\nmem: 0.5\n")
        .await;
    super::all_running(&app, id, 1).await;
    let task = format!("job{id}.peer0");
    let http = reqwest::Client::new();
    let base = m.agent_url(&agent);
    let get = |url: &str| {
        let req = http.get(url);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let stats = || get(&format!("{base}/monitor/statistics"));
    // As recorded: 4 s after TASK_RUNNING, then 5 s later (shorter here).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let first = stats().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = stats().await;

    let want = json_of("agent-monitor", "monitor-statistics-1.json");
    assert_eq!(shape(&first), shape(&want), "{first:#}");
    let (a, b) = (&first[0], &second[0]);
    assert_eq!(
        a["executor_id"],
        task.as_str(),
        "the executor id is the task id"
    );
    assert_eq!(a["source"], task.as_str());
    assert_eq!(a["framework_id"], m.framework_id().unwrap().as_str());
    // The limits carry the command executor's overhead, as recorded.
    for k in ["cpus_soft_limit", "mem_limit_bytes", "mem_soft_limit_bytes"] {
        assert_eq!(a["statistics"][k], want[0]["statistics"][k], "{k}");
    }
    // CPU is cumulative: cores = its growth over the timestamps' growth.
    let cpu = |v: &Value| {
        v["statistics"]["cpus_user_time_secs"].as_f64().unwrap()
            + v["statistics"]["cpus_system_time_secs"].as_f64().unwrap()
    };
    let ts = |v: &Value| v["statistics"]["timestamp"].as_f64().unwrap();
    let cores = (cpu(b) - cpu(a)) / (ts(b) - ts(a));
    assert!(
        (0.5..=1.2).contains(&cores),
        "a burning peer used {cores:.2} cores"
    );
    let rss = a["statistics"]["mem_rss_bytes"].as_u64().unwrap();
    assert!(rss >= 200 << 20, "it holds about 200 MB: {rss}");

    let c = get(&format!("{base}/containers")).await;
    assert_eq!(
        shape(&c),
        shape(&json_of("agent-monitor", "containers-1.json")),
        "{c:#}"
    );
    assert_eq!(c[0]["executor_id"], task.as_str());
    let op: Value = http
        .post(format!("{base}/api/v1"))
        .header("accept", "application/json")
        .json(&json!({"type": "GET_CONTAINERS", "get_containers": {"show_nested": true, "show_standalone": true}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        shape(&op),
        shape(&json_of("agent-monitor", "operator-get-containers-1.json")),
        "{op:#}"
    );
    app.client
        .post(app.url(&format!("/api/jobs/{id}/kill")))
        .send()
        .await
        .unwrap();
    // A task that has ended is no longer reported.
    app.wait_archived(id).await;
    assert_eq!(stats().await, json!([]));
}
