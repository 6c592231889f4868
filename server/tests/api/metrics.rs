//! `GET /metrics`: Prometheus' text format, checked by Prometheus' own
//! `promtool check metrics` (Debian's `prometheus` package), with the
//! figures a finished job leaves.

use crate::helpers::*;

#[tokio::test]
async fn metrics_pass_promtool_and_count_a_finished_job_its_upload_and_the_requests() {
    const PROG: &str = "#!/bin/sh\necho hi\n";
    let app = spawn_app().await;
    app.upload("p", PROG).await;
    let id = app.submit("p", "name: r\npeers: 2\ncpu: 0.1\n").await;
    app.wait_archived(id).await;
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    promtool_accepts(&text);
    assert_eq!(sample(&text, "dispatcher_jobs{state=\"FINISHED\"}"), 1.0);
    assert_eq!(sample(&text, "dispatcher_peers_running"), 0.0);
    assert_eq!(sample(&text, "dispatcher_queue_jobs"), 0.0);
    assert_eq!(
        sample(&text, "dispatcher_upload_bytes_total"),
        PROG.len() as f64
    );
    assert_eq!(
        sample(&text, "dispatcher_upload_duration_seconds_count"),
        1.0
    );
    assert_eq!(sample(&text, "dispatcher_queue_wait_seconds_count"), 1.0);
    assert_eq!(
        sample(&text, "dispatcher_job_duration_seconds_count{app=\"p\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "dispatcher_http_requests_total{route=\"/api/jobs\",method=\"POST\",status=\"202\"}"
        ),
        1.0
    );
    // Requests are counted by route template, not by the ids in them.
    assert!(text.contains("route=\"/api/jobs/{id}\""), "{text}");
    assert!(!text.contains(&format!("/api/jobs/{id}\"")), "{text}");
    assert!(!text.contains("dispatcher_mesos"), "{text}");
}
