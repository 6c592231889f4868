//! Finding the leading master: `--master` is `host:port`, a comma list of
//! them (tried in turn; a non-leader redirects to the leader), or
//! `zk://[user:password@]host:port[,host:port]/path`, where the leader is
//! the master whose `json.info_<sequence>` node has the lowest sequence,
//! followed as it changes. ZooKeeper sessions, reconnects, watches and
//! digest authentication are the `zookeeper-client` crate's.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use zookeeper_client as zk;

/// `user:password` for ZooKeeper's `digest` scheme, as Mesos reads it from
/// `zk://user:password@…`. The password never appears in `Debug` output.
#[derive(Clone, PartialEq)]
pub struct ZkAuth(String);

impl ZkAuth {
    fn user(&self) -> &str {
        self.0.split_once(':').map_or("", |(u, _)| u)
    }
}

impl std::fmt::Debug for ZkAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ZkAuth({}, password hidden)", self.user())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Masters {
    List(Vec<String>),
    Zk {
        servers: Vec<String>,
        path: String,
        auth: Option<ZkAuth>,
    },
}

/// Whether `--master` asks for TLS (`https://host:port,...`).
pub fn wants_https(s: &str) -> bool {
    s.trim().starts_with("https://")
}

/// Parses `--master`.
pub fn parse(s: &str) -> Result<Masters, String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("zk://") {
        // As Mesos' zookeeper::URL::parse: the path starts at the first
        // '/', the credentials end at the last '@' before it. The URL is
        // not echoed in errors once it may hold a password.
        let (authority, path) = rest.split_once('/').ok_or_else(|| {
            "--master zk://…: a zk:// URL needs a path, e.g. zk://host:2181/mesos".to_string()
        })?;
        let (auth, hosts) = match authority.rsplit_once('@') {
            Some((cred, hosts)) => match cred.split_once(':') {
                Some((user, _)) if !user.is_empty() => (Some(ZkAuth(cred.to_string())), hosts),
                _ => {
                    return Err(
                        "--master zk://…@…: the credentials before '@' must be user:password"
                            .into(),
                    )
                }
            },
            None => (None, authority),
        };
        let shown = format!("zk://{hosts}/{path}");
        let servers = host_ports(hosts, 2181).map_err(|e| format!("--master {shown:?}: {e}"))?;
        let path = format!("/{}", path.trim_end_matches('/'));
        if path == "/" {
            return Err(format!("--master {shown:?}: the ZooKeeper path is empty"));
        }
        return Ok(Masters::Zk {
            servers,
            path,
            auth,
        });
    }
    let list = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .unwrap_or(s);
    if list.contains("://") {
        return Err(format!(
            "--master {s:?}: use host:port, host:port,host:port, https://host:port or zk://host:port/path"
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
    /// The leader as ZooKeeper names it (followed by a background task),
    /// and what stops it from naming one, if anything.
    Zk {
        describe: String,
        leader: watch::Receiver<Option<String>>,
        problem: watch::Receiver<Option<String>>,
    },
}

impl Detector {
    pub fn new(masters: Masters) -> Detector {
        match masters {
            Masters::List(masters) => Detector::List { masters, next: 0 },
            Masters::Zk {
                servers,
                path,
                auth,
            } => {
                let user = auth
                    .as_ref()
                    .map(|a| format!("{}:****@", a.user()))
                    .unwrap_or_default();
                let describe = format!("zk://{user}{}{}", servers.join(","), path);
                let (tx, leader) = watch::channel(None);
                let (problem_tx, problem) = watch::channel(None);
                tokio::spawn(follow_zk(servers, path, auth, tx, problem_tx));
                Detector::Zk {
                    describe,
                    leader,
                    problem,
                }
            }
        }
    }

    /// The master to try now: the ZooKeeper leader once there is one, or
    /// the next of the list. While there is none, `report` hears why.
    pub async fn candidate(&mut self, mut report: impl FnMut(String)) -> String {
        match self {
            Detector::List { masters, next } => {
                let m = masters[*next % masters.len()].clone();
                *next = next.wrapping_add(1);
                m
            }
            Detector::Zk {
                leader, problem, ..
            } => loop {
                if let Some(l) = leader.borrow_and_update().clone() {
                    return l;
                }
                if let Some(p) = problem.borrow_and_update().clone() {
                    report(p);
                }
                tokio::select! {
                    r = leader.changed() => if r.is_err() {
                        // The follower ended; nothing more will come.
                        std::future::pending::<()>().await;
                    },
                    _ = problem.changed() => {}
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

/// Why ZooKeeper named no leader, in words for `/api/cluster`.
fn zk_trouble(path: &str, e: &zk::Error) -> String {
    match e {
        zk::Error::NoAuth => format!(
            "ZooKeeper refuses to let this dispatcher read {path} (NoAuth): give the \
             credentials its ACL needs as zk://user:password@host/path"
        ),
        zk::Error::AuthFailed => {
            "ZooKeeper rejected the credentials given in --master (AuthFailed)".to_string()
        }
        e => format!("ZooKeeper: {e} (reading {path})"),
    }
}

/// Publishes the leading master's address as ZooKeeper names it, for as
/// long as the detector lives. A leader is judged by its address, not by
/// its node: a master that re-registers under a new sequence is the same
/// leader. Any session trouble starts a new session.
async fn follow_zk(
    servers: Vec<String>,
    path: String,
    auth: Option<ZkAuth>,
    tx: watch::Sender<Option<String>>,
    problem: watch::Sender<Option<String>>,
) {
    let cluster = servers.join(",");
    loop {
        let res: Result<(), zk::Error> = async {
            let mut connector = zk::Client::connector()
                .with_session_timeout(Duration::from_secs(10))
                .with_connection_timeout(Duration::from_secs(5))
                .with_fail_eagerly();
            if let Some(a) = &auth {
                connector = connector.with_auth("digest", a.0.as_bytes());
            }
            let client = connector.connect(&cluster).await?;
            let mut state = client.state_watcher();
            loop {
                let watcher = match client.get_and_watch_children(&path).await {
                    Ok((children, _, watcher)) => {
                        let leader = match leader_node(&children) {
                            Some(node) => match client.get_data(&format!("{path}/{node}")).await {
                                Ok((data, _)) => match master_address(&data) {
                                    Ok(a) => Some(a),
                                    Err(e) => {
                                        tracing::warn!(node, error = %e, "cannot read the leading master");
                                        problem.send_replace(Some(e));
                                        None
                                    }
                                },
                                // It went between the two reads: the
                                // children's watch has fired already.
                                Err(zk::Error::NoNode) => None,
                                Err(e) => return Err(e),
                            },
                            None => {
                                problem.send_replace(Some(format!(
                                    "ZooKeeper names no leading master under {path}"
                                )));
                                None
                            }
                        };
                        if leader.is_some() {
                            problem.send_replace(None);
                        }
                        if *tx.borrow() != leader {
                            tracing::info!(leader = ?leader, zookeeper = %cluster, "leading master");
                            tx.send_replace(leader);
                        }
                        watcher
                    }
                    Err(zk::Error::NoNode) => {
                        // No master has registered yet: wait for the node.
                        let (stat, watcher) = client.check_and_watch_stat(&path).await?;
                        if stat.is_some() {
                            continue;
                        }
                        tx.send_replace(None);
                        problem.send_replace(Some(format!(
                            "ZooKeeper has no {path}: no Mesos master has registered there"
                        )));
                        watcher
                    }
                    Err(e) => return Err(e),
                };
                tokio::select! {
                    ev = watcher.changed() => {
                        if ev.event_type == zk::EventType::Session {
                            return Err(match ev.session_state {
                                zk::SessionState::AuthFailed => zk::Error::AuthFailed,
                                _ => zk::Error::SessionExpired,
                            });
                        }
                    }
                    s = async { loop {
                        let s = state.changed().await;
                        if s.is_terminated() { return s; }
                    } } => {
                        return Err(match s {
                            zk::SessionState::AuthFailed => zk::Error::AuthFailed,
                            _ => zk::Error::SessionExpired,
                        });
                    }
                    _ = tx.closed() => return Ok(()),
                }
            }
        }
        .await;
        if tx.is_closed() {
            return;
        }
        if let Err(e) = res {
            let why = zk_trouble(&path, &e);
            tracing::warn!(zookeeper = %cluster, error = %why, "no leader from ZooKeeper; retrying");
            problem.send_replace(Some(why));
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
                path: "/mesos".into(),
                auth: None,
            }
        );
        // Mesos' own parse: credentials end at the last '@', and the
        // password is in no message.
        let Masters::Zk { auth, servers, .. } = parse("zk://ops:p@ss:w@z1:2181/mesos").unwrap()
        else {
            panic!()
        };
        assert_eq!(servers, ["z1:2181"]);
        assert_eq!(auth, Some(ZkAuth("ops:p@ss:w".into())));
        assert_eq!(format!("{auth:?}"), "Some(ZkAuth(ops, password hidden))");
        let e = parse("zk://justuser@z1/mesos").unwrap_err();
        assert!(e.contains("user:password"), "{e}");
        let e = parse("zk://u:secret@z1:x/mesos").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
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
