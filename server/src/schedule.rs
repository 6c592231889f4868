//! When a schedule runs: an ISO 8601 repeating interval as Chronos writes
//! it (`R/2026-12-01T02:00:00Z/P1D`, `R5/2026-12-01T02:00:00+01:00/PT30M`),
//! or a five-field cron expression read in an IANA time zone
//! (`0 2 * * 1-5` in `Europe/Berlin`). Pure: the next run after an instant.
//!
//! An interval's runs are `start + k × period` for `k = 0, 1, ...` (fewer
//! than `n` with `R<n>`), computed from the start each time so that `P1M`
//! from January 31st gives February 28th then March 31st, not a drift. Its
//! days and months are counted in the start's own offset.
//!
//! Cron fields are minute, hour, day of month, month, day of week (0 or 7
//! is Sunday; names `JAN`..`DEC`, `SUN`..`SAT`), each `*`, a value, a range
//! `a-b`, a step `*/n` or `a-b/n`, or a list of those; `@hourly`, `@daily`
//! (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`) stand for
//! the usual lines. When both day fields are restricted a day matching
//! either runs (as Vixie cron does). Times are the zone's wall-clock times:
//! one that a spring-forward skips runs at the first instant after the gap;
//! one that a fall-back repeats runs once, the first time.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};

#[derive(Clone, Debug)]
pub enum When {
    Interval {
        /// How many runs in all (`R5`); none for `R`.
        count: Option<u64>,
        start: Zoned,
        period: Span,
    },
    Cron {
        cron: Cron,
        tz: TimeZone,
    },
}

impl When {
    /// Reads `R[n]/<start>/<period>`.
    pub fn interval(text: &str) -> Result<When, String> {
        let parts: Vec<&str> = text.trim().split('/').collect();
        let [r, start, period] = parts[..] else {
            return Err(format!(
                "{text:?} is not a repeating interval: write R[n]/<start>/<period>, e.g. R/2026-12-01T02:00:00Z/P1D"
            ));
        };
        let count = match r.strip_prefix('R') {
            Some("") => None,
            Some(n) => Some(n.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("{r:?}: the repetitions must be R or R<n> with n at least 1")
            })?),
            None => {
                return Err(format!(
                    "{r:?}: a repeating interval starts with R (R5 for five runs, R for no end)"
                ))
            }
        };
        let pieces = jiff::fmt::temporal::Pieces::parse(start)
            .map_err(|e| format!("start {start:?}: {e}"))?;
        let offset = pieces.to_numeric_offset().ok_or_else(|| {
            format!("start {start:?}: give its offset (Z or +01:00), e.g. 2026-12-01T02:00:00Z")
        })?;
        let ts: Timestamp = start.parse().map_err(|e| format!("start {start:?}: {e}"))?;
        let start_z = ts.to_zoned(TimeZone::fixed(offset));
        let period_span: Span = period.parse().map_err(|e| {
            format!("period {period:?} is not an ISO 8601 duration like P1D or PT30M: {e}")
        })?;
        if period_span.is_zero() || period_span.is_negative() {
            return Err(format!("period {period:?} must be longer than zero"));
        }
        let second = start_z
            .checked_add(period_span)
            .map_err(|e| format!("period {period:?}: {e}"))?;
        if second.timestamp().as_second() - ts.as_second() < 1 {
            return Err(format!(
                "period {period:?}: runs must be at least a second apart"
            ));
        }
        Ok(When::Interval {
            count,
            start: start_z,
            period: period_span,
        })
    }

    /// Reads a cron line in a time zone (`UTC` when none is named).
    pub fn cron(text: &str, tz: Option<&str>) -> Result<When, String> {
        let tz = match tz.map(str::trim).filter(|t| !t.is_empty()) {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name)
                .map_err(|_| format!("time zone {name:?} is not one this machine knows (an IANA name like Europe/Berlin, or UTC)"))?,
        };
        Ok(When::Cron {
            cron: Cron::parse(text)?,
            tz,
        })
    }

    /// The first run strictly after `t`, if any is left.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            When::Interval {
                count,
                start,
                period,
            } => {
                let at = |k: i64| -> Option<Timestamp> {
                    let span = period.checked_mul(k).ok()?;
                    Some(start.checked_add(span).ok()?.timestamp())
                };
                if start.timestamp() > t {
                    return Some(start.timestamp());
                }
                // The runs grow with k: find the first after t by doubling,
                // then bisecting.
                let (mut lo, mut hi) = (0i64, 1i64);
                loop {
                    match at(hi) {
                        Some(x) if x > t => break,
                        Some(_) => {
                            lo = hi;
                            hi = hi.checked_mul(2)?;
                        }
                        None => return None,
                    }
                }
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if at(mid)? > t {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                if count.is_some_and(|n| hi as u64 >= n) {
                    return None;
                }
                at(hi)
            }
            When::Cron { cron, tz } => cron.next_after(t, tz),
        }
    }

    /// Up to `n` runs after `t`.
    pub fn next_runs(&self, mut t: Timestamp, n: usize) -> Vec<Timestamp> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next_after(t) {
                Some(x) => {
                    out.push(x);
                    t = x;
                }
                None => break,
            }
        }
        out
    }
}

