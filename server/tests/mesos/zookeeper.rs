//! Leader detection through a real ZooKeeper (Debian's `zookeeper`
//! package), started by the test: two masters' `json.info_` nodes, the
//! lowest sequence leads, and when its node goes the other takes over.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dispatcher::mesos::zk;

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
        if zk::Client::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(5))
            .await
            .is_ok()
        {
            return zk;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("ZooKeeper did not start on port {port}");
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
    let server = format!("127.0.0.1:{}", zkd.port);
    let m = TestMaster::start(1.0).await;
    // Both masters contend, as Mesos masters do: the first to register leads.
    let mut zk = zk::Client::connect(&server, Duration::from_secs(10))
        .await
        .unwrap();
    zk.ensure("/mesos").await.unwrap();
    let first = zk
        .create_sequential(
            "/mesos/json.info_",
            master_info(&m.addr(0)).as_bytes(),
            false,
        )
        .await
        .unwrap();
    zk.create_sequential(
        "/mesos/json.info_",
        master_info(&m.addr(1)).as_bytes(),
        false,
    )
    .await
    .unwrap();
    zk.create_sequential("/mesos/log_replicas", b"", false)
        .await
        .unwrap();

    let app = spawn_app_with(|c| {
        c.master = Some(format!("zk://{server}/mesos"));
        c.fast_timers = true;
    })
    .await;
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
    zk.delete(&first).await.unwrap();
    let mut leader = String::new();
    for _ in 0..200 {
        let c = app.get_json("/api/cluster").await;
        if c["mesos"]["leader"] == m.addr(1).as_str() && c["mesos"]["state"] == "subscribed" {
            leader = m.addr(1);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(leader, m.addr(1), "the dispatcher follows the new leader");
    m.record(|r| {
        assert_eq!(r.subscribes.last().unwrap().as_deref(), Some(fw.as_str()));
    });
}
