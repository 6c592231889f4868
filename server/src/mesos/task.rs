//! Mesos values as the dispatcher sees them: offers as placement sees
//! them, peers as TaskInfos, task ids, and task states as peer states.

use app::model::PeerState;
use app::peer::{PeerSpec, CONFIG_FILE};
use app::placement::{Offer, PortRange};
use app::role::{Role, Volume};
use proto::mesos::{self, command_info, container_info, environment, value, TaskState};

/// The pool a resource belongs to: the role it is reserved for (the last
/// reservation in the refinement format, else `role`), or `*` unreserved.
pub fn pool_of(r: &mesos::Resource) -> &str {
    if let Some(last) = r.reservations.last() {
        return last.role.as_deref().unwrap_or("*");
    }
    r.role.as_deref().unwrap_or("*")
}

/// True for the resources a framework of `role` may use: unreserved ones
/// and those reserved for its role. Others cannot be launched on (Mesos
/// answers TASK_ERROR), so placement must not count them.
fn usable(r: &mesos::Resource, role: &str) -> bool {
    let pool = pool_of(r);
    pool == "*" || pool == role
}

/// An offer as placement sees it: the cpus, mem and ports a framework of
/// `role` may use (unreserved and reserved for it together), and the
/// address peers should use (the agent's IP when the offer has its URL).
pub fn offer_from(o: &mesos::Offer, role: &str) -> Offer {
    let (mut cpus, mut mem, mut gpus, mut ports) = (0.0f64, 0.0f64, 0.0f64, Vec::new());
    for r in o.resources.iter().filter(|r| usable(r, role)) {
        match (r.name.as_str(), &r.scalar, &r.ranges) {
            ("cpus", Some(s), _) => cpus += s.value,
            ("mem", Some(s), _) => mem += s.value,
            ("gpus", Some(s), _) => gpus += s.value,
            ("ports", _, Some(rs)) => ports.extend(
                rs.range
                    .iter()
                    .filter(|x| x.begin <= x.end && x.end <= u16::MAX as u64)
                    .map(|x| PortRange {
                        begin: x.begin as u16,
                        end: x.end as u16,
                    }),
            ),
            _ => {}
        }
    }
    let address = o
        .url
        .as_ref()
        .and_then(|u| u.address.ip.clone().or_else(|| u.address.hostname.clone()))
        .unwrap_or_else(|| o.hostname.clone());
    ports.sort_by_key(|p| p.begin);
    Offer {
        id: o.id.value.clone(),
        host: o.hostname.clone(),
        address,
        cpus_milli: (cpus * 1000.0).round() as u64,
        mem_mb: mem.floor() as u64,
        gpus: gpus.max(0.0).floor() as u64,
        ports,
    }
}

