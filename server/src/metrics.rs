//! Prometheus metrics, served at `GET /metrics` in the text exposition
//! format (0.0.4). Names start with `dispatcher_` and follow Prometheus'
//! conventions: `_total` for counters, base units (`_seconds`, `_bytes`),
//! histograms as `_bucket{le=...}`, `_sum` and `_count`.
//!
//! Counters and histograms are observed where things happen (a request
//! answered, an upload stored, a job launched or ended, a Mesos call sent);
//! gauges (jobs by state, peers running, streams open, the subscription)
//! are read when scraped, from the database and the runner's own view, so
//! they cannot drift from the truth.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// Seconds, from 5 ms to 10 min: request latency to job duration.
const TIME_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

#[derive(Clone, Debug)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; TIME_BUCKETS.len()],
            sum: 0.0,
            count: 0,
        }
    }
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (i, b) in TIME_BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines; `labels` is either
    /// empty or `k="v",` pairs ending in a comma.
    fn write(&self, out: &mut String, name: &str, labels: &str) {
        for (i, b) in TIME_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}le=\"{b}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", self.count);
        let bare = labels.trim_end_matches(',');
        let braces = if bare.is_empty() {
            String::new()
        } else {
            format!("{{{bare}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    /// (route, method, status) → requests.
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    upload_bytes: u64,
    upload_seconds: Histogram,
    queue_wait: Histogram,
    /// app → durations of its jobs, from launch to end.
    job_seconds: BTreeMap<String, Histogram>,
    /// Mesos: calls sent, by type.
    mesos_calls: BTreeMap<String, u64>,
    mesos_offers: u64,
    mesos_declined: u64,
    mesos_subscriptions: u64,
    mesos_ack_delay: Histogram,
    /// Failed attempts tried again.
    retries: u64,
    /// Due times of schedules: started, skipped, not started.
    schedule_runs: BTreeMap<&'static str, u64>,
    /// `/api/events` clients dropped by the writers, by why.
    stream_drops: BTreeMap<&'static str, u64>,
}

/// What the process has counted since it started.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// A label value, escaped as the exposition format wants.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.with(|m| {
            *m.requests
                .entry((route.to_string(), method.to_string(), status))
                .or_default() += 1;
            m.latency
                .entry(route.to_string())
                .or_default()
                .observe(took.as_secs_f64());
        });
    }

    pub fn upload(&self, bytes: u64, took: Duration) {
        self.with(|m| {
            m.upload_bytes += bytes;
            m.upload_seconds.observe(took.as_secs_f64());
        });
    }

    /// A job launched after waiting this long since it was submitted.
    pub fn launched(&self, waited: Duration) {
        self.with(|m| m.queue_wait.observe(waited.as_secs_f64()));
    }

    /// A job of `app` ended this long after it was launched.
    pub fn ended(&self, app: &str, ran: Duration) {
        self.with(|m| {
            m.job_seconds
                .entry(app.to_string())
                .or_default()
                .observe(ran.as_secs_f64())
        });
    }

    /// An event-stream client was dropped: `slow` (its socket did not take
    /// what it was sent) or `behind` (it joined further back than the
    /// writers' recent events). It resumes with `Last-Event-ID`.
    pub fn stream_dropped(&self, reason: &'static str) {
        self.with(|m| *m.stream_drops.entry(reason).or_default() += 1);
    }

    /// A failed attempt is tried again.
    pub fn retried(&self) {
        self.with(|m| m.retries += 1);
    }

    /// A schedule's due time: `started`, `skipped` or `not_started`.
    pub fn schedule_run(&self, outcome: &'static str) {
        self.with(|m| *m.schedule_runs.entry(outcome).or_default() += 1);
    }

    pub fn mesos_call(&self, kind: &str) {
        self.with(|m| *m.mesos_calls.entry(kind.to_string()).or_default() += 1);
    }

    pub fn mesos_offers(&self, n: usize) {
        self.with(|m| m.mesos_offers += n as u64);
    }

    /// Offers given back in a DECLINE (one call may decline several).
    pub fn mesos_declined(&self, n: usize) {
        self.with(|m| m.mesos_declined += n as u64);
    }

    pub fn mesos_subscribed(&self) {
        self.with(|m| m.mesos_subscriptions += 1);
    }

    /// Updates were recorded and acknowledged this long after they arrived.
    pub fn mesos_acked(&self, after: Duration) {
        self.with(|m| m.mesos_ack_delay.observe(after.as_secs_f64()));
    }

    /// The exposition text: what was counted, then the gauges read now.
    pub fn render(&self, g: &Gauges) -> String {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };

        head(&mut out, "dispatcher_jobs", "gauge", "Jobs by state.");
        for (state, n) in &g.jobs_by_state {
            let _ = writeln!(out, "dispatcher_jobs{{state=\"{}\"}} {n}", esc(state));
        }
        head(
            &mut out,
            "dispatcher_peers_running",
            "gauge",
            "Peers running now.",
        );
        let _ = writeln!(out, "dispatcher_peers_running {}", g.peers_running);
        head(
            &mut out,
            "dispatcher_queue_jobs",
            "gauge",
            "Jobs waiting to be placed.",
        );
        let _ = writeln!(out, "dispatcher_queue_jobs {}", g.waiting);
        // The families are always declared, so that a scrape before the
        // first measurement (retention's first sweep, at start) lists them
        // too; their samples come once measured.
        let storage = g.storage.as_ref();
        head(
            &mut out,
            "dispatcher_data_dir_bytes",
            "gauge",
            "The data directory on disk, by part (database, apps, jobs), as last measured.",
        );
        if let Some(s) = storage {
            for (part, n) in [
                ("database", s.database_bytes),
                ("apps", s.apps_bytes),
                ("jobs", s.jobs_bytes),
            ] {
                let _ = writeln!(out, "dispatcher_data_dir_bytes{{part=\"{part}\"}} {n}");
            }
        }
        head(
            &mut out,
            "dispatcher_data_dir_free_bytes",
            "gauge",
            "Free space on the data directory's file system, as last measured.",
        );
        if let Some(free) = storage.and_then(|s| s.free_bytes) {
            let _ = writeln!(out, "dispatcher_data_dir_free_bytes {free}");
        }
        head(
            &mut out,
            "dispatcher_retention_deleted_total",
            "counter",
            "What retention deleted since start: jobs, and binaries no job or version used.",
        );
        if let Some(s) = storage {
            let _ = writeln!(
                out,
                "dispatcher_retention_deleted_total{{what=\"jobs\"}} {}",
                s.jobs_deleted
            );
            let _ = writeln!(
                out,
                "dispatcher_retention_deleted_total{{what=\"blobs\"}} {}",
                s.blobs_deleted
            );
        }
        head(
            &mut out,
            "dispatcher_job_retries_total",
            "counter",
            "Failed attempts whose job was placed again (retries, retry_on).",
        );
        let _ = writeln!(out, "dispatcher_job_retries_total {}", m.retries);
        head(
            &mut out,
            "dispatcher_schedule_runs_total",
            "counter",
            "Schedules' due times: a job started, skipped (concurrency, missed runs), or not started (the submission failed).",
        );
        for outcome in ["started", "skipped", "not_started"] {
            let n = m.schedule_runs.get(outcome).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "dispatcher_schedule_runs_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        head(
            &mut out,
            "dispatcher_queue_wait_seconds",
            "histogram",
            "Time from submission to launch.",
        );
        m.queue_wait
            .write(&mut out, "dispatcher_queue_wait_seconds", "");
        head(
            &mut out,
            "dispatcher_job_duration_seconds",
            "histogram",
            "Time from launch to end, by app.",
        );
        for (app, h) in &m.job_seconds {
            h.write(
                &mut out,
                "dispatcher_job_duration_seconds",
                &format!("app=\"{}\",", esc(app)),
            );
        }
        head(
            &mut out,
            "dispatcher_upload_bytes_total",
            "counter",
            "Bytes of app binaries received.",
        );
        let _ = writeln!(out, "dispatcher_upload_bytes_total {}", m.upload_bytes);
        head(
            &mut out,
            "dispatcher_upload_duration_seconds",
            "histogram",
            "Time to receive and store an upload.",
        );
        m.upload_seconds
            .write(&mut out, "dispatcher_upload_duration_seconds", "");
        head(
            &mut out,
            "dispatcher_event_stream_clients",
            "gauge",
            "Event and log streams open now.",
        );
        let _ = writeln!(out, "dispatcher_event_stream_clients {}", g.streams);
        head(
            &mut out,
            "dispatcher_event_stream_drops_total",
            "counter",
            "Event-stream clients dropped for not keeping up (they resume with Last-Event-ID), by reason.",
        );
        for reason in ["slow", "behind"] {
            let n = m.stream_drops.get(reason).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "dispatcher_event_stream_drops_total{{reason=\"{reason}\"}} {n}"
            );
        }
        head(
            &mut out,
            "dispatcher_http_requests_total",
            "counter",
            "HTTP requests answered, by route, method and status.",
        );
        for ((route, method, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "dispatcher_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                esc(route)
            );
        }
        head(
            &mut out,
            "dispatcher_http_request_duration_seconds",
            "histogram",
            "Time to answer (to the headers, for streams), by route.",
        );
        for (route, h) in &m.latency {
            h.write(
                &mut out,
                "dispatcher_http_request_duration_seconds",
                &format!("route=\"{}\",", esc(route)),
            );
        }

        if let Some(ms) = &g.mesos {
            head(
                &mut out,
                "dispatcher_mesos_subscription_state",
                "gauge",
                "1 for the framework's subscription state now.",
            );
            for s in [
                "connecting",
                "subscribing",
                "subscribed",
                "disconnected",
                "refused",
            ] {
                let _ = writeln!(
                    out,
                    "dispatcher_mesos_subscription_state{{state=\"{s}\"}} {}",
                    (ms.state == s) as u8
                );
            }
            head(
                &mut out,
                "dispatcher_mesos_offers_held",
                "gauge",
                "Offers held now.",
            );
            let _ = writeln!(out, "dispatcher_mesos_offers_held {}", ms.offers_held);
            head(
                &mut out,
                "dispatcher_mesos_tasks",
                "gauge",
                "Tasks the framework tracks.",
            );
            let _ = writeln!(out, "dispatcher_mesos_tasks {}", ms.tasks);
            head(
                &mut out,
                "dispatcher_mesos_reconciling_tasks",
                "gauge",
                "Tasks whose state is being reconciled.",
            );
            let _ = writeln!(out, "dispatcher_mesos_reconciling_tasks {}", ms.reconciling);
            head(
                &mut out,
                "dispatcher_mesos_offers_received_total",
                "counter",
                "Offers received from the master.",
            );
            let _ = writeln!(
                out,
                "dispatcher_mesos_offers_received_total {}",
                m.mesos_offers
            );
            head(
                &mut out,
                "dispatcher_mesos_offers_declined_total",
                "counter",
                "Offers declined (given back unused, each counted once).",
            );
            let _ = writeln!(
                out,
                "dispatcher_mesos_offers_declined_total {}",
                m.mesos_declined
            );
            head(
                &mut out,
                "dispatcher_mesos_subscriptions_total",
                "counter",
                "Subscriptions made (the first, then every reconnection).",
            );
            let _ = writeln!(
                out,
                "dispatcher_mesos_subscriptions_total {}",
                m.mesos_subscriptions
            );
            head(
                &mut out,
                "dispatcher_mesos_calls_total",
                "counter",
                "Calls sent to the master, by type (DECLINE: offers declined; RECONCILE: reconciliations).",
            );
            for (kind, n) in &m.mesos_calls {
                let _ = writeln!(
                    out,
                    "dispatcher_mesos_calls_total{{type=\"{}\"}} {n}",
                    esc(kind)
                );
            }
            head(
                &mut out,
                "dispatcher_mesos_ack_delay_seconds",
                "histogram",
                "Time from a status update's arrival to its acknowledgement (recorded first).",
            );
            m.mesos_ack_delay
                .write(&mut out, "dispatcher_mesos_ack_delay_seconds", "");
        }
        out
    }
}

