//! One test per defect of the review (`../shared/reviews/mesos-audit.md`),
//! against the test master behaving as the recordings show. Each failed
//! before its fix.

use std::time::Duration;

use proto::mesos::scheduler::call::Type as C;

use super::helpers::{file, spawn_app_with, TestApp};
use super::master::{pools, TestMaster};
use super::{all_running, eventually, sleepers, PEER};

async fn dispatcher(m: &TestMaster, tweak: impl FnOnce(&mut dispatcher::Config)) -> TestApp {
    let masters = m.addr(0);
    let app = spawn_app_with(|c| {
        c.master = Some(masters);
        c.fast_timers = true;
        c.offer_hold_secs = 1;
        tweak(c);
    })
    .await;
    app.upload("peerprog", PEER).await;
    app
}

/// Review #1 (checkpoint): with checkpointing the agent's death and return
/// are invisible and the job finishes; without it the master sends
/// TASK_LOST (REASON_AGENT_DISCONNECTED) at once (agent-restart-*).
#[tokio::test]
async fn an_agent_restart_keeps_the_job_because_the_framework_checkpoints() {
    let m = TestMaster::start(1.0).await;
    let agent = m.add_agent(2.0, 1024.0, (31000, 31100)).await;
    let app = dispatcher(&m, |_| {}).await;
    let id = app.submit("peerprog", &sleepers(1, 3)).await;
    all_running(&app, id, 1).await;
    assert!(m.framework().unwrap().checkpoint);
    m.kill_agent(&agent);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.job(id).await["state"], "RUNNING");
    m.restart_agent(&agent);
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
    m.record(|r| assert_eq!(r.launches.values().sum::<usize>(), 1));
}

#[tokio::test]
async fn without_checkpointing_an_agent_restart_loses_the_job_as_a_real_master_does() {
    let m = TestMaster::start(1.0).await;
    let agent = m.add_agent(2.0, 1024.0, (31000, 31100)).await;
    let app = dispatcher(&m, |c| c.mesos_no_checkpoint = true).await;
    let id = app.submit("peerprog", &sleepers(1, 30)).await;
    all_running(&app, id, 1).await;
    m.kill_agent(&agent);
    let j = app.wait_state(id, "FAILED").await;
    let reason = j["reason"].as_str().unwrap();
    assert!(
        reason.contains("TASK_LOST") && reason.contains("REASON_AGENT_DISCONNECTED"),
        "{reason}"
    );
    // A master-made update has no uuid: nothing was acknowledged for it.
    m.record(|r| assert_eq!(r.bad_acks, 0));
}

/// Review #3 (reservations): 2 cpus reserved for `dispatch`, 1 unreserved,
/// three one-cpu peers: placement counts both pools and each launch asks
/// each pool for no more than it offered.
#[tokio::test]
async fn a_job_on_a_reserved_role_launches_on_the_reserved_resources() {
    let m = TestMaster::start(1.0).await;
    let pools = pools(&[
        ("dispatch", 2.0, 1024.0, None),
        ("other", 4.0, 4096.0, None),
        ("*", 1.0, 1024.0, Some((31000, 31100))),
    ]);
    m.add_agent_with("host0", pools).await;
    let app = dispatcher(&m, |c| c.mesos_role = "dispatch".into()).await;
    let id = app.submit("peerprog", &sleepers(3, 0)).await;
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
    let sub = m.framework().unwrap();
    assert!(sub.multi_role && sub.role == "dispatch");
    // Two peers on the reservation, one on the unreserved cpu; nothing of
    // the other role's reservation.
    let mut pools: Vec<String> = m
        .calls_of(C::Accept)
        .iter()
        .flat_map(|c| c.accept.clone().unwrap().operations)
        .flat_map(|o| o.launch.unwrap().task_infos)
        .flat_map(|t| t.resources)
        .filter(|r| r.name == "cpus")
        .map(|r| r.role.unwrap_or_else(|| "*".into()))
        .collect();
    pools.sort();
    assert_eq!(pools, ["*", "dispatch", "dispatch"]);
}

