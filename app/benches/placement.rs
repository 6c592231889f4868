//! Placement benchmark: 1,000 peers over 1,000 offers (and larger), timed
//! over repeated runs; prints the median. `cargo bench -p dispatcher-app`.

use std::time::Instant;

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
}
