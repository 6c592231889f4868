//! The call builders make exactly the bytes of the recorded calls for the
//! same requests (`../shared/fixtures/mesos`).

use proto::calls::{self, FrameworkSettings};
use proto::mesos::TaskState;
use proto::recordio::Decoder;
use proto::{Event, Message};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/mesos");
const FW: &str = "35782cdd-ad53-4cd7-8d66-b479cddc06a4-0000";
const AGENT: &str = "35782cdd-ad53-4cd7-8d66-b479cddc06a4-S0";

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{name}")).unwrap_or_else(|e| panic!("{DIR}/{name}: {e}"))
}

fn settings(id: Option<&str>) -> FrameworkSettings {
    FrameworkSettings {
        id: id.map(str::to_string),
        hostname: Some("127.0.0.1".into()),
        webui_url: Some("http://127.0.0.1:5000/".into()),
        failover_timeout: 3600.0,
        ..FrameworkSettings::new("root", "fixture-recorder")
    }
}

#[test]
fn a_checkpointing_subscribe_matches_the_recording_of_the_agent_restart() {
    let s = FrameworkSettings {
        hostname: Some("127.0.0.1".into()),
        failover_timeout: 3600.0,
        checkpoint: true,
        ..FrameworkSettings::new("root", "fixture-recorder")
    };
    assert_eq!(
        calls::subscribe(&s).encode_to_vec(),
        read("scenarios/agent-restart-checkpoint/call-subscribe-subscribe.pb")
    );
}

#[test]
fn subscribe_first_and_after_failover_match_the_recording() {
    assert_eq!(
        calls::subscribe(&settings(None)).encode_to_vec(),
        read("call-subscribe-first.pb")
    );
    assert_eq!(
        calls::subscribe(&settings(Some(FW))).encode_to_vec(),
        read("call-subscribe-failover.pb")
    );
}

#[test]
fn simple_calls_match_the_recording() {
    let offers = [
        format!("{}-O2", &FW[..FW.len() - 5]),
        format!("{}-O3", &FW[..FW.len() - 5]),
        format!("{}-O4", &FW[..FW.len() - 5]),
    ];
    let ids: Vec<&str> = offers.iter().map(String::as_str).collect();
    assert_eq!(
        calls::decline(FW, &ids, 5.0).encode_to_vec(),
        read("call-decline.pb")
    );
    assert_eq!(
        calls::kill(FW, "job1.peer2", Some(AGENT)).encode_to_vec(),
        read("call-kill.pb")
    );
    assert_eq!(
        calls::suppress(FW).encode_to_vec(),
        read("call-suppress.pb")
    );
    assert_eq!(calls::revive(FW).encode_to_vec(), read("call-revive.pb"));
    assert_eq!(
        calls::teardown(FW).encode_to_vec(),
        read("call-teardown.pb")
    );
    assert_eq!(
        calls::reconcile(FW, &[]).encode_to_vec(),
        read("call-reconcile-implicit.pb"),
        "implicit: `reconcile` present but empty"
    );
    let explicit = [
        ("job1.peer0", Some(AGENT)),
        ("job1.peer2", Some(AGENT)),
        ("ghost.task", Some(AGENT)),
    ];
    assert_eq!(
        calls::reconcile(FW, &explicit).encode_to_vec(),
        read("call-reconcile-explicit.pb")
    );
}

#[test]
fn every_update_with_a_uuid_gets_exactly_the_recorded_acknowledgement_and_no_other_does() {
    let mut built = Vec::new();
    let mut without_uuid = 0;
    for stream in ["subscribe-first.recordio", "subscribe-failover.recordio"] {
        let mut d = Decoder::new(1 << 20);
        d.feed(&read(stream));
        while let Some(r) = d.next_record().unwrap() {
            let ev = Event::decode(r).unwrap();
            if let Some(u) = ev.update {
                match calls::acknowledge(FW, &u.status) {
                    Some(call) => built.push(call.encode_to_vec()),
                    None => without_uuid += 1,
                }
            }
        }
    }
    let mut recorded: Vec<Vec<u8>> = (1..=12)
        .map(|n| read(&format!("call-acknowledge-{n}.pb")))
        .collect();
    assert!(
        without_uuid > 0,
        "reconciliation answers carry no uuid and get no ACKNOWLEDGE"
    );
    built.sort();
    recorded.sort();
    assert_eq!(built.len(), recorded.len());
    assert!(
        built == recorded,
        "each acknowledgement matches a recorded one byte for byte"
    );
}

#[test]
fn terminal_states_are_mesos_terminal_ones() {
    assert!(calls::is_terminal(TaskState::TaskFinished));
    assert!(calls::is_terminal(TaskState::TaskGone));
    assert!(calls::is_terminal(TaskState::TaskDropped));
    assert!(!calls::is_terminal(TaskState::TaskUnreachable));
    assert!(!calls::is_terminal(TaskState::TaskLost));
    assert!(!calls::is_terminal(TaskState::TaskKilling));
}

#[test]
fn a_subscribe_with_a_principal_matches_the_recording_of_http_authentication() {
    let s = FrameworkSettings {
        hostname: Some("127.0.0.1".into()),
        failover_timeout: 3600.0,
        principal: Some("dispatch".into()),
        ..FrameworkSettings::new("root", "fixture-recorder")
    };
    assert_eq!(
        calls::subscribe(&s).encode_to_vec(),
        read("scenarios/http-auth/call-subscribe-good-principal.pb")
    );
}
