//! Sweeps: one submission, one job per combination and repeat, every
//! combination checked first; the summary groups runs by combination.

use serde_json::{json, Value};

use crate::helpers::*;

/// Sleeps a tenth of a second per peer of the job.
const NAP: &str = "#!/bin/sh\ngrep -q '^q: ' peer.yaml || exit 9\nsleep 0.$DISPATCHER_PEER_COUNT\n";

async fn post(app: &TestApp, body: Value) -> (u16, Value) {
    app.post_json("/api/sweeps", &body).await
}

#[tokio::test]
async fn a_3_by_2_sweep_with_repeat_2_runs_12_jobs_and_sums_them_up_in_6_points() {
    let app = spawn_app().await;
    app.upload("nap", NAP).await;
    let (status, body) = post(
        &app,
        json!({
            "app": "nap",
            "role_file": "name: w\npeers: 1\ncpu: 0.1\nk3_globals: {q: none}\n",
            "parameters": {"w.peers": [1, 2, 3], "w.k3_globals.q": ["q1", "q18"]},
            "repeat": 2,
            "options": {"tag": "scaling"}
        }),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let sweep = body["id"].as_u64().unwrap();
    let jobs: Vec<u64> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_u64().unwrap())
        .collect();
    assert_eq!(jobs.len(), 12);
    for id in &jobs {
        let j = app.wait_state(*id, "FINISHED").await;
        assert_eq!(j["options"]["tag"], "scaling");
    }
    // The third job is combination 2 (peers 1, q18), first repeat.
    let third = app.job(jobs[2]).await;
    assert_eq!(third["peers_total"], 1);
    assert!(
        third["role_file"].as_str().unwrap().contains("q: \"q18\""),
        "{third:#}"
    );

    let d = app.get_json(&format!("/api/sweeps/{sweep}")).await;
    assert_eq!(d["jobs_total"], 12);
    assert_eq!(d["jobs_ended"], 12);
    let points = d["points"].as_array().unwrap();
    assert_eq!(points.len(), 6);
    for (i, p) in points.iter().enumerate() {
        let peers = [1, 1, 2, 2, 3, 3][i];
        assert_eq!(p["values"]["w.peers"], peers, "{p:#}");
        assert_eq!(p["values"]["w.k3_globals.q"], ["q1", "q18"][i % 2]);
        assert_eq!(p["jobs"].as_array().unwrap().len(), 2);
        let (med, min, max) = (
            p["median_s"].as_f64().unwrap(),
            p["min_s"].as_f64().unwrap(),
            p["max_s"].as_f64().unwrap(),
        );
        assert!(min <= med && med <= max, "{p:#}");
        // Each run sleeps peers/10 s, so its duration is at least that.
        assert!(min >= peers as f64 * 0.1, "{p:#}");
        let runs: Vec<f64> = p["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["duration_s"].as_f64().unwrap())
            .collect();
        assert!(
            (med - (runs[0] + runs[1]) / 2.0).abs() < 1e-9,
            "the median of two is their mean"
        );
    }

    let list = app.get_json("/api/sweeps").await;
    assert_eq!(list["sweeps"][0]["id"], sweep);
    assert_eq!(list["sweeps"][0]["combinations"], 6);
    assert_eq!(list["sweeps"][0]["jobs_ended"], 12);

    let csv = app.get_text(&format!("/api/sweeps/{sweep}/csv")).await;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "w.peers,w.k3_globals.q,repeat,job,state,duration_s"
    );
    assert_eq!(lines.len(), 13);
    assert!(
        lines[1].starts_with(&format!("1,q1,1,{},FINISHED,", jobs[0])),
        "{csv}"
    );
}

#[tokio::test]
async fn a_sweep_with_one_bad_combination_names_it_and_submits_nothing() {
    let app = spawn_app().await;
    app.upload("nap", NAP).await;
    let before = app.get_json("/api/jobs").await["total"].clone();
    let (status, body) = post(
        &app,
        json!({"app": "nap", "role_file": "name: w\npeers: 1\n", "parameters": {"w.peers": [2, 0]}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let e = body["error"].as_str().unwrap();
    assert!(
        e.starts_with("combination 2 of 2 (w.peers=0): the role file has errors"),
        "{e}"
    );
    assert!(e.contains("found 0"), "{e}");
    // One that can never fit this machine is refused the same way.
    let (status, body) = post(
        &app,
        json!({"app": "nap", "role_file": "name: w\npeers: 1\n", "parameters": {"w.cpu": [1, 4096]}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("combination 2 of 2 (w.cpu=4096)"),
        "{body}"
    );
    for (bad, says) in [
        (
            json!({"app": "nap", "role_file": "name: w\npeers: 1\n", "parameters": {"x.peers": [2]}}),
            "no role is named \"x\" (roles: w)",
        ),
        (
            json!({"app": "nap", "role_file": "name: w\npeers: 1\n", "parameters": {}}),
            "parameters is empty",
        ),
        (
            json!({"app": "nap", "role_file": "name: w\npeers: 1\n", "parameters": {"w.peers": [1]}, "repeat": 0}),
            "repeat 0",
        ),
        (
            json!({"app": "nap", "role_file": "name: w\npeers: 1\n", "parameters": {"w.peers": (1..=100).collect::<Vec<_>>()}, "repeat": 11}),
            "1100 jobs",
        ),
        (
            json!({"app": "ghost", "role_file": "name: w\npeers: 1\n", "parameters": {"w.peers": [1]}}),
            "there is no app \"ghost\"",
        ),
    ] {
        let (status, body) = post(&app, bad).await;
        assert!(status == 400 || status == 404, "{status} {body}");
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{says}: {body}"
        );
    }
    assert_eq!(app.get_json("/api/jobs").await["total"], before);
    assert_eq!(app.get_json("/api/sweeps").await["sweeps"], json!([]));
    let r = app
        .client
        .get(app.url("/api/sweeps/9"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn killing_a_sweep_kills_its_jobs_that_run() {
    let app = spawn_app().await;
    app.upload("long", "#!/bin/sh\nexec sleep 60\n").await;
    let (status, body) = post(
        &app,
        json!({"app": "long", "role_file": "name: w\npeers: 1\ncpu: 0.1\nmem: 0.25\n", "parameters": {"w.cpu": [0.1, 0.2]}}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let sweep = body["id"].as_u64().unwrap();
    for j in body["jobs"].as_array().unwrap() {
        app.wait_state(j.as_u64().unwrap(), "RUNNING").await;
    }
    let r = app
        .client
        .post(app.url(&format!("/api/sweeps/{sweep}/kill")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["killed"].as_array().unwrap().len(), 2);
    for j in body["jobs"].as_array().unwrap() {
        app.wait_state(j.as_u64().unwrap(), "KILLED").await;
    }
}
