//! The dashboard's logic that does not touch the DOM: YAML highlighting,
//! editor problem markers, cursor offsets, formatting. Tested natively.

use std::collections::BTreeMap;

use app::{Diagnostic, Severity};

/// A highlighted piece of one line: a CSS class (empty for plain text) and the text.
pub type Span = (&'static str, String);

/// Splits one line of YAML into highlighted spans. It is a display aid, not
/// a parser: the real parse (with positions) is `app::check`.
pub fn highlight_line(line: &str) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    if !indent.is_empty() {
        out.push(("", indent.to_string()));
    }
    if trimmed.starts_with("---") || trimmed.starts_with("...") {
        out.push(("tok-doc", trimmed.to_string()));
        return out;
    }
    let mut rest = trimmed;
    if let Some(r) = rest.strip_prefix("- ") {
        out.push(("tok-punct", "- ".into()));
        rest = r;
    }
    // A `key:` at the start (not inside quotes or a comment).
    if let Some(colon) = key_colon(rest) {
        out.push(("tok-key", rest[..colon].to_string()));
        out.push(("tok-punct", ":".into()));
        rest = &rest[colon + 1..];
    }
    value_spans(rest, &mut out);
    out
}

fn key_colon(s: &str) -> Option<usize> {
    if s.starts_with(['#', '"', '\'', '{', '[']) {
        return None;
    }
    let bytes = s.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'#' => return None,
            b':' if bytes.get(i + 1).is_none_or(|n| *n == b' ') => return Some(i),
            _ => {}
        }
    }
    None
}

fn value_spans(s: &str, out: &mut Vec<Span>) {
    let mut plain = String::new();
    let mut chars = s.char_indices().peekable();
    let flush = |plain: &mut String, out: &mut Vec<Span>| {
        if !plain.is_empty() {
            let word = plain.trim();
            let class = scalar_class(word);
            out.push((class, std::mem::take(plain)));
        }
    };
    while let Some((i, c)) = chars.next() {
        match c {
            '#' if i == 0 || s[..i].ends_with(' ') => {
                flush(&mut plain, out);
                out.push(("tok-comment", s[i..].to_string()));
                return;
            }
            '"' | '\'' => {
                flush(&mut plain, out);
                let mut end = s.len();
                while let Some((j, d)) = chars.next() {
                    if d == '\\' && c == '"' {
                        chars.next();
                        continue;
                    }
                    if d == c {
                        end = j + 1;
                        break;
                    }
                }
                out.push(("tok-string", s[i..end].to_string()));
            }
            '{' | '}' | '[' | ']' | ',' => {
                flush(&mut plain, out);
                out.push(("tok-punct", c.to_string()));
            }
            ':' if chars.peek().is_none_or(|(_, n)| *n == ' ') => {
                // `key:` inside a flow mapping.
                if !plain.trim().is_empty() {
                    out.push(("tok-key", std::mem::take(&mut plain)));
                } else {
                    flush(&mut plain, out);
                }
                out.push(("tok-punct", ":".into()));
            }
            c => plain.push(c),
        }
    }
    flush(&mut plain, out);
}

fn scalar_class(word: &str) -> &'static str {
    if word.is_empty() {
        return "";
    }
    match word {
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" | "yes" | "no" | "on" | "off"
        | "null" | "~" | "auto" | "all" | "some" => "tok-keyword",
        _ if word.parse::<f64>().is_ok() => "tok-number",
        _ => "tok-value",
    }
}

/// The worst severity on each line that has a problem.
pub fn line_markers(diags: &[Diagnostic]) -> BTreeMap<u32, Severity> {
    let mut m: BTreeMap<u32, Severity> = BTreeMap::new();
    for d in diags {
        let e = m.entry(d.line).or_insert(d.severity);
        if d.severity == Severity::Error {
            *e = Severity::Error;
        }
    }
    m
}

/// The UTF-16 offset of a 1-based line and column, as a textarea's
/// selection wants it. Past the end clamps to the end.
pub fn utf16_offset(text: &str, line: u32, column: u32) -> u32 {
    let mut offset = 0u32;
    for (i, l) in text.split('\n').enumerate() {
        if i as u32 + 1 == line {
            let col: u32 = l
                .chars()
                .take(column.saturating_sub(1) as usize)
                .map(|c| c.len_utf16() as u32)
                .sum();
            return offset + col;
        }
        offset += l.chars().map(|c| c.len_utf16() as u32).sum::<u32>() + 1;
    }
    text.chars().map(|c| c.len_utf16() as u32).sum()
}

pub fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{} {}", v as u64, UNITS[0])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn human_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "—".into();
    }
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Milliseconds since the epoch from an RFC 3339 timestamp the server wrote
/// (`2026-11-22T23:28:36.022275464Z`); None if it does not look like one.
pub fn parse_time_ms(ts: &str) -> Option<f64> {
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let ss: f64 = t.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(((days * 86400 + hh * 3600 + mm * 60) as f64 + ss) * 1000.0)
}

/// A shell command that submits the same job again with curl.
pub fn curl_for(
    origin: &str,
    app: &str,
    uid: &str,
    role_file: &str,
    options: &app::model::JobOptions,
) -> String {
    let body =
        serde_json::json!({ "app": app, "uid": uid, "role_file": role_file, "options": options });
    format!(
        "curl -X POST {origin}/api/jobs -H 'Content-Type: application/json' --data-binary @- <<'JSON'\n{}\nJSON",
        serde_json::to_string_pretty(&body).unwrap_or_default()
    )
}

