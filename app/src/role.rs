//! Role files: K3's YAML format, parsed into types that exist only when valid.
//!
//! A role file is a stream of YAML documents; each document is one role. The
//! parser reports every problem it finds in one pass (errors and warnings,
//! each with line, column, field path and the offending value quoted) and
//! yields a [`RoleFile`] only when there is no error. The field reference is
//! `docs/role-files.md`.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::num::NonZeroU32;

use serde::Serialize;

use crate::diag::Diagnostic;
use crate::yaml::{parse_documents, Node, Pos, Scalar};

/// Upper bounds that keep a typo from asking for absurd resources.
pub const MAX_PEERS: u32 = 100_000;
pub const MAX_CPU: f64 = 1024.0;
/// GPUs one peer may ask for (Mesos counts GPUs in whole devices).
pub const MAX_GPUS: u32 = 64;
pub const MAX_MEM_GB: f64 = 1_048_576.0;
pub const MAX_TIME_LIMIT_SECS: u64 = 366 * 24 * 3600;
/// The longest first wait between attempts.
pub const MAX_RETRY_BACKOFF_SECS: u64 = 3600;
/// Attempts after the first a job may ask for.
pub const MAX_RETRIES: u32 = 20;
/// The first retry's wait when no role sets `retry_backoff`.
pub const DEFAULT_RETRY_BACKOFF_SECS: u64 = 10;

/// Names a peer config reserves for itself; globals may not use them.
pub const RESERVED_VARS: [&str; 2] = ["me", "peers"];

/// Checks a Docker image reference against the grammar of
/// distribution/reference: `[domain[:port]/]path[:tag][@digest]`, lower-case
/// path components, at most 255 characters of name.
pub fn check_image(img: &str) -> Result<(), &'static str> {
    static RE: std::sync::OnceLock<regex_lite::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        let domain = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?";
        let component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
        let tag = r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?";
        let digest = r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?";
        regex_lite::Regex::new(&format!(
            "^(?P<name>{domain}{component}(?:/{component})*){tag}{digest}$"
        ))
        .expect("image regex")
    });
    if img.is_empty() {
        return Err("it is empty");
    }
    let caps = re
        .captures(img)
        .ok_or("it does not follow [registry/]name[:tag][@digest]")?;
    if caps["name"].len() > 255 {
        return Err("its name is longer than 255 characters");
    }
    Ok(())
}

/// A valid role file: at least one role, role names unique.
#[derive(Clone, Debug, Serialize)]
pub struct RoleFile {
    roles: Vec<Role>,
}

/// The outcome of checking a role file: the file when it has no error, and
/// every diagnostic (errors and warnings) sorted by position.
#[derive(Clone, Debug)]
pub struct Report {
    pub role_file: Option<RoleFile>,
    pub diagnostics: Vec<Diagnostic>,
}

impl RoleFile {
    /// Parses and validates; on success also returns the warnings.
    pub fn parse(src: &str) -> Result<(RoleFile, Vec<Diagnostic>), Vec<Diagnostic>> {
        let report = check(src);
        match report.role_file {
            Some(rf) => Ok((rf, report.diagnostics)),
            None => Err(report.diagnostics),
        }
    }

    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    pub fn total_peers(&self) -> u32 {
        self.roles.iter().map(|r| r.peers.get()).sum()
    }

    /// The tightest time limit of any role, if one is set.
    pub fn time_limit(&self) -> Option<TimeLimit> {
        self.roles
            .iter()
            .filter_map(|r| r.time_limit)
            .min_by_key(|t| t.secs())
    }

    /// Attempts after the first: the largest any role asks for.
    pub fn retries(&self) -> u32 {
        self.roles
            .iter()
            .filter_map(|r| r.retries)
            .max()
            .unwrap_or(0)
    }

    /// What is retried: every kind any role names (`lost` when none does).
    pub fn retry_on(&self) -> crate::model::RetryOn {
        let mut named = self.roles.iter().filter_map(|r| r.retry_on).peekable();
        if named.peek().is_none() {
            return crate::model::RetryOn::default();
        }
        named.fold(
            crate::model::RetryOn {
                failed: false,
                lost: false,
            },
            |a, b| crate::model::RetryOn {
                failed: a.failed || b.failed,
                lost: a.lost || b.lost,
            },
        )
    }

    /// The wait before the first retry (the longest any role asks for).
    pub fn retry_backoff_secs(&self) -> u64 {
        self.roles
            .iter()
            .filter_map(|r| r.retry_backoff)
            .map(TimeLimit::secs)
            .max()
            .unwrap_or(DEFAULT_RETRY_BACKOFF_SECS)
    }

    /// True when some role asks for a Docker image.
    pub fn uses_docker(&self) -> bool {
        self.roles.iter().any(|r| r.image.is_some())
    }
}

