//! The write path of `/api/events` at scale: a client that has caught up
//! is handed from its hyper connection to one of a few writer threads (one
//! a core), which write each event's bytes, framed once, straight to every
//! socket they hold.
//!
//! Why: through hyper, an event costs each client a wake-up of its
//! connection's task, a poll of its body and hyper's chunk encoding before
//! the one `writev` that matters. With 10,000 watchers that was three times
//! what writing the bytes alone costs (the watchers bench's floor). Here a
//! writer makes one chunk for all its clients and writes it with one
//! `write` each, in a loop, with nothing woken.
//!
//! How a connection is handed over, without two writers ever mixing their
//! bytes in one socket: the stream's body asks for the hand-over and then
//! stays pending; hyper writes what it holds (the headers and every frame
//! the body gave it) and then calls [`Conn`]'s `poll_flush` with its buffer
//! empty (`Buffered::poll_flush` only flushes the socket once its own
//! queue is written). That call gives the socket to a writer, which from
//! then on is the only one to write to it. The response is chunked
//! (HTTP/1.1), so the writer sends chunks; other HTTP versions stay on the
//! hyper path.
//!
//! A client that does not keep up is not buffered without bound: its
//! socket's send buffer is [`SEND_BUFFER`], what the socket does not take
//! waits in a buffer of at most [`MAX_PENDING`] bytes, retried as the
//! writer goes round; past that, or further behind than the
//! writer's recent events, the client is dropped. Its body then fails the
//! response (hyper closes the connection, no clean end), and the client
//! reconnects with `Last-Event-ID` and catches up from the database.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::events::Live;

/// Most bytes a client's socket may leave unwritten before it is dropped.
pub const MAX_PENDING: usize = 64 * 1024;

/// The kernel's send buffer of a handed-over socket (Linux doubles it).
/// Without a size set, loopback or a fast link lets it grow to 4 MiB a
/// client; an event stream needs nothing like that to keep up, and a
/// client that does not read would hold it all.
const SEND_BUFFER: usize = 256 * 1024;

/// Events a writer keeps, for clients that join behind its newest one
/// (as many as the broadcast keeps for the hyper path).
const RING: usize = 4096;

/// Most messages handled in one round: a burst of events becomes writes of
/// at most this many events each, so that a round stays short.
const BATCH: usize = 256;

/// How often a client with nothing new gets a comment, so that proxies and
/// browsers do not close an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How soon bytes a socket did not take are tried again.
const RETRY: Duration = Duration::from_millis(20);

/// A keep-alive comment (`:`), as one chunk.
const KEEP_ALIVE_CHUNK: &[u8] = b"3\r\n:\n\n\r\n";

/// A served connection: the socket, shared with a writer once its stream
/// is handed over, and the tap through which that happens.
pub struct Conn {
    stream: Arc<TcpStream>,
    tap: Arc<Tap>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> (Conn, Arc<Tap>) {
        let tap = Arc::new(Tap::default());
        (
            Conn {
                stream: Arc::new(stream),
                tap: tap.clone(),
            },
            tap,
        )
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read_buf(buf) {
                Ok(_) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// hyper calls this with nothing of its own left to write: the moment
    /// a requested hand-over can happen.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.tap.requested.load(Ordering::Acquire) {
            self.tap.hand_over(&self.stream);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = socket2::SockRef::from(self.stream.as_ref()).shutdown(std::net::Shutdown::Write);
        Poll::Ready(match r {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        })
    }
}

/// Who writes to a connection's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Mode {
    /// hyper, as for every response.
    #[default]
    Hyper,
    /// hyper, until it next flushes with nothing left of its own.
    Requested,
    /// A writer thread, alone.
    Direct,
    /// Nobody any more: the stream is over.
    Ended,
}

#[derive(Default)]
struct TapState {
    mode: Mode,
    /// Where the client is, and the writer it goes to, until handed over.
    join: Option<(u64, mpsc::Sender<Msg>)>,
    /// A chunk was only partly written: the response cannot end cleanly.
    torn: bool,
}