/// A parsed cron line: the allowed values of each field as bit sets.
#[derive(Clone, Debug, PartialEq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_any: bool,
    weekdays_any: bool,
}

const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Cron {
    pub fn parse(text: &str) -> Result<Cron, String> {
        let line = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            t if t.starts_with('@') => {
                return Err(format!(
                    "{t:?} is not a cron macro (@hourly, @daily, @weekly, @monthly, @yearly)"
                ))
            }
            t => t,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "{text:?} has {} fields; a cron line has 5: minute hour day-of-month month day-of-week (e.g. \"0 2 * * *\")",
                fields.len()
            ));
        }
        let mut sets = [0u64; 5];
        for (i, f) in fields.iter().enumerate() {
            sets[i] = field(f, i)?;
        }
        let mut weekdays = sets[4] as u8;
        if weekdays & 0x80 != 0 {
            weekdays = (weekdays & 0x7f) | 1; // 7 is Sunday too
        }
        Ok(Cron {
            minutes: sets[0],
            hours: sets[1] as u32,
            days: sets[2] as u32,
            months: sets[3] as u16,
            weekdays,
            days_any: fields[2] == "*" || fields[2] == "?",
            weekdays_any: fields[4] == "*" || fields[4] == "?",
        })
    }

    fn day_ok(&self, dt: DateTime) -> bool {
        let dom = self.days & (1 << dt.day()) != 0;
        let dow = self.weekdays & (1 << dt.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    pub fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = t.to_zoned(tz.clone()).datetime();
        let mut dt = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(Span::new().minutes(1))
            .ok()?;
        // Within five years every line that can run has (Feb 29 on a
        // Monday takes the longest); one that has not never will.
        let horizon = local.year() + 5;
        for _ in 0..200_000 {
            if dt.year() > horizon {
                return None;
            }
            if self.months & (1 << dt.month()) == 0 {
                dt = dt
                    .first_of_month()
                    .checked_add(Span::new().months(1))
                    .ok()?
                    .with()
                    .hour(0)
                    .minute(0)
                    .build()
                    .ok()?;
                continue;
            }
            if !self.day_ok(dt) {
                dt = dt
                    .date()
                    .tomorrow()
                    .ok()?
                    .to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if self.hours & (1 << dt.hour()) == 0 {
                dt = dt
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(Span::new().hours(1))
                    .ok()?;
                continue;
            }
            if self.minutes & (1 << dt.minute()) == 0 {
                dt = dt.checked_add(Span::new().minutes(1)).ok()?;
                continue;
            }
            let at = tz.to_ambiguous_zoned(dt).compatible().ok()?.timestamp();
            if at > t {
                return Some(at);
            }
            dt = dt.checked_add(Span::new().minutes(1)).ok()?;
        }
        None
    }
}

fn value(text: &str, i: usize) -> Result<u32, String> {
    let (name, lo, hi) = FIELDS[i];
    let up = text.to_ascii_uppercase();
    let named = match i {
        3 => MONTHS.iter().position(|m| *m == up).map(|p| p as u32 + 1),
        4 => DAYS.iter().position(|d| *d == up).map(|p| p as u32),
        _ => None,
    };
    let v = match named {
        Some(v) => v,
        None => text
            .parse::<u32>()
            .map_err(|_| format!("cron {name} {text:?} is not a number"))?,
    };
    if v < lo || v > hi {
        return Err(format!("cron {name} {v} is out of range ({lo}-{hi})"));
    }
    Ok(v)
}

fn field(text: &str, i: usize) -> Result<u64, String> {
    let (name, lo, hi) = FIELDS[i];
    let mut set = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("cron {name} step {s:?} must be a whole number above 0")
                })?;
                (r, s)
            }
            None => (part, 1),
        };
        let (a, b) = match range {
            "*" | "?" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (value(a, i)?, value(b, i)?);
                    if a > b {
                        return Err(format!("cron {name} range {r:?} runs backwards"));
                    }
                    (a, b)
                }
                // `5/15` is "from 5, every 15".
                None if step > 1 => (value(r, i)?, hi),
                None => {
                    let v = value(r, i)?;
                    (v, v)
                }
            },
        };
        let mut v = a;
        while v <= b {
            set |= 1 << v;
            v += step;
        }
    }
    if set == 0 {
        return Err(format!("cron {name} {text:?} allows no value"));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn runs(w: &When, after: &str, n: usize) -> Vec<String> {
        w.next_runs(ts(after), n)
            .into_iter()
            .map(|t| t.to_string())
            .collect()
    }

    #[test]
    fn a_chronos_interval_runs_from_its_start_by_its_period() {
        let w = When::interval("R/2026-12-01T02:00:00Z/P1D").unwrap();
        assert_eq!(
            runs(&w, "2026-11-01T00:00:00Z", 2),
            ["2026-12-01T02:00:00Z", "2026-12-02T02:00:00Z"]
        );
        assert_eq!(
            runs(&w, "2027-03-15T02:00:00Z", 1),
            ["2027-03-16T02:00:00Z"],
            "strictly after"
        );
        let five = When::interval("R5/2026-12-01T00:00:00+01:00/PT30M").unwrap();
        assert_eq!(
            runs(&five, "2026-11-30T23:40:00Z", 10),
            [
                "2026-12-01T00:00:00Z",
                "2026-12-01T00:30:00Z",
                "2026-12-01T01:00:00Z"
            ],
            "five runs in all from 23:00Z: the last three are left"
        );
        let monthly = When::interval("R/2027-01-31T12:00:00Z/P1M").unwrap();
        assert_eq!(
            runs(&monthly, "2027-01-31T12:00:00Z", 2),
            ["2027-02-28T12:00:00Z", "2027-03-31T12:00:00Z"],
            "counted from the start: no drift after February"
        );
        let fast = When::interval("R/2026-01-01T00:00:00Z/PT2S").unwrap();
        assert_eq!(
            runs(&fast, "2026-12-04T21:00:01Z", 1),
            ["2026-12-04T21:00:02Z"]
        );
    }

    #[test]
    fn bad_intervals_say_what_is_wrong() {
        for (text, says) in [
            ("2026-12-01T02:00:00Z/P1D", "R[n]/<start>/<period>"),
            ("X/2026-12-01T02:00:00Z/P1D", "starts with R"),
            ("R0/2026-12-01T02:00:00Z/P1D", "at least 1"),
            ("R/2026-12-01T02:00:00/P1D", "offset"),
            ("R/yesterday/P1D", "start \"yesterday\""),
            ("R/2026-12-01T02:00:00Z/1D", "ISO 8601 duration"),
            ("R/2026-12-01T02:00:00Z/PT0S", "longer than zero"),
            ("R/2026-12-01T02:00:00Z/PT0.5S", "a second apart"),
        ] {
            let e = When::interval(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn cron_lines_run_on_their_fields_in_their_zone() {
        let w = When::cron("0 2 * * 1-5", Some("Europe/Berlin")).unwrap();
        // Friday 2026-12-04 02:00 in Berlin is 01:00Z; next are Monday, Tuesday.
        assert_eq!(
            runs(&w, "2026-12-04T00:00:00Z", 3),
            [
                "2026-12-04T01:00:00Z",
                "2026-12-07T01:00:00Z",
                "2026-12-08T01:00:00Z"
            ]
        );
        let every = When::cron("*/15 9-10 * * *", None).unwrap();
        assert_eq!(
            runs(&every, "2026-12-04T10:40:00Z", 3),
            [
                "2026-12-04T10:45:00Z",
                "2026-12-05T09:00:00Z",
                "2026-12-05T09:15:00Z"
            ]
        );
        // Day of month or day of week when both are given; names work.
        let either = When::cron("0 0 13 * FRI", None).unwrap();
        assert_eq!(
            runs(&either, "2026-12-04T00:00:00Z", 3),
            [
                "2026-12-11T00:00:00Z",
                "2026-12-13T00:00:00Z",
                "2026-12-18T00:00:00Z"
            ]
        );
        assert_eq!(
            runs(
                &When::cron("0 0 30 2 *", None).unwrap(),
                "2026-12-04T00:00:00Z",
                1
            ),
            Vec::<String>::new()
        );
        let leap = When::cron("0 0 29 FEB *", None).unwrap();
        assert_eq!(
            runs(&leap, "2026-12-04T00:00:00Z", 1),
            ["2028-02-29T00:00:00Z"]
        );
        assert_eq!(
            runs(
                &When::cron("@daily", None).unwrap(),
                "2026-12-04T00:00:00Z",
                1
            ),
            ["2026-12-05T00:00:00Z"]
        );
    }

    #[test]
    fn cron_across_daylight_saving_runs_once_and_never_in_a_gap() {
        let w = When::cron("30 2 * * *", Some("Europe/Berlin")).unwrap();
        // 2027-03-28: 02:00 jumps to 03:00; 02:30 does not exist that day.
        assert_eq!(
            runs(&w, "2027-03-27T12:00:00Z", 2),
            ["2027-03-28T01:30:00Z", "2027-03-29T00:30:00Z"],
            "the skipped time runs at the first instant after the gap (03:30 CEST)"
        );
        // 2027-10-31: 03:00 falls back to 02:00; 02:30 happens twice.
        assert_eq!(
            runs(&w, "2027-10-30T12:00:00Z", 2),
            ["2027-10-31T00:30:00Z", "2027-11-01T01:30:00Z"],
            "once, the first time"
        );
    }

    #[test]
    fn bad_cron_lines_say_what_is_wrong() {
        for (text, tz, says) in [
            ("0 2 * *", None, "has 4 fields"),
            ("0 25 * * *", None, "hour 25 is out of range (0-23)"),
            ("x * * * *", None, "minute \"x\" is not a number"),
            ("0 0 * FOO *", None, "month \"FOO\""),
            ("*/0 * * * *", None, "step \"0\""),
            ("0 5-2 * * *", None, "runs backwards"),
            ("@often", None, "not a cron macro"),
            (
                "0 2 * * *",
                Some("Mars/Olympus"),
                "time zone \"Mars/Olympus\"",
            ),
        ] {
            let e = When::cron(text, tz).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        assert!(When::cron("0 0 * * 7", None).is_ok(), "7 is Sunday");
    }
}