/// One role: a group of peers with the same settings.
#[derive(Clone, Debug, Serialize)]
pub struct Role {
    pub name: String,
    pub peers: NonZeroU32,
    pub peers_per_host: Option<NonZeroU32>,
    pub hostmask: Option<HostMask>,
    pub cpu: Cpu,
    pub mem: Mem,
    /// Whole GPUs per peer (0: none; such peers avoid GPU hosts).
    pub gpus: u32,
    pub privileged: bool,
    pub k3_globals: Vars,
    pub peer_globals: Vec<Vars>,
    pub envars: Vec<EnvVar>,
    pub volumes: Vec<Volume>,
    pub k3_data: Vec<DataSpec>,
    pub k3_seq_files: Option<serde_json::Value>,
    pub k3_outpaths: Option<serde_json::Value>,
    pub image: Option<String>,
    pub command: Option<CommandTemplate>,
    pub time_limit: Option<TimeLimit>,
    pub retries: Option<u32>,
    pub retry_on: Option<crate::model::RetryOn>,
    pub retry_backoff: Option<TimeLimit>,
    /// Where the role's document starts, for messages about the role as a whole.
    pub line: u32,
}

/// Variables as ordered key/value pairs; keys are valid identifiers.
pub type Vars = serde_json::Map<String, serde_json::Value>;

/// A compiled host filter. Regexes run in linear time (the `regex` crate), so
/// a hostile pattern cannot stall placement.
#[derive(Clone, Debug)]
pub struct HostMask {
    pattern: String,
    regex: regex_lite::Regex,
}

impl HostMask {
    pub fn new(pattern: &str) -> Result<HostMask, String> {
        // K3 used Python's re.match: anchored at the start only.
        let anchored = format!("^(?:{pattern})");
        regex_lite::RegexBuilder::new(&anchored)
            .size_limit(1 << 20)
            .build()
            .map(|regex| HostMask {
                pattern: pattern.to_string(),
                regex,
            })
            .map_err(|e| e.to_string())
    }

    pub fn matches(&self, host: &str) -> bool {
        self.regex.is_match(host)
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

impl Serialize for HostMask {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.pattern)
    }
}

/// CPU per peer in thousandths of a core (Mesos' own precision), never zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cpu(u32);

impl Cpu {
    pub const ONE: Cpu = Cpu(1000);

    pub fn millis(self) -> u32 {
        self.0
    }

    pub fn cores(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl Serialize for Cpu {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.cores())
    }
}

/// Memory per host for one role.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mem {
    /// All the memory the host offers (shared fairly between `all` roles).
    All,
    /// The smaller of 25% of the offer and 4 GB.
    Some,
    /// Exactly this many MB.
    Mb(u64),
}

#[derive(Clone, Debug, Serialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Volume {
    pub host: String,
    pub container: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Replicate,
    Global,
    Pinned,
}

#[derive(Clone, Debug, Serialize)]
pub struct DataSpec {
    pub var: String,
    pub path: String,
    pub policy: Policy,
}

/// A wall-clock limit for the whole job, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TimeLimit(u64);

impl TimeLimit {
    pub fn secs(self) -> u64 {
        self.0
    }

    /// `90`, `90s`, `10m`, `2h`, `1h30m`, `1d`.
    pub fn parse(text: &str) -> Result<TimeLimit, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty duration".into());
        }
        if let Ok(n) = t.parse::<u64>() {
            return TimeLimit::checked(n);
        }
        let mut total: u64 = 0;
        let mut num = String::new();
        for c in t.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86400,
                _ => return Err(format!("unknown unit {c:?} (use s, m, h or d)")),
            };
            let n: u64 = num
                .parse()
                .map_err(|_| format!("a number must come before {c:?}"))?;
            total = total.saturating_add(n.saturating_mul(unit));
            num.clear();
        }
        if !num.is_empty() {
            return Err("a trailing number needs a unit (s, m, h or d)".into());
        }
        TimeLimit::checked(total)
    }

    fn checked(secs: u64) -> Result<TimeLimit, String> {
        if secs == 0 {
            Err("must be more than zero seconds".into())
        } else if secs > MAX_TIME_LIMIT_SECS {
            Err("must be at most 366 days".into())
        } else {
            Ok(TimeLimit(secs))
        }
    }
}

impl fmt::Display for TimeLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

/// The values a command template can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placeholder {
    Binary,
    Config,
    Index,
    Peers,
    Host,
    Port,
    Job,
    Role,
}

