//! Schedules on a real server: runs start at their due times, each due
//! time starts one job at most, the concurrency and missed-run policies
//! hold, and a schedule pauses, resumes and goes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

/// An interval starting `in_ms` from now, every `period`.
fn every(in_ms: i64, period: &str, count: &str) -> String {
    let start = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_millis(in_ms))
        .unwrap()
        .round(jiff::Unit::Second)
        .unwrap();
    format!("R{count}/{start}/{period}")
}

pub async fn create(app: &TestApp, body: Value) -> (u16, Value) {
    app.post_json("/api/schedules", &body).await
}

/// Polls the schedule until `done` holds (30 s at most).
pub async fn wait_schedule(
    app: &TestApp,
    id: u64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let s = app.get_json(&format!("/api/schedules/{id}")).await;
        if done(&s) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "schedule {id} never showed {what}: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn jobs_of(s: &Value) -> Vec<u64> {
    s["jobs"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["job"].as_u64()).collect())
        .unwrap_or_default()
}

fn ms(t: &Value) -> i64 {
    t.as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond()
}

#[tokio::test]
async fn an_interval_of_three_runs_two_seconds_apart_starts_three_jobs_at_their_due_times() {
    let app = spawn_app().await;
    app.upload("tick", "#!/bin/sh\necho tick\n").await;
    let (status, s) = create(
        &app,
        json!({"name": "nightly", "app": "tick", "role_file": "name: t\npeers: 1\ncpu: 0.1\nmem: 0.1\n", "schedule": every(1000, "PT2S", "3")}),
    )
    .await;
    assert_eq!(status, 201, "{s}");
    let id = s["id"].as_u64().unwrap();
    let next: Vec<i64> = s["next_runs"].as_array().unwrap().iter().map(ms).collect();
    assert_eq!(next.len(), 3, "R3: three runs in all: {s:#}");
    assert!(next.windows(2).all(|w| w[1] - w[0] == 2000), "{next:?}");

    // A run is recorded with its job and the schedule's move to its next
    // time, in one write: whenever looked at, the runs made and the runs
    // to come add up to three.
    // Looked at every few milliseconds, to catch a half-written run.
    let start = Instant::now();
    let mut looks = 0;
    let s = loop {
        let s = app.get_json(&format!("/api/schedules/{id}")).await;
        looks += 1;
        let made = s["runs"].as_u64().unwrap();
        let to_come = s["next_runs"].as_array().unwrap().len() as u64;
        assert_eq!(
            made + to_come,
            3,
            "a run counted apart from its move: {s:#}"
        );
        if made == 3 {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never three runs: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(looks > 100, "looked often enough: {looks}");
    let runs = s["jobs"].as_array().unwrap();
    for r in runs {
        assert_eq!(r["outcome"], "submitted", "{r:#}");
        let job = app.job(r["job"].as_u64().unwrap()).await;
        assert_eq!(job["tag"], "nightly");
        // Started within a second of its due time (the clock looks every 200 ms).
        let late = ms(&job["submitted"]) - ms(&r["due"]);
        assert!(
            (0..1000).contains(&late),
            "submitted {late} ms after due: {r:#}"
        );
    }
    let dues: Vec<i64> = runs.iter().map(|r| ms(&r["due"])).collect();
    assert_eq!(
        dues,
        next.iter().rev().copied().collect::<Vec<_>>(),
        "newest first, the runs announced"
    );
    assert_eq!(s["next_runs"], json!([]), "the interval has ended");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        app.get_json(&format!("/api/schedules/{id}")).await["runs"],
        3
    );
    let metrics = app.get_text("/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "dispatcher_schedule_runs_total{outcome=\"started\"}"
        ),
        3.0
    );
    promtool_accepts(&metrics);
    let list = app.get_json("/api/schedules").await;
    assert_eq!(list["schedules"][0]["id"], id);
    assert_eq!(list["schedules"][0]["last"]["outcome"], "submitted");
}

#[tokio::test]
async fn concurrency_skip_queue_and_replace_each_do_what_they_say() {
    let app = spawn_app().await;
    app.upload("slow", "#!/bin/sh\nsleep 2.5\n").await;
    let role = "name: s\npeers: 1\ncpu: 0.1\nmem: 0.1\n";
    let mut ids = vec![];
    for policy in ["skip", "queue", "replace"] {
        let (status, s) = create(
            &app,
            json!({"app": "slow", "role_file": role, "schedule": every(500, "PT1S", ""), "concurrency": policy}),
        )
        .await;
        assert_eq!(status, 201, "{s}");
        ids.push(s["id"].as_u64().unwrap());
    }
    let [skip, queue, replace] = [ids[0], ids[1], ids[2]];
    // Each is paused (no run starts after) once it has shown its policy:
    // two runs for skip and queue, three for replace. Waiting on what the
    // schedule did, not on the clock: on a loaded machine a 2.5 s job can
    // take over 3 s, and a fixed pause time then cut skip to one run.
    let mut open = vec![(skip, 2), (queue, 2), (replace, 3)];
    let start = Instant::now();
    while !open.is_empty() {
        let mut still = vec![];
        for (id, runs) in open {
            let s = app.get_json(&format!("/api/schedules/{id}")).await;
            if jobs_of(&s).len() >= runs {
                app.client
                    .post(app.url(&format!("/api/schedules/{id}/pause")))
                    .send()
                    .await
                    .unwrap();
            } else {
                assert!(start.elapsed() < Duration::from_secs(30), "{s:#}");
                still.push((id, runs));
            }
        }
        open = still;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // skip: one job at a time; the due times in between are recorded as skipped.
    let s = app.get_json(&format!("/api/schedules/{skip}")).await;
    let jobs = jobs_of(&s);
    assert_eq!(jobs.len(), 2, "{s:#}");
    let skipped: Vec<&Value> = s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["job"].is_null())
        .collect();
    assert!(skipped.len() >= 2, "{s:#}");
    assert!(
        skipped[0]["outcome"]
            .as_str()
            .unwrap()
            .starts_with("skipped: job "),
        "{s:#}"
    );
    let (older, newer) = (app.job(jobs[1]).await, app.job(jobs[0]).await);
    let ended = older["ended"]
        .as_str()
        .map(|_| ms(&older["ended"]))
        .unwrap_or(i64::MAX);
    assert!(
        ms(&newer["submitted"]) >= ended,
        "no overlap: {older:#} {newer:#}"
    );

    // queue: the run due meanwhile waits and starts when the one before ends.
    let s = app.get_json(&format!("/api/schedules/{queue}")).await;
    let jobs = jobs_of(&s);
    assert_eq!(jobs.len(), 2, "{s:#}");
    let (first, second) = (app.job(jobs[1]).await, app.job(jobs[0]).await);
    assert_eq!(first["state"], "FINISHED");
    let gap = ms(&second["submitted"]) - ms(&first["ended"]);
    assert!(
        (0..1000).contains(&gap),
        "queued run starts at the end of the one before ({gap} ms)"
    );
    assert!(
        s["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["outcome"].as_str().unwrap().contains("queue holds one")),
        "{s:#}"
    );

    // replace: each run kills the one before.
    let s = app.get_json(&format!("/api/schedules/{replace}")).await;
    let jobs = jobs_of(&s);
    assert!(jobs.len() >= 3, "{s:#}");
    let replaced = app.wait_state(jobs[1], "KILLED").await;
    assert_eq!(
        replaced["reason"],
        format!("replaced by the next run of schedule {replace}")
    );
}

#[tokio::test]
async fn runs_missed_while_the_dispatcher_was_down_are_skipped_or_run_once_as_asked() {
    let app = spawn_app().await;
    app.upload("tick", "#!/bin/sh\necho tick\n").await;
    let role = "name: t\npeers: 1\ncpu: 0.1\nmem: 0.1\n";
    // Every 3 s: the stop comes after the first run ended and before the
    // next is due (with a 1 s period, a run started just before the stop
    // could still be waiting after it, and run_once then rightly skips).
    let (_, a) = create(&app, json!({"app": "tick", "role_file": role, "schedule": every(400, "PT3S", ""), "missed": "skip"})).await;
    let (_, b) = create(&app, json!({"app": "tick", "role_file": role, "schedule": every(400, "PT3S", ""), "missed": "run_once"})).await;
    let (a, b) = (a["id"].as_u64().unwrap(), b["id"].as_u64().unwrap());
    wait_schedule(&app, b, "a first run that ended", |s| {
        s["runs"].as_u64() >= Some(1)
            && ["FINISHED", "FAILED", "KILLED"].contains(&s["last"]["state"].as_str().unwrap_or(""))
    })
    .await;
    let dir = app.stop().await;
    // Down over the next due time.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let app = spawn_in(dir, |_| {}).await;
    let s = wait_schedule(&app, a, "the missed runs", |s| {
        s["jobs"].as_array().unwrap().iter().any(|r| {
            r["outcome"]
                .as_str()
                .unwrap()
                .contains("while the dispatcher was down")
        })
    })
    .await;
    let missed = s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["outcome"].as_str().unwrap().contains("down"))
        .unwrap()
        .clone();
    assert!(missed["job"].is_null(), "skip starts nothing: {missed:#}");
    assert!(
        missed["outcome"].as_str().unwrap().starts_with("skipped: "),
        "{missed:#}"
    );
    let s = wait_schedule(&app, b, "the missed run", |s| {
        s["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["outcome"].as_str().unwrap().contains("run once"))
    })
    .await;
    let once: Vec<&Value> = s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"].as_str().unwrap().contains("down"))
        .collect();
    assert_eq!(once.len(), 1, "one run for all the missed ones: {s:#}");
    assert!(once[0]["job"].is_u64());
    assert!(
        once[0]["outcome"]
            .as_str()
            .unwrap()
            .starts_with("submitted ("),
        "{s:#}"
    );
    // Then each goes on by its period.
    let before = s["runs"].as_u64().unwrap();
    wait_schedule(&app, b, "a run after the restart", |s| {
        s["runs"].as_u64() > Some(before)
    })
    .await;
}

#[tokio::test]
async fn a_schedule_pauses_resumes_and_is_deleted_and_bad_ones_are_refused() {
    let app = spawn_app().await;
    app.upload("tick", "#!/bin/sh\necho tick\n").await;
    let role = "name: t\npeers: 1\ncpu: 0.1\nmem: 0.1\n";
    let before = app.get_json("/api/jobs").await["total"].clone();
    for (body, status, says) in [
        (
            json!({"app": "tick", "role_file": role}),
            400,
            "say when it runs",
        ),
        (
            json!({"app": "tick", "role_file": role, "cron": "0 2 * *"}),
            400,
            "has 4 fields",
        ),
        (
            json!({"app": "tick", "role_file": role, "cron": "0 2 * * *", "tz": "Mars/Base"}),
            400,
            "time zone \"Mars/Base\"",
        ),
        (
            json!({"app": "tick", "role_file": role, "schedule": "R/2026-12-01T02:00:00Z/P1D", "cron": "@daily"}),
            400,
            "not both",
        ),
        (
            json!({"app": "tick", "role_file": role, "schedule": "R/2026-12-01T02:00:00Z/P1D", "tz": "UTC"}),
            400,
            "tz goes with cron",
        ),
        (
            json!({"app": "tick", "role_file": "name: t\npeers: 0\n", "cron": "@daily"}),
            400,
            "the role file has errors",
        ),
        (
            json!({"app": "nope", "role_file": role, "cron": "@daily"}),
            404,
            "there is no app \"nope\"",
        ),
        (
            json!({"app": "tick", "role_file": role, "cron": "@daily", "concurrency": "sometimes"}),
            400,
            "unknown variant `sometimes`",
        ),
        (
            json!({"app": "tick", "role_file": role, "cron": "0 0 30 2 *"}),
            400,
            "never runs",
        ),
        (
            json!({"app": "tick", "role_file": role, "schedule": "R3/2020-01-01T00:00:00Z/PT1H"}),
            400,
            "has no run left",
        ),
    ] {
        let (got, body) = create(&app, body).await;
        assert_eq!(got, status, "{says}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{says}: {body}"
        );
    }
    assert_eq!(app.get_json("/api/schedules").await["schedules"], json!([]));

    let (status, s) = create(&app, json!({"app": "tick", "uid": "latest", "role_file": role, "cron": "*/5 * * * *", "tz": "Europe/Berlin"})).await;
    assert_eq!(status, 201, "{s}");
    let id = s["id"].as_u64().unwrap();
    assert_eq!(s["next_runs"].as_array().unwrap().len(), 5);
    assert!(s["uid"].is_null(), "latest: the newest version at each run");
    let paused: Value = app
        .client
        .post(app.url(&format!("/api/schedules/{id}/pause")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["next_runs"], json!([]));
    let resumed: Value = app
        .client
        .post(app.url(&format!("/api/schedules/{id}/resume")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resumed["paused"], false);
    assert_eq!(resumed["next_runs"], s["next_runs"]);
    let r = app
        .client
        .delete(app.url(&format!("/api/schedules/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = app
        .client
        .get(app.url(&format!("/api/schedules/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .client
        .post(app.url(&format!("/api/schedules/{id}/pause")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(app.get_json("/api/jobs").await["total"], before);
}
