//! The `dispatcher` server: storage (SQLite and a content-addressed blob
//! store), the scheduling core and its driver, the local backend, archives,
//! and the HTTP API with server-sent events.
//!
//! [`Application::build`] assembles everything from a [`Config`] and binds the
//! listener; [`Application::run_until`] serves until a shutdown signal. Tests
//! build it on port 0 with a temporary data directory.

pub mod api;
pub mod archive;
pub mod blobs;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod local;
pub mod mesos;
pub mod runner;
pub mod sched;
pub mod service;
pub mod util;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use app::model::{EventKind, JobState};
use app::placement::PortRange;
use app::RoleFile;

pub use config::Config;
use error::Internal;
use runner::{JobMeta, Runner, RunnerHandle};
use service::{AppState, Settings};

pub struct Application {
    listener: tokio::net::TcpListener,
    state: AppState,
    runner: RunnerHandle,
}

impl Application {
    pub async fn build(cfg: Config) -> Result<Application, Internal> {
        if let Some(master) = &cfg.master {
            return Err(Internal(format!(
                "--master {master}: the Mesos backend is not part of this build yet; run without --master to use the local backend"
            )));
        }
        let (first, last) = cfg.port_range().map_err(Internal)?;
        std::fs::create_dir_all(&cfg.dir).map_err(|e| {
            Internal(format!(
                "cannot create the data directory {}: {e}",
                cfg.dir.display()
            ))
        })?;
        let dir = std::fs::canonicalize(&cfg.dir)?;
        let jobs_dir = dir.join("jobs");
        std::fs::create_dir_all(&jobs_dir)?;
        let db = db::Db::open(&dir.join("dispatcher.db"))?;
        let blobs = blobs::BlobStore::open(&dir)?;
        let bus = events::Bus::new(db.clone());

        let cpus = cfg.cpus.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as f64)
                .unwrap_or(1.0)
        });
        if cpus.is_nan() || cpus <= 0.0 {
            return Err(Internal(format!("--cpus {cpus} must be more than 0")));
        }
        let capacity = local::Capacity {
            host: local::machine_hostname(),
            address: cfg.peer_address.clone(),
            cpus_milli: (cpus * 1000.0) as u64,
            mem_mb: cfg.mem_mb.unwrap_or_else(local::machine_mem_mb),
            ports: PortRange {
                begin: first,
                end: last,
            },
        };
        let grace = Duration::from_secs(cfg.kill_grace_secs);
        let archive_cap = cfg.archive_file_cap_mb.saturating_mul(1 << 20);
        let (runner, handle) = Runner::new(
            |tx| local::LocalBackend::new(capacity, tx, grace),
            bus.clone(),
            jobs_dir.clone(),
            blobs.clone(),
            archive_cap,
        );
        let settings = Settings {
            jobs_dir: jobs_dir.clone(),
            token: cfg.token.clone().filter(|t| !t.is_empty()),
            max_upload: cfg.max_upload_mb.saturating_mul(1 << 20),
            total_offer: runner.total_offer(),
            backend: "local",
        };
        tokio::spawn(runner.run());
        settle_unfinished(&bus, &handle).await?;
        // Archives a stop interrupted (or that a restart just ended) are built now.
        let unarchived = bus.db().call(|c| db::ended_without_archive(c)).await?;
        for (job, app) in unarchived {
            runner::spawn_archive(bus.clone(), jobs_dir.clone(), job, app, archive_cap);
        }

        let addr = SocketAddr::new(cfg.ip, cfg.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Internal(format!("cannot listen on {addr}: {e}")))?;
        let (_, shutdown) = tokio::sync::watch::channel(false);
        let state = AppState {
            db,
            bus,
            blobs,
            runner: handle.clone(),
            settings: Arc::new(settings),
            shutdown,
        };
        Ok(Application {
            listener,
            state,
            runner: handle,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then stops the peers and closes
    /// live event streams.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut state = self.state;
        state.shutdown = stop_rx;
        let router = api::router(state);
        let runner = self.runner;
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: stopping peers and closing streams");
            runner.shutdown().await;
            let _ = stop_tx.send(true);
        };
        axum::serve(self.listener, router)
            .with_graceful_shutdown(signal)
            .await
    }
}

/// After a restart: jobs that were running lost their dispatcher and are
/// marked FAILED (leftover peer processes are stopped); jobs that were only
/// submitted or waiting go back in the queue.
async fn settle_unfinished(bus: &events::Bus, runner: &RunnerHandle) -> Result<(), Internal> {
    let unfinished = bus.db().call(|c| db::unfinished(c)).await?;
    for u in unfinished {
        match u.state {
            JobState::Running => {
                let stopped = local::stop_leftovers(u.id, &u.pids);
                tracing::warn!(
                    job = u.id,
                    stopped,
                    "job was running when the dispatcher stopped; marking it FAILED"
                );
                // Its peers were stopped (or already gone): none is running now.
                let id = u.id;
                let detail = bus.db().call(move |c| db::job(c, id)).await?;
                for p in detail
                    .map(|d| d.peers)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| !p.state.is_terminal())
                {
                    let kind = EventKind::Peer {
                        index: p.index,
                        role: p.role,
                        host: p.host,
                        port: p.port,
                        state: app::model::PeerState::Lost,
                        exit_code: None,
                        signal: None,
                        reason: "the dispatcher restarted while it ran".into(),
                    };
                    bus.record(u.id, kind).await?;
                }
                bus.record(
                    u.id,
                    EventKind::Job {
                        state: JobState::Failed,
                        reason: "the dispatcher restarted while this job was running".into(),
                    },
                )
                .await?;
            }
            _ => {
                let id = u.id;
                let row = bus.db().call(move |c| db::sha_of_job(c, id)).await?;
                let Some((app, _uid, sha256)) = row else {
                    continue;
                };
                match RoleFile::parse(&u.role_file) {
                    Ok((rf, _)) => runner.submit(
                        u.id,
                        Arc::new(rf),
                        JobMeta {
                            app,
                            sha256,
                            options: u.options,
                        },
                    ),
                    Err(_) => {
                        bus.record(
                            u.id,
                            EventKind::Job {
                                state: JobState::Failed,
                                reason: "its role file no longer parses after an upgrade".into(),
                            },
                        )
                        .await?;
                    }
                }
            }
        }
    }
    Ok(())
}
