//! The embedded database (SQLite): apps and their versions, jobs, peers and
//! the event log. One connection behind a mutex, used from blocking threads;
//! every state change and its event are written in one transaction, so the
//! tables and the event log never disagree.

use std::path::Path;
use std::sync::{Arc, Mutex};

use app::model::{
    AppSummary, AppVersion, AttemptInfo, Event, EventKind, JobDetail, JobOptions, JobPage,
    JobState, JobSummary, PeerInfo, PeerState,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::Internal;

#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = r#"
PRAGMA auto_vacuum = INCREMENTAL;
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    uid TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    tag TEXT NOT NULL DEFAULT '',
    uploaded TEXT NOT NULL,
    UNIQUE (app, uid)
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    uid TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    user TEXT NOT NULL DEFAULT '',
    tag TEXT NOT NULL DEFAULT '',
    role_file TEXT NOT NULL,
    options TEXT NOT NULL,
    peers_total INTEGER NOT NULL,
    submitted TEXT NOT NULL,
    started TEXT,
    ended TEXT,
    archive_size INTEGER,
    replay_of INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_app ON jobs (app, id);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_app_state ON jobs (app, state, id);
-- The ids alone, newest last: a page by `offset` skips its rows here, a few
-- bytes each, not through the table's whole rows (see `jobs`).
CREATE INDEX IF NOT EXISTS jobs_id ON jobs (id);
CREATE TABLE IF NOT EXISTS peers (
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    idx INTEGER NOT NULL,
    role TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    state TEXT NOT NULL,
    exit_code INTEGER,
    signal INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    pid INTEGER,
    started TEXT,
    ended TEXT,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL,
    time TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, seq);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS allot (
    job_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    cpus_milli INTEGER NOT NULL,
    mem_mb INTEGER NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS usage (
    job_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    t_ms INTEGER NOT NULL,
    cpu REAL NOT NULL,
    rss INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_peer ON usage (job_id, idx, t_ms);
CREATE TABLE IF NOT EXISTS tasks (
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    idx INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    framework_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    agent_url TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS job_blobs (
    job_id INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (job_id, sha256)
);
CREATE INDEX IF NOT EXISTS job_blobs_sha ON job_blobs (sha256);
CREATE INDEX IF NOT EXISTS jobs_sha ON jobs (sha256);
CREATE INDEX IF NOT EXISTS versions_sha ON versions (sha256);
CREATE INDEX IF NOT EXISTS jobs_app_ended ON jobs (app, ended);
CREATE TABLE IF NOT EXISTS attempts (
    job_id INTEGER NOT NULL,
    n INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    started TEXT,
    ended TEXT,
    PRIMARY KEY (job_id, n)
);
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    uid TEXT NOT NULL,
    role_file TEXT NOT NULL,
    parameters TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    options TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_jobs (
    sweep_id INTEGER NOT NULL,
    point INTEGER NOT NULL,
    rep INTEGER NOT NULL,
    job_id INTEGER NOT NULL,
    PRIMARY KEY (sweep_id, point, rep)
);
CREATE INDEX IF NOT EXISTS sweep_jobs_job ON sweep_jobs (job_id);
CREATE TABLE IF NOT EXISTS schedules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    app TEXT NOT NULL,
    uid TEXT,
    role_file TEXT NOT NULL,
    options TEXT NOT NULL,
    schedule TEXT,
    cron TEXT,
    tz TEXT,
    concurrency TEXT NOT NULL,
    missed TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    next_ms INTEGER,
    pending_ms INTEGER
);
CREATE TABLE IF NOT EXISTS schedule_runs (
    schedule_id INTEGER NOT NULL,
    due_ms INTEGER NOT NULL,
    job_id INTEGER,
    outcome TEXT NOT NULL,
    time TEXT NOT NULL,
    PRIMARY KEY (schedule_id, due_ms)
);
CREATE INDEX IF NOT EXISTS schedule_runs_job ON schedule_runs (job_id);
CREATE TABLE IF NOT EXISTS deleted_jobs (
    id INTEGER PRIMARY KEY,
    app TEXT NOT NULL,
    deleted TEXT NOT NULL,
    why TEXT NOT NULL
);
"#;

/// A new job as recorded at submission.
pub struct NewJob {
    pub app: String,
    pub uid: String,
    pub sha256: String,
    pub role_file: String,
    pub options: JobOptions,
    pub peers_total: u32,
    pub replay_of: Option<u64>,
    /// The sweep, combination and repeat it runs for, if it is a sweep's.
    pub sweep: Option<(u64, u32, u32)>,
    /// The schedule run it is, if it is a schedule's: recorded with the
    /// job, so a due time never starts two, and the schedule moved on in
    /// the same transaction, so no reader sees the run without its move.
    pub schedule: Option<DueRecord>,
}

/// One due time of a schedule, as recorded: what became of it, and the
/// schedule's times once it is recorded (written together).
#[derive(Debug, Clone)]
pub struct DueRecord {
    pub schedule: u64,
    pub due_ms: i64,
    /// `submitted`, or why no job started.
    pub outcome: String,
    pub next_ms: Option<i64>,
    pub pending_ms: Option<i64>,
}

impl DueRecord {
    /// A due time about to start a job, with the schedule's times after it.
    pub fn new(
        schedule: u64,
        due_ms: i64,
        next_ms: Option<i64>,
        pending_ms: Option<i64>,
    ) -> DueRecord {
        DueRecord {
            schedule,
            due_ms,
            outcome: "submitted".into(),
            next_ms,
            pending_ms,
        }
    }
}

fn record_schedule_run(
    c: &Connection,
    r: &DueRecord,
    job: Option<u64>,
    t: &str,
) -> Result<(), Internal> {
    // A job's row is inserted plainly: a due time that has a row already
    // fails the job's transaction, so no due time ever starts two jobs.
    let sql = if job.is_some() {
        "INSERT INTO schedule_runs (schedule_id, due_ms, job_id, outcome, time) VALUES (?1, ?2, ?3, ?4, ?5)"
    } else {
        "INSERT OR IGNORE INTO schedule_runs (schedule_id, due_ms, job_id, outcome, time) VALUES (?1, ?2, ?3, ?4, ?5)"
    };
    c.execute(
        sql,
        params![
            r.schedule as i64,
            r.due_ms,
            job.map(|j| j as i64),
            r.outcome,
            t
        ],
    )?;
    set_schedule_times(c, r.schedule, r.next_ms, r.pending_ms)
}

pub struct JobFilter {
    pub app: Option<String>,
    pub state: Option<JobState>,
    /// Keyset pagination: only jobs with a smaller id (older ones).
    pub before: Option<u64>,
    pub limit: u64,
    pub offset: u64,
}

/// What a restarted dispatcher must settle about a job left unfinished.
pub struct Unfinished {
    pub id: u64,
    pub state: JobState,
    pub role_file: String,
    pub options: JobOptions,
    pub pids: Vec<(u32, i64)>,
    pub attempt: u32,
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, Internal> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Room for every statement `exec` and the readers prepare once
        // (rusqlite keeps 16), so that none is parsed again.
        conn.set_prepared_statement_cache_capacity(128);
        // `auto_vacuum` takes effect on a new database only; one made
        // before retention existed is rebuilt once so that pages freed by
        // deleting old jobs can be given back a few at a time.
        let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
        let has_tables: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table')",
            [],
            |r| r.get(0),
        )?;
        if mode != 2 && has_tables {
            let t = std::time::Instant::now();
            conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")?;
            tracing::info!(
                ms = t.elapsed().as_millis() as u64,
                "database rebuilt for incremental vacuum"
            );
        }
        conn.execute_batch(SCHEMA)?;
        // Columns added after the first release; `CREATE TABLE IF NOT
        // EXISTS` leaves an older table as it was.
        let has_attempt: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('jobs') WHERE name = 'attempt')",
            [],
            |r| r.get(0),
        )?;
        if !has_attempt {
            conn.execute_batch("ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1")?;
        }
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn call<T, F>(&self, f: F) -> Result<T, Internal>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Internal> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| Internal::from(format!("database task failed: {e}")))?
    }
}

