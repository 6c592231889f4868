//! Gang placement: every peer of every role gets a host, cpus, memory and a
//! port, or nothing is placed and the answer says why.
//!
//! Pure and deterministic: the same roles and offers (in the same order)
//! always give the same placement. Offers are taken in the order given and
//! each role is packed greedily onto them; `mem: all` roles share what is
//! left on a host once everything else is placed.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::role::{Mem, Role};

/// An inclusive range of ports, as Mesos offers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub begin: u16,
    pub end: u16,
}

/// Resources on one host that placement may use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub id: String,
    pub host: String,
    /// The address peers use to reach this host (an IP, or the hostname).
    pub address: String,
    pub cpus_milli: u64,
    pub mem_mb: u64,
    /// Whole GPUs.
    #[serde(default)]
    pub gpus: u64,
    pub ports: Vec<PortRange>,
}

/// Where one peer runs. `index` counts peers across the job, role by role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerSlot {
    pub index: u32,
    pub role: usize,
    pub offer: usize,
    pub host: String,
    pub address: String,
    pub port: u16,
    pub cpus_milli: u32,
    pub mem_mb: u64,
    #[serde(default)]
    pub gpus: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub peers: Vec<PeerSlot>,
}

impl Placement {
    /// The job's first peer, whose address `auto` variables take.
    pub fn first(&self) -> Option<&PeerSlot> {
        self.peers.first()
    }
}

/// Why a job does not fit the offers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shortfall {
    pub role: String,
    pub needed: u32,
    pub placed: u32,
    pub reason: String,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "role '{}' needs {} peers, offers fit {}",
            self.role, self.needed, self.placed
        )?;
        if !self.reason.is_empty() {
            write!(f, " ({})", self.reason)?;
        }
        Ok(())
    }
}

/// What is left of one offer while placing.
struct Left {
    cpus: u64,
    mem: u64,
    gpus: u64,
    ports: Vec<PortRange>,
    next_port: Option<(usize, u32)>,
    ports_left: u64,
}

impl Left {
    fn new(o: &Offer) -> Left {
        let ports: Vec<PortRange> = o
            .ports
            .iter()
            .copied()
            .filter(|r| r.begin <= r.end)
            .collect();
        let ports_left = ports.iter().map(|r| (r.end - r.begin) as u64 + 1).sum();
        let next_port = ports.first().map(|r| (0, r.begin as u32));
        Left {
            cpus: o.cpus_milli,
            mem: o.mem_mb,
            gpus: o.gpus,
            ports,
            next_port,
            ports_left,
        }
    }

    /// Takes the lowest unused port. Ranges may overlap in a bad offer; a
    /// port already handed out is skipped so no port is given twice.
    fn take_port(&mut self, used: &mut std::collections::BTreeSet<u16>) -> Option<u16> {
        while let Some((ri, p)) = self.next_port {
            let r = self.ports[ri];
            let next = if p < r.end as u32 {
                Some((ri, p + 1))
            } else {
                self.ports.get(ri + 1).map(|n| (ri + 1, n.begin as u32))
            };
            self.next_port = next;
            self.ports_left = self.ports_left.saturating_sub(1);
            if used.insert(p as u16) {
                return Some(p as u16);
            }
        }
        None
    }
}

#[derive(Default)]
struct Misses {
    hostmask: u32,
    cpus: u32,
    mem: u32,
    gpus: u32,
    ports: u32,
    per_host: u32,
}

impl Misses {
    fn describe(&self, role: &Role, offers: usize) -> String {
        if offers == 0 {
            return "no offers".into();
        }
        let mut parts = Vec::new();
        if self.hostmask > 0 {
            let pat = role.hostmask.as_ref().map(|m| m.pattern()).unwrap_or("");
            parts.push(format!(
                "{} excluded by hostmask {:?}",
                hosts(self.hostmask),
                pat
            ));
        }
        if self.per_host > 0 {
            parts.push(format!(
                "{} cannot hold {} peers each",
                hosts(self.per_host),
                role.peers_per_host.map(|p| p.get()).unwrap_or(0)
            ));
        }
        if self.cpus > 0 {
            parts.push(format!(
                "{} short of cpus ({} per peer)",
                hosts(self.cpus),
                role.cpu.cores()
            ));
        }
        if self.mem > 0 {
            parts.push(format!("{} short of memory", hosts(self.mem)));
        }
        if self.gpus > 0 {
            parts.push(format!(
                "{} short of gpus ({} per peer)",
                hosts(self.gpus),
                role.gpus
            ));
        }
        if self.ports > 0 {
            parts.push(format!("{} out of ports", hosts(self.ports)));
        }
        parts.join("; ")
    }
}

