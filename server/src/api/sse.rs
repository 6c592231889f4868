//! Server-sent events: `/api/events` (every job) and `/api/jobs/<id>/events`
//! (one job). Each event's `id` is its sequence number; a client that
//! reconnects with `Last-Event-ID` (or `?after=`) gets what it missed from
//! the database, then live events. `/api/events` without either starts
//! now: a year of history is not what a new watcher wants (`?after=0`
//! replays it); its first frame is an `id` alone, naming where it starts.
//! A job's stream starts at that job's first event, and ends once that
//! job's archive is ready, so `curl -N` returns when there is nothing more
//! to see; its last event is `end` (no id), which tells a browser's
//! EventSource that the end is on purpose and not a drop to reconnect after.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use app::model::{Event, EventKind};

use super::job_id;
use crate::db;
use crate::error::ApiError;
use crate::events::Live;
use crate::service::AppState;

#[derive(Deserialize)]
pub struct After {
    after: Option<u64>,
}

/// Where to resume (`None`: neither said). Only this server's own event
/// ids are accepted: a `Last-Event-ID` it did not send is refused, not
/// silently read as 0.
fn last_event_id(headers: &HeaderMap, q: &After) -> Result<Option<u64>, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(q.after),
        Some(v) => v
            .to_str()
            .ok()
            .map(str::trim)
            .and_then(|v| {
                if v.is_empty() {
                    Some(Some(0))
                } else {
                    v.parse().ok().map(Some)
                }
            })
            .ok_or_else(|| {
                let shown: String = String::from_utf8_lossy(v.as_bytes())
                    .chars()
                    .take(40)
                    .collect();
                ApiError::bad_request(format!(
                    "Last-Event-ID {shown:?} is not an event id (a whole number this server sent)"
                ))
            }),
    }
}

type EventStream =
    Sse<axum::response::sse::KeepAliveStream<ReceiverStream<Result<SseEvent, Infallible>>>>;

pub async fn all_events(
    State(st): State<AppState>,
    version: axum::http::Version,
    tap: Option<axum::Extension<crate::ConnTap>>,
    headers: HeaderMap,
    Query(q): Query<After>,
) -> Result<Response, ApiError> {
    let after = last_event_id(&headers, &q)?;
    let permit = st.settings.limits.stream_permit()?;
    // Subscribed before "now" is read, and read before the answer: an event
    // recorded once the client has its response is never skipped. Starting
    // now reads nothing from the database: a thousand dashboards
    // reconnecting at once cost it nothing.
    let (sub, after, catch_up) = match after {
        Some(a) => (st.bus.subscribe(), a, true),
        None => {
            let (sub, now) = st.bus.subscribe_now().await;
            (sub, now, false)
        }
    };
    let watch = Watch {
        catch_up,
        keep_alive: Box::pin(tokio::time::sleep(KEEP_ALIVE)),
        shutdown: st.shutdown.clone(),
        st,
        last: after,
        sub: Some(sub),
        // Chunks are what a writer thread sends: HTTP/1.1 only.
        tap: tap
            .filter(|_| version == axum::http::Version::HTTP_11)
            .map(|t| t.0 .0),
        handed: false,
        _permit: permit,
    };
    // First an `id` with no data: no event, but the point the stream starts
    // from, which an EventSource that drops before any event came resumes
    // at (a stream started anew would begin at a later now, and whatever
    // happened in between would be lost).
    let start = Bytes::from(format!("id: {after}\n\n"));
    let body = axum::body::Body::from_stream(
        futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(start)))
            .chain(futures_util::stream::unfold(watch, Watch::next)),
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Most live events sent in one write when several are waiting.
const COALESCE: usize = 64;