impl Placeholder {
    const ALL: [(&'static str, Placeholder); 8] = [
        ("binary", Placeholder::Binary),
        ("config", Placeholder::Config),
        ("index", Placeholder::Index),
        ("peers", Placeholder::Peers),
        ("host", Placeholder::Host),
        ("port", Placeholder::Port),
        ("job", Placeholder::Job),
        ("role", Placeholder::Role),
    ];
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum TemplatePart {
    Lit(String),
    Var(Placeholder),
}

/// A parsed `command` template: literal shell text with `{placeholder}`s,
/// each replaced by a shell-quoted value when a peer starts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CommandTemplate {
    pub source: String,
    pub parts: Vec<TemplatePart>,
}

impl CommandTemplate {
    /// Parses a template; an error gives the byte offset of the problem.
    pub fn parse(source: &str) -> Result<CommandTemplate, (usize, String)> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let rest = &source[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err((i, "unclosed '{' (write '{{' for a literal brace)".into()));
                    };
                    let name = &rest[..end];
                    let Some((_, ph)) = Placeholder::ALL.iter().find(|(n, _)| *n == name) else {
                        let known: Vec<_> = Placeholder::ALL
                            .iter()
                            .map(|(n, _)| format!("{{{n}}}"))
                            .collect();
                        return Err((
                            i,
                            format!(
                                "unknown placeholder {{{name}}}; known: {}",
                                known.join(", ")
                            ),
                        ));
                    };
                    if !lit.is_empty() {
                        parts.push(TemplatePart::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(TemplatePart::Var(*ph));
                    for _ in 0..=name.chars().count() {
                        chars.next();
                    }
                }
                '}' => return Err((i, "unmatched '}' (write '}}' for a literal brace)".into())),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(TemplatePart::Lit(lit));
        }
        if parts.is_empty() || source.trim().is_empty() {
            return Err((0, "the command is empty".into()));
        }
        Ok(CommandTemplate {
            source: source.to_string(),
            parts,
        })
    }

    /// Renders the command, quoting each substituted value for `sh`.
    pub fn render(&self, value: impl Fn(Placeholder) -> String) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                TemplatePart::Lit(s) => out.push_str(s),
                TemplatePart::Var(ph) => out.push_str(&shell_quote(&value(*ph))),
            }
        }
        out
    }
}

/// Quotes a value for POSIX `sh`, leaving plain words readable.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@+,%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// True for names usable as variables and environment names.
pub fn is_identifier(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && s.len() <= 128
}

const FIELDS: [&str; 22] = [
    "name",
    "peers",
    "peers_per_host",
    "hostmask",
    "cpu",
    "mem",
    "gpus",
    "privileged",
    "k3_globals",
    "peer_globals",
    "envars",
    "volumes",
    "k3_data",
    "k3_seq_files",
    "k3_outpaths",
    "image",
    "command",
    "time_limit",
    "retries",
    "retry_on",
    "retry_backoff",
    "description",
];

/// Checks a role file and reports every problem found.
pub fn check(src: &str) -> Report {
    let mut cx = Cx::default();
    let docs = match parse_documents(src) {
        Ok(d) => d,
        Err(e) => {
            let msg = match e.kind {
                crate::yaml::ErrorKind::Syntax => format!("YAML syntax error: {}", e.message),
                crate::yaml::ErrorKind::Limit => format!("too large: {}", e.message),
                crate::yaml::ErrorKind::Refused => e.message,
            };
            cx.error(e.pos, "", msg);
            return cx.finish(None);
        }
    };
    let mut roles = Vec::new();
    let mut seen_names: HashSet<String> = HashSet::new();
    let mut index = 0usize;
    for doc in &docs {
        let Some(root) = &doc.root else { continue };
        // Comment-only or empty documents (as in K3's template, before its
        // first `---`) are not roles.
        if root.is_null() {
            continue;
        }
        let path = format!("roles[{index}]");
        index += 1;
        if let Some(role) = parse_role(&mut cx, root, &path, &mut seen_names) {
            roles.push(role);
        }
    }
    if index == 0 {
        cx.error(
            Pos { line: 1, column: 1 },
            "",
            "the role file has no roles: write at least one YAML document with `name` and `peers`",
        );
    }
    let ok = !cx.has_errors();
    cx.finish(ok.then_some(RoleFile { roles }))
}

#[derive(Default)]
struct Cx {
    diags: Vec<Diagnostic>,
}

