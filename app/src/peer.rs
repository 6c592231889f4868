//! The peer contract: what each peer of a placed job receives.
//!
//! For every peer: a per-peer YAML config (K3's shape: `me`, `peers`, its
//! variables with `auto` resolved, its data files), environment variables
//! naming the job and the peer, and the shell command that starts it.
//!
//! The job's peer list is in every peer's config, so it is built once and
//! shared: each spec holds its own part of `peer.yaml` and the same list
//! text, and what a job's specs weigh grows with its peers, not with their
//! square (10,000 peers: one 0.33 MB list, not 3.3 GB of configs).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::model::JobOptions;
use crate::placement::Placement;
use crate::role::{Placeholder, Policy, RoleFile};

/// The config file each peer finds in its sandbox.
pub const CONFIG_FILE: &str = "peer.yaml";

/// `DISPATCHER_PEERS` is set only up to this length (about 800 peers).
/// Beyond it every task would carry the whole list again, and Linux refuses
/// to start a program with any one variable over 128 KiB; the `peers` of
/// `peer.yaml` are the list at every size.
pub const PEERS_ENV_MAX: usize = 16 * 1024;

/// Everything needed to start one peer, independent of the backend.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerSpec {
    pub index: u32,
    pub role: usize,
    pub role_name: String,
    pub host: String,
    pub address: String,
    pub port: u16,
    pub cpus_milli: u32,
    pub mem_mb: u64,
    pub gpus: u32,
    /// `peer.yaml` without the job's peer list: `me`, the variables, the
    /// data files.
    pub config_head: String,
    /// The rest of `peer.yaml`: `peers:` and every peer's address, the same
    /// text for every peer of the job (role files cannot name a variable
    /// `me` or `peers`, so the two parts never share a key).
    pub peer_list: Arc<str>,
    pub env: Vec<(String, String)>,
    /// A command for `sh -c`, run in the sandbox.
    pub command: String,
}

/// The job-level facts peers are told.
pub struct JobContext<'a> {
    pub job_id: u64,
    /// The app binary's file name in the sandbox.
    pub binary: &'a str,
    pub options: &'a JobOptions,
    /// Which attempt this is (1-based; more when the job is retried).
    pub attempt: u32,
}

/// Lists the data files under a `k3_data` path as seen from one host.
pub trait DataSource {
    fn files(&self, path: &str, host: &str) -> Vec<String>;
}

impl<F: Fn(&str, &str) -> Vec<String>> DataSource for F {
    fn files(&self, path: &str, host: &str) -> Vec<String> {
        self(path, host)
    }
}

fn addr(address: &str, port: u16) -> Value {
    json!([address, port])
}

impl PeerSpec {
    /// The whole text of `peer.yaml`. Both parts are block mappings at the
    /// top level with distinct keys, so one after the other is one mapping.
    pub fn config(&self) -> String {
        let mut s = String::with_capacity(self.config_head.len() + self.peer_list.len());
        s.push_str(&self.config_head);
        s.push_str(&self.peer_list);
        s
    }

