//! Command-line configuration (K3's flags keep their meaning).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Clone, Debug)]
#[command(
    name = "dispatcher",
    version,
    about = "Run distributed, multi-peer programs on this machine or on an Apache Mesos cluster.",
    long_about = "Dispatcher keeps uploaded programs (apps), runs jobs described by K3-compatible YAML role files, \
and serves a JSON API, live events and the K3 Dispatcher's curl routes.\n\n\
Without --master it runs every peer on this machine (the local backend), using the cpus, memory \
and port range given below. With --master it is a Mesos framework (v1 scheduler HTTP API): one task \
per peer, placed on offers, binaries fetched by the agents from --advertise-url.",
    after_help = "Examples:\n  dispatcher                          # local backend, http://127.0.0.1:5000\n  dispatcher -d /var/lib/dispatcher -p 8080 --ip 0.0.0.0 --token \"$TOKEN\"\n  dispatcher --cpus 16 --ports 30000-30999\n  dispatcher --master zk://zk1:2181,zk2:2181/mesos --ip 0.0.0.0 --advertise-url http://dispatch.example:5000\n  dispatcher --master m1:5050 --teardown      # unregister the framework, killing its tasks"
)]
pub struct Config {
    /// Mesos master: host:port, a comma list, or zk://host:port[,host:port]/path. Without it, peers run on this machine.
    #[arg(short = 'm', long, env = "DISPATCHER_MASTER")]
    pub master: Option<String>,

