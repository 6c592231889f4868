//! Finding the leading master: `--master` is `host:port`, a comma list of
//! them (tried in turn; a non-leader redirects to the leader), or
//! `zk://host:port[,host:port]/path`, where the leader is the master whose
//! `json.info_<sequence>` node has the lowest sequence, followed as it
//! changes.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use super::zk;

#[derive(Clone, Debug, PartialEq)]
pub enum Masters {
    List(Vec<String>),
    Zk { servers: Vec<String>, path: String },
}

/// Parses `--master`.
pub fn parse(s: &str) -> Result<Masters, String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("zk://") {
        let (hosts, path) = rest.split_once('/').ok_or_else(|| {
            format!("--master {s:?}: a zk:// URL needs a path, e.g. zk://host:2181/mesos")
        })?;
        let servers = host_ports(hosts, 2181).map_err(|e| format!("--master {s:?}: {e}"))?;
        let path = format!("/{}", path.trim_end_matches('/'));
        if path == "/" {
            return Err(format!("--master {s:?}: the ZooKeeper path is empty"));
        }
        return Ok(Masters::Zk { servers, path });
    }
    let list = s.strip_prefix("http://").unwrap_or(s);
    if list.contains("://") {
        return Err(format!(
            "--master {s:?}: use host:port, host:port,host:port or zk://host:port/path"
        ));
    }
    Ok(Masters::List(
        host_ports(list.trim_end_matches('/'), 5050).map_err(|e| format!("--master {s:?}: {e}"))?,
    ))
}

