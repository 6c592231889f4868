//! Jobs, peers and their states, shared by the server, its API and the dashboard.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::diag::Diagnostic;

/// A job's life: SUBMITTED (recorded) → WAITING (does not fit yet) →
/// RUNNING → FINISHED | FAILED | KILLED.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Submitted,
    Waiting,
    Running,
    Finished,
    Failed,
    Killed,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Submitted,
        JobState::Waiting,
        JobState::Running,
        JobState::Finished,
        JobState::Failed,
        JobState::Killed,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Finished | JobState::Failed | JobState::Killed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Submitted => "SUBMITTED",
            JobState::Waiting => "WAITING",
            JobState::Running => "RUNNING",
            JobState::Finished => "FINISHED",
            JobState::Failed => "FAILED",
            JobState::Killed => "KILLED",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peer's life: WAITING → STARTING → RUNNING → FINISHED | FAILED | KILLED | LOST.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PeerState {
    Waiting,
    Starting,
    Running,
    Finished,
    Failed,
    Killed,
    Lost,
}

impl PeerState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            PeerState::Finished | PeerState::Failed | PeerState::Killed | PeerState::Lost
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Waiting => "WAITING",
            PeerState::Starting => "STARTING",
            PeerState::Running => "RUNNING",
            PeerState::Finished => "FINISHED",
            PeerState::Failed => "FAILED",
            PeerState::Killed => "KILLED",
            PeerState::Lost => "LOST",
        }
    }

    pub fn parse(s: &str) -> Option<PeerState> {
        [
            PeerState::Waiting,
            PeerState::Starting,
            PeerState::Running,
            PeerState::Finished,
            PeerState::Failed,
            PeerState::Killed,
            PeerState::Lost,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

impl fmt::Display for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-job options given at submission (K3's form fields and ours).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobOptions {
    pub user: String,
    pub tag: String,
    pub cmd_prefix: String,
    pub cmd_infix: String,
    pub cmd_suffix: String,
    pub logging: bool,
    pub jsonlog: bool,
    pub jsonfinal: bool,
    /// Overrides the role file's `time_limit`, in seconds.
    pub time_limit: Option<u64>,
    /// Overrides the role file's `retries`: attempts after the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Overrides the role file's `retry_on`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<RetryOn>,
}

/// Which failed attempts are tried again: `lost` (the infrastructure
/// failed: an agent or the master lost the task, the dispatcher restarted
/// under a local job) and `failed` (the program exited non-zero, was killed
/// by a signal, could not be started or overran its time limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryOn {
    pub failed: bool,
    pub lost: bool,
}

impl Default for RetryOn {
    fn default() -> Self {
        RetryOn {
            failed: false,
            lost: true,
        }
    }
}

impl RetryOn {
    /// `failed`, `lost`, or both (`failed,lost`, `lost failed`, `both`).
    pub fn parse(text: &str) -> Result<RetryOn, String> {
        let mut on = RetryOn {
            failed: false,
            lost: false,
        };
        let words: Vec<&str> = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        if words.is_empty() {
            return Err("empty: write failed, lost, or both".into());
        }
        for w in words {
            match w {
                "failed" => on.failed = true,
                "lost" => on.lost = true,
                "both" => {
                    on.failed = true;
                    on.lost = true;
                }
                _ => return Err(format!("{w:?} is not failed, lost or both")),
            }
        }
        Ok(on)
    }

    pub fn covers(self, lost: bool) -> bool {
        if lost {
            self.lost
        } else {
            self.failed
        }
    }
}

/// Written as the role file writes it: `"lost"`, `"failed"`,
/// `"failed,lost"`; a list of those is read too.
impl Serialize for RetryOn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            One(String),
            Many(Vec<String>),
        }
        let text = match Text::deserialize(d)? {
            Text::One(s) => s,
            Text::Many(v) => v.join(","),
        };
        RetryOn::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.failed, self.lost) {
            (true, true) => "failed,lost",
            (true, false) => "failed",
            (false, true) => "lost",
            (false, false) => "none",
        })
    }
}