fn hosts(n: u32) -> String {
    if n == 1 {
        "1 host".into()
    } else {
        format!("{n} hosts")
    }
}

/// Places every peer of every role, or none.
pub fn place(roles: &[Role], offers: &[Offer]) -> Result<Placement, Shortfall> {
    let mut left: Vec<Left> = offers.iter().map(Left::new).collect();
    let mut used_ports: Vec<std::collections::BTreeSet<u16>> =
        vec![Default::default(); offers.len()];
    let mut peers: Vec<PeerSlot> = Vec::new();
    // (offer, role, range of peer positions) for `mem: all` groups, sized at the end.
    let mut all_groups: Vec<(usize, usize, std::ops::Range<usize>)> = Vec::new();
    let mut index: u32 = 0;

    for (ri, role) in roles.iter().enumerate() {
        let needed = role.peers.get();
        let mut remaining = needed;
        let cpu = role.cpu.millis() as u64;
        let gpus = role.gpus as u64;
        let mut misses = Misses::default();
        for oi in offer_order(role, offers) {
            let offer = &offers[oi];
            if remaining == 0 {
                break;
            }
            if let Some(mask) = &role.hostmask {
                if !mask.matches(&offer.host) {
                    misses.hostmask += 1;
                    continue;
                }
            }
            let l = &mut left[oi];
            let group_mem = match role.mem {
                Mem::All => 0,
                Mem::Some => (offer.mem_mb / 4).clamp(1, 4096),
                Mem::Mb(mb) => mb,
            };
            if l.mem < group_mem.max(1) {
                misses.mem += 1;
                continue;
            }
            let by_cpu = l.cpus / cpu;
            let by_gpu = l.gpus.checked_div(gpus).unwrap_or(u64::MAX);
            let fit = by_cpu.min(by_gpu).min(l.ports_left).min(remaining as u64) as u32;
            let want = match role.peers_per_host {
                Some(p) => p.get().min(remaining),
                None => fit,
            };
            if fit < want || fit == 0 {
                if role.peers_per_host.is_some() && fit > 0 {
                    misses.per_host += 1;
                } else if by_gpu < want.max(1) as u64 && by_gpu <= by_cpu {
                    misses.gpus += 1;
                } else if by_cpu < want.max(1) as u64 {
                    misses.cpus += 1;
                } else {
                    misses.ports += 1;
                }
                continue;
            }
            let start = peers.len();
            let mut placed_here = 0;
            for _ in 0..want {
                let Some(port) = l.take_port(&mut used_ports[oi]) else {
                    break;
                };
                l.cpus -= cpu;
                l.gpus -= gpus;
                peers.push(PeerSlot {
                    index,
                    role: ri,
                    offer: oi,
                    host: offer.host.clone(),
                    address: offer.address.clone(),
                    port,
                    cpus_milli: role.cpu.millis(),
                    mem_mb: 0,
                    gpus: role.gpus,
                });
                index += 1;
                placed_here += 1;
            }
            // A host that took some but not all of what is left was limited too.
            if placed_here < remaining && role.peers_per_host.is_none() {
                if by_gpu < by_cpu && by_gpu <= l.ports_left + placed_here as u64 {
                    misses.gpus += 1;
                } else if by_cpu <= l.ports_left + placed_here as u64 {
                    misses.cpus += 1;
                } else {
                    misses.ports += 1;
                }
            }
            remaining -= placed_here;
            match role.mem {
                Mem::All => all_groups.push((oi, ri, start..peers.len())),
                _ => {
                    l.mem -= group_mem;
                    share_mem(&mut peers[start..], group_mem);
                }
            }
        }
        if remaining > 0 {
            return Err(Shortfall {
                role: role.name.clone(),
                needed,
                placed: needed - remaining,
                reason: misses.describe(role, offers.len()),
            });
        }
    }

    // `mem: all` groups split what remains of each host evenly. Grouped by
    // host in one pass (stable: a host's groups keep their order); looking
    // up each host's groups among all of them was quadratic, 10,000 hosts
    // took a tenth of a second.
    all_groups.sort_by_key(|g| g.0);
    for groups in all_groups.chunk_by(|a, b| a.0 == b.0) {
        let oi = groups[0].0;
        let l = &mut left[oi];
        let each = l.mem / groups.len() as u64;
        if each == 0 {
            let role = &roles[groups[0].1];
            let n = role.peers.get();
            return Err(Shortfall {
                role: role.name.clone(),
                needed: n,
                placed: 0,
                reason: format!("no memory left on host {} for `mem: all`", offers[oi].host),
            });
        }
        for (_, _, range) in groups {
            share_mem(&mut peers[range.clone()], each);
            l.mem -= each;
        }
    }
    Ok(Placement { peers })
}