fn version_row(r: &rusqlite::Row) -> rusqlite::Result<AppVersion> {
    Ok(AppVersion {
        app: r.get(0)?,
        uid: r.get(1)?,
        sha256: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        tag: r.get(4)?,
        uploaded: r.get(5)?,
    })
}

const VERSION_COLS: &str = "app, uid, sha256, size, tag, uploaded";

pub fn insert_version(c: &Connection, v: &AppVersion) -> Result<(), Internal> {
    c.execute(
        "INSERT INTO versions (app, uid, sha256, size, tag, uploaded) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![v.app, v.uid, v.sha256, v.size as i64, v.tag, v.uploaded],
    )?;
    Ok(())
}

pub fn version(c: &Connection, app: &str, uid: &str) -> Result<Option<AppVersion>, Internal> {
    Ok(c.query_row(
        &format!("SELECT {VERSION_COLS} FROM versions WHERE app = ?1 AND uid = ?2"),
        params![app, uid],
        version_row,
    )
    .optional()?)
}

pub fn latest_version(c: &Connection, app: &str) -> Result<Option<AppVersion>, Internal> {
    Ok(c.query_row(
        &format!("SELECT {VERSION_COLS} FROM versions WHERE app = ?1 ORDER BY id DESC LIMIT 1"),
        params![app],
        version_row,
    )
    .optional()?)
}

pub fn version_by_sha(
    c: &Connection,
    app: &str,
    sha: &str,
) -> Result<Option<AppVersion>, Internal> {
    Ok(c.query_row(&format!("SELECT {VERSION_COLS} FROM versions WHERE app = ?1 AND sha256 = ?2 ORDER BY id DESC LIMIT 1"), params![app, sha], version_row).optional()?)
}

