//! Restarts: the real `dispatcher` binary, killed with SIGKILL mid-job.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;
use crate::ports::free_port;

fn start(dir: &std::path::Path, port: u16, ports: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .args([
            "-d",
            dir.to_str().unwrap(),
            "-p",
            &port.to_string(),
            "--cpus",
            "4",
            "--mem-mb",
            "4096",
            "--ports",
            ports,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dispatcher starts")
}

/// Uploads `script` as the app `name` (K3's route).
async fn upload(client: &reqwest::Client, base: &str, name: &str, script: &str) {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(script.as_bytes().to_vec()).file_name(name.to_string()),
    );
    let r = client
        .post(format!("{base}/apps"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "upload {name}: {}", r.status());
}

async fn get(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn job(client: &reqwest::Client, base: &str, id: u64) -> Value {
    client
        .get(format!("{base}/api/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_restart_marks_running_jobs_failed_stops_their_peers_and_keeps_waiting_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let ports = port_block(10);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut server = start(dir.path(), port, &ports);
    wait_up(&client, &base).await;

    let form = |name: &str, body: &str| {
        reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(body.as_bytes().to_vec()).file_name(name.to_string()),
        )
    };
    client
        .post(format!("{base}/apps"))
        .multipart(form(
            "long",
            "#!/bin/sh\nsetsid sleep 300 &\necho $! > daemon\necho $$ > pid\nexec sleep 300\n",
        ))
        .send()
        .await
        .unwrap();
    client
        .post(format!("{base}/apps"))
        .multipart(form("later", "#!/bin/sh\necho ran\n"))
        .send()
        .await
        .unwrap();
    let submit = |app: &str, roles: &str| {
        client
            .post(format!("{base}/api/jobs"))
            .json(&serde_json::json!({ "app": app, "role_file": roles }))
            .send()
    };
    let running: Value = submit("long", "name: l\npeers: 1\ncpu: 4\n")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let running = running["id"].as_u64().unwrap();
    let mut pid = 0;
    for _ in 0..200 {
        let j = job(&client, &base, running).await;
        if let Ok(p) =
            std::fs::read_to_string(dir.path().join(format!("jobs/{running}/peer-0/pid")))
        {
            if j["peers_running"] == 1 && !p.trim().is_empty() {
                pid = p.trim().parse().unwrap();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pid > 0 && alive(pid), "the peer runs");
    let waiting: Value = submit("later", "name: w\npeers: 1\ncpu: 1\n")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let waiting = waiting["id"].as_u64().unwrap();
    for _ in 0..100 {
        if job(&client, &base, waiting).await["state"] == "WAITING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    server.kill().unwrap(); // SIGKILL: no chance to clean up
    server.wait().unwrap();
    assert!(alive(pid), "the orphaned peer outlived the dispatcher");

    let mut server = start(dir.path(), port, &ports);
    wait_up(&client, &base).await;
    let j = job(&client, &base, running).await;
    assert_eq!(j["state"], "FAILED");
    assert_eq!(
        j["reason"],
        "the dispatcher restarted while this job was running"
    );
    assert_eq!(
        j["peers"][0]["state"], "LOST",
        "no peer of an ended job still shows as running"
    );
    assert_eq!(j["peers_running"], 0);
    for _ in 0..100 {
        if !alive(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(pid), "the leftover peer was stopped");
    // A daemon it started outside its process group went with it, swept
    // from the peer's cgroup; without cgroups nothing can find it.
    let daemon: i32 =
        std::fs::read_to_string(dir.path().join(format!("jobs/{running}/peer-0/daemon")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    if writable_cgroup_v2().is_some() {
        for _ in 0..100 {
            if !alive(daemon) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(daemon), "the peer's daemon was stopped");
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI gives a writable cgroup v2"
        );
        unsafe { libc_kill(daemon, 9) };
    }
    // The job that was only waiting runs now.
    let mut state = Value::Null;
    for _ in 0..200 {
        state = job(&client, &base, waiting).await["state"].clone();
        if state == "FINISHED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "FINISHED");
    // SIGTERM: a graceful stop.
    unsafe { libc_kill(server.id() as i32, 15) };
    let status = server.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[tokio::test]
async fn a_graceful_stop_closes_event_streams_and_keeps_data() {
    let app = spawn_app().await;
    app.upload("p", "#!/bin/sh\n").await;
    let stream = app.client.get(app.url("/api/events")).send().await.unwrap();
    let dir = app.stop().await;
    // The stream ended rather than holding the shutdown open.
    let body = tokio::time::timeout(Duration::from_secs(5), stream.bytes())
        .await
        .expect("stream closed");
    assert!(body.is_ok());
    let again = spawn_in(dir, |_| {}).await;
    let apps: Value = again.get_json("/api/apps").await;
    assert_eq!(apps["apps"][0]["name"], "p");
}

#[tokio::test]
async fn an_archive_a_stop_interrupted_is_built_at_the_next_start() {
    let app = spawn_app().await;
    app.upload("p", "#!/bin/sh\necho out\n").await;
    let id = app.submit("p", "name: r\npeers: 1\ncpu: 0.1\n").await;
    app.wait_archived(id).await;
    let dir = app.stop().await;
    // As if the dispatcher died after the job ended but before its archive was written.
    let data = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::remove_file(data.join(format!("jobs/{id}/archive.tar.gz"))).unwrap();
    let db = rusqlite::Connection::open(data.join("dispatcher.db")).unwrap();
    db.execute("UPDATE jobs SET archive_size = NULL", [])
        .unwrap();
    drop(db);
    let again = spawn_in(dir, |_| {}).await;
    let job = again.wait_archived(id).await;
    assert_eq!(job["state"], "FINISHED");
    let files = again.archive(id).await;
    assert_eq!(file(&files, "peer-0/stdout"), b"out\n");
}

#[tokio::test]
async fn a_local_job_a_sigkill_cut_short_is_retried_when_its_retry_on_names_lost() {
    let dir = tempfile::tempdir().unwrap();
    let ports = port_block(10);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut server = start(dir.path(), port, &ports);
    wait_up(&client, &base).await;
    let script = "#!/bin/sh\necho \"attempt $DISPATCHER_ATTEMPT\"\necho $$ > pid\nif [ \"$DISPATCHER_ATTEMPT\" = 1 ]; then exec sleep 300; fi\n";
    upload(&client, &base, "resume", script).await;
    // `retry_on` is `lost` unless told: a restart is the infrastructure's failure.
    let r: Value = client
        .post(format!("{base}/api/jobs"))
        .json(&serde_json::json!({"app": "resume", "role_file": "name: r\npeers: 1\ncpu: 1\nretries: 1\n"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = r["id"].as_u64().unwrap();
    let pid_file = dir.path().join(format!("jobs/{id}/peer-0/pid"));
    let mut pid = 0;
    for _ in 0..200 {
        if let Ok(p) = std::fs::read_to_string(&pid_file) {
            if let Ok(p) = p.trim().parse() {
                pid = p;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pid > 0 && alive(pid), "attempt 1 runs");
    server.kill().unwrap();
    server.wait().unwrap();

    let mut server = start(dir.path(), port, &ports);
    wait_up(&client, &base).await;
    let mut j = Value::Null;
    for _ in 0..300 {
        j = job(&client, &base, id).await;
        if !j["archive_size"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(j["state"], "FINISHED", "{j:#}");
    assert_eq!(j["attempt"], 2);
    let a = j["attempts"].as_array().unwrap();
    assert_eq!(a.len(), 2, "{j:#}");
    assert_eq!(
        a[0]["reason"],
        "the dispatcher restarted while this attempt ran"
    );
    assert_eq!(a[1]["state"], "FINISHED");
    assert!(!alive(pid), "attempt 1's leftover peer was stopped");
    let archive = client
        .get(format!("{base}/api/jobs/{id}/archive"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let files = untar(&archive);
    assert_eq!(file(&files, "attempt-1/peer-0/stdout"), b"attempt 1\n");
    assert_eq!(file(&files, "attempt-2/peer-0/stdout"), b"attempt 2\n");
    unsafe { libc_kill(server.id() as i32, 15) };
    server.wait().unwrap();
}

#[tokio::test]
async fn a_schedule_every_2_seconds_goes_on_after_a_sigkill_and_starts_no_due_time_twice() {
    let dir = tempfile::tempdir().unwrap();
    let ports = port_block(10);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut server = start(dir.path(), port, &ports);
    wait_up(&client, &base).await;
    upload(&client, &base, "tick", "#!/bin/sh\necho tick\n").await;
    let start_at = jiff::Timestamp::now().round(jiff::Unit::Second).unwrap();
    let s: Value = client
        .post(format!("{base}/api/schedules"))
        .json(&serde_json::json!({"app": "tick", "role_file": "name: t\npeers: 1\ncpu: 0.1\nmem: 0.1\n", "schedule": format!("R/{start_at}/PT2S")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = s["id"].as_u64().unwrap();
    let url = format!("{base}/api/schedules/{id}");
    let mut s = Value::Null;
    for _ in 0..200 {
        s = get(&client, url.clone()).await;
        if s["runs"].as_u64() >= Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(s["runs"].as_u64() >= Some(2), "{s:#}");
    server.kill().unwrap();
    server.wait().unwrap();
    let mut server = start(dir.path(), port, &ports);
    wait_up(&client, &base).await;
    let before = s["runs"].as_u64().unwrap();
    for _ in 0..200 {
        s = get(&client, url.clone()).await;
        if s["runs"].as_u64() >= Some(before + 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        s["runs"].as_u64() >= Some(before + 2),
        "runs go on after the restart: {s:#}"
    );
    unsafe { libc_kill(server.id() as i32, 15) };
    server.wait().unwrap();

    // Every job of the app is one of the schedule's runs, each due time once.
    let mut server = start(dir.path(), port, &ports);
    wait_up(&client, &base).await;
    client
        .post(format!("{base}/api/schedules/{id}/pause"))
        .send()
        .await
        .unwrap();
    let s = get(&client, url.clone()).await;
    let history = s["jobs"].as_array().unwrap();
    let mut dues: Vec<&str> = history.iter().map(|r| r["due"].as_str().unwrap()).collect();
    let n = dues.len();
    dues.sort();
    dues.dedup();
    assert_eq!(dues.len(), n, "no due time twice: {s:#}");
    let mut from_schedule: Vec<u64> = history.iter().filter_map(|r| r["job"].as_u64()).collect();
    from_schedule.sort();
    let listed = get(&client, format!("{base}/api/jobs?app=tick&limit=1000")).await;
    let mut jobs: Vec<u64> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_u64().unwrap())
        .collect();
    jobs.sort();
    assert_eq!(
        jobs, from_schedule,
        "one job per run that started, no other"
    );
    // Due times 2 s apart from the start, whichever started or was skipped.
    let start_ms = start_at.as_millisecond();
    for d in &dues {
        let t = d.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        assert_eq!((t - start_ms) % 2000, 0, "{d}");
    }
    unsafe { libc_kill(server.id() as i32, 15) };
    server.wait().unwrap();
}