/// The order a role tries offers in: as given, except that a role that
/// asks for no GPU tries hosts without GPUs first, so that GPU hosts stay
/// for the work that needs them and are used only when nothing else fits
/// (what Mesos asks of frameworks with GPU_RESOURCES).
fn offer_order(role: &Role, offers: &[Offer]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..offers.len()).collect();
    if role.gpus == 0 {
        order.sort_by_key(|&i| offers[i].gpus > 0);
    }
    order
}

/// What is left of `offers` once `placement` has taken its share.
pub fn subtract(offers: &[Offer], placement: &Placement) -> Vec<Offer> {
    let mut out = offers.to_vec();
    for p in &placement.peers {
        let o = &mut out[p.offer];
        o.cpus_milli = o.cpus_milli.saturating_sub(p.cpus_milli as u64);
        o.mem_mb = o.mem_mb.saturating_sub(p.mem_mb);
        o.gpus = o.gpus.saturating_sub(p.gpus as u64);
        o.ports = remove_port(&o.ports, p.port);
    }
    out
}

/// The ranges without one port.
pub fn remove_port(ranges: &[PortRange], port: u16) -> Vec<PortRange> {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for r in ranges {
        if port < r.begin || port > r.end {
            out.push(*r);
            continue;
        }
        if port > r.begin {
            out.push(PortRange {
                begin: r.begin,
                end: port - 1,
            });
        }
        if port < r.end {
            out.push(PortRange {
                begin: port + 1,
                end: r.end,
            });
        }
    }
    out
}

