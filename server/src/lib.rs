//! The `dispatcher` server: storage (SQLite and a content-addressed blob
//! store), the scheduling core and its driver, the local and Mesos
//! backends, archives, and the HTTP API with server-sent events.
//!
//! [`Application::build`] assembles everything from a [`Config`] and binds the
//! listener; [`Application::run_until`] serves until a shutdown signal. Tests
//! build it on port 0 with a temporary data directory.

pub mod access;
pub mod api;
pub mod archive;
pub mod blobs;
pub mod cgroup;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod fanout;
pub mod local;
pub mod mesos;
pub mod metrics;
pub mod queue;
pub mod retention;
pub mod runner;
pub mod sched;
pub mod schedule;
pub mod scheduler;
pub mod service;
pub mod usage;
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
use queue::JobMeta;
use runner::{Runner, RunnerHandle};
use service::{AppState, Settings};

pub struct Application {
    listener: tokio::net::TcpListener,
    state: AppState,
    runner: RunnerHandle,
    header_timeout: Duration,
    retention_every: Duration,
}

impl Application {
    pub async fn build(cfg: Config) -> Result<Application, Internal> {
        let masters = match &cfg.master {
            Some(m) => Some(mesos::detect::parse(m).map_err(Internal)?),
            None => None,
        };
        let (first, last) = cfg.port_range().map_err(Internal)?;
        let policy = retention::Policy::parse(cfg.keep_jobs, cfg.keep_days, &cfg.keep_app)
            .map_err(Internal)?;
        let token = match &cfg.token_file {
            Some(f) => Some(access::token_from_file(f, "--token-file").map_err(Internal)?),
            None => cfg.token.clone(),
        };
        let read_token = match &cfg.read_token_file {
            Some(f) => Some(access::token_from_file(f, "--read-token-file").map_err(Internal)?),
            None => cfg.read_token.clone(),
        };
        let creds = match (&cfg.mesos_principal, &cfg.mesos_secret_file) {
            (Some(p), Some(f)) => Some(mesos::Credentials::from_file(p, f).map_err(Internal)?),
            _ => None,
        };
        let transport = mesos::Transport::new(
            cfg.mesos_tls
                || cfg
                    .master
                    .as_deref()
                    .is_some_and(mesos::detect::wants_https),
            cfg.mesos_ca_file.as_deref(),
        )
        .map_err(Internal)?;
        // One client for the agents' files API: archives and live logs.
        let files = masters
            .is_some()
            .then(|| mesos::files::Files::new(creds.clone(), &transport));
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
        let last_seq = db.call(|c| db::last_seq(c)).await?;
        let bus = events::Bus::new(db.clone(), last_seq);

        let addr = SocketAddr::new(cfg.ip, cfg.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Internal(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener.local_addr()?;

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
        let cgroups = match &masters {
            None => cgroup::Cgroups::open(&cfg.cgroup, &cfg.dir)
                .map_err(Internal)?
                .map(std::sync::Arc::new),
            Some(_) => None,
        };
        let archive_cap = cfg.archive_file_cap_mb.saturating_mul(1 << 20);
        let framework_id = db.call(|c| db::get_kv(c, "framework_id")).await?;
        let mut go = None;
        let backend_for = {
            let cfg = cfg.clone();
            let framework_id = framework_id.clone();
            let go = &mut go;
            let (creds, files, transport) = (creds.clone(), files.clone(), transport.clone());
            move |tx: tokio::sync::mpsc::UnboundedSender<queue::Msg>| match masters {
                None => {
                    runner::Backend::Local(local::LocalBackend::new(capacity, tx, grace, cgroups))
                }
                Some(masters) => {
                    let files = files.expect("made with the masters");
                    let mesos = mesos::backend::Parts {
                        masters,
                        framework_id,
                        creds,
                        transport,
                        files,
                    };
                    let (b, g) = mesos::backend::start(&cfg, bound, mesos, tx);
                    *go = Some(g);
                    runner::Backend::Mesos(Box::new(b))
                }
            }
        };
        let (runner, handle) = Runner::new(
            backend_for,
            bus.clone(),
            jobs_dir.clone(),
            blobs.clone(),
            archive_cap,
        );
        let backend = if cfg.master.is_some() {
            "mesos"
        } else {
            "local"
        };
        let settings = Settings {
            jobs_dir: jobs_dir.clone(),
            access: access::Access::new(token.as_deref(), read_token.as_deref())
                .trusting(cfg.advertise_url.as_deref()),
            limits: service::Limits::new(
                cfg.max_role_file_kb.saturating_mul(1024).min(64 << 20) as usize,
                cfg.max_peers_per_job,
                cfg.max_roles,
                cfg.max_uploads.max(1),
                cfg.max_event_streams.max(1),
            ),
            max_upload: cfg.max_upload_mb.saturating_mul(1 << 20),
            total_offer: runner.total_offer(),
            backend,
            files: files.clone(),
            usage_every: (cfg.usage_every_secs.is_finite() && cfg.usage_every_secs > 0.0)
                .then(|| Duration::from_secs_f64(cfg.usage_every_secs.clamp(0.05, 3600.0))),
        };
        tokio::spawn(runner.run());
        settle_unfinished(&bus, &handle, backend == "mesos", &jobs_dir).await?;
        if let Some(go) = go {
            let _ = go.send(());
        }
        // Archives a stop interrupted (or that a restart just ended) are built now.
        let unarchived = bus.db().call(|c| db::ended_without_archive(c)).await?;
        for (job, app) in unarchived {
            let fetch = files.clone();
            archive::spawn(
                bus.clone(),
                jobs_dir.clone(),
                job,
                app,
                archive_cap,
                fetch,
                vec![],
            );
        }

        let (_, shutdown) = tokio::sync::watch::channel(false);
        let retention = retention::Retention::new(policy, db.clone(), blobs.clone(), dir.clone());
        let state = AppState {
            retention,
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
            header_timeout: Duration::from_secs(cfg.header_timeout_secs.max(1)),
            retention_every: Duration::from_secs(cfg.retention_every_secs.max(1)),
        })
    }

    /// `--teardown`: unregisters the framework once subscribed (within a
    /// minute), then returns its id.
    pub async fn teardown(&self) -> Result<String, Internal> {
        tokio::time::timeout(Duration::from_secs(60), self.runner.teardown())
            .await
            .map_err(|_| Internal("no subscription with the master within 60 s".into()))?
            .map_err(Internal)
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
        if let Some(every) = state.settings.usage_every {
            usage::spawn_sampler(
                state.bus.clone(),
                self.runner.clone(),
                state.settings.files.clone(),
                every,
                stop_rx.clone(),
            );
        }
        state
            .retention
            .clone()
            .spawn(self.retention_every, stop_rx.clone());
        state.shutdown = stop_rx.clone();
        scheduler::spawn(state.clone(), stop_rx);
        let router = api::router(state);
        let runner = self.runner;
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: stopping peers and closing streams");
            runner.shutdown().await;
            let _ = stop_tx.send(true);
        };
        serve(self.listener, router, self.header_timeout, signal).await
    }
}

