use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::helpers::*;

#[tokio::test]
async fn an_upload_is_stored_by_hash_and_listed_as_a_version() {
    let app = spawn_app().await;
    let v1 = app.upload("prog", "#!/bin/sh\necho one\n").await;
    assert_eq!(v1["name"], "prog");
    assert_eq!(v1["status"], "SUCCESS");
    let sha = v1["sha256"].as_str().unwrap();
    assert_eq!(sha.len(), 64);
    let blob = std::fs::canonicalize(app.dir.path())
        .unwrap()
        .join("blobs")
        .join(&sha[..2])
        .join(sha);
    assert_eq!(std::fs::read(&blob).unwrap(), b"#!/bin/sh\necho one\n");

    // The same bytes again are the same version; new bytes a new one.
    let again = app.upload("prog", "#!/bin/sh\necho one\n").await;
    assert_eq!(again["uid"], v1["uid"]);
    assert_eq!(again["created"], false);
    app.upload("prog", "#!/bin/sh\necho two\n").await;

    let listed: serde_json::Value = app.get_json("/api/apps/prog").await;
    assert_eq!(listed["versions"].as_array().unwrap().len(), 2);
    let apps: serde_json::Value = app.get_json("/api/apps").await;
    assert_eq!(apps["apps"][0]["versions"], 2);
}

#[tokio::test]
async fn a_uid_taken_by_other_content_is_a_conflict() {
    let app = spawn_app().await;
    let form = |body: &str| {
        reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(body.as_bytes().to_vec()).file_name("prog"),
            )
            .text("uid", "v1")
            .text("tag", "first")
    };
    let r = app
        .client
        .post(app.url("/apps"))
        .multipart(form("a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .post(app.url("/apps"))
        .multipart(form("b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("\"v1\""), "{body}");
}

#[tokio::test]
async fn bad_uploads_are_refused_with_a_message() {
    let app = spawn_app().await;
    let no_file = reqwest::multipart::Form::new().text("tag", "x");
    let r = app
        .client
        .post(app.url("/apps"))
        .multipart(no_file)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("-F file=@"),
        "{body}"
    );

    let traversal = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("../../etc/passwd"),
    );
    let r = app
        .client
        .post(app.url("/apps"))
        .multipart(traversal)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the path is stripped to its last part, as K3's secure_filename did"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["name"], "passwd");

    let bad_uid = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("p"),
        )
        .text("uid", "../x");
    let r = app
        .client
        .post(app.url("/apps"))
        .multipart(bad_uid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_and_leaves_nothing() {
    let app = spawn_app_with(|c| c.max_upload_mb = 1).await;
    let big = vec![7u8; 2 << 20];
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(big).file_name("big"),
    );
    let r = app
        .client
        .post(app.url("/apps"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let apps: serde_json::Value = app.get_json("/api/apps").await;
    assert_eq!(apps["apps"].as_array().unwrap().len(), 0);
    assert_eq!(
        std::fs::read_dir(app.dir.path().join("tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_upload_leaves_nothing_behind() {
    let app = spawn_app().await;
    let host = app.addr.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&host).await.unwrap();
    let boundary = "XyZ";
    let head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"half\"\r\nContent-Type: application/octet-stream\r\n\r\n");
    let declared = head.len() + 10_000_000;
    let req = format!(
        "POST /apps HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {declared}\r\n\r\n{head}"
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    sock.write_all(&vec![1u8; 3_000_000]).await.unwrap();
    // The server is mid-file: a temp file exists.
    let tmp = app.dir.path().join("tmp");
    for _ in 0..100 {
        if std::fs::read_dir(&tmp).unwrap().count() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        1,
        "the upload was being written"
    );
    drop(sock);
    for _ in 0..200 {
        if std::fs::read_dir(&tmp).unwrap().count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the partial upload is deleted"
    );
    let apps: serde_json::Value = app.get_json("/api/apps").await;
    assert!(
        apps["apps"].as_array().unwrap().is_empty(),
        "no version was recorded: {apps}"
    );
    let blobs = walk(&app.dir.path().join("blobs"));
    assert!(blobs.is_empty(), "no blob was stored: {blobs:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[tokio::test]
async fn mutating_routes_need_the_token_when_one_is_set() {
    let app = spawn_app_with(|c| c.token = Some("s3cret".into())).await;
    let form = || {
        reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"#!/bin/sh\n".to_vec()).file_name("p"),
        )
    };
    let r = app
        .client
        .post(app.url("/apps"))
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .post(app.url("/apps"))
        .bearer_auth("wrong")
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .post(app.url("/apps"))
        .bearer_auth("s3cret")
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // K3's GET kill is a change too.
    assert_eq!(
        app.client
            .get(app.url("/job/1/kill"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Reads stay open.
    assert_eq!(
        app.client
            .get(app.url("/api/apps"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn deleting_an_app_forgets_its_versions() {
    let app = spawn_app().await;
    app.upload("gone", "#!/bin/sh\n").await;
    let r = app
        .client
        .delete(app.url("/api/apps/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        app.client
            .get(app.url("/api/apps/gone"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        app.client
            .delete(app.url("/api/apps/gone"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}
