//! The runner's queue: every message the one task that owns the scheduling
//! core reads, whoever sends it (the HTTP API, the local backend's process
//! watchers, the Mesos connection, the ticker). Backends send to it without
//! knowing the runner.

use std::sync::Arc;

use app::model::{ClusterView, JobOptions, PeerState};
use app::RoleFile;
use tokio::sync::oneshot;

use crate::db::TaskRow;
use crate::mesos::conn::ConnEvent;
use crate::sched::PeerUpdate;

pub enum Msg {
    Submit {
        job: u64,
        roles: Arc<RoleFile>,
        meta: JobMeta,
    },
    Kill {
        job: u64,
        reason: String,
        done: oneshot::Sender<bool>,
    },
    Peer {
        job: u64,
        index: u32,
        update: PeerUpdate,
    },
    Exited {
        job: u64,
        index: u32,
        status: Result<std::process::ExitStatus, String>,
    },
    Tick,
    Cluster(oneshot::Sender<ClusterView>),
    /// The peers running now, for the usage sampler.
    Targets(oneshot::Sender<Vec<crate::usage::Target>>),
    Shutdown(oneshot::Sender<()>),
    /// A job that was running before a restart (Mesos: its tasks live on).
    Adopt {
        job: u64,
        roles: Arc<RoleFile>,
        meta: JobMeta,
        peers: Vec<(String, String, u16, PeerState)>,
        tasks: Vec<TaskRow>,
    },
    Mesos(ConnEvent),
    /// Unregister the framework: the master kills every task.
    Teardown(oneshot::Sender<Result<String, String>>),
    /// The master's answer to a TEARDOWN call.
    TornDown {
        id: String,
        result: Result<(), String>,
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// What a job needs besides its roles to start its peers.
#[derive(Clone, Debug)]
pub struct JobMeta {
    pub app: String,
    pub sha256: String,
    pub options: JobOptions,
    /// The attempt to run first: 1, or more for a job retried before a
    /// restart.
    pub attempt: u32,
}

impl JobMeta {
    /// How failed attempts are retried: the submission's options first,
    /// then the role file.
    pub fn retry(&self, roles: &RoleFile) -> crate::sched::Retry {
        crate::sched::Retry {
            retries: self
                .options
                .retries
                .unwrap_or_else(|| roles.retries())
                .min(app::role::MAX_RETRIES),
            on: self.options.retry_on.unwrap_or_else(|| roles.retry_on()),
            backoff_s: roles.retry_backoff_secs(),
        }
    }
}
