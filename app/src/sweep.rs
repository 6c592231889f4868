//! Parameter sweeps: one role file expanded over lists of values into one
//! role file per combination, and the summary of their runs.
//!
//! A parameter names a place in the role file as `<role>.<key>[.<key>...]`
//! (`workers.peers`, `workers.k3_globals.query`): the role by its `name`,
//! then mapping keys inside it; missing mappings on the way are made. Each
//! combination's role file is written out again from the parsed documents,
//! with YAML 1.1 already resolved (K3's `yes` is `true`, a quoted `"3"` stays
//! a string), so it means exactly what the original meant plus the change;
//! comments are not kept. Every combination is checked with the role-file
//! parser before anything runs.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::{JobOptions, JobState};
use crate::yaml::{parse_documents, Node, Scalar};

/// Most jobs one sweep may submit (combinations × repeat).
pub const MAX_SWEEP_JOBS: usize = 1000;
/// Most parameters of one sweep.
pub const MAX_PARAMETERS: usize = 8;
/// Most times each combination may run.
pub const MAX_REPEAT: u32 = 100;

/// `POST /api/sweeps`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepRequest {
    pub app: String,
    #[serde(default)]
    pub uid: Option<String>,
    pub role_file: String,
    /// Path in the role file to the values it takes, in the order given.
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub repeat: Option<u32>,
    #[serde(default)]
    pub options: JobOptions,
}

/// One run of one combination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepRun {
    pub id: u64,
    /// 1-based: which of the combination's repeats.
    pub repeat: u32,
    pub state: JobState,
    /// From its first RUNNING to its end, once it ended.
    pub duration_s: Option<f64>,
}

/// One combination of values with its runs and their durations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    pub values: Map<String, Value>,
    pub jobs: Vec<SweepRun>,
    /// Over the runs that FINISHED; none until one did.
    pub median_s: Option<f64>,
    pub min_s: Option<f64>,
    pub max_s: Option<f64>,
}

/// `GET /api/sweeps/<id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepDetail {
    pub id: u64,
    pub app: String,
    pub uid: String,
    pub created: String,
    pub role_file: String,
    pub parameters: Map<String, Value>,
    pub repeat: u32,
    pub jobs_total: u32,
    /// Jobs that ended (any way).
    pub jobs_ended: u32,
    pub points: Vec<SweepPoint>,
}

/// A row of `GET /api/sweeps`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepSummary {
    pub id: u64,
    pub app: String,
    pub uid: String,
    pub created: String,
    pub parameters: Vec<String>,
    pub combinations: u32,
    pub repeat: u32,
    pub jobs_total: u32,
    pub jobs_ended: u32,
    pub jobs_failed: u32,
}

/// The combinations of a sweep's values, the first parameter varying
/// slowest (as nested loops written in the order given).
pub fn combinations(parameters: &Map<String, Value>) -> Result<Vec<Map<String, Value>>, String> {
    if parameters.is_empty() {
        return Err("parameters is empty: name at least one path and its values".into());
    }
    if parameters.len() > MAX_PARAMETERS {
        return Err(format!(
            "{} parameters; a sweep takes at most {MAX_PARAMETERS}",
            parameters.len()
        ));
    }
    let mut out = vec![Map::new()];
    for (path, values) in parameters {
        let Some(values) = values.as_array() else {
            return Err(format!(
                "parameter {path:?}: expected a list of values, found {}",
                json_kind(values)
            ));
        };
        if values.is_empty() {
            return Err(format!("parameter {path:?}: the list of values is empty"));
        }
        if out.len() * values.len() > MAX_SWEEP_JOBS {
            return Err(format!(
                "more than {MAX_SWEEP_JOBS} combinations; split the sweep"
            ));
        }
        out = out
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.insert(path.clone(), v.clone());
                    c
                })
            })
            .collect();
    }
    Ok(out)
}

