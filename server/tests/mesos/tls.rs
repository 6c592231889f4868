//! HTTPS masters and agents: a certificate authority made by the test
//! signs the test master's certificate; the dispatcher trusts it through
//! `--mesos-ca-file`, or refuses it and says why.

use std::path::PathBuf;

use super::helpers::{file, spawn_app_with, TestApp};
use super::master::TestMaster;
use super::{sleepers, PEER};

/// A CA, and a certificate for 127.0.0.1 it signed.
struct Pki {
    ca_pem: String,
    chain_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(vec![]).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dispatcher test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        chain_pem: format!("{}{}", cert.pem(), ca.pem()),
        key_pem: key.serialize_pem(),
    }
}

async fn https_app(m: &TestMaster, ca_file: Option<PathBuf>) -> TestApp {
    // The first listed master does not lead: its 307 has a scheme-less
    // Location, which must keep https.
    let masters = format!("https://{},{}", m.addr(1), m.addr(0));
    spawn_app_with(move |c| {
        c.master = Some(masters);
        c.mesos_ca_file = ca_file;
        c.fast_timers = true;
        c.offer_hold_secs = 1;
    })
    .await
}

#[tokio::test]
async fn an_https_master_and_agents_trusted_through_the_ca_file_run_a_job_and_serve_its_sandboxes()
{
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &p.ca_pem).unwrap();
    let m = TestMaster::start_tls(1.0, &p.chain_pem, &p.key_pem).await;
    m.add_agent(2.0, 1024.0, (31000, 31100)).await;
    let app = https_app(&m, Some(ca)).await;
    app.upload("peerprog", PEER).await;
    let id = app.submit("peerprog", &sleepers(2, 0)).await;
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
    let c = app.get_json("/api/cluster").await;
    assert_eq!(c["mesos"]["state"], "subscribed", "{c:#}");
    assert_eq!(c["mesos"]["leader"], m.addr(0).as_str());
    // The sandboxes came through the agent's files API over HTTPS.
    let entries = app.archive(id).await;
    for n in 0..2 {
        let out = String::from_utf8_lossy(file(&entries, &format!("peer-{n}/stdout"))).to_string();
        assert!(out.contains(&format!("peer {n} of 2")), "{out}");
    }
}

#[tokio::test]
async fn an_https_master_whose_certificate_no_trusted_root_signed_is_refused_and_the_cluster_page_says_why(
) {
    let p = pki();
    let m = TestMaster::start_tls(1.0, &p.chain_pem, &p.key_pem).await;
    let app = https_app(&m, None).await;
    let c = app
        .wait_cluster("the certificate refusal", |c| {
            c["mesos"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("certificate"))
        })
        .await;
    let e = c["mesos"]["last_error"].as_str().unwrap();
    assert!(e.contains("UnknownIssuer") && e.contains("https://"), "{e}");
    assert_ne!(c["mesos"]["state"], "subscribed");
    assert!(!m.is_subscribed());
}

#[tokio::test]
async fn a_ca_file_that_holds_no_certificate_stops_the_dispatcher_with_the_flag_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "not a certificate\n").unwrap();
    let e = dispatcher::mesos::Transport::new(true, Some(&bad)).expect_err("refused");
    assert!(
        e.contains("--mesos-ca-file") && e.contains("no certificate"),
        "{e}"
    );
    let e = dispatcher::mesos::Transport::new(true, Some(&dir.path().join("missing.pem")))
        .expect_err("refused");
    assert!(e.contains("cannot read it"), "{e}");
}