impl Cx {
    fn error(&mut self, pos: Pos, path: &str, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(pos, path, msg));
    }

    fn warn(&mut self, pos: Pos, path: &str, msg: impl Into<String>) {
        self.diags.push(Diagnostic::warning(pos, path, msg));
    }

    fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
    }

    fn finish(mut self, role_file: Option<RoleFile>) -> Report {
        self.diags.sort_by_key(|a| (a.line, a.column, a.severity));
        Report {
            role_file,
            diagnostics: self.diags,
        }
    }

    fn expect_string(&mut self, node: &Node, path: &str) -> Option<String> {
        match node {
            Node::Scalar { text, .. } if !node.is_null() => Some(text.clone()),
            _ => {
                self.error(
                    node.pos(),
                    path,
                    format!("expected a string, found {}", node.kind()),
                );
                None
            }
        }
    }

    fn expect_map<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        what: &str,
    ) -> Option<&'n [(Node, Node)]> {
        match node {
            Node::Map { entries, .. } => Some(entries),
            _ => {
                self.error(
                    node.pos(),
                    path,
                    format!("expected {what}, found {} {}", node.kind(), node.describe()),
                );
                None
            }
        }
    }

    fn expect_seq<'n>(&mut self, node: &'n Node, path: &str, what: &str) -> Option<&'n [Node]> {
        match node {
            Node::Seq { items, .. } => Some(items),
            _ => {
                self.error(
                    node.pos(),
                    path,
                    format!("expected {what}, found {} {}", node.kind(), node.describe()),
                );
                None
            }
        }
    }

    /// Keys of a mapping as strings, reporting non-string and duplicate keys.
    fn keys<'n>(
        &mut self,
        entries: &'n [(Node, Node)],
        path: &str,
    ) -> Vec<(&'n str, &'n Node, &'n Node)> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (k, v) in entries {
            let Some(key) = k.text().filter(|_| matches!(k, Node::Scalar { .. })) else {
                self.error(
                    k.pos(),
                    path,
                    format!("keys must be strings, found {}", k.kind()),
                );
                continue;
            };
            if !seen.insert(key) {
                self.error(
                    k.pos(),
                    &join(path, key),
                    format!("duplicate key {key:?}: each field may appear once"),
                );
                continue;
            }
            out.push((key, k, v));
        }
        out
    }

    /// A whole number in `1..=max`. K3 files sometimes quote numbers; that
    /// is accepted with a warning, as Python's `int("3")` accepted it.
    fn positive_int(&mut self, node: &Node, path: &str, max: u32) -> Option<NonZeroU32> {
        let n: i64 = match node.scalar() {
            Some(Scalar::Int(i)) => i,
            Some(Scalar::Str(s)) if s.trim().parse::<i64>().is_ok() => {
                self.warn(
                    node.pos(),
                    path,
                    format!("{} is quoted; write it as a plain number", node.describe()),
                );
                s.trim().parse().unwrap_or_default()
            }
            _ => {
                self.error(
                    node.pos(),
                    path,
                    format!(
                        "expected a whole number, found {} {}",
                        node.kind(),
                        node.describe()
                    ),
                );
                return None;
            }
        };
        if n < 1 {
            self.error(node.pos(), path, format!("must be at least 1, found {n}"));
            return None;
        }
        if n > max as i64 {
            self.error(
                node.pos(),
                path,
                format!("must be at most {max}, found {n}"),
            );
            return None;
        }
        NonZeroU32::new(n as u32)
    }

    /// A duration (`90`, `"90s"`, `"1h30m"`) of at most `max` seconds.
    fn duration(&mut self, node: &Node, path: &str, field: &str, max: u64) -> Option<TimeLimit> {
        let Node::Scalar { text, .. } = node else {
            self.error(
                node.pos(),
                path,
                format!(
                    "expected a duration like 90, \"90s\", \"10m\" or \"1h30m\", found {}",
                    node.kind()
                ),
            );
            return None;
        };
        match TimeLimit::parse(text) {
            Ok(t) if t.secs() > max => {
                self.error(
                    node.pos(),
                    path,
                    format!("{field} {} is more than {max} s", node.describe()),
                );
                None
            }
            Ok(t) => Some(t),
            Err(e) => {
                self.error(
                    node.pos(),
                    path,
                    format!("{field} {}: {e}", node.describe()),
                );
                None
            }
        }
    }

    fn number(&mut self, node: &Node, path: &str) -> Option<f64> {
        match node.scalar() {
            Some(Scalar::Int(i)) => Some(i as f64),
            Some(Scalar::Float(f)) if f.is_finite() => Some(f),
            Some(Scalar::Str(s)) if s.trim().parse::<f64>().is_ok_and(f64::is_finite) => {
                self.warn(
                    node.pos(),
                    path,
                    format!("{} is quoted; write it as a plain number", node.describe()),
                );
                s.trim().parse().ok()
            }
            _ => {
                self.error(
                    node.pos(),
                    path,
                    format!(
                        "expected a number, found {} {}",
                        node.kind(),
                        node.describe()
                    ),
                );
                None
            }
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn suggest(word: &str, candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| c.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn parse_role(
    cx: &mut Cx,
    root: &Node,
    path: &str,
    seen_names: &mut HashSet<String>,
) -> Option<Role> {
    let entries = cx.expect_map(root, path, "a role (a mapping with `name`, `peers`, ...)")?;
    let errors_before = cx.diags.iter().filter(|d| d.is_error()).count();
    let fields = cx.keys(entries, path);
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, _, v)| *v)
    };
    let key_pos = |name: &str| {
        fields
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, k, _)| k.pos())
    };

    for (key, knode, _) in &fields {
        if !FIELDS.contains(key) {
            let hint = suggest(key, &FIELDS)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            cx.warn(
                knode.pos(),
                &join(path, key),
                format!("unknown field {key:?} is ignored{hint}"),
            );
        }
    }

    let name = match get("name") {
        None => {
            cx.error(root.pos(), path, "missing required field `name`");
            None
        }
        Some(n) => {
            let p = join(path, "name");
            let name = cx.expect_string(n, &p);
            if let Some(name) = &name {
                if name.trim().is_empty() {
                    cx.error(n.pos(), &p, "the role name is empty");
                } else if name.len() > 128 || name.chars().any(char::is_control) {
                    cx.error(n.pos(), &p, format!("{} is not a usable name (at most 128 characters, no control characters)", n.describe()));
                } else if !seen_names.insert(name.clone()) {
                    cx.error(
                        n.pos(),
                        &p,
                        format!(
                            "role name {} is used twice; names must be unique",
                            n.describe()
                        ),
                    );
                }
            }
            name
        }
    };

    let peers = match get("peers") {
        None => {
            cx.error(
                root.pos(),
                path,
                "missing required field `peers` (how many peers this role runs)",
            );
            None
        }
        Some(n) => cx.positive_int(n, &join(path, "peers"), MAX_PEERS),
    };

    let peers_per_host = get("peers_per_host").filter(|n| !n.is_null()).and_then(|n| {
        let p = join(path, "peers_per_host");
        let v = cx.positive_int(n, &p, MAX_PEERS)?;
        if let Some(total) = peers {
            if v.get() > total.get() {
                cx.warn(n.pos(), &p, format!("peers_per_host {v} is more than peers {total}: all {total} peers go on one host"));
            } else if total.get() % v.get() != 0 {
                cx.warn(n.pos(), &p, format!("peers {total} is not a multiple of peers_per_host {v}: the last host gets {}", total.get() % v.get()));
            }
        }
        Some(v)
    });

    let hostmask = get("hostmask").filter(|n| !n.is_null()).and_then(|n| {
        let p = join(path, "hostmask");
        let pat = cx.expect_string(n, &p)?;
        match HostMask::new(&pat) {
            Ok(m) => Some(m),
            Err(e) => {
                let first = e.lines().last().unwrap_or("invalid").trim().to_string();
                cx.error(
                    n.pos(),
                    &p,
                    format!(
                        "hostmask {} is not a valid regular expression: {first}",
                        n.describe()
                    ),
                );
                None
            }
        }
    });

    let cpu = match get("cpu").filter(|n| !n.is_null()) {
        None => Some(Cpu::ONE),
        Some(n) => {
            let p = join(path, "cpu");
            cx.number(n, &p).and_then(|c| {
                if c <= 0.0 {
                    cx.error(
                        n.pos(),
                        &p,
                        format!("cpu must be more than 0, found {}", n.describe()),
                    );
                    None
                } else if c > MAX_CPU {
                    cx.error(
                        n.pos(),
                        &p,
                        format!("cpu must be at most {MAX_CPU}, found {}", n.describe()),
                    );
                    None
                } else if c < 0.001 {
                    cx.error(
                        n.pos(),
                        &p,
                        format!(
                            "cpu must be at least 0.001 (Mesos' precision), found {}",
                            n.describe()
                        ),
                    );
                    None
                } else {
                    Some(Cpu((c * 1000.0).round() as u32))
                }
            })
        }
    };

    let mem = match get("mem").filter(|n| !n.is_null()) {
        None => Some(Mem::All),
        Some(n) => parse_mem(cx, n, &join(path, "mem")),
    };

    // Mesos refuses fractional GPUs ("must be an unsigned integer").
    let gpus = match get("gpus").filter(|n| !n.is_null()) {
        None => Some(0),
        Some(n) => {
            let p = join(path, "gpus");
            match n.scalar() {
                Some(Scalar::Int(0)) => Some(0),
                Some(Scalar::Float(f)) if f.fract() != 0.0 => {
                    cx.error(
                        n.pos(),
                        &p,
                        format!(
                            "gpus must be a whole number (Mesos allocates whole GPUs), found {}",
                            n.describe()
                        ),
                    );
                    None
                }
                _ => cx.positive_int(n, &p, MAX_GPUS).map(NonZeroU32::get),
            }
        }
    };

    let privileged = match get("privileged").filter(|n| !n.is_null()) {
        None => false,
        Some(n) => match n.scalar() {
            Some(Scalar::Bool(b)) => b,
            _ => {
                cx.error(
                    n.pos(),
                    &join(path, "privileged"),
                    format!(
                        "expected true or false, found {} {}",
                        n.kind(),
                        n.describe()
                    ),
                );
                false
            }
        },
    };

    let k3_globals = match get("k3_globals").filter(|n| !n.is_null()) {
        None => Vars::new(),
        Some(n) => parse_vars(cx, n, &join(path, "k3_globals")).unwrap_or_default(),
    };

    let mut peer_globals = Vec::new();
    if let Some(n) = get("peer_globals").filter(|n| !n.is_null()) {
        let p = join(path, "peer_globals");
        if let Some(items) = cx.expect_seq(n, &p, "a list of variable mappings, one per peer") {
            for (i, item) in items.iter().enumerate() {
                if let Some(v) = parse_vars(cx, item, &format!("{p}[{i}]")) {
                    peer_globals.push(v);
                }
            }
            if let Some(total) = peers {
                if items.len() > total.get() as usize {
                    cx.error(n.pos(), &p, format!("{} peer_globals entries but only {total} peers: each entry is one peer's variables", items.len()));
                }
            }
        }
    }

    let envars = get("envars")
        .filter(|n| !n.is_null())
        .map(|n| parse_envars(cx, n, &join(path, "envars")))
        .unwrap_or_default();
    let volumes = get("volumes")
        .filter(|n| !n.is_null())
        .map(|n| parse_volumes(cx, n, &join(path, "volumes")))
        .unwrap_or_default();
    let k3_data = get("k3_data")
        .filter(|n| !n.is_null())
        .map(|n| parse_data(cx, n, &join(path, "k3_data")))
        .unwrap_or_default();

    // A data variable and a global of the same name would silently shadow.
    for d in &k3_data {
        if k3_globals.contains_key(&d.var) {
            let pos = key_pos("k3_data").unwrap_or(root.pos());
            cx.warn(
                pos,
                &join(path, "k3_data"),
                format!(
                    "k3_data variable {:?} also appears in k3_globals; the data files win",
                    d.var
                ),
            );
        }
    }

    let k3_seq_files = get("k3_seq_files").map(Node::to_value);
    let k3_outpaths = get("k3_outpaths").map(Node::to_value);

    let image = get("image").filter(|n| !n.is_null()).and_then(|n| {
        let p = join(path, "image");
        let img = cx.expect_string(n, &p)?;
        if let Err(why) = check_image(&img) {
            cx.error(
                n.pos(),
                &p,
                format!(
                    "image {} is not a Docker image reference ({why}); write e.g. `ubuntu:22.04` or `registry.example:5000/team/app@sha256:<hex>`",
                    n.describe()
                ),
            );
            return None;
        }
        Some(img)
    });

    if image.is_none() && privileged {
        let pos = key_pos("privileged").unwrap_or(root.pos());
        cx.warn(
            pos,
            &join(path, "privileged"),
            "privileged applies to Docker containers only (set `image`); ignored here",
        );
    }

    let command = get("command").filter(|n| !n.is_null()).and_then(|n| {
        let p = join(path, "command");
        let src = cx.expect_string(n, &p)?;
        match CommandTemplate::parse(&src) {
            Ok(t) => Some(t),
            Err((offset, msg)) => {
                let mut pos = n.pos();
                let quoted = matches!(n, Node::Scalar { quoted: true, .. });
                if !src[..offset].contains('\n') {
                    pos.column += src[..offset].chars().count() as u32 + u32::from(quoted);
                }
                cx.error(pos, &p, format!("in command {}: {msg}", n.describe()));
                None
            }
        }
    });

    let time_limit = get("time_limit").filter(|n| !n.is_null()).and_then(|n| {
        cx.duration(
            n,
            &join(path, "time_limit"),
            "time_limit",
            MAX_TIME_LIMIT_SECS,
        )
    });

    let retries = get("retries").filter(|n| !n.is_null()).and_then(|n| {
        let p = join(path, "retries");
        match n.scalar() {
            Some(Scalar::Int(0)) => Some(0),
            Some(Scalar::Int(i)) if i < 0 => {
                cx.error(
                    n.pos(),
                    &p,
                    format!("retries must be 0 or more (attempts after the first), found {i}"),
                );
                None
            }
            _ => cx.positive_int(n, &p, MAX_RETRIES).map(NonZeroU32::get),
        }
    });

    let retry_on = get("retry_on").filter(|n| !n.is_null()).and_then(|n| {
        let p = join(path, "retry_on");
        let text = match n {
            Node::Scalar { .. } => cx.expect_string(n, &p)?,
            Node::Seq { items, .. } => {
                let mut words = Vec::new();
                for item in items {
                    words.push(cx.expect_string(item, &p)?);
                }
                words.join(",")
            }
            Node::Map { .. } => {
                cx.error(
                    n.pos(),
                    &p,
                    format!(
                        "expected failed, lost or [failed, lost], found {}",
                        n.kind()
                    ),
                );
                return None;
            }
        };
        match crate::model::RetryOn::parse(&text) {
            Ok(on) => Some(on),
            Err(e) => {
                cx.error(n.pos(), &p, format!("retry_on {}: {e}", n.describe()));
                None
            }
        }
    });

    let retry_backoff = get("retry_backoff").filter(|n| !n.is_null()).and_then(|n| {
        cx.duration(
            n,
            &join(path, "retry_backoff"),
            "retry_backoff",
            MAX_RETRY_BACKOFF_SECS,
        )
    });
    if retry_on.is_some() && retries.is_none() {
        if let Some(n) = get("retry_on") {
            cx.warn(
                n.pos(),
                &join(path, "retry_on"),
                "retry_on has no effect without retries (the number of attempts after the first)",
            );
        }
    }

    let errors_after = cx.diags.iter().filter(|d| d.is_error()).count();
    if errors_after > errors_before {
        return None;
    }
    Some(Role {
        name: name?,
        peers: peers?,
        peers_per_host,
        hostmask,
        cpu: cpu?,
        mem: mem?,
        gpus: gpus?,
        privileged,
        k3_globals,
        peer_globals,
        envars,
        volumes,
        k3_data,
        k3_seq_files,
        k3_outpaths,
        image,
        command,
        time_limit,
        retries,
        retry_on,
        retry_backoff,
        line: root.pos().line,
    })
}

