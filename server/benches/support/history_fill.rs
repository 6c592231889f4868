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