fn host_ports(s: &str, default_port: u16) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err("an empty host in the list".into());
        }
        match part.rsplit_once(':') {
            Some((h, p)) => {
                let port: u16 = p
                    .parse()
                    .map_err(|_| format!("{p:?} in {part:?} is not a port"))?;
                if h.is_empty() || port == 0 {
                    return Err(format!("{part:?} is not host:port"));
                }
                out.push(part.to_string());
            }
            None => out.push(format!("{part}:{default_port}")),
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct MasterAddress {
    hostname: Option<String>,
    ip: Option<String>,
    port: u16,
}

#[derive(Deserialize)]
struct MasterJson {
    address: Option<MasterAddress>,
    hostname: Option<String>,
    port: Option<u16>,
}

/// The leader's node among `/path`'s children: the lowest `json.info_` sequence.
pub fn leader_node(children: &[String]) -> Option<&str> {
    children
        .iter()
        .filter_map(|c| {
            let seq = c.strip_prefix("json.info_")?;
            Some((seq.parse::<u64>().ok()?, c.as_str()))
        })
        .min()
        .map(|(_, c)| c)
}

/// `host:port` from a `json.info_` node's MasterInfo JSON.
pub fn master_address(data: &[u8]) -> Result<String, String> {
    let info: MasterJson = serde_json::from_slice(data)
        .map_err(|e| format!("the master's node is not MasterInfo JSON: {e}"))?;
    if let Some(a) = info.address {
        if let Some(h) = a.ip.or(a.hostname) {
            return Ok(format!("{h}:{}", a.port));
        }
    }
    match (info.hostname, info.port) {
        (Some(h), Some(p)) => Ok(format!("{h}:{p}")),
        _ => Err("the master's node names no address".into()),
    }
}

/// Where to subscribe next.
pub enum Detector {
    /// Tried in turn.
    List { masters: Vec<String>, next: usize },
    /// The leader as ZooKeeper names it (followed by a background task).
    Zk {
        describe: String,
        leader: watch::Receiver<Option<String>>,
    },
}

impl Detector {
    pub fn new(masters: Masters) -> Detector {
        match masters {
            Masters::List(masters) => Detector::List { masters, next: 0 },
            Masters::Zk { servers, path } => {
                let describe = format!("zk://{}{}", servers.join(","), path);
                let (tx, leader) = watch::channel(None);
                tokio::spawn(follow_zk(servers, path, tx));
                Detector::Zk { describe, leader }
            }
        }
    }

    /// The master to try now: the ZooKeeper leader once there is one, or
    /// the next of the list.
    pub async fn candidate(&mut self) -> String {
        match self {
            Detector::List { masters, next } => {
                let m = masters[*next % masters.len()].clone();
                *next = next.wrapping_add(1);
                m
            }
            Detector::Zk { leader, .. } => loop {
                if let Some(l) = leader.borrow_and_update().clone() {
                    return l;
                }
                if leader.changed().await.is_err() {
                    // The follower ended; nothing more will come.
                    std::future::pending::<()>().await;
                }
            },
        }
    }

    /// Resolves when ZooKeeper names a leader other than `current`; never
    /// for a list (a non-leader there answers with a redirect instead).
    pub async fn leader_changed(&mut self, current: &str) {
        let Detector::Zk { leader, .. } = self else {
            return std::future::pending().await;
        };
        loop {
            if leader.borrow_and_update().as_deref() != Some(current) {
                return;
            }
            if leader.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Detector::List { masters, .. } => masters.join(","),
            Detector::Zk { describe, .. } => describe.clone(),
        }
    }
}

/// Publishes the leading master's address as ZooKeeper names it, for as
/// long as the detector lives; reconnects on any ZooKeeper trouble.
async fn follow_zk(servers: Vec<String>, path: String, tx: watch::Sender<Option<String>>) {
    let mut i = 0usize;
    loop {
        let server = &servers[i % servers.len()];
        i = i.wrapping_add(1);
        let res = async {
            let mut zk = zk::Client::connect(server, Duration::from_secs(10)).await?;
            loop {
                let children = zk.children(&path, true).await?;
                let leader = match leader_node(&children) {
                    Some(node) => {
                        let data = zk.data(&format!("{path}/{node}"), false).await?;
                        match master_address(&data) {
                            Ok(a) => Some(a),
                            Err(e) => {
                                tracing::warn!(node, error = %e, "cannot read the leading master");
                                None
                            }
                        }
                    }
                    None => None,
                };
                if *tx.borrow() != leader {
                    tracing::info!(leader = ?leader, zookeeper = %server, "leading master");
                    tx.send_replace(leader);
                }
                zk.wait_for_watch().await?;
                if tx.is_closed() {
                    return Ok::<(), std::io::Error>(());
                }
            }
        }
        .await;
        if tx.is_closed() {
            return;
        }
        if let Err(e) = res {
            tracing::warn!(zookeeper = %server, error = %e, "ZooKeeper connection lost; retrying");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/mesos");

    #[test]
    fn master_urls_parse_in_every_form_and_mistakes_are_explained() {
        assert_eq!(
            parse("10.0.0.1:5050").unwrap(),
            Masters::List(vec!["10.0.0.1:5050".into()])
        );
        assert_eq!(
            parse("http://m1:5050,m2").unwrap(),
            Masters::List(vec!["m1:5050".into(), "m2:5050".into()])
        );
        assert_eq!(
            parse("zk://z1:2181,z2:2182/mesos").unwrap(),
            Masters::Zk {
                servers: vec!["z1:2181".into(), "z2:2182".into()],
                path: "/mesos".into()
            }
        );
        assert!(parse("zk://z1:2181").unwrap_err().contains("needs a path"));
        assert!(parse("m1:port")
            .unwrap_err()
            .contains("\"port\" in \"m1:port\" is not a port"));
        assert!(parse("file:///etc/masters")
            .unwrap_err()
            .contains("use host:port"));
        assert!(parse("m1,,m2").unwrap_err().contains("empty host"));
    }

    #[test]
    fn the_recorded_znodes_name_the_lowest_sequence_as_leader_and_follow_its_loss() {
        for (file, want) in [
            ("zk-mesos-znodes.json", "127.0.0.1:5050"),
            ("zk-mesos-znodes-after-leader-loss.json", "127.0.0.1:5052"),
        ] {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(format!("{FIXTURES}/{file}")).unwrap())
                    .unwrap();
            let children: Vec<String> = v["children"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            let node = leader_node(&children).unwrap();
            let data = v["data"][node].as_str().unwrap();
            assert_eq!(master_address(data.as_bytes()).unwrap(), want, "{file}");
        }
        assert_eq!(leader_node(&["log_replicas".to_string()]), None);
    }
}