/// The gauges, read when scraped.
pub struct Gauges {
    pub jobs_by_state: Vec<(String, u64)>,
    pub peers_running: u64,
    pub waiting: usize,
    pub streams: usize,
    pub mesos: Option<app::model::MesosView>,
    /// The data directory as last measured (retention's sweeps).
    pub storage: Option<app::model::StorageView>,
}

/// Counts every request by the route it matched (its template, so that
/// ids do not make new series) and times it.
pub async fn track(
    axum::extract::State(metrics): axum::extract::State<std::sync::Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics.request(&route, &method, resp.status().as_u16(), started.elapsed());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_are_escaped() {
        let m = Metrics::default();
        m.request("/api/jobs/{id}", "GET", 200, Duration::from_millis(3));
        m.request("/api/jobs/{id}", "GET", 200, Duration::from_millis(30));
        m.ended("a\"b", Duration::from_secs(2));
        let text = m.render(&Gauges {
            jobs_by_state: vec![("FINISHED".into(), 2)],
            peers_running: 0,
            waiting: 0,
            streams: 1,
            mesos: None,
            storage: None,
        });
        assert!(text.contains(
            "dispatcher_http_requests_total{route=\"/api/jobs/{id}\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "dispatcher_http_request_duration_seconds_bucket{route=\"/api/jobs/{id}\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "dispatcher_http_request_duration_seconds_bucket{route=\"/api/jobs/{id}\",le=\"0.05\"} 2"
        ));
        assert!(text.contains(
            "dispatcher_http_request_duration_seconds_count{route=\"/api/jobs/{id}\"} 2"
        ));
        assert!(text.contains("dispatcher_job_duration_seconds_count{app=\"a\\\"b\"} 1"));
        assert!(text.contains("dispatcher_jobs{state=\"FINISHED\"} 2"));
        assert!(
            !text.contains("dispatcher_mesos"),
            "no Mesos series on the local backend"
        );
    }
}
