//! Server-sent events, read off a real connection.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::helpers::*;

type Ev = (u64, String, Value);

/// Reads SSE frames until `n` events arrived or the stream ended.
async fn read_events(resp: reqwest::Response, n: usize) -> Vec<Ev> {
    read_until(resp, |seen| seen.len() >= n).await
}

/// Reads SSE events until `done` says so or the stream ended.
async fn read_until(resp: reqwest::Response, done: impl Fn(&[Ev]) -> bool) -> Vec<Ev> {
    read_until_or(resp, done, Duration::from_secs(60), false).await
}

/// Like `read_until`, giving up after `within` in all; with `ids`, an `id`
/// alone (no event: where a stream starts) is kept too, with no name.
async fn read_until_or(
    resp: reqwest::Response,
    done: impl Fn(&[Ev]) -> bool,
    within: Duration,
    ids: bool,
) -> Vec<Ev> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out: Vec<Ev> = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    while !done(&out) {
        let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, body.next()).await else {
            break;
        };
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let (mut id, mut name, mut data) = (0, String::new(), Value::Null);
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().unwrap();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).unwrap();
                }
            }
            // Events with ids (not `end`), and with `ids` a lone id.
            let keep = if data.is_null() {
                ids && frame.starts_with("id: ")
            } else {
                id > 0
            };
            if keep && !done(&out) {
                out.push((id, name, data));
            }
        }
    }
    out
}