/// Serves HTTP/1.1 connections until `signal`, then waits for the open ones
/// to finish (event streams end on the shutdown signal).
///
/// Not `axum::serve`: its server detects HTTP/2 on every connection, and
/// each connection's task then has room for an HTTP/2 one, about 70 KiB
/// per connection (measured: 1,000 idle connections took 70 MiB). Browsers
/// speak HTTP/2 only over TLS, which this server does not, so HTTP/1.1 is
/// all they use here; a watcher now costs what its stream holds.
async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    header_timeout: Duration,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use tower::ServiceExt as _;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut signal = std::pin::pin!(signal);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was taken: wait a moment instead of spinning.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        // The socket goes to a writer thread if this connection becomes a
        // live `/api/events` stream (see `fanout`).
        let (conn, tap) = fanout::Conn::new(stream);
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnTap(tap.clone()));
                router.clone().oneshot(req)
            });
        // A client that trickles its headers (slowloris) is cut off.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(hyper_util::rt::TokioIo::new(conn), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The connection a request came on, for a stream that leaves hyper.
#[derive(Clone)]
pub struct ConnTap(pub std::sync::Arc<fanout::Tap>);

/// A local job the restart cut short is lost, not failed: when its
/// `retry_on` names `lost` and attempts are left, it is placed again.
async fn retry_after_restart(
    bus: &events::Bus,
    runner: &RunnerHandle,
    jobs_dir: &std::path::Path,
    u: &db::Unfinished,
) -> Result<bool, Internal> {
    let Ok((rf, _)) = RoleFile::parse(&u.role_file) else {
        return Ok(false);
    };
    let id = u.id;
    let Some((app, _uid, sha256)) = bus.db().call(move |c| db::sha_of_job(c, id)).await? else {
        return Ok(false);
    };
    let meta = JobMeta {
        app,
        sha256,
        options: u.options.clone(),
        attempt: u.attempt + 1,
    };
    let retry = meta.retry(&rf);
    if u.attempt > retry.retries || !retry.on.lost {
        return Ok(false);
    }
    let reason = "the dispatcher restarted while this attempt ran".to_string();
    archive::keep_attempt(&jobs_dir.join(id.to_string()), u.attempt)?;
    bus.record(
        id,
        EventKind::Attempt {
            attempt: u.attempt,
            state: JobState::Failed,
            reason: reason.clone(),
            lost: true,
            retry_in_s: 0,
        },
    )
    .await?;
    bus.record(
        id,
        EventKind::Job {
            state: JobState::Waiting,
            reason: format!(
                "attempt {} failed ({reason}); attempt {} of {} now",
                u.attempt,
                u.attempt + 1,
                retry.retries + 1
            ),
        },
    )
    .await?;
    tracing::warn!(
        job = id,
        attempt = u.attempt + 1,
        "job was running when the dispatcher stopped; retrying it"
    );
    runner.submit(id, Arc::new(rf), meta);
    Ok(true)
}

