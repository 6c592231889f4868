//! Mesos framework figures, against the test master (`tests/mesos/master.rs`):
//!
//! - offers in → ACCEPT out: a 100-peer gang (one peer per agent) over 100
//!   agents. The job is submitted while offers are suppressed; the REVIVE
//!   brings all 100 offers in one OFFERS event; the time is measured at the
//!   master from sending that event to receiving the first and the last of
//!   the 100 ACCEPTs.
//! - reconnect: the master drops the subscription stream; time until the
//!   dispatcher's next SUBSCRIBE arrives and until it is subscribed again
//!   (default backoff: 0.5 s base with jitter).
//! - a big gang: 10,000 peers over 1,000 agents (10 each), offers in → the
//!   last of the 1,000 ACCEPTs (placement, 10,000 TaskInfos, the peer list
//!   stored once, the calls sent). The master keeps the tasks STAGING (no
//!   10,000 processes here); the job is then killed, and the time until it
//!   is KILLED with every task's update acknowledged is printed too.
//!
//! `cargo bench -p dispatcher --bench mesos` (5 rounds; the big gang twice);
//! `BENCH_SHORT=1` (or CI=true) runs 2 rounds, and the big gang once with
//! 2,000 peers over 200 agents.

#[path = "../tests/mesos/master.rs"]
mod master;

use std::time::{Duration, Instant};

use clap::Parser;
use dispatcher::{Application, Config};

const PEER: &str = "#!/bin/sh\necho \"peer $DISPATCHER_PEER_INDEX\"\n";

async fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "never: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A dispatcher subscribed to `m`, with the `peer` app uploaded: its data
/// directory (kept while it runs), a client and its base URL.
async fn dispatcher_on(m: &master::TestMaster) -> (tempfile::TempDir, reqwest::Client, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::parse_from(["dispatcher", "-p", "0"]);
    cfg.dir = dir.path().to_path_buf();
    cfg.master = Some(m.addr(0));
    let app = Application::build(cfg).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until(std::future::pending()));
    let client = reqwest::Client::new();
    wait("subscribed", || m.is_subscribed().then_some(())).await;
    let part = reqwest::multipart::Part::bytes(PEER.as_bytes().to_vec()).file_name("peer");
    client
        .post(format!("{base}/apps"))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    (dir, client, base)
}

/// Submits a gang once offers are suppressed, and times the master's
/// OFFERS event of `offers` offers (the REVIVE's answer) to the first and
/// the last of as many ACCEPTs: (job id, first ms, last ms).
async fn gang_round(
    m: &master::TestMaster,
    client: &reqwest::Client,
    base: &str,
    role: &str,
    offers: usize,
) -> (u64, f64, f64) {
    wait("offers suppressed", || {
        (m.suppressed() && m.outstanding_offers() == 0).then_some(())
    })
    .await;
    let submitted = Instant::now();
    let r: serde_json::Value = client
        .post(format!("{base}/api/jobs"))
        .json(&serde_json::json!({"app": "peer", "role_file": role}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = r["id"].as_u64().expect("submitted");
    let (sent, accepts) = wait("every ACCEPT", || {
        m.record(|r| {
            let (at, _) = *r
                .offer_events
                .iter()
                .rev()
                .find(|(t, n)| *t >= submitted && *n == offers)?;
            let after: Vec<Instant> = r.accepts_at.iter().copied().filter(|t| *t >= at).collect();
            (after.len() >= offers).then_some((at, after))
        })
    })
    .await;
    let ms = |t: Instant| t.duration_since(sent).as_secs_f64() * 1000.0;
    (id, ms(accepts[0]), ms(accepts[offers - 1]))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let short =
        std::env::var("BENCH_SHORT").is_ok() || std::env::var("CI").is_ok_and(|v| v == "true");
    let rounds = if short { 2 } else { 5 };
    let m = master::TestMaster::start(1.0).await;
    for _ in 0..100 {
        m.add_agent(1.0, 256.0, (31000, 31009)).await;
    }
    let (_dir, client, base) = dispatcher_on(&m).await;

    let (mut first, mut last) = (vec![], vec![]);
    for round in 0..rounds {
        let (id, a, b) = gang_round(
            &m,
            &client,
            &base,
            "name: gang\npeers: 100\npeers_per_host: 1\ncpu: 1\nmem: 0.125\n",
            100,
        )
        .await;
        println!("mesos: round {round}: offers in → first ACCEPT {a:.1} ms, last (100th) ACCEPT {b:.1} ms");
        first.push(a);
        last.push(b);
        loop {
            let j: serde_json::Value = client
                .get(format!("{base}/api/jobs/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if !j["archive_size"].is_null() {
                assert_eq!(j["state"], "FINISHED", "{j:#}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "mesos: 100-peer gang over 100 agents, offers in → ACCEPT out: first {:.1} ms, all 100 {:.1} ms (median of {rounds})",
        median(first),
        median(last)
    );

    let mut resub = vec![];
    let mut ready = vec![];
    for _ in 0..rounds {
        let before = m.record(|r| r.subscribes.len());
        let dropped = Instant::now();
        m.drop_stream();
        wait("a new SUBSCRIBE", || {
            m.record(|r| (r.subscribes.len() > before).then_some(()))
        })
        .await;
        resub.push(dropped.elapsed().as_secs_f64() * 1000.0);
        loop {
            let c: serde_json::Value = client
                .get(format!("{base}/api/cluster"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if c["mesos"]["state"] == "subscribed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        ready.push(dropped.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "mesos: reconnect after a dropped stream: SUBSCRIBE sent after {:.0} ms, subscribed after {:.0} ms (median of {rounds}; backoff 0.5 s with jitter)",
        median(resub),
        median(ready)
    );
    let (agents, gangs) = if short { (200, 1) } else { (1_000, 2) };
    big_gang(agents, gangs).await;
}

/// `agents` agents of 10 cpus and 10 ports; a gang of 10 peers an agent.
async fn big_gang(agents: usize, rounds: usize) {
    let peers = agents * 10;
    let m = master::TestMaster::start(5.0).await;
    for _ in 0..agents {
        m.add_agent(10.0, 2560.0, (31000, 31009)).await;
    }
    m.stage_only(true);
    let (_dir, client, base) = dispatcher_on(&m).await;
    let role = format!("name: gang\npeers: {peers}\npeers_per_host: 10\ncpu: 1\nmem: 0.25\n");
    let mut lasts = vec![];
    for round in 0..rounds {
        let (id, first, last) = gang_round(&m, &client, &base, &role, agents).await;
        let launched = m.record(|r| r.launches.len());
        assert!(launched >= peers * (round + 1), "{launched} tasks launched");
        let killed = Instant::now();
        client
            .post(format!("{base}/api/jobs/{id}/kill"))
            .send()
            .await
            .unwrap();
        wait("the job KILLED", || {
            (m.unacked() == 0 && m.live_tasks() == 0).then_some(())
        })
        .await;
        let kill_ms = killed.elapsed().as_secs_f64() * 1000.0;
        println!(
            "mesos: round {round}: {peers}-peer gang over {agents} agents: offers in → first ACCEPT {first:.0} ms, last ({agents}th) ACCEPT {last:.0} ms; killed and every update acknowledged in {kill_ms:.0} ms"
        );
        lasts.push(last);
        loop {
            let j: serde_json::Value = client
                .get(format!("{base}/api/jobs/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if j["state"] == "KILLED" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "mesos: {peers}-peer gang over {agents} agents, offers in → every ACCEPT sent: {:.0} ms (median of {rounds})",
        median(lasts)
    );
}