    /// Bytes of what is this peer's alone (its config part, environment
    /// and command), without the shared list.
    pub fn own_len(&self) -> usize {
        self.config_head.len()
            + self.command.len()
            + self
                .env
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// Builds every peer's spec from a placement of `roles`.
pub fn build_peers(
    job: &JobContext,
    roles: &RoleFile,
    placement: &Placement,
    data: &dyn DataSource,
) -> Vec<PeerSpec> {
    let first = placement
        .first()
        .map(|p| addr(&p.address, p.port))
        .unwrap_or(Value::Null);
    let first_text = placement
        .first()
        .map(|p| format!("{}:{}", p.address, p.port))
        .unwrap_or_default();
    let peer_list: Vec<Value> = placement
        .peers
        .iter()
        .map(|p| json!({ "addr": addr(&p.address, p.port) }))
        .collect();
    let peer_list: Arc<str> = serde_yaml::to_string(&json!({ "peers": peer_list }))
        .expect("a JSON value always serializes to YAML")
        .into();
    let count = placement.peers.len();
    let peers_text = placement
        .peers
        .iter()
        .map(|p| format!("{}:{}", p.address, p.port))
        .collect::<Vec<_>>()
        .join(",");
    let peers_env = (peers_text.len() <= PEERS_ENV_MAX).then_some(peers_text);

    // Data files per (role, spec): peer index -> files.
    let mut data_for: BTreeMap<(usize, usize), BTreeMap<u32, Vec<String>>> = BTreeMap::new();
    for (ri, role) in roles.roles().iter().enumerate() {
        let mine: Vec<_> = placement.peers.iter().filter(|p| p.role == ri).collect();
        for (di, spec) in role.k3_data.iter().enumerate() {
            let mut out: BTreeMap<u32, Vec<String>> =
                mine.iter().map(|p| (p.index, Vec::new())).collect();
            match spec.policy {
                Policy::Replicate => {
                    for p in &mine {
                        out.insert(p.index, data.files(&spec.path, &p.host));
                    }
                }
                Policy::Global => {
                    let mut all: Vec<String> = Vec::new();
                    let mut hosts: Vec<&str> = mine.iter().map(|p| p.host.as_str()).collect();
                    hosts.dedup();
                    for h in hosts {
                        all.extend(data.files(&spec.path, h));
                    }
                    all.sort();
                    all.dedup();
                    for (i, f) in all.into_iter().enumerate() {
                        let p = mine[i % mine.len()];
                        out.get_mut(&p.index).expect("peer").push(f);
                    }
                }
                Policy::Pinned => {
                    let mut by_host: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
                    for p in &mine {
                        by_host.entry(p.host.as_str()).or_default().push(p.index);
                    }
                    for (host, idxs) in by_host {
                        for (i, f) in data.files(&spec.path, host).into_iter().enumerate() {
                            out.get_mut(&idxs[i % idxs.len()]).expect("peer").push(f);
                        }
                    }
                }
            }
            data_for.insert((ri, di), out);
        }
    }

    let mut specs = Vec::with_capacity(count);
    let mut nth_in_role: BTreeMap<usize, usize> = BTreeMap::new();
    for slot in &placement.peers {
        let role = &roles.roles()[slot.role];
        let nth = {
            let n = nth_in_role.entry(slot.role).or_insert(0);
            *n += 1;
            *n - 1
        };
        let mut cfg = serde_json::Map::new();
        cfg.insert("me".into(), addr(&slot.address, slot.port));
        // A peer's own peer_globals entry overrides the role's k3_globals.
        let mut vars = role.k3_globals.clone();
        if let Some(own) = role.peer_globals.get(nth) {
            for (k, v) in own {
                vars.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in vars {
            let v = if v.as_str() == Some("auto") {
                first.clone()
            } else {
                v
            };
            cfg.insert(k, v);
        }
        for (di, spec) in role.k3_data.iter().enumerate() {
            let files = data_for
                .get(&(slot.role, di))
                .and_then(|m| m.get(&slot.index))
                .cloned()
                .unwrap_or_default();
            cfg.insert(
                spec.var.clone(),
                Value::Array(files.into_iter().map(|f| json!({ "path": f })).collect()),
            );
        }
        if let Some(v) = &role.k3_seq_files {
            cfg.insert("k3_seq_files".into(), v.clone());
        }
        if let Some(v) = &role.k3_outpaths {
            cfg.insert("k3_outpaths".into(), v.clone());
        }
        let config_head = serde_yaml::to_string(&Value::Object(cfg))
            .expect("a JSON value always serializes to YAML");

        let mut env = vec![
            ("DISPATCHER_JOB_ID".to_string(), job.job_id.to_string()),
            ("DISPATCHER_ATTEMPT".to_string(), job.attempt.to_string()),
            ("DISPATCHER_PEER_INDEX".to_string(), slot.index.to_string()),
            ("DISPATCHER_PEER_COUNT".to_string(), count.to_string()),
            ("DISPATCHER_ROLE".to_string(), role.name.clone()),
            ("DISPATCHER_HOST".to_string(), slot.host.clone()),
            ("DISPATCHER_ADDRESS".to_string(), slot.address.clone()),
            ("DISPATCHER_PORT".to_string(), slot.port.to_string()),
            ("DISPATCHER_FIRST_PEER".to_string(), first_text.clone()),
            (
                "DISPATCHER_PEER_CONFIG".to_string(),
                CONFIG_FILE.to_string(),
            ),
        ];
        if let Some(p) = &peers_env {
            env.push(("DISPATCHER_PEERS".to_string(), p.clone()));
        }
        for (flag, name) in [
            (job.options.logging, "LOGGING"),
            (job.options.jsonlog, "JSONLOG"),
            (job.options.jsonfinal, "JSONFINAL"),
        ] {
            if flag {
                env.push((format!("DISPATCHER_K3_{name}"), "1".into()));
            }
        }
        env.extend(
            role.envars
                .iter()
                .map(|e| (e.name.clone(), e.value.clone())),
        );

        let command = match &role.command {
            Some(t) => t.render(|ph| match ph {
                Placeholder::Binary => format!("./{}", job.binary),
                Placeholder::Config => CONFIG_FILE.to_string(),
                Placeholder::Index => slot.index.to_string(),
                Placeholder::Peers => count.to_string(),
                Placeholder::Host => slot.host.clone(),
                Placeholder::Port => slot.port.to_string(),
                Placeholder::Job => job.job_id.to_string(),
                Placeholder::Role => role.name.clone(),
            }),
            None => default_command(job),
        };

        specs.push(PeerSpec {
            index: slot.index,
            role: slot.role,
            role_name: role.name.clone(),
            host: slot.host.clone(),
            address: slot.address.clone(),
            port: slot.port,
            cpus_milli: slot.cpus_milli,
            mem_mb: slot.mem_mb,
            gpus: slot.gpus,
            config_head,
            peer_list: peer_list.clone(),
            env,
            command,
        });
    }
    specs
}

/// K3's command line: `[prefix] ./<binary> [infix] -p peer.yaml [suffix]`.
/// The prefix, infix and suffix are the submitter's own shell text.
pub fn default_command(job: &JobContext) -> String {
    let o = job.options;
    let binary = format!("./{}", crate::role::shell_quote(job.binary));
    [
        o.cmd_prefix.trim(),
        binary.as_str(),
        o.cmd_infix.trim(),
        "-p",
        CONFIG_FILE,
        o.cmd_suffix.trim(),
    ]
    .iter()
    .filter(|s| !s.is_empty())
    .copied()
    .collect::<Vec<_>>()
    .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{place, Offer, PortRange};

    fn offer(host: &str, ports: (u16, u16)) -> Offer {
        Offer {
            id: host.into(),
            host: host.into(),
            address: format!("{host}.ip"),
            cpus_milli: 4000,
            mem_mb: 4096,
            gpus: 0,
            ports: vec![PortRange {
                begin: ports.0,
                end: ports.1,
            }],
        }
    }

    #[test]
    fn k3_template_peers_get_globals_auto_and_data() {
        let src = "name: r\npeers: 3\npeers_per_host: 2\ncpu: 0.5\nk3_globals: {role: rows, master: auto}\npeer_globals:\n  - {role: master, x: 1}\nk3_data:\n  - {var: g, path: /d, policy: global}\n  - {var: rep, path: /d, policy: replicate}\n  - {var: pin, path: /d, policy: pinned}\n";
        let (rf, _) = RoleFile::parse(src).unwrap();
        let p = place(
            rf.roles(),
            &[offer("a", (100, 101)), offer("b", (200, 201))],
        )
        .unwrap();
        let files = |_: &str, host: &str| {
            vec![
                format!("/d/{host}1"),
                format!("/d/{host}2"),
                format!("/d/{host}3"),
            ]
        };
        let opts = JobOptions::default();
        let peers = build_peers(
            &JobContext {
                job_id: 7,
                binary: "prog",
                options: &opts,
                attempt: 1,
            },
            &rf,
            &p,
            &files,
        );
        assert_eq!(peers.len(), 3);
        let cfgs: Vec<Value> = peers
            .iter()
            .map(|s| serde_yaml::from_str(&s.config()).unwrap())
            .collect();
        assert_eq!(cfgs[0]["me"], json!(["a.ip", 100]));
        assert_eq!(cfgs[2]["me"], json!(["b.ip", 200]));
        assert_eq!(cfgs[1]["peers"].as_array().unwrap().len(), 3);
        assert_eq!(cfgs[0]["role"], "master");
        assert_eq!(cfgs[0]["x"], 1);
        assert_eq!(cfgs[1]["role"], "rows");
        for c in &cfgs {
            assert_eq!(c["master"], json!(["a.ip", 100]));
            assert_eq!(c["rep"].as_array().unwrap().len(), 3);
        }
        // global: 6 distinct files over 3 peers, 2 each, none twice.
        let mut all: Vec<String> = cfgs
            .iter()
            .flat_map(|c| {
                c["g"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["path"].as_str().unwrap().to_string())
            })
            .collect();
        assert_eq!(all.len(), 6);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 6);
        // pinned: host b's only peer gets all of b's files.
        assert_eq!(cfgs[2]["pin"].as_array().unwrap().len(), 3);
        assert!(cfgs[2]["pin"][0]["path"]
            .as_str()
            .unwrap()
            .starts_with("/d/b"));
        assert_eq!(peers[1].command, "./prog -p peer.yaml");
        assert!(peers[2]
            .env
            .contains(&("DISPATCHER_FIRST_PEER".into(), "a.ip:100".into())));
    }

    fn ctx(opts: &JobOptions) -> JobContext<'_> {
        JobContext {
            job_id: 3,
            binary: "prog",
            options: opts,
            attempt: 1,
        }
    }

    #[test]
    fn a_ten_thousand_peer_job_shares_one_peer_list_and_weighs_what_its_peers_do() {
        let (rf, _) = RoleFile::parse("name: gang\npeers: 10000\ncpu: 0.1\n").unwrap();
        let offers: Vec<Offer> = (0..1000)
            .map(|i| offer(&format!("agent{i:04}"), (31000, 31009)))
            .collect();
        let p = place(rf.roles(), &offers).unwrap();
        let opts = JobOptions::default();
        let peers = build_peers(&ctx(&opts), &rf, &p, &|_: &str, _: &str| vec![]);
        assert_eq!(peers.len(), 10_000);
        let list = peers[0].peer_list.clone();
        assert!(peers.iter().all(|s| Arc::ptr_eq(&s.peer_list, &list)));
        // Each peer's own part is small; the list is there once.
        let own: usize = peers.iter().map(PeerSpec::own_len).sum();
        assert!(own < 10_000 * 600, "{own} bytes for 10,000 peers");
        assert!(list.len() < 10_000 * 60, "{} bytes of list", list.len());
        // Too long for one environment variable: only peer.yaml has it.
        assert!(peers[9999].env.iter().all(|(k, _)| k != "DISPATCHER_PEERS"));
        let cfg: Value = serde_yaml::from_str(&peers[9999].config()).unwrap();
        assert_eq!(cfg["peers"].as_array().unwrap().len(), 10_000);
        assert_eq!(cfg["peers"][9999]["addr"], cfg["me"]);
        assert_eq!(cfg["peers"][0]["addr"], json!(["agent0000.ip", 31000]));
    }

    #[test]
    fn a_small_job_names_its_peers_in_the_environment_and_in_its_config() {
        let (rf, _) = RoleFile::parse("name: r\npeers: 2\nk3_globals: {x: 1}\n").unwrap();
        let p = place(rf.roles(), &[offer("h", (10, 11))]).unwrap();
        let opts = JobOptions::default();
        let peers = build_peers(&ctx(&opts), &rf, &p, &|_: &str, _: &str| vec![]);
        assert!(peers[1]
            .env
            .contains(&("DISPATCHER_PEERS".into(), "h.ip:10,h.ip:11".into())));
        let cfg: Value = serde_yaml::from_str(&peers[1].config()).unwrap();
        assert_eq!(
            cfg["peers"],
            json!([{"addr": ["h.ip", 10]}, {"addr": ["h.ip", 11]}])
        );
        assert_eq!(cfg["x"], 1);
        assert_eq!(cfg["me"], json!(["h.ip", 11]));
    }

    #[test]
    fn command_templates_quote_values_and_options_wrap_the_default() {
        let (rf, _) = RoleFile::parse(
            "name: my role\npeers: 1\ncommand: \"{binary} --cfg {config} --role {role}\"\n",
        )
        .unwrap();
        let p = place(rf.roles(), &[offer("h", (5, 5))]).unwrap();
        let opts = JobOptions {
            cmd_prefix: "time".into(),
            ..Default::default()
        };
        let peers = build_peers(
            &JobContext {
                job_id: 1,
                binary: "prog",
                options: &opts,
                attempt: 1,
            },
            &rf,
            &p,
            &|_: &str, _: &str| vec![],
        );
        assert_eq!(peers[0].command, "./prog --cfg peer.yaml --role 'my role'");
        assert_eq!(
            default_command(&JobContext {
                job_id: 1,
                binary: "prog",
                options: &opts,
                attempt: 1,
            }),
            "time ./prog -p peer.yaml"
        );
    }
}
