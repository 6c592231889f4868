//! The connection to the leading master: SUBSCRIBE on a long-lived chunked
//! response read as RecordIO, and every other call on its own request with
//! the `Mesos-Stream-Id` the subscription returned.
//!
//! Redirects (307, including a `Location` without a scheme) lead to the
//! leader; 503 means no leader yet; a stream silent for a few heartbeat
//! intervals is dead. Every failure ends in a new subscription after a
//! capped exponential backoff with jitter. Events go to the runner's queue
//! in stream order; the runner decides what they mean.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use proto::calls::FrameworkSettings;
use proto::recordio::Decoder;
use proto::{Call, Event, Message};
use tokio::sync::{mpsc, watch};

use super::detect::Detector;
use super::{authorized, Credentials};

const PROTOBUF: &str = "application/x-protobuf";
/// Largest event accepted from the master (offers for thousands of agents
/// fit well within it).
const MAX_EVENT: usize = 64 << 20;

#[derive(Debug)]
pub enum ConnEvent {
    Connected {
        master: String,
        stream_id: String,
    },
    Event(Box<Event>),
    Disconnected {
        why: String,
    },
    /// SUBSCRIBE was answered with an HTTP error (401 credentials, 400 a
    /// principal mismatch or an invalid call, 403): shown to the user and
    /// retried with backoff. (A refusal by policy comes as an ERROR event.)
    Refused {
        why: String,
    },
}

/// Where calls go while subscribed.
#[derive(Clone, Debug)]
pub struct Session {
    pub url: String,
    pub stream_id: String,
}

#[derive(Clone, Debug)]
pub struct ConnSettings {
    pub framework: FrameworkSettings,
    /// HTTP Basic credentials sent with SUBSCRIBE and every call.
    pub creds: Option<Credentials>,
    /// The master's scheme and the roots its certificate is checked against.
    pub transport: super::Transport,
    /// How long SUBSCRIBE may take to answer with its headers.
    pub subscribe_timeout: Duration,
    /// Missed heartbeats that mean the stream is dead.
    pub missed_heartbeats: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

/// Capped exponential backoff with full jitter.
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Backoff {
            base,
            cap,
            attempt: 0,
            seed,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay: uniformly between half and all of min(cap, base·2ⁿ).
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift: jitter only needs to spread reconnecting frameworks.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let frac = (self.seed % 1000) as f64 / 1000.0;
        ceiling.mul_f64(0.5 + frac / 2.0)
    }
}

/// `Location` of a redirect as a base URL: `//host:port/master/api/v1/scheduler`
/// (Mesos' own form) or with a scheme.
/// `scheme` is the one of the master that redirected: Mesos writes
/// `Location: //host:port/...`, scheme-less.
pub fn redirect_target(location: &str, scheme: &str) -> Option<String> {
    let (scheme, rest) = if let Some(r) = location.strip_prefix("http://") {
        ("http", r)
    } else if let Some(r) = location.strip_prefix("https://") {
        ("https", r)
    } else {
        (scheme, location.strip_prefix("//")?)
    };
    let host = rest.split('/').next()?;
    if host.is_empty() {
        return None;
    }
    let path = &rest[host.len()..];
    Some(format!(
        "{scheme}://{host}{}",
        if path.is_empty() {
            "/api/v1/scheduler"
        } else {
            path
        }
    ))
}

fn scheduler_url(scheme: &str, master: &str) -> String {
    format!("{scheme}://{master}/api/v1/scheduler")
}

/// What an HTTP error answer to SUBSCRIBE means, for the user.
pub fn refusal(status: u16, body: &str, creds: Option<&Credentials>) -> String {
    // Mesos' bodies often start with the status already ("401 Unauthorized.").
    let body = body.trim();
    let body = if body.starts_with(&status.to_string()) {
        body.to_string()
    } else {
        format!("{status} {body}").trim_end().to_string()
    };
    match (status, creds) {
        (401, None) => format!(
            "the master requires authentication ({body}): start the dispatcher with --mesos-principal and --mesos-secret-file"
        ),
        (401, Some(c)) => format!(
            "the master rejected the credentials of principal '{}' ({body}): check --mesos-secret-file",
            c.principal
        ),
        (403, c) => format!(
            "the master does not allow {} to subscribe ({body}): check its ACLs (register_frameworks, run_tasks)",
            c.map_or("an unauthenticated framework".to_string(), |c| format!("principal '{}'", c.principal))
        ),
        (_, _) => format!("SUBSCRIBE answered {body}"),
    }
}

