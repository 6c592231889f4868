//! A full disk: the data directory on a small tmpfs this test mounts, filled
//! to the last byte. Uploads and submissions get a clear 507 (or the job
//! fails with the reason), nothing half-written is kept, and the server
//! keeps serving; once space is freed, everything works again.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::helpers::*;

struct Mount(tempfile::TempDir);

impl Mount {
    fn tmpfs(size: &str) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let mount = |sudo: bool| {
            let mut cmd = if sudo {
                let mut c = Command::new("sudo");
                c.args(["-n", "mount"]);
                c
            } else {
                Command::new("mount")
            };
            cmd.args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=1777"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
        };
        // As root, or through passwordless sudo (as ./dev uses for apt-get).
        let out = mount(false).expect("mount runs");
        let out = if out.status.success() {
            out
        } else {
            mount(true).unwrap_or(out)
        };
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs: it needs root or passwordless sudo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(dir)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("sudo")
                .args(["-n", "umount", "-l"])
                .arg(self.0.path())
                .status();
        }
    }
}

fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 << 10];
    while f.write_all(&block).is_ok() {}
    // Fill the last partial block too.
    while f.write_all(&[0u8]).is_ok() {}
    let _ = f.sync_all();
    path
}

/// A dispatcher on a 24 MiB tmpfs with the app `prog` (`script`), then
/// the tmpfs filled: the mount (keep it while the app runs), the app, and
/// the file that fills it.
async fn on_a_full_disk(script: &str) -> (Mount, TestApp, std::path::PathBuf) {
    let mount = Mount::tmpfs("24m");
    let data = mount.0.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let dir = tempfile::Builder::new().tempdir_in(&data).unwrap();
    let app = spawn_in(dir, |_| {}).await;
    app.upload("prog", script).await;
    let filler = fill(mount.0.path());
    (mount, app, filler)
}

#[tokio::test]
async fn a_full_data_directory_gets_a_clear_507_and_the_server_keeps_serving() {
    let (_mount, app, filler) = on_a_full_disk("#!/bin/sh\necho hi > out.txt\n").await;

    // An upload when nothing more fits.
    let part = reqwest::multipart::Part::bytes(vec![7u8; 1 << 20]).file_name("big");
    let r = app
        .client
        .post(app.url("/api/apps"))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);
    let b: Value = r.json().await.unwrap();
    assert!(b["error"].as_str().unwrap().contains("full"), "{b}");
    let tmp: Vec<_> = std::fs::read_dir(app.dir.path().join("tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "the partial upload was removed: {tmp:?}");
    let apps = app.get_json("/api/apps").await;
    assert_eq!(apps["apps"].as_array().unwrap().len(), 1, "{apps}");

    // A job start: refused with 507, or recorded and FAILED with the reason.
    let (status, body) = app
        .submit_raw(
            "prog",
            "name: a\npeers: 1\ncpu: 0.1\n",
            serde_json::json!({}),
        )
        .await;
    eprintln!("submission on a full disk: {status} {body}");
    match status {
        507 => assert!(body["error"].as_str().unwrap().contains("full"), "{body}"),
        202 => {
            let id = body["id"].as_u64().unwrap();
            let j = app
                .wait_for(id, "an end", |j| {
                    j["state"] == "FAILED" || j["state"] == "FINISHED"
                })
                .await;
            assert_eq!(j["state"], "FAILED", "{j}");
            assert!(j.to_string().contains("space"), "the reason says why: {j}");
        }
        other => panic!("submission on a full disk answered {other}: {body}"),
    }
    let r = app.client.get(app.url("/api/health")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the server keeps serving");
    assert_eq!(
        app.client
            .get(app.url("/api/jobs"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Space again: everything works.
    std::fs::remove_file(filler).unwrap();
    let id = app.submit("prog", "name: a\npeers: 1\ncpu: 0.1\n").await;
    let j = app.wait_state(id, "FINISHED").await;
    assert_eq!(j["state"], "FINISHED");
    app.upload("prog2", "#!/bin/sh\n").await;
    app.stop().await;
}

/// A sweep is recorded whole or not at all: its 1,000 jobs take more room
/// than is left, so the transaction that holds the sweep and every job
/// fails part-way, and neither the sweep nor any of its jobs is kept.
#[tokio::test]
async fn a_sweep_that_does_not_fit_on_the_disk_records_none_of_its_jobs() {
    let (_mount, app, filler) = on_a_full_disk("#!/bin/sh\n").await;
    // Room for some of the jobs (each role file is about 4 KB), not all.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - (512 << 10)).unwrap();
    drop(f);

    let pad = "x".repeat(4000);
    let role_file = format!("name: w\npeers: 1\ncpu: 0.1\nk3_globals:\n  pad: {pad}\n  q: a\n");
    let values: Vec<String> = (0..100).map(|i| format!("q{i}")).collect();
    let body = serde_json::json!({"app": "prog", "role_file": role_file,
        "parameters": {"w.k3_globals.q": values}, "repeat": 10});
    let (status, answer) = app.post_json("/api/sweeps", &body).await;
    assert_eq!(status, 507, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("full"),
        "{answer}"
    );

    let sweeps = app.get_json("/api/sweeps").await;
    assert_eq!(
        sweeps["sweeps"],
        serde_json::json!([]),
        "no sweep was kept: {sweeps}"
    );
    let jobs = app.get_json("/api/jobs").await;
    assert_eq!(jobs["total"], 0, "no job of it was kept: {jobs}");

    // Space again: a sweep goes through.
    std::fs::remove_file(filler).unwrap();
    let small = serde_json::json!({"app": "prog", "role_file": "name: w\npeers: 1\ncpu: 0.1\n",
        "parameters": {"w.peers": [1]}, "repeat": 2});
    let (status, answer) = app.post_json("/api/sweeps", &small).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["jobs"].as_array().unwrap().len(), 2, "{answer}");
    app.stop().await;
}
