//! Watchers benchmark: many clients on `/api/events` at once, against the
//! real `dispatcher` binary. Prints the server's resident memory before and
//! with the clients connected (and so per client), then how long a job's
//! SUBMITTED event took to reach every client after the submission was
//! sent (p50, p99, the last) and the server's CPU for it, twice:
//!
//! - quiet clients, as if on other machines: nothing reads until the
//!   server has gone idle, so the measure is the server's fan-out alone,
//!   timed by the kernel's receive stamp on each socket (`SO_TIMESTAMPNS`);
//! - eager clients, each a task reading as bytes come, sharing the two
//!   cores with the server (and staying connected until all have it, as a
//!   dashboard would: clients hanging up at once made the server close
//!   thousands of connections in the middle of the fan-out it measured).
//!
//! The measured jobs wait behind a job holding every CPU, so their
//! SUBMITTED event is the only one fanning out meanwhile.
//!
//! Then the floor, both ways: a bare server (this benchmark's own child)
//! writing one frame of the same size to every socket from two threads,
//! to the same clients, quiet and then eager. No server can do better on
//! this machine; the dispatcher's figures are to be read against it.
//!
//! `cargo bench -p dispatcher --bench watchers` (10,000 clients);
//! `BENCH_SHORT=1` (or CI=true) 1,000.

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

/// Reads without waiting, like `read`, with the kernel's receive time of
/// the bytes read; `Ok(None)` when nothing is waiting.
fn try_recv_stamped(
    s: &std::net::TcpStream,
    buf: &mut [u8],
) -> std::io::Result<Option<(usize, Option<SystemTime>)>> {
    use std::os::fd::AsRawFd;
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
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(e);
    }
    let mut stamp = None;
    // SAFETY: the CMSG walk stays within msg_controllen, as filled in.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Some((n as usize, stamp)))
}

