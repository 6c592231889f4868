//! Recordings of a real Mesos 1.12 master (`../shared/fixtures/mesos`) are
//! test inputs: every event decodes, and every call this crate can express
//! re-encodes to exactly the bytes Mesos' own protobuf library produced.

use proto::mesos::scheduler::{call, event};
use proto::mesos::{task_status, Offer, TaskState};
use proto::recordio::Decoder;
use proto::{Call, Event, Message};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/mesos");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{name}")).unwrap_or_else(|e| panic!("{DIR}/{name}: {e}"))
}

fn events(name: &str) -> Vec<Event> {
    let mut d = Decoder::new(16 << 20);
    // Feed in odd-sized chunks, as a network would.
    for chunk in read(name).chunks(97) {
        d.feed(chunk);
    }
    let mut out = vec![];
    while let Some(r) = d.next_record().unwrap() {
        out.push(
            Event::decode(r)
                .unwrap_or_else(|e| panic!("{name}: record {} does not decode: {e}", out.len())),
        );
    }
    assert_eq!(d.pending(), 0, "{name} ends on a record boundary");
    out
}

fn type_names(evs: &[Event]) -> Vec<String> {
    evs.iter()
        .map(|e| {
            event::Type::try_from(e.r#type.unwrap_or(0))
                .map(|t| t.as_str_name().to_string())
                .unwrap_or_else(|_| format!("{:?}", e.r#type))
        })
        .collect()
}

#[test]
fn every_recorded_event_decodes_in_the_recorded_order() {
    let listed: Vec<(String, String)> =
        serde_json_lite(&String::from_utf8(read("events.json")).unwrap());
    let first = events("subscribe-first.recordio");
    let failover = events("subscribe-failover.recordio");
    let expect = |stream: &str| {
        listed
            .iter()
            .filter(|(s, _)| s == stream)
            .map(|(_, t)| t.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(type_names(&first), expect("first"));
    assert_eq!(type_names(&failover), expect("failover"));

    let sub = first[0].subscribed.as_ref().expect("SUBSCRIBED first");
    assert!(sub.framework_id.value.ends_with("-0000"));
    assert!(sub.heartbeat_interval_seconds.unwrap() > 0.0);
    let offers = first
        .iter()
        .find_map(|e| e.offers.as_ref())
        .expect("an OFFERS event");
    let o = &offers.offers[0];
    assert_eq!(o.framework_id.value, sub.framework_id.value);
    let ports = o.resources.iter().find(|r| r.name == "ports").unwrap();
    assert_eq!(ports.ranges.as_ref().unwrap().range[0].begin, 31000);
    let cpus = o.resources.iter().find(|r| r.name == "cpus").unwrap();
    assert_eq!(cpus.scalar.as_ref().unwrap().value, 4.0);

    // Updates: some carry a uuid (to acknowledge), reconciliation answers do not.
    let updates: Vec<_> = first
        .iter()
        .filter_map(|e| e.update.as_ref())
        .map(|u| &u.status)
        .collect();
    assert!(updates.iter().any(|s| s.uuid.is_some()));
    let reconciled: Vec<_> = updates
        .iter()
        .filter(|s| s.reason == Some(task_status::Reason::Reconciliation as i32))
        .collect();
    assert!(!reconciled.is_empty());
    assert!(
        reconciled.iter().all(|s| s.uuid.is_none()),
        "reconciliation updates carry no uuid"
    );
    assert!(
        reconciled
            .iter()
            .any(|s| s.state == TaskState::TaskGone as i32),
        "partition-aware: TASK_GONE, not TASK_LOST"
    );
    assert!(updates
        .iter()
        .any(|s| s.state == TaskState::TaskFailed as i32));
    assert!(updates
        .iter()
        .any(|s| s.state == TaskState::TaskKilling as i32));

    // After the failover the same framework id comes back.
    assert_eq!(
        failover[0].subscribed.as_ref().unwrap().framework_id,
        sub.framework_id
    );
}

#[test]
fn the_recorded_offer_decodes() {
    let o = Offer::decode(&read("offer-first.pb")[..]).unwrap();
    assert!(!o.hostname.is_empty());
    assert!(o.resources.iter().any(|r| r.name == "mem"));
}

#[test]
fn every_recorded_call_decodes_and_reencodes_byte_for_byte() {
    let mut names: Vec<String> = std::fs::read_dir(DIR)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("call-") && n.ends_with(".pb"))
        .collect();
    names.sort();
    assert!(names.len() >= 20, "{names:?}");
    for name in &names {
        let bytes = read(name);
        let call = Call::decode(&bytes[..]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            call.encode_to_vec(),
            bytes,
            "{name} re-encodes identically: {call:#?}"
        );
    }
    let implicit = Call::decode(&read("call-reconcile-implicit.pb")[..]).unwrap();
    assert_eq!(implicit.r#type, Some(call::Type::Reconcile as i32));
    assert!(
        implicit
            .reconcile
            .as_ref()
            .is_some_and(|r| r.tasks.is_empty()),
        "implicit reconciliation sends an empty `reconcile`"
    );
    let sub = Call::decode(&read("call-subscribe-first.pb")[..]).unwrap();
    let fw = &sub.subscribe.unwrap().framework_info;
    assert_eq!(fw.failover_timeout, Some(3600.0));
    let launch = Call::decode(&read("call-accept-launch.pb")[..]).unwrap();
    let accept = launch.accept.unwrap();
    let tasks = &accept.operations[0].launch.as_ref().unwrap().task_infos;
    assert_eq!(tasks.len(), 3);
    assert!(tasks[0].command.as_ref().unwrap().uris[0]
        .executable
        .unwrap());
}

/// events.json is `[[stream, type], ...]`; a tiny reader keeps serde_json out
/// of this crate's dependencies.
fn serde_json_lite(text: &str) -> Vec<(String, String)> {
    let strings: Vec<String> = text
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    strings
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect()
}

/// Every scenario's streams (`<stream>.recordio`) decode record by record,
/// as many events as its `events.json` lists for that stream, and every
/// call it sent (`call-*.pb`) decodes as a `Call`.
#[test]
fn every_event_and_call_of_every_recorded_scenario_decodes() {
    let root = format!("{DIR}/scenarios");
    let mut scenarios: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    scenarios.sort();
    assert!(scenarios.len() >= 10, "{scenarios:?}");
    let (mut streams, mut calls, mut evs) = (0, 0, 0);
    for s in &scenarios {
        let listed = std::fs::read_to_string(format!("{root}/{s}/events.json")).unwrap_or_default();
        for e in std::fs::read_dir(format!("{root}/{s}")).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let rel = format!("scenarios/{s}/{name}");
            if let Some(stream) = name.strip_suffix(".recordio") {
                let got = events(&rel);
                let want = listed.matches(&format!("\"stream\": \"{stream}\"")).count();
                assert_eq!(got.len(), want, "{rel}: events.json lists {want}");
                assert!(got.iter().all(|e| e.r#type.is_some()), "{rel}");
                streams += 1;
                evs += got.len();
            } else if name.starts_with("call-") && name.ends_with(".pb") {
                let c = Call::decode(&read(&rel)[..]).unwrap_or_else(|e| panic!("{rel}: {e}"));
                assert!(c.r#type.is_some(), "{rel}");
                calls += 1;
            }
        }
    }
    println!("{streams} streams, {evs} events, {calls} calls decoded");
    assert!(
        streams >= 20 && calls >= 100,
        "{streams} streams, {calls} calls"
    );
}
