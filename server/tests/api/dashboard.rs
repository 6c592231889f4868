//! The embedded dashboard's files: brotli to browsers that take it, else
//! gzip, else as built; the same bytes whichever way.

use std::io::Read;

use crate::helpers::*;

/// The dashboard's index.html, as a browser gets it; `None` (the test is
/// then skipped) when this binary was built without a dashboard, which
/// `./dev test` and CI never do.
async fn built_index(app: &TestApp) -> Option<String> {
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
    if index.contains("_bg.wasm") {
        return Some(index);
    }
    // `./dev test` builds the dashboard first; a bare `cargo test` may not.
    assert!(
        std::env::var_os("CI").is_none(),
        "no dashboard in the binary: {index}"
    );
    eprintln!("not run: this binary was built without the dashboard");
    None
}

#[tokio::test]
async fn dashboard_files_are_sent_brotli_gzip_or_raw_as_the_client_accepts() {
    let app = spawn_app().await;
    let Some(index) = built_index(&app).await else {
        return;
    };
    let wasm = index
        .split('"')
        .find(|s| s.starts_with('/') && s.ends_with("_bg.wasm"))
        .unwrap_or_else(|| panic!("index.html names no wasm: {index}"))
        .to_string();
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

/// The pages' code is split (frontend/split.sh): the main JS imports the
/// chunks' loader from a directory named by their hash, and the loader
/// fetches chunks beside itself. Every link must resolve in the binary,
/// with a type the browser instantiates and a cache policy that is safe
/// because the path changes with the contents.
#[tokio::test]
async fn the_split_pages_code_is_embedded_where_the_main_module_looks_for_it() {
    let app = spawn_app().await;
    let get = |path: String| {
        let client = app.client.clone();
        let url = app.url(&path);
        async move {
            let r = client.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let kind = r.headers()["content-type"].to_str().unwrap().to_string();
            let cache = r.headers()["cache-control"].to_str().unwrap().to_string();
            (kind, cache, r.bytes().await.unwrap())
        }
    };
    let Some(index) = built_index(&app).await else {
        return;
    };
    let js = index
        .split('\'')
        .find(|s| s.starts_with('/') && s.ends_with(".js"))
        .unwrap_or_else(|| panic!("index.html imports no JS: {index}"))
        .to_string();
    let (_, _, main_js) = get(js).await;
    let main_js = String::from_utf8(main_js.to_vec()).unwrap();
    let loader = main_js
        .split('"')
        .find(|s| s.starts_with("./split-") && s.ends_with("/__wasm_split.js"))
        .unwrap_or_else(|| panic!("the main JS imports no chunk loader"))
        .trim_start_matches('.')
        .to_string();
    let (kind, cache, loader_js) = get(loader.clone()).await;
    assert!(kind.starts_with("text/javascript"), "{kind}");
    assert!(cache.contains("immutable"), "{cache}");
    let loader_js = String::from_utf8(loader_js.to_vec()).unwrap();
    let dir = loader.trim_end_matches("__wasm_split.js");
    let chunks: Vec<&str> = loader_js
        .split('"')
        .filter(|s| s.starts_with("./") && s.ends_with(".wasm"))
        .collect();
    assert!(
        chunks
            .iter()
            .any(|c| c.starts_with("./split___job_route_view_")),
        "the job page has a chunk: {chunks:?}"
    );
    for c in &chunks {
        let (kind, _, bytes) = get(format!("{dir}{}", &c[2..])).await;
        assert_eq!(kind, "application/wasm", "{c}");
        assert_eq!(&bytes[..4], b"\0asm", "{c} is a wasm module");
    }
    println!("split: {} chunks under {dir}", chunks.len());
}
