//! Hostile input, one test per class: role files built to exhaust memory or
//! the stack, characters and YAML features no role file needs, malformed
//! requests, oversized bodies, and load beyond the limits. Every one gets a
//! clear 4xx (or 503 for load) as JSON `{error, details}`, and the server
//! keeps serving.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;
use crate::ports::free_port;

fn bomb() -> String {
    let mut s = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
    for (p, i) in ('a'..='h').zip('b'..='i') {
        s += &format!("{i}: &{i} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n");
    }
    s
}

fn merge_bomb() -> String {
    let mut s = String::from("a: &a {k: [x,x,x,x,x,x,x,x,x,x]}\n");
    for (p, i) in ('a'..='h').zip('b'..='i') {
        s += &format!(
            "{i}: &{i} {{k: [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}], <<: *{p}}}\n"
        );
    }
    s
}

fn key_bomb() -> String {
    let mut s = bomb();
    s += "? *f\n: 1\n";
    s
}

fn quadratic_chain() -> String {
    let mut s = String::from("x0: &x0 {k0: v}\n");
    for i in 1..3000 {
        s += &format!("x{i}: &x{i} {{k{i}: v, <<: *x{}}}\n", i - 1);
    }
    s
}

fn nested_anchors() -> String {
    let mut s = String::new();
    for i in 0..60 {
        s += &format!("&a{i} [");
    }
    s + &vec!["x"; 30_000].join(",") + &"]".repeat(60) + "\n"
}

fn deep_block() -> String {
    "- ".repeat(10_000) + "x\n"
}

/// (what, role file, line, column, fragment of the message)
fn cases() -> Vec<(&'static str, String, u32, u32, &'static str)> {
    vec![
        ("nested aliases", bomb(), 5, 29, "aliases copy more than"),
        (
            "merge keys of aliases",
            merge_bomb(),
            5,
            0,
            "aliases copy more than",
        ),
        (
            "aliases as keys",
            key_bomb(),
            0,
            0,
            "aliases copy more than",
        ),
        (
            "a long alias chain",
            quadratic_chain(),
            0,
            0,
            "aliases copy more than",
        ),
        (
            "nested anchors around one big list",
            nested_anchors(),
            1,
            0,
            "more than 1000000 values",
        ),
        (
            "10,000 nested block sequences",
            deep_block(),
            1,
            129,
            "nest more than 64",
        ),
        (
            "a raw NUL byte",
            "name: a\npeers: 1\ncommand: ls\0 -l\n".into(),
            3,
            12,
            "U+0000",
        ),
        (
            "an escaped NUL in a command",
            "name: a\npeers: 1\ncommand: \"ls\\0\"\n".into(),
            3,
            10,
            "U+0000",
        ),
        (
            "a NUL in a volume path",
            "name: a\npeers: 1\nvolumes:\n  - {host: \"/x\\0\", container: /y}\n".into(),
            4,
            12,
            "U+0000",
        ),
        (
            "%YAML 9.9",
            "%YAML 9.9\n---\nname: a\npeers: 1\n".into(),
            1,
            1,
            "%YAML 9.9",
        ),
        (
            "a python tag",
            "name: !!python/object/apply:os.system [ls]\npeers: 1\n".into(),
            1,
            0,
            "!!python/object/apply:os.system",
        ),
        (
            "a right-to-left override in a name",
            "name: \"a\\u202Eb\"\npeers: 1\n".into(),
            1,
            7,
            "U+202E",
        ),
        (
            "an image path traversal",
            "name: a\npeers: 1\nimage: ../../etc/passwd\n".into(),
            3,
            8,
            "\"../../etc/passwd\"",
        ),
    ]
}

fn matches(d: &Value, line: u32, column: u32, fragment: &str) -> bool {
    d["message"].as_str().unwrap_or("").contains(fragment)
        && (line == 0 || d["line"] == line)
        && (column == 0 || d["column"] == column)
}

/// The real binary with its address space capped at 2 GiB: a role file that
/// makes it allocate without bound kills it instead of the machine.
fn start_capped(dir: &std::path::Path, port: u16) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dispatcher"));
    cmd.args(["-d", dir.to_str().unwrap(), "-p", &port.to_string()])
        .args(["--cpus", "2", "--mem-mb", "2048", "--ports", &port_block(4)])
        .env("MALLOC_ARENA_MAX", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("dispatcher starts")
}

/// Peak resident memory; None once the process has died.
fn peak_rss_mb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb / 1024)
}