fn parse_mem(cx: &mut Cx, n: &Node, path: &str) -> Option<Mem> {
    match n.scalar() {
        Some(Scalar::Str(s)) => {
            match s.trim().to_ascii_lowercase().as_str() {
                "all" => Some(Mem::All),
                "some" => Some(Mem::Some),
                // K3's own template says `mem: ".*"`; K3 fell back to `all` for it.
                ".*" | "*" => {
                    cx.warn(n.pos(), path, format!("mem {} is not one of all, some or a number of GB; using `all` as K3 did", n.describe()));
                    Some(Mem::All)
                }
                other => match other.trim_end_matches("gb").trim().parse::<f64>() {
                    Ok(gb) => mem_gb(cx, n, path, gb),
                    Err(_) => {
                        cx.error(
                            n.pos(),
                            path,
                            format!(
                                "mem {} must be `all`, `some` or a number of GB",
                                n.describe()
                            ),
                        );
                        None
                    }
                },
            }
        }
        Some(Scalar::Int(i)) => mem_gb(cx, n, path, i as f64),
        Some(Scalar::Float(f)) => mem_gb(cx, n, path, f),
        _ => {
            cx.error(
                n.pos(),
                path,
                format!(
                    "mem must be `all`, `some` or a number of GB, found {} {}",
                    n.kind(),
                    n.describe()
                ),
            );
            None
        }
    }
}

