//! History benchmark: a data directory holding a year of jobs (100,000
//! finished jobs of 4 peers and 3 events each; `BENCH_SHORT=1` or CI=true
//! keeps the same 100,000 jobs but fewer requests), served by the real
//! `dispatcher` binary. Prints p50/p99 of the job list (first page, a filter
//! that matches nothing, a deep page by offset and by `before`) and of a
//! job's detail, of a 10,000-peer job's detail and whole event stream
//! (40,004 events), then what a new `/api/events` client receives before
//! its first live event. A read whose cost follows the history shows here.
//!
//! `cargo bench -p dispatcher --bench history`

use std::time::{Duration, Instant};

use futures_util::StreamExt;

#[path = "support/server.rs"]
mod server;
use server::Server;

#[path = "support/history_fill.rs"]
mod history_fill;
use history_fill::{fill, fill_big_job, PEERS};

const JOBS: u64 = 100_000;

fn pct(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

async fn timed(client: &reqwest::Client, url: &str, n: usize) -> (f64, f64, usize) {
    let mut took = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let r = client.get(url).send().await.unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
        bytes = r.bytes().await.unwrap().len();
        took.push(t.elapsed());
    }
    (pct(took.clone(), 0.5), pct(took, 0.99), bytes)
}

#[tokio::main]
async fn main() {
    let short =
        std::env::var("BENCH_SHORT").is_ok() || std::env::var("CI").is_ok_and(|v| v == "true");
    let n = if short { 60 } else { 300 };
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    fill(dir.path(), JOBS);
    println!(
        "history: {JOBS} jobs, {} peers, {} events written in {:.1} s",
        JOBS * PEERS as u64,
        JOBS * 3,
        t.elapsed().as_secs_f64()
    );
    let big = fill_big_job(dir.path(), 10_000);
    let server = Server::start(
        dir.path(),
        &["--ports", "45900-45909", "--cpus", "2", "--mem-mb", "1024"],
    )
    .await;
    let (client, base) = (&server.client, &server.base);
    let cases = [
        ("list, first page", "/api/jobs?limit=50".to_string()),
        (
            "list, filter matching nothing",
            "/api/jobs?limit=50&state=KILLED".to_string(),
        ),
        (
            "list, app filter",
            "/api/jobs?limit=50&app=bench_scalability_3".to_string(),
        ),
        (
            "list, deep page by offset",
            "/api/jobs?limit=50&offset=99000".to_string(),
        ),
        (
            "list, deep page by before",
            "/api/jobs?limit=50&before=1000".to_string(),
        ),
        ("job detail", "/api/jobs/54321".to_string()),
        ("k3 /jobs", "/jobs".to_string()),
    ];
    for (name, path) in &cases {
        let (p50, p99, bytes) = timed(client, &format!("{base}{path}"), n).await;
        println!("history: {name:<32} p50 {p50:6.2} ms  p99 {p99:6.2} ms  ({bytes} bytes)");
    }
    for (name, path, n) in [
        (
            "a 4-peer job's whole stream",
            "/api/jobs/54321/events".to_string(),
            n.min(50),
        ),
        (
            "10,000-peer job detail",
            format!("/api/jobs/{big}"),
            n.min(50),
        ),
        (
            "10,000-peer job's whole stream",
            format!("/api/jobs/{big}/events"),
            n.min(10),
        ),
    ] {
        let (p50, p99, bytes) = timed(client, &format!("{base}{path}"), n).await;
        println!("history: {name:<32} p50 {p50:6.2} ms  p99 {p99:6.2} ms  ({bytes} bytes)");
    }

    // The SQL the list used before (`?1 IS NULL OR ...`: no index can
    // answer it), on the same database, for a ratio within this run.
    {
        let c = rusqlite::Connection::open(dir.path().join("dispatcher.db")).unwrap();
        let mut took = Vec::new();
        for _ in 0..n.min(30) {
            let t = Instant::now();
            let total: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM jobs j WHERE (?1 IS NULL OR j.app = ?1) AND (?2 IS NULL OR j.state = ?2)",
                    rusqlite::params![None::<String>, Some("KILLED")],
                    |r| r.get(0),
                )
                .unwrap();
            let mut st = c.prepare_cached("SELECT j.id, (SELECT COUNT(*) FROM peers p WHERE p.job_id = j.id AND p.state = 'RUNNING') FROM jobs j WHERE (?1 IS NULL OR j.app = ?1) AND (?2 IS NULL OR j.state = ?2) ORDER BY j.id DESC LIMIT 50").unwrap();
            let rows = st
                .query_map(rusqlite::params![None::<String>, Some("KILLED")], |r| {
                    r.get::<_, i64>(0)
                })
                .unwrap()
                .count();
            assert_eq!((total, rows), (0, 0));
            took.push(t.elapsed());
        }
        println!(
            "history: {:<32} p50 {:6.2} ms  p99 {:6.2} ms  (the query before keyset and indexed filters, in SQLite alone)",
            "old query, filter matching nothing",
            pct(took.clone(), 0.5),
            pct(took, 0.99)
        );
    }

    server.upload("p", "#!/bin/sh\n").await;
    // A new all-jobs stream, then a submission: what arrives before it.
    // `?after=0` is what every new client got before streams started now.
    for query in ["", "?after=0"] {
        let t = Instant::now();
        let r = client
            .get(format!("{base}/api/events{query}"))
            .send()
            .await
            .unwrap();
        let mut body = r.bytes_stream();
        let id = server.submit("p", "name: x\npeers: 1\ncpu: 0.1\n").await;
        let marker = format!("\"job\":{id},");
        let mut got: Vec<u8> = Vec::new();
        let mut before_live = None;
        while let Ok(Some(chunk)) =
            tokio::time::timeout(Duration::from_secs(300), body.next()).await
        {
            let chunk = chunk.unwrap();
            let from = got.len().saturating_sub(64);
            got.extend_from_slice(&chunk);
            if let Some(i) = String::from_utf8_lossy(&got[from..]).find(&marker) {
                // Back to the start of that event's frame.
                let upto = &got[..from + i];
                before_live = Some(upto.windows(4).rposition(|w| w == b"id: ").unwrap_or(0));
                break;
            }
        }
        let before_live = before_live.expect("the new job's event arrived");
        // Events carry data; the stream's first frame, its start, does not.
        let events = got[..before_live]
            .windows(6)
            .filter(|w| *w == b"data: ")
            .count();
        println!(
            "history: /api/events{:<9} a new client got {before_live} bytes ({events} events) before the first live one, which came {:.0} ms after it connected",
            query,
            t.elapsed().as_secs_f64() * 1000.0
        );
        if query.is_empty() {
            assert_eq!(
                events, 0,
                "a new stream must start now, not with the history"
            );
        }
        // Let the job end before the next client.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
