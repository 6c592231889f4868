//! The event bus: every state change is written to the database first, then
//! broadcast to live subscribers (SSE). Recording and broadcasting happen
//! under one lock so subscribers see events in sequence order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use app::model::{Event, EventKind};
use tokio::sync::{broadcast, Mutex};

use crate::db::Db;
use crate::error::Internal;

/// An event as broadcast: serialized and framed once, whatever the number
/// of clients; each client's stream sends the same bytes (a reference
/// count, not a copy).
#[derive(Debug)]
pub struct Live {
    pub event: Event,
    pub json: String,
    /// The event as a server-sent-events frame (`id`, `event`, `data`).
    pub frame: bytes::Bytes,
}

impl Live {
    fn new(event: Event) -> Arc<Live> {
        let json = serde_json::to_string(&event).unwrap_or_default();
        let frame = sse_frame(&event, &json);
        Arc::new(Live { event, json, frame })
    }
}

/// The SSE name of an event's kind.
pub fn sse_name(ev: &Event) -> &'static str {
    match ev.kind {
        EventKind::Job { .. } => "job",
        EventKind::Peer { .. } => "peer",
        EventKind::Archive { .. } => "archive",
        EventKind::Attempt { .. } => "attempt",
    }
}

/// One event as an SSE frame. Compact JSON holds no line break, so it is
/// one `data:` line.
pub fn sse_frame(ev: &Event, json: &str) -> bytes::Bytes {
    debug_assert!(!json.contains('\n'));
    format!("id: {}\nevent: {}\ndata: {json}\n\n", ev.seq, sse_name(ev)).into()
}

#[derive(Clone)]
pub struct Bus {
    db: Db,
    tx: broadcast::Sender<Arc<Live>>,
    order: Arc<Mutex<()>>,
    /// The newest event's sequence number, moved under `order` as each
    /// event is broadcast: where a stream that starts now begins.
    last: Arc<AtomicU64>,
    metrics: Arc<crate::metrics::Metrics>,
    usage: broadcast::Sender<crate::usage::Sample>,
    /// The writer threads of `/api/events`, once a client was handed to
    /// them.
    fanout: Arc<std::sync::OnceLock<crate::fanout::Fanout>>,
}

impl Bus {
    /// A bus over `db`, whose newest event is `last_seq`.
    pub fn new(db: Db, last_seq: u64) -> Bus {
        let (tx, _) = broadcast::channel(4096);
        Bus {
            db,
            tx,
            order: Arc::new(Mutex::new(())),
            last: Arc::new(AtomicU64::new(last_seq)),
            metrics: Arc::default(),
            usage: broadcast::channel(1024).0,
            fanout: Arc::default(),
        }
    }

    /// Announces usage samples (already stored) to live job streams.
    pub fn publish_usage(&self, s: crate::usage::Sample) {
        let _ = self.usage.send(s);
    }

    pub fn subscribe_usage(&self) -> broadcast::Receiver<crate::usage::Sample> {
        self.usage.subscribe()
    }

    /// What this process counts for `/metrics`.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn record(&self, job: u64, kind: EventKind) -> Result<Event, Internal> {
        let _in_order = self.order.lock().await;
        let ev = self
            .db
            .call(move |c| crate::db::record(c, job, &kind))
            .await?;
        self.announce(&ev);
        Ok(ev)
    }

    /// Records several events in one transaction, then announces them in order.
    pub async fn record_many(&self, events: Vec<(u64, EventKind)>) -> Result<Vec<Event>, Internal> {
        let _in_order = self.order.lock().await;
        let evs = self
            .db
            .call(move |c| crate::db::record_many(c, &events))
            .await?;
        for ev in &evs {
            self.announce(ev);
        }
        Ok(evs)
    }

    /// Records a new job (state SUBMITTED) and announces it.
    pub async fn insert_job(&self, job: crate::db::NewJob) -> Result<Event, Internal> {
        let _in_order = self.order.lock().await;
        let ev = self
            .db
            .call(move |c| crate::db::insert_job(c, &job))
            .await?;
        self.announce(&ev);
        Ok(ev)
    }

    /// Records a sweep and all its jobs in one transaction, then announces
    /// each job's SUBMITTED.
    pub async fn insert_sweep(
        &self,
        req: app::sweep::SweepRequest,
        uid: String,
        repeat: u32,
        jobs: Vec<crate::db::NewJob>,
    ) -> Result<(u64, Vec<Event>), Internal> {
        let _in_order = self.order.lock().await;
        let (sweep, evs) = self
            .db
            .call(move |c| crate::db::insert_sweep(c, &req, &uid, repeat, jobs))
            .await?;
        for ev in &evs {
            self.announce(ev);
        }
        Ok((sweep, evs))
    }

    /// Broadcasts a recorded event; called with `order` held.
    fn announce(&self, ev: &Event) {
        let live = Live::new(ev.clone());
        // The writers first: a client handed to them may already have had
        // this event from the broadcast, never the other way round.
        if let Some(f) = self.fanout.get() {
            f.publish(&live);
        }
        let _ = self.tx.send(live);
        self.last.store(ev.seq, Ordering::Release);
    }

    /// The writer threads of `/api/events`, started on first use (under
    /// the recording lock, so that every event after their floor reaches
    /// them). `None` if they could not be started.
    pub async fn fanout(&self) -> Option<&crate::fanout::Fanout> {
        if let Some(f) = self.fanout.get() {
            return Some(f);
        }
        let _in_order = self.order.lock().await;
        if self.fanout.get().is_none() {
            match crate::fanout::Fanout::start(
                self.last.load(Ordering::Acquire),
                self.metrics.clone(),
            ) {
                Ok(f) => {
                    let _ = self.fanout.set(f);
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not start the event stream writers");
                    return None;
                }
            }
        }
        self.fanout.get()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Live>> {
        self.tx.subscribe()
    }

    /// A subscription from now, and the newest event before it. Taken
    /// under the recording lock, so that every event up to that one was
    /// broadcast before the subscription and every later one after it:
    /// the stream needs no read of the database to start.
    pub async fn subscribe_now(&self) -> (broadcast::Receiver<Arc<Live>>, u64) {
        let _in_order = self.order.lock().await;
        (self.tx.subscribe(), self.last.load(Ordering::Acquire))
    }
}