/// One `/api/events` client, the stream of every job's events. Once it
/// has caught up, its socket goes to a writer thread (`fanout`) and this
/// body only waits for the end: the server stopping, or the writer
/// dropping a client too slow to keep up (the response then fails, and the
/// client resumes with `Last-Event-ID`).
///
/// Without a connection to hand over (HTTP/1.0), the body reads the
/// broadcast itself, so an event costs the client one wake-up of its
/// connection and a reference to frames made once. A client too slow for
/// the broadcast's backlog falls behind it and catches up from the
/// database, never buffered here.
struct Watch {
    st: AppState,
    last: u64,
    /// `None` once handed over.
    sub: Option<broadcast::Receiver<Arc<Live>>>,
    tap: Option<Arc<crate::fanout::Tap>>,
    handed: bool,
    catch_up: bool,
    keep_alive: std::pin::Pin<Box<tokio::time::Sleep>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    // Held while the stream lives: it counts against --max-event-streams.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Watch {
    fn drop(&mut self) {
        // The writer stops writing to a socket whose stream is gone.
        if let Some(tap) = self.tap.as_ref().filter(|_| self.handed) {
            tap.end();
        }
    }
}

type Frame = Result<Bytes, std::io::Error>;

impl Watch {
    /// The stream's end: clean, unless a writer left a chunk half-sent.
    fn finish(self) -> Option<(Frame, Watch)> {
        match &self.tap {
            Some(tap) if self.handed && !tap.end() => Some((
                Err(std::io::Error::other("event stream ended mid-chunk")),
                self,
            )),
            _ => None,
        }
    }

