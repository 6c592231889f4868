//! Mesos values as the dispatcher sees them: offers as placement sees
//! them, peers as TaskInfos, task ids, and task states as peer states.

use app::model::PeerState;
use app::peer::{PeerSpec, CONFIG_FILE};
use app::placement::{Offer, PortRange};
use app::role::{Role, Volume};
use proto::mesos::{self, command_info, container_info, environment, value, TaskState};

/// An offer as placement sees it: unreserved cpus, mem and ports, and the
/// address peers should use (the agent's IP when the offer has its URL).
pub fn offer_from(o: &mesos::Offer) -> Offer {
    let (mut cpus, mut mem, mut ports) = (0.0f64, 0.0f64, Vec::new());
    for r in &o.resources {
        match (r.name.as_str(), &r.scalar, &r.ranges) {
            ("cpus", Some(s), _) => cpus += s.value,
            ("mem", Some(s), _) => mem += s.value,
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
    Offer {
        id: o.id.value.clone(),
        host: o.hostname.clone(),
        address,
        cpus_milli: (cpus * 1000.0).round() as u64,
        mem_mb: mem.floor() as u64,
        ports,
    }
}

/// `job<id>.peer<n>`: a task id that names its job and peer.
pub fn task_id(job: u64, peer: u32) -> String {
    format!("job{job}.peer{peer}")
}

pub fn parse_task_id(id: &str) -> Option<(u64, u32)> {
    let (j, p) = id.strip_prefix("job")?.split_once(".peer")?;
    Some((j.parse().ok()?, p.parse().ok()?))
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

/// Writes `peer.yaml` in the sandbox, then runs the peer's command. The
/// config travels inside the command, so the task needs nothing but the
/// binary from the dispatcher.
pub fn shell_command(spec: &PeerSpec) -> String {
    let mut fence = String::from("DISPATCHER_PEER_CONFIG");
    while spec.config.lines().any(|l| l == fence) {
        fence.push('_');
    }
    format!(
        "cat > {CONFIG_FILE} <<'{fence}'\n{}{fence}\n{}",
        spec.config, spec.command
    )
}

/// One peer as a Mesos task: its cpus, its share of memory, exactly its
/// port; the binary fetched (executable, cacheable) from the dispatcher; the
/// peer contract's environment; labels naming job and peer; Docker when the
/// role has an image.
pub fn task_info(
    job: u64,
    spec: &PeerSpec,
    role: &Role,
    agent_id: &str,
    binary_url: &str,
    binary: &str,
) -> mesos::TaskInfo {
    let mut resources = vec![scalar("cpus", spec.cpus_milli as f64 / 1000.0)];
    if spec.mem_mb > 0 {
        resources.push(scalar("mem", spec.mem_mb as f64));
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
    let uri = command_info::Uri {
        value: binary_url.into(),
        executable: Some(true),
        extract: Some(false),
        cache: Some(true),
        output_file: Some(binary.into()),
    };
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
        uris: vec![uri],
        environment: Some(mesos::Environment { variables }),
        value: Some(shell_command(spec)),
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
    let id = task_id(job, spec.index);
    mesos::TaskInfo {
        name: id.clone(),
        task_id: mesos::TaskId { value: id },
        agent_id: mesos::AgentId {
            value: agent_id.into(),
        },
        resources,
        command: Some(command),
        container,
        labels: Some(mesos::Labels {
            labels: vec![
                label("dispatcher.job", job.to_string()),
                label("dispatcher.peer", spec.index.to_string()),
                label("dispatcher.role", spec.role_name.clone()),
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
        let offer = offer_from(&o);
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

    #[test]
    fn task_ids_round_trip_and_states_map() {
        assert_eq!(parse_task_id(&task_id(12, 3)), Some((12, 3)));
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
            },
            &rf,
            &placement,
            &|_: &str, _: &str| vec![],
        );
        let t = task_info(
            7,
            &specs[1],
            &rf.roles()[0],
            "agent-1",
            "http://d:5000/api/blobs/abc",
            "prog",
        );
        assert_eq!(t.task_id.value, "job7.peer1");
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
            value.ends_with("DISPATCHER_PEER_CONFIG\n./prog -p peer.yaml"),
            "{value}"
        );
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
                ("dispatcher.role", "w")
            ]
        );
        // It survives the wire.
        let bytes = t.encode_to_vec();
        assert_eq!(mesos::TaskInfo::decode(&bytes[..]).unwrap(), t);
    }
}