fn mem_gb(cx: &mut Cx, n: &Node, path: &str, gb: f64) -> Option<Mem> {
    if !gb.is_finite() || gb <= 0.0 {
        cx.error(
            n.pos(),
            path,
            format!("mem must be more than 0 GB, found {}", n.describe()),
        );
        None
    } else if gb > MAX_MEM_GB {
        cx.error(
            n.pos(),
            path,
            format!(
                "mem must be at most {MAX_MEM_GB} GB, found {}",
                n.describe()
            ),
        );
        None
    } else {
        Some(Mem::Mb(((gb * 1024.0).ceil() as u64).max(1)))
    }
}

fn parse_vars(cx: &mut Cx, n: &Node, path: &str) -> Option<Vars> {
    let entries = cx.expect_map(n, path, "a mapping of variable names to values")?;
    let mut vars = Vars::new();
    for (key, knode, v) in cx.keys(entries, path) {
        let p = join(path, key);
        if !is_identifier(key) {
            cx.error(knode.pos(), &p, format!("variable name {key:?} must start with a letter or _ and contain only letters, digits and _"));
            continue;
        }
        if RESERVED_VARS.contains(&key) {
            cx.error(knode.pos(), &p, format!("variable name {key:?} is reserved: every peer config sets `me` and `peers` itself"));
            continue;
        }
        vars.insert(key.to_string(), v.to_value());
    }
    Some(vars)
}