/// After a restart. Local backend: jobs that were running lost their
/// dispatcher and are marked FAILED (leftover peer processes are stopped),
/// or retried when their `retry_on` names `lost`.
/// Mesos: their tasks ran on without us; the jobs are taken back and
/// reconciled once subscribed. Either way jobs that were only submitted or
/// waiting go back in the queue.
async fn settle_unfinished(
    bus: &events::Bus,
    runner: &RunnerHandle,
    mesos: bool,
    jobs_dir: &std::path::Path,
) -> Result<(), Internal> {
    let unfinished = bus.db().call(|c| db::unfinished(c)).await?;
    for u in unfinished {
        match u.state {
            JobState::Running if mesos => adopt(bus, runner, u).await?,
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
                if retry_after_restart(bus, runner, jobs_dir, &u).await? {
                    continue;
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
                            attempt: u.attempt,
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

/// A Mesos job that was running when the dispatcher stopped: handed back
/// to the runner with where each peer runs. A peer recorded as placed but
/// with no task recorded was never launched: it is LOST.
async fn adopt(
    bus: &events::Bus,
    runner: &RunnerHandle,
    u: db::Unfinished,
) -> Result<(), Internal> {
    let id = u.id;
    let (detail, tasks, row) = bus
        .db()
        .call(move |c| {
            Ok((
                db::job(c, id)?,
                db::tasks_of(c, id)?,
                db::sha_of_job(c, id)?,
            ))
        })
        .await?;
    let (Some(detail), Some((app, _uid, sha256))) = (detail, row) else {
        return Ok(());
    };
    let Ok((rf, _)) = RoleFile::parse(&u.role_file) else {
        bus.record(
            id,
            EventKind::Job {
                state: JobState::Failed,
                reason: "its role file no longer parses after an upgrade".into(),
            },
        )
        .await?;
        return Ok(());
    };
    let mut peers = Vec::new();
    for p in detail.peers {
        let mut state = p.state;
        if !state.is_terminal() && !tasks.iter().any(|t| t.idx == p.index) {
            state = app::model::PeerState::Lost;
            bus.record(
                id,
                EventKind::Peer {
                    index: p.index,
                    role: p.role.clone(),
                    host: p.host.clone(),
                    port: p.port,
                    state,
                    exit_code: None,
                    signal: None,
                    reason: "the dispatcher stopped before launching it".into(),
                },
            )
            .await?;
        }
        peers.push((p.role, p.host, p.port, state));
    }
    tracing::info!(
        job = id,
        "taking back a job that ran while the dispatcher was away"
    );
    runner.adopt(
        id,
        Arc::new(rf),
        JobMeta {
            app,
            sha256,
            options: u.options,
            attempt: u.attempt,
        },
        peers,
        tasks,
    );
    Ok(())
}