/// A connection's switch between hyper and a writer thread.
#[derive(Default)]
pub struct Tap {
    requested: AtomicBool,
    state: Mutex<TapState>,
    /// Tells the stream's body that a writer dropped the client.
    dropped: Notify,
}

impl Tap {
    fn state(&self) -> std::sync::MutexGuard<'_, TapState> {
        // A writer that panicked mid-write leaves a state still coherent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for the socket to go to `fanout`'s next writer, with the client
    /// having had every event up to `last`; done at hyper's next flush.
    /// False if this connection was handed over before (a stream that ended
    /// on it): a socket goes to a writer once, so that a writer that still
    /// holds it can never write into a later response.
    pub fn request(&self, fanout: &Fanout, last: u64) -> bool {
        let mut s = self.state();
        if s.mode != Mode::Hyper {
            return false;
        }
        s.mode = Mode::Requested;
        s.join = Some((last, fanout.next_writer()));
        self.requested.store(true, Ordering::Release);
        true
    }

    fn hand_over(self: &Arc<Self>, stream: &Arc<TcpStream>) {
        let mut s = self.state();
        self.requested.store(false, Ordering::Release);
        let Some((last, writer)) = s.join.take() else {
            return;
        };
        if s.mode != Mode::Requested {
            return;
        }
        s.mode = Mode::Direct;
        let _ = socket2::SockRef::from(stream.as_ref()).set_send_buffer_size(SEND_BUFFER);
        let client = Client {
            stream: stream.clone(),
            tap: self.clone(),
            last,
            pending: BytesMut::new(),
            wrote: Instant::now(),
        };
        if writer.send(Msg::Join(client)).is_err() {
            // The writers are gone (the server is stopping).
            s.mode = Mode::Ended;
            drop(s);
            self.dropped.notify_one();
        }
    }

    /// Waits until a writer drops the client (too slow, too far behind, or
    /// gone).
    pub async fn dropped(&self) {
        loop {
            if self.state().mode == Mode::Ended {
                return;
            }
            self.dropped.notified().await;
        }
    }

    /// Ends the stream from the body's side (server stopping, or the body
    /// dropped): no writer writes to the socket after this returns. True
    /// when the response can still end cleanly (no chunk left half-sent).
    pub fn end(&self) -> bool {
        let mut s = self.state();
        s.mode = Mode::Ended;
        s.join = None;
        self.requested.store(false, Ordering::Release);
        !s.torn
    }
}

enum Msg {
    Live(Arc<Live>),
    Join(Client),
    Stop,
}

/// One client as a writer holds it.
struct Client {
    stream: Arc<TcpStream>,
    tap: Arc<Tap>,
    /// The newest event it has been given (written or pending).
    last: u64,
    /// What its socket has not taken yet.
    pending: BytesMut,
    wrote: Instant,
}