/// Rewrites the tasks launched on one offer so that each resource names the
/// pool it is taken from: Mesos serves an unreserved request from
/// unreserved resources only, and a request for a role's reservation from
/// that reservation only (scenarios/reserved-resources: asking one pool
/// for more than it offered is TASK_ERROR). Reserved resources are used
/// first; `allocation_info` is left out (the master fills it in).
pub fn take_from_pools(o: &mesos::Offer, role: &str, tasks: &mut [mesos::TaskInfo]) {
    // What each pool offers, in thousandths (Mesos' own fixed point).
    let milli = |v: f64| (v * 1000.0).round() as u64;
    let mut left: Vec<(String, &'static str, u64)> = vec![];
    let mut port_pools: Vec<(u64, u64, String)> = vec![];
    for r in o.resources.iter().filter(|r| usable(r, role)) {
        let pool = pool_of(r).to_string();
        match (r.name.as_str(), &r.scalar, &r.ranges) {
            ("cpus", Some(s), _) => left.push((pool, "cpus", milli(s.value))),
            ("mem", Some(s), _) => left.push((pool, "mem", milli(s.value))),
            ("gpus", Some(s), _) => left.push((pool, "gpus", milli(s.value))),
            ("ports", _, Some(rs)) => {
                port_pools.extend(rs.range.iter().map(|x| (x.begin, x.end, pool.clone())))
            }
            _ => {}
        }
    }
    // Reservations before the unreserved pool.
    left.sort_by_key(|(pool, _, _)| pool == "*");
    let reserved = |pool: &str| (pool != "*").then(|| pool.to_string());
    for t in tasks {
        let mut out = Vec::new();
        for r in std::mem::take(&mut t.resources) {
            match (r.name.as_str(), &r.scalar, &r.ranges) {
                (name @ ("cpus" | "mem" | "gpus"), Some(s), _) => {
                    let mut need = milli(s.value);
                    for (pool, kind, have) in left.iter_mut().filter(|x| x.1 == name) {
                        let take = need.min(*have);
                        if take == 0 {
                            continue;
                        }
                        *have -= take;
                        need -= take;
                        out.push(mesos::Resource {
                            role: reserved(pool),
                            ..scalar(kind, take as f64 / 1000.0)
                        });
                        if need == 0 {
                            break;
                        }
                    }
                    if need > 0 {
                        // More than offered: asked as unreserved, so that
                        // the master's answer names the shortfall.
                        out.push(scalar(name, need as f64 / 1000.0));
                    }
                }
                ("ports", _, Some(rs)) => {
                    for p in &rs.range {
                        let pool = port_pools
                            .iter()
                            .find(|(b, e, _)| *b <= p.begin && p.end <= *e)
                            .map(|(_, _, pool)| pool.as_str())
                            .unwrap_or("*");
                        out.push(mesos::Resource {
                            role: reserved(pool),
                            ranges: Some(value::Ranges { range: vec![*p] }),
                            ..r.clone()
                        });
                    }
                }
                _ => out.push(r),
            }
        }
        t.resources = out;
    }
}

/// `job<id>.peer<n>`: a task id that names its job and peer; a retried
/// job's later attempts add `.a<k>`, since Mesos refuses to launch a task
/// under an id it already knows.
pub fn task_id(job: u64, peer: u32, attempt: u32) -> String {
    if attempt <= 1 {
        format!("job{job}.peer{peer}")
    } else {
        format!("job{job}.peer{peer}.a{attempt}")
    }
}

/// The job, peer and attempt a task id names.
pub fn parse_task_id(id: &str) -> Option<(u64, u32, u32)> {
    let (j, rest) = id.strip_prefix("job")?.split_once(".peer")?;
    let (p, a) = match rest.split_once(".a") {
        Some((p, a)) => (p, a.parse().ok().filter(|a| *a > 1)?),
        None => (rest, 1),
    };
    Some((j.parse().ok()?, p.parse().ok()?, a))
}

/// What a task state means for the peer. TASK_LOST, TASK_UNREACHABLE and
/// TASK_UNKNOWN mean the peer cannot be counted on: LOST.
pub fn peer_state(state: TaskState) -> PeerState {
    match state {
        TaskState::TaskStaging | TaskState::TaskStarting => PeerState::Starting,
        TaskState::TaskRunning | TaskState::TaskKilling => PeerState::Running,
        TaskState::TaskFinished => PeerState::Finished,
        TaskState::TaskFailed | TaskState::TaskError | TaskState::TaskDropped => PeerState::Failed,
        TaskState::TaskKilled => PeerState::Killed,
        TaskState::TaskLost
        | TaskState::TaskUnreachable
        | TaskState::TaskGone
        | TaskState::TaskGoneByOperator
        | TaskState::TaskUnknown => PeerState::Lost,
    }
}

fn scalar(name: &str, v: f64) -> mesos::Resource {
    mesos::Resource {
        name: name.into(),
        r#type: value::Type::Scalar as i32,
        scalar: Some(value::Scalar { value: v }),
        ..Default::default()
    }
}

/// The job's peer list as the agents fetch it into each sandbox.
pub const PEER_LIST_FILE: &str = "dispatcher-peers.yaml";

/// Writes `peer.yaml` in the sandbox, then runs the peer's command. The
/// peer's own part travels inside the command; the job's peer list does
/// too when `list_fetched` is false, else it is the fetched
/// [`PEER_LIST_FILE`] (one per job, cached by each agent's fetcher), so an
/// ACCEPT carries each peer's address once, not once per peer.
pub fn shell_command(spec: &PeerSpec, list_fetched: bool) -> String {
    let inline = if list_fetched {
        spec.config_head.clone()
    } else {
        spec.config()
    };
    let mut fence = String::from("DISPATCHER_PEER_CONFIG");
    while inline.lines().any(|l| l == fence) {
        fence.push('_');
    }
    let append = if list_fetched {
        format!("cat {PEER_LIST_FILE} >> {CONFIG_FILE} || exit 1\n")
    } else {
        String::new()
    };
    format!(
        "cat > {CONFIG_FILE} <<'{fence}'\n{inline}{fence}\n{append}{}",
        spec.command
    )
}

/// One peer as a Mesos task: its cpus, its share of memory, exactly its
/// port; the binary fetched (executable, cacheable) from the dispatcher, and
/// the job's peer list too when it is stored (`peers_url`); the peer
/// contract's environment; labels naming job and peer; Docker when the role
/// has an image.
#[allow(clippy::too_many_arguments)]
pub fn task_info(
    job: u64,
    attempt: u32,
    spec: &PeerSpec,
    role: &Role,
    agent_id: &str,
    binary_url: &str,
    binary: &str,
    peers_url: Option<&str>,
    kill_grace: std::time::Duration,
) -> mesos::TaskInfo {
    let mut resources = vec![scalar("cpus", spec.cpus_milli as f64 / 1000.0)];
    if spec.mem_mb > 0 {
        resources.push(scalar("mem", spec.mem_mb as f64));
    }
    if spec.gpus > 0 {
        resources.push(scalar("gpus", spec.gpus as f64));
    }
    resources.push(mesos::Resource {
        name: "ports".into(),
        r#type: value::Type::Ranges as i32,
        ranges: Some(value::Ranges {
            range: vec![value::Range {
                begin: spec.port as u64,
                end: spec.port as u64,
            }],
        }),
        ..Default::default()
    });
    let mut uris = vec![command_info::Uri {
        value: binary_url.into(),
        executable: Some(true),
        extract: Some(false),
        cache: Some(true),
        output_file: Some(binary.into()),
    }];
    if let Some(url) = peers_url {
        uris.push(command_info::Uri {
            value: url.into(),
            executable: Some(false),
            extract: Some(false),
            cache: Some(true),
            output_file: Some(PEER_LIST_FILE.into()),
        });
    }
    let variables = spec
        .env
        .iter()
        .map(|(k, v)| environment::Variable {
            name: k.clone(),
            value: Some(v.clone()),
            r#type: Some(environment::variable::Type::Value as i32),
        })
        .collect();
    let command = mesos::CommandInfo {
        uris,
        environment: Some(mesos::Environment { variables }),
        value: Some(shell_command(spec, peers_url.is_some())),
        shell: Some(true),
        ..Default::default()
    };
    let container = role.image.as_ref().map(|image| mesos::ContainerInfo {
        r#type: container_info::Type::Docker as i32,
        volumes: role.volumes.iter().map(volume).collect(),
        docker: Some(container_info::DockerInfo {
            image: image.clone(),
            network: Some(container_info::docker_info::Network::Host as i32),
            privileged: Some(role.privileged),
            ..Default::default()
        }),
        hostname: None,
    });
    let label = |k: &str, v: String| mesos::Label {
        key: k.into(),
        value: Some(v),
    };
    let id = task_id(job, spec.index, attempt);
    mesos::TaskInfo {
        name: id.clone(),
        task_id: mesos::TaskId { value: id },
        agent_id: mesos::AgentId {
            value: agent_id.into(),
        },
        resources,
        command: Some(command),
        container,
        // The executor's SIGTERM → SIGKILL grace, as the local backend's.
        kill_policy: Some(mesos::KillPolicy {
            grace_period: Some(mesos::DurationInfo {
                nanoseconds: kill_grace.as_nanos() as i64,
            }),
        }),
        labels: Some(mesos::Labels {
            labels: vec![
                label("dispatcher.job", job.to_string()),
                label("dispatcher.peer", spec.index.to_string()),
                label("dispatcher.role", spec.role_name.clone()),
                label("dispatcher.attempt", attempt.to_string()),
            ],
        }),
        ..Default::default()
    }
}

fn volume(v: &Volume) -> mesos::Volume {
    mesos::Volume {
        container_path: v.container.clone(),
        host_path: Some(v.host.clone()),
        mode: mesos::volume::Mode::Rw as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::model::JobOptions;
    use app::peer::{build_peers, JobContext};
    use app::placement::place;
    use app::RoleFile;
    use proto::Message;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/mesos");

    #[test]
    fn the_recorded_offer_becomes_a_placement_offer() {
        let o =
            mesos::Offer::decode(&std::fs::read(format!("{FIXTURES}/offer-first.pb")).unwrap()[..])
                .unwrap();
        let offer = offer_from(&o, "*");
        assert_eq!((offer.cpus_milli, offer.mem_mb), (4000, 4096));
        assert_eq!(
            offer.ports,
            vec![PortRange {
                begin: 31000,
                end: 32000
            }]
        );
        assert_eq!(offer.host, "127.0.0.1");
        assert_eq!(offer.address, "127.0.0.1");
        assert!(offer.id.ends_with("-O0"));
    }

    fn scenario_offer(name: &str) -> mesos::Offer {
        let path = format!("{FIXTURES}/scenarios/reserved-resources/{name}");
        mesos::Offer::decode(&std::fs::read(path).unwrap()[..]).unwrap()
    }

    #[test]
    fn offers_count_what_the_role_may_use_in_all_three_recorded_formats() {
        // The agent: cpus(dispatch):2; mem(dispatch):1024; cpus:2; mem:2048.
        for name in [
            "multirole-offer.pb",
            "singlerole-offer.pb",
            "refinement-offer.pb",
        ] {
            let o = scenario_offer(name);
            let mine = offer_from(&o, "dispatch");
            assert_eq!((mine.cpus_milli, mine.mem_mb), (4000, 3072), "{name}");
            // Another role may use only the unreserved part.
            let other = offer_from(&o, "other");
            assert_eq!((other.cpus_milli, other.mem_mb), (2000, 2048), "{name}");
            assert_eq!(other.ports[0].begin, 31000, "{name}");
        }
    }

    fn plain_task(cpus: f64, mem: f64, port: u64) -> mesos::TaskInfo {
        mesos::TaskInfo {
            resources: vec![
                scalar("cpus", cpus),
                scalar("mem", mem),
                mesos::Resource {
                    name: "ports".into(),
                    r#type: value::Type::Ranges as i32,
                    ranges: Some(value::Ranges {
                        range: vec![value::Range {
                            begin: port,
                            end: port,
                        }],
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    /// (pool, name, amount) of each scalar resource.
    fn asked(t: &mesos::TaskInfo) -> Vec<(String, String, f64)> {
        t.resources
            .iter()
            .filter_map(|r| {
                let v = r.scalar.as_ref()?.value;
                Some((pool_of(r).to_string(), r.name.clone(), v))
            })
            .collect()
    }

    #[test]
    fn launches_take_the_reservation_first_then_unreserved_and_never_more_of_a_pool() {
        let o = scenario_offer("multirole-offer.pb");
        // 1.5 + 1.5 cpus: the first from the 2 reserved, the second from
        // what is left of them (0.5) and then the unreserved pool.
        let mut tasks = vec![
            plain_task(1.5, 512.0, 31000),
            plain_task(1.5, 1024.0, 31001),
        ];
        take_from_pools(&o, "dispatch", &mut tasks);
        let s = |p: &str, n: &str, v: f64| (p.to_string(), n.to_string(), v);
        assert_eq!(
            asked(&tasks[0]),
            [s("dispatch", "cpus", 1.5), s("dispatch", "mem", 512.0)]
        );
        assert_eq!(
            asked(&tasks[1]),
            [
                s("dispatch", "cpus", 0.5),
                s("*", "cpus", 1.0),
                s("dispatch", "mem", 512.0),
                s("*", "mem", 512.0)
            ]
        );
        // Reserved resources are asked for in the format every framework
        // may use (`role`), and with no allocation_info (the master adds it).
        let r = &tasks[0].resources[0];
        assert_eq!(r.role.as_deref(), Some("dispatch"));
        assert!(r.allocation_info.is_none() && r.reservations.is_empty());
        // Ports come from the pool that holds them (here unreserved).
        let ports: Vec<_> = tasks[1]
            .resources
            .iter()
            .filter(|r| r.name == "ports")
            .collect();
        assert_eq!(ports.len(), 1);
        assert_eq!(pool_of(ports[0]), "*");
        // A role with no reservation asks for unreserved resources only.
        let mut t = vec![plain_task(1.0, 64.0, 31002)];
        take_from_pools(&o, "*", &mut t);
        assert!(asked(&t[0]).iter().all(|(p, _, _)| p == "*"));
    }

    #[test]
    fn task_ids_round_trip_and_states_map() {
        assert_eq!(parse_task_id(&task_id(12, 3, 1)), Some((12, 3, 1)));
        assert_eq!(task_id(12, 3, 2), "job12.peer3.a2");
        assert_eq!(parse_task_id(&task_id(12, 3, 2)), Some((12, 3, 2)));
        assert_eq!(
            parse_task_id("job12.peer3.a1"),
            None,
            "attempt 1 has no suffix"
        );
        assert_eq!(parse_task_id("job12.peer3.ax"), None);
        assert_eq!(parse_task_id("ghost.task"), None);
        assert_eq!(peer_state(TaskState::TaskKilling), PeerState::Running);
        assert_eq!(peer_state(TaskState::TaskUnreachable), PeerState::Lost);
        assert_eq!(peer_state(TaskState::TaskDropped), PeerState::Failed);
        assert_eq!(peer_state(TaskState::TaskGone), PeerState::Lost);
    }

    #[test]
    fn a_peer_becomes_a_task_with_exactly_its_resources_config_and_labels() {
        let (rf, _) = RoleFile::parse("name: w\npeers: 2\ncpu: 0.5\nmem: 1\nimage: debian:12\nprivileged: true\nvolumes:\n  - {host: /data, container: /data}\n").unwrap();
        let offer = Offer {
            id: "o".into(),
            host: "h".into(),
            address: "10.0.0.1".into(),
            cpus_milli: 4000,
            mem_mb: 4096,
            gpus: 0,
            ports: vec![PortRange {
                begin: 31000,
                end: 31010,
            }],
        };
        let placement = place(rf.roles(), &[offer]).unwrap();
        let opts = JobOptions::default();
        let specs = build_peers(
            &JobContext {
                job_id: 7,
                binary: "prog",
                options: &opts,
                attempt: 1,
            },
            &rf,
            &placement,
            &|_: &str, _: &str| vec![],
        );
        let t = task_info(
            7,
            1,
            &specs[1],
            &rf.roles()[0],
            "agent-1",
            "http://d:5000/api/blobs/abc",
            "prog",
            Some("http://d:5000/api/blobs/def"),
            std::time::Duration::from_secs(5),
        );
        assert_eq!(t.task_id.value, "job7.peer1");
        let grace = t
            .kill_policy
            .as_ref()
            .unwrap()
            .grace_period
            .as_ref()
            .unwrap();
        assert_eq!(grace.nanoseconds, 5_000_000_000);
        let cpus = t
            .resources
            .iter()
            .find(|r| r.name == "cpus")
            .unwrap()
            .scalar
            .as_ref()
            .unwrap()
            .value;
        assert_eq!(cpus, 0.5);
        let mem = t
            .resources
            .iter()
            .find(|r| r.name == "mem")
            .unwrap()
            .scalar
            .as_ref()
            .unwrap()
            .value;
        assert_eq!(mem, 512.0, "half of the host group's 1 GB");
        let ports = &t
            .resources
            .iter()
            .find(|r| r.name == "ports")
            .unwrap()
            .ranges
            .as_ref()
            .unwrap()
            .range[0];
        assert_eq!((ports.begin, ports.end), (31001, 31001));
        let cmd = t.command.as_ref().unwrap();
        assert_eq!(cmd.uris[0].executable, Some(true));
        assert_eq!(cmd.uris[0].output_file.as_deref(), Some("prog"));
        let value = cmd.value.as_deref().unwrap();
        assert!(
            value.starts_with(
                "cat > peer.yaml <<'DISPATCHER_PEER_CONFIG'\nme:\n- 10.0.0.1\n- 31001\n"
            ),
            "{value}"
        );
        assert!(
            value.ends_with("DISPATCHER_PEER_CONFIG\ncat dispatcher-peers.yaml >> peer.yaml || exit 1\n./prog -p peer.yaml"),
            "{value}"
        );
        // The list is fetched once per agent, not carried by every task.
        assert!(!value.contains("peers:"), "{value}");
        assert_eq!(cmd.uris[1].value, "http://d:5000/api/blobs/def");
        assert_eq!(
            cmd.uris[1].output_file.as_deref(),
            Some("dispatcher-peers.yaml")
        );
        assert_eq!(
            (cmd.uris[1].cache, cmd.uris[1].executable),
            (Some(true), Some(false))
        );
        // Without a stored list, the whole config travels in the command.
        let inline = shell_command(&specs[1], false);
        assert!(
            inline.contains("peers:\n- addr:\n  - 10.0.0.1\n  - 31000\n"),
            "{inline}"
        );
        assert!(!inline.contains("dispatcher-peers.yaml"), "{inline}");
        let env = &cmd.environment.as_ref().unwrap().variables;
        assert!(env
            .iter()
            .any(|v| v.name == "DISPATCHER_PORT" && v.value.as_deref() == Some("31001")));
        let docker = t.container.as_ref().unwrap().docker.as_ref().unwrap();
        assert_eq!(
            (docker.image.as_str(), docker.privileged),
            ("debian:12", Some(true))
        );
        assert_eq!(
            docker.network,
            Some(container_info::docker_info::Network::Host as i32)
        );
        assert_eq!(
            t.container.as_ref().unwrap().volumes[0]
                .host_path
                .as_deref(),
            Some("/data")
        );
        let labels: Vec<_> = t
            .labels
            .as_ref()
            .unwrap()
            .labels
            .iter()
            .map(|l| (l.key.as_str(), l.value.as_deref().unwrap()))
            .collect();
        assert_eq!(
            labels,
            [
                ("dispatcher.job", "7"),
                ("dispatcher.peer", "1"),
                ("dispatcher.role", "w"),
                ("dispatcher.attempt", "1")
            ]
        );
        // It survives the wire.
        let bytes = t.encode_to_vec();
        assert_eq!(mesos::TaskInfo::decode(&bytes[..]).unwrap(), t);
    }
}