/// Parameters as the dashboard takes them, one per line:
/// `workers.peers = 1, 2, 4`. A value that reads as JSON is that (`4`,
/// `true`, `"a,b"`); anything else is a string. `#` starts a comment line.
pub fn parse_lines(text: &str) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((path, values)) = line.split_once('=') else {
            return Err(format!(
                "line {}: write <role>.<field> = value, value, ... (e.g. workers.peers = 1, 2, 4)",
                i + 1
            ));
        };
        let path = path.trim();
        if path.is_empty() || out.contains_key(path) {
            return Err(format!("line {}: {path:?} is empty or named twice", i + 1));
        }
        let mut list = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        for c in values.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    cur.push(c);
                }
                ',' if !quoted => list.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        list.push(cur);
        let list: Vec<Value> = list
            .iter()
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(|v| serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string())))
            .collect();
        if list.is_empty() {
            return Err(format!("line {}: {path} has no values", i + 1));
        }
        out.insert(path.to_string(), Value::Array(list));
    }
    Ok(out)
}

/// A combination as people read it: `workers.peers=4, query="q18"`.
pub fn describe(values: &Map<String, Value>) -> String {
    values
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The role file with each path set to its value.
pub fn apply(role_file: &str, values: &Map<String, Value>) -> Result<String, String> {
    let docs = parse_documents(role_file).map_err(|e| {
        format!(
            "the role file, line {} column {}: {}",
            e.pos.line, e.pos.column, e.message
        )
    })?;
    let mut roles: Vec<Value> = docs
        .iter()
        .filter_map(|d| d.root.as_ref())
        .map(to_json)
        .collect();
    for (path, value) in values {
        let mut parts = path.split('.');
        let role = parts.next().unwrap_or_default();
        let keys: Vec<&str> = parts.collect();
        if role.is_empty() || keys.is_empty() || keys.iter().any(|k| k.is_empty()) {
            return Err(format!(
                "parameter {path:?}: write it as <role>.<field>, e.g. workers.peers"
            ));
        }
        let names: Vec<String> = roles
            .iter()
            .filter_map(|r| r.get("name").map(name_text))
            .collect();
        let Some(doc) = roles
            .iter_mut()
            .find(|r| r.get("name").map(name_text).as_deref() == Some(role))
        else {
            return Err(format!(
                "parameter {path:?}: no role is named {role:?} (roles: {})",
                names.join(", ")
            ));
        };
        let mut at = doc;
        for (i, key) in keys.iter().enumerate() {
            let Value::Object(map) = at else {
                return Err(format!(
                    "parameter {path:?}: {} is not a mapping",
                    keys[..i].join(".")
                ));
            };
            if i + 1 == keys.len() {
                map.insert(key.to_string(), value.clone());
                break;
            }
            at = map
                .entry(key.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    Ok(emit(&roles))
}

fn name_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A parsed node as JSON, with YAML 1.1 scalars resolved as the role-file
/// parser resolves them.
fn to_json(n: &Node) -> Value {
    match n {
        Node::Map { entries, .. } => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.text().unwrap_or_default().to_string(), to_json(v)))
                .collect(),
        ),
        Node::Seq { items, .. } => Value::Array(items.iter().map(to_json).collect()),
        Node::Scalar { text, .. } => match n.scalar() {
            Some(Scalar::Null) => Value::Null,
            Some(Scalar::Bool(b)) => Value::Bool(b),
            Some(Scalar::Int(i)) => Value::from(i),
            Some(Scalar::Float(f)) => serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(text.clone())),
            Some(Scalar::Str(s)) => Value::String(s.to_string()),
            None => Value::String(text.clone()),
        },
    }
}

/// Role documents as YAML, block style, every string double-quoted (JSON
/// strings are YAML strings, so nothing is re-read as a number or a bool).
pub fn emit(roles: &[Value]) -> String {
    let mut out = String::new();
    for r in roles {
        out.push_str("---\n");
        match r {
            Value::Object(m) if !m.is_empty() => emit_map(m, 0, &mut out),
            other => {
                out.push_str(&other.to_string());
                out.push('\n');
            }
        }
    }
    out
}

