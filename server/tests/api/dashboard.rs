//! The embedded dashboard's files: brotli to browsers that take it, else
//! gzip, else as built; the same bytes whichever way.

use std::io::Read;

use crate::helpers::*;

#[tokio::test]
async fn dashboard_files_are_sent_brotli_gzip_or_raw_as_the_client_accepts() {
    let app = spawn_app().await;
    let index = app
        .client
        .get(app.url("/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let Some(wasm) = index
        .split('"')
        .find(|s| s.starts_with('/') && s.ends_with("_bg.wasm"))
        .map(str::to_string)
    else {
        // `./dev test` builds the dashboard first; a bare `cargo test` may not.
        assert!(
            std::env::var_os("CI").is_none(),
            "no dashboard in the binary: {index}"
        );
        eprintln!("not run: this binary was built without the dashboard");
        return;
    };
    let get = |enc: &'static str| {
        let req = app.client.get(app.url(&wasm));
        async move {
            let r = if enc.is_empty() {
                req
            } else {
                req.header("accept-encoding", enc)
            }
            .send()
            .await
            .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "application/wasm");
            assert_eq!(r.headers()["vary"], "accept-encoding");
            let coding = r
                .headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap().to_string());
            (coding, r.bytes().await.unwrap().to_vec())
        }
    };
    let (none, raw) = get("").await;
    assert_eq!(none, None);
    assert_eq!(&raw[..4], b"\0asm");
    let (gz_coding, gz) = get("gzip").await;
    assert_eq!(gz_coding.as_deref(), Some("gzip"));
    let (br_coding, br) = get("gzip, deflate, br, zstd").await;
    assert_eq!(br_coding.as_deref(), Some("br"));
    let (refused, _) = get("br;q=0, gzip").await;
    assert_eq!(refused.as_deref(), Some("gzip"), "q=0 refuses brotli");
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    let mut unbrotlied = Vec::new();
    brotli::Decompressor::new(&br[..], 1 << 16)
        .read_to_end(&mut unbrotlied)
        .unwrap();
    assert!(
        unzipped == raw && unbrotlied == raw,
        "every coding holds the same file"
    );
    assert!(
        br.len() < gz.len(),
        "brotli {} vs gzip {}",
        br.len(),
        gz.len()
    );
    println!(
        "wasm: {} bytes raw, {} gzip, {} brotli",
        raw.len(),
        gz.len(),
        br.len()
    );
}