/// What became of a write.
enum Wrote {
    Ok,
    /// The client is to be dropped; why, for the log (and, when it did not
    /// keep up, the metric).
    Drop(&'static str),
}

/// The reason `/metrics` counts a drop under, if it counts it.
fn counted(why: &'static str) -> Option<&'static str> {
    match why {
        SLOW => Some("slow"),
        BEHIND => Some("behind"),
        _ => None,
    }
}

const SLOW: &str = "too slow: its socket did not take what it was sent";
const BEHIND: &str = "behind the writer's recent events";

impl Client {
    /// Writes `data` after anything still pending, keeping what the socket
    /// does not take (up to [`MAX_PENDING`]).
    fn write(&mut self, data: &[u8], now: Instant) -> Wrote {
        let Client {
            stream,
            tap,
            pending,
            wrote,
            ..
        } = self;
        let mut s = tap.state();
        if s.mode != Mode::Direct {
            return Wrote::Drop("stream ended");
        }
        if !pending.is_empty() {
            if pending.len() + data.len() > MAX_PENDING {
                return Wrote::Drop(SLOW);
            }
            pending.extend_from_slice(data);
            return flush(stream, pending, &mut s, wrote, now);
        }
        match stream.try_write(data) {
            Ok(n) if n == data.len() => {
                *wrote = now;
                Wrote::Ok
            }
            Ok(n) => {
                *wrote = now;
                pending.extend_from_slice(&data[n..]);
                s.torn = true;
                Wrote::Ok
            }
            // Nothing of this chunk went out: the response is still whole
            // unless an earlier chunk was torn.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pending.extend_from_slice(data);
                Wrote::Ok
            }
            Err(_) => Wrote::Drop("write failed"),
        }
    }

    /// Tries what is pending again.
    fn retry(&mut self, now: Instant) -> Wrote {
        let Client {
            stream,
            tap,
            pending,
            wrote,
            ..
        } = self;
        let mut s = tap.state();
        if s.mode != Mode::Direct {
            return Wrote::Drop("stream ended");
        }
        flush(stream, pending, &mut s, wrote, now)
    }

    fn drop_client(self, why: &'static str, metrics: &crate::metrics::Metrics) {
        let mut s = self.tap.state();
        if s.mode == Mode::Direct {
            tracing::debug!(why, last = self.last, "event stream client dropped");
            if let Some(reason) = counted(why) {
                metrics.stream_dropped(reason);
            }
            s.mode = Mode::Ended;
            drop(s);
            self.tap.dropped.notify_one();
        }
    }
}

/// Writes what is pending, as far as the socket takes it.
fn flush(
    stream: &TcpStream,
    pending: &mut BytesMut,
    s: &mut TapState,
    wrote: &mut Instant,
    now: Instant,
) -> Wrote {
    while !pending.is_empty() {
        match stream.try_write(pending) {
            Ok(0) => return Wrote::Drop("write failed"),
            Ok(n) => {
                *wrote = now;
                let _ = pending.split_to(n);
                s.torn = !pending.is_empty();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Wrote::Ok,
            Err(_) => return Wrote::Drop("write failed"),
        }
    }
    Wrote::Ok
}

/// The writer threads. Made when the first client is handed over; every
/// event announced from then on reaches each writer, in order.
pub struct Fanout {
    writers: Vec<mpsc::Sender<Msg>>,
    next: AtomicUsize,
    /// Every event after this one reached the writers.
    floor: u64,
}

impl Fanout {
    /// Starts one writer a core, their events starting after `floor`.
    pub fn start(floor: u64, metrics: Arc<crate::metrics::Metrics>) -> std::io::Result<Fanout> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let mut writers = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = mpsc::channel();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("sse-writer-{i}"))
                .spawn(move || Writer::new(rx, floor, metrics).run())?;
            writers.push(tx);
        }
        Ok(Fanout {
            writers,
            next: AtomicUsize::new(0),
            floor,
        })
    }

    /// Every event after this one reaches the writers.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Gives an announced event to every writer (called in sequence order).
    pub fn publish(&self, live: &Arc<Live>) {
        for w in &self.writers {
            let _ = w.send(Msg::Live(live.clone()));
        }
    }

    fn next_writer(&self) -> mpsc::Sender<Msg> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.writers.len();
        self.writers[i].clone()
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        for w in &self.writers {
            let _ = w.send(Msg::Stop);
        }
    }
}

struct Writer {
    rx: mpsc::Receiver<Msg>,
    metrics: Arc<crate::metrics::Metrics>,
    /// The newest events, oldest first; every event after `floor` is here.
    ring: VecDeque<Arc<Live>>,
    floor: u64,
    newest: u64,
    clients: Vec<Client>,
    keep_alive_due: Instant,
    stop: bool,
}

impl Writer {
    fn new(rx: mpsc::Receiver<Msg>, floor: u64, metrics: Arc<crate::metrics::Metrics>) -> Writer {
        Writer {
            rx,
            metrics,
            ring: VecDeque::with_capacity(RING),
            floor,
            newest: floor,
            clients: Vec::new(),
            keep_alive_due: Instant::now() + KEEP_ALIVE,
            stop: false,
        }
    }

    fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let now = Instant::now();
            let wait = if self.clients.iter().any(|c| !c.pending.is_empty()) {
                RETRY
            } else {
                self.keep_alive_due.saturating_duration_since(now)
            };
            match self.rx.recv_timeout(wait) {
                Ok(m) => batch.push(m),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < BATCH {
                match self.rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            if !self.round(&mut batch) {
                break;
            }
        }
        for c in self.clients.drain(..) {
            c.drop_client("server stopping", &self.metrics);
        }
    }

    /// Takes in messages: events into the ring, clients into the list.
    fn take(&mut self, m: Msg) {
        match m {
            Msg::Live(live) => {
                if live.event.seq <= self.newest {
                    return;
                }
                self.newest = live.event.seq;
                if self.ring.len() == RING {
                    if let Some(old) = self.ring.pop_front() {
                        self.floor = old.event.seq;
                    }
                }
                self.ring.push_back(live);
            }
            Msg::Join(c) => self.clients.push(c),
            Msg::Stop => self.stop = true,
        }
    }

    /// Takes in a batch of messages and writes what they bring to every
    /// client; false on `Stop`.
    ///
    /// Events that arrive while a round goes through the clients join it:
    /// the clients not written yet get them in the same write (a job's
    /// SUBMITTED and the WAITING just after it are one write for most
    /// clients, not two), and a further pass gives them to the others.
    fn round(&mut self, batch: &mut Vec<Msg>) -> bool {
        for m in batch.drain(..) {
            self.take(m);
        }
        let now = Instant::now();
        let keep_alive = now >= self.keep_alive_due;
        if keep_alive {
            self.keep_alive_due = now + KEEP_ALIVE;
        }
        // Chunks made this pass, by the event they start after: a few at
        // most (the clients that were up to date, and ones that joined).
        let mut chunks: Vec<(u64, Bytes)> = Vec::new();
        let mut made_for = self.newest;
        loop {
            let start = self.newest;
            let mut i = 0;
            while i < self.clients.len() {
                if i % 64 == 63 {
                    while let Ok(m) = self.rx.try_recv() {
                        self.take(m);
                    }
                }
                if self.newest != made_for {
                    chunks.clear();
                    made_for = self.newest;
                }
                let c = &self.clients[i];
                let wrote = if c.last >= self.newest {
                    let c = &mut self.clients[i];
                    if !c.pending.is_empty() {
                        c.retry(now)
                    } else if keep_alive && now.duration_since(c.wrote) >= KEEP_ALIVE {
                        c.write(KEEP_ALIVE_CHUNK, now)
                    } else {
                        Wrote::Ok
                    }
                } else if c.last < self.floor {
                    Wrote::Drop(BEHIND)
                } else {
                    let after = c.last;
                    let chunk = match chunks.iter().find(|(a, _)| *a == after) {
                        Some((_, b)) => b.clone(),
                        None => {
                            let b = self.chunk_after(after);
                            chunks.push((after, b.clone()));
                            b
                        }
                    };
                    let c = &mut self.clients[i];
                    c.last = self.newest;
                    c.write(&chunk, now)
                };
                match wrote {
                    Wrote::Ok => i += 1,
                    Wrote::Drop(why) => self.clients.swap_remove(i).drop_client(why, &self.metrics),
                }
            }
            // Events came during the pass: the clients written before them
            // get them now.
            if self.newest == start || self.stop {
                break;
            }
        }
        !self.stop
    }

    /// The ring's events after `after`, as one HTTP/1.1 chunk.
    fn chunk_after(&self, after: u64) -> Bytes {
        // The ring is in sequence order: the first event to send is found
        // by bisection.
        let start = self.ring.partition_point(|l| l.event.seq <= after);
        let len: usize = self.ring.range(start..).map(|l| l.frame.len()).sum();
        let mut out = BytesMut::with_capacity(len + 16);
        out.put_slice(format!("{len:X}\r\n").as_bytes());
        for l in self.ring.range(start..) {
            out.put_slice(&l.frame);
        }
        out.put_slice(b"\r\n");
        out.freeze()
    }
}
