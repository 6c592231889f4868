//! The Mesos backend against a test master that speaks the real wire
//! protocol (`master.rs`): real dispatcher, real HTTP, real task processes
//! started by the test master's agents, real files API.

mod conformance;
mod defects;
#[path = "../api/helpers.rs"]
mod helpers;
mod master;
#[path = "../common/ports.rs"]
mod ports;
mod restart;
mod soak;
mod tls;
#[path = "../common/usage_check.rs"]
mod usage_check;
mod zookeeper;

use std::time::{Duration, Instant};

use helpers::{file, spawn_app_with, TestApp};
use master::TestMaster;
use proto::mesos::scheduler::call::Type as C;
use proto::mesos::TaskState;

/// A peer: says who it is, checks its config, sleeps `$SLEEP`, and exits
/// 3 when it is `$FAIL_PEER`.
const PEER: &str = r#"#!/bin/sh
echo "peer $DISPATCHER_PEER_INDEX of $DISPATCHER_PEER_COUNT role $DISPATCHER_ROLE on $DISPATCHER_HOST:$DISPATCHER_PORT"
grep -q '^me:' peer.yaml && echo "config ok"
i=0
while [ $i -lt ${TICKS:-0} ]; do echo "tick $i"; i=$((i+1)); sleep 0.2; done
sleep ${SLEEP:-0}
echo "stderr of $DISPATCHER_PEER_INDEX" >&2
if [ "$DISPATCHER_PEER_INDEX" = "${FAIL_PEER:-none}" ]; then exit 3; fi
"#;

async fn spawn(m: &TestMaster) -> TestApp {
    let masters = format!("{},{}", m.addr(0), m.addr(1));
    spawn_app_with(|c| {
        c.master = Some(masters);
        c.fast_timers = true;
        c.offer_hold_secs = 1;
    })
    .await
}

/// A test master with agents of these many cpus (1 GB, ports 31000-31100
/// each), a dispatcher subscribed to it, and the `peerprog` app uploaded.
async fn cluster(agents: &[f64]) -> (TestMaster, TestApp) {
    let m = TestMaster::start(1.0).await;
    for cpus in agents {
        m.add_agent(*cpus, 1024.0, (31000, 31100)).await;
    }
    let app = spawn(&m).await;
    app.upload("peerprog", PEER).await;
    (m, app)
}

/// A role file: `peers` peers of role `w`, one cpu each, sleeping `secs`.
fn sleepers(peers: u32, secs: u32) -> String {
    format!(
        "name: w\npeers: {peers}\ncpu: 1\nmem: 0.25\nenvars: [{{name: SLEEP, value: '{secs}'}}]\n"
    )
}

/// Waits until the job's `n` peers all run.
async fn all_running(app: &TestApp, id: u64, n: usize) {
    app.wait_for(id, "every peer running", |j| {
        j["peers"]
            .as_array()
            .is_some_and(|p| p.len() == n && p.iter().all(|p| p["state"] == "RUNNING"))
    })
    .await;
}

