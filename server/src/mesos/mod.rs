//! The Mesos backend: a framework speaking the v1 scheduler HTTP API.
//!
//! `framework` is the pure core (offers, tasks, reconciliation); `conn`
//! keeps the subscription and sends calls; `detect` finds the leading
//! master (a list or ZooKeeper, via `zk`); `files` reads sandboxes through
//! the agents' files API; `task` turns peers into TaskInfos.

pub mod conn;
pub mod detect;
pub mod files;
pub mod framework;
pub mod task;
pub mod zk;

pub use task::{offer_from, parse_task_id, peer_state, task_id, task_info};