/// Like `try_recv_stamped`, waiting until bytes come.
async fn recv_stamped(
    s: &tokio::net::TcpStream,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<SystemTime>)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    loop {
        s.readable().await?;
        let r = s.try_io(tokio::io::Interest::READABLE, || {
            // SAFETY: borrowed for the call only; ManuallyDrop keeps the fd open.
            let std = std::mem::ManuallyDrop::new(unsafe {
                std::net::TcpStream::from_raw_fd(s.as_raw_fd())
            });
            match try_recv_stamped(&std, buf)? {
                Some(r) => Ok(r),
                None => Err(std::io::ErrorKind::WouldBlock.into()),
            }
        });
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// Opens one stream and reads its headers; the socket, out of the
/// runtime's hands (nothing polls it until the benchmark says so).
async fn connect(port: u16) -> Option<std::net::TcpStream> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(
        b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await
    .ok()?;
    let mut seen = Vec::new();
    // The headers, a byte at a time: nothing after them may be taken.
    let mut b = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.ok()? == 0 {
            return None;
        }
        seen.push(b[0]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    // Then the stream's start (an `id` alone, in its chunk).
    seen.clear();
    while !seen.ends_with(b"\n\n\r\n") {
        if s.read(&mut b).await.ok()? == 0 {
            return None;
        }
        seen.push(b[0]);
    }
    let s = s.into_std().ok()?;
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
    Some(s)
}

/// `clients` streams on `port`, all answered.
async fn connect_all(port: u16, clients: usize) -> Vec<std::net::TcpStream> {
    let mut connecting = Vec::with_capacity(clients);
    for i in 0..clients {
        connecting.push(tokio::spawn(connect(port)));
        // Do not overrun the listen backlog.
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut socks = Vec::with_capacity(clients);
    for c in connecting {
        if let Ok(Ok(Some(s))) = tokio::time::timeout(Duration::from_secs(60), c).await {
            socks.push(s);
        }
    }
    assert_eq!(socks.len(), clients, "every client got its stream");
    socks
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The quiet round: every socket is read only once the server has gone
/// idle, one after the other. The first byte's kernel stamp is when the
/// first frame arrived, which must be the marked one: in ms after `since`.
fn sweep_quiet(socks: &[std::net::TcpStream], marker: &str, since: SystemTime) -> Vec<f64> {
    let mut stamps = Vec::with_capacity(socks.len());
    let mut buf = vec![0u8; 64 * 1024];
    for s in socks {
        let Ok(Some((1, Some(first)))) = try_recv_stamped(s, &mut buf[..1]) else {
            continue;
        };
        let mut seen = buf[..1].to_vec();
        while let Ok(Some((n, _))) = try_recv_stamped(s, &mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&seen);
        let first_frame = text.split("\n\n").next().unwrap_or_default();
        if first_frame.contains(marker) {
            stamps.push(ms(first.duration_since(since).unwrap_or_default()));
        }
    }
    stamps
}

/// The eager round: the client reads as it comes, and reports when
/// `marker` arrives; then it reads on, connected, until `done`.
async fn watcher(
    s: std::net::TcpStream,
    marker: String,
    arrived: tokio::sync::mpsc::UnboundedSender<Arrival>,
    mut done: tokio::sync::watch::Receiver<bool>,
) -> Option<()> {
    s.set_nonblocking(true).ok()?;
    let mut s = tokio::net::TcpStream::from_std(s).ok()?;
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
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
        if String::from_utf8_lossy(&seen).contains(&marker) {
            let _ = arrived.send(at);
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
    if let Ok(n) = std::env::var("WATCHERS_FLOOR") {
        return floor_server(n.parse().unwrap());
    }
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
    server.upload("hold", "#!/bin/sh\nexec sleep 600\n").await;
    // A job holding both CPUs: the measured jobs wait behind it, so each
    // sends its SUBMITTED event alone and nothing else fans out meanwhile.
    let hold = server
        .submit("hold", "name: hold\npeers: 1\ncpu: 2\n")
        .await;
    // Running, its events all sent: none may come first to a client.
    let started = Instant::now();
    while server.job_state(hold).await != "RUNNING" {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the holding job never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = server.status("VmRSS:");

    let t = Instant::now();
    let socks = connect_all(port, clients).await;
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
    let pct = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
        (p(0.5), p(0.99), p(1.0))
    };
    let cpu = |(u0, k0): (f64, f64), (u1, k1): (f64, f64)| (u1 - u0, k1 - k0);
    let report = |what: &str, (user, kernel): (f64, f64)| {
        println!(
            "watchers: {what}: server CPU {:.0} ms ({:.1} µs a client: {user:.0} ms user, {kernel:.0} ms kernel)",
            user + kernel,
            (user + kernel) * 1000.0 / clients as f64,
        );
    };

    // Round 1, quiet clients, as if on other machines: nothing reads until
    // the server has gone idle, so the two cores are the server's alone.
    // The kernel stamps each socket's bytes as they arrive.
    let next = server.next_job_id().await;
    let marker = format!("\"job\":{next},");
    let before = server::cpu_ms(server.pid());
    // Timed from the submission sent: the event can reach the clients
    // before the answer reaches the submitter.
    let (sent, sent_at) = (Instant::now(), SystemTime::now());
    let id = server.submit("p", "name: x\npeers: 1\ncpu: 1\n").await;
    let answer = sent.elapsed();
    assert_eq!(id, next);
    let mut last = before;
    loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = server::cpu_ms(server.pid());
        if now == last {
            break;
        }
        last = now;
    }
    let spent = cpu(before, last);
    let mut quiet = sweep_quiet(&socks, &marker, sent_at);
    assert_eq!(quiet.len(), clients, "every client got the event first");
    let (q50, q99, qlast) = pct(&mut quiet);
    println!(
        "watchers: quiet clients: the SUBMITTED event reached all {clients} sockets after the submission was sent: p50 {q50:.1} ms, p99 {q99:.1} ms, last {qlast:.1} ms (the submission was answered in {:.1} ms)",
        ms(answer)
    );
    report("quiet clients (the SUBMITTED and WAITING events)", spent);

    // Round 2, eager clients: each reads as bytes come, sharing the two
    // cores with the server, and stays connected until all have it.
    let next = server.next_job_id().await;
    let marker = format!("\"job\":{next},");
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let (arrived_tx, mut arrived_rx) = tokio::sync::mpsc::unbounded_channel();
    let tasks: Vec<_> = socks
        .into_iter()
        .map(|s| {
            tokio::spawn(watcher(
                s,
                marker.clone(),
                arrived_tx.clone(),
                done_rx.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (server_cpu, own_cpu) = (server::cpu_ms(server.pid()), server::cpu_ms(0));
    let (sent, sent_at) = (Instant::now(), SystemTime::now());
    let id = server.submit("p", "name: y\npeers: 1\ncpu: 1\n").await;
    assert_eq!(id, next);
    let (mut lat, mut in_socket) = (Vec::with_capacity(clients), Vec::with_capacity(clients));
    while lat.len() < clients {
        match tokio::time::timeout(Duration::from_secs(60), arrived_rx.recv()).await {
            Ok(Some(at)) => {
                lat.push(ms(at.read.saturating_duration_since(sent)));
                if let Some(t) = at.socket {
                    in_socket.push(ms(t.duration_since(sent_at).unwrap_or_default()));
                }
            }
            _ => break,
        }
    }
    assert_eq!(lat.len(), clients, "every client got the event");
    let spent = cpu(server_cpu, server::cpu_ms(server.pid()));
    let (own_user, own_kernel) = cpu(own_cpu, server::cpu_ms(0));
    let _ = done_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
    }
    assert_eq!(
        in_socket.len(),
        clients,
        "every read carried its kernel receive time"
    );
    let (s50, s99, slast) = pct(&mut in_socket);
    let (r50, r99, rlast) = pct(&mut lat);
    println!(
        "watchers: eager clients (sharing the 2 cores): the SUBMITTED event reached their sockets: p50 {s50:.1} ms, p99 {s99:.1} ms, last {slast:.1} ms; was read: p50 {r50:.1} ms, p99 {r99:.1} ms, last {rlast:.1} ms"
    );
    report("eager clients", spent);
    println!(
        "watchers: eager clients: their own CPU {:.0} ms",
        own_user + own_kernel
    );
    let frame_len = eager_frame_len();
    drop(server);

    // Round 3, the floor: the same quiet clients of a bare server that
    // writes one frame to every socket from two threads, nothing else.
    // What any server on this machine needs; the dispatcher's figures are
    // to be read against it.
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("WATCHERS_FLOOR", clients.to_string())
        .env("WATCHERS_FRAME", frame_len.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let socks = connect_all(port, clients).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server::cpu_ms(child.id());
    let go = SystemTime::now();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"go\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let spent = cpu(before, server::cpu_ms(child.id()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut floor = sweep_quiet(&socks, &floor_marker(0), go);
    assert_eq!(floor.len(), clients, "every client got the floor's frame");
    let (f50, f99, flast) = pct(&mut floor);
    println!(
        "watchers: floor (a bare server writing one {frame_len} B frame to each socket, 2 threads): p50 {f50:.1} ms, p99 {f99:.1} ms, last {flast:.1} ms; the dispatcher's quiet p99 is {:.1}x it",
        q99 / f99.max(0.001)
    );
    report("floor", spent);

    // Round 4, the floor with eager clients: the same bare server's next
    // frame to clients reading as the dispatcher's eager ones did. What the
    // eager round costs on these two cores whatever the server.
    let marker = floor_marker(1);
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let (arrived_tx, mut arrived_rx) = tokio::sync::mpsc::unbounded_channel();
    let tasks: Vec<_> = socks
        .into_iter()
        .map(|s| {
            tokio::spawn(watcher(
                s,
                marker.clone(),
                arrived_tx.clone(),
                done_rx.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let go = SystemTime::now();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"go\n").unwrap();
    let mut in_socket = Vec::with_capacity(clients);
    while in_socket.len() < clients {
        match tokio::time::timeout(Duration::from_secs(60), arrived_rx.recv()).await {
            Ok(Some(at)) => in_socket.push(ms(at
                .socket
                .expect("a kernel receive time")
                .duration_since(go)
                .unwrap_or_default())),
            _ => break,
        }
    }
    assert_eq!(
        in_socket.len(),
        clients,
        "every eager client got the floor's frame"
    );
    let _ = done_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
    }
    let (e50, e99, elast) = pct(&mut in_socket);
    println!(
        "watchers: floor, eager clients: p50 {e50:.1} ms, p99 {e99:.1} ms, last {elast:.1} ms; the dispatcher's eager p99 is {:.1}x it",
        s99 / e99.max(0.001)
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// What the floor server's `k`th frame holds, for the clients to spot.
fn floor_marker(k: u64) -> String {
    format!("\"job\":{},", 999_999_999 - k)
}

/// The size of a SUBMITTED event's frame as the dispatcher sends it, with
/// its chunk header: what the floor server writes.
fn eager_frame_len() -> usize {
    let data = r#"{"seq":5,"job":999999999,"time":"2026-12-07T03:26:23.930014110Z","type":"job","state":"SUBMITTED","reason":""}"#;
    let frame = format!("id: 5\nevent: job\ndata: {data}\n\n");
    format!("{:X}\r\n{frame}\r\n", frame.len()).len()
}

/// The floor server (`WATCHERS_FLOOR=<clients>`, run by the benchmark as
/// a child): accepts the clients, answers each with a stream's headers,
/// prints its port, and on each line from stdin writes one frame to every
/// socket from two threads (the `k`th holding `floor_marker(k)`), then
/// prints `done`.
fn floor_server(clients: usize) {
    use std::io::{BufRead, Write};
    let len: usize = std::env::var("WATCHERS_FRAME").unwrap().parse().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    let mut socks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n7\r\nid: 0\n\n\r\n")
            .unwrap();
        socks.push(s);
    }
    let mut line = String::new();
    for k in 0.. {
        line.clear();
        if std::io::stdin().lock().read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let marker = floor_marker(k);
        let mut frame = format!("id: {}\nevent: job\ndata: {{{marker}}}\n\n", k + 1).into_bytes();
        frame.resize(len, b' ');
        let (a, b) = socks.split_at_mut(clients / 2);
        std::thread::scope(|t| {
            for half in [a, b] {
                let frame = &frame;
                t.spawn(move || {
                    for s in half.iter_mut() {
                        s.write_all(frame).unwrap();
                    }
                });
            }
        });
        println!("done");
        std::io::stdout().flush().unwrap();
    }
}
