//! Role files end to end through the public parser: K3's own files, and
//! every kind of mistake reported with its line, column and quoted value.

use app::{check, RoleFile, Severity};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/k3-roles"
);

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}"))
        .unwrap_or_else(|e| panic!("{FIXTURES}/{name}: {e}"))
}

#[test]
fn k3_template_is_accepted_with_its_odd_mem_as_a_warning() {
    let (rf, warnings) = RoleFile::parse(&fixture("role_file_template.yaml"))
        .expect("K3's template must be accepted");
    let role = &rf.roles()[0];
    assert_eq!(role.name, "role 1");
    assert_eq!(role.peers.get(), 3);
    assert_eq!(role.peers_per_host.unwrap().get(), 2);
    assert_eq!(role.cpu.millis(), 100);
    assert_eq!(role.mem, app::role::Mem::All);
    assert_eq!(role.peer_globals.len(), 3);
    assert_eq!(role.k3_data.len(), 7);
    let mem = warnings
        .iter()
        .find(|w| w.path == "roles[0].mem")
        .expect("a warning for mem: \".*\"");
    assert_eq!(
        (mem.line, mem.column, mem.severity),
        (46, 6, Severity::Warning)
    );
    assert!(mem.message.contains("\".*\""), "{}", mem.message);
}

#[test]
fn k3_sample_is_accepted() {
    let (rf, _) = RoleFile::parse(&fixture("sample.yaml")).expect("K3's sample must be accepted");
    assert_eq!(rf.total_peers(), 2);
    assert_eq!(rf.roles()[0].k3_globals["master"], "auto");
    assert_eq!(rf.roles()[0].envars[0].name, "LD_PRELOAD");
}

