//! Watchers benchmark: many clients on `/api/events` at once, against the
//! real `dispatcher` binary. Prints the server's resident memory before and
//! with the clients connected (and so per client), then how long one job's
//! SUBMITTED event took to reach every client after the submission was
//! answered: p50, p99 and the last. The clients are raw sockets on a
//! multi-threaded runtime, each stamping the moment its bytes arrived.
//!
//! `cargo bench -p dispatcher --bench watchers` (10,000 clients);
//! `BENCH_SHORT=1` (or CI=true) 1,000.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "support/server.rs"]
mod server;
use server::Server;

/// Opens one stream; answers once its headers are read, then reports when
/// `marker` arrives.
async fn watcher(
    port: u16,
    marker: Arc<tokio::sync::watch::Receiver<Option<String>>>,
    ready: tokio::sync::mpsc::Sender<()>,
) -> Option<Instant> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(
        b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await
    .ok()?;
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    // The headers.
    loop {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&buf[..n]);
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(
                seen.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&seen)
            );
            seen.drain(..end + 4);
            break;
        }
    }
    let _ = ready.send(()).await;
    loop {
        let n = s.read(&mut buf).await.ok()?;
        let at = Instant::now();
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&buf[..n]);
        if let Some(m) = marker.borrow().as_deref() {
            if String::from_utf8_lossy(&seen).contains(m) {
                return Some(at);
            }
        }
        // Only the tail can hold the start of a marker cut by a read.
        if seen.len() > 256 {
            seen.drain(..seen.len() - 128);
        }
    }
}

fn main() {
    let short =
        std::env::var("BENCH_SHORT").is_ok() || std::env::var("CI").is_ok_and(|v| v == "true");
    let clients: usize = if short { 1_000 } else { 10_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(clients));
}

async fn run(clients: usize) {
    let dir = tempfile::tempdir().unwrap();
    let max = (clients + 10).to_string();
    let server = Server::start(
        dir.path(),
        &[
            "--ports",
            "45910-45919",
            "--cpus",
            "2",
            "--mem-mb",
            "1024",
            "--max-event-streams",
            &max,
        ],
    )
    .await;
    let port = server.port;
    server.upload("p", "#!/bin/sh\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = server.status("VmRSS:");

    let (mark_tx, mark_rx) = tokio::sync::watch::channel(None::<String>);
    let mark_rx = Arc::new(mark_rx);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(clients);
    let t = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        tasks.push(tokio::spawn(watcher(
            port,
            mark_rx.clone(),
            ready_tx.clone(),
        )));
        // Do not overrun the listen backlog.
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    drop(ready_tx);
    let mut ready = 0;
    while ready < clients {
        match tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await {
            Ok(Some(())) => ready += 1,
            _ => break,
        }
    }
    assert_eq!(ready, clients, "every client got its stream");
    let connected = t.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with = server.status("VmRSS:");
    println!(
        "watchers: {clients} event-stream clients connected in {:.1} s ({} server threads); server RSS {:.1} MiB idle, {:.1} MiB with them ({:.1} KiB a client)",
        connected.as_secs_f64(),
        server.status("Threads:"),
        idle as f64 / 1024.0,
        with as f64 / 1024.0,
        (with.saturating_sub(idle)) as f64 / clients as f64
    );

    // The next job's id, so every watcher knows what to look for first.
    let page: serde_json::Value = server
        .client
        .get(server.url("/api/jobs?limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next = page["jobs"][0]["id"].as_u64().unwrap_or(0) + 1;
    mark_tx.send(Some(format!("\"job\":{next},"))).unwrap();
    let (server_cpu, own_cpu) = (server::cpu_ms(server.pid()), server::cpu_ms(0));
    let id = server.submit("p", "name: x\npeers: 1\ncpu: 0.1\n").await;
    let answered = Instant::now();
    assert_eq!(id, next);
    let mut lat: Vec<f64> = Vec::with_capacity(clients);
    for task in tasks {
        if let Ok(Ok(Some(at))) = tokio::time::timeout(Duration::from_secs(60), task).await {
            lat.push(at.saturating_duration_since(answered).as_secs_f64() * 1000.0);
        }
    }
    assert_eq!(lat.len(), clients, "every client got the event");
    // Where the two cores went meanwhile: the server's share is what one
    // event costs it per client; the rest is these clients' own reading.
    let server_cpu = server::cpu_ms(server.pid()) - server_cpu;
    let own_cpu = server::cpu_ms(0) - own_cpu;
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "watchers: the SUBMITTED event reached all {clients} clients after the submission was answered: p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms",
        p(0.5),
        p(0.99),
        p(1.0)
    );
    println!(
        "watchers: CPU meanwhile: server {server_cpu:.0} ms ({:.1} µs a client), the clients {own_cpu:.0} ms",
        server_cpu * 1000.0 / clients as f64
    );
}