/// Review #5 (files API bytes): a window that cuts a character and bytes
/// that are not UTF-8 neither stall nor cut the live log.
#[tokio::test]
async fn live_logs_survive_a_character_cut_at_64_kib_and_bytes_that_are_not_utf8() {
    let m = TestMaster::start(1.0).await;
    m.add_agent(2.0, 1024.0, (31000, 31100)).await;
    let app = dispatcher(&m, |_| {}).await;
    // 65535 × a, é across byte 65536, then FF FE, then a tail.
    let cmd =
        r#"head -c 65535 /dev/zero | tr '\0' a; printf '\303\251\n\377\376 tail done\n'; sleep 1"#;
    let id = app
        .submit(
            "peerprog",
            &format!(
                "name: w\npeers: 1\ncpu: 1\nmem: 0.25\ncommand: \"{}\"\n",
                cmd.replace('\\', "\\\\").replace('"', "\\\"")
            ),
        )
        .await;
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
    let body = app
        .get_text(&format!("/api/jobs/{id}/peers/0/logs?follow=false"))
        .await;
    let mut text = String::new();
    let mut last = 0;
    for d in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let v: serde_json::Value = serde_json::from_str(d).unwrap();
        if let Some(t) = v["text"].as_str() {
            text.push_str(t);
        }
        last = v["offset"].as_u64().unwrap_or(last);
    }
    assert_eq!(
        last,
        65535 + 2 + 1 + 2 + 11,
        "every byte is read: {body:.200}"
    );
    assert!(text.contains("aé\n"), "the cut character arrives whole");
    assert!(
        text.ends_with("\u{FFFD}\u{FFFD} tail done\n"),
        "{:?}",
        &text[text.len() - 40..]
    );
    // Resuming at the offset inside the character gives the character too.
    let rest = app
        .get_text(&format!(
            "/api/jobs/{id}/peers/0/logs?follow=false&offset=65535"
        ))
        .await;
    assert!(rest.contains("é"), "{rest}");
}

/// Review #6 (authentication): a master that asks for HTTP Basic says so on
/// /api/cluster instead of a silent retry; with the principal and secret
/// the job runs and its sandbox is read with the same credentials.
#[tokio::test]
async fn a_master_that_requires_authentication_is_shown_and_credentials_make_it_work() {
    let m = TestMaster::start(1.0).await;
    m.add_agent(2.0, 1024.0, (31000, 31100)).await;
    m.require_auth("dispatch", "s3cret");
    m.require_files_auth("dispatch", "s3cret");
    let app = dispatcher(&m, |_| {}).await;
    let mut c = serde_json::Value::Null;
    for _ in 0..400 {
        c = app.get_json("/api/cluster").await;
        if c["mesos"]["state"] == "refused" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(c["mesos"]["state"], "refused", "{c:#}");
    assert!(
        c["mesos"]["last_error"]
            .as_str()
            .unwrap()
            .contains("requires authentication (401"),
        "{c:#}"
    );

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let app = dispatcher(&m, |c| {
        c.mesos_principal = Some("dispatch".into());
        c.mesos_secret_file = Some(secret.clone());
    })
    .await;
    let id = app.submit("peerprog", &sleepers(1, 0)).await;
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
    assert_eq!(
        m.framework().unwrap().principal.as_deref(),
        Some("dispatch")
    );
    let entries = app.archive(id).await;
    assert!(String::from_utf8_lossy(file(&entries, "peer-0/stdout")).contains("peer 0 of 1"));
    m.record(|r| assert!(r.files_auth.iter().any(|a| a.is_some())));
}

/// Review #8 (reconnect races): a master restart breaks the stream, answers
/// 503 while recovering and reconciliation answers nothing until the agent
/// is back; the job survives and nothing is launched twice.
#[tokio::test]
async fn a_master_restart_mid_job_is_waited_out_and_the_job_finishes_without_a_relaunch() {
    let m = TestMaster::start(1.0).await;
    m.add_agent(2.0, 1024.0, (31000, 31100)).await;
    let app = dispatcher(&m, |_| {}).await;
    let id = app.submit("peerprog", &sleepers(1, 3)).await;
    all_running(&app, id, 1).await;
    let fw = m.framework_id().unwrap();
    m.restart_master(Duration::from_millis(400));
    eventually("a 503 while recovering", 10, || {
        m.record(|r| r.answers.iter().any(|(_, s)| *s == 503).then_some(()))
    })
    .await;
    eventually("subscribed again", 10, || m.is_subscribed().then_some(())).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.job(id).await["state"], "RUNNING");
    m.reregister_agents();
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
    m.record(|r| {
        assert_eq!(r.launches.values().sum::<usize>(), 1);
        assert!(r.subscribes[1..]
            .iter()
            .all(|s| s.as_deref() == Some(fw.as_str())));
    });
}