#[tokio::test]
async fn a_job_stream_shows_every_state_change_and_ends_with_the_archive() {
    let app = spawn_app().await;
    app.upload("p", "#!/bin/sh\necho hi\n").await;
    let id = app.submit("p", "name: r\npeers: 2\ncpu: 0.1\n").await;
    let resp = app
        .client
        .get(app.url(&format!("/api/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = read_events(resp, 1000).await;
    let jobs: Vec<&str> = events
        .iter()
        .filter(|e| e.1 == "job")
        .map(|e| e.2["state"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["SUBMITTED", "RUNNING", "FINISHED"]);
    let peer0: Vec<&str> = events
        .iter()
        .filter(|e| e.1 == "peer" && e.2["index"] == 0)
        .map(|e| e.2["state"].as_str().unwrap())
        .collect();
    assert_eq!(peer0, ["STARTING", "RUNNING", "FINISHED"]);
    assert_eq!(
        events.last().unwrap().1,
        "archive",
        "the stream ends after the archive event"
    );
    let ids: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
}

#[tokio::test]
async fn a_client_resumes_with_last_event_id_and_misses_nothing() {
    let app = spawn_app().await;
    app.upload("p", "#!/bin/sh\nsleep 0.3\n").await;
    let all = app.client.get(app.url("/api/events")).send().await.unwrap();
    let first = app.submit("p", "name: r\npeers: 1\ncpu: 0.1\n").await;
    let seen = read_events(all, 3).await;
    let last = seen.last().unwrap().0;
    // Disconnected now; more happens meanwhile.
    app.wait_archived(first).await;
    let second = app.submit("p", "name: r\npeers: 1\ncpu: 0.1\n").await;
    app.wait_archived(second).await;

    let resumed = app
        .client
        .get(app.url("/api/events"))
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .unwrap();
    let rest = read_until(resumed, |seen| {
        seen.last()
            .is_some_and(|e| e.2["job"] == second && e.1 == "archive")
    })
    .await;
    assert_eq!(
        rest.first().unwrap().0,
        last + 1,
        "resumes right after the last id it saw"
    );
    let ids: Vec<u64> = rest.iter().map(|e| e.0).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "no gaps: {ids:?}");
    assert!(rest
        .iter()
        .any(|e| e.2["job"] == second && e.2["state"] == "FINISHED"));
    // `?after=` works the same for clients that cannot set headers.
    let q = app
        .client
        .get(app.url(&format!("/api/events?after={}", last + 1)))
        .send()
        .await
        .unwrap();
    assert_eq!(read_events(q, 1).await[0].0, last + 2);
}

#[tokio::test]
async fn a_new_all_jobs_stream_starts_now_and_after_0_replays_the_history() {
    let app = spawn_app().await;
    app.upload("p", "#!/bin/sh\n").await;
    let old = app.submit("p", "name: r\npeers: 1\ncpu: 0.1\n").await;
    app.wait_archived(old).await;
    let page: Value = app.get_json("/api/jobs").await;
    let seq = page["events_seq"].as_u64().unwrap();

    let now = app.client.get(app.url("/api/events")).send().await.unwrap();
    let everything = app
        .client
        .get(app.url("/api/events?after=0"))
        .send()
        .await
        .unwrap();
    let from_page = app
        .client
        .get(app.url(&format!("/api/events?after={seq}")))
        .send()
        .await
        .unwrap();
    // Answered streams have their starting point: the next job comes now.
    let new = app.submit("p", "name: r\npeers: 1\ncpu: 0.1\n").await;
    let live = read_events(now, 1).await;
    assert_eq!(live[0].2["job"], new, "no old event first: {live:?}");
    assert_eq!(live[0].0, seq + 1);
    let all = read_until(everything, |e| e.iter().any(|e| e.2["job"] == new)).await;
    assert_eq!(all[0].0, 1, "after=0 starts at the first event ever");
    assert!(all.iter().any(|e| e.2["job"] == old && e.1 == "archive"));
    let since = read_events(from_page, 1).await;
    assert_eq!(
        since[0].0,
        seq + 1,
        "after the page's events_seq: nothing missed"
    );
}

#[tokio::test]
async fn streams_that_start_now_while_events_pour_in_each_get_every_later_event_once() {
    let app = spawn_app().await;
    app.upload("p", "#!/bin/sh\nsleep 0.3\n").await;
    let before: Value = app.get_json("/api/jobs").await;
    let start = before["events_seq"].as_u64().unwrap();
    // Two jobs of 20 peers each: well over a hundred events while the
    // streams open one after the other.
    let jobs = [
        app.submit("p", "name: r\npeers: 20\ncpu: 0.05\nmem: 0.01\n")
            .await,
        app.submit("p", "name: r\npeers: 20\ncpu: 0.05\nmem: 0.01\n")
            .await,
    ];
    // Each stream reads up to the last event, known once both jobs are done.
    let last = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let mut readers = Vec::new();
    for _ in 0..40 {
        let resp = app.client.get(app.url("/api/events")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let last = last.clone();
        readers.push(tokio::spawn(read_until_or(
            resp,
            move |seen| {
                let l = last.load(std::sync::atomic::Ordering::SeqCst);
                seen.last().is_some_and(|e| e.0 >= l)
            },
            Duration::from_secs(60),
            true,
        )));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    // Submitted once every stream has its answer: each must see it end.
    let closing = app
        .submit("p", "name: r\npeers: 1\ncpu: 0.05\nmem: 0.01\n")
        .await;
    for j in jobs.into_iter().chain([closing]) {
        app.wait_archived(j).await;
    }
    let end: Value = app.get_json("/api/jobs").await;
    let end = end["events_seq"].as_u64().unwrap();
    last.store(end, std::sync::atomic::Ordering::SeqCst);
    let mut starts = Vec::new();
    for r in readers {
        let seen = r.await.unwrap();
        // The stream's first frame is where it starts: an id, no event.
        let (first, _) = seen.split_first().expect("a starting id");
        assert_eq!(first.1, "", "first an id alone: {seen:?}");
        let seqs: Vec<u64> = seen.iter().map(|e| e.0).collect();
        assert_eq!(
            seqs.last(),
            Some(&end),
            "read up to the last event: {seqs:?}"
        );
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "every event after the start once, in order, none missed: {seqs:?}"
        );
        assert!(seqs[0] >= start, "nothing from before the jobs: {seqs:?}");
        starts.push(seqs[0]);
    }
    assert!(
        starts.iter().any(|s| *s > start + 20),
        "some streams started while the jobs ran: {starts:?} (events {start}..{end})"
    );
}

/// The events of a raw `/api/events` response (chunked), as far as whole
/// frames go: their ids, in order. Chunk-size lines are not frames.
fn ids_in_raw(raw: &[u8]) -> Vec<u64> {
    let text = String::from_utf8_lossy(raw);
    let body = &text[text.find("\r\n\r\n").map_or(0, |i| i + 4)..];
    let mut ids = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find("id: ") {
        rest = &rest[at..];
        // A frame counts once its data line and blank line have come.
        let Some(end) = rest.find("\n\n") else { break };
        let frame = &rest[..end];
        if frame.contains("\ndata: ") {
            ids.push(frame[4..frame.find('\n').unwrap()].parse().unwrap());
        }
        rest = &rest[end + 2..];
    }
    ids
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_dropped_not_buffered_and_resumes_where_it_was_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| c.ports = port_block(100)).await;
    app.upload("p", "#!/bin/sh\nexit 0\n").await;
    let start = app.get_json("/api/jobs").await["events_seq"]
        .as_u64()
        .unwrap();

    // One watcher keeps up; it reads everything after the start.
    let good = app
        .client
        .get(app.url(&format!("/api/events?after={start}")))
        .send()
        .await
        .unwrap();
    let last = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let good = tokio::spawn(read_until_or(
        good,
        {
            let last = last.clone();
            move |seen| {
                seen.last()
                    .is_some_and(|e| e.0 >= last.load(std::sync::atomic::Ordering::SeqCst))
            }
        },
        Duration::from_secs(120),
        false,
    ));

    // The other takes the headers and then reads nothing, with a small
    // receive window, like a client on a link too slow for the events.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let host = app.addr.trim_start_matches("http://");
    let mut slow = sock.connect(host.parse().unwrap()).await.unwrap();
    slow.write_all(
        format!("GET /api/events?after={start} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut b = [0u8; 512];
        let n = slow.read(&mut b).await.unwrap();
        assert!(n > 0, "headers: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&b[..n]);
    }
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );

    // Jobs of many peers, until the server gives up on the slow watcher.
    let dropped = |m: &str| sample(m, "dispatcher_event_stream_drops_total{reason=\"slow\"}");
    let mut jobs = Vec::new();
    for _ in 0..200 {
        jobs.push(
            app.submit("p", "name: r\npeers: 100\ncpu: 0.01\nmem: 0.001\n")
                .await,
        );
        app.wait_archived(*jobs.last().unwrap()).await;
        if dropped(&app.get_text("/metrics").await) >= 1.0 {
            break;
        }
    }
    let metrics = app.get_text("/metrics").await;
    assert_eq!(
        dropped(&metrics),
        1.0,
        "the slow watcher, and only it, was dropped after {} jobs",
        jobs.len()
    );
    let end = app.get_json("/api/jobs").await["events_seq"]
        .as_u64()
        .unwrap();
    last.store(end, std::sync::atomic::Ordering::SeqCst);

    // What the slow watcher had been sent is whole up to where it was cut,
    // and the connection then closed, without the clean end of a response.
    let cut = tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut raw)).await;
    assert!(cut.is_ok(), "the dropped watcher's connection was closed");
    assert!(!raw.ends_with(b"0\r\n\r\n"), "a drop is not a clean end");
    let had = ids_in_raw(&raw);
    assert!(!had.is_empty(), "the slow watcher had some events first");
    assert!(
        had.windows(2).all(|w| w[1] == w[0] + 1) && had[0] == start + 1,
        "in order from the start: {:?}..{:?}",
        &had[..had.len().min(5)],
        had.last()
    );
    let cut_at = *had.last().unwrap();
    assert!(cut_at < end, "it was cut before the end");

    // It resumes where it was cut, and misses nothing.
    let again = app
        .client
        .get(app.url("/api/events"))
        .header("Last-Event-ID", cut_at.to_string())
        .send()
        .await
        .unwrap();
    let resumed = read_until_or(
        again,
        |seen| seen.last().is_some_and(|e| e.0 >= end),
        Duration::from_secs(60),
        false,
    )
    .await;
    let resumed: Vec<u64> = resumed.iter().map(|e| e.0).collect();
    let all: Vec<u64> = had.iter().chain(&resumed).copied().collect();
    assert_eq!(
        all,
        (start + 1..=end).collect::<Vec<_>>(),
        "cut at {cut_at}, resumed: {:?}..",
        resumed.first()
    );

    // The watcher that kept up had every event, and was not dropped.
    let good: Vec<u64> = good.await.unwrap().iter().map(|e| e.0).collect();
    assert_eq!(good, (start + 1..=end).collect::<Vec<_>>());
    eprintln!(
        "slow watcher: cut after {} of {} events ({} bytes read), {} jobs of 100 peers",
        had.len(),
        end - start,
        raw.len(),
        jobs.len()
    );
}

#[tokio::test]
async fn a_stream_for_an_unknown_job_is_a_404() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/api/jobs/42/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_peer_log_streams_lines_as_they_are_written_and_resumes_by_offset() {
    let app = spawn_app().await;
    app.upload(
        "talker",
        "#!/bin/sh\nfor i in 1 2 3; do echo \"line $i\"; sleep 1; done\necho oops >&2\n",
    )
    .await;
    let id = app.submit("talker", "name: t\npeers: 1\ncpu: 0.1\n").await;
    let resp = app
        .client
        .get(app.url(&format!("/api/jobs/{id}/peers/0/logs")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut first_chunk_at = None;
    let mut ended = false;
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(20), body.next()).await {
        let chunk = String::from_utf8_lossy(&chunk.unwrap()).to_string();
        for frame in chunk.split("\n\n") {
            if frame.contains("event: end") {
                ended = true;
            }
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                let v: Value = serde_json::from_str(data).unwrap();
                if let Some(t) = v["text"].as_str() {
                    text.push_str(t);
                    // The first line arrives while the peer still runs.
                    first_chunk_at.get_or_insert_with(|| text.clone());
                }
            }
        }
        if ended {
            break;
        }
    }
    assert!(ended, "the stream ends when the peer does");
    assert_eq!(text, "line 1\nline 2\nline 3\n");
    assert!(first_chunk_at.as_deref().unwrap().starts_with("line 1\n"));
    assert_ne!(
        first_chunk_at.as_deref(),
        Some("line 1\nline 2\nline 3\n"),
        "lines came live, not all at the end"
    );

    // Resume from an offset: only the rest comes back.
    let r = app
        .client
        .get(app.url(&format!("/api/jobs/{id}/peers/0/logs?follow=false")))
        .header("Last-Event-ID", "7")
        .send()
        .await
        .unwrap();
    let rest = r.text().await.unwrap();
    assert!(
        rest.contains("line 2\\nline 3\\n") && !rest.contains("line 1"),
        "{rest}"
    );
    let err = app
        .client
        .get(app.url(&format!(
            "/api/jobs/{id}/peers/0/logs?stream=stderr&follow=false"
        )))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(err.contains("oops"), "{err}");
    assert_eq!(
        app.client
            .get(app.url(&format!("/api/jobs/{id}/peers/5/logs")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        app.client
            .get(app.url(&format!("/api/jobs/{id}/peers/0/logs?stream=env")))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
}