pub fn versions(c: &Connection, app: &str) -> Result<Vec<AppVersion>, Internal> {
    let mut st = c.prepare(&format!(
        "SELECT {VERSION_COLS} FROM versions WHERE app = ?1 ORDER BY id DESC"
    ))?;
    let rows = st
        .query_map(params![app], version_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn apps(c: &Connection) -> Result<Vec<AppSummary>, Internal> {
    let mut st = c.prepare(&format!(
        "SELECT {VERSION_COLS}, (SELECT COUNT(*) FROM versions w WHERE w.app = v.app) FROM versions v
         WHERE id = (SELECT MAX(id) FROM versions w WHERE w.app = v.app) ORDER BY app"
    ))?;
    let rows = st
        .query_map([], |r| {
            Ok(AppSummary {
                name: r.get(0)?,
                versions: r.get::<_, i64>(6)? as u32,
                latest: version_row(r)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Forgets every version of an app; returns how many there were. Blobs stay,
/// since past jobs name them and replay needs them.
/// Deletes an app's versions; returns how many and the blobs they named
/// (for collection once no job uses them).
pub fn delete_app(c: &mut Connection, app: &str) -> Result<(usize, Vec<String>), Internal> {
    let tx = c.transaction()?;
    let shas = version_shas(&tx, app)?;
    let n = tx.execute("DELETE FROM versions WHERE app = ?1", params![app])?;
    tx.commit()?;
    Ok((n, shas))
}

fn now() -> String {
    crate::util::now_rfc3339()
}

/// Records a job in state SUBMITTED with its first event.
pub fn insert_job(c: &mut Connection, j: &NewJob) -> Result<Event, Internal> {
    let tx = c.transaction()?;
    let ev = insert_job_in(&tx, j, &now())?;
    tx.commit()?;
    Ok(ev)
}

fn insert_job_in(tx: &rusqlite::Transaction, j: &NewJob, t: &str) -> Result<Event, Internal> {
    tx.execute(
        "INSERT INTO jobs (app, uid, sha256, state, user, tag, role_file, options, peers_total, submitted, replay_of)
         VALUES (?1, ?2, ?3, 'SUBMITTED', ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![j.app, j.uid, j.sha256, j.options.user, j.options.tag, j.role_file, serde_json::to_string(&j.options)?, j.peers_total, t, j.replay_of.map(|r| r as i64)],
    )?;
    let id = tx.last_insert_rowid() as u64;
    if let Some(run) = &j.schedule {
        record_schedule_run(tx, run, Some(id), t)?;
    }
    if let Some((sweep, point, rep)) = j.sweep {
        tx.execute(
            "INSERT INTO sweep_jobs (sweep_id, point, rep, job_id) VALUES (?1, ?2, ?3, ?4)",
            params![sweep as i64, point, rep, id as i64],
        )?;
    }
    let kind = EventKind::Job {
        state: JobState::Submitted,
        reason: String::new(),
    };
    tx.execute(
        "INSERT INTO events (job_id, time, data) VALUES (?1, ?2, ?3)",
        params![id as i64, t, serde_json::to_string(&kind)?],
    )?;
    let seq = tx.last_insert_rowid() as u64;
    Ok(Event {
        seq,
        job: id,
        time: t.to_string(),
        kind,
    })
}

/// Applies an event to the job and peer tables and appends it to the log.
pub fn record(c: &mut Connection, job: u64, kind: &EventKind) -> Result<Event, Internal> {
    let tx = c.transaction()?;
    let ev = record_in(&tx, job, kind)?;
    tx.commit()?;
    Ok(ev)
}

/// Several events in one transaction (one fsync): a launch records the
/// job's state and every peer's at once.
pub fn record_many(
    c: &mut Connection,
    events: &[(u64, EventKind)],
) -> Result<Vec<Event>, Internal> {
    let tx = c.transaction()?;
    let out = events
        .iter()
        .map(|(job, kind)| record_in(&tx, *job, kind))
        .collect::<Result<Vec<_>, _>>()?;
    tx.commit()?;
    Ok(out)
}

/// Runs one statement, prepared once per connection: a launch records
/// thousands of rows with the same few statements, and parsing each anew
/// cost more than the row.
fn exec(c: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(p)
}

fn record_in(tx: &rusqlite::Transaction, job: u64, kind: &EventKind) -> Result<Event, Internal> {
    let t = now();
    match kind {
        EventKind::Job { state, reason } => {
            exec(
                tx,
                "UPDATE jobs SET state = ?2, reason = ?3 WHERE id = ?1",
                params![job as i64, state.as_str(), reason],
            )?;
            if *state == JobState::Running {
                exec(
                    tx,
                    "UPDATE jobs SET started = COALESCE(started, ?2) WHERE id = ?1",
                    params![job as i64, t],
                )?;
                exec(
                    tx,
                    "INSERT OR IGNORE INTO attempts (job_id, n, state, started)
                     SELECT id, attempt, 'RUNNING', ?2 FROM jobs WHERE id = ?1",
                    params![job as i64, t],
                )?;
            }
            if state.is_terminal() {
                exec(
                    tx,
                    "UPDATE jobs SET ended = ?2 WHERE id = ?1",
                    params![job as i64, t],
                )?;
                // A job killed while it waited to be retried ends no
                // attempt: the one it waited for never started.
                exec(
                tx,
                    "UPDATE attempts SET state = ?2, reason = ?3, ended = ?4
                     WHERE job_id = ?1 AND n = (SELECT attempt FROM jobs WHERE id = ?1) AND ended IS NULL",
                    params![job as i64, state.as_str(), reason, t],
                )?;
            }
        }
        EventKind::Attempt {
            attempt,
            state,
            reason,
            ..
        } => {
            exec(
                tx,
                "UPDATE attempts SET state = ?3, reason = ?4, ended = ?5 WHERE job_id = ?1 AND n = ?2",
                params![job as i64, attempt, state.as_str(), reason, t],
            )?;
            exec(
                tx,
                "UPDATE jobs SET attempt = ?2 + 1 WHERE id = ?1",
                params![job as i64, attempt],
            )?;
        }
        EventKind::Peer {
            index,
            role,
            host,
            port,
            state,
            exit_code,
            signal,
            reason,
        } => {
            // A STARTING peer is placed anew (a retried job's gang): the
            // peer of the attempt before is replaced, not continued.
            let sql = if *state == PeerState::Starting {
                "INSERT INTO peers (job_id, idx, role, host, port, state, exit_code, signal, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (job_id, idx) DO UPDATE SET state = excluded.state, exit_code = excluded.exit_code, signal = excluded.signal, reason = excluded.reason,
                     role = excluded.role, host = excluded.host, port = excluded.port, pid = NULL, started = NULL, ended = NULL"
            } else {
                "INSERT INTO peers (job_id, idx, role, host, port, state, exit_code, signal, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (job_id, idx) DO UPDATE SET state = excluded.state, exit_code = excluded.exit_code, signal = excluded.signal, reason = excluded.reason"
            };
            exec(
                tx,
                sql,
                params![
                    job as i64,
                    index,
                    role,
                    host,
                    port,
                    state.as_str(),
                    exit_code,
                    signal,
                    reason
                ],
            )?;
            if *state == PeerState::Running {
                exec(
                tx,"UPDATE peers SET started = COALESCE(started, ?3) WHERE job_id = ?1 AND idx = ?2", params![job as i64, index, t])?;
            }
            if state.is_terminal() {
                exec(
                    tx,
                    "UPDATE peers SET ended = ?3 WHERE job_id = ?1 AND idx = ?2",
                    params![job as i64, index, t],
                )?;
            }
        }
        EventKind::Archive { size } => {
            let n = exec(
                tx,
                "UPDATE jobs SET archive_size = ?2 WHERE id = ?1",
                params![job as i64, *size as i64],
            )?;
            // An archive finished after retention deleted its job (one
            // whose archive failed for a day, rebuilt at a start) leaves
            // no event behind for a job that is gone.
            if n == 0 {
                return Err(Internal(format!("job {job} no longer exists")));
            }
        }
    }
    exec(
        tx,
        "INSERT INTO events (job_id, time, data) VALUES (?1, ?2, ?3)",
        params![job as i64, t, serde_json::to_string(kind)?],
    )?;
    let seq = tx.last_insert_rowid() as u64;
    Ok(Event {
        seq,
        job,
        time: t,
        kind: kind.clone(),
    })
}

pub fn set_pid(c: &Connection, job: u64, index: u32, pid: Option<u32>) -> Result<(), Internal> {
    c.execute(
        "UPDATE peers SET pid = ?3 WHERE job_id = ?1 AND idx = ?2",
        params![job as i64, index, pid],
    )?;
    Ok(())
}

const JOB_COLS: &str = "j.id, j.app, j.uid, j.state, j.reason, j.user, j.tag, j.submitted, j.started, j.ended, j.peers_total,
    (SELECT COUNT(*) FROM peers p WHERE p.job_id = j.id AND p.state = 'RUNNING'), j.archive_size, j.replay_of, j.attempt";

fn job_row(r: &rusqlite::Row) -> rusqlite::Result<JobSummary> {
    let state: String = r.get(3)?;
    Ok(JobSummary {
        id: r.get::<_, i64>(0)? as u64,
        app: r.get(1)?,
        uid: r.get(2)?,
        state: JobState::parse(&state).unwrap_or(JobState::Failed),
        reason: r.get(4)?,
        user: r.get(5)?,
        tag: r.get(6)?,
        submitted: r.get(7)?,
        started: r.get(8)?,
        ended: r.get(9)?,
        peers_total: r.get(10)?,
        peers_running: r.get(11)?,
        archive_size: r.get::<_, Option<i64>>(12)?.map(|s| s as u64),
        replay_of: r.get::<_, Option<i64>>(13)?.map(|s| s as u64),
        attempt: r.get(14)?,
    })
}

/// A page of jobs, newest first. The SQL names only the conditions asked
/// for, so that each query has an index that answers it (`jobs_app`,
/// `jobs_state`, `jobs_app_state`, or the id itself) and its cost follows
/// the page, not the history; `(?1 IS NULL OR app = ?1)` would scan every
/// job. `total` counts the matching jobs on the same index (entries of a
/// few bytes, not rows).
pub fn jobs(c: &Connection, f: &JobFilter) -> Result<JobPage, Internal> {
    let state = f.state.map(|s| s.as_str().to_string());
    let mut conds: Vec<&str> = Vec::new();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(app) = &f.app {
        conds.push("j.app = ?");
        args.push(app.clone().into());
    }
    if let Some(state) = &state {
        conds.push("j.state = ?");
        args.push(state.clone().into());
    }
    let filtered = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    let total: i64 = c.query_row(
        &format!("SELECT COUNT(*) FROM jobs j {filtered}"),
        rusqlite::params_from_iter(args.iter()),
        |r| r.get(0),
    )?;
    if let Some(before) = f.before {
        conds.push("j.id < ?");
        args.push((before.min(i64::MAX as u64) as i64).into());
    }
    let where_of = |conds: &[&str]| {
        if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        }
    };
    // An offset becomes a keyset: the page's first id is found by skipping
    // on an index alone (the filter's, or `jobs_id`), then the page is read
    // from there like a `before` page.
    let mut start = None;
    if f.offset > 0 {
        let mut skip = args.clone();
        skip.push((f.offset.min(i64::MAX as u64) as i64).into());
        start = c
            .query_row(
                &format!(
                    "SELECT j.id FROM jobs j {} ORDER BY j.id DESC LIMIT 1 OFFSET ?",
                    where_of(&conds)
                ),
                rusqlite::params_from_iter(skip.iter()),
                |r| r.get::<_, i64>(0),
            )
            .optional()?;
    }
    let jobs = if f.offset > 0 && start.is_none() {
        Vec::new()
    } else {
        if let Some(start) = start {
            conds.push("j.id <= ?");
            args.push(start.into());
        }
        args.push((f.limit as i64).into());
        let mut st = c.prepare(&format!(
            "SELECT {JOB_COLS} FROM jobs j {} ORDER BY j.id DESC LIMIT ?",
            where_of(&conds)
        ))?;
        let rows = st.query_map(rusqlite::params_from_iter(args.iter()), job_row)?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    let next_before = (jobs.len() as u64 == f.limit)
        .then(|| jobs.last().map(|j| j.id))
        .flatten();
    Ok(JobPage {
        jobs,
        total: total as u64,
        offset: f.offset,
        limit: f.limit,
        next_before,
        events_seq: last_seq(c)?,
    })
}

/// The id of the newest event (0: none yet).
pub fn last_seq(c: &Connection) -> Result<u64, Internal> {
    Ok(
        c.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| {
            r.get::<_, i64>(0)
        })? as u64,
    )
}

pub fn job(c: &Connection, id: u64) -> Result<Option<JobDetail>, Internal> {
    let row = c
        .query_row(
            &format!("SELECT {JOB_COLS}, j.role_file, j.options FROM jobs j WHERE j.id = ?1"),
            params![id as i64],
            |r| {
                Ok((
                    job_row(r)?,
                    r.get::<_, String>(15)?,
                    r.get::<_, String>(16)?,
                ))
            },
        )
        .optional()?;
    let Some((job, role_file, options)) = row else {
        return Ok(None);
    };
    let mut st = c.prepare("SELECT idx, role, host, port, state, exit_code, signal, reason, started, ended FROM peers WHERE job_id = ?1 ORDER BY idx")?;
    let peers = st
        .query_map(params![id as i64], |r| {
            let state: String = r.get(4)?;
            Ok(PeerInfo {
                index: r.get(0)?,
                role: r.get(1)?,
                host: r.get(2)?,
                port: r.get(3)?,
                state: PeerState::parse(&state).unwrap_or(PeerState::Lost),
                exit_code: r.get(5)?,
                signal: r.get(6)?,
                reason: r.get(7)?,
                started: r.get(8)?,
                ended: r.get(9)?,
                peak_rss_bytes: None,
                mean_cpu: None,
                usage_samples: 0,
                asked_cpu: None,
                asked_mem_bytes: None,
            })
        })?
        .collect::<Result<Vec<PeerInfo>, _>>()?;
    let mut peers = peers;
    let mut st = c.prepare_cached(
        "SELECT idx, MAX(rss), AVG(cpu), COUNT(*) FROM usage WHERE job_id = ?1 GROUP BY idx",
    )?;
    let usage = st.query_map(params![id as i64], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            r.get::<_, i64>(1)? as u64,
            r.get::<_, f64>(2)?,
            r.get::<_, i64>(3)? as u64,
        ))
    })?;
    for u in usage {
        let (idx, peak, mean, n) = u?;
        if let Some(p) = peers.get_mut(idx as usize) {
            p.peak_rss_bytes = Some(peak);
            p.mean_cpu = Some(mean);
            p.usage_samples = n;
        }
    }
    let mut st = c.prepare_cached("SELECT idx, cpus_milli, mem_mb FROM allot WHERE job_id = ?1")?;
    let allot = st.query_map(params![id as i64], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for a in allot {
        let (idx, cpus, mem) = a?;
        if let Some(p) = peers.get_mut(idx as usize) {
            p.asked_cpu = Some(cpus as f64 / 1000.0);
            p.asked_mem_bytes = (mem > 0).then_some(mem as u64 * 1024 * 1024);
        }
    }
    let mut st = c.prepare_cached(
        "SELECT n, state, reason, started, ended FROM attempts WHERE job_id = ?1 ORDER BY n",
    )?;
    let mut attempts = st
        .query_map(params![id as i64], |r| {
            let state: String = r.get(1)?;
            Ok(AttemptInfo {
                attempt: r.get(0)?,
                state: JobState::parse(&state).unwrap_or(JobState::Failed),
                reason: r.get(2)?,
                started: r.get(3)?,
                ended: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    if attempts.is_empty() && job.started.is_some() {
        // A job run before attempts were recorded had exactly one.
        attempts.push(AttemptInfo {
            attempt: 1,
            state: job.state,
            reason: job.reason.clone(),
            started: job.started.clone(),
            ended: job.ended.clone(),
        });
    }
    Ok(Some(JobDetail {
        job,
        role_file,
        options: serde_json::from_str(&options).unwrap_or_default(),
        peers,
        attempts,
    }))
}

/// How many jobs are in each state (the `jobs_state` index answers it).
pub fn jobs_by_state(c: &Connection) -> Result<Vec<(String, u64)>, Internal> {
    let mut st =
        c.prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state")?;
    let rows = st.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What placement gave each peer: `(index, cpus in thousandths, memory in
/// MB)`; part of the caller's transaction.
pub fn insert_allot(c: &Connection, job: u64, peers: &[(u32, u32, u64)]) -> Result<(), Internal> {
    let mut st = c.prepare_cached(
        "INSERT OR REPLACE INTO allot (job_id, idx, cpus_milli, mem_mb) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (idx, cpus, mem) in peers {
        st.execute(params![job as i64, idx, cpus, *mem as i64])?;
    }
    Ok(())
}

/// Most samples kept per peer: past this, every other one is dropped, so a
/// long run keeps its whole span at a coarser grain.
pub const USAGE_POINTS: usize = 1000;

/// Stores usage samples, thinning any peer that has grown past the cap.
pub fn insert_usage(c: &mut Connection, samples: &[crate::usage::Sample]) -> Result<(), Internal> {
    let tx = c.transaction()?;
    {
        let mut ins = tx.prepare_cached(
            "INSERT INTO usage (job_id, idx, t_ms, cpu, rss) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut count =
            tx.prepare_cached("SELECT COUNT(*) FROM usage WHERE job_id = ?1 AND idx = ?2")?;
        let mut thin = tx.prepare_cached(
            "DELETE FROM usage WHERE rowid IN (SELECT rowid FROM (SELECT rowid, ROW_NUMBER() OVER (ORDER BY t_ms) AS n FROM usage WHERE job_id = ?1 AND idx = ?2) WHERE n % 2 = 0)",
        )?;
        for s in samples {
            ins.execute(params![
                s.job as i64,
                s.peer,
                s.t_ms as i64,
                s.cpu,
                s.rss_bytes as i64
            ])?;
            let n: i64 = count.query_row(params![s.job as i64, s.peer], |r| r.get(0))?;
            if n as usize > USAGE_POINTS {
                thin.execute(params![s.job as i64, s.peer])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// A peer's samples, oldest first.
pub fn usage_of(
    c: &Connection,
    job: u64,
    peer: u32,
) -> Result<Vec<crate::usage::Sample>, Internal> {
    let mut st = c.prepare_cached(
        "SELECT t_ms, cpu, rss FROM usage WHERE job_id = ?1 AND idx = ?2 ORDER BY t_ms",
    )?;
    let rows = st.query_map(params![job as i64, peer], |r| {
        Ok(crate::usage::Sample {
            job,
            peer,
            t_ms: r.get::<_, i64>(0)? as u64,
            cpu: r.get(1)?,
            rss_bytes: r.get::<_, i64>(2)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn sha_of_job(c: &Connection, id: u64) -> Result<Option<(String, String, String)>, Internal> {
    Ok(c.query_row(
        "SELECT app, uid, sha256 FROM jobs WHERE id = ?1",
        params![id as i64],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()?)
}

/// Events after `after`, for one job or all, oldest first. A job's are
/// read on `events_job` (`(?2 IS NULL OR job_id = ?2)` would walk every
/// event since `after`: a job stream's cost would follow the history).
pub fn events_after(
    c: &Connection,
    after: u64,
    job: Option<u64>,
    limit: u64,
) -> Result<Vec<Event>, Internal> {
    let mut st = match job {
        Some(_) => c.prepare_cached("SELECT seq, job_id, time, data FROM events WHERE job_id = ?2 AND seq > ?1 ORDER BY job_id, seq LIMIT ?3")?,
        None => c.prepare_cached("SELECT seq, job_id, time, data FROM events WHERE seq > ?1 AND ?2 IS NULL ORDER BY seq LIMIT ?3")?,
    };
    let rows = st
        .query_map(
            params![after as i64, job.map(|j| j as i64), limit as i64],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(seq, job, time, data)| {
            Ok(Event {
                seq: seq as u64,
                job: job as u64,
                time,
                kind: serde_json::from_str(&data)?,
            })
        })
        .collect()
}

pub fn unfinished(c: &Connection) -> Result<Vec<Unfinished>, Internal> {
    let mut st = c.prepare("SELECT id, state, role_file, options, attempt FROM jobs WHERE state IN ('SUBMITTED', 'WAITING', 'RUNNING') ORDER BY id")?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, u32>(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for (id, state, role_file, options, attempt) in rows {
        let mut pst = c.prepare(
            "SELECT idx, pid FROM peers WHERE job_id = ?1 AND pid IS NOT NULL AND ended IS NULL",
        )?;
        let pids = pst
            .query_map(params![id], |r| {
                Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Unfinished {
            id: id as u64,
            state: JobState::parse(&state).unwrap_or(JobState::Running),
            role_file,
            options: serde_json::from_str(&options).unwrap_or_default(),
            pids,
            attempt,
        });
    }
    Ok(out)
}

/// Jobs that ended but have no archive (the dispatcher stopped while
/// building it): (id, app).
pub fn ended_without_archive(c: &Connection) -> Result<Vec<(u64, String)>, Internal> {
    let mut st = c.prepare("SELECT id, app FROM jobs WHERE state IN ('FINISHED', 'FAILED', 'KILLED') AND archive_size IS NULL ORDER BY id")?;
    let rows = st
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A schedule as the scheduler reads it.
#[derive(Clone, Debug)]
pub struct ScheduleRow {
    pub id: u64,
    pub req: app::model::ScheduleRequest,
    pub paused: bool,
    pub created: String,
    pub next_ms: Option<i64>,
    pub pending_ms: Option<i64>,
}

const SCHEDULE_COLS: &str = "id, name, app, uid, role_file, options, schedule, cron, tz, concurrency, missed, paused, created, next_ms, pending_ms";

fn schedule_row(r: &rusqlite::Row) -> rusqlite::Result<ScheduleRow> {
    let word = |i: usize| -> rusqlite::Result<serde_json::Value> {
        Ok(serde_json::Value::String(r.get::<_, String>(i)?))
    };
    let options: String = r.get(5)?;
    Ok(ScheduleRow {
        id: r.get::<_, i64>(0)? as u64,
        req: app::model::ScheduleRequest {
            name: r.get(1)?,
            app: r.get(2)?,
            uid: r.get(3)?,
            role_file: r.get(4)?,
            options: serde_json::from_str(&options).unwrap_or_default(),
            schedule: r.get(6)?,
            cron: r.get(7)?,
            tz: r.get(8)?,
            concurrency: serde_json::from_value(word(9)?).unwrap_or_default(),
            missed: serde_json::from_value(word(10)?).unwrap_or_default(),
        },
        paused: r.get::<_, i64>(11)? != 0,
        created: r.get(12)?,
        next_ms: r.get(13)?,
        pending_ms: r.get(14)?,
    })
}

fn word_of<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn insert_schedule(
    c: &Connection,
    req: &app::model::ScheduleRequest,
    next_ms: Option<i64>,
) -> Result<u64, Internal> {
    c.execute(
        "INSERT INTO schedules (name, app, uid, role_file, options, schedule, cron, tz, concurrency, missed, created, next_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            req.name,
            req.app,
            req.uid,
            req.role_file,
            serde_json::to_string(&req.options)?,
            req.schedule,
            req.cron,
            req.tz,
            word_of(&req.concurrency),
            word_of(&req.missed),
            now(),
            next_ms
        ],
    )?;
    Ok(c.last_insert_rowid() as u64)
}

pub fn schedule(c: &Connection, id: u64) -> Result<Option<ScheduleRow>, Internal> {
    Ok(c.query_row(
        &format!("SELECT {SCHEDULE_COLS} FROM schedules WHERE id = ?1"),
        params![id as i64],
        schedule_row,
    )
    .optional()?)
}

pub fn schedules(c: &Connection) -> Result<Vec<ScheduleRow>, Internal> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {SCHEDULE_COLS} FROM schedules ORDER BY id DESC LIMIT 1000"
    ))?;
    let rows = st.query_map([], schedule_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Schedules with something to do at `now`: a run due, or one queued.
pub fn due_schedules(c: &Connection, now_ms: i64) -> Result<Vec<ScheduleRow>, Internal> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {SCHEDULE_COLS} FROM schedules
         WHERE paused = 0 AND ((next_ms IS NOT NULL AND next_ms <= ?1) OR pending_ms IS NOT NULL)
         ORDER BY id"
    ))?;
    let rows = st.query_map(params![now_ms], schedule_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn set_schedule_times(
    c: &Connection,
    id: u64,
    next_ms: Option<i64>,
    pending_ms: Option<i64>,
) -> Result<(), Internal> {
    c.execute(
        "UPDATE schedules SET next_ms = ?2, pending_ms = ?3 WHERE id = ?1",
        params![id as i64, next_ms, pending_ms],
    )?;
    Ok(())
}

pub fn set_schedule_paused(
    c: &Connection,
    id: u64,
    paused: bool,
    next_ms: Option<i64>,
) -> Result<bool, Internal> {
    let n = c.execute(
        "UPDATE schedules SET paused = ?2, next_ms = ?3 WHERE id = ?1",
        params![id as i64, paused as i64, next_ms],
    )?;
    Ok(n > 0)
}

/// Forgets a schedule and its history (its jobs stay).
pub fn delete_schedule(c: &mut Connection, id: u64) -> Result<bool, Internal> {
    let tx = c.transaction()?;
    let n = tx.execute("DELETE FROM schedules WHERE id = ?1", params![id as i64])?;
    tx.execute(
        "DELETE FROM schedule_runs WHERE schedule_id = ?1",
        params![id as i64],
    )?;
    tx.commit()?;
    Ok(n > 0)
}

/// Records a due time that started no job (its outcome says why) and
/// moves the schedule on, in one transaction.
pub fn record_schedule_skip(c: &mut Connection, run: &DueRecord) -> Result<(), Internal> {
    let tx = c.transaction()?;
    record_schedule_run(&tx, run, None, &now())?;
    tx.commit()?;
    Ok(())
}

/// Deletes each schedule's skipped due times beyond its newest `keep`.
/// Safe for the no-duplicate rule: a schedule only moves forward, so a
/// due time that old is never due again.
pub fn prune_schedule_skips(c: &Connection, keep: u64) -> Result<u64, Internal> {
    let n = c.execute(
        "DELETE FROM schedule_runs WHERE job_id IS NULL AND rowid IN (
             SELECT rowid FROM (
                 SELECT rowid, ROW_NUMBER() OVER (PARTITION BY schedule_id ORDER BY due_ms DESC) AS k
                 FROM schedule_runs WHERE job_id IS NULL
             ) WHERE k > ?1
         )",
        params![keep as i64],
    )?;
    Ok(n as u64)
}

pub fn schedule_run_exists(c: &Connection, id: u64, due_ms: i64) -> Result<bool, Internal> {
    Ok(c.query_row(
        "SELECT EXISTS (SELECT 1 FROM schedule_runs WHERE schedule_id = ?1 AND due_ms = ?2)",
        params![id as i64, due_ms],
        |r| r.get(0),
    )?)
}

/// The schedule's latest job and its state.
pub fn schedule_last_job(c: &Connection, id: u64) -> Result<Option<(u64, JobState)>, Internal> {
    Ok(c.query_row(
        "SELECT j.id, j.state FROM schedule_runs s JOIN jobs j ON j.id = s.job_id
             WHERE s.schedule_id = ?1 ORDER BY s.due_ms DESC LIMIT 1",
        params![id as i64],
        |r| {
            let state: String = r.get(1)?;
            Ok((
                r.get::<_, i64>(0)? as u64,
                JobState::parse(&state).unwrap_or(JobState::Failed),
            ))
        },
    )
    .optional()?)
}

/// A schedule's history, newest first, with each job's state; and how
/// many due times it has acted on.
pub fn schedule_runs(
    c: &Connection,
    id: u64,
    limit: u64,
) -> Result<(Vec<app::model::ScheduleRun>, u64), Internal> {
    let mut st = c.prepare_cached(
        "SELECT s.due_ms, s.job_id, j.state, s.outcome, s.time FROM schedule_runs s
         LEFT JOIN jobs j ON j.id = s.job_id
         WHERE s.schedule_id = ?1 ORDER BY s.due_ms DESC LIMIT ?2",
    )?;
    let rows = st.query_map(params![id as i64, limit as i64], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<i64>>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (due, job, state, outcome, time) = row?;
        out.push(app::model::ScheduleRun {
            due: crate::util::rfc3339_ms(due),
            job: job.map(|j| j as u64),
            state: state.as_deref().and_then(JobState::parse),
            outcome,
            time,
        });
    }
    let n: i64 = c.query_row(
        "SELECT COUNT(*) FROM schedule_runs WHERE schedule_id = ?1",
        params![id as i64],
        |r| r.get(0),
    )?;
    Ok((out, n as u64))
}

/// Records a sweep and every one of its jobs (SUBMITTED) in one
/// transaction: a sweep is answered whole or not at all, and a crash while
/// it is recorded leaves neither the sweep nor a part of its jobs. Each
/// job's `sweep` names its combination and repeat; the sweep's id is
/// filled in here.
pub fn insert_sweep(
    c: &mut Connection,
    req: &app::sweep::SweepRequest,
    uid: &str,
    repeat: u32,
    mut jobs: Vec<NewJob>,
) -> Result<(u64, Vec<Event>), Internal> {
    let t = now();
    let tx = c.transaction()?;
    tx.execute(
        "INSERT INTO sweeps (app, uid, role_file, parameters, repeat, options, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            req.app,
            uid,
            req.role_file,
            serde_json::to_string(&req.parameters)?,
            repeat,
            serde_json::to_string(&req.options)?,
            t
        ],
    )?;
    let sweep = tx.last_insert_rowid() as u64;
    let mut events = Vec::with_capacity(jobs.len());
    for j in &mut jobs {
        if let Some(link) = &mut j.sweep {
            link.0 = sweep;
        }
        events.push(insert_job_in(&tx, j, &t)?);
    }
    tx.commit()?;
    Ok((sweep, events))
}

/// A sweep with every combination's runs and their durations.
pub fn sweep(c: &Connection, id: u64) -> Result<Option<app::sweep::SweepDetail>, Internal> {
    use app::sweep::{SweepDetail, SweepPoint, SweepRun};
    let row = c
        .query_row(
            "SELECT app, uid, role_file, parameters, repeat, created FROM sweeps WHERE id = ?1",
            params![id as i64],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, u32>(4)?,
                    r.get::<_, String>(5)?,
                ))
            },
        )
        .optional()?;
    let Some((app, uid, role_file, parameters, repeat, created)) = row else {
        return Ok(None);
    };
    let parameters: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&parameters)?;
    let combos = app::sweep::combinations(&parameters).unwrap_or_default();
    let mut points: Vec<SweepPoint> = combos
        .into_iter()
        .map(|values| SweepPoint {
            values,
            jobs: vec![],
            median_s: None,
            min_s: None,
            max_s: None,
        })
        .collect();
    let mut st = c.prepare_cached(
        "SELECT s.point, s.rep, j.id, j.state,
                CASE WHEN j.ended IS NOT NULL AND j.started IS NOT NULL
                     THEN (julianday(j.ended) - julianday(j.started)) * 86400.0 END
         FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id
         WHERE s.sweep_id = ?1 ORDER BY s.point, s.rep",
    )?;
    let rows = st.query_map(params![id as i64], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            r.get::<_, u32>(1)?,
            r.get::<_, i64>(2)? as u64,
            r.get::<_, String>(3)?,
            r.get::<_, Option<f64>>(4)?,
        ))
    })?;
    let (mut total, mut ended) = (0, 0);
    for row in rows {
        let (point, rep, job, state, duration) = row?;
        let state = JobState::parse(&state).unwrap_or(JobState::Failed);
        total += 1;
        if state.is_terminal() {
            ended += 1;
        }
        if let Some(p) = points.get_mut(point as usize) {
            p.jobs.push(SweepRun {
                id: job,
                repeat: rep,
                state,
                duration_s: duration.filter(|_| state.is_terminal()),
            });
        }
    }
    for p in &mut points {
        let done: Vec<f64> = p
            .jobs
            .iter()
            .filter(|j| j.state == JobState::Finished)
            .filter_map(|j| j.duration_s)
            .collect();
        (p.median_s, p.min_s, p.max_s) = app::sweep::stats(&done);
    }
    Ok(Some(SweepDetail {
        id,
        app,
        uid,
        created,
        role_file,
        parameters,
        repeat,
        jobs_total: total,
        jobs_ended: ended,
        points,
    }))
}

/// Sweeps, newest first, with how far their jobs got.
pub fn sweeps(c: &Connection, limit: u64) -> Result<Vec<app::sweep::SweepSummary>, Internal> {
    let mut st = c.prepare_cached(
        "SELECT w.id, w.app, w.uid, w.created, w.parameters, w.repeat,
                (SELECT COUNT(*) FROM sweep_jobs s WHERE s.sweep_id = w.id),
                (SELECT COUNT(*) FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id
                  WHERE s.sweep_id = w.id AND j.state IN ('FINISHED', 'FAILED', 'KILLED')),
                (SELECT COUNT(*) FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id
                  WHERE s.sweep_id = w.id AND j.state IN ('FAILED', 'KILLED'))
         FROM sweeps w ORDER BY w.id DESC LIMIT ?1",
    )?;
    let rows = st.query_map(params![limit as i64], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, u32>(5)?,
            r.get::<_, u32>(6)?,
            r.get::<_, u32>(7)?,
            r.get::<_, u32>(8)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, app, uid, created, parameters, repeat, total, ended, failed) = row?;
        let parameters: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&parameters)?;
        let combinations = parameters
            .values()
            .map(|v| v.as_array().map_or(1, Vec::len) as u32)
            .product();
        out.push(app::sweep::SweepSummary {
            id,
            app,
            uid,
            created,
            parameters: parameters.keys().cloned().collect(),
            combinations,
            repeat,
            jobs_total: total,
            jobs_ended: ended,
            jobs_failed: failed,
        });
    }
    Ok(out)
}

/// The jobs of a sweep that have not ended.
pub fn sweep_live_jobs(c: &Connection, id: u64) -> Result<Vec<u64>, Internal> {
    let mut st = c.prepare_cached(
        "SELECT j.id FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id
         WHERE s.sweep_id = ?1 AND j.state NOT IN ('FINISHED', 'FAILED', 'KILLED') ORDER BY j.id",
    )?;
    let ids = st
        .query_map(params![id as i64], |r| r.get::<_, i64>(0))?
        .map(|r| r.map(|i| i as u64))
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

/// A small persistent setting (the Mesos framework id).
pub fn get_kv(c: &Connection, key: &str) -> Result<Option<String>, Internal> {
    Ok(
        c.query_row("SELECT value FROM kv WHERE key = ?1", params![key], |r| {
            r.get(0)
        })
        .optional()?,
    )
}

/// Sets (or with `None` removes) a setting; durable when it returns.
pub fn set_kv(c: &Connection, key: &str, value: Option<&str>) -> Result<(), Internal> {
    match value {
        Some(v) => c.execute(
            "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, v],
        )?,
        None => c.execute("DELETE FROM kv WHERE key = ?1", params![key])?,
    };
    Ok(())
}

/// Where a Mesos peer runs: its task, agent and the agent's files API.
#[derive(Clone, Debug)]
pub struct TaskRow {
    pub idx: u32,
    pub task_id: String,
    /// The framework it was launched under: its sandbox path names it.
    pub framework_id: String,
    pub agent_id: String,
    pub agent_url: String,
}

/// Records a job's tasks before they are launched; part of the caller's
/// transaction.
pub fn insert_tasks(c: &Connection, job: u64, rows: &[TaskRow]) -> Result<(), Internal> {
    let mut st = c.prepare_cached(
        "INSERT OR REPLACE INTO tasks (job_id, idx, task_id, framework_id, agent_id, agent_url) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for r in rows {
        st.execute(params![
            job as i64,
            r.idx,
            r.task_id,
            r.framework_id,
            r.agent_id,
            r.agent_url
        ])?;
    }
    Ok(())
}

pub fn tasks_of(c: &Connection, job: u64) -> Result<Vec<TaskRow>, Internal> {
    let mut st = c.prepare(
        "SELECT idx, task_id, framework_id, agent_id, agent_url FROM tasks WHERE job_id = ?1 ORDER BY idx",
    )?;
    let rows = st
        .query_map(params![job as i64], |r| {
            Ok(TaskRow {
                idx: r.get(0)?,
                task_id: r.get(1)?,
                framework_id: r.get(2)?,
                agent_id: r.get(3)?,
                agent_url: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Records a blob a job uses beside its binary (the Mesos peer list), so
/// that retention keeps it while the job is kept.
pub fn insert_job_blob(c: &Connection, job: u64, sha256: &str) -> Result<(), Internal> {
    c.execute(
        "INSERT OR IGNORE INTO job_blobs (job_id, sha256) VALUES (?1, ?2)",
        params![job as i64, sha256],
    )?;
    Ok(())
}

/// The apps that have jobs, one index probe each (not one per job).
pub fn job_apps(c: &Connection) -> Result<Vec<String>, Internal> {
    let mut st = c.prepare(
        "WITH RECURSIVE a(app) AS (
             SELECT MIN(app) FROM jobs
             UNION ALL
             SELECT (SELECT MIN(app) FROM jobs WHERE app > a.app) FROM a WHERE a.app IS NOT NULL
         )
         SELECT app FROM a WHERE app IS NOT NULL",
    )?;
    let apps = st
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(apps)
}

/// Finished jobs of `app` that retention no longer keeps, oldest first, at
/// most `limit`: beyond the `keep` newest finished ones, or ended before
/// `ended_before`. Only jobs whose archive is built are taken (one still
/// being built is left for the next sweep), unless they ended before
/// `stale` (an archive that failed is not waited for forever).
pub fn expired_jobs(
    c: &Connection,
    app: &str,
    keep: Option<u64>,
    ended_before: Option<&str>,
    stale: &str,
    limit: usize,
) -> Result<Vec<(u64, Why)>, Internal> {
    let mut out: Vec<(u64, Why)> = Vec::new();
    if let Some(cut) = ended_before {
        let mut st = c.prepare(
            "SELECT id FROM jobs WHERE app = ?1 AND ended < ?2
               AND (archive_size IS NOT NULL OR ended < ?3) ORDER BY id LIMIT ?4",
        )?;
        for id in st.query_map(params![app, cut, stale, limit as i64], |r| {
            r.get::<_, i64>(0)
        })? {
            out.push((id? as u64, Why::Age));
        }
    }
    if let Some(keep) = keep {
        let mut st = c.prepare(
            "SELECT id FROM (SELECT id, archive_size, ended FROM jobs
                 WHERE app = ?1 AND ended IS NOT NULL ORDER BY id DESC LIMIT -1 OFFSET ?2)
             WHERE archive_size IS NOT NULL OR ended < ?3 ORDER BY id LIMIT ?4",
        )?;
        for id in st.query_map(
            params![app, keep.min(i64::MAX as u64) as i64, stale, limit as i64],
            |r| r.get::<_, i64>(0),
        )? {
            let id = id? as u64;
            if !out.iter().any(|(o, _)| *o == id) {
                out.push((id, Why::Count));
            }
        }
    }
    out.sort_unstable_by_key(|(id, _)| *id);
    out.truncate(limit);
    Ok(out)
}

/// Why retention deleted a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Beyond the newest `--keep-jobs` finished jobs of its app.
    Count,
    /// Ended longer ago than `--keep-days`.
    Age,
}

/// Deletes jobs' rows (the job, its peers, tasks, allotments, usage and
/// events) in one transaction and leaves a tombstone for each, so that
/// their ids answer "deleted" rather than "never was". Returns the blobs
/// they used, for collection.
pub fn delete_jobs(c: &mut Connection, jobs: &[(u64, String)]) -> Result<Vec<String>, Internal> {
    let tx = c.transaction()?;
    let t = now();
    let mut shas = Vec::new();
    for (id, why) in jobs {
        let id = *id as i64;
        let Some((app, sha)) = tx
            .query_row(
                "SELECT app, sha256 FROM jobs WHERE id = ?1",
                params![id],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()?
        else {
            continue;
        };
        shas.push(sha);
        let mut st = tx.prepare_cached("SELECT sha256 FROM job_blobs WHERE job_id = ?1")?;
        for s in st.query_map(params![id], |r| r.get::<_, String>(0))? {
            shas.push(s?);
        }
        for table in [
            "events",
            "peers",
            "tasks",
            "allot",
            "usage",
            "job_blobs",
            "attempts",
            "sweep_jobs",
            "schedule_runs",
        ] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE job_id = ?1"),
                params![id],
            )?;
        }
        tx.execute("DELETE FROM jobs WHERE id = ?1", params![id])?;
        tx.execute(
            "INSERT OR REPLACE INTO deleted_jobs (id, app, deleted, why) VALUES (?1, ?2, ?3, ?4)",
            params![id, app, t, why],
        )?;
    }
    tx.commit()?;
    shas.sort_unstable();
    shas.dedup();
    Ok(shas)
}

/// When and why retention deleted job `id`, if it did.
pub fn deleted_job(c: &Connection, id: u64) -> Result<Option<(String, String, String)>, Internal> {
    Ok(c.query_row(
        "SELECT app, deleted, why FROM deleted_jobs WHERE id = ?1",
        params![id as i64],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()?)
}

/// Of `ids`, those retention deleted (their directories may be left over
/// from a stop between the rows and the files).
pub fn deleted_among(c: &Connection, ids: &[u64]) -> Result<Vec<u64>, Internal> {
    let mut st = c.prepare_cached("SELECT 1 FROM deleted_jobs WHERE id = ?1")?;
    let mut out = Vec::new();
    for id in ids {
        if st.exists(params![*id as i64])? {
            out.push(*id);
        }
    }
    Ok(out)
}

/// Whether an app version or a kept job still uses a blob.
pub fn blob_in_use(c: &Connection, sha256: &str) -> Result<bool, Internal> {
    Ok(c.query_row(
        "SELECT EXISTS (SELECT 1 FROM versions WHERE sha256 = ?1)
             OR EXISTS (SELECT 1 FROM jobs WHERE sha256 = ?1)
             OR EXISTS (SELECT 1 FROM job_blobs WHERE sha256 = ?1)",
        params![sha256],
        |r| r.get(0),
    )?)
}

/// The shas of an app's versions (before the app is deleted).
pub fn version_shas(c: &Connection, app: &str) -> Result<Vec<String>, Internal> {
    let mut st = c.prepare("SELECT DISTINCT sha256 FROM versions WHERE app = ?1")?;
    let shas = st
        .query_map(params![app], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(shas)
}

/// Gives back up to `pages` free pages to the file system; returns how
/// many free pages remain. Small steps keep the connection's lock short.
pub fn vacuum_step(c: &Connection, pages: u32) -> Result<u64, Internal> {
    // 0 would mean every page: never one long step.
    c.execute_batch(&format!("PRAGMA incremental_vacuum({})", pages.max(1)))?;
    free_pages(c)
}

/// Pages the database holds but does not use.
pub fn free_pages(c: &Connection) -> Result<u64, Internal> {
    Ok(c.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0))? as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_job(c: &mut Connection, app: &str) -> u64 {
        let ev = insert_job(
            c,
            &NewJob {
                app: app.into(),
                uid: "u".into(),
                sha256: "ab".repeat(32),
                role_file: "peers: 1".into(),
                options: JobOptions::default(),
                peers_total: 1,
                replay_of: None,
                sweep: None,
                schedule: None,
            },
        )
        .unwrap();
        ev.job
    }

    #[test]
    fn pruning_keeps_each_schedule_s_newest_skips_and_every_run_with_a_job() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        let c = &mut *db.conn.lock().unwrap();
        for sched in [1u64, 2] {
            for due in 0..10i64 {
                let run = DueRecord {
                    schedule: sched,
                    due_ms: due * 1000,
                    outcome: "skipped: test".into(),
                    next_ms: None,
                    pending_ms: None,
                };
                record_schedule_skip(c, &run).unwrap();
            }
        }
        c.execute(
            "INSERT INTO schedule_runs (schedule_id, due_ms, job_id, outcome, time) VALUES (1, -5000, 7, 'submitted', 't')",
            [],
        )
        .unwrap();
        assert_eq!(prune_schedule_skips(c, 3).unwrap(), 14);
        let left: Vec<(i64, i64)> = c
            .prepare("SELECT schedule_id, due_ms FROM schedule_runs ORDER BY schedule_id, due_ms")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            left,
            [
                (1, -5000),
                (1, 7000),
                (1, 8000),
                (1, 9000),
                (2, 7000),
                (2, 8000),
                (2, 9000)
            ],
            "the run with a job stays, however old"
        );
    }

    #[test]
    fn deleted_jobs_take_their_rows_and_events_and_the_freed_pages_are_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let db = Db::open(&path).unwrap();
        let mut c = db.conn.lock().unwrap();
        let ids: Vec<u64> = (0..300).map(|_| new_job(&mut c, "a")).collect();
        let kind = EventKind::Job {
            state: JobState::Finished,
            reason: "x".repeat(2000),
        };
        for id in &ids {
            record(&mut c, *id, &kind).unwrap();
            record(&mut c, *id, &EventKind::Archive { size: 1 }).unwrap();
        }
        insert_job_blob(&c, ids[0], &"cd".repeat(32)).unwrap();
        let pages = |c: &Connection| {
            c.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
                .unwrap()
        };
        let before = pages(&c);
        let stale = "9999";
        let old = expired_jobs(&c, "a", Some(10), None, stale, 1000).unwrap();
        assert_eq!(old.len(), 290);
        assert_eq!(old[0], (ids[0], Why::Count), "oldest first");
        assert!(
            old.iter().all(|(id, _)| *id <= ids[289]),
            "the 10 newest stay"
        );
        let batch: Vec<(u64, String)> = old.iter().map(|(id, _)| (*id, "too old".into())).collect();
        let shas = delete_jobs(&mut c, &batch).unwrap();
        assert_eq!(shas, vec!["ab".repeat(32), "cd".repeat(32)]);
        assert!(job_detail_gone(&c, ids[0]));
        assert_eq!(deleted_job(&c, ids[0]).unwrap().unwrap().2, "too old");
        let events: i64 = c
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(events, 10 * 3, "only the kept jobs' events remain");
        assert!(
            blob_in_use(&c, &"ab".repeat(32)).unwrap(),
            "kept jobs use it"
        );
        assert!(!blob_in_use(&c, &"cd".repeat(32)).unwrap());
        assert!(free_pages(&c).unwrap() > 0);
        while vacuum_step(&c, 16).unwrap() > 0 {}
        assert!(pages(&c) < before / 2, "{} of {before} pages", pages(&c));
        assert_eq!(
            deleted_among(&c, &[ids[0], ids[299], 123456]).unwrap(),
            vec![ids[0]]
        );
        let count = |c: &Connection| -> i64 {
            c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
                .unwrap()
        };
        let events = count(&c);
        assert!(record(&mut c, ids[0], &EventKind::Archive { size: 1 }).is_err());
        assert_eq!(
            count(&c),
            events,
            "no event for a deleted job's late archive"
        );
    }

    fn job_detail_gone(c: &Connection, id: u64) -> bool {
        super::job(c, id).unwrap().is_none()
    }

    #[test]
    fn a_database_made_before_retention_is_rebuilt_once_for_incremental_vacuum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch("CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, app TEXT NOT NULL, uid TEXT NOT NULL, sha256 TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', user TEXT NOT NULL DEFAULT '', tag TEXT NOT NULL DEFAULT '', role_file TEXT NOT NULL, options TEXT NOT NULL, peers_total INTEGER NOT NULL, submitted TEXT NOT NULL, started TEXT, ended TEXT, archive_size INTEGER, replay_of INTEGER); INSERT INTO jobs (app, uid, sha256, state, role_file, options, peers_total, submitted) VALUES ('a', 'u', 's', 'FINISHED', '', '{}', 1, 't');").unwrap();
            let mode: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
            assert_eq!(mode, 0);
        }
        let db = Db::open(&path).unwrap();
        let c = db.conn.lock().unwrap();
        let mode: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, 2, "INCREMENTAL");
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "the data is kept");
    }

    #[test]
    fn a_long_run_keeps_at_most_the_cap_of_samples_over_its_whole_span() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Connection::open(dir.path().join("db")).unwrap();
        c.execute_batch(SCHEMA).unwrap();
        let samples: Vec<_> = (0..2500u64)
            .map(|i| crate::usage::Sample {
                job: 1,
                peer: 0,
                t_ms: i * 1000,
                cpu: 1.0,
                rss_bytes: i,
            })
            .collect();
        for chunk in samples.chunks(7) {
            insert_usage(&mut c, chunk).unwrap();
        }
        let kept = usage_of(&c, 1, 0).unwrap();
        assert!(
            kept.len() <= USAGE_POINTS && kept.len() > USAGE_POINTS / 2,
            "{}",
            kept.len()
        );
        assert_eq!(kept[0].t_ms, 0, "the start is kept");
        assert!(kept.last().unwrap().t_ms >= 2_490_000, "the end is kept");
        assert!(kept.windows(2).all(|w| w[0].t_ms < w[1].t_ms));
        assert!(usage_of(&c, 1, 1).unwrap().is_empty());
    }
}
