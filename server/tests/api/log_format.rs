//! `--log-format json`: the real binary's stderr, one JSON object per line,
//! with the request id of each request's lines and the job id of each job's,
//! so that a log shipper can tie a submission to everything its job did.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::helpers::*;
use crate::ports::free_port;

#[tokio::test]
async fn json_logs_tie_a_submission_s_request_id_to_its_job_and_the_job_s_end() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("stderr.log");
    let mut server = Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .args(["-d", dir.path().join("data").to_str().unwrap()])
        .args(["-p", &port.to_string(), "--ports", &port_block(10)])
        .args(["--log-format", "json"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    wait_up(&client, &base).await;
    let part = reqwest::multipart::Part::bytes(b"#!/bin/sh\necho hi\n".to_vec()).file_name("p");
    client
        .post(format!("{base}/api/apps"))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let r = client
        .post(format!("{base}/api/jobs"))
        .header("x-request-id", "submit-42")
        .json(&serde_json::json!({"app": "p", "role_file": "name: r\npeers: 1\ncpu: 0.1\n"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "submit-42");
    let id = r.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    // A request without an id, or with one that is not safe to log, gets one.
    let r = client
        .get(format!("{base}/api/health"))
        .header("x-request-id", "bad id\"")
        .send()
        .await
        .unwrap();
    let made = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(!made.is_empty() && !made.contains(' '), "{made}");
    let mut lines: Vec<Value> = vec![];
    for _ in 0..200 {
        let text = std::fs::read_to_string(&log).unwrap();
        lines = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        if lines.iter().any(|l| l["fields"]["message"] == "job ended") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let submitted = lines
        .iter()
        .find(|l| l["fields"]["message"] == "job submitted")
        .expect("a 'job submitted' line");
    assert_eq!(submitted["fields"]["job"], id);
    assert_eq!(submitted["span"]["request_id"], "submit-42", "{submitted}");
    assert_eq!(submitted["span"]["path"], "/api/jobs");
    let ended = lines
        .iter()
        .find(|l| l["fields"]["message"] == "job ended")
        .expect("a 'job ended' line");
    assert_eq!(ended["fields"]["job"], id);
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["timestamp"].is_string()));
}
