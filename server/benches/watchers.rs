//! Watchers benchmark: many clients on `/api/events` at once, against the
//! real `dispatcher` binary. Prints the server's resident memory before and
//! with the clients connected (and so per client), then how long one job's
//! SUBMITTED event took to reach every client after the submission was
//! answered: p50, p99 and the last. The clients are raw sockets on a
//! multi-threaded runtime, each stamping the moment its bytes arrived.
//! Like a dashboard, a client stays connected and keeps reading once the
//! event has come: all of them hang up only after the last one got it (a
//! client that hung up at once made the server close thousands of
//! connections in the middle of the fan-out it measures).
//!
//! `cargo bench -p dispatcher --bench watchers` (10,000 clients);
//! `BENCH_SHORT=1` (or CI=true) 1,000.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "support/server.rs"]
mod server;
use server::Server;

/// When a client's bytes arrived: in its socket (the kernel's receive
/// stamp, `SO_TIMESTAMPNS`: the server's fan-out alone) and in the client
/// (when its task read them: that adds the load generator's own turn on
/// the two cores the server also uses).
struct Arrival {
    socket: Option<SystemTime>,
    read: Instant,
}

/// Reads like `read`, with the kernel's receive time of the last bytes
/// read (TCP gives it for the newest segment taken).
async fn recv_stamped(
    s: &tokio::net::TcpStream,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<SystemTime>)> {
    use std::os::fd::AsRawFd;
    loop {
        s.readable().await?;
        let r = s.try_io(tokio::io::Interest::READABLE, || {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut control = [0u64; 16];
            // SAFETY: msghdr is plain data; all zeroes is an empty header.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            // SAFETY: msg points at buf and control, both alive for the call.
            let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut stamp = None;
            // SAFETY: the CMSG walk stays within msg_controllen, as filled in.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_SOCKET
                        && (*c).cmsg_type == libc::SCM_TIMESTAMPNS
                    {
                        let ts: libc::timespec =
                            std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                        stamp =
                            Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            Ok((n as usize, stamp))
        });
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// Opens one stream; answers once its headers are read, then reports when
/// `marker` arrives and reads on until `done`.
async fn watcher(
    port: u16,
    marker: Arc<tokio::sync::watch::Receiver<Option<String>>>,
    ready: tokio::sync::mpsc::Sender<()>,
    arrived: tokio::sync::mpsc::UnboundedSender<Arrival>,
    mut done: tokio::sync::watch::Receiver<bool>,
) -> Option<()> {
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
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and an int option.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as _,
            )
        };
    }
    let _ = ready.send(()).await;
    loop {
        let (n, stamp) = recv_stamped(&s, &mut buf).await.ok()?;
        let at = Arrival {
            socket: stamp,
            read: Instant::now(),
        };
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&buf[..n]);
        let found = marker
            .borrow()
            .as_deref()
            .is_some_and(|m| String::from_utf8_lossy(&seen).contains(m));
        if found {
            let _ = arrived.send(at);
            // Connected and reading until every client has it.
            loop {
                tokio::select! {
                    r = s.read(&mut buf) => if !matches!(r, Ok(n) if n > 0) { break },
                    _ = done.changed() => break,
                }
            }
            return Some(());
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
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let (arrived_tx, mut arrived_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        tasks.push(tokio::spawn(watcher(
            port,
            mark_rx.clone(),
            ready_tx.clone(),
            arrived_tx.clone(),
            done_rx.clone(),
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
    let (answered, answered_at) = (Instant::now(), SystemTime::now());
    assert_eq!(id, next);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (mut lat, mut in_socket) = (Vec::with_capacity(clients), Vec::with_capacity(clients));
    while lat.len() < clients {
        match tokio::time::timeout(Duration::from_secs(60), arrived_rx.recv()).await {
            Ok(Some(at)) => {
                lat.push(ms(at.read.saturating_duration_since(answered)));
                if let Some(t) = at.socket {
                    in_socket.push(ms(t.duration_since(answered_at).unwrap_or_default()));
                }
            }
            _ => break,
        }
    }
    assert_eq!(lat.len(), clients, "every client got the event");
    // Where the two cores went meanwhile: the server's share is what one
    // event costs it per client; the rest is these clients' own reading.
    let since = |(u0, k0): (f64, f64), (u1, k1): (f64, f64)| (u1 - u0, k1 - k0);
    let (server_user, server_kernel) = since(server_cpu, server::cpu_ms(server.pid()));
    let (own_user, own_kernel) = since(own_cpu, server::cpu_ms(0));
    let _ = done_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
    }
    let pct = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
        (p(0.5), p(0.99), p(1.0))
    };
    assert_eq!(
        in_socket.len(),
        clients,
        "every read carried its kernel receive time"
    );
    let (s50, s99, slast) = pct(&mut in_socket);
    let (r50, r99, rlast) = pct(&mut lat);
    println!(
        "watchers: the SUBMITTED event reached all {clients} clients' sockets after the submission was answered: p50 {s50:.1} ms, p99 {s99:.1} ms, last {slast:.1} ms"
    );
    println!(
        "watchers: ... and was read by them (the clients share the 2 cores): p50 {r50:.1} ms, p99 {r99:.1} ms, last {rlast:.1} ms"
    );
    println!(
        "watchers: CPU meanwhile: server {:.0} ms ({:.1} µs a client: {server_user:.0} ms user, {server_kernel:.0} ms kernel), the clients {:.0} ms",
        server_user + server_kernel,
        (server_user + server_kernel) * 1000.0 / clients as f64,
        own_user + own_kernel
    );
}