    async fn next(mut self) -> Option<(Frame, Watch)> {
        loop {
            if *self.shutdown.borrow() {
                return self.finish();
            }
            if self.handed {
                let tap = self.tap.clone()?;
                tokio::select! {
                    _ = tap.dropped() => {
                        return Some((Err(std::io::Error::other("event stream client dropped")), self));
                    }
                    r = self.shutdown.changed() => {
                        if r.is_err() {
                            return self.finish();
                        }
                    }
                }
                continue;
            }
            if !self.catch_up && self.tap.is_some() {
                // Handed over once nothing waits in this stream's own
                // subscription: the writers have every later event.
                match self.st.bus.fanout().await {
                    Some(fan) => {
                        let idle = self.sub.as_ref().is_none_or(|s| s.is_empty());
                        if idle && self.last >= fan.floor() {
                            if self.tap.as_ref().is_some_and(|t| t.request(fan, self.last)) {
                                self.handed = true;
                                self.sub = None;
                                continue;
                            }
                            self.tap = None;
                        }
                    }
                    None => self.tap = None,
                }
            }
            if self.catch_up {
                let from = self.last;
                let batch = match self
                    .st
                    .db
                    .call(move |c| db::events_after(c, from, None, 500))
                    .await
                {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "could not read events");
                        return None;
                    }
                };
                let Some(end) = batch.last() else {
                    self.catch_up = false;
                    continue;
                };
                self.last = end.seq;
                let mut out = BytesMut::new();
                for ev in &batch {
                    let json = serde_json::to_string(ev).unwrap_or_default();
                    out.extend_from_slice(&crate::events::sse_frame(ev, &json));
                }
                return Some((Ok(out.freeze()), self));
            }
            let sub = self.sub.as_mut()?;
            tokio::select! {
                r = sub.recv() => match r {
                    Ok(live) => {
                        if live.event.seq <= self.last {
                            continue;
                        }
                        self.last = live.event.seq;
                        let mut frame = live.frame.clone();
                        // Events already waiting go in the same write.
                        let mut more: Option<BytesMut> = None;
                        for _ in 0..COALESCE {
                            match sub.try_recv() {
                                Ok(l) if l.event.seq > self.last => {
                                    self.last = l.event.seq;
                                    more.get_or_insert_with(|| BytesMut::from(&frame[..]))
                                        .extend_from_slice(&l.frame);
                                }
                                Ok(_) => {}
                                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                    self.catch_up = true;
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        if let Some(m) = more {
                            frame = m.freeze();
                        }
                        return Some((Ok(frame), self));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up = true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.keep_alive.as_mut() => {
                    self.keep_alive.as_mut().reset(tokio::time::Instant::now() + KEEP_ALIVE);
                    return Some((Ok(Bytes::from_static(b":\n\n")), self));
                }
                r = self.shutdown.changed() => {
                    if r.is_err() {
                        return None;
                    }
                }
            }
        }
    }
}

pub async fn job_events(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<After>,
) -> Result<EventStream, ApiError> {
    let id = job_id(&id)?;
    let after = last_event_id(&headers, &q)?.unwrap_or(0);
    if st.db.call(move |c| db::sha_of_job(c, id)).await?.is_none() {
        return Err(crate::service::no_job(&st, id).await);
    }
    let permit = st.settings.limits.stream_permit()?;
    let sub = st.bus.subscribe();
    Ok(stream(st, Some(id), after, sub, permit))
}

fn to_sse(ev: &Event, json: &str) -> SseEvent {
    SseEvent::default()
        .id(ev.seq.to_string())
        .event(crate::events::sse_name(ev))
        .data(json)
}

/// `sub` was made before `after` was known, so that nothing recorded after
/// it falls between the backlog and the live events.
fn stream(
    st: AppState,
    job: Option<u64>,
    after: u64,
    sub: broadcast::Receiver<Arc<Live>>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> EventStream {
    let (tx, rx) = mpsc::channel(256);
    let usage = job.map(|_| st.bus.subscribe_usage());
    let mut shutdown = st.shutdown.clone();
    tokio::spawn(async move {
        // Held while the stream lives: it counts against --max-event-streams.
        let _permit = permit;
        let closed = tx.clone();
        let usage_tx = tx.clone();
        tokio::select! {
            _ = pump(st, job, after, sub, tx) => {}
            _ = usage_events(job, usage, usage_tx) => {}
            _ = closed.closed() => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    });
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Sends one event; false when the stream should end (client gone, or the
/// job's last event sent, followed by `end`).
async fn send(
    tx: &mpsc::Sender<Result<SseEvent, Infallible>>,
    ev: &Event,
    json: &str,
    job: Option<u64>,
) -> bool {
    if tx.send(Ok(to_sse(ev, json))).await.is_err() {
        return false;
    }
    let last = job.is_some() && matches!(ev.kind, EventKind::Archive { .. });
    if last {
        let end = SseEvent::default()
            .event("end")
            .data(serde_json::json!({ "job": ev.job, "after": ev.seq }).to_string());
        let _ = tx.send(Ok(end)).await;
    }
    !last
}

/// A job stream's live `usage` events (no id: samples are served whole by
/// the usage route, not replayed). A slow client misses some, not others.
async fn usage_events(
    job: Option<u64>,
    sub: Option<broadcast::Receiver<crate::usage::Sample>>,
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
) {
    let (Some(job), Some(mut sub)) = (job, sub) else {
        return std::future::pending().await;
    };
    loop {
        match sub.recv().await {
            Ok(s) if s.job == job => {
                let ev = SseEvent::default()
                    .event("usage")
                    .data(s.to_json().to_string());
                if tx.try_send(Ok(ev)).is_err() && tx.is_closed() {
                    return;
                }
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

async fn pump(
    st: AppState,
    job: Option<u64>,
    mut last: u64,
    mut sub: broadcast::Receiver<Arc<Live>>,
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
) {
    loop {
        // Catch up from the database (first connection, resume, or lag).
        loop {
            let from = last;
            let batch = match st
                .db
                .call(move |c| db::events_after(c, from, job, 500))
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "could not read events");
                    return;
                }
            };
            if batch.is_empty() {
                break;
            }
            for ev in &batch {
                last = ev.seq;
                let json = serde_json::to_string(ev).unwrap_or_default();
                if !send(&tx, ev, &json, job).await {
                    return;
                }
            }
        }
        loop {
            match sub.recv().await {
                Ok(live) => {
                    let ev = &live.event;
                    if ev.seq <= last || job.is_some_and(|j| j != ev.job) {
                        continue;
                    }
                    last = ev.seq;
                    if !send(&tx, ev, &live.json, job).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