/// Drops reports about streams other than `current`; resolves on one
/// about `current` (a call found that subscription gone).
async fn lost(reconnect: &mut mpsc::UnboundedReceiver<String>, current: &str) {
    loop {
        match reconnect.recv().await {
            Some(s) if s == current => return,
            Some(_) => continue,
            None => std::future::pending().await,
        }
    }
}

/// The subscription loop: runs until the runner's queue closes.
pub async fn run(
    settings: ConnSettings,
    mut detector: Detector,
    framework_id: watch::Receiver<Option<String>>,
    events: mpsc::UnboundedSender<ConnEvent>,
    session: watch::Sender<Option<Session>>,
    mut reconnect: mpsc::UnboundedReceiver<String>,
) {
    let client = settings
        .transport
        .client()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Duration::from_secs(30))
        .build()
        .expect("an HTTP client with the system's TLS roots builds");
    let scheme = settings.transport.scheme();
    let mut backoff = Backoff::new(settings.backoff_base, settings.backoff_cap);
    let mut redirected: Option<String> = None;
    let mut redirects = 0u32;
    // The master the detector named: ZooKeeper names masters by address,
    // a redirect by hostname, so a leader change is judged against this.
    let mut named = String::new();
    loop {
        if events.is_closed() {
            return;
        }
        let (url, leader) = match redirected.take() {
            Some(u) => {
                let host = u
                    .split_once("://")
                    .map_or(u.as_str(), |(_, rest)| rest)
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .to_string();
                (u, host)
            }
            None => {
                named = detector
                    .candidate(|why| {
                        let _ = events.send(ConnEvent::Disconnected { why });
                    })
                    .await;
                (scheduler_url(scheme, &named), named.clone())
            }
        };
        let mut fw = settings.framework.clone();
        fw.id = framework_id.borrow().clone();
        let body = proto::calls::subscribe(&fw).encode_to_vec();
        tracing::debug!(%url, framework_id = ?fw.id, "subscribing");
        let req = client
            .post(&url)
            .header("content-type", PROTOBUF)
            .header("accept", PROTOBUF)
            .body(body);
        let sent = tokio::time::timeout(
            settings.subscribe_timeout,
            authorized(req, settings.creds.as_ref()).send(),
        )
        .await;
        let resp = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let why = format!(
                    "cannot reach the master at {url}: {}",
                    super::error_chain(&e)
                );
                tracing::warn!("{why}");
                let _ = events.send(ConnEvent::Disconnected { why });
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            Err(_) => {
                let why = format!(
                    "SUBSCRIBE to {url} got no answer in {} s",
                    settings.subscribe_timeout.as_secs_f64()
                );
                tracing::warn!(%url, "{why}");
                let _ = events.send(ConnEvent::Disconnected { why });
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let status = resp.status().as_u16();
        match status {
            200 => {}
            307 => {
                let loc = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| redirect_target(l, scheme));
                redirects += 1;
                match loc {
                    Some(l) if redirects <= 5 => {
                        tracing::info!(from = %url, to = %l, "redirected to the leading master");
                        redirected = Some(l);
                    }
                    _ => {
                        tracing::warn!(%url, "redirect without a usable Location, or a redirect loop");
                        redirects = 0;
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
                continue;
            }
            503 => {
                // "No leader elected", or "Master has not finished recovery".
                let why = resp.text().await.unwrap_or_default();
                tracing::info!(%url, why = why.trim(), "the master cannot take subscriptions yet");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            400..=499 => {
                let body = resp.text().await.unwrap_or_default();
                let why = refusal(status, &body, settings.creds.as_ref());
                tracing::error!(%url, status, "{why}");
                let _ = events.send(ConnEvent::Refused { why });
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            _ => {
                let why = resp.text().await.unwrap_or_default();
                tracing::error!(%url, status, %why, "SUBSCRIBE failed");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        }
        redirects = 0;
        let Some(stream_id) = resp
            .headers()
            .get("mesos-stream-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
        else {
            tracing::error!(%url, "SUBSCRIBE answered without a Mesos-Stream-Id");
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        };
        // Reports about earlier streams are stale now.
        while reconnect.try_recv().is_ok() {}
        session.send_replace(Some(Session {
            url: url.clone(),
            stream_id: stream_id.clone(),
        }));
        let _ = events.send(ConnEvent::Connected {
            master: leader.clone(),
            stream_id: stream_id.clone(),
        });
        let why = tokio::select! {
            why = read_stream(resp, &settings, &events, &mut backoff) => why,
            _ = detector.leader_changed(&named) => "ZooKeeper names another leader".to_string(),
            _ = lost(&mut reconnect, &stream_id) => "a call found the subscription gone or the master no longer leading".to_string(),
        };
        session.send_replace(None);
        tracing::warn!(master = %leader, %why, "subscription ended; subscribing again");
        let _ = events.send(ConnEvent::Disconnected { why });
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Reads events until the stream ends, fails, or falls silent.
async fn read_stream(
    resp: reqwest::Response,
    settings: &ConnSettings,
    events: &mpsc::UnboundedSender<ConnEvent>,
    backoff: &mut Backoff,
) -> String {
    let mut body = resp.bytes_stream();
    let mut decoder = Decoder::new(MAX_EVENT);
    // Until SUBSCRIBED names the interval, Mesos' default (15 s) applies.
    let mut silence = Duration::from_secs(15) * settings.missed_heartbeats;
    loop {
        let chunk = match tokio::time::timeout(silence, body.next()).await {
            Err(_) => {
                return format!(
                    "no heartbeat for {} s ({} intervals missed)",
                    silence.as_secs_f64(),
                    settings.missed_heartbeats
                )
            }
            Ok(None) => return "the master closed the stream".into(),
            Ok(Some(Err(e))) => return format!("the stream failed: {e}"),
            Ok(Some(Ok(c))) => c,
        };
        decoder.feed(&chunk);
        loop {
            let record = match decoder.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return format!("the stream is not RecordIO: {e}"),
            };
            let ev = match Event::decode(record) {
                Ok(ev) => ev,
                Err(e) => return format!("an event does not decode: {e}"),
            };
            if let Some(s) = &ev.subscribed {
                backoff.reset();
                if let Some(every) = s.heartbeat_interval() {
                    silence = every * settings.missed_heartbeats;
                }
            }
            if events.send(ConnEvent::Event(Box::new(ev))).is_err() {
                return "the dispatcher is stopping".into();
            }
        }
    }
}

/// A call to send, and who wants to know it was delivered.
pub type Outgoing = (
    Call,
    Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
);

/// Calls of which a run is independent, each naming its own offer or task:
/// sent concurrently (16 at a time), the run done before the next call.
const CONCURRENT: [&str; 3] = ["ACCEPT", "ACKNOWLEDGE", "KILL"];

/// Sends calls in order, each as its own request, while subscribed. A call
/// that finds the master gone or not leading asks for a new subscription;
/// what it carried is recovered by reconciliation.
pub async fn send_calls(
    mut calls: mpsc::UnboundedReceiver<Outgoing>,
    session: watch::Receiver<Option<Session>>,
    reconnect: mpsc::UnboundedSender<String>,
    creds: Option<Credentials>,
    transport: super::Transport,
) {
    let client = transport
        .client()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client with the system's TLS roots builds");
    // Taken from the front: a deque, so that a big gang's 10,000 KILLs
    // are not each a move of all the calls behind it.
    let mut queue: std::collections::VecDeque<Outgoing> = Default::default();
    loop {
        if queue.is_empty() {
            match calls.recv().await {
                Some(c) => queue.push_back(c),
                None => return,
            }
        }
        while let Ok(c) = calls.try_recv() {
            queue.push_back(c);
        }
        // A run of ACCEPTs (one per offer, from one placement), of KILLs or
        // of ACKNOWLEDGEs is independent: sent concurrently, and all done
        // before the next call, so order across kinds is kept.
        let kind = call_kind(&queue[0].0);
        let run = if CONCURRENT.contains(&kind) {
            queue.iter().take_while(|c| call_kind(&c.0) == kind).count()
        } else {
            1
        };
        let batch: Vec<Outgoing> = queue.drain(..run).collect();
        let Some(s) = session.borrow().clone() else {
            tracing::debug!(
                call = kind,
                calls = batch.len(),
                "not subscribed; calls dropped"
            );
            for (_, done) in batch {
                if let Some(d) = done {
                    let _ = d.send(Err("not subscribed".into()));
                }
            }
            continue;
        };
        futures_util::stream::iter(batch)
            .for_each_concurrent(16, |(call, done)| {
                let (client, s, reconnect, creds) = (&client, &s, &reconnect, creds.as_ref());
                async move {
                    let outcome = send_one(client, s, &call, reconnect, creds).await;
                    if let Some(d) = done {
                        let _ = d.send(outcome);
                    }
                }
            })
            .await;
    }
}

pub fn call_kind(call: &Call) -> &'static str {
    call.r#type
        .and_then(|t| proto::mesos::scheduler::call::Type::try_from(t).ok())
        .map(|t| t.as_str_name())
        .unwrap_or("UNKNOWN")
}

/// True when a call's error answer means the subscription is gone
/// (`http.cpp`, `Master::Http::scheduler`; mesos-go's
/// `CodesIndicatingSubscriptionLoss`): 403 "Framework is not subscribed",
/// 400 "Framework cannot be found", or a stream id the master no longer
/// associates with the framework (another connection took over).
pub fn subscription_lost(status: u16, body: &str) -> bool {
    status == 403
        || (status == 400
            && (body.contains("Framework cannot be found") || body.contains("The stream ID")))
}

async fn send_one(
    client: &reqwest::Client,
    s: &Session,
    call: &Call,
    reconnect: &mpsc::UnboundedSender<String>,
    creds: Option<&Credentials>,
) -> Result<(), String> {
    let kind = call_kind(call);
    let started = Instant::now();
    let req = client
        .post(&s.url)
        .header("content-type", PROTOBUF)
        .header("accept", PROTOBUF)
        .header("mesos-stream-id", &s.stream_id)
        .body(call.encode_to_vec());
    let res = authorized(req, creds).send().await;
    match res {
        Ok(r) if r.status().is_success() => {
            tracing::trace!(
                call = kind,
                ms = started.elapsed().as_millis() as u64,
                "call sent"
            );
            Ok(())
        }
        Ok(r) if matches!(r.status().as_u16(), 307 | 503) => {
            tracing::warn!(
                call = kind,
                status = r.status().as_u16(),
                "the master no longer leads"
            );
            let _ = reconnect.send(s.stream_id.clone());
            Err(format!("the master answered {}", r.status()))
        }
        Ok(r) => {
            let status = r.status().as_u16();
            let why = r.text().await.unwrap_or_default();
            if subscription_lost(status, &why) {
                tracing::warn!(
                    call = kind,
                    status,
                    why = why.trim(),
                    "the subscription is gone; subscribing again"
                );
                let _ = reconnect.send(s.stream_id.clone());
            } else if status == 401 {
                tracing::error!(call = kind, "{}", refusal(status, &why, creds));
            } else {
                tracing::error!(
                    call = kind,
                    status,
                    why = why.trim(),
                    "the master rejected a call"
                );
            }
            Err(format!(
                "the master rejected {kind} ({status}): {}",
                why.trim()
            ))
        }
        Err(e) => {
            let e = super::error_chain(&e);
            tracing::warn!(call = kind, error = %e, "call failed");
            let _ = reconnect.send(s.stream_id.clone());
            Err(format!("{kind} failed: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations_with_and_without_a_scheme_become_urls() {
        assert_eq!(
            redirect_target("//127.0.0.1:5050/master/api/v1/scheduler", "http").as_deref(),
            Some("http://127.0.0.1:5050/master/api/v1/scheduler")
        );
        // A scheme-less Location keeps the scheme of the master that sent it.
        assert_eq!(
            redirect_target("//m2:5050/master/api/v1/scheduler", "https").as_deref(),
            Some("https://m2:5050/master/api/v1/scheduler")
        );
        assert_eq!(
            redirect_target("http://m2:5050", "https").as_deref(),
            Some("http://m2:5050/api/v1/scheduler")
        );
        assert_eq!(redirect_target("/relative", "http"), None);
        assert_eq!(redirect_target("//", "http"), None);
    }

    #[test]
    fn refusals_say_what_to_do_and_quote_the_status_once() {
        // The recorded body of a 401 (scenarios/http-auth).
        assert_eq!(
            refusal(401, "401 Unauthorized.", None),
            "the master requires authentication (401 Unauthorized.): start the dispatcher with --mesos-principal and --mesos-secret-file"
        );
        let e = refusal(
            400,
            "Failed to validate scheduler::Call: Authenticated principal 'dispatch' does not match",
            None,
        );
        assert_eq!(
            e,
            "SUBSCRIBE answered 400 Failed to validate scheduler::Call: Authenticated principal 'dispatch' does not match"
        );
        assert!(refusal(403, "", None).contains("(403): check its ACLs"));
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(800));
        assert!(d[7] >= Duration::from_secs(1) && d[7] <= Duration::from_secs(2));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