/// Review #8b: a call answered 403 "Framework is not subscribed" means the
/// master has forgotten the subscription. The dispatcher subscribes again
/// at once, without waiting for missed heartbeats (here 30 s).
#[tokio::test]
async fn a_403_on_a_call_makes_the_dispatcher_subscribe_again_at_once() {
    let m = TestMaster::start(10.0).await;
    m.add_agent(2.0, 1024.0, (31000, 31100)).await;
    let app = dispatcher(&m, |_| {}).await;
    eventually("subscribed", 20, || m.is_subscribed().then_some(())).await;
    let before = m.record(|r| r.subscribes.len());
    m.orphan_stream();
    let asked = std::time::Instant::now();
    // Submitting makes the dispatcher REVIVE: the call that gets the 403.
    let id = app.submit("peerprog", &sleepers(1, 1)).await;
    eventually("a new SUBSCRIBE", 15, || {
        (m.record(|r| r.subscribes.len()) > before).then_some(())
    })
    .await;
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "resubscribed after {took:?}"
    );
    m.record(|r| {
        assert!(
            r.answers.iter().any(|(_, status)| *status == 403),
            "a call was answered 403: {:?}",
            r.answers
        )
    });
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
}

/// Review #8c: a SUBSCRIBE the master takes and never answers times out
/// (5 s with --fast-timers, 75 s otherwise), is shown, and is tried again.
#[tokio::test]
async fn a_subscribe_that_is_never_answered_times_out_is_shown_and_is_tried_again() {
    let m = TestMaster::start(1.0).await;
    m.add_agent(2.0, 1024.0, (31000, 31100)).await;
    m.stall_subscribe(true);
    let app = dispatcher(&m, |_| {}).await;
    eventually("a second SUBSCRIBE after the first hung", 30, || {
        (m.record(|r| r.stalled_subscribes) >= 2).then_some(())
    })
    .await;
    let c = app.get_json("/api/cluster").await;
    let err = c["mesos"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("got no answer in 5 s"), "{c:#}");
    assert!(!m.is_subscribed());
    m.stall_subscribe(false);
    eventually("subscribed", 30, || m.is_subscribed().then_some(())).await;
    let id = app.submit("peerprog", &sleepers(1, 1)).await;
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
}

/// An agent with `gpus` in its pool, and one without, each with ports.
fn gpu_pools(cpus: f64, gpus: f64) -> super::master::Pools {
    let mut p = pools(&[("*", cpus, 2048.0, Some((31000, 31100)))]);
    p.get_mut("*").unwrap().gpus = gpus;
    p
}

/// The GPUs each launched task asked for, by host.
fn gpus_by_task(m: &TestMaster) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = m
        .calls_of(C::Accept)
        .iter()
        .flat_map(|c| c.accept.clone().unwrap().operations)
        .flat_map(|o| o.launch.unwrap().task_infos)
        .map(|t| {
            let g = t
                .resources
                .iter()
                .filter(|r| r.name == "gpus")
                .map(|r| r.scalar.unwrap().value)
                .sum();
            (t.agent_id.value, g)
        })
        .collect();
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

/// Review #4 (GPUs): a master filters agents that have GPUs out of the
/// offers of frameworks without GPU_RESOURCES (its default
/// `--filter_gpu_resources`). The framework opts in, so a GPU agent is
/// offered, and peers that ask for GPUs launch with them.
#[tokio::test]
async fn a_gpu_agent_is_offered_to_the_framework_and_peers_launch_with_the_gpus_they_ask_for() {
    let m = TestMaster::start(1.0).await;
    let gpu = m.add_agent_with("gpu0", gpu_pools(4.0, 2.0)).await;
    let app = dispatcher(&m, |_| {}).await;
    let id = app
        .submit(
            "peerprog",
            "name: train\npeers: 2\ncpu: 1\nmem: 0.25\ngpus: 1\n",
        )
        .await;
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
    assert!(m.framework().unwrap().gpu_resources);
    assert_eq!(gpus_by_task(&m), [(gpu.clone(), 1.0), (gpu, 1.0)]);
    // A third GPU is nowhere: the job waits and says why.
    let id = app
        .submit(
            "peerprog",
            "name: train\npeers: 3\ncpu: 1\nmem: 0.25\ngpus: 1\n",
        )
        .await;
    let j = app
        .wait_for(id, "a reason", |j| {
            j["reason"]
                .as_str()
                .is_some_and(|r| r.contains("short of gpus"))
        })
        .await;
    assert_eq!(j["state"], "WAITING", "{j:#}");
}

