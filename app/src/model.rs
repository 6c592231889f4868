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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobSummary,
    pub role_file: String,
    pub options: JobOptions,
    pub peers: Vec<PeerInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    pub jobs: Vec<JobSummary>,
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
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