/// Each case: a role file, the line and column of the expected error, and a
/// fragment its message must contain (usually the bad value, quoted).
const MISTAKES: &[(&str, &str, (u32, u32), &str)] = &[
    ("missing name", "peers: 2\n", (1, 1), "missing required field `name`"),
    ("missing peers", "name: a\n", (1, 1), "missing required field `peers`"),
    ("zero peers", "name: a\npeers: 0\n", (2, 8), "at least 1, found 0"),
    ("negative peers", "name: a\npeers: -3\n", (2, 8), "found -3"),
    ("peers not a number", "name: a\npeers: many\n", (2, 8), "\"many\""),
    ("fractional peers", "name: a\npeers: 2.5\n", (2, 8), "\"2.5\""),
    ("too many peers", "name: a\npeers: 1000000\n", (2, 8), "at most 100000"),
    ("zero peers_per_host", "name: a\npeers: 2\npeers_per_host: 0\n", (3, 17), "at least 1"),
    ("bad hostmask", "name: a\npeers: 2\nhostmask: \"qp[\"\n", (3, 11), "\"qp[\""),
    ("zero cpu", "name: a\npeers: 2\ncpu: 0\n", (3, 6), "more than 0"),
    ("cpu a word", "name: a\npeers: 2\ncpu: lots\n", (3, 6), "\"lots\""),
    ("fractional gpus", "name: a\npeers: 2\ngpus: 1.5\n", (3, 7), "whole number (Mesos allocates whole GPUs), found \"1.5\""),
    ("negative gpus", "name: a\npeers: 2\ngpus: -1\n", (3, 7), "found -1"),
    ("too many gpus", "name: a\npeers: 2\ngpus: 65\n", (3, 7), "at most 64"),
    ("gpus a word", "name: a\npeers: 2\ngpus: all\n", (3, 7), "\"all\""),
    ("cpu too large", "name: a\npeers: 2\ncpu: 5000\n", (3, 6), "at most 1024"),
    ("mem a word", "name: a\npeers: 2\nmem: plenty\n", (3, 6), "\"plenty\""),
    ("mem negative", "name: a\npeers: 2\nmem: -4\n", (3, 6), "more than 0"),
    ("privileged not bool", "name: a\npeers: 2\nprivileged: maybe\n", (3, 13), "\"maybe\""),
    ("globals a list", "name: a\npeers: 2\nk3_globals: [1, 2]\n", (3, 13), "expected a mapping"),
    ("bad variable name", "name: a\npeers: 2\nk3_globals:\n  9lives: 1\n", (4, 3), "\"9lives\""),
    ("reserved variable", "name: a\npeers: 2\nk3_globals:\n  me: 1\n", (4, 3), "reserved"),
    ("too many peer_globals", "name: a\npeers: 1\npeer_globals:\n  - {x: 1}\n  - {x: 2}\n", (4, 3), "2 peer_globals entries but only 1 peers"),
    ("envar without value", "name: a\npeers: 1\nenvars:\n  - {name: X}\n", (4, 5), "missing `value`"),
    ("bad envar name", "name: a\npeers: 1\nenvars:\n  - {name: \"A-B\", value: 1}\n", (4, 12), "\"A-B\""),
    ("reserved envar", "name: a\npeers: 1\nenvars:\n  - {name: DISPATCHER_JOB_ID, value: 1}\n", (4, 12), "reserved"),
    ("relative volume", "name: a\npeers: 1\nvolumes:\n  - {host: local, container: /local}\n", (4, 12), "\"local\""),
    ("bad data policy", "name: a\npeers: 1\nk3_data:\n  - {var: d, path: /x, policy: scatter}\n", (4, 32), "\"scatter\""),
    ("duplicate data var", "name: a\npeers: 1\nk3_data:\n  - {var: d, path: /x, policy: global}\n  - {var: d, path: /y, policy: global}\n", (5, 11), "declared twice"),
    ("duplicate role name", "name: a\npeers: 1\n---\nname: a\npeers: 1\n", (4, 7), "used twice"),
    ("duplicate key", "name: a\npeers: 1\npeers: 2\n", (3, 1), "duplicate key \"peers\""),
    ("role not a mapping", "- a\n- b\n", (1, 1), "expected a role"),
    ("yaml syntax", "name: a\npeers: [1, 2\n", (3, 1), "YAML syntax error"),
    ("empty file", "# nothing\n", (1, 1), "no roles"),
    ("bad command placeholder", "name: a\npeers: 1\ncommand: \"{binary} --x {prot}\"\n", (3, 24), "{prot}"),
    ("unclosed command brace", "name: a\npeers: 1\ncommand: run {binary\n", (3, 14), "unclosed"),
    ("bad time limit", "name: a\npeers: 1\ntime_limit: 10y\n", (3, 13), "\"10y\""),
    ("zero time limit", "name: a\npeers: 1\ntime_limit: 0\n", (3, 13), "more than zero"),
    ("negative retries", "name: a\npeers: 1\nretries: -1\n", (3, 10), "0 or more (attempts after the first), found -1"),
    ("too many retries", "name: a\npeers: 1\nretries: 50\n", (3, 10), "at most 20, found 50"),
    ("bad retry_on", "name: a\npeers: 1\nretries: 1\nretry_on: sometimes\n", (4, 11), "\"sometimes\" is not failed, lost or both"),
    ("bad retry_on item", "name: a\npeers: 1\nretries: 1\nretry_on: [lost, oops]\n", (4, 11), "\"oops\""),
    ("bad retry_backoff", "name: a\npeers: 1\nretries: 1\nretry_backoff: soon\n", (4, 16), "\"soon\""),
    ("image with spaces", "name: a\npeers: 1\nimage: \"my image\"\n", (3, 8), "\"my image\""),
    ("image path traversal", "name: a\npeers: 1\nimage: ../../etc/passwd\n", (3, 8), "\"../../etc/passwd\""),
    ("image upper-case path", "name: a\npeers: 1\nimage: Ubuntu\n", (3, 8), "not a Docker image reference"),
    ("image bad digest", "name: a\npeers: 1\nimage: ubuntu@sha256:xyz\n", (3, 8), "not a Docker image reference"),
    ("nul in command", "name: a\npeers: 1\ncommand: \"ls\\0 -l\"\n", (3, 10), "U+0000"),
    ("raw nul byte", "name: a\npeers: 1\ncommand: ls\0\n", (3, 12), "U+0000"),
    ("nul in volume", "name: a\npeers: 1\nvolumes:\n  - {host: \"/x\\0y\", container: /y}\n", (4, 12), "U+0000"),
    ("rtl override in name", "name: \"ab\\u202Ecd\"\npeers: 1\n", (1, 7), "U+202E"),
    ("unknown yaml version", "%YAML 9.9\n---\nname: a\npeers: 1\n", (1, 1), "%YAML 9.9"),
    ("python tag", "name: !!python/object/apply:os.system [ls]\npeers: 1\n", (1, 39), "!!python/object/apply:os.system"),
    ("alias bomb", "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n", (5, 29), "too large: aliases copy more than 100000"),
    ("bad merge value", "name: a\npeers: 1\n<<: 3\n", (3, 5), "merge key"),
    ("data path relative", "name: a\npeers: 1\nk3_data:\n  - {var: d, path: data, policy: global}\n", (4, 20), "\"data\""),
];