/// A mapping entry: key text, key node, value node.
type Entry<'n> = (&'n str, &'n Node, &'n Node);

fn list_of_maps<'n>(
    cx: &mut Cx,
    n: &'n Node,
    path: &str,
    what: &str,
    fields: &[&str],
) -> Vec<(String, Vec<Entry<'n>>, Pos)> {
    let Some(items) = cx.expect_seq(n, path, what) else {
        return vec![];
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(entries) =
            cx.expect_map(item, &p, &format!("a mapping with {}", fields.join(", ")))
        else {
            continue;
        };
        let keys = cx.keys(entries, &p);
        for (k, knode, _) in &keys {
            if !fields.contains(k) {
                cx.warn(
                    knode.pos(),
                    &join(&p, k),
                    format!(
                        "unknown field {k:?} is ignored (expected {})",
                        fields.join(", ")
                    ),
                );
            }
        }
        for f in fields {
            if !keys.iter().any(|(k, _, _)| k == f) {
                cx.error(item.pos(), &p, format!("missing `{f}`"));
            }
        }
        out.push((p, keys, item.pos()));
    }
    out
}

fn field<'n>(keys: &[Entry<'n>], name: &str) -> Option<&'n Node> {
    keys.iter().find(|(k, _, _)| *k == name).map(|(_, _, v)| *v)
}

