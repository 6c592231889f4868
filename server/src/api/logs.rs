//! Live peer logs: `/api/jobs/<id>/peers/<n>/logs?stream=stdout|stderr`
//! streams a peer's output as server-sent events while the peer runs, then
//! ends. Each `log` event is `{"offset", "text"}` with the byte offset after
//! the chunk as its id, so a client that reconnects with `Last-Event-ID`
//! (or `?offset=`) continues where it stopped. `?follow=false` sends what is
//! there now and ends.
//!
//! Local peers are read from their sandbox files; Mesos peers through their
//! agent's files API (`/files/read` by offset), the same way for the client.

use std::convert::Infallible;
use std::io::SeekFrom;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::job_id;
use crate::db;
use crate::error::ApiError;
use crate::service::AppState;

#[derive(Deserialize)]
pub struct LogQuery {
    stream: Option<String>,
    offset: Option<u64>,
    follow: Option<bool>,
}

type LogStream =
    Sse<axum::response::sse::KeepAliveStream<ReceiverStream<Result<SseEvent, Infallible>>>>;

const CHUNK: usize = 64 * 1024;

pub async fn peer_logs(
    State(st): State<AppState>,
    Path((id, peer)): Path<(String, u32)>,
    headers: HeaderMap,
    Query(q): Query<LogQuery>,
) -> Result<LogStream, ApiError> {
    let id = job_id(&id)?;
    let stream = q.stream.unwrap_or_else(|| "stdout".into());
    if stream != "stdout" && stream != "stderr" {
        return Err(ApiError::bad_request(format!(
            "stream {stream:?} must be stdout or stderr"
        )));
    }
    super::job_with_peer(&st, id, peer).await?;
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "Last-Event-ID is not a byte offset (a whole number this server sent)",
                    )
                })?,
        ),
    };
    let offset = resume.or(q.offset).unwrap_or(0);
    let permit = st.settings.limits.stream_permit()?;
    let source = if let Some(files) = st.settings.files.clone() {
        Source::Agent {
            files,
            stream: stream.clone(),
            at: None,
            failing: false,
        }
    } else {
        Source::Local(
            st.settings
                .jobs_dir
                .join(id.to_string())
                .join(format!("peer-{peer}"))
                .join(&stream),
        )
    };
    let follow = q.follow.unwrap_or(true);
    let (tx, rx) = mpsc::channel(16);
    let mut shutdown = st.shutdown.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let closed = tx.clone();
        tokio::select! {
            _ = tail(st, id, peer, source, offset, follow, tx) => {}
            _ = closed.closed() => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// True once the peer can write no more: it ended, or its job did.
async fn finished(st: &AppState, id: u64, peer: u32) -> bool {
    match st.db.call(move |c| db::job(c, id)).await {
        Ok(Some(j)) => {
            j.job.state.is_terminal()
                || j.peers
                    .get(peer as usize)
                    .is_some_and(|p| p.state.is_terminal())
        }
        _ => true,
    }
}

enum Source {
    Local(std::path::PathBuf),
    Agent {
        files: crate::mesos::files::Files,
        stream: String,
        /// The agent's URL and the file's path there, once the task is recorded.
        at: Option<(String, String)>,
        /// The last read failed (logged once, not on every poll).
        failing: bool,
    },
}

impl Source {
    /// Up to `buf.len()` bytes at `offset`; empty at the end (or while the
    /// file does not exist yet).
    async fn read_at(
        &mut self,
        st: &AppState,
        id: u64,
        peer: u32,
        offset: u64,
        buf: &mut [u8],
    ) -> Vec<u8> {
        match self {
            Source::Local(path) => {
                let Ok(mut f) = tokio::fs::File::open(path).await else {
                    return vec![];
                };
                if f.seek(SeekFrom::Start(offset)).await.is_err() {
                    return vec![];
                }
                match f.read(buf).await {
                    Ok(n) => buf[..n].to_vec(),
                    Err(_) => vec![],
                }
            }
            Source::Agent {
                files,
                stream,
                at,
                failing,
            } => {
                if at.is_none() {
                    let task = st
                        .db
                        .call(move |c| Ok(db::tasks_of(c, id)?.into_iter().find(|t| t.idx == peer)))
                        .await;
                    let Ok(Some(task)) = task else {
                        return vec![];
                    };
                    let path = format!(
                        "{}/{stream}",
                        crate::mesos::files::sandbox(&task.framework_id, &task.task_id)
                    );
                    *at = Some((task.agent_url, path));
                }
                let (agent, path) = at.as_ref().expect("located above");
                match files.read(agent, path, offset, buf.len() as u64).await {
                    Ok(b) => {
                        *failing = false;
                        b
                    }
                    Err(e) => {
                        if !*failing {
                            tracing::warn!(job = id, peer, error = %e, "live log read failed");
                        }
                        *failing = true;
                        vec![]
                    }
                }
            }
        }
    }
}

async fn tail(
    st: AppState,
    id: u64,
    peer: u32,
    mut source: Source,
    mut offset: u64,
    follow: bool,
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
) {
    let mut buf = vec![0u8; CHUNK];
    // Bytes read but not sent: the start of a UTF-8 character the read
    // window cut. `offset` counts what was sent, so a client resuming there
    // reads the whole character.
    let mut held: Vec<u8> = Vec::new();
    let send = |offset: u64, bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        SseEvent::default()
            .id(offset.to_string())
            .event("log")
            .data(json!({ "offset": offset, "text": text }).to_string())
    };
    loop {
        // Read whatever is there, then decide whether more can come.
        let done_before_read = !follow || finished(&st, id, peer).await;
        loop {
            let at = offset + held.len() as u64;
            let chunk = source.read_at(&st, id, peer, at, &mut buf).await;
            if chunk.is_empty() {
                break;
            }
            held.extend_from_slice(&chunk);
            let whole = held.len() - incomplete_tail(&held);
            if whole == 0 {
                continue;
            }
            offset += whole as u64;
            let ev = send(offset, &held[..whole]);
            held.drain(..whole);
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }
        if done_before_read {
            // Nothing more will come: a cut character stays cut.
            if !held.is_empty() {
                offset += held.len() as u64;
                if tx.send(Ok(send(offset, &held))).await.is_err() {
                    return;
                }
                held.clear();
            }
            let _ = tx
                .send(Ok(SseEvent::default()
                    .event("end")
                    .data(json!({ "offset": offset }).to_string())))
                .await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many bytes at the end of `b` are the start of a UTF-8 character
/// whose remaining bytes have not been read yet (0 to 3). Invalid bytes are
/// not held back: they can never become valid.
pub fn incomplete_tail(b: &[u8]) -> usize {
    for back in 1..=b.len().min(3) {
        let tail = &b[b.len() - back..];
        if tail[0] & 0xC0 == 0x80 {
            continue; // a continuation byte: its lead is further back
        }
        return match std::str::from_utf8(tail) {
            Err(e) if e.valid_up_to() == 0 && e.error_len().is_none() => back,
            _ => 0,
        };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::incomplete_tail;

    #[test]
    fn a_character_cut_by_the_read_window_is_held_back_and_nothing_else() {
        assert_eq!(incomplete_tail(b"abc"), 0);
        assert_eq!(incomplete_tail(b""), 0);
        assert_eq!(incomplete_tail("é".as_bytes()), 0);
        assert_eq!(incomplete_tail(b"a\xC3"), 1);
        assert_eq!(incomplete_tail(b"a\xF0\x9F"), 2);
        assert_eq!(incomplete_tail(b"a\xF0\x9F\x98"), 3);
        assert_eq!(incomplete_tail("a😀".as_bytes()), 0);
        // Bytes that can never be valid are not held.
        assert_eq!(incomplete_tail(b"a\xFF"), 0);
        assert_eq!(incomplete_tail(b"a\xA9"), 0);
        assert_eq!(incomplete_tail(b"\xC3\x28"), 0);
    }
}
