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
and port range given below.",
    after_help = "Examples:\n  dispatcher                          # local backend, http://127.0.0.1:5000\n  dispatcher -d /var/lib/dispatcher -p 8080 --ip 0.0.0.0 --token \"$TOKEN\"\n  dispatcher --cpus 16 --ports 30000-30999"
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

    /// Bearer token required on every route that changes something (uploads, submissions, kills, deletes). Also read from DISPATCHER_TOKEN.
    #[arg(long, env = "DISPATCHER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

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

    /// Seconds a killed peer gets between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 5)]
    pub kill_grace_secs: u64,

    /// Largest file kept whole in a job archive, in MB; bigger files keep their first part.
    #[arg(long, default_value_t = 64)]
    pub archive_file_cap_mb: u64,

    /// Largest app upload accepted, in MB.
    #[arg(long, default_value_t = 16384)]
    pub max_upload_mb: u64,
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