async fn eventually<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > Duration::from_secs(secs) {
            panic!("never: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn roles(env: &str) -> String {
    format!(
        "---\nname: ctl\npeers: 1\ncpu: 0.5\nmem: 0.0625\nenvars: [{env}]\n---\nname: workers\npeers: 4\ncpu: 1\nmem: 0.25\nenvars: [{env}]\n"
    )
}

#[tokio::test]
async fn a_two_role_job_over_three_agents_reaches_finished_with_its_sandboxes_archived() {
    let (m, app) = cluster(&[2.0, 2.0, 2.0]).await;
    let id = app
        .submit("peerprog", &roles("{name: SLEEP, value: '0.3'}"))
        .await;
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
    let peers = j["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 5);
    let hosts: std::collections::BTreeSet<_> =
        peers.iter().map(|p| p["host"].as_str().unwrap()).collect();
    assert!(hosts.len() >= 2, "the gang spans agents: {hosts:?}");
    assert!(peers.iter().all(|p| p["state"] == "FINISHED"));
    // One launch per task, every uuid acknowledged, no ack without one.
    m.record(|r| {
        assert_eq!(r.launches.len(), 5);
        assert!(r.launches.values().all(|n| *n == 1), "{:?}", r.launches);
        assert_eq!(r.bad_acks, 0);
    });
    assert_eq!(m.unacked(), 0);
    // Each peer's task: exactly its port and the binary by URI.
    let accepts = m.calls_of(C::Accept);
    let tasks: Vec<_> = accepts
        .iter()
        .flat_map(|c| {
            c.accept.as_ref().unwrap().operations[0]
                .launch
                .as_ref()
                .unwrap()
                .task_infos
                .clone()
        })
        .collect();
    assert_eq!(tasks.len(), 5);
    for t in &tasks {
        let uri = &t.command.as_ref().unwrap().uris[0];
        assert!(uri.value.starts_with(&app.addr) && uri.value.contains("/api/blobs/"));
        assert_eq!((uri.executable, uri.cache), (Some(true), Some(true)));
        let ports = t.resources.iter().find(|r| r.name == "ports").unwrap();
        let r = &ports.ranges.as_ref().unwrap().range[0];
        assert_eq!(r.begin, r.end);
    }
    // The archive holds every sandbox, fetched through the agents' files API.
    let entries = app.archive(id).await;
    for n in 0..5 {
        let out = String::from_utf8_lossy(file(&entries, &format!("peer-{n}/stdout"))).to_string();
        assert!(out.contains(&format!("peer {n} of 5")), "{out}");
        assert!(out.contains("config ok"), "{out}");
        assert!(
            String::from_utf8_lossy(file(&entries, &format!("peer-{n}/stderr")))
                .contains("stderr of")
        );
        let cfg: serde_json::Value =
            serde_yaml::from_slice(file(&entries, &format!("peer-{n}/peer.yaml"))).unwrap();
        let list = cfg["peers"].as_array().expect("every peer's address");
        assert_eq!(list.len(), 5, "{cfg}");
        assert_eq!(list[n]["addr"], cfg["me"], "{cfg}");
    }
    assert!(
        !entries.iter().any(|(n, _)| n.ends_with("/peerprog")),
        "the binary is left out"
    );
    assert!(
        !entries
            .iter()
            .any(|(n, _)| n.ends_with("/dispatcher-peers.yaml")),
        "the fetched peer list is left out: peer.yaml has it"
    );
    // The job's peer list is one URI every task names; each agent's
    // fetcher downloads it (and the binary) once, however many peers it runs.
    let list_uri = tasks[0].command.as_ref().unwrap().uris[1].value.clone();
    assert!(tasks
        .iter()
        .all(|t| t.command.as_ref().unwrap().uris[1].value == list_uri));
    assert!(tasks
        .iter()
        .all(|t| !t.command.as_ref().unwrap().value().contains("peers:")));
    m.record(|r| {
        let mut per_agent = std::collections::BTreeMap::<&str, usize>::new();
        for (agent, uri) in &r.fetches {
            if *uri == list_uri {
                *per_agent.entry(agent).or_default() += 1;
            }
        }
        assert_eq!(per_agent.len(), hosts.len(), "{:?}", r.fetches);
        assert!(per_agent.values().all(|n| *n == 1), "{:?}", r.fetches);
        assert_eq!(r.fetches.len(), 2 * hosts.len(), "{:?}", r.fetches);
    });
    // Who the framework said it is.
    let sub = m.calls_of(C::Subscribe)[0]
        .subscribe
        .clone()
        .unwrap()
        .framework_info;
    assert_eq!(sub.name, "dispatcher");
    assert_eq!(sub.failover_timeout, Some(604800.0));
    assert_eq!(
        sub.webui_url.as_deref(),
        Some(format!("{}/", app.addr).as_str())
    );
    assert!(sub.hostname.is_some() && !sub.user.is_empty());
    let caps: Vec<i32> = sub.capabilities.iter().filter_map(|c| c.r#type).collect();
    assert!(caps.contains(&(proto::mesos::framework_info::capability::Type::PartitionAware as i32)));
    // Nothing waits: offers are suppressed.
    eventually("offers suppressed", 10, || m.suppressed().then_some(())).await;
}

#[tokio::test]
async fn on_mesos_retention_takes_a_deleted_job_s_peer_list_and_keeps_the_binary_its_app_names() {
    let m = TestMaster::start(1.0).await;
    m.add_agent(2.0, 1024.0, (31000, 31100)).await;
    let masters = format!("{},{}", m.addr(0), m.addr(1));
    let app = spawn_app_with(|c| {
        c.master = Some(masters);
        c.fast_timers = true;
        c.offer_hold_secs = 1;
        c.keep_jobs = Some(0);
        c.retention_every_secs = 1;
    })
    .await;
    let v = app.upload("peerprog", PEER).await;
    let id = app.submit("peerprog", &sleepers(2, 0)).await;
    let list_uri = eventually("a launch", 30, || {
        m.calls_of(C::Accept).first().map(|c| {
            c.accept.as_ref().unwrap().operations[0]
                .launch
                .as_ref()
                .unwrap()
                .task_infos[0]
                .command
                .as_ref()
                .unwrap()
                .uris[1]
                .value
                .clone()
        })
    })
    .await;
    let blobs = std::fs::canonicalize(app.dir.path()).unwrap().join("blobs");
    let path = |sha: &str| blobs.join(&sha[..2]).join(sha);
    let list = path(list_uri.rsplit('/').next().unwrap());
    let binary = path(v["sha256"].as_str().unwrap());
    app.wait_gone(id).await;
    eventually("the peer list collected", 10, || {
        (!list.exists()).then_some(())
    })
    .await;
    assert!(binary.exists(), "the app's version still names it");
    m.record(|r| {
        assert!(
            r.fetches.iter().any(|(_, u)| *u == list_uri),
            "{:?}",
            r.fetches
        )
    });
}

#[tokio::test]
async fn a_gang_that_does_not_fit_waits_without_launching_then_launches_when_an_agent_joins() {
    let (m, app) = cluster(&[2.0]).await;
    let id = app
        .submit("peerprog", "name: workers\npeers: 4\ncpu: 1\nmem: 0.25\n")
        .await;
    let j = app.wait_state(id, "WAITING").await;
    assert_eq!(
        j["reason"],
        "role 'workers' needs 4 peers, offers fit 2 (1 host short of cpus (1 per peer))",
        "{j:#}"
    );
    // Held for the hold time, then declined with a filter; nothing launched.
    eventually("a DECLINE", 10, || {
        (!m.calls_of(C::Decline).is_empty()).then_some(())
    })
    .await;
    let d = &m.calls_of(C::Decline)[0];
    assert!(
        d.decline
            .as_ref()
            .unwrap()
            .filters
            .as_ref()
            .unwrap()
            .refuse_seconds
            .unwrap()
            > 0.0
    );
    assert!(m.calls_of(C::Accept).is_empty());
    let cluster = app.get_json("/api/cluster").await;
    assert_eq!(cluster["backend"], "mesos");
    assert_eq!(cluster["waiting"][0]["job"], id);
    assert_eq!(cluster["mesos"]["state"], "subscribed");
    assert_eq!(
        cluster["mesos"]["framework_id"],
        m.framework_id().unwrap().as_str()
    );
    m.add_agent(2.0, 1024.0, (31000, 31100)).await;
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
    m.record(|r| assert!(r.launches.values().all(|n| *n == 1)));
}

#[tokio::test]
async fn one_failing_peer_kills_the_rest_and_fails_the_job_with_the_reason() {
    let (m, app) = cluster(&[4.0]).await;
    let id = app
        .submit(
            "peerprog",
            "name: w\npeers: 3\ncpu: 1\nmem: 0.25\nenvars: [{name: FAIL_PEER, value: '1'}, {name: SLEEP, value: '30'}]\ncommand: 'if [ $DISPATCHER_PEER_INDEX = 1 ]; then SLEEP=0 ./peerprog; else ./peerprog; fi'\n",
        )
        .await;
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FAILED");
    assert_eq!(j["reason"], "peer 1 (role 'w') exited with code 3", "{j:#}");
    assert_eq!(j["peers"][0]["state"], "KILLED");
    assert_eq!(j["peers"][2]["state"], "KILLED");
    let kills: Vec<String> = m
        .calls_of(C::Kill)
        .iter()
        .map(|c| c.kill.as_ref().unwrap().task_id.value.clone())
        .collect();
    assert!(kills.contains(&format!("job{id}.peer0")) && kills.contains(&format!("job{id}.peer2")));
    // The master forgets tasks whose terminal update was acknowledged; no
    // task process is left.
    eventually("no task process left", 10, || {
        (m.running_processes() == 0).then_some(())
    })
    .await;
}

/// RECONCILE calls the master got that name `tasks` tasks.
fn reconciles_of(m: &TestMaster, tasks: usize) -> usize {
    m.calls_of(C::Reconcile)
        .iter()
        .filter(|c| c.reconcile.as_ref().is_some_and(|r| r.tasks.len() == tasks))
        .count()
}

#[tokio::test]
async fn a_dropped_stream_and_a_leader_change_mid_job_cause_no_duplicate_launch() {
    let (m, app) = cluster(&[2.0, 2.0]).await;
    let id = app.submit("peerprog", &sleepers(3, 6)).await;
    all_running(&app, id, 3).await;
    let fw = m.framework_id().unwrap();

    // A subscription reconciles every task it knows once SUBSCRIBED is read.
    // Each fault below waits for that reconciliation first: a SUBSCRIBE that
    // the next fault cuts off before its SUBSCRIBED never reconciles, and
    // counting on it would make this test depend on timing.
    let reconciled = |n: usize| {
        let m = &m;
        async move {
            eventually("a reconciliation of the three tasks", 10, || {
                (reconciles_of(m, 3) >= n).then_some(())
            })
            .await;
        }
    };
    let before = reconciles_of(&m, 3);
    let dropped = Instant::now();
    m.drop_stream();
    eventually("a second subscription", 10, || {
        m.record(|r| (r.subscribes.len() >= 2).then_some(()))
    })
    .await;
    println!(
        "resubscribed {} ms after the stream dropped",
        dropped.elapsed().as_millis()
    );
    reconciled(before + 1).await;

    m.fail_over();
    eventually("a subscription to the new leader", 10, || {
        m.record(|r| (r.subscribes.len() >= 3).then_some(()))
    })
    .await;
    reconciled(before + 2).await;
    m.record(|r| {
        assert!(
            r.subscribes[1..]
                .iter()
                .all(|s| s.as_deref() == Some(fw.as_str())),
            "{:?}",
            r.subscribes
        )
    });
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
    m.record(|r| {
        assert_eq!(r.launches.len(), 3);
        assert!(r.launches.values().all(|n| *n == 1), "{:?}", r.launches);
    });
}

#[tokio::test]
async fn lost_heartbeats_end_the_subscription_and_the_dispatcher_subscribes_again() {
    // 0.5 s heartbeats: a loaded machine that delays one (a starved test
    // runtime) must not look like the silence this test makes.
    let m = TestMaster::start(0.5).await;
    m.add_agent(2.0, 1024.0, (31000, 31100)).await;
    let app = spawn(&m).await;
    eventually("subscribed", 10, || m.is_subscribed().then_some(())).await;
    let before = m.record(|r| r.subscribes.len());
    m.set_heartbeats(false);
    let stopped = Instant::now();
    eventually("a new subscription", 10, || {
        m.record(|r| (r.subscribes.len() > before).then_some(()))
    })
    .await;
    let after = stopped.elapsed();
    // Three intervals of 0.5 s missed (counted from the last heartbeat,
    // up to 0.5 s before the stop), then a short backoff.
    assert!(after >= Duration::from_millis(1000), "{after:?}");
    m.set_heartbeats(true);
    let c = app.get_json("/api/cluster").await;
    assert!(
        c["mesos"]["heartbeat_interval_secs"].as_f64().unwrap() > 0.0,
        "{c:#}"
    );
}

#[tokio::test]
async fn an_unreachable_agent_fails_the_job_and_the_other_peers_are_killed() {
    let (m, app) = cluster(&[1.0, 1.0]).await;
    let a0 = "agent-S0";
    let id = app.submit("peerprog", &sleepers(2, 30)).await;
    all_running(&app, id, 2).await;
    m.remove_agent(a0);
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FAILED");
    let reason = j["reason"].as_str().unwrap();
    assert!(
        reason.contains("TASK_UNREACHABLE") && reason.contains("REASON_AGENT_REMOVED"),
        "{reason}"
    );
    let lost = j["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "LOST")
        .count();
    let killed = j["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "KILLED")
        .count();
    assert_eq!((lost, killed), (1, 1), "{j:#}");
}

#[tokio::test]
async fn on_mesos_a_lost_agent_s_job_is_placed_again_under_new_task_ids_and_its_second_attempt_finishes(
) {
    let (m, app) = cluster(&[1.0, 1.0, 1.0]).await;
    app.upload(
        "resume",
        "#!/bin/sh\necho \"attempt $DISPATCHER_ATTEMPT\"\nif [ \"$DISPATCHER_ATTEMPT\" = 1 ]; then exec sleep 30; fi\n",
    )
    .await;
    let id = app
        .submit(
            "resume",
            "name: w\npeers: 2\ncpu: 1\nmem: 0.25\nretries: 1\nretry_backoff: 1s\n",
        )
        .await;
    all_running(&app, id, 2).await;
    let first = launched_ids(&m);
    // The peer on the first agent goes TASK_UNREACHABLE (agent removed):
    // the infrastructure's failure, which `retry_on: lost` (the default) retries.
    let victim = m
        .tasks_on("agent-S0")
        .into_iter()
        .next()
        .expect("a task on agent-S0");
    m.remove_agent("agent-S0");
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
    let a = j["attempts"].as_array().unwrap();
    assert_eq!(a.len(), 2, "{j:#}");
    assert_eq!(a[0]["state"], "FAILED");
    let why = a[0]["reason"].as_str().unwrap();
    assert!(
        why.contains("TASK_UNREACHABLE") && why.contains("REASON_AGENT_REMOVED"),
        "{why}"
    );
    assert_eq!(a[1]["state"], "FINISHED");
    let all = launched_ids(&m);
    let mut second: Vec<String> = all.into_iter().filter(|t| !first.contains(t)).collect();
    second.sort();
    assert_eq!(
        second,
        [format!("job{id}.peer0.a2"), format!("job{id}.peer1.a2")],
        "a new id for each task of attempt 2 (attempt 1's were {first:?})"
    );
    assert!(first.contains(&victim));
    assert_eq!(m.unacked(), 0);
    // Both attempts are archived: attempt 1 from the surviving agent (the
    // removed one's sandbox cannot be fetched and says so), attempt 2 whole.
    let entries = app.archive(id).await;
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.iter().all(|n| n.starts_with("attempt-")), "{names:?}");
    let survivor = if victim.ends_with("peer0") { 1 } else { 0 };
    assert_eq!(
        file(&entries, &format!("attempt-1/peer-{survivor}/stdout")),
        b"attempt 1\n"
    );
    for n in 0..2 {
        assert_eq!(
            file(&entries, &format!("attempt-2/peer-{n}/stdout")),
            b"attempt 2\n"
        );
    }
}

#[tokio::test]
async fn on_mesos_a_sweep_and_a_schedule_run_their_jobs_as_on_the_local_backend() {
    let (_m, app) = cluster(&[2.0, 2.0]).await;
    let r = app
        .client
        .post(app.url("/api/sweeps"))
        .json(&serde_json::json!({"app": "peerprog", "role_file": sleepers(1, 0), "parameters": {"w.peers": [1, 2]}, "repeat": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: serde_json::Value = r.json().await.unwrap();
    let sweep = v["id"].as_u64().unwrap();
    for j in v["jobs"].as_array().unwrap() {
        app.wait_state(j.as_u64().unwrap(), "FINISHED").await;
    }
    let d = app.get_json(&format!("/api/sweeps/{sweep}")).await;
    let points = d["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert!(points.iter().all(|p| p["median_s"].is_number()), "{d:#}");

    let start = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_millis(500))
        .unwrap()
        .round(jiff::Unit::Second)
        .unwrap();
    let r = app
        .client
        .post(app.url("/api/schedules"))
        .json(&serde_json::json!({"app": "peerprog", "role_file": sleepers(1, 0), "schedule": format!("R2/{start}/PT1S")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let s: serde_json::Value = r.json().await.unwrap();
    let id = s["id"].as_u64().unwrap();
    let s = eventually_async(&app, &format!("/api/schedules/{id}"), |s| s["runs"] == 2).await;
    for r in s["jobs"].as_array().unwrap() {
        assert_eq!(r["outcome"], "submitted", "{s:#}");
        app.wait_state(r["job"].as_u64().unwrap(), "FINISHED").await;
    }
}

/// The ids of every task the master was asked to launch, in order.
fn launched_ids(m: &TestMaster) -> Vec<String> {
    m.calls_of(C::Accept)
        .iter()
        .flat_map(|c| {
            c.accept.as_ref().unwrap().operations[0]
                .launch
                .as_ref()
                .unwrap()
                .task_infos
                .clone()
        })
        .map(|t| t.task_id.value)
        .collect()
}

/// Polls a JSON route until `done` holds (30 s at most).
async fn eventually_async(
    app: &TestApp,
    path: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = app.get_json(path).await;
        if done(&v) {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never: {path} {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn duplicate_and_out_of_order_updates_change_nothing() {
    let (m, app) = cluster(&[2.0]).await;
    let id = app.submit("peerprog", &sleepers(1, 2)).await;
    app.wait_for(id, "running", |j| j["peers"][0]["state"] == "RUNNING")
        .await;
    let task = format!("job{id}.peer0");
    let events_before = app.get_json(&format!("/api/jobs/{id}")).await;
    assert!(m.duplicate_last(&task));
    m.inject_update(&task, TaskState::TaskStarting, true);
    m.inject_update(&task, TaskState::TaskStaging, false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.job(id).await["peers"][0]["state"], "RUNNING");
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#} (before: {events_before:#})");
    assert_eq!(m.record(|r| r.bad_acks), 0);
    eventually("every update acknowledged", 5, || {
        (m.unacked() == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn live_logs_stream_through_the_agents_files_api() {
    let (_m, app) = cluster(&[2.0]).await;
    let id = app
        .submit(
            "peerprog",
            "name: w\npeers: 1\ncpu: 1\nmem: 0.25\nenvars: [{name: TICKS, value: '10'}]\n",
        )
        .await;
    app.wait_for(id, "running", |j| j["peers"][0]["state"] == "RUNNING")
        .await;
    // While it runs: an SSE stream that ends when the peer does.
    let body = tokio::time::timeout(
        Duration::from_secs(20),
        app.client
            .get(app.url(&format!("/api/jobs/{id}/peers/0/logs")))
            .send()
            .await
            .unwrap()
            .text(),
    )
    .await
    .expect("the log stream ends with the peer")
    .unwrap();
    let text: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect();
    for i in 0..10 {
        assert!(text.contains(&format!("tick {i}\n")), "{text}");
    }
    assert!(body.contains("event: end"));
    // Resuming from an offset gives the rest only.
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED");
    let rest = app
        .get_text(&format!(
            "/api/jobs/{id}/peers/0/logs?offset=10&follow=false"
        ))
        .await;
    assert!(!rest.contains("peer 0 of 1"), "{rest}");
    assert!(rest.contains("tick 9"), "{rest}");
}

#[tokio::test]
async fn teardown_unregisters_the_framework_and_kills_the_running_job() {
    let (m, app) = cluster(&[2.0]).await;
    let id = app.submit("peerprog", &sleepers(2, 30)).await;
    all_running(&app, id, 2).await;
    // RUNNING is not "has printed": wait for what the archive is checked for.
    for n in 0..2 {
        let path = format!("/api/jobs/{id}/peers/{n}/logs?follow=false");
        for _ in 0..400 {
            if app
                .get_text(&path)
                .await
                .contains(&format!("peer {n} of 2"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let fw = m.framework_id().unwrap();
    let r = app
        .client
        .post(app.url("/api/framework/teardown"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["torn_down"], fw.as_str());
    let j = app.wait_state(id, "KILLED").await;
    assert_eq!(j["reason"], "the framework was torn down");
    assert_eq!(m.calls_of(C::Teardown).len(), 1);
    // A new framework takes its place, with a new id.
    eventually("a new framework", 10, || {
        m.framework_id().filter(|f| *f != fw)
    })
    .await;
    // The old framework's sandboxes stay readable: the archive and the logs
    // name the framework each task ran under.
    let j = app.wait_archived(id).await;
    let entries = app.archive(id).await;
    assert!(
        String::from_utf8_lossy(file(&entries, "peer-1/stdout")).contains("peer 1 of 2"),
        "{j:#}"
    );
    let log = app
        .get_text(&format!("/api/jobs/{id}/peers/0/logs?follow=false"))
        .await;
    assert!(log.contains("peer 0 of 2"), "{log}");
}

#[tokio::test]
async fn a_subscription_waits_out_a_master_without_a_leader() {
    let m = TestMaster::start(1.0).await;
    m.set_leader(None);
    let app = spawn(&m).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!m.is_subscribed());
    assert_eq!(
        app.get_json("/api/cluster").await["mesos"]["state"],
        "connecting"
    );
    m.set_leader(Some(1));
    eventually("subscribed through the redirect", 10, || {
        m.is_subscribed().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_rescinded_offer_is_never_accepted() {
    let (m, app) = cluster(&[1.0]).await;
    // Two peers need two agents; the first agent's offer is held...
    let id = app
        .submit("peerprog", "name: w\npeers: 2\ncpu: 1\nmem: 0.25\n")
        .await;
    app.wait_state(id, "WAITING").await;
    eventually("an offer outstanding", 10, || {
        (m.outstanding_offers() == 1).then_some(())
    })
    .await;
    // ...then rescinded (the agent is offered again later), and a second
    // agent completes the gang.
    assert_eq!(m.rescind_all(), 1);
    m.add_agent(1.0, 1024.0, (31000, 31100)).await;
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
    // No ACCEPT named an offer after it was rescinded.
    m.record(|r| {
        assert_eq!(r.invalid_accepts, 0);
    });
}

#[tokio::test]
async fn a_live_task_the_dispatcher_does_not_own_is_killed_and_implicit_reconciliation_runs_on_its_period(
) {
    let m = TestMaster::start(1.0).await;
    let masters = m.addr(0);
    let _app = spawn_app_with(|c| {
        c.master = Some(masters);
        c.fast_timers = true;
        c.reconcile_every_secs = 1;
    })
    .await;
    eventually("subscribed", 10, || m.is_subscribed().then_some(())).await;
    m.inject_update("job77.peer0", TaskState::TaskRunning, false);
    let kill = eventually("a KILL of the stranger", 10, || {
        m.calls_of(C::Kill).into_iter().next()
    })
    .await;
    assert_eq!(kill.kill.unwrap().task_id.value, "job77.peer0");
    // Periodic implicit reconciliation: RECONCILE with an empty task list.
    eventually("an implicit RECONCILE", 10, || {
        m.calls_of(C::Reconcile)
            .into_iter()
            .find(|c| c.reconcile.as_ref().unwrap().tasks.is_empty())
    })
    .await;
}

#[tokio::test]
async fn a_framework_the_master_removed_fails_its_jobs_and_registers_anew() {
    let (m, app) = cluster(&[2.0]).await;
    let id = app.submit("peerprog", &sleepers(2, 30)).await;
    all_running(&app, id, 2).await;
    let old = m.framework_id().unwrap();
    m.remove_framework();
    let j = app.wait_state(id, "FAILED").await;
    assert!(
        j["reason"]
            .as_str()
            .unwrap()
            .contains("Framework has been removed"),
        "{j:#}"
    );
    let new = eventually("a new framework id", 10, || {
        m.framework_id().filter(|f| *f != old)
    })
    .await;
    let c = app.get_json("/api/cluster").await;
    assert_eq!(c["mesos"]["framework_id"], new.as_str());
}

#[tokio::test]
async fn a_refused_subscription_is_shown_with_the_masters_message_and_fails_no_running_job() {
    // A real master refuses by policy with 200 and an ERROR event
    // (scenarios/refused-subscription); only "Framework has been removed"
    // means the framework is gone.
    let m = TestMaster::start(1.0).await;
    m.add_agent(2.0, 1024.0, (31000, 31100)).await;
    let masters = m.addr(0);
    let app = spawn_app_with(|c| {
        c.master = Some(masters);
        c.fast_timers = true;
        c.offer_hold_secs = 1;
        c.mesos_user = Some("root".into());
    })
    .await;
    app.upload("peerprog", PEER).await;
    let id = app.submit("peerprog", &sleepers(1, 3)).await;
    all_running(&app, id, 1).await;
    let fw = m.framework_id().unwrap();
    m.set_root_submissions(false);
    m.drop_stream();
    let mut seen = serde_json::Value::Null;
    for _ in 0..400 {
        seen = app.get_json("/api/cluster").await;
        if seen["mesos"]["state"] == "refused" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(seen["mesos"]["state"], "refused", "{seen:#}");
    assert!(
        seen["mesos"]["last_error"].as_str().unwrap().contains(
            "User 'root' is not allowed to run frameworks without --root_submissions set"
        ),
        "{seen:#}"
    );
    // The id is kept and the job is not failed while refused.
    assert_eq!(seen["mesos"]["framework_id"], fw.as_str());
    assert_eq!(app.job(id).await["state"], "RUNNING");
    // Retried with backoff, with the same id, until the master lets it in.
    eventually("a retry", 10, || {
        m.record(|r| (r.subscribes.len() >= 3).then_some(()))
    })
    .await;
    m.set_root_submissions(true);
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
    m.record(|r| {
        assert!(r.subscribes[1..]
            .iter()
            .all(|s| s.as_deref() == Some(fw.as_str())));
        assert_eq!(r.launches.len(), 1);
    });
}

#[tokio::test]
async fn on_mesos_the_metrics_pass_promtool_and_count_offers_calls_subscriptions_and_acknowledgements(
) {
    // Two agents for one peer: the other agent's offer is declined.
    let (m, app) = cluster(&[2.0, 2.0]).await;
    let id = app.submit("peerprog", &sleepers(1, 0)).await;
    assert_eq!(app.wait_archived(id).await["state"], "FINISHED");
    // Counted when sent; the master counts them when they arrive.
    eventually("every update acknowledged", 10, || {
        (m.unacked() == 0).then_some(())
    })
    .await;
    let text = app.get_text("/metrics").await;
    helpers::promtool_accepts(&text);
    helpers::grafana_dashboard_matches(&text);
    let s = |series: &str| helpers::sample(&text, series);
    assert_eq!(
        s("dispatcher_mesos_subscription_state{state=\"subscribed\"}"),
        1.0
    );
    assert_eq!(
        s("dispatcher_mesos_subscription_state{state=\"refused\"}"),
        0.0
    );
    assert_eq!(s("dispatcher_mesos_subscriptions_total"), 1.0);
    assert!(s("dispatcher_mesos_offers_received_total") >= 1.0);
    assert_eq!(
        s("dispatcher_mesos_calls_total{type=\"ACCEPT\"}"),
        m.calls_of(C::Accept).len() as f64
    );
    // STARTING, RUNNING and FINISHED came from the executor, with uuids.
    assert_eq!(
        s("dispatcher_mesos_calls_total{type=\"ACKNOWLEDGE\"}"),
        m.calls_of(C::Acknowledge).len() as f64
    );
    assert!(s("dispatcher_mesos_ack_delay_seconds_count") >= 3.0);
    let declined: usize = m
        .calls_of(C::Decline)
        .iter()
        .map(|c| c.decline.as_ref().map_or(0, |d| d.offer_ids.len()))
        .sum();
    assert!(declined >= 1);
    assert_eq!(s("dispatcher_mesos_offers_declined_total"), declined as f64);
    assert_eq!(s("dispatcher_jobs{state=\"FINISHED\"}"), 1.0);
}

#[tokio::test]
async fn on_mesos_a_busy_peer_s_usage_comes_from_the_agent_s_monitor_statistics() {
    let m = TestMaster::start(1.0).await;
    m.add_agent(2.0, 1024.0, (31000, 31100)).await;
    let masters = m.addr(0);
    let app = spawn_app_with(|c| {
        c.master = Some(masters);
        c.fast_timers = true;
        c.usage_every_secs = 0.5;
    })
    .await;
    app.upload("burner", usage_check::BURNER).await;
    let id = app
        .submit("burner", "name: b\npeers: 1\ncpu: 1\nmem: 0.5\n")
        .await;
    usage_check::check_burner_usage(&app, id).await;
}
