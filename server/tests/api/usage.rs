//! Resource usage of a real busy peer on the local backend: one that holds
//! 150 MB and burns a core shows about that, on the usage route, as live
//! `usage` events, in the peers' summary and as `usage.csv` in the archive.

use crate::helpers::*;
use crate::usage_check::{check_burner_usage, BURNER};

#[tokio::test]
async fn a_busy_peer_s_cpu_and_memory_are_sampled_served_streamed_and_archived() {
    let app = spawn_app_with(|c| c.usage_every_secs = 0.5).await;
    app.upload("burner", BURNER).await;
    let id = app.submit("burner", "name: b\npeers: 1\ncpu: 1\n").await;
    check_burner_usage(&app, id).await;
}

/// Starts a daemon that leaves the peer's process group (`setsid`), writes
/// its pid and burns a core; the peer itself only sleeps, then exits 0.
const ESCAPER: &str =
    "#!/bin/sh\nsetsid sh -c 'echo $$ > daemon.pid; while :; do :; done' &\nsleep 3\n";

#[tokio::test]
async fn a_daemon_that_leaves_the_peers_process_group_is_sampled_and_stopped_with_the_peer() {
    let Some(own) = writable_cgroup_v2() else {
        // CI's machines have one; anywhere else say why nothing was shown.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: no writable cgroup v2 here"
        );
        eprintln!("not run: this machine gives no writable cgroup v2");
        return;
    };
    let app = spawn_app_with(|c| c.usage_every_secs = 0.5).await;
    app.upload("escaper", ESCAPER).await;
    let id = app.submit("escaper", "name: e\npeers: 1\ncpu: 1\n").await;
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
    let entries = app.archive(id).await;
    let pid: i32 = String::from_utf8_lossy(crate::helpers::file(&entries, "peer-0/daemon.pid"))
        .trim()
        .parse()
        .unwrap();
    // The daemon's core is the peer's: a process group would have seen a
    // sleeping shell and nothing else.
    let samples = app.get_json(&format!("/api/jobs/{id}/peers/0/usage")).await;
    let peak = samples
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["cpu"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(peak >= 0.5, "the daemon's core was not counted: {samples}");
    // And it ended with the peer instead of burning on unwatched.
    for _ in 0..50 {
        if !crate::helpers::alive(pid) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let left = crate::helpers::alive(pid);
    if left {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(!left, "daemon {pid} outlived its peer");
    // Its cgroup is gone too.
    let cg = own
        .join(dispatcher::cgroup::base_name(app.dir.path()))
        .join(format!("job{id}-peer0"));
    // Removed once empty, off the runner's task (up to 5 s after the peer).
    for _ in 0..60 {
        if !cg.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!cg.exists(), "{} is left", cg.display());
}
