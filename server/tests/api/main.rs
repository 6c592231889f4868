//! Integration tests: the real server on a loopback port, real files, real
//! SQLite, real child processes.

mod helpers;
#[path = "../common/ports.rs"]
mod ports;

mod access;
mod apps;
mod dashboard;
mod disk_full;
mod events;
mod hostile;
mod jobs;
mod k3;
mod log_format;
mod metrics;
mod restart;
mod retention;
mod retries;
mod schedules;
mod sweeps;
mod usage;
#[path = "../common/usage_check.rs"]
mod usage_check;
