//! Who gets in: the write token (from a flag or a file), the read token
//! that makes a dispatcher private, the dashboard's session cookie, and the
//! refusal of changes that another site's page tries to make.

use serde_json::{json, Value};

use crate::helpers::*;

async fn status(r: reqwest::RequestBuilder) -> u16 {
    r.send().await.unwrap().status().as_u16()
}

fn upload_form() -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"#!/bin/sh\necho hi\n".to_vec()).file_name("prog"),
    )
}

#[tokio::test]
async fn a_token_file_guards_every_change_and_leaves_reads_open() {
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("token");
    std::fs::write(&file, "s3cret-from-file\n").unwrap();
    let app = spawn_app_with(|c| c.token_file = Some(file.clone())).await;
    let c = &app.client;
    let r = c
        .post(app.url("/apps"))
        .multipart(upload_form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let b: Value = r.json().await.unwrap();
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"),
        "{b}"
    );
    let wrong = c
        .post(app.url("/apps"))
        .bearer_auth("s3cret-from-fil")
        .multipart(upload_form());
    assert_eq!(status(wrong).await, 401);
    let right = c
        .post(app.url("/apps"))
        .bearer_auth("s3cret-from-file")
        .multipart(upload_form());
    assert_eq!(status(right).await, 200);
    // K3's GET kill is a change too.
    assert_eq!(status(c.get(app.url("/job/1/kill"))).await, 401);
    assert_eq!(status(c.get(app.url("/api/jobs"))).await, 200);
    assert_eq!(status(c.get(app.url("/apps"))).await, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_read_token_makes_jobs_logs_and_archives_private() {
    let app = spawn_app_with(|c| {
        c.token = Some("writer".into());
        c.read_token = Some("reader".into());
    })
    .await;
    let c = &app.client;
    for path in [
        "/api/jobs",
        "/jobs",
        "/api/apps",
        "/api/jobs/1",
        "/api/jobs/1/archive",
        "/job/1/archive",
        "/api/events",
        "/api/jobs/1/peers/0/logs",
        "/api/cluster",
    ] {
        let r = c.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without a token");
        let b: Value = r.json().await.unwrap();
        assert!(
            b["error"].as_str().unwrap().contains("private"),
            "{path}: {b}"
        );
    }
    assert_eq!(
        status(c.get(app.url("/api/jobs")).bearer_auth("reader")).await,
        200
    );
    assert_eq!(
        status(c.get(app.url("/api/jobs")).bearer_auth("writer")).await,
        200
    );
    // The read token reads; it does not change anything.
    let up = c
        .post(app.url("/api/apps"))
        .bearer_auth("reader")
        .multipart(upload_form());
    assert_eq!(status(up).await, 401);
    let up = c
        .post(app.url("/api/apps"))
        .bearer_auth("writer")
        .multipart(upload_form());
    assert_eq!(status(up).await, 201);
    // Liveness, signing in and the description stay open.
    assert_eq!(status(c.get(app.url("/api/health"))).await, 200);
    assert_eq!(status(c.get(app.url("/api/openapi.json"))).await, 200);
    let s: Value = c
        .get(app.url("/api/session"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        s,
        json!({"access": "none", "write_token": true, "read_token": true})
    );
    app.stop().await;
}

#[tokio::test]
async fn the_dashboard_signs_in_once_with_a_cookie_that_works_for_changes_and_streams() {
    let app = spawn_app_with(|c| {
        c.token = Some("writer".into());
        c.read_token = Some("reader".into());
    })
    .await;
    let jar = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let r = jar
        .post(app.url("/api/session"))
        .json(&json!({"token": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let b: Value = r.json().await.unwrap();
    assert!(b["error"]
        .as_str()
        .unwrap()
        .contains("not this dispatcher's token"));
    assert_eq!(status(jar.get(app.url("/api/jobs"))).await, 401);

    let r = jar
        .post(app.url("/api/session"))
        .json(&json!({"token": "writer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("writer"),
        "the cookie does not hold the token: {cookie}"
    );
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["access"], "write");
    assert_eq!(status(jar.get(app.url("/api/jobs"))).await, 200);
    assert_eq!(
        status(jar.post(app.url("/api/apps")).multipart(upload_form())).await,
        201
    );
    let events = jar.get(app.url("/api/events")).send().await.unwrap();
    assert_eq!(events.status(), 200);
    drop(events);
    let r = jar.delete(app.url("/api/session")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(status(jar.get(app.url("/api/jobs"))).await, 401);
    app.stop().await;
}

#[tokio::test]
async fn another_sites_page_cannot_make_a_change_even_with_a_session() {
    let app = spawn_app_with(|c| c.token = Some("writer".into())).await;
    let jar = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    jar.post(app.url("/api/session"))
        .json(&json!({"token": "writer"}))
        .send()
        .await
        .unwrap();
    let host = app.addr.trim_start_matches("http://").to_string();
    // A form post from another origin, as a browser sends it.
    let r = jar
        .post(app.url("/api/apps"))
        .header("origin", "http://evil.example")
        .header("sec-fetch-site", "cross-site")
        .multipart(upload_form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let b: Value = r.json().await.unwrap();
    assert!(b["error"].as_str().unwrap().contains("another site"), "{b}");
    // Even with the bearer token, a page elsewhere is refused.
    let r = app
        .client
        .post(app.url("/job/1/kill"))
        .bearer_auth("writer")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The dashboard's own origin is fine.
    let r = jar
        .post(app.url("/api/apps"))
        .header("origin", format!("http://{host}"))
        .header("sec-fetch-site", "same-origin")
        .multipart(upload_form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // No CORS grant lets another origin read answers either.
    let r = app
        .client
        .get(app.url("/api/jobs"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    app.stop().await;
}
