//! Retention: `--keep-jobs`, `--keep-days` and `--keep-app` delete old
//! finished jobs with their files, events and unused binaries; deleted ids
//! answer 410; the cluster view shows the data directory.

use serde_json::Value;

use crate::helpers::*;

const QUICK: &str = "#!/bin/sh\necho done\n";

async fn run_one(app: &TestApp, name: &str) -> u64 {
    let id = app.submit(name, "name: w\npeers: 1\n").await;
    app.wait_archived(id).await;
    id
}

fn events_of(dir: &std::path::Path, job: u64) -> i64 {
    let c = rusqlite::Connection::open(dir.join("dispatcher.db")).unwrap();
    c.query_row(
        "SELECT COUNT(*) FROM events WHERE job_id = ?1",
        [job as i64],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn jobs_beyond_keep_jobs_go_with_their_sandboxes_archives_and_events_and_answer_gone() {
    let app = spawn_app_with(|c| {
        c.keep_jobs = Some(2);
        c.retention_every_secs = 1;
    })
    .await;
    app.upload("quick", QUICK).await;
    app.upload("other", QUICK).await;
    let mut ids = vec![];
    for _ in 0..4 {
        ids.push(run_one(&app, "quick").await);
    }
    // Another app's job counts for its own app only.
    let other = run_one(&app, "other").await;
    let data = std::fs::canonicalize(app.dir.path()).unwrap();
    for old in &ids[..2] {
        let msg = app.wait_gone(*old).await;
        assert!(
            msg.contains("retention") && msg.contains("2 newest finished jobs"),
            "{msg}"
        );
        // Rows go first, then files: the directory follows within the sweep.
        let dir = data.join("jobs").join(old.to_string());
        for _ in 0..100 {
            if !dir.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(!dir.exists(), "{} is left", dir.display());
        assert_eq!(events_of(&data, *old), 0);
        let r = app
            .client
            .get(app.url(&format!("/api/jobs/{old}/archive")))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
        // A replay of a deleted job says why it cannot be.
        let r = app
            .client
            .post(app.url(&format!("/api/jobs/{old}/replay")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 410);
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("deleted"),
            "{body}"
        );
    }
    for kept in ids[2..].iter().chain([&other]) {
        assert!(!app.archive(*kept).await.is_empty());
        assert!(events_of(&data, *kept) >= 3);
    }
    // An id never used is still plain 404.
    let r = app
        .client
        .get(app.url("/api/jobs/999"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let list = app.get_json("/api/jobs?app=quick").await;
    assert_eq!(list["total"], 2, "{list}");
    let c = app
        .wait_cluster("the deletions", |c| c["storage"]["jobs_deleted"] == 2)
        .await;
    let s = &c["storage"];
    assert!(
        s["retention"]
            .as_str()
            .unwrap()
            .contains("the 2 newest finished jobs"),
        "{s}"
    );
    assert!(s["database_bytes"].as_u64().unwrap() > 0, "{s}");
    assert!(s["apps_bytes"].as_u64().unwrap() > 0, "{s}");
    assert!(s["total_bytes"].as_u64().unwrap() >= s["jobs_bytes"].as_u64().unwrap());
    assert!(s["free_bytes"].as_u64().unwrap() > 0, "{s}");
    // And for Prometheus.
    let text = app.get_text("/metrics").await;
    promtool_accepts(&text);
    assert_eq!(
        sample(&text, "dispatcher_retention_deleted_total{what=\"jobs\"}"),
        2.0
    );
    assert!(sample(&text, "dispatcher_data_dir_bytes{part=\"database\"}") > 0.0);
    assert!(sample(&text, "dispatcher_data_dir_free_bytes") > 0.0);
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_app_keeps_its_binary_while_a_kept_job_uses_it_and_loses_it_after() {
    // `keep` keeps every job; `gone` keeps none once finished.
    let app = spawn_app_with(|c| {
        c.keep_app = vec!["gone:jobs=0".into()];
        c.retention_every_secs = 1;
    })
    .await;
    let kept = app.upload("keep", "#!/bin/sh\necho kept\n").await;
    let gone = app.upload("gone", "#!/bin/sh\necho gone\n").await;
    let blob = |v: &Value| {
        let sha = v["sha256"].as_str().unwrap().to_string();
        std::fs::canonicalize(app.dir.path())
            .unwrap()
            .join("blobs")
            .join(&sha[..2])
            .join(&sha)
    };
    let (kept_blob, gone_blob) = (blob(&kept), blob(&gone));
    let job = app.submit("gone", "name: w\npeers: 1\n").await;
    app.wait_gone(job).await;
    let kept_job = run_one(&app, "keep").await;
    // The version still names its binary.
    assert!(gone_blob.exists());
    let r = app
        .client
        .delete(app.url("/api/apps/keep"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = app
        .client
        .delete(app.url("/api/apps/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    app.wait_cluster("the binary collected", |c| {
        c["storage"]["blobs_deleted"] == 1
    })
    .await;
    assert!(!gone_blob.exists(), "no version or job uses it");
    assert!(kept_blob.exists(), "job {kept_job} still uses it");
    // And the kept job can still run again, its app deleted or not.
    let r = app
        .client
        .post(app.url(&format!("/api/jobs/{kept_job}/replay")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    app.stop().await;
}

#[tokio::test]
async fn a_restart_with_keep_days_deletes_long_ended_jobs_and_what_a_cut_sweep_left() {
    let app = spawn_app().await;
    app.upload("quick", QUICK).await;
    let old = run_one(&app, "quick").await;
    let recent = run_one(&app, "quick").await;
    let dir = app.stop().await;
    let data = std::fs::canonicalize(dir.path()).unwrap();
    {
        let c = rusqlite::Connection::open(data.join("dispatcher.db")).unwrap();
        c.execute(
            "UPDATE jobs SET ended = '2020-01-01T00:00:00Z' WHERE id = ?1",
            [old as i64],
        )
        .unwrap();
        // A sweep stopped between a job's rows and its directory.
        c.execute(
            "INSERT INTO deleted_jobs (id, app, deleted, why) VALUES (777, 'quick', 't', 'w')",
            [],
        )
        .unwrap();
    }
    std::fs::create_dir_all(data.join("jobs/777/peer-0")).unwrap();
    let app = spawn_in(dir, |c| c.keep_days = Some(30.0)).await;
    let msg = app.wait_gone(old).await;
    assert!(msg.contains("more than 30 days ago"), "{msg}");
    app.wait_cluster("the sweep measured", |c| !c["storage"].is_null())
        .await;
    assert!(!data.join("jobs/777").exists());
    assert!(!data.join(format!("jobs/{old}")).exists());
    assert_eq!(app.job(recent).await["state"], "FINISHED");
    app.stop().await;
}
