use serde_json::{json, Value};

use crate::helpers::*;

/// Records what a peer received, then exits 0.
const RECORDER: &str = "#!/bin/sh\nenv | grep -E '^(DISPATCHER_|GREETING)' | sort > env.txt\necho \"peer $DISPATCHER_PEER_INDEX up\"\n";

#[tokio::test]
async fn a_four_peer_job_over_two_roles_finishes_with_every_peer_config_right() {
    let app = spawn_app().await;
    let data = tempfile::tempdir().unwrap();
    for f in ["a", "b", "c", "d", "e", "f"] {
        std::fs::write(data.path().join(f), f).unwrap();
    }
    let d = data.path().display();
    app.upload("recorder", RECORDER).await;
    let roles = format!(
        "name: leader\npeers: 1\ncpu: 0.5\nk3_globals: {{role: leader, master: auto}}\n---\n\
         name: workers\npeers: 3\ncpu: 0.5\nk3_globals: {{role: worker, master: auto}}\npeer_globals:\n  - {{shard: 7}}\n\
         envars:\n  - {{name: GREETING, value: hi there}}\n\
         k3_data:\n  - {{var: spread, path: {d}, policy: global}}\n  - {{var: every, path: {d}, policy: replicate}}\n  - {{var: mine, path: {d}/a, policy: pinned}}\n"
    );
    let id = app.submit("recorder", &roles).await;
    let job = app.wait_archived(id).await;
    assert_eq!(job["state"], "FINISHED", "{job:#}");
    let peers = job["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 4);
    assert!(peers
        .iter()
        .all(|p| p["state"] == "FINISHED" && p["exit_code"] == 0));

    let files = app.archive(id).await;
    let cfgs: Vec<Value> = (0..4)
        .map(|i| serde_yaml::from_slice(file(&files, &format!("peer-{i}/peer.yaml"))).unwrap())
        .collect();
    let ports: Vec<u64> = cfgs.iter().map(|c| c["me"][1].as_u64().unwrap()).collect();
    let mut distinct = ports.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "ports are distinct: {ports:?}");
    for (i, c) in cfgs.iter().enumerate() {
        assert_eq!(c["me"][0], "127.0.0.1");
        assert_eq!(c["peers"].as_array().unwrap().len(), 4);
        assert_eq!(
            c["peers"][i]["addr"], c["me"],
            "peer {i} finds itself in `peers`"
        );
        assert_eq!(
            c["master"], cfgs[0]["me"],
            "`auto` is the first peer's address"
        );
    }
    assert_eq!(cfgs[0]["role"], "leader");
    assert_eq!(cfgs[1]["role"], "worker");
    assert_eq!(
        cfgs[1]["shard"], 7,
        "the first worker consumed peer_globals[0]"
    );
    assert!(cfgs[2].get("shard").is_none());
    // global: the 6 files spread over the 3 workers, each once.
    let mut spread: Vec<String> = cfgs[1..]
        .iter()
        .flat_map(|c| {
            c["spread"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["path"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(cfgs[1]["spread"].as_array().unwrap().len(), 2);
    spread.sort();
    assert_eq!(
        spread,
        ["a", "b", "c", "d", "e", "f"].map(|f| format!("{d}/{f}"))
    );
    // replicate: every worker gets all; pinned: the one local file goes to one peer.
    assert!(cfgs[1..]
        .iter()
        .all(|c| c["every"].as_array().unwrap().len() == 6));
    let pinned: usize = cfgs[1..]
        .iter()
        .map(|c| c["mine"].as_array().unwrap().len())
        .sum();
    assert_eq!(pinned, 1);

    let env = String::from_utf8(file(&files, "peer-2/env.txt").to_vec()).unwrap();
    assert!(env.contains(&format!("DISPATCHER_JOB_ID={id}\n")), "{env}");
    assert!(env.contains("DISPATCHER_PEER_INDEX=2\n"));
    assert!(env.contains("DISPATCHER_PEER_COUNT=4\n"));
    assert!(env.contains("DISPATCHER_ROLE=workers\n"));
    assert!(env.contains(&format!("DISPATCHER_PORT={}\n", ports[2])));
    assert!(env.contains(&format!("DISPATCHER_FIRST_PEER=127.0.0.1:{}\n", ports[0])));
    assert!(env.contains("GREETING=hi there\n"));
    assert_eq!(file(&files, "peer-3/stdout"), b"peer 3 up\n");
}

#[tokio::test]
async fn a_failing_peer_fails_the_job_and_kills_the_rest() {
    let app = spawn_app().await;
    app.upload("flaky", "#!/bin/sh\necho $$ > pid\nif [ \"$DISPATCHER_PEER_INDEX\" = 1 ]; then sleep 0.5; exit 3; fi\nexec sleep 120\n").await;
    let id = app.submit("flaky", "name: w\npeers: 3\ncpu: 0.1\n").await;
    let job = app.wait_for(id, "an end", |j| j["state"] == "FAILED").await;
    assert_eq!(job["reason"], "peer 1 (role 'w') exited with code 3");
    let job = app
        .wait_for(id, "all peers ended", |j| {
            j["peers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["ended"].is_string())
        })
        .await;
    let states: Vec<&str> = job["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["KILLED", "FAILED", "KILLED"]);
    assert_eq!(job["peers"][1]["exit_code"], 3);
    for peer in [0, 2] {
        let pid: i32 = std::fs::read_to_string(app.sandbox(id, peer).join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(!alive(pid), "peer {peer}'s process {pid} was stopped");
    }
}

#[tokio::test]
async fn killing_a_running_job_stops_every_peer() {
    let app = spawn_app().await;
    app.upload("sleeper", "#!/bin/sh\necho $$ > pid\nsleep 120 &\nwait\n")
        .await;
    let id = app.submit("sleeper", "name: s\npeers: 2\ncpu: 0.1\n").await;
    app.wait_for(id, "running peers", |j| j["peers_running"] == 2)
        .await;
    let r = app
        .client
        .post(app.url(&format!("/api/jobs/{id}/kill")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let job = app.wait_state(id, "KILLED").await;
    assert_eq!(job["reason"], "killed by request");
    for peer in 0..2 {
        let pid: i32 = std::fs::read_to_string(app.sandbox(id, peer).join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            !alive(pid),
            "peer {peer} ({pid}) is gone, with its children"
        );
    }
    // Killing an ended job changes nothing.
    let r: Value = app
        .client
        .post(app.url(&format!("/api/jobs/{id}/kill")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["job"]["state"], "KILLED");
}

#[tokio::test]
async fn the_time_limit_fails_a_job_that_runs_too_long() {
    let app = spawn_app().await;
    app.upload("slow", "#!/bin/sh\nexec sleep 120\n").await;
    let id = app
        .submit("slow", "name: s\npeers: 1\ncpu: 0.1\ntime_limit: 1s\n")
        .await;
    let job = app.wait_for(id, "an end", |j| j["state"] == "FAILED").await;
    assert_eq!(job["reason"], "time limit of 1s exceeded");
    // The submission's option overrides the role file.
    let (status, body) = app
        .submit_raw(
            "slow",
            "name: s\npeers: 1\ncpu: 0.1\ntime_limit: 1h\n",
            json!({ "time_limit": 1 }),
        )
        .await;
    assert_eq!(status, 202);
    let job = app
        .wait_for(body["id"].as_u64().unwrap(), "an end", |j| {
            j["state"] == "FAILED"
        })
        .await;
    assert_eq!(job["reason"], "time limit of 1s exceeded");
}

#[tokio::test]
async fn replay_runs_the_same_version_and_role_file_again() {
    let app = spawn_app().await;
    app.upload("recorder", RECORDER).await;
    let id = app
        .submit("recorder", "name: r\npeers: 2\ncpu: 0.1\n")
        .await;
    let first = app.wait_archived(id).await;
    app.upload("recorder", "#!/bin/sh\nexit 9\n").await; // a newer version must not be used
    let r = app
        .client
        .post(app.url(&format!("/api/jobs/{id}/replay")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    let again = body["id"].as_u64().unwrap();
    assert_ne!(again, id);
    let job = app.wait_archived(again).await;
    assert_eq!(job["state"], "FINISHED");
    assert_eq!(job["replay_of"], id);
    assert_eq!(job["uid"], first["uid"]);
    assert_eq!(job["role_file"], first["role_file"]);
}

#[tokio::test]
async fn jobs_wait_in_a_queue_while_the_machine_is_full() {
    let app = spawn_app_with(|c| c.cpus = Some(1.0)).await;
    app.upload("hog", "#!/bin/sh\nexec sleep 120\n").await;
    app.upload("quick", "#!/bin/sh\necho done\n").await;
    let hog = app
        .submit("hog", "name: hog\npeers: 1\ncpu: 1\nmem: 1\n")
        .await;
    app.wait_for(hog, "running", |j| j["peers_running"] == 1)
        .await;
    let queued = app.submit("quick", "name: q\npeers: 1\ncpu: 0.5\n").await;
    let job = app.wait_state(queued, "WAITING").await;
    assert_eq!(
        job["reason"],
        "role 'q' needs 1 peers, offers fit 0 (1 host short of cpus (0.5 per peer))"
    );
    let cluster: Value = app.get_json("/api/cluster").await;
    assert_eq!(cluster["waiting"][0]["job"], queued);
    assert_eq!(cluster["hosts"][0]["cpus_used"], 1.0);
    app.client
        .post(app.url(&format!("/api/jobs/{hog}/kill")))
        .send()
        .await
        .unwrap();
    let job = app.wait_archived(queued).await;
    assert_eq!(job["state"], "FINISHED", "{job:#}");
}

/// Found by the kill soak: a job killed before it launched has no sandbox,
/// and its archive used to fail (the job then never got one, its event
/// stream never ended, and every restart tried again).
#[tokio::test]
async fn a_job_killed_while_waiting_gets_an_empty_archive_and_its_event_stream_ends() {
    let app = spawn_app_with(|c| c.cpus = Some(1.0)).await;
    app.upload("hog", "#!/bin/sh\nexec sleep 120\n").await;
    let hog = app
        .submit("hog", "name: hog\npeers: 1\ncpu: 1\nmem: 1\n")
        .await;
    app.wait_for(hog, "running", |j| j["peers_running"] == 1)
        .await;
    let queued = app.submit("hog", "name: q\npeers: 1\ncpu: 0.5\n").await;
    app.wait_state(queued, "WAITING").await;
    let r = app
        .client
        .post(app.url(&format!("/api/jobs/{queued}/kill")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let job = app.wait_archived(queued).await;
    assert_eq!(job["state"], "KILLED", "{job:#}");
    assert!(app.archive(queued).await.is_empty());
    // The one-job event stream ends by itself.
    let events = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        app.get_text(&format!("/api/jobs/{queued}/events")),
    )
    .await
    .expect("the stream ends once the archive is ready");
    // Its last event says the end is on purpose, so that a browser does
    // not reconnect.
    let frames: Vec<&str> = events
        .split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .collect();
    assert!(
        frames[frames.len() - 2].contains("event: archive"),
        "{events}"
    );
    assert!(
        frames[frames.len() - 1].starts_with("event: end\ndata: {\"job\":"),
        "{events}"
    );
    app.client
        .post(app.url(&format!("/api/jobs/{hog}/kill")))
        .send()
        .await
        .unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_job_that_can_never_fit_this_machine_is_refused() {
    let app = spawn_app().await;
    app.upload("p", "#!/bin/sh\n").await;
    let (status, body) = app
        .submit_raw("p", "name: huge\npeers: 20\n", json!({}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("can never run on this machine: role 'huge' needs 20 peers, offers fit 8"),
        "{body}"
    );
    // The local backend hands out no GPU.
    let (status, body) = app
        .submit_raw("p", "name: train\npeers: 1\ngpus: 1\n", json!({}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains(
            "role 'train' needs 1 peers, offers fit 0 (1 host short of gpus (1 per peer))"
        ),
        "{body}"
    );
    let (status, body) = app
        .submit_raw("p", "name: d\npeers: 1\nimage: debian:12\n", json!({}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("Docker image"),
        "{body}"
    );
    let (status, _) = app
        .submit_raw("nope", "name: d\npeers: 1\n", json!({}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn role_file_errors_come_back_with_line_column_and_change_nothing() {
    let app = spawn_app().await;
    app.upload("p", "#!/bin/sh\n").await;
    let (status, body) = app
        .submit_raw(
            "p",
            "name: a\npeers: 0\ncpu: lots\nhostmask: \"[\"\n",
            json!({}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("the role file has errors: 2:8: error: roles[0].peers"),
        "{body}"
    );
    let details = body["details"].as_array().unwrap();
    let at: Vec<(u64, u64)> = details
        .iter()
        .filter(|d| d["severity"] == "error")
        .map(|d| (d["line"].as_u64().unwrap(), d["column"].as_u64().unwrap()))
        .collect();
    assert_eq!(at, [(2, 8), (3, 6), (4, 11)]);
    let errors: Vec<&serde_json::Value> = details
        .iter()
        .filter(|d| d["severity"] == "error")
        .collect();
    assert!(
        errors[1]["message"].as_str().unwrap().contains("\"lots\""),
        "{body}"
    );
    let page: Value = app.get_json("/api/jobs").await;
    assert_eq!(page["total"], 0, "nothing was recorded");
}

#[tokio::test]
async fn validate_reports_every_diagnostic_without_submitting() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/api/validate"))
        .body("name: a\npeers: 2\npeer_per_host: 1\n")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["peers"], 2);
    assert!(v["diagnostics"][0]["message"]
        .as_str()
        .unwrap()
        .contains("did you mean `peers_per_host`"));
    let r = app
        .client
        .post(app.url("/api/validate"))
        .json(&json!({ "role_file": "name: a\npeers: x\n" }))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["diagnostics"][0]["line"], 2);
}

#[tokio::test]
async fn the_archive_holds_every_sandbox_without_the_binary_and_caps_big_files() {
    let app = spawn_app_with(|c| c.archive_file_cap_mb = 1).await;
    app.upload("writer", "#!/bin/sh\nmkdir -p out\nhead -c 3145728 /dev/zero > out/big.bin\necho small > out/small.txt\necho to-stderr >&2\n").await;
    let id = app.submit("writer", "name: w\npeers: 2\ncpu: 0.1\n").await;
    app.wait_archived(id).await;
    let files = app.archive(id).await;
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for p in 0..2 {
        for f in [
            "peer.yaml",
            "stdout",
            "stderr",
            "out/small.txt",
            "out/big.bin",
        ] {
            assert!(
                names.contains(&format!("peer-{p}/{f}").as_str()),
                "peer-{p}/{f} in {names:?}"
            );
        }
        assert!(
            !names.contains(&format!("peer-{p}/writer").as_str()),
            "the binary is not archived"
        );
    }
    assert_eq!(file(&files, "peer-1/out/big.bin").len(), 1 << 20);
    assert_eq!(file(&files, "peer-0/stderr"), b"to-stderr\n");
    let truncated = String::from_utf8(file(&files, "TRUNCATED.txt").to_vec()).unwrap();
    assert!(
        truncated.contains("peer-0/out/big.bin (3145728 bytes, first 1048576 kept)"),
        "{truncated}"
    );
    // The K3 routes serve the same file.
    let r = app
        .client
        .get(app.url(&format!("/jobs/writer/{id}/archive")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/gzip");
}

#[tokio::test]
async fn the_archive_of_a_running_job_is_not_ready_yet() {
    let app = spawn_app().await;
    app.upload("slow", "#!/bin/sh\nexec sleep 120\n").await;
    let id = app.submit("slow", "name: s\npeers: 1\ncpu: 0.1\n").await;
    app.wait_for(id, "running", |j| j["peers_running"] == 1)
        .await;
    let r = app
        .client
        .get(app.url(&format!("/api/jobs/{id}/archive")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    app.client
        .post(app.url(&format!("/api/jobs/{id}/kill")))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn the_job_list_pages_and_filters() {
    let app = spawn_app().await;
    app.upload("a", "#!/bin/sh\n").await;
    app.upload("b", "#!/bin/sh\nexit 1\n").await;
    let mut ids = vec![];
    for app_name in ["a", "a", "b"] {
        ids.push(app.submit(app_name, "name: r\npeers: 1\ncpu: 0.1\n").await);
    }
    for id in &ids {
        app.wait_archived(*id).await;
    }
    let page: Value = app.get_json("/api/jobs?limit=2").await;
    assert_eq!(page["total"], 3);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(page["jobs"][0]["id"], ids[2], "newest first");
    let page: Value = app.get_json("/api/jobs?app=a&state=finished").await;
    assert_eq!(page["total"], 2);
    let page: Value = app.get_json("/api/jobs?state=FAILED").await;
    assert_eq!(page["jobs"][0]["app"], "b");
    // Keyset pages: each names the next, they meet the offsets' pages, and
    // the last one says there is no next.
    let first: Value = app.get_json("/api/jobs?limit=2").await;
    assert_eq!(first["next_before"], ids[1]);
    let second: Value = app
        .get_json(&format!("/api/jobs?limit=2&before={}", ids[1]))
        .await;
    let by_offset: Value = app.get_json("/api/jobs?limit=2&offset=2").await;
    assert_eq!(second["jobs"], by_offset["jobs"]);
    assert_eq!(second["jobs"][0]["id"], ids[0]);
    assert!(second["next_before"].is_null(), "{second}");
    assert_eq!(second["total"], 3, "total counts every match, not the page");
    let a_older: Value = app
        .get_json(&format!("/api/jobs?app=a&state=FINISHED&before={}", ids[1]))
        .await;
    assert_eq!(a_older["jobs"][0]["id"], ids[0]);
    assert_eq!(a_older["jobs"].as_array().unwrap().len(), 1);
    // Offsets (found on an index, then read as a keyset page) with a filter,
    // with `before`, and past the end.
    let a_offset: Value = app.get_json("/api/jobs?app=a&limit=5&offset=1").await;
    assert_eq!(a_offset["jobs"], a_older["jobs"]);
    let both: Value = app
        .get_json(&format!("/api/jobs?limit=5&before={}&offset=1", ids[2]))
        .await;
    assert_eq!(both["jobs"], second["jobs"]);
    let past: Value = app.get_json("/api/jobs?limit=2&offset=3").await;
    assert_eq!(past["jobs"].as_array().unwrap().len(), 0);
    assert_eq!(past["total"], 3);
    assert!(past["next_before"].is_null(), "{past}");
    // The page says which event it reflects, for a stream to start from.
    assert!(first["events_seq"].as_u64().unwrap() >= 9, "{first}");
    let r = app
        .client
        .get(app.url("/api/jobs?state=BOGUS"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn the_readme_ring_example_runs_to_the_end() {
    let app = spawn_app().await;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/ring");
    let script = std::fs::read_to_string(format!("{root}/ring.py")).unwrap();
    let roles = std::fs::read_to_string(format!("{root}/roles.yaml")).unwrap();
    app.upload("ring.py", &script).await;
    let id = app.submit("ring.py", &roles).await;
    let job = app.wait_archived(id).await;
    assert_eq!(job["state"], "FINISHED", "{job:#}");
    let files = app.archive(id).await;
    let result = String::from_utf8(file(&files, "peer-0/result.txt").to_vec()).unwrap();
    assert_eq!(
        result,
        "hello from peer 1\nhello from peer 2\nhello from peer 3\n"
    );
    let out = String::from_utf8(file(&files, "peer-2/stdout").to_vec()).unwrap();
    assert!(out.contains("peer 0 answered: welcome, 2"), "{out}");
}
