//! Placement benchmark: 1,000 peers over 1,000 offers (and larger), timed
//! over repeated runs; prints the median. Then what the peers of a
//! 10,000-peer job are given (`build_peers`): its time and the bytes of
//! their specs, which grow with the peers, not their square.
//! `cargo bench -p dispatcher-app`.

use std::time::Instant;

use app::model::JobOptions;
use app::peer::{build_peers, JobContext, PeerSpec};
use app::placement::{place, Offer, PortRange};
use app::RoleFile;

fn offers(n: usize) -> Vec<Offer> {
    (0..n)
        .map(|i| Offer {
            id: format!("offer-{i}"),
            host: format!("node{i:04}"),
            address: format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
            cpus_milli: 4000,
            mem_mb: 16384,
            gpus: 0,
            ports: vec![PortRange {
                begin: 31000,
                end: 32000,
            }],
        })
        .collect()
}

fn bench(label: &str, roles: &str, offers: &[Offer], runs: usize) {
    let (rf, _) = RoleFile::parse(roles).unwrap();
    let mut times = Vec::with_capacity(runs);
    let mut placed = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let p = place(rf.roles(), offers).expect("fits");
        times.push(t.elapsed());
        placed = p.peers.len();
    }
    times.sort();
    let median = times[runs / 2];
    println!("placement: {label}: {placed} peers over {} offers, median {:.3} ms (min {:.3} ms, {runs} runs)", offers.len(), median.as_secs_f64() * 1e3, times[0].as_secs_f64() * 1e3);
}

fn main() {
    let short =
        std::env::var("BENCH_SHORT").is_ok() || std::env::var("CI").is_ok_and(|v| v == "true");
    let runs = if short { 20 } else { 200 };
    let o = offers(1000);
    bench(
        "1 role, 1 peer per host",
        "name: w\npeers: 1000\npeers_per_host: 1\n",
        &o,
        runs,
    );
    bench("1 role, packed", "name: w\npeers: 1000\ncpu: 1\n", &o, runs);
    bench("2 roles, hostmask, mem some", "name: a\npeers: 500\nhostmask: \"node0\"\nmem: some\n---\nname: b\npeers: 500\ncpu: 0.5\nmem: 1\n", &o, runs);
    bench(
        "1 role, 10000 peers",
        "name: w\npeers: 10000\ncpu: 0.25\n",
        &offers(1000),
        runs / 4 + 1,
    );
    let big = offers(10_000);
    bench(
        "1 role, 10000 peers, 1 per host",
        "name: w\npeers: 10000\npeers_per_host: 1\ncpu: 1\n",
        &big,
        runs / 4 + 1,
    );
    specs(10_000, &big, runs / 4 + 1);
}

/// The peer contract for `n` peers, one per offer.
fn specs(n: usize, offers: &[Offer], runs: usize) {
    let (rf, _) =
        RoleFile::parse(&format!("name: w\npeers: {n}\npeers_per_host: 1\ncpu: 1\n")).unwrap();
    let p = place(rf.roles(), offers).expect("fits");
    let opts = JobOptions::default();
    let ctx = JobContext {
        job_id: 1,
        binary: "prog",
        options: &opts,
        attempt: 1,
    };
    let mut times = Vec::with_capacity(runs);
    let mut bytes = (0, 0);
    for _ in 0..runs {
        let t = Instant::now();
        let s = build_peers(&ctx, &rf, &p, &|_: &str, _: &str| vec![]);
        times.push(t.elapsed());
        let own: usize = s.iter().map(PeerSpec::own_len).sum();
        bytes = (own, s[0].peer_list.len());
    }
    times.sort();
    println!(
        "placement: peer specs for {n} peers: median {:.1} ms ({runs} runs); {:.1} MB of per-peer config, env and command plus {:.2} MB of peer list shared by all (one list in each peer's spec would be {:.1} GB)",
        times[runs / 2].as_secs_f64() * 1e3,
        bytes.0 as f64 / 1e6,
        bytes.1 as f64 / 1e6,
        bytes.1 as f64 * n as f64 / 1e9,
    );
}
