//! Placement on any offers and roles: when it places a gang, every peer sits
//! on an offer that had room for it (cpus, memory, a port of its own, the
//! host mask and peers_per_host honoured); when it cannot, it says why.
#![no_main]

use std::collections::{HashMap, HashSet};

use app::placement::{place, subtract, Offer, PortRange};
use app::RoleFile;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct In {
    offers: Vec<(u8, u16, u16, u16, u8)>,
    roles: Vec<(u8, u16, u16, u8, u8)>,
}

const MASKS: [&str; 4] = ["", "h1", "h[0-3]", "h.*"];

fuzz_target!(|inp: In| {
    let offers: Vec<Offer> = inp
        .offers
        .iter()
        .take(24)
        .enumerate()
        .map(|(i, &(host, cpus, mem, port, span))| Offer {
            id: format!("o{i}"),
            host: format!("h{}", host % 8),
            address: format!("10.0.0.{}", host % 8),
            cpus_milli: cpus as u64 % 16_001,
            mem_mb: mem as u64,
            gpus: (host / 8 % 3) as u64,
            ports: vec![PortRange { begin: port.max(1), end: port.max(1).saturating_add(span as u16 % 20) }],
        })
        .collect();
    let mut src = String::new();
    for (i, &(peers, cpu, mem, pph, mask)) in inp.roles.iter().take(4).enumerate() {
        src += &format!("---\nname: r{i}\npeers: {}\ncpu: {}\n", peers % 40 + 1, (cpu % 4000 + 1) as f64 / 1000.0);
        match mem % 4 {
            0 => src += "mem: all\n",
            1 => src += "mem: some\n",
            _ => src += &format!("mem: {}M\n", mem / 4 + 1),
        }
        if pph % 3 == 0 {
            src += &format!("peers_per_host: {}\n", pph % 7 + 1);
        }
        let m = MASKS[mask as usize % MASKS.len()];
        if !m.is_empty() {
            src += &format!("hostmask: \"{m}\"\n");
        }
        if pph % 5 == 1 {
            src += &format!("gpus: {}\n", pph % 3 + 1);
        }
    }
    let Ok((rf, _)) = RoleFile::parse(&src) else {
        return;
    };
    let roles = rf.roles();
    match place(roles, &offers) {
        Err(short) => assert!(!short.to_string().is_empty()),
        Ok(p) => {
            assert_eq!(p.peers.len() as u32, rf.total_peers());
            let mut cpus: HashMap<usize, u64> = HashMap::new();
            let mut mem: HashMap<usize, u64> = HashMap::new();
            let mut gpus: HashMap<usize, u64> = HashMap::new();
            let mut ports: HashSet<(String, u16)> = HashSet::new();
            let mut per_host: HashMap<(usize, usize), u32> = HashMap::new();
            for (n, s) in p.peers.iter().enumerate() {
                assert_eq!(s.index as usize, n);
                let o = &offers[s.offer];
                let r = &roles[s.role];
                assert_eq!(s.host, o.host);
                *cpus.entry(s.offer).or_default() += s.cpus_milli as u64;
                *mem.entry(s.offer).or_default() += s.mem_mb;
                assert_eq!(s.gpus, r.gpus);
                *gpus.entry(s.offer).or_default() += s.gpus as u64;
                assert!(o.ports.iter().any(|pr| pr.begin <= s.port && s.port <= pr.end));
                assert!(ports.insert((o.host.clone(), s.port)) || offers.iter().filter(|x| x.host == o.host).count() > 1);
                if let Some(m) = &r.hostmask {
                    assert!(m.matches(&o.host));
                }
                *per_host.entry((s.offer, s.role)).or_default() += 1;
            }
            for (oi, g) in gpus {
                assert!(g <= offers[oi].gpus, "offer {oi} gpus");
            }
            for (oi, c) in cpus {
                assert!(c <= offers[oi].cpus_milli, "offer {oi} cpus");
            }
            for (oi, m) in mem {
                assert!(m <= offers[oi].mem_mb, "offer {oi} mem");
            }
            for ((_, ri), n) in per_host {
                if let Some(pph) = roles[ri].peers_per_host {
                    assert!(n <= pph.get());
                }
            }
            let left = subtract(&offers, &p);
            assert_eq!(left.len(), offers.len());
        }
    }
});