fn key_text(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !k.chars().next().is_some_and(|c| c.is_ascii_digit());
    if plain {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

fn emit_map(m: &Map<String, Value>, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    for (k, v) in m {
        out.push_str(&pad);
        out.push_str(&key_text(k));
        out.push(':');
        emit_value(v, indent, out);
    }
}

fn emit_value(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            emit_map(m, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            let pad = " ".repeat(indent);
            for item in a {
                out.push_str(&pad);
                out.push_str("- ");
                match item {
                    // A mapping in a list: flow style keeps the indentation simple.
                    Value::Object(_) | Value::Array(_) => {
                        out.push_str(&item.to_string());
                        out.push('\n');
                    }
                    scalar => {
                        out.push_str(&scalar.to_string());
                        out.push('\n');
                    }
                }
            }
        }
        other => {
            out.push(' ');
            out.push_str(&other.to_string());
            out.push('\n');
        }
    }
}

/// Median, min and max of the durations (none for none).
pub fn stats(durations: &[f64]) -> (Option<f64>, Option<f64>, Option<f64>) {
    if durations.is_empty() {
        return (None, None, None);
    }
    let mut d = durations.to_vec();
    d.sort_by(f64::total_cmp);
    let n = d.len();
    let median = if n % 2 == 1 {
        d[n / 2]
    } else {
        (d[n / 2 - 1] + d[n / 2]) / 2.0
    };
    (Some(median), Some(d[0]), Some(d[n - 1]))
}

/// The sweep as CSV: one row per run, a column per parameter.
pub fn csv(detail: &SweepDetail) -> String {
    let mut out = String::new();
    let cols: Vec<&String> = detail.parameters.keys().collect();
    let field = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    for c in &cols {
        out.push_str(&field(c));
        out.push(',');
    }
    out.push_str("repeat,job,state,duration_s\n");
    for p in &detail.points {
        for j in &p.jobs {
            for c in &cols {
                let v = match p.values.get(*c) {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => String::new(),
                };
                out.push_str(&field(&v));
                out.push(',');
            }
            let d = j.duration_s.map(|d| format!("{d:.3}")).unwrap_or_default();
            out.push_str(&format!("{},{},{},{d}\n", j.repeat, j.id, j.state));
        }
    }
    out
}

/// One line of a sweep's chart: the points that share a value of the
/// grouping parameter, by the x parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// `by=value`, or empty for one line.
    pub label: String,
    pub points: Vec<ChartPoint>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChartPoint {
    /// The x value: the number itself, or the rank among the values seen
    /// (strings, lists) when the parameter is not numeric.
    pub x: f64,
    pub x_label: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

fn label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Duration against parameter `x`, one line per value of `by` (one line
/// when none), from the combinations that have a median. Points of one line
/// sharing an x (other parameters vary) are merged: median of medians,
/// overall min and max.
pub fn series(detail: &SweepDetail, x: &str, by: Option<&str>) -> Vec<Series> {
    let numeric = detail
        .points
        .iter()
        .all(|p| p.values.get(x).is_some_and(Value::is_number));
    let mut seen: Vec<String> = Vec::new();
    // Per line: (x, x label, the medians merged there, min, max).
    type Merged = (f64, String, Vec<f64>, f64, f64);
    let mut lines: Vec<(String, Vec<Merged>)> = Vec::new();
    for p in &detail.points {
        let Some(xv) = p.values.get(x) else { continue };
        let x_label = label(xv);
        if !seen.contains(&x_label) {
            seen.push(x_label.clone());
        }
        let (Some(med), Some(min), Some(max)) = (p.median_s, p.min_s, p.max_s) else {
            continue;
        };
        let xf = if numeric {
            xv.as_f64().unwrap_or_default()
        } else {
            seen.iter().position(|s| *s == x_label).unwrap_or_default() as f64
        };
        let line = by
            .and_then(|b| p.values.get(b).map(|v| format!("{b}={}", label(v))))
            .unwrap_or_default();
        let at = match lines.iter().position(|(l, _)| *l == line) {
            Some(i) => i,
            None => {
                lines.push((line, Vec::new()));
                lines.len() - 1
            }
        };
        let pts = &mut lines[at].1;
        match pts.iter_mut().find(|q| q.0 == xf) {
            Some(q) => {
                q.2.push(med);
                q.3 = q.3.min(min);
                q.4 = q.4.max(max);
            }
            None => pts.push((xf, x_label, vec![med], min, max)),
        }
    }
    lines
        .into_iter()
        .map(|(label, mut pts)| {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                label,
                points: pts
                    .into_iter()
                    .map(|(x, x_label, meds, min, max)| ChartPoint {
                        x,
                        x_label,
                        median: stats(&meds).0.unwrap_or_default(),
                        min,
                        max,
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RoleFile;
    use serde_json::json;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn combinations_nest_in_the_order_given() {
        let c = combinations(&params(
            json!({"w.peers": [1, 2, 4], "w.k3_globals.q": ["a", "b"]}),
        ))
        .unwrap();
        assert_eq!(c.len(), 6);
        assert_eq!(describe(&c[0]), "w.peers=1, w.k3_globals.q=\"a\"");
        assert_eq!(describe(&c[1]), "w.peers=1, w.k3_globals.q=\"b\"");
        assert_eq!(describe(&c[5]), "w.peers=4, w.k3_globals.q=\"b\"");
        assert!(combinations(&params(json!({"w.peers": []})))
            .unwrap_err()
            .contains("empty"));
        assert!(combinations(&params(json!({"w.peers": 3})))
            .unwrap_err()
            .contains("expected a list of values, found a number"));
        let big: Vec<u32> = (0..40).collect();
        assert!(combinations(&params(json!({"a.x": big, "a.y": big})))
            .unwrap_err()
            .contains("more than 1000"));
    }

    #[test]
    fn applying_keeps_what_the_file_meant_and_sets_the_paths() {
        let src = "# K3 style\nname: leader\npeers: 1\nprivileged: yes\nk3_globals: {role: leader, port: \"3\"}\n---\nname: workers\npeers: 2\nmem: \".*\"\nenvars:\n  - {name: A, value: 1}\n";
        let out = apply(
            src,
            &params(json!({"workers.peers": 8, "workers.k3_globals.query": "q18"})),
        )
        .unwrap();
        let (rf, _) = RoleFile::parse(&out).unwrap();
        let r = rf.roles();
        assert_eq!((r[0].peers.get(), r[1].peers.get()), (1, 8));
        assert!(r[0].privileged, "yes stays true");
        assert_eq!(
            r[0].k3_globals["port"],
            json!("3"),
            "a quoted 3 stays a string"
        );
        assert_eq!(r[1].k3_globals["query"], json!("q18"));
        assert_eq!(r[1].envars.len(), 1);
        // The rest reads back unchanged.
        let (orig, _) = RoleFile::parse(src).unwrap();
        assert_eq!(orig.roles()[1].mem, r[1].mem);
    }

    #[test]
    fn a_bad_path_says_what_is_wrong() {
        let src = "name: w\npeers: 1\ncpu: 1\n";
        let e = apply(src, &params(json!({"wrk.peers": 2}))).unwrap_err();
        assert!(e.contains("no role is named \"wrk\" (roles: w)"), "{e}");
        let e = apply(src, &params(json!({"w.cpu.x": 2}))).unwrap_err();
        assert!(e.contains("cpu is not a mapping"), "{e}");
        let e = apply(src, &params(json!({"peers": 2}))).unwrap_err();
        assert!(e.contains("<role>.<field>"), "{e}");
    }

    fn point(peers: u64, q: &str, med: Option<f64>) -> SweepPoint {
        SweepPoint {
            values: params(json!({"w.peers": peers, "w.q": q})),
            jobs: vec![],
            median_s: med,
            min_s: med.map(|m| m - 1.0),
            max_s: med.map(|m| m + 1.0),
        }
    }

    #[test]
    fn the_chart_has_a_line_per_value_of_the_grouping_parameter() {
        let d = SweepDetail {
            id: 1,
            app: "a".into(),
            uid: "u".into(),
            created: String::new(),
            role_file: String::new(),
            parameters: params(json!({"w.peers": [1, 4], "w.q": ["a", "b"]})),
            repeat: 1,
            jobs_total: 4,
            jobs_ended: 3,
            points: vec![
                point(4, "a", Some(8.0)),
                point(4, "b", Some(2.0)),
                point(1, "a", Some(5.0)),
                point(1, "b", None),
            ],
        };
        let s = series(&d, "w.peers", Some("w.q"));
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].label, "w.q=a");
        let xs: Vec<f64> = s[0].points.iter().map(|p| p.x).collect();
        assert_eq!(xs, [1.0, 4.0], "sorted by x");
        assert_eq!(
            s[1].points.len(),
            1,
            "a point without a finished run is left out"
        );
        // One line: points sharing an x merge.
        let one = series(&d, "w.peers", None);
        assert_eq!(one.len(), 1);
        let at4 = &one[0].points[1];
        assert_eq!((at4.median, at4.min, at4.max), (5.0, 1.0, 9.0));
        // A string parameter is placed by rank.
        let by_q = series(&d, "w.q", None);
        assert_eq!(
            by_q[0]
                .points
                .iter()
                .map(|p| p.x_label.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(by_q[0].points[1].x, 1.0);
    }

    #[test]
    fn the_dashboard_s_lines_become_parameters() {
        let p = parse_lines(
            "# scaling\nworkers.peers = 1, 2, 4\nworkers.k3_globals.q = q1, \"a,b\", true\n",
        )
        .unwrap();
        assert_eq!(
            Value::Object(p),
            json!({"workers.peers": [1, 2, 4], "workers.k3_globals.q": ["q1", "a,b", true]})
        );
        assert!(parse_lines("workers.peers 1 2")
            .unwrap_err()
            .starts_with("line 1: write"));
        assert!(parse_lines("a.b = 1\na.b = 2")
            .unwrap_err()
            .contains("named twice"));
        assert!(parse_lines("a.b = ,").unwrap_err().contains("no values"));
    }

    #[test]
    fn stats_and_csv() {
        assert_eq!(stats(&[3.0, 1.0, 2.0]), (Some(2.0), Some(1.0), Some(3.0)));
        assert_eq!(stats(&[4.0, 1.0]), (Some(2.5), Some(1.0), Some(4.0)));
        assert_eq!(stats(&[]), (None, None, None));
        let d = SweepDetail {
            id: 1,
            app: "a".into(),
            uid: "u".into(),
            created: String::new(),
            role_file: String::new(),
            parameters: params(json!({"w.peers": [1], "w.k3_globals.q": ["a,b"]})),
            repeat: 1,
            jobs_total: 1,
            jobs_ended: 1,
            points: vec![SweepPoint {
                values: params(json!({"w.peers": 1, "w.k3_globals.q": "a,b"})),
                jobs: vec![SweepRun {
                    id: 7,
                    repeat: 1,
                    state: JobState::Finished,
                    duration_s: Some(1.5),
                }],
                median_s: Some(1.5),
                min_s: Some(1.5),
                max_s: Some(1.5),
            }],
        };
        assert_eq!(
            csv(&d),
            "w.peers,w.k3_globals.q,repeat,job,state,duration_s\n1,\"a,b\",1,7,FINISHED,1.500\n"
        );
    }
}