fn parse_envars(cx: &mut Cx, n: &Node, path: &str) -> Vec<EnvVar> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for (p, keys, _) in list_of_maps(cx, n, path, "a list of {name, value}", &["name", "value"]) {
        let (Some(nn), Some(vn)) = (field(&keys, "name"), field(&keys, "value")) else {
            continue;
        };
        let Some(name) = cx.expect_string(nn, &join(&p, "name")) else {
            continue;
        };
        if !is_identifier(&name) {
            cx.error(nn.pos(), &join(&p, "name"), format!("environment variable name {} must be letters, digits and _, not starting with a digit", nn.describe()));
            continue;
        }
        if name.starts_with("DISPATCHER_") {
            cx.error(
                nn.pos(),
                &join(&p, "name"),
                format!(
                    "{} is reserved: Dispatcher sets the DISPATCHER_* variables itself",
                    nn.describe()
                ),
            );
            continue;
        }
        if !names.insert(name.clone()) {
            cx.warn(
                nn.pos(),
                &join(&p, "name"),
                format!(
                    "environment variable {} is set twice; the last value wins",
                    nn.describe()
                ),
            );
        }
        let value = match vn {
            Node::Scalar { text, .. } => {
                if vn.is_null() {
                    String::new()
                } else {
                    text.clone()
                }
            }
            _ => {
                cx.error(
                    vn.pos(),
                    &join(&p, "value"),
                    format!("expected a string, found {}", vn.kind()),
                );
                continue;
            }
        };
        if value.contains('\0') {
            cx.error(
                vn.pos(),
                &join(&p, "value"),
                "environment values cannot contain NUL",
            );
            continue;
        }
        out.push(EnvVar { name, value });
    }
    out
}

fn absolute_path(cx: &mut Cx, n: &Node, path: &str) -> Option<String> {
    let s = cx.expect_string(n, path)?;
    if !s.starts_with('/') {
        cx.error(
            n.pos(),
            path,
            format!("path {} must be absolute (start with /)", n.describe()),
        );
        return None;
    }
    if s.split('/').any(|c| c == "..") {
        cx.error(
            n.pos(),
            path,
            format!("path {} must not contain `..`", n.describe()),
        );
        return None;
    }
    Some(s)
}

fn parse_volumes(cx: &mut Cx, n: &Node, path: &str) -> Vec<Volume> {
    let mut out = Vec::new();
    for (p, keys, _) in list_of_maps(
        cx,
        n,
        path,
        "a list of {host, container}",
        &["host", "container"],
    ) {
        let (Some(h), Some(c)) = (field(&keys, "host"), field(&keys, "container")) else {
            continue;
        };
        let host = absolute_path(cx, h, &join(&p, "host"));
        let container = absolute_path(cx, c, &join(&p, "container"));
        if let (Some(host), Some(container)) = (host, container) {
            out.push(Volume { host, container });
        }
    }
    out
}

fn parse_data(cx: &mut Cx, n: &Node, path: &str) -> Vec<DataSpec> {
    let mut out = Vec::new();
    let mut vars = BTreeSet::new();
    for (p, keys, _) in list_of_maps(
        cx,
        n,
        path,
        "a list of {var, path, policy}",
        &["var", "path", "policy"],
    ) {
        let (Some(vn), Some(pn), Some(poln)) = (
            field(&keys, "var"),
            field(&keys, "path"),
            field(&keys, "policy"),
        ) else {
            continue;
        };
        let var = cx.expect_string(vn, &join(&p, "var"));
        if let Some(v) = &var {
            if !is_identifier(v) {
                cx.error(vn.pos(), &join(&p, "var"), format!("variable name {} must start with a letter or _ and contain only letters, digits and _", vn.describe()));
            } else if RESERVED_VARS.contains(&v.as_str()) {
                cx.error(
                    vn.pos(),
                    &join(&p, "var"),
                    format!("variable name {} is reserved", vn.describe()),
                );
            } else if !vars.insert(v.clone()) {
                cx.error(
                    vn.pos(),
                    &join(&p, "var"),
                    format!("data variable {} is declared twice", vn.describe()),
                );
            }
        }
        let data_path = absolute_path(cx, pn, &join(&p, "path"));
        let policy = match poln.text().map(str::trim) {
            Some("replicate") => Some(Policy::Replicate),
            Some("global") => Some(Policy::Global),
            Some("pinned") => Some(Policy::Pinned),
            _ => {
                cx.error(
                    poln.pos(),
                    &join(&p, "policy"),
                    format!(
                        "policy {} must be replicate, global or pinned",
                        poln.describe()
                    ),
                );
                None
            }
        };
        if let (Some(var), Some(path), Some(policy)) = (var, data_path, policy) {
            out.push(DataSpec { var, path, policy });
        }
    }
    out
}
