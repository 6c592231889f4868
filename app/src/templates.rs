//! Role-file starting points offered by the dashboard's editor. Both must
//! parse (a test checks), so what a user starts from is never wrong.

/// A small commented example: two roles, four peers.
pub const SAMPLE: &str = r#"# A role file: one YAML document per role, separated by ---.
# Each role is a group of peers with the same settings.
---
name: leader
peers: 1
cpu: 0.25
k3_globals:
  role: leader
  master: auto      # becomes [address, port] of the job's first peer
---
name: workers
peers: 3
cpu: 0.25
mem: some           # per host: all, some, or a number of GB
k3_globals:
  role: worker
  master: auto
"#;

/// Every field, with its default or an example, commented.
pub const REFERENCE: &str = r#"# Every role-file field (see docs/role-files.md).
---
name: role 1              # required, unique in the file
peers: 2                  # required: how many peers this role runs
# peers_per_host: 2       # exactly this many peers on each host used
# hostmask: "node[0-9]+"  # only hosts whose name matches (regex)
cpu: 0.5                  # cores per peer (default 1)
mem: some                 # per host: all (default), some, or GB (e.g. 2)
# privileged: false       # Docker only
k3_globals:               # variables every peer gets
  role: rows
  master: auto            # auto = [address, port] of the first peer
# peer_globals:           # one mapping per peer, in order, on top of k3_globals
#   - {role: master}
# envars:                 # environment for the peers
#   - {name: LD_PRELOAD, value: /usr/local/lib/libjemalloc.so}
# volumes:                # Docker mounts
#   - {host: /local, container: /local}
# k3_data:                # input files: replicate, global or pinned
#   - {var: dataFiles, path: /local/data, policy: global}
# k3_seq_files: []        # passed through to the peer config
# k3_outpaths: []         # passed through to the peer config
# image: debian:12        # run in this Docker image (Mesos backend)
# command: "{binary} -p {config}"   # placeholders: binary config index peers host port job role
# time_limit: 1h          # stop the job after this long (s, m, h, d)
# gpus: 1                 # whole GPUs per peer (Mesos backend)
# retries: 2              # attempts after the first when the job fails
# retry_on: [lost]        # lost (infrastructure, default), failed (the program), or both
# retry_backoff: 10s      # wait before the 2nd attempt; doubles after
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RoleFile;

    #[test]
    fn the_templates_parse_without_warnings() {
        for (name, t) in [("sample", SAMPLE), ("reference", REFERENCE)] {
            let (rf, warnings) = RoleFile::parse(t).unwrap_or_else(|d| panic!("{name}: {d:?}"));
            assert!(warnings.is_empty(), "{name}: {warnings:?}");
            assert!(rf.total_peers() > 0);
        }
    }
}