#[test]
fn every_kind_of_mistake_is_reported_where_it_is() {
    assert!(MISTAKES.len() >= 20);
    let mut failures = Vec::new();
    for (what, src, (line, column), fragment) in MISTAKES {
        let report = check(src);
        let hit = report
            .diagnostics
            .iter()
            .find(|d| d.severity == Severity::Error && d.message.contains(fragment));
        match hit {
            Some(d) if (d.line, d.column) == (*line, *column) => {
                assert!(
                    report.role_file.is_none(),
                    "{what}: a file with an error must not parse"
                );
            }
            Some(d) => failures.push(format!(
                "{what}: at {}:{} not {line}:{column}: {d}",
                d.line, d.column
            )),
            None => failures.push(format!(
                "{what}: no error containing {fragment:?} in {:#?}",
                report.diagnostics
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn k3_files_with_merge_keys_are_accepted() {
    let src = "\
defaults: &defaults
  peers: 2
  cpu: 0.5
  k3_globals: {master: auto}
---
<<: *defaults
name: a
peers: 3
---
name: b
<<: *defaults
";
    // Anchors are per document in YAML, so the second role cannot use
    // the first document's anchor.
    let report = check(src);
    assert!(
        report
            .diagnostics
            .iter()
            .any(|d| d.message.contains("unknown anchor") && d.line == 6),
        "{:#?}",
        report.diagnostics
    );
    let src = "\
name: a
x-defaults: &d {peers: 2, cpu: 0.5, k3_globals: {master: auto}}
<<: *d
peers: 3
";
    let (rf, warnings) = RoleFile::parse(src).unwrap();
    let r = &rf.roles()[0];
    assert_eq!(
        r.peers.get(),
        3,
        "a key in the mapping wins over the merged one"
    );
    assert_eq!(r.cpu.millis(), 500);
    assert_eq!(r.k3_globals["master"], "auto");
    assert!(
        warnings.iter().any(|w| w.message.contains("x-defaults")),
        "{warnings:#?}"
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let report = check("name: a\npeers: 0\ncpu: -1\nmem: lots\n---\npeers: 2\n");
    let errors: Vec<_> = report.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 4, "{:#?}", report.diagnostics);
    assert_eq!(
        errors.iter().map(|d| d.line).collect::<Vec<_>>(),
        vec![2, 3, 4, 6]
    );
}

#[test]
fn unknown_fields_are_warnings_with_a_suggestion() {
    let (rf, warnings) = RoleFile::parse("name: a\npeers: 1\npeer_per_host: 2\nfoo: 1\n").unwrap();
    assert_eq!(rf.total_peers(), 1);
    let warnings: Vec<_> = warnings
        .into_iter()
        .filter(|w| w.message.contains("unknown field"))
        .collect();
    assert_eq!(warnings.len(), 2);
    assert!(
        warnings[0]
            .message
            .contains("did you mean `peers_per_host`"),
        "{}",
        warnings[0]
    );
    assert_eq!((warnings[0].line, warnings[0].column), (3, 1));
    assert!(warnings[1].message.contains("\"foo\""));
}

#[test]
fn retries_parse_and_the_job_takes_the_most_any_role_asks() {
    let (rf, w) = RoleFile::parse(
        "name: a\npeers: 1\nretries: 2\nretry_on: failed\nretry_backoff: 30s\n---\nname: b\npeers: 1\nretries: 3\nretry_on: [lost]\n",
    )
    .unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(rf.retries(), 3);
    assert_eq!(rf.retry_on().to_string(), "failed,lost");
    assert_eq!(rf.retry_backoff_secs(), 30);
    let (rf, _) = RoleFile::parse("name: a\npeers: 1\n").unwrap();
    assert_eq!(
        (
            rf.retries(),
            rf.retry_on().to_string(),
            rf.retry_backoff_secs()
        ),
        (0, "lost".to_string(), app::role::DEFAULT_RETRY_BACKOFF_SECS)
    );
    let (_, w) = RoleFile::parse("name: a\npeers: 1\nretry_on: both\n").unwrap();
    assert!(w[0].message.contains("no effect without retries"), "{w:?}");
    assert_eq!((w[0].line, w[0].column), (3, 11));
}

#[test]
fn our_additions_parse() {
    let (rf, _) = RoleFile::parse("name: a\npeers: 2\nimage: debian:12\ncommand: \"{binary} -p {config} --port {port}\"\ntime_limit: 1h30m\n").unwrap();
    let r = &rf.roles()[0];
    assert_eq!(r.image.as_deref(), Some("debian:12"));
    assert_eq!(r.time_limit.unwrap().secs(), 5400);
    assert!(rf.uses_docker());
    assert_eq!(r.gpus, 0, "no GPU unless asked");
    let (rf, w) =
        RoleFile::parse("name: train\npeers: 2\ngpus: 2\n---\nname: ps\npeers: 1\ngpus: 0\n")
            .unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!((rf.roles()[0].gpus, rf.roles()[1].gpus), (2, 0));
}
