//! Leader detection through a real ZooKeeper (Debian's `zookeeper`
//! package), started by the test: two masters' `json.info_` nodes, the
//! lowest sequence leads, when its node goes the other takes over, when
//! all go and one comes back it leads; and nodes readable only with
//! digest credentials, given as `zk://user:password@…` or not.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use zookeeper_client as zk;

use super::helpers::TestApp;
use super::master::TestMaster;
use super::{eventually, spawn_app_with};

const ZK_SERVER: &str = "/usr/share/zookeeper/bin/zkServer.sh";

struct ZooKeeper {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        // zkServer.sh execs java in the foreground: its process group holds it.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl ZooKeeper {
    fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A session of the test's own, as a Mesos master would hold,
    /// authenticated as `digest` when given.
    async fn session(&self, digest: Option<&str>) -> zk::Client {
        let mut c = zk::Client::connector().with_session_timeout(Duration::from_secs(10));
        if let Some(d) = digest {
            c = c.with_auth("digest", d.as_bytes());
        }
        c.connect(&self.server()).await.unwrap()
    }
}

async fn start_zookeeper() -> ZooKeeper {
    assert!(
        Path::new(ZK_SERVER).exists(),
        "{ZK_SERVER} is missing: install Debian's zookeeper package (./dev test does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = dir.path().join("zoo.cfg");
    std::fs::write(
        &cfg,
        format!(
            "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    use std::os::unix::process::CommandExt;
    let child = Command::new(ZK_SERVER)
        .arg("start-foreground")
        .arg(&cfg)
        .env("ZOOCFGDIR", dir.path())
        .env("ZOO_LOG_DIR", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let zk = ZooKeeper {
        child,
        port,
        _dir: dir,
    };
    for _ in 0..120 {
        let c = zk::Client::connector()
            .with_session_timeout(Duration::from_secs(5))
            .with_fail_eagerly()
            .connect(&zk.server())
            .await;
        if c.is_ok() {
            return zk;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("ZooKeeper did not start on port {port}");
}

/// A dispatcher whose `--master` is this zk:// URL.
async fn following(url: String) -> TestApp {
    spawn_app_with(|c| {
        c.master = Some(url);
        c.fast_timers = true;
    })
    .await
}

/// Registers a master as Mesos does: a sequential `json.info_` node under
/// `/mesos`; returns the node's path.
async fn register(zk: &zk::Client, acls: zk::Acls<'_>, addr: &str) -> String {
    let opts = zk::CreateMode::PersistentSequential.with_acls(acls);
    let (_, seq) = zk
        .create("/mesos/json.info_", master_info(addr).as_bytes(), &opts)
        .await
        .unwrap();
    format!("/mesos/json.info_{seq}")
}

fn master_info(addr: &str) -> String {
    let (ip, port) = addr.split_once(':').unwrap();
    format!(
        r#"{{"address":{{"hostname":"localhost","ip":"{ip}","port":{port}}},"hostname":"localhost","id":"m-{port}","ip":16777343,"pid":"master@{addr}","port":{port},"version":"1.12.0"}}"#
    )
}

#[tokio::test]
async fn the_leader_comes_from_a_real_zookeeper_and_a_leader_change_is_followed() {
    let zkd = start_zookeeper().await;
    let server = zkd.server();
    let m = TestMaster::start(1.0).await;
    // Both masters contend, as Mesos masters do: the first to register leads.
    let zk = zkd.session(None).await;
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    zk.create("/mesos", b"", &open).await.unwrap();
    let first = register(&zk, zk::Acls::anyone_all(), &m.addr(0)).await;
    let second = register(&zk, zk::Acls::anyone_all(), &m.addr(1)).await;
    zk.create("/mesos/log_replicas", b"", &open).await.unwrap();

    let app = following(format!("zk://{server}/mesos")).await;
    eventually("subscribed to the ZooKeeper leader", 20, || {
        m.is_subscribed().then_some(())
    })
    .await;
    let c = app.get_json("/api/cluster").await;
    assert_eq!(c["mesos"]["leader"], m.addr(0).as_str(), "{c:#}");
    assert_eq!(
        c["mesos"]["masters"],
        format!("zk://{server}/mesos").as_str()
    );
    let fw = m.framework_id().unwrap();

    // The leader dies: its node goes, the other master leads.
    m.set_leader(Some(1));
    zk.delete(&first, None).await.unwrap();
    let c = app
        .wait_cluster("the dispatcher follows the new leader", |c| {
            c["mesos"]["leader"] == m.addr(1).as_str() && c["mesos"]["state"] == "subscribed"
        })
        .await;
    assert_eq!(c["mesos"]["framework_id"], fw.as_str());

    // Every master is gone: the cluster page says ZooKeeper names none.
    m.set_leader(None);
    zk.delete(&second, None).await.unwrap();
    let c = app
        .wait_cluster("no leader is named", |c| {
            c["mesos"]["state"] != "subscribed"
                && c["mesos"]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("names no leading master under /mesos"))
        })
        .await;
    assert_ne!(c["mesos"]["state"], "subscribed", "{c:#}");

    // A master comes back under a new node and leads.
    m.set_leader(Some(0));
    register(&zk, zk::Acls::anyone_all(), &m.addr(0)).await;
    app.wait_cluster("the returning master leads", |c| {
        c["mesos"]["leader"] == m.addr(0).as_str() && c["mesos"]["state"] == "subscribed"
    })
    .await;
    m.record(|r| {
        assert_eq!(r.subscribes.last().unwrap().as_deref(), Some(fw.as_str()));
    });
}

#[tokio::test]
async fn nodes_only_a_digest_user_may_read_are_followed_with_zk_credentials_and_refused_without() {
    let zkd = start_zookeeper().await;
    let server = zkd.server();
    let m = TestMaster::start(1.0).await;
    // Stricter than Mesos' own EVERYONE_READ_CREATOR_ALL: nobody else may
    // even read, so the dispatcher needs the credentials.
    let zk = zkd.session(Some("ops:s3cret")).await;
    let mine = zk::CreateMode::Persistent.with_acls(zk::Acls::creator_all());
    zk.create("/mesos", b"", &mine).await.unwrap();
    register(&zk, zk::Acls::creator_all(), &m.addr(0)).await;

    let without = following(format!("zk://{server}/mesos")).await;
    let c = without
        .wait_cluster("the ACL refusal is shown", |c| {
            c["mesos"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("NoAuth"))
        })
        .await;
    let e = c["mesos"]["last_error"].as_str().unwrap();
    assert!(
        e.contains("/mesos") && e.contains("zk://user:password@"),
        "{e}"
    );
    assert!(!m.is_subscribed());

    let with = following(format!("zk://ops:s3cret@{server}/mesos")).await;
    let c = with
        .wait_cluster("subscribed with the credentials", |c| {
            c["mesos"]["state"] == "subscribed"
        })
        .await;
    assert_eq!(c["mesos"]["leader"], m.addr(0).as_str());
    // The password is in neither the cluster view nor the log.
    assert_eq!(
        c["mesos"]["masters"],
        format!("zk://ops:****@{server}/mesos").as_str()
    );
    assert!(!c.to_string().contains("s3cret"));
}

/// Review #9: while masters change hands, ZooKeeper may still name a
/// master that no longer leads; it redirects to the one that does. The
/// subscription is then judged against the master ZooKeeper named, not
/// the redirect's address, so it is kept instead of being dropped and
/// made again over and over.
#[tokio::test]
async fn a_redirect_from_the_master_zookeeper_names_does_not_make_the_subscription_flap() {
    let zkd = start_zookeeper().await;
    let server = zkd.server();
    let m = TestMaster::start(1.0).await;
    let zk = zkd.session(None).await;
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    zk.create("/mesos", b"", &open).await.unwrap();
    // ZooKeeper names endpoint 1; endpoint 0 leads and 1 redirects to it.
    register(&zk, zk::Acls::anyone_all(), &m.addr(1)).await;
    let app = following(format!("zk://{server}/mesos")).await;
    eventually("subscribed through the redirect", 20, || {
        m.is_subscribed().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(m.record(|r| r.subscribes.len()), 1, "no resubscription");
    let c = app.get_json("/api/cluster").await;
    assert_eq!(c["mesos"]["state"], "subscribed", "{c:#}");
    assert_eq!(c["mesos"]["leader"], m.addr(0).as_str(), "{c:#}");
}
