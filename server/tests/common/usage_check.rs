//! What a busy peer's usage must show, on any backend (the api and mesos
//! test binaries both include this file).

use serde_json::Value;

use crate::helpers::{file, TestApp};

/// Holds 150 MB (touched, so resident) and burns one core for 4 s.
pub const BURNER: &str = "#!/usr/bin/env python3\nimport time\nb = bytearray(150 * 1024 * 1024)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\nt = time.time()\nwhile time.time() - t < 4:\n    pass\n";

/// What every backend's usage of a `BURNER` job must show.
pub async fn check_burner_usage(app: &TestApp, id: u64) {
    let events = app.get_text(&format!("/api/jobs/{id}/events")).await;
    let j = app.wait_archived(id).await;
    assert_eq!(j["state"], "FINISHED", "{j:#}");
    let samples: Vec<Value> = app
        .get_json(&format!("/api/jobs/{id}/peers/0/usage"))
        .await
        .as_array()
        .unwrap()
        .clone();
    assert!(samples.len() >= 3, "{samples:?}");
    let cpu: Vec<f64> = samples.iter().map(|s| s["cpu"].as_f64().unwrap()).collect();
    let peak_cpu = cpu.iter().cloned().fold(0.0, f64::max);
    // One core burned: roughly 1 (a busy 2-core machine may give it less).
    assert!((0.5..=1.3).contains(&peak_cpu), "cores {cpu:?}");
    let peak = samples
        .iter()
        .map(|s| s["rss_bytes"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(peak >= 150 << 20, "peak rss {peak}");
    assert!(samples
        .iter()
        .all(|s| s["time"].as_str().unwrap().ends_with('Z')));
    // Live on the job's stream while it ran.
    assert!(
        events.contains("event: usage\ndata: {\"peer\":0,"),
        "{events}"
    );
    // Summed up per peer.
    let p = &j["peers"][0];
    assert!(p["peak_rss_bytes"].as_u64().unwrap() >= 150 << 20, "{p}");
    assert!(p["mean_cpu"].as_f64().unwrap() > 0.3, "{p}");
    assert_eq!(p["usage_samples"].as_u64().unwrap() as usize, samples.len());
    // Against what placement gave it.
    assert_eq!(p["asked_cpu"], 1.0, "{p}");
    assert!(p["asked_mem_bytes"].as_u64().unwrap() >= 100 << 20, "{p}");
    // And archived.
    let entries = app.archive(id).await;
    let csv = String::from_utf8_lossy(file(&entries, "peer-0/usage.csv")).to_string();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("time,cpu,rss_bytes"));
    assert_eq!(lines.count(), samples.len(), "{csv}");
    // No such peer is a 404 that says so.
    let r = app
        .client
        .get(app.url(&format!("/api/jobs/{id}/peers/5/usage")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