#[tokio::test]
async fn every_hostile_role_file_gets_a_positioned_4xx_and_the_server_stays_up_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = start_capped(dir.path(), port);
    let client = reqwest::Client::new();
    wait_up(&client, &base).await;
    let part = reqwest::multipart::Part::bytes(b"#!/bin/sh\necho hi\n".to_vec()).file_name("prog");
    let r = client
        .post(format!("{base}/apps"))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let mut failures = Vec::new();
    for (what, src, line, column, fragment) in cases() {
        let started = Instant::now();
        // The validator, with the role file as the body.
        let r = client
            .post(format!("{base}/api/validate"))
            .body(src.clone())
            .send()
            .await;
        let Ok(r) = r else {
            failures.push(format!(
                "{what}: /api/validate got no answer (server down?)"
            ));
            break;
        };
        let v: Value = r.json().await.unwrap();
        if v["ok"] != false
            || !v["diagnostics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| matches(d, line, column, fragment))
        {
            failures.push(format!("{what}: validate said {v}"));
        }
        // K3's submission route, as curl -F file=@role.yaml sends it.
        let part = reqwest::multipart::Part::bytes(src.into_bytes()).file_name("role.yaml");
        let r = client
            .post(format!("{base}/jobs/prog"))
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await;
        let Ok(r) = r else {
            failures.push(format!("{what}: /jobs/prog got no answer (server down?)"));
            break;
        };
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        let hit = v["details"]
            .as_array()
            .is_some_and(|ds| ds.iter().any(|d| matches(d, line, column, fragment)));
        if status != 400 || !hit || !v["error"].is_string() {
            failures.push(format!("{what}: submit answered {status} {v}"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: {:?}",
            started.elapsed()
        );
    }
    let health = client.get(format!("{base}/api/health")).send().await;
    let rss = peak_rss_mb(server.id());
    let jobs: Value = client
        .get(format!("{base}/api/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(health.unwrap().status(), 200, "the server is still up");
    assert_eq!(jobs["total"], 0, "nothing was submitted: {jobs}");
    let rss = rss.expect("the server process is alive");
    eprintln!("peak resident memory after every hostile role file: {rss} MB");
    assert!(rss < 512, "peak resident memory {rss} MB");
}

fn assert_json_error(status: u16, body: &str, want: u16, fragment: &str) {
    assert_eq!(status, want, "{body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    assert!(v["error"].is_string() && v["details"].is_array(), "{v}");
    assert!(
        v["error"].as_str().unwrap().contains(fragment),
        "{fragment:?} not in {v}"
    );
}

async fn answer(r: reqwest::Response) -> (u16, String) {
    let s = r.status().as_u16();
    (s, r.text().await.unwrap())
}

#[tokio::test]
async fn malformed_requests_get_json_errors_that_say_what_is_wrong() {
    let app = spawn_app().await;
    let c = &app.client;
    app.upload("prog", "#!/bin/sh\n").await;

    let file = |b: &str| reqwest::multipart::Part::bytes(b.as_bytes().to_vec()).file_name("r.yaml");
    let two = reqwest::multipart::Form::new()
        .part("file", file("name: a\npeers: 1\n"))
        .part("file", file("name: b\npeers: 1\n"));
    let (s, b) = answer(
        c.post(app.url("/jobs/prog"))
            .multipart(two)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_json_error(s, &b, 400, "two parts named `file`");

    let (s, b) = answer(
        c.post(app.url("/api/jobs"))
            .header("content-type", "text/plain")
            .body(json!({"app": "prog", "role_file": "name: a\npeers: 1\n"}).to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_json_error(s, &b, 415, "application/json");

    let (s, b) = answer(
        c.post(app.url("/jobs/prog"))
            .header("content-type", "multipart/form-data")
            .body("--x\r\n")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_json_error(s, &b, 400, "boundary");

    let (s, b) = answer(c.get(app.url("/api/jobs?limit=lots")).send().await.unwrap()).await;
    assert_json_error(s, &b, 400, "limit");

    let (s, b) = answer(
        c.get(app.url("/api/jobs/1/peers/x/logs"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_json_error(s, &b, 400, "");

    let (s, b) = answer(c.put(app.url("/api/jobs")).send().await.unwrap()).await;
    assert_json_error(s, &b, 405, "PUT");

    let (s, b) = answer(
        c.get(app.url("/api/events"))
            .header("last-event-id", "banana")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_json_error(s, &b, 400, "Last-Event-ID");

    // A body over the limit sent without Content-Length (chunked).
    let big = vec![b'#'; 3 << 20];
    let stream = futures_util::stream::iter(
        big.chunks(64 << 10)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let (s, b) = answer(
        c.post(app.url("/api/validate"))
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_json_error(s, &b, 413, "");

    let (s, _) = answer(c.get(app.url("/api/health")).send().await.unwrap()).await;
    assert_eq!(s, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_content_length_far_over_the_limit_is_refused_at_once_without_the_body() {
    let app = spawn_app().await;
    let addr = app.addr.trim_start_matches("http://").to_string();
    let started = Instant::now();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/jobs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer before any body is sent")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("--max-role-file-kb"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(3));
    app.stop().await;
}

#[tokio::test]
async fn a_role_file_sent_as_text_may_be_as_large_as_one_sent_as_a_file() {
    let app = spawn_app().await;
    app.upload("prog", "#!/bin/sh\n").await;
    let padding = format!("# {}\n", "x".repeat(100)).repeat(2000); // ~200 KiB
    let text = format!("{padding}name: a\npeers: 1\ncommand: \"true\"\n");
    assert!(text.len() > 64 << 10);
    let form = reqwest::multipart::Form::new().text("text", text);
    let r = app
        .client
        .post(app.url("/jobs/prog"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    app.stop().await;
}

#[tokio::test]
async fn each_limit_is_a_flag_and_its_refusal_names_it() {
    let app = spawn_app_with(|c| {
        c.max_peers_per_job = 3;
        c.max_roles = 2;
        c.max_role_file_kb = 4;
        c.max_event_streams = 2;
    })
    .await;
    app.upload("prog", "#!/bin/sh\n").await;
    let (s, b) = app
        .submit_raw("prog", "name: a\npeers: 4\n", json!({}))
        .await;
    assert_eq!(s, 400);
    assert!(
        b["error"].as_str().unwrap().contains("--max-peers-per-job"),
        "{b}"
    );
    let three = "name: a\npeers: 1\n---\nname: b\npeers: 1\n---\nname: c\npeers: 1\n";
    let (s, b) = app.submit_raw("prog", three, json!({})).await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().contains("--max-roles"), "{b}");
    let long = format!("name: a\npeers: 1\n# {}\n", "x".repeat(5000));
    let (s, b) = app.submit_raw("prog", &long, json!({})).await;
    assert_eq!(s, 413);
    assert!(
        b["error"].as_str().unwrap().contains("--max-role-file-kb"),
        "{b}"
    );

    // Two event streams are the most; a third waits for one to close.
    let open = |p: &'static str| app.client.get(app.url(p)).send();
    let s1 = open("/api/events").await.unwrap();
    let s2 = open("/api/events").await.unwrap();
    assert_eq!((s1.status().as_u16(), s2.status().as_u16()), (200, 200));
    let r = open("/api/events").await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let b: Value = r.json().await.unwrap();
    assert!(
        b["error"].as_str().unwrap().contains("--max-event-streams"),
        "{b}"
    );
    drop(s1);
    let mut ok = false;
    for _ in 0..50 {
        if open("/api/events").await.unwrap().status() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a closed stream gives its place back");
    drop(s2);
    app.stop().await;
}

#[tokio::test]
async fn uploads_beyond_the_concurrent_limit_are_told_to_retry() {
    let app = spawn_app_with(|c| c.max_uploads = 1).await;
    // One upload that keeps sending slowly holds the only place.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let head =
        b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow\"\r\n\r\n".to_vec();
    tx.send(Ok(head)).await.unwrap();
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let slow = app
        .client
        .post(app.url("/api/apps"))
        .header("content-type", "multipart/form-data; boundary=B")
        .body(body)
        .send();
    let slow = tokio::spawn(slow);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let part = reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("fast");
    let r = app
        .client
        .post(app.url("/api/apps"))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let b: Value = r.json().await.unwrap();
    assert!(
        b["error"].as_str().unwrap().contains("--max-uploads"),
        "{b}"
    );
    tx.send(Ok(b"#!/bin/sh\r\n--B--\r\n".to_vec()))
        .await
        .unwrap();
    drop(tx);
    let done = slow.await.unwrap().unwrap();
    assert_eq!(done.status(), 201);
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_is_cut_off_and_others_are_served_meanwhile() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| c.header_timeout_secs = 1).await;
    let addr = app.addr.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    // A byte now and then, never the blank line that ends the headers.
    let trickle = async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow.write_all(b"X").await.is_err() {
                break;
            }
        }
    };
    let served = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.get_json("/api/health").await
    };
    let ((), health) = tokio::join!(trickle, served);
    assert_eq!(health["status"], "ok", "others are served meanwhile");
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
        .await
        .map(|r| r.unwrap_or(0))
        .unwrap_or(usize::MAX);
    assert!(n != usize::MAX, "the connection was left open");
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "cut off after {took:?} (limit 1 s)"
    );
}