/// Review #4, the other half: peers that ask for no GPU go on agents
/// without GPUs while those fit, and on a GPU agent only when nothing else
/// does (without a GPU from it).
#[tokio::test]
async fn peers_that_ask_for_no_gpu_use_a_gpu_agent_only_when_nothing_else_fits() {
    let m = TestMaster::start(1.0).await;
    // The GPU agent registers first, so its offer comes first.
    let gpu = m.add_agent_with("gpu0", gpu_pools(4.0, 1.0)).await;
    let plain = m.add_agent_with("cpu0", gpu_pools(2.0, 0.0)).await;
    let app = dispatcher(&m, |_| {}).await;
    let id = app.submit("peerprog", &sleepers(2, 0)).await;
    assert_eq!(app.wait_archived(id).await["state"], "FINISHED");
    assert_eq!(
        gpus_by_task(&m),
        [(plain.clone(), 0.0), (plain.clone(), 0.0)]
    );
    let id = app.submit("peerprog", &sleepers(3, 0)).await;
    assert_eq!(app.wait_archived(id).await["state"], "FINISHED");
    // Three one-cpu peers, two cpus without GPUs: one goes to the GPU agent.
    let all = gpus_by_task(&m);
    assert!(all.iter().all(|(_, g)| *g == 0.0), "{all:?}");
    let on = |a: &str| all.iter().filter(|(x, _)| x == a).count();
    assert_eq!((on(&gpu), on(&plain)), (1, 4), "{all:?}");
}

/// Review #8a: a call sent on an earlier subscription whose refusal comes
/// back after a newer subscription is up ("The stream ID ... is not
/// valid") is stale news: it must not end the newer subscription.
#[tokio::test]
async fn a_late_refusal_of_a_call_from_an_earlier_subscription_leaves_the_current_one_alone() {
    // Long heartbeats: nothing else ends a stream during the test.
    let m = TestMaster::start(10.0).await;
    m.add_agent(2.0, 1024.0, (31000, 31100)).await;
    let app = dispatcher(&m, |_| {}).await;
    eventually("subscribed and suppressed", 20, || {
        (m.is_subscribed() && !m.calls_of(C::Suppress).is_empty()).then_some(())
    })
    .await;
    // The REVIVE a submission sends is held while the stream is replaced.
    m.hold_next(C::Revive, Duration::from_millis(1500));
    let id = app.submit("peerprog", &sleepers(1, 0)).await;
    eventually("the REVIVE held", 10, || {
        (m.record(|r| r.held_calls) == 1).then_some(())
    })
    .await;
    m.drop_stream();
    eventually("a second subscription", 10, || {
        (m.is_subscribed() && m.record(|r| r.subscribes.len()) == 2).then_some(())
    })
    .await;
    eventually("the held REVIVE refused for its old stream id", 10, || {
        m.record(|r| r.answers.iter().any(|(k, s)| k == "REVIVE" && *s == 400))
            .then_some(())
    })
    .await;
    // Had the refusal ended the current subscription, a third SUBSCRIBE
    // would follow at once (the backoff is 50 ms here).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(m.record(|r| r.subscribes.len()), 2);
    assert!(m.is_subscribed());
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
}

/// Review #8d: TEARDOWN forgets the framework id only once the master has
/// taken the call. Here the first TEARDOWN is held while its stream is
/// replaced and then refused for its old stream id: the dispatcher keeps
/// the id, sends TEARDOWN again on the new subscription, and only then
/// registers anew. (Forgetting the id at once would leave the old
/// framework and its task running at the master.)
#[tokio::test]
async fn a_teardown_that_does_not_reach_the_master_is_sent_again_and_the_id_kept_until_it_does() {
    let m = TestMaster::start(10.0).await;
    m.add_agent(2.0, 1024.0, (31000, 31100)).await;
    let app = dispatcher(&m, |_| {}).await;
    let id = app.submit("peerprog", &sleepers(1, 30)).await;
    all_running(&app, id, 1).await;
    let fw = m.framework_id().unwrap();
    m.hold_next(C::Teardown, Duration::from_millis(1500));
    let asked = {
        let (client, url) = (app.client.clone(), app.url("/api/framework/teardown"));
        tokio::spawn(async move { client.post(url).send().await.unwrap() })
    };
    eventually("the TEARDOWN held", 10, || {
        (m.record(|r| r.held_calls) == 1).then_some(())
    })
    .await;
    m.drop_stream();
    eventually(
        "the held TEARDOWN refused for its old stream id",
        10,
        || {
            m.record(|r| r.answers.iter().any(|(k, s)| k == "TEARDOWN" && *s == 400))
                .then_some(())
        },
    )
    .await;
    let r = asked.await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["torn_down"], fw.as_str());
    // The dispatcher resubscribed as the same framework and tore it down.
    let teardowns = m.calls_of(C::Teardown);
    assert_eq!(teardowns.len(), 2);
    assert!(teardowns
        .iter()
        .all(|c| c.framework_id.as_ref().unwrap().value == fw));
    m.record(|r| assert_eq!(r.subscribes[1].as_deref(), Some(fw.as_str())));
    let j = app.wait_state(id, "KILLED").await;
    assert_eq!(j["reason"], "the framework was torn down");
    eventually("a new framework", 10, || {
        m.framework_id().filter(|f| *f != fw)
    })
    .await;
}
