//! The K3 Dispatcher README's curl commands, run with the real `curl`.

use serde_json::Value;

use crate::helpers::*;

/// Runs `curl -s <args>` (the commands use `-i`) and splits status and JSON body.
async fn curl(args: &[&str], cwd: &std::path::Path) -> (u16, Value) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let cwd = cwd.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .arg("-s")
            .args(&args)
            .current_dir(cwd)
            .output()
            .expect("curl runs")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
    )
}

#[tokio::test]
async fn the_k3_readme_curl_commands_work_unchanged() {
    let app = spawn_app().await;
    let host = app.addr.clone();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(
        w.join("prog"),
        "#!/bin/sh\necho \"peer $DISPATCHER_PEER_INDEX\"\n",
    )
    .unwrap();
    std::fs::write(
        w.join("role.yaml"),
        "name: role 1\npeers: 2\ncpu: 0.1\nk3_globals:\n  role: rows\n  master: auto\n",
    )
    .unwrap();
    std::fs::write(w.join("slow"), "#!/bin/sh\nexec sleep 120\n").unwrap();

    // Upload an app (both forms the K3 source documents).
    let (s, up) = curl(
        &[
            "-i",
            "-H",
            "Accept: application/json",
            "-F",
            "file=@prog",
            &format!("{host}/apps"),
        ],
        w,
    )
    .await;
    assert_eq!(
        (s, up["name"].as_str(), up["status"].as_str()),
        (200, Some("prog"), Some("SUCCESS")),
        "{up}"
    );
    let (s, _) = curl(
        &[
            "-i",
            "-X",
            "POST",
            "-H",
            "Accept: application/json",
            "-F",
            "file=@slow",
            "-F",
            "uid=v1",
            "-F",
            "tag=sleepy",
            &format!("{host}/apps"),
        ],
        w,
    )
    .await;
    assert_eq!(s, 200);
    let uid = up["uid"].as_str().unwrap().to_string();

    // List apps and one app's versions.
    let (s, apps) = curl(
        &[
            "-i",
            "-H",
            "Accept: application/json",
            &format!("{host}/apps"),
        ],
        w,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(apps["apps"].as_array().unwrap().len(), 2);
    let (s, one) = curl(
        &[
            "-i",
            "-H",
            "Accept: application/json",
            &format!("{host}/apps/prog"),
        ],
        w,
    )
    .await;
    assert_eq!(
        (s, one["versions"][0]["uid"].as_str()),
        (200, Some(uid.as_str()))
    );

    // Submit a job to the latest version, with a role file.
    let (s, job) = curl(
        &[
            "-i",
            "-X",
            "POST",
            "-H",
            "Accept: application/json",
            "-F",
            "file=@role.yaml",
            &format!("{host}/jobs/prog"),
        ],
        w,
    )
    .await;
    assert_eq!(
        (s, job["status"].as_str()),
        (202, Some("SUBMITTED")),
        "{job}"
    );
    let id = job["jobId"].as_u64().unwrap();
    assert!(job["time"].is_string());

    // Submit to a given version with K3's form options and inline text.
    let (s, job2) = curl(
        &[
            "-i",
            "-X",
            "POST",
            "-H",
            "Accept: application/json",
            "-F",
            "text=name: r\npeers: 1\ncpu: 0.1\n",
            "-F",
            "logging=True",
            "-F",
            "jsonlog=True",
            "-F",
            "jsonfinal=True",
            "-F",
            "user=alice",
            "-F",
            "tag=nightly",
            &format!("{host}/jobs/prog/{uid}"),
        ],
        w,
    )
    .await;
    assert_eq!(s, 202, "{job2}");
    let id2 = job2["jobId"].as_u64().unwrap();

    app.wait_archived(id).await;
    let detail = app.wait_archived(id2).await;
    assert_eq!(detail["options"]["logging"], true);
    assert_eq!(detail["user"], "alice");
    assert_eq!(detail["tag"], "nightly");

    // Job listing and status, both routes.
    let (s, jobs) = curl(
        &[
            "-i",
            "-H",
            "Accept: application/json",
            &format!("{host}/jobs"),
        ],
        w,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(jobs["LaunchJobs"].as_array().unwrap().len(), 2);
    assert_eq!(jobs["LaunchJobs"][1]["jobId"], id);
    assert_eq!(jobs["LaunchJobs"][1]["appName"], "prog");
    assert_eq!(jobs["LaunchJobs"][1]["status"], "FINISHED");
    let (s, st) = curl(
        &[
            "-i",
            "-H",
            "Accept: application/json",
            &format!("{host}/jobs/prog/{id}/status"),
        ],
        w,
    )
    .await;
    assert_eq!((s, st["status"].as_str()), (200, Some("FINISHED")));
    assert!(st["roles"].as_str().unwrap().contains("role 1"));
    assert!(
        st["sandbox"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "archive.tar.gz"),
        "{st}"
    );
    let (s, st) = curl(
        &[
            "-i",
            "-H",
            "Accept: application/json",
            &format!("{host}/job/{id}"),
        ],
        w,
    )
    .await;
    assert_eq!((s, st["jobId"].as_u64()), (200, Some(id)));
    let (s, per_app) = curl(
        &[
            "-i",
            "-H",
            "Accept: application/json",
            &format!("{host}/jobs/prog"),
        ],
        w,
    )
    .await;
    assert_eq!(
        (s, per_app["jobs"].as_array().map(|a| a.len())),
        (200, Some(2))
    );

    // Download the archive.
    let out = w.join("job.tar.gz");
    let (s, _) = curl(
        &[
            "-i",
            "-o",
            "/dev/null",
            "-w",
            "HTTP/1.1 %{http_code} x\r\n\r\n",
            &format!("{host}/jobs/prog/{id}/archive"),
        ],
        w,
    )
    .await;
    assert_eq!(s, 200);
    let (o, url) = (out.clone(), format!("{host}/job/{id}/archive"));
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-s", "-o"])
            .arg(o)
            .arg(url)
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(status.success());
    let entries = untar(&std::fs::read(&out).unwrap());
    assert_eq!(file(&entries, "peer-1/stdout"), b"peer 1\n");

    // Kill, by both routes.
    let (s, slow) = curl(
        &[
            "-i",
            "-X",
            "POST",
            "-H",
            "Accept: application/json",
            "-F",
            "file=@role.yaml",
            &format!("{host}/jobs/slow/v1"),
        ],
        w,
    )
    .await;
    assert_eq!(s, 202);
    let slow = slow["jobId"].as_u64().unwrap();
    app.wait_for(slow, "running", |j| j["peers_running"] == 2)
        .await;
    let (s, k) = curl(
        &[
            "-i",
            "-H",
            "Accept: application/json",
            &format!("{host}/jobs/slow/{slow}/kill"),
        ],
        w,
    )
    .await;
    assert_eq!(s, 200, "{k}");
    assert_eq!(
        app.wait_state(slow, "KILLED").await["reason"],
        "killed by request"
    );
    let (s, _) = curl(
        &[
            "-i",
            "-H",
            "Accept: application/json",
            &format!("{host}/job/{slow}/kill"),
        ],
        w,
    )
    .await;
    assert_eq!(s, 200);

    // Replay, by both routes.
    let (s, r) = curl(
        &[
            "-i",
            "-X",
            "POST",
            "-H",
            "Accept: application/json",
            &format!("{host}/jobs/prog/{id}/replay"),
        ],
        w,
    )
    .await;
    assert_eq!((s, r["status"].as_str()), (202, Some("SUBMITTED")), "{r}");
    let (s, r2) = curl(
        &[
            "-i",
            "-H",
            "Accept: application/json",
            &format!("{host}/job/{id}/replay"),
        ],
        w,
    )
    .await;
    assert_eq!(s, 202);
    let replayed = app.wait_archived(r2["jobId"].as_u64().unwrap()).await;
    assert_eq!(replayed["tag"], "REPLAY: 1");

    // Delete an app.
    let (s, d) = curl(
        &[
            "-i",
            "-X",
            "POST",
            "-H",
            "Accept: application/json",
            &format!("{host}/delete/app/slow"),
        ],
        w,
    )
    .await;
    assert_eq!((s, d["status"].as_str()), (200, Some("DELETED")));
    let (s, _) = curl(
        &[
            "-i",
            "-H",
            "Accept: application/json",
            &format!("{host}/apps/slow"),
        ],
        w,
    )
    .await;
    assert_eq!(s, 404);

    // Errors are JSON with a message.
    let (s, e) = curl(
        &[
            "-i",
            "-H",
            "Accept: application/json",
            &format!("{host}/job/999"),
        ],
        w,
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(e["error"], "Job ID, 999, does not exist");
}