/// Splits a host group's memory between its peers; the first takes the remainder.
fn share_mem(group: &mut [PeerSlot], mem: u64) {
    if group.is_empty() {
        return;
    }
    let n = group.len() as u64;
    for p in group.iter_mut() {
        p.mem_mb = mem / n;
    }
    group[0].mem_mb += mem % n;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::RoleFile;
    use proptest::prelude::*;

    fn offer(i: usize, cpus: f64, mem: u64, ports: (u16, u16)) -> Offer {
        Offer {
            id: format!("o{i}"),
            host: format!("host{i}"),
            address: format!("10.0.0.{i}"),
            cpus_milli: (cpus * 1000.0) as u64,
            mem_mb: mem,
            gpus: 0,
            ports: vec![PortRange {
                begin: ports.0,
                end: ports.1,
            }],
        }
    }

    fn roles(src: &str) -> Vec<Role> {
        RoleFile::parse(src).unwrap().0.roles().to_vec()
    }

    #[test]
    fn peers_per_host_puts_exactly_that_many_on_each_host() {
        let r = roles("name: a\npeers: 5\npeers_per_host: 2\ncpu: 0.5\n");
        let offers: Vec<_> = (0..4)
            .map(|i| offer(i, 8.0, 1000, (31000, 31010)))
            .collect();
        let p = place(&r, &offers).unwrap();
        let per: Vec<usize> = (0..4)
            .map(|o| p.peers.iter().filter(|s| s.offer == o).count())
            .collect();
        assert_eq!(per, vec![2, 2, 1, 0]);
    }

    #[test]
    fn hostmask_filters_hosts_and_the_shortfall_says_so() {
        let r = roles("name: w\npeers: 4\nhostmask: host[12]\n");
        let offers: Vec<_> = (0..4).map(|i| offer(i, 1.0, 100, (1, 100))).collect();
        let err = place(&r, &offers).unwrap_err();
        assert_eq!((err.needed, err.placed), (4, 2));
        assert!(
            err.to_string()
                .contains("role 'w' needs 4 peers, offers fit 2"),
            "{err}"
        );
        assert!(err.reason.contains("hostmask"), "{err}");
    }

    #[test]
    fn mem_all_roles_share_a_host_fairly() {
        let r = roles("name: a\npeers: 1\n---\nname: b\npeers: 1\n");
        let p = place(&r, &[offer(0, 4.0, 1000, (5000, 5001))]).unwrap();
        assert_eq!(
            p.peers.iter().map(|s| s.mem_mb).collect::<Vec<_>>(),
            vec![500, 500]
        );
        assert_ne!(p.peers[0].port, p.peers[1].port);
    }

    #[test]
    fn mem_some_is_a_quarter_capped_at_four_gb() {
        let r = roles("name: a\npeers: 1\nmem: some\n");
        let p = place(&r, &[offer(0, 1.0, 64 * 1024, (1, 1))]).unwrap();
        assert_eq!(p.peers[0].mem_mb, 4096);
        let p = place(&r, &[offer(0, 1.0, 1000, (1, 1))]).unwrap();
        assert_eq!(p.peers[0].mem_mb, 250);
    }

    #[test]
    fn fixed_memory_declines_small_hosts() {
        let r = roles("name: a\npeers: 1\nmem: 2\n");
        let p = place(
            &r,
            &[offer(0, 1.0, 1024, (1, 1)), offer(1, 1.0, 4096, (1, 1))],
        )
        .unwrap();
        assert_eq!(p.peers[0].host, "host1");
        assert_eq!(p.peers[0].mem_mb, 2048);
    }

    #[test]
    fn ports_run_out_before_cpus() {
        let r = roles("name: a\npeers: 3\ncpu: 0.1\n");
        let err = place(&r, &[offer(0, 8.0, 100, (7000, 7001))]).unwrap_err();
        // The host takes 2 of 3, but a gang is all or nothing: the error says how far it got.
        assert_eq!(err.placed, 2);
        assert!(
            err.to_string().contains("needs 3 peers, offers fit 2"),
            "{err}"
        );
    }

    fn gpu_offer(i: usize, cpus: f64, gpus: u64) -> Offer {
        Offer {
            gpus,
            ..offer(i, cpus, 4096, (31000, 31010))
        }
    }

    #[test]
    fn peers_without_gpus_leave_gpu_hosts_alone_until_nothing_else_fits() {
        // host0 has GPUs and comes first; host1 and host2 have none.
        let offers = vec![
            gpu_offer(0, 4.0, 2),
            gpu_offer(1, 2.0, 0),
            gpu_offer(2, 2.0, 0),
        ];
        let r = roles("name: cpu\npeers: 4\nmem: 0.1\n");
        let p = place(&r, &offers).unwrap();
        assert!(p.peers.iter().all(|s| s.offer != 0), "{p:?}");
        // Five do not fit elsewhere: the GPU host takes the fifth.
        let r = roles("name: cpu\npeers: 5\nmem: 0.1\n");
        let p = place(&r, &offers).unwrap();
        assert_eq!(p.peers.iter().filter(|s| s.offer == 0).count(), 1);
        assert!(p.peers.iter().all(|s| s.gpus == 0));
    }

    #[test]
    fn peers_asking_for_gpus_get_whole_gpus_and_the_shortfall_names_them() {
        let offers = vec![
            gpu_offer(0, 8.0, 0),
            gpu_offer(1, 8.0, 2),
            gpu_offer(2, 8.0, 1),
        ];
        let r = roles("name: train\npeers: 3\ngpus: 1\nmem: 0.1\n");
        let p = place(&r, &offers).unwrap();
        let on: Vec<usize> = p.peers.iter().map(|s| s.offer).collect();
        assert_eq!(on, [1, 1, 2]);
        assert!(p.peers.iter().all(|s| s.gpus == 1));
        // What is left has no GPU: a fourth cannot go anywhere.
        let rest = subtract(&offers, &p);
        assert_eq!(rest.iter().map(|o| o.gpus).sum::<u64>(), 0);
        let r = roles("name: train\npeers: 2\ngpus: 2\nmem: 0.1\n");
        let e = place(&r, &offers).unwrap_err();
        assert_eq!((e.needed, e.placed), (2, 1));
        assert!(
            e.reason.contains("short of gpus (2 per peer)"),
            "{}",
            e.reason
        );
        // The local machine offers no GPU.
        let e = place(&r, &[offer(0, 8.0, 4096, (1, 10))]).unwrap_err();
        assert!(e.reason.contains("1 host short of gpus"), "{}", e.reason);
    }

    #[test]
    fn no_offers_is_a_clear_reason() {
        let r = roles("name: a\npeers: 1\n");
        assert_eq!(place(&r, &[]).unwrap_err().reason, "no offers");
    }

    prop_compose! {
        fn arb_offer(i: usize)(cpus in 0u64..8000, mem in 0u64..8192, gpus in prop_oneof![Just(0u64), 0u64..4], begin in 1000u16..1100, len in 0u16..20, begin2 in 1000u16..1100, len2 in 0u16..5) -> Offer {
            Offer { id: format!("o{i}"), host: format!("h{}", i % 5), address: format!("a{i}"), cpus_milli: cpus, mem_mb: mem, gpus,
                ports: vec![PortRange { begin, end: begin + len }, PortRange { begin: begin2, end: begin2 + len2 }] }
        }
    }

    fn arb_offers() -> impl Strategy<Value = Vec<Offer>> {
        (0usize..12).prop_flat_map(|n| (0..n).map(arb_offer).collect::<Vec<_>>())
    }

    fn arb_roles() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            (
                1u32..12,
                prop::option::of(1u32..4),
                1u32..3000,
                prop_oneof![
                    Just("all".to_string()),
                    Just("some".to_string()),
                    (1u32..4).prop_map(|g| g.to_string())
                ],
                prop::option::of(Just("h[0-2]")),
                prop_oneof![Just(0u32), 0u32..3],
            ),
            1..4,
        )
        .prop_map(|rs| {
            rs.iter()
                .enumerate()
                .map(|(i, (peers, pph, cpu, mem, mask, gpus))| {
                    let mut s = format!(
                        "name: r{i}\npeers: {peers}\ncpu: {}\nmem: {mem}\ngpus: {gpus}\n",
                        *cpu as f64 / 1000.0
                    );
                    if let Some(p) = pph {
                        s += &format!("peers_per_host: {p}\n");
                    }
                    if let Some(m) = mask {
                        s += &format!("hostmask: \"{m}\"\n");
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join("---\n")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn placement_never_overcommits_and_is_all_or_nothing(src in arb_roles(), offers in arb_offers()) {
            let roles = roles(&src);
            match place(&roles, &offers) {
                Ok(p) => {
                    let total: u32 = roles.iter().map(|r| r.peers.get()).sum();
                    prop_assert_eq!(p.peers.len() as u32, total);
                    for (oi, o) in offers.iter().enumerate() {
                        let mine: Vec<_> = p.peers.iter().filter(|s| s.offer == oi).collect();
                        let cpus: u64 = mine.iter().map(|s| s.cpus_milli as u64).sum();
                        let mem: u64 = mine.iter().map(|s| s.mem_mb).sum();
                        prop_assert!(cpus <= o.cpus_milli, "cpus {} > {}", cpus, o.cpus_milli);
                        prop_assert!(mem <= o.mem_mb, "mem {} > {}", mem, o.mem_mb);
                        let gpus: u64 = mine.iter().map(|s| s.gpus as u64).sum();
                        prop_assert!(gpus <= o.gpus, "gpus {} > {}", gpus, o.gpus);
                        for s in &mine {
                            prop_assert_eq!(s.gpus, roles[s.role].gpus);
                        }
                        let mut ports: Vec<u16> = mine.iter().map(|s| s.port).collect();
                        for port in &ports {
                            prop_assert!(o.ports.iter().any(|r| r.begin <= *port && *port <= r.end));
                        }
                        ports.sort();
                        let n = ports.len();
                        ports.dedup();
                        prop_assert_eq!(n, ports.len(), "a port was handed out twice");
                    }
                    for (ri, r) in roles.iter().enumerate() {
                        if let Some(pph) = r.peers_per_host {
                            for oi in 0..offers.len() {
                                let n = p.peers.iter().filter(|s| s.role == ri && s.offer == oi).count() as u32;
                                prop_assert!(n <= pph.get());
                            }
                        }
                        if let Some(m) = &r.hostmask {
                            prop_assert!(p.peers.iter().filter(|s| s.role == ri).all(|s| m.matches(&s.host)));
                        }
                    }
                    let idx: Vec<u32> = p.peers.iter().map(|s| s.index).collect();
                    prop_assert_eq!(idx, (0..total).collect::<Vec<_>>());
                }
                Err(s) => prop_assert!(s.placed < s.needed || s.reason.contains("memory")),
            }
            // Deterministic for the same input.
            prop_assert_eq!(place(&roles, &offers), place(&roles, &offers));
        }
    }
}