/// The smallest of 1, 2 or 5 times a power of ten that is at least `v`
/// (a chart's top).
pub fn nice_ceiling(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v * 0.999_999)
        .unwrap_or(10.0 * p)
}

/// A line chart's geometry: every series' `(time, value)` points scaled
/// into a `w` × `h` box (y up), as SVG `points` attributes, with the top
/// value (room for `reference`) and the time span.
pub struct Chart {
    pub lines: Vec<String>,
    pub top: f64,
    pub t0: f64,
    pub t1: f64,
}

pub fn chart(series: &[Vec<(f64, f64)>], reference: Option<f64>, w: f64, h: f64) -> Chart {
    let all = series.iter().flatten();
    let t0 = all.clone().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let t1 = all.clone().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let max = all.map(|p| p.1).fold(reference.unwrap_or(0.0), f64::max);
    let top = nice_ceiling(max);
    let span = if t1 > t0 { t1 - t0 } else { 1.0 };
    let lines = series
        .iter()
        .map(|pts| {
            pts.iter()
                .map(|(t, v)| {
                    let x = if t1 > t0 {
                        (t - t0) / span * w
                    } else {
                        w / 2.0
                    };
                    let y = h - (v / top).clamp(0.0, 1.0) * h;
                    format!("{x:.1},{y:.1}")
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    Chart { lines, top, t0, t1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(line: &str) -> Vec<(&'static str, String)> {
        highlight_line(line)
            .into_iter()
            .filter(|(c, t)| !c.is_empty() || !t.trim().is_empty())
            .collect()
    }

    #[test]
    fn keys_values_comments_and_strings_are_told_apart() {
        let spans = classes("peers: 3   # how many");
        assert_eq!(spans[0], ("tok-key", "peers".into()));
        assert_eq!(spans[2].0, "tok-number");
        assert_eq!(spans.last().unwrap(), &("tok-comment", "# how many".into()));
        let spans = classes("  - {name: LD_PRELOAD, value: \"a#b\"}");
        assert!(spans.contains(&("tok-key", "name".into())), "{spans:?}");
        assert!(
            spans.contains(&("tok-string", "\"a#b\"".into())),
            "{spans:?}"
        );
        assert_eq!(classes("---"), vec![("tok-doc", "---".into())]);
        assert_eq!(
            classes("# only a comment"),
            vec![("tok-comment", "# only a comment".into())]
        );
        assert!(classes("master: auto").contains(&("tok-keyword", " auto".into())));
    }

    #[test]
    fn highlighting_keeps_every_character() {
        for line in [
            "name: role 1",
            "  k3_globals: {role: rows, master: auto}",
            "mem: \".*\" # odd",
            "hostmask: 'qp[0-9]'",
            "   - x",
            "url: http://a:b",
            "",
        ] {
            let joined: String = highlight_line(line).into_iter().map(|(_, t)| t).collect();
            assert_eq!(joined, line);
        }
    }

    #[test]
    fn markers_show_the_worst_problem_on_each_line() {
        let d = |line, severity| Diagnostic {
            severity,
            line,
            column: 1,
            path: String::new(),
            message: String::new(),
        };
        let m = line_markers(&[
            d(2, Severity::Warning),
            d(2, Severity::Error),
            d(5, Severity::Warning),
        ]);
        assert_eq!(m.get(&2), Some(&Severity::Error));
        assert_eq!(m.get(&5), Some(&Severity::Warning));
        assert_eq!(m.get(&1), None);
    }

    #[test]
    fn cursor_offsets_count_utf16_units() {
        let text = "ab\né€𝄞x\nz";
        assert_eq!(utf16_offset(text, 1, 1), 0);
        assert_eq!(utf16_offset(text, 2, 1), 3);
        assert_eq!(utf16_offset(text, 2, 4), 3 + 1 + 1 + 2);
        assert_eq!(utf16_offset(text, 3, 1), 3 + 6);
        assert_eq!(utf16_offset(text, 9, 1), 10);
    }

    #[test]
    fn times_and_sizes_read_well() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0 * 1024.0), "1.5 MiB");
        assert_eq!(human_duration(75.0), "1m 15s");
        assert_eq!(human_duration(f64::INFINITY), "—");
        let a = parse_time_ms("2026-11-22T23:28:36.5Z").unwrap();
        let b = parse_time_ms("2026-11-23T00:28:36.5Z").unwrap();
        assert_eq!(b - a, 3_600_000.0);
        assert_eq!(parse_time_ms("1970-01-01T00:00:01Z"), Some(1000.0));
    }

    #[test]
    fn chart_tops_are_round_and_points_fit_the_box() {
        assert_eq!(nice_ceiling(0.97), 1.0);
        assert_eq!(nice_ceiling(1.3), 2.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(671_154_176.0), 1e9);
        assert_eq!(nice_ceiling(0.0), 1.0);
        let c = chart(
            &[vec![(1000.0, 0.5), (2000.0, 1.0)], vec![(1500.0, 0.25)]],
            Some(1.5),
            100.0,
            50.0,
        );
        assert_eq!(c.top, 2.0);
        assert_eq!((c.t0, c.t1), (1000.0, 2000.0));
        assert_eq!(c.lines[0], "0.0,37.5 100.0,25.0");
        assert_eq!(c.lines[1], "50.0,43.8");
        // One point alone sits in the middle.
        assert_eq!(
            chart(&[vec![(5.0, 1.0)]], None, 100.0, 50.0).lines[0],
            "50.0,0.0"
        );
    }
}
