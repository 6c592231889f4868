//! Upload benchmark: streams a large app to a real `dispatcher` process and
//! prints throughput and the server's peak memory (VmHWM), next to its peak
//! after a tiny upload, so the ratio shows whether memory grows with size.
//!
//! `cargo bench -p dispatcher --bench upload` (1 GiB); `BENCH_SHORT=1` (or
//! CI=true) uploads 256 MiB.

use std::time::{Duration, Instant};

use futures_util::stream;

#[path = "support/server.rs"]
mod server;
use server::Server;

async fn upload(client: &reqwest::Client, base: &str, name: &str, size: u64) -> Duration {
    const CHUNK: usize = 1 << 20;
    let chunk = bytes::Bytes::from(vec![0x5au8; CHUNK]);
    let full = size / CHUNK as u64;
    let rest = (size % CHUNK as u64) as usize;
    let tail = chunk.slice(..rest);
    // A counter in the first chunk makes every run's content distinct.
    let mut first = vec![0x5au8; CHUNK.min(size as usize)];
    let n = 8.min(first.len());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .to_le_bytes();
    first[..n].copy_from_slice(&stamp[..n]);
    let first = bytes::Bytes::from(first);
    let body = stream::iter(
        (0..full)
            .map(move |i| if i == 0 { first.clone() } else { chunk.clone() })
            .chain((rest > 0).then_some(tail))
            .map(Ok::<_, std::io::Error>),
    );
    let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(body), size)
        .file_name(name.to_string());
    let form = reqwest::multipart::Form::new().part("file", part);
    let start = Instant::now();
    let r = client
        .post(format!("{base}/apps"))
        .multipart(form)
        .send()
        .await
        .expect("upload sent");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    start.elapsed()
}

#[tokio::main]
async fn main() {
    let short =
        std::env::var("BENCH_SHORT").is_ok() || std::env::var("CI").is_ok_and(|v| v == "true");
    let size: u64 = if short { 256 << 20 } else { 1 << 30 };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let (client, base) = (&server.client, &server.base);
    upload(client, base, "tiny", 4096).await;
    let small_peak = server.status("VmHWM:");
    let took = upload(client, base, "big", size).await;
    let big_peak = server.status("VmHWM:");
    let mib = size as f64 / (1 << 20) as f64;
    println!(
        "upload: {mib:.0} MiB in {:.2} s = {:.0} MiB/s",
        took.as_secs_f64(),
        mib / took.as_secs_f64()
    );
    println!("upload: server peak RSS {:.1} MiB after a 4 KiB upload, {:.1} MiB after the {mib:.0} MiB upload (ratio {:.2})", small_peak as f64 / 1024.0, big_peak as f64 / 1024.0, big_peak as f64 / small_peak.max(1) as f64);
    drop(server);
    // Memory must not follow the upload's size: 16x growth would mean buffering.
    assert!(
        big_peak < small_peak * 4 + 64 * 1024,
        "peak RSS grew with the upload: {small_peak} KiB -> {big_peak} KiB"
    );
}
