//! Retries on the local backend: a failed attempt's peers all stop, the
//! gang is placed again after its backoff, each attempt's sandboxes are
//! kept apart, and a kill stops it.

use serde_json::{json, Value};

use crate::helpers::*;

/// Peer 1 fails on attempt 1; peer 0 waits to be killed. Attempt 2 exits 0.
const FLAKY_ONCE: &str = "#!/bin/sh\necho \"attempt $DISPATCHER_ATTEMPT\"\nenv | grep '^DISPATCHER_ATTEMPT' > env.txt\nif [ \"$DISPATCHER_ATTEMPT\" = 1 ]; then\n  if [ \"$DISPATCHER_PEER_INDEX\" = 1 ]; then sleep 0.3; exit 3; fi\n  exec sleep 60\nfi\n";

fn names(files: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut n: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    n.sort();
    n
}

fn attempts(job: &Value) -> Vec<(u64, String, String)> {
    job["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap(),
                a["state"].as_str().unwrap().to_string(),
                a["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_job_whose_peer_fails_on_attempt_1_finishes_on_attempt_2_with_both_in_the_archive() {
    let app = spawn_app().await;
    app.upload("flaky", FLAKY_ONCE).await;
    let id = app
        .submit(
            "flaky",
            "name: w\npeers: 2\ncpu: 0.1\nretries: 2\nretry_on: failed\nretry_backoff: 1s\n",
        )
        .await;
    let job = app
        .wait_for(id, "the retry's wait", |j| {
            j["state"] == "WAITING" && j["attempt"] == 2
        })
        .await;
    assert_eq!(
        job["reason"],
        "attempt 1 failed (peer 1 (role 'w') exited with code 3); attempt 2 of 3 in 1s"
    );
    let job = app.wait_archived(id).await;
    assert_eq!(job["state"], "FINISHED", "{job:#}");
    assert_eq!(job["attempt"], 2);
    assert_eq!(
        attempts(&job),
        [
            (
                1,
                "FAILED".into(),
                "peer 1 (role 'w') exited with code 3".into()
            ),
            (2, "FINISHED".into(), String::new())
        ]
    );
    let a = job["attempts"].as_array().unwrap();
    assert!(a
        .iter()
        .all(|a| a["started"].is_string() && a["ended"].is_string()));
    assert!(
        a[1]["started"].as_str() >= a[0]["ended"].as_str(),
        "attempt 2 starts after attempt 1 ended: {a:?}"
    );
    assert!(job["peers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["state"] == "FINISHED"));

    let files = app.archive(id).await;
    let n = names(&files);
    assert!(
        n.iter()
            .all(|f| f.starts_with("attempt-1/") || f.starts_with("attempt-2/")),
        "every sandbox under its attempt: {n:?}"
    );
    assert_eq!(file(&files, "attempt-1/peer-0/stdout"), b"attempt 1\n");
    assert_eq!(file(&files, "attempt-1/peer-1/stdout"), b"attempt 1\n");
    assert_eq!(file(&files, "attempt-2/peer-1/stdout"), b"attempt 2\n");
    assert_eq!(
        file(&files, "attempt-2/peer-0/env.txt"),
        b"DISPATCHER_ATTEMPT=2\n"
    );

    let metrics = app.get_text("/metrics").await;
    assert_eq!(sample(&metrics, "dispatcher_job_retries_total"), 1.0);
    promtool_accepts(&metrics);

    // The stream tells the attempt apart, in order.
    let text = app.get_text(&format!("/api/jobs/{id}/events")).await;
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .filter(|k| *k != "peer")
        .collect();
    assert_eq!(
        kinds,
        ["job", "job", "attempt", "job", "job", "job", "archive", "end"],
        "{text}"
    );
}

#[tokio::test]
async fn retry_on_lost_by_default_leaves_a_program_that_exits_non_zero_failed() {
    let app = spawn_app().await;
    app.upload(
        "bad",
        "#!/bin/sh\necho \"attempt $DISPATCHER_ATTEMPT\"\nexit 1\n",
    )
    .await;
    let id = app
        .submit(
            "bad",
            "name: w\npeers: 1\ncpu: 0.1\nretries: 2\nretry_backoff: 1s\n",
        )
        .await;
    let job = app.wait_archived(id).await;
    assert_eq!(job["state"], "FAILED");
    assert_eq!(attempts(&job).len(), 1, "{job:#}");
    assert_eq!(
        file(&app.archive(id).await, "peer-0/stdout"),
        b"attempt 1\n"
    );

    // The submission's options override the role file's.
    let (status, body) = app
        .submit_raw(
            "bad",
            "name: w\npeers: 1\ncpu: 0.1\nretry_backoff: 1s\n",
            json!({"retries": 1, "retry_on": "failed"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_u64().unwrap();
    let job = app.wait_archived(id).await;
    assert_eq!(job["state"], "FAILED");
    assert_eq!(
        attempts(&job),
        [
            (
                1,
                "FAILED".into(),
                "peer 0 (role 'w') exited with code 1".into()
            ),
            (
                2,
                "FAILED".into(),
                "peer 0 (role 'w') exited with code 1".into()
            )
        ]
    );
    assert_eq!(job["options"]["retry_on"], "failed");
    let files = app.archive(id).await;
    assert_eq!(file(&files, "attempt-2/peer-0/stdout"), b"attempt 2\n");

    // Bad options are refused, naming what is wrong, and nothing is submitted.
    let before = app.get_json("/api/jobs").await["total"].clone();
    let (status, body) = app
        .submit_raw("bad", "name: w\npeers: 1\n", json!({"retries": 21}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("retries 21"),
        "{body}"
    );
    let (status, body) = app
        .submit_raw("bad", "name: w\npeers: 1\n", json!({"retry_on": "always"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("\"always\""),
        "{body}"
    );
    let form = reqwest::multipart::Form::new()
        .text("text", "name: w\npeers: 1\n")
        .text("retries", "many");
    let r = app
        .client
        .post(app.url("/jobs/bad"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("retries \"many\""),
        "{body}"
    );
    assert_eq!(app.get_json("/api/jobs").await["total"], before);
}

#[tokio::test]
async fn a_kill_during_the_backoff_ends_the_job_and_nothing_is_retried() {
    let app = spawn_app().await;
    app.upload(
        "bad",
        "#!/bin/sh\necho \"attempt $DISPATCHER_ATTEMPT\"\nexit 1\n",
    )
    .await;
    let id = app
        .submit(
            "bad",
            "name: w\npeers: 1\ncpu: 0.1\nretries: 3\nretry_on: failed\nretry_backoff: 2s\n",
        )
        .await;
    let job = app
        .wait_for(id, "the backoff", |j| {
            j["state"] == "WAITING" && j["attempt"] == 2
        })
        .await;
    assert!(
        job["reason"]
            .as_str()
            .unwrap()
            .ends_with("attempt 2 of 4 in 2s"),
        "{job:#}"
    );
    let r = app
        .client
        .post(app.url(&format!("/api/jobs/{id}/kill")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let job = app.wait_archived(id).await;
    assert_eq!(job["state"], "KILLED");
    // Past the backoff: still one attempt, still killed.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let job = app.job(id).await;
    assert_eq!(job["state"], "KILLED");
    assert_eq!(attempts(&job).len(), 1, "{job:#}");
    assert_eq!(job["attempts"][0]["state"], "FAILED");
    let files = app.archive(id).await;
    assert_eq!(file(&files, "attempt-1/peer-0/stdout"), b"attempt 1\n");
    assert!(
        !names(&files).iter().any(|n| n.starts_with("attempt-2/")),
        "{:?}",
        names(&files)
    );
}