    /// Data directory: the database, stored apps, job sandboxes and archives.
    #[arg(
        short = 'd',
        long = "dir",
        default_value = "./data",
        env = "DISPATCHER_DIR"
    )]
    pub dir: PathBuf,

    /// HTTP port for the API and the dashboard.
    #[arg(short = 'p', long, default_value_t = 5000, env = "DISPATCHER_PORT")]
    pub port: u16,

    /// Address to bind. The default keeps the server private to this machine; use 0.0.0.0 to expose it.
    #[arg(long, default_value = "127.0.0.1", env = "DISPATCHER_IP")]
    pub ip: IpAddr,

    /// Token required on every route that changes something (uploads, submissions, kills, deletes), sent as `Authorization: Bearer <token>`; the dashboard asks for it once. Also read from DISPATCHER_TOKEN. Prefer --token-file: a flag shows in the process list.
    #[arg(
        long,
        env = "DISPATCHER_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,

    /// A file holding the token (its first line), so that it shows neither in the process list nor in the environment.
    #[arg(long, env = "DISPATCHER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Token required to read anything (job lists, role files, logs, archives, events), for a dispatcher reachable beyond a trusted network. The write token grants reads too. Also read from DISPATCHER_READ_TOKEN.
    #[arg(
        long,
        env = "DISPATCHER_READ_TOKEN",
        hide_env_values = true,
        conflicts_with = "read_token_file"
    )]
    pub read_token: Option<String>,

    /// A file holding the read token (its first line).
    #[arg(long, env = "DISPATCHER_READ_TOKEN_FILE")]
    pub read_token_file: Option<PathBuf>,

    /// Largest role file accepted, in KiB (uploads, `-F text=`, JSON submissions and /api/validate).
    #[arg(long, default_value_t = 1024)]
    pub max_role_file_kb: u64,

    /// Most peers one job may ask for, all roles together.
    #[arg(long, default_value_t = 10_000)]
    pub max_peers_per_job: u32,

    /// Most roles (YAML documents) one role file may hold.
    #[arg(long, default_value_t = 1_000)]
    pub max_roles: usize,

    /// Most app uploads received at the same time; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 4)]
    pub max_uploads: usize,

    /// Most event and log streams open at the same time (dashboards, `curl -N`); more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 1_000)]
    pub max_event_streams: usize,

    /// Local backend: cores peers may use in total (default: this machine's cores).
    #[arg(long)]
    pub cpus: Option<f64>,

    /// Local backend: memory peers may use in total, in MB (default: this machine's memory).
    #[arg(long = "mem-mb")]
    pub mem_mb: Option<u64>,

    /// Local backend: ports handed to peers, one each, as FIRST-LAST.
    #[arg(long, default_value = "40000-40999")]
    pub ports: String,

    /// Local backend: the address peers are told to reach each other at.
    #[arg(long, default_value = "127.0.0.1")]
    pub peer_address: String,

    /// Local backend: run each peer in a cgroup v2 of its own, so that what it forks (even a daemon that leaves its process group) is sampled and stopped with it. `auto`: under the dispatcher's own cgroup when that is writable, else process groups only; `off`; or a delegated cgroup v2 directory (e.g. a systemd unit's with Delegate=yes), which must be usable.
    #[arg(long, default_value = "auto", value_name = "auto|off|DIR")]
    pub cgroup: String,

    /// Seconds a client has to send a request's headers before its connection is closed (a slow-headers attack holds connections open otherwise).
    #[arg(long, default_value_t = 30)]
    pub header_timeout_secs: u64,

    /// Seconds a killed peer gets between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 5)]
    pub kill_grace_secs: u64,

    /// Largest file kept whole in a job archive, in MB; bigger files keep their first part.
    #[arg(long, default_value_t = 64)]
    pub archive_file_cap_mb: u64,

    /// Largest app upload accepted, in MB.
    #[arg(long, default_value_t = 16384)]
    pub max_upload_mb: u64,

    /// Mesos: the URL agents fetch app binaries from and the Mesos web UI links to (default: http://<--ip or this host's name>:<port>).
    #[arg(long, env = "DISPATCHER_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// Mesos: framework name shown by the master.
    #[arg(long, default_value = "dispatcher")]
    pub framework_name: String,

    /// Mesos: user tasks run as (default: the user running the dispatcher).
    #[arg(long)]
    pub mesos_user: Option<String>,

    /// Mesos: the role the framework subscribes with (MULTI_ROLE). Resources statically or dynamically reserved for this role are used first, then unreserved ones; reservations for other roles are never counted.
    #[arg(long, default_value = "*")]
    pub mesos_role: String,

    /// Mesos: the principal to authenticate as (HTTP Basic, for masters started with --authenticate_http_frameworks; also sent to agents' files API) and to name in FrameworkInfo.
    #[arg(long, requires = "mesos_secret_file")]
    pub mesos_principal: Option<String>,

    /// Mesos: a file holding the principal's secret (its first line). Kept in a file so that it shows neither in the process list nor in logs.
    #[arg(long, requires = "mesos_principal")]
    pub mesos_secret_file: Option<PathBuf>,

    /// Mesos: speak HTTPS to the master (implied by --master https://...; needed with zk:// when the masters serve TLS). Agents say their own scheme in their offers.
    #[arg(long)]
    pub mesos_tls: bool,

    /// Mesos: PEM file of CA certificates trusted for the master's and agents' TLS certificates, beside the system's roots.
    #[arg(long)]
    pub mesos_ca_file: Option<PathBuf>,

    /// Mesos: do not ask agents to checkpoint tasks. Without checkpointing an agent restart loses every task on it (TASK_LOST at once); only for agents run without a work directory that survives.
    #[arg(long)]
    pub mesos_no_checkpoint: bool,

    /// Mesos: how long the master keeps the framework's tasks running while the dispatcher is away (restart, upgrade).
    #[arg(long, default_value_t = 604800)]
    pub failover_timeout_secs: u64,

    /// Mesos: seconds offers are held while a gang waits for more resources.
    #[arg(long, default_value_t = 10)]
    pub offer_hold_secs: u64,

    /// Mesos: seconds between implicit reconciliations.
    #[arg(long, default_value_t = 600)]
    pub reconcile_every_secs: u64,

    /// Mesos: heartbeats missed before the subscription is considered dead.
    #[arg(long, default_value_t = 3)]
    pub missed_heartbeats: u32,

    /// Mesos: unregister the framework (the master kills all its tasks), then exit.
    #[arg(long, requires = "master")]
    pub teardown: bool,

    /// Seconds between samples of each running peer's CPU and memory (0: none). Shown on the job page, served at /api/jobs/<id>/peers/<n>/usage and archived as usage.csv.
    #[arg(long, default_value_t = 5.0)]
    pub usage_every_secs: f64,

    /// Retention: finished jobs kept per app, newest first; older ones are deleted with their sandboxes, archive, events and usage, and so are stored binaries nothing uses any more. Default: every job is kept.
    #[arg(long, value_name = "N")]
    pub keep_jobs: Option<u64>,

    /// Retention: finished jobs that ended more than DAYS ago are deleted (fractions allowed: 0.5 is 12 hours). With --keep-jobs too, a job goes when either says so.
    #[arg(long, value_name = "DAYS")]
    pub keep_days: Option<f64>,

    /// Retention for one app, instead of --keep-jobs/--keep-days: NAME:jobs=N,days=D; a part left out is inherited, `all` keeps without limit (e.g. `nightly:days=all,jobs=500`). Repeat for more apps.
    #[arg(long, value_name = "NAME:jobs=N,days=D")]
    pub keep_app: Vec<String>,

    /// Seconds between retention sweeps: deleting what --keep-* no longer keeps, giving freed database pages back, measuring the data directory for the cluster page.
    #[arg(long, default_value_t = 600)]
    pub retention_every_secs: u64,

    /// Log format on stderr: `text` for people, `json` (one object per line, with the request and job ids of each event's spans) for log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Shorter Mesos timers (backoff, reconciliation retries, silent tasks), for tests.
    #[arg(long, hide = true)]
    pub fast_timers: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Parses `--ports FIRST-LAST`.
    pub fn port_range(&self) -> Result<(u16, u16), String> {
        let (a, b) = self
            .ports
            .split_once('-')
            .ok_or_else(|| format!("--ports {:?} must look like 40000-40999", self.ports))?;
        let a: u16 = a
            .trim()
            .parse()
            .map_err(|_| format!("--ports: {a:?} is not a port"))?;
        let b: u16 = b
            .trim()
            .parse()
            .map_err(|_| format!("--ports: {b:?} is not a port"))?;
        if a == 0 || a > b {
            return Err(format!(
                "--ports {:?}: the first port must be at least 1 and not above the last",
                self.ports
            ));
        }
        Ok((a, b))
    }
}
