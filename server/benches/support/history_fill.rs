//! A data directory holding a year of jobs, written straight into the
//! database the dispatcher will open (schema made by the dispatcher's own
//! code; one transaction, no fsync): the history benchmark's and the
//! dashboard's big-history browser test's (`examples/fill_history.rs`).

use app::model::{EventKind, JobState};

pub const PEERS: u32 = 4;

/// Writes `jobs` finished jobs of `PEERS` peers and 3 events each into
/// `dir`'s database; the apps are `bench_scalability_0` … `_9`.
pub fn fill(dir: &std::path::Path, jobs: u64) {
    let path = dir.join("dispatcher.db");
    drop(dispatcher::db::Db::open(&path).unwrap());
    let mut c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("PRAGMA synchronous = OFF;").unwrap();
    let tx = c.transaction().unwrap();
    {
        let mut job = tx.prepare("INSERT INTO jobs (id, app, uid, sha256, state, role_file, options, peers_total, submitted, started, ended, archive_size) VALUES (?1, ?2, 'u1', 'ab', 'FINISHED', ?3, '{}', 4, ?4, ?4, ?4, 1000)").unwrap();
        let mut peer = tx.prepare("INSERT INTO peers (job_id, idx, role, host, port, state, exit_code, started, ended) VALUES (?1, ?2, 'workers', 'localhost', ?3, 'FINISHED', 0, ?4, ?4)").unwrap();
        let mut event = tx
            .prepare("INSERT INTO events (job_id, time, data) VALUES (?1, ?2, ?3)")
            .unwrap();
        let role_file = "name: tpch\nroles:\n  workers:\n    peers: 4\n    cpu: 1\n    mem: 1\n    k3_globals:\n      query: q18\n";
        let kinds: Vec<String> = [
            EventKind::Job {
                state: JobState::Submitted,
                reason: String::new(),
            },
            EventKind::Job {
                state: JobState::Finished,
                reason: String::new(),
            },
            EventKind::Archive { size: 1000 },
        ]
        .iter()
        .map(|k| serde_json::to_string(k).unwrap())
        .collect();
        for id in 1..=jobs {
            let t = "2026-01-01T00:00:00Z";
            let app = format!("bench_scalability_{}", id % 10);
            job.execute(rusqlite::params![id as i64, app, role_file, t])
                .unwrap();
            for p in 0..PEERS {
                peer.execute(rusqlite::params![id as i64, p, 40000 + p, t])
                    .unwrap();
            }
            for k in &kinds {
                event.execute(rusqlite::params![id as i64, t, k]).unwrap();
            }
        }
    }
    tx.commit().unwrap();
}

/// A time on 2026-01-01, `ms` milliseconds after midnight (RFC 3339).
fn at(ms: u64) -> String {
    format!(
        "2026-01-01T{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Adds one finished job of `peers` peers, each with its starting, running
/// and finished events (staggered by a millisecond, running 20 s), and
/// returns its id: the job page's browser test at a big gang's size.
pub fn fill_big_job(dir: &std::path::Path, peers: u32) -> u64 {
    use app::model::PeerState;
    let path = dir.join("dispatcher.db");
    drop(dispatcher::db::Db::open(&path).unwrap());
    let mut c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("PRAGMA synchronous = OFF;").unwrap();
    let tx = c.transaction().unwrap();
    let id: i64 = tx
        .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM jobs", [], |r| {
            r.get(0)
        })
        .unwrap();
    let end = 20_000 + peers as u64 + 10;
    let role_file = format!("name: workers\npeers: {peers}\ncpu: 0.1\nmem: 0.0625\n");
    tx.execute(
        "INSERT INTO jobs (id, app, uid, sha256, state, role_file, options, peers_total, submitted, started, ended, archive_size) VALUES (?1, 'big', 'u1', 'ab', 'FINISHED', ?2, '{}', ?3, ?4, ?4, ?5, 1000)",
        rusqlite::params![id, role_file, peers, at(0), at(end)],
    )
    .unwrap();
    {
        let mut peer = tx.prepare("INSERT INTO peers (job_id, idx, role, host, port, state, exit_code, started, ended) VALUES (?1, ?2, 'workers', ?3, ?4, 'FINISHED', 0, ?5, ?6)").unwrap();
        let mut allot = tx
            .prepare("INSERT INTO allot (job_id, idx, cpus_milli, mem_mb) VALUES (?1, ?2, 100, 64)")
            .unwrap();
        let mut event = tx
            .prepare("INSERT INTO events (job_id, time, data) VALUES (?1, ?2, ?3)")
            .unwrap();
        let job_ev = |state| {
            serde_json::to_string(&EventKind::Job {
                state,
                reason: String::new(),
            })
            .unwrap()
        };
        event
            .execute(rusqlite::params![id, at(0), job_ev(JobState::Submitted)])
            .unwrap();
        event
            .execute(rusqlite::params![id, at(1), job_ev(JobState::Running)])
            .unwrap();
        let host = |p: u32| format!("agent-{}", p / 10);
        let port = |p: u32| 31000 + p % 10;
        for p in 0..peers {
            let t = p as u64;
            peer.execute(rusqlite::params![
                id,
                p,
                host(p),
                port(p),
                at(t + 5),
                at(20_000 + t)
            ])
            .unwrap();
            allot.execute(rusqlite::params![id, p]).unwrap();
            for (state, ms) in [
                (PeerState::Starting, t),
                (PeerState::Running, t + 5),
                (PeerState::Finished, 20_000 + t),
            ] {
                let kind = EventKind::Peer {
                    index: p,
                    role: "workers".into(),
                    host: host(p),
                    port: port(p) as u16,
                    state,
                    exit_code: (state == PeerState::Finished).then_some(0),
                    signal: None,
                    reason: String::new(),
                };
                event
                    .execute(rusqlite::params![
                        id,
                        at(ms),
                        serde_json::to_string(&kind).unwrap()
                    ])
                    .unwrap();
            }
        }
        event
            .execute(rusqlite::params![id, at(end), job_ev(JobState::Finished)])
            .unwrap();
        event
            .execute(rusqlite::params![
                id,
                at(end),
                serde_json::to_string(&EventKind::Archive { size: 1000 }).unwrap()
            ])
            .unwrap();
    }
    tx.commit().unwrap();
    id as u64
}