/// One run of a job's whole gang. A job that is retried has several.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptInfo {
    /// 1-based, as `DISPATCHER_ATTEMPT` tells the peers.
    pub attempt: u32,
    pub state: JobState,
    pub reason: String,
    pub started: Option<String>,
    pub ended: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppVersion {
    pub app: String,
    pub uid: String,
    pub sha256: String,
    pub size: u64,
    pub tag: String,
    pub uploaded: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppSummary {
    pub name: String,
    pub versions: u32,
    pub latest: AppVersion,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub id: u64,
    pub app: String,
    pub uid: String,
    pub state: JobState,
    pub reason: String,
    pub user: String,
    pub tag: String,
    pub submitted: String,
    pub started: Option<String>,
    pub ended: Option<String>,
    pub peers_total: u32,
    pub peers_running: u32,
    pub archive_size: Option<u64>,
    pub replay_of: Option<u64>,
    /// The attempt running or next to run (1 unless the job was retried).
    #[serde(default = "first_attempt")]
    pub attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

/// What an event does to a job's row in a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowChange {
    /// The row now says what the server's would.
    Updated,
    /// A peer changed: how many run is the server's to count, so the row is
    /// fetched again.
    Refetch,
}

impl JobSummary {
    /// Applies one of this job's events as the server records it (`started`
    /// at the first RUNNING, `ended` at the end).
    pub fn apply(&mut self, ev: &Event) -> RowChange {
        match &ev.kind {
            EventKind::Job { state, reason } => {
                self.state = *state;
                self.reason = reason.clone();
                if *state == JobState::Running && self.started.is_none() {
                    self.started = Some(ev.time.clone());
                }
                if state.is_terminal() && self.ended.is_none() {
                    self.ended = Some(ev.time.clone());
                }
                RowChange::Updated
            }
            EventKind::Archive { size } => {
                self.archive_size = Some(*size);
                RowChange::Updated
            }
            EventKind::Peer { .. } => RowChange::Refetch,
            EventKind::Attempt { attempt, .. } => {
                self.attempt = attempt + 1;
                RowChange::Refetch
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub index: u32,
    pub role: String,
    pub host: String,
    pub port: u16,
    pub state: PeerState,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: String,
    pub started: Option<String>,
    pub ended: Option<String>,
    /// Usage so far (samples of `--usage-every-secs`): the most resident
    /// memory seen, the mean cores used, and how many samples.
    #[serde(default)]
    pub peak_rss_bytes: Option<u64>,
    #[serde(default)]
    pub mean_cpu: Option<f64>,
    #[serde(default)]
    pub usage_samples: u64,
    /// What placement gave the peer: cores and memory.
    #[serde(default)]
    pub asked_cpu: Option<f64>,
    #[serde(default)]
    pub asked_mem_bytes: Option<u64>,
}

impl PeerInfo {
    /// Folds peers read from the job's detail into rows the page built from
    /// events. The events may have come first and are newer about state;
    /// the detail alone knows what each peer was given and its usage so
    /// far, so those fill in, and rows the events have not named yet are
    /// added.
    ///
    /// `rows` is kept sorted by index, so each peer is found by binary
    /// search: a 10,000-peer job's detail folds in without a quadratic cost.
    pub fn merge_detail(rows: &mut Vec<PeerInfo>, detail: &[PeerInfo]) {
        let sorted = rows.windows(2).all(|w| w[0].index < w[1].index);
        if !sorted {
            rows.sort_by_key(|p| p.index);
            rows.dedup_by_key(|p| p.index);
        }
        if rows.is_empty() {
            rows.extend_from_slice(detail);
            rows.sort_by_key(|p| p.index);
            return;
        }
        for d in detail {
            match rows.binary_search_by_key(&d.index, |r| r.index) {
                Ok(i) => {
                    let r = &mut rows[i];
                    r.asked_cpu = r.asked_cpu.or(d.asked_cpu);
                    r.asked_mem_bytes = r.asked_mem_bytes.or(d.asked_mem_bytes);
                    r.started = r.started.take().or_else(|| d.started.clone());
                    r.ended = r.ended.take().or_else(|| d.ended.clone());
                    if d.usage_samples > r.usage_samples {
                        r.usage_samples = d.usage_samples;
                        r.mean_cpu = d.mean_cpu;
                        r.peak_rss_bytes = d.peak_rss_bytes.max(r.peak_rss_bytes);
                    }
                }
                Err(i) => rows.insert(i, d.clone()),
            }
        }
    }

    /// A peer event applied to rows sorted by index: the row is replaced by
    /// what the event says (the page shows no per-peer times), keeping what
    /// only the detail and the usage samples know; a new peer is inserted in
    /// its place. Returns the row's position.
    pub fn apply_event(rows: &mut Vec<PeerInfo>, info: PeerInfo) -> usize {
        match rows.binary_search_by_key(&info.index, |r| r.index) {
            Ok(i) => {
                let p = &mut rows[i];
                *p = PeerInfo {
                    peak_rss_bytes: p.peak_rss_bytes,
                    mean_cpu: p.mean_cpu,
                    usage_samples: p.usage_samples,
                    asked_cpu: p.asked_cpu,
                    asked_mem_bytes: p.asked_mem_bytes,
                    started: p.started.take(),
                    ended: p.ended.take(),
                    ..info
                };
                i
            }
            Err(i) => {
                rows.insert(i, info);
                i
            }
        }
    }

    /// The row a peer event describes (what the event does not say is empty).
    pub fn from_event(kind: &EventKind) -> Option<PeerInfo> {
        let EventKind::Peer {
            index,
            role,
            host,
            port,
            state,
            exit_code,
            signal,
            reason,
        } = kind
        else {
            return None;
        };
        Some(PeerInfo {
            index: *index,
            role: role.clone(),
            host: host.clone(),
            port: *port,
            state: *state,
            exit_code: *exit_code,
            signal: *signal,
            reason: reason.clone(),
            started: None,
            ended: None,
            peak_rss_bytes: None,
            mean_cpu: None,
            usage_samples: 0,
            asked_cpu: None,
            asked_mem_bytes: None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobSummary,
    pub role_file: String,
    pub options: JobOptions,
    pub peers: Vec<PeerInfo>,
    /// Every attempt so far, first to last.
    #[serde(default)]
    pub attempts: Vec<AttemptInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    pub jobs: Vec<JobSummary>,
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
    /// `?before=` for the next (older) page; none when this one is the last.
    #[serde(default)]
    pub next_before: Option<u64>,
    /// The newest event when the page was read: `/api/events?after=` this
    /// sees every change since, and nothing older.
    #[serde(default)]
    pub events_seq: u64,
}

/// What happened, as stored and streamed over SSE.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    Job {
        state: JobState,
        reason: String,
    },
    Peer {
        index: u32,
        role: String,
        host: String,
        port: u16,
        state: PeerState,
        exit_code: Option<i32>,
        signal: Option<i32>,
        reason: String,
    },
    Archive {
        size: u64,
    },
    /// An attempt failed and the job will be tried again: every peer has
    /// ended, and the whole gang is placed anew after `retry_in_s`.
    Attempt {
        attempt: u32,
        state: JobState,
        reason: String,
        /// The infrastructure failed (`retry_on: lost`), not the program.
        lost: bool,
        retry_in_s: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub job: u64,
    pub time: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The answer of `POST /api/validate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub ok: bool,
    pub peers: u32,
    pub roles: Vec<String>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Error body of every failed API call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub error: String,
    #[serde(default)]
    pub details: Vec<serde_json::Value>,
}

/// The answer of `GET /api/cluster`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// `local` or `mesos`.
    pub backend: String,
    pub hosts: Vec<HostView>,
    /// What is free right now, as placement sees it (for previews).
    pub offers: Vec<crate::placement::Offer>,
    pub waiting: Vec<WaitingJob>,
    pub running: Vec<u64>,
    /// The framework's side, on the Mesos backend.
    #[serde(default)]
    pub mesos: Option<MesosView>,
    /// The data directory: what it weighs and what retention keeps.
    #[serde(default)]
    pub storage: Option<StorageView>,
}

/// The data directory as `GET /api/cluster` shows it, measured at start
/// and after each retention sweep (walking it costs, so not per request).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageView {
    pub dir: String,
    /// Bytes on disk (allocated blocks, as `du` counts), all parts together.
    pub total_bytes: u64,
    /// The database with its write-ahead log.
    pub database_bytes: u64,
    /// Stored app binaries and peer lists (`blobs/`).
    pub apps_bytes: u64,
    /// Jobs' sandboxes and archives (`jobs/`).
    pub jobs_bytes: u64,
    /// Free space on the file system that holds it.
    pub free_bytes: Option<u64>,
    /// When it was measured (RFC 3339).
    pub measured: String,
    /// What retention keeps, in words (`--keep-jobs`, `--keep-days`, `--keep-app`).
    pub retention: String,
    /// Jobs and blobs retention deleted since the dispatcher started.
    pub jobs_deleted: u64,
    pub blobs_deleted: u64,
}

/// The Mesos framework as `GET /api/cluster` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MesosView {
    /// `--master` as given.
    pub masters: String,
    /// The master the subscription is (or was last) open with.
    pub leader: Option<String>,
    pub framework_id: Option<String>,
    /// `connecting`, `subscribing`, `subscribed`, `disconnected` or `refused`.
    pub state: String,
    /// Why the last subscription ended or was refused.
    #[serde(default)]
    pub last_error: Option<String>,
    pub heartbeat_interval_secs: f64,
    pub last_heartbeat_secs_ago: Option<f64>,
    pub offers_held: usize,
    pub suppressed: bool,
    /// Tasks whose explicit reconciliation is still unanswered.
    pub reconciling: usize,
    /// Tasks the framework tracks.
    pub tasks: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub host: String,
    pub address: String,
    pub cpus: f64,
    pub cpus_used: f64,
    pub mem_mb: u64,
    pub mem_used_mb: u64,
    pub ports: String,
    pub peers: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WaitingJob {
    pub job: u64,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> JobSummary {
        JobSummary {
            id: 7,
            app: "a".into(),
            uid: "u".into(),
            state: JobState::Submitted,
            reason: String::new(),
            user: String::new(),
            tag: String::new(),
            submitted: "2026-12-03T10:00:00Z".into(),
            started: None,
            ended: None,
            peers_total: 2,
            peers_running: 0,
            archive_size: None,
            replay_of: None,
            attempt: 1,
        }
    }

    fn peer(index: u32, state: PeerState) -> PeerInfo {
        PeerInfo {
            index,
            role: "r".into(),
            host: "h".into(),
            port: 40000,
            state,
            exit_code: None,
            signal: None,
            reason: String::new(),
            started: None,
            ended: None,
            peak_rss_bytes: None,
            mean_cpu: None,
            usage_samples: 0,
            asked_cpu: None,
            asked_mem_bytes: None,
        }
    }

    #[test]
    fn a_detail_read_after_the_events_fills_in_what_peers_were_given_but_keeps_their_newer_state() {
        // The events named peer 0 running; the detail, read a moment
        // earlier, still says starting, but knows what it was given.
        let mut rows = vec![peer(0, PeerState::Running)];
        let mut d0 = peer(0, PeerState::Starting);
        d0.asked_cpu = Some(1.0);
        d0.asked_mem_bytes = Some(512 << 20);
        d0.usage_samples = 3;
        d0.peak_rss_bytes = Some(100);
        d0.mean_cpu = Some(0.5);
        let mut d1 = peer(1, PeerState::Starting);
        d1.asked_mem_bytes = Some(256 << 20);
        PeerInfo::merge_detail(&mut rows, &[d1, d0]);
        assert_eq!(rows.iter().map(|p| p.index).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(rows[0].state, PeerState::Running);
        assert_eq!(rows[0].asked_cpu, Some(1.0));
        assert_eq!(rows[0].asked_mem_bytes, Some(512 << 20));
        assert_eq!(
            (rows[0].usage_samples, rows[0].peak_rss_bytes),
            (3, Some(100))
        );
        assert_eq!(rows[1].asked_mem_bytes, Some(256 << 20));
        // A second read changes nothing the rows already know.
        rows[0].usage_samples = 5;
        rows[0].peak_rss_bytes = Some(300);
        let again = rows.clone();
        PeerInfo::merge_detail(&mut rows, &again);
        assert_eq!(
            (rows[0].usage_samples, rows[0].peak_rss_bytes),
            (5, Some(300))
        );
    }

    #[test]
    fn peer_events_in_any_order_keep_rows_sorted_and_keep_what_only_the_detail_knew() {
        let mut rows = Vec::new();
        for i in [5u32, 1, 9, 0, 3] {
            PeerInfo::apply_event(&mut rows, peer(i, PeerState::Starting));
        }
        assert_eq!(
            rows.iter().map(|p| p.index).collect::<Vec<_>>(),
            [0, 1, 3, 5, 9]
        );
        let mut d = peer(3, PeerState::Starting);
        d.asked_mem_bytes = Some(1 << 30);
        d.usage_samples = 2;
        d.peak_rss_bytes = Some(7);
        PeerInfo::merge_detail(&mut rows, &[d, peer(4, PeerState::Starting)]);
        assert_eq!(
            rows.iter().map(|p| p.index).collect::<Vec<_>>(),
            [0, 1, 3, 4, 5, 9]
        );
        let at = PeerInfo::apply_event(&mut rows, peer(3, PeerState::Finished));
        assert_eq!(at, 2);
        assert_eq!(rows[2].state, PeerState::Finished);
        assert_eq!(
            rows[2].asked_mem_bytes,
            Some(1 << 30),
            "kept from the detail"
        );
        assert_eq!(
            (rows[2].usage_samples, rows[2].peak_rss_bytes),
            (2, Some(7))
        );
        let kind = EventKind::Peer {
            index: 12,
            role: "w".into(),
            host: "h".into(),
            port: 1,
            state: PeerState::Running,
            exit_code: None,
            signal: None,
            reason: String::new(),
        };
        let info = PeerInfo::from_event(&kind).unwrap();
        assert_eq!((info.index, info.state), (12, PeerState::Running));
        assert!(PeerInfo::from_event(&job(JobState::Running, "")).is_none());
    }

    fn ev(seq: u64, time: &str, kind: EventKind) -> Event {
        Event {
            seq,
            job: 7,
            time: time.into(),
            kind,
        }
    }

    fn job(state: JobState, reason: &str) -> EventKind {
        EventKind::Job {
            state,
            reason: reason.into(),
        }
    }

    #[test]
    fn a_row_follows_its_job_through_running_to_failed_and_archived() {
        let mut r = row();
        let running = ev(2, "2026-12-03T10:00:01Z", job(JobState::Running, ""));
        assert_eq!(r.apply(&running), RowChange::Updated);
        assert_eq!(r.started.as_deref(), Some("2026-12-03T10:00:01Z"));
        assert_eq!(r.ended, None);
        let failed = ev(
            5,
            "2026-12-03T10:00:09Z",
            job(JobState::Failed, "peer 1 exited 3"),
        );
        r.apply(&failed);
        assert_eq!(
            (r.state, r.reason.as_str()),
            (JobState::Failed, "peer 1 exited 3")
        );
        assert_eq!(r.started.as_deref(), Some("2026-12-03T10:00:01Z"));
        assert_eq!(r.ended.as_deref(), Some("2026-12-03T10:00:09Z"));
        r.apply(&ev(
            6,
            "2026-12-03T10:00:10Z",
            EventKind::Archive { size: 99 },
        ));
        assert_eq!(r.archive_size, Some(99));
    }

    #[test]
    fn a_peer_event_asks_for_the_row_again() {
        let mut r = row();
        let before = r.clone();
        let peer = EventKind::Peer {
            index: 0,
            role: "w".into(),
            host: "h".into(),
            port: 1,
            state: PeerState::Running,
            exit_code: None,
            signal: None,
            reason: String::new(),
        };
        assert_eq!(r.apply(&ev(3, "t", peer)), RowChange::Refetch);
        assert_eq!(r, before, "nothing guessed");
    }
}

/// What a schedule does when a run is due and its previous run is still going.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// This run does not happen (it is recorded as skipped).
    #[default]
    Skip,
    /// This run starts once the previous one ended (one run waits at most).
    Queue,
    /// The previous run is killed and this one starts.
    Replace,
}

/// What a schedule does with the runs that fell due while the dispatcher
/// was down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// None of them runs; the next run is the first one after the start.
    #[default]
    Skip,
    /// One run starts at once for all of them.
    RunOnce,
}

/// `POST /api/schedules`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRequest {
    #[serde(default)]
    pub name: String,
    pub app: String,
    /// A version; none (or "latest") runs the newest version at each run.
    #[serde(default)]
    pub uid: Option<String>,
    pub role_file: String,
    #[serde(default)]
    pub options: JobOptions,
    /// An ISO 8601 repeating interval: `R/2026-12-01T02:00:00Z/P1D`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Or a cron line (`0 2 * * *`), read in `tz` (UTC when none).
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub tz: Option<String>,
    #[serde(default)]
    pub concurrency: Concurrency,
    #[serde(default)]
    pub missed: Missed,
}

/// One due time of a schedule: the job it started, or why none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRun {
    pub due: String,
    pub job: Option<u64>,
    /// The job's state now.
    pub state: Option<JobState>,
    /// `submitted`, or why nothing ran (`skipped: ...`).
    pub outcome: String,
    /// When the dispatcher acted on it.
    pub time: String,
}

/// A schedule as `GET /api/schedules` lists it; `GET /api/schedules/<id>`
/// adds its history in `jobs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleView {
    pub id: u64,
    pub name: String,
    pub app: String,
    pub uid: Option<String>,
    pub role_file: String,
    pub options: JobOptions,
    pub schedule: Option<String>,
    pub cron: Option<String>,
    pub tz: Option<String>,
    pub concurrency: Concurrency,
    pub missed: Missed,
    pub paused: bool,
    pub created: String,
    /// The next few runs (none when paused or the interval has ended).
    pub next_runs: Vec<String>,
    /// A run waiting for the previous one to end (`concurrency: queue`).
    pub queued: Option<String>,
    pub last: Option<ScheduleRun>,
    /// Due times acted on so far (jobs started and runs skipped).
    pub runs: u64,
    /// Newest first (the detail only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<ScheduleRun>,
}
