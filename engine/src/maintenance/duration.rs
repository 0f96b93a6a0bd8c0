//! The one reader of durations typed by people: `prune --grace`,
//! `restore --wait-timeout` and `keep-within` (retention).
//!
//! A duration is one or more terms, each a number followed by a unit, with
//! nothing before, between or after them. [`terms`] splits a text into terms
//! and explains what is wrong with one that is not; the callers decide which
//! units they take and what they mean:
//!
//! - [`parse_duration`], a fixed length of time: `ns`, `us` (`µs`), `ms`,
//!   `s`, `m` (minutes), `h`, `d` (24 hours); decimal numbers (`1.5h`), a
//!   leading `+`, and the bare `0`. Both earlier readers' forms are accepted
//!   (`30m`, `1d12h` for `--grace`; Go's `300ms`, `1m30s`, `1.5h`, `+5m` for
//!   `--wait-timeout`).
//! - [`crate::maintenance::retention::KeepWithin`], a calendar duration: `y`, `m`
//!   (months), `w`, `d`, `h`, whole numbers, each unit at most once.
//!
//! An empty text is never a duration (it used to read as zero).

use std::time::Duration;

use crate::error::Error;

/// One `<number><unit>` of a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term<'a> {
    pub number: &'a str,
    pub unit: &'a str,
}

/// Splits `input` into terms whose unit is one of `units` (longest match
/// first, so `ms` is not read as `m` then `s`). Numbers are ASCII digits,
/// and `.` when `fractions` is set (the caller reads the number). The error is the reason, for the
/// caller's message.
pub fn terms<'a>(input: &'a str, units: &[&str], fractions: bool) -> Result<Vec<Term<'a>>, String> {
    if input.is_empty() {
        return Err("it is empty".to_string());
    }
    let unit_at = |s: &'a str| -> Option<&'a str> {
        units
            .iter()
            .filter(|u| s.starts_with(**u))
            .max_by_key(|u| u.len())
            .map(|u| &s[..u.len()])
    };
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || (fractions && c == '.')))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(end);
        let next = after.chars().next();
        if number.is_empty() {
            return Err(match (unit_at(after), next) {
                (Some(u), _) => format!("unit '{u}' has no number before it"),
                (None, Some(c)) => format!("unexpected character {c:?}"),
                (None, None) => unreachable!("rest is not empty"),
            });
        }
        let Some(c) = next else {
            return Err(format!("the number {number} has no unit"));
        };
        let Some(unit) = unit_at(after) else {
            return Err(format!("unknown unit {c:?} after {number}"));
        };
        out.push(Term { number, unit });
        rest = &after[unit.len()..];
    }
    Ok(out)
}

const FIXED_UNITS: [(&str, f64); 9] = [
    ("ns", 1e-9),
    ("us", 1e-6),
    ("µs", 1e-6),
    ("μs", 1e-6),
    ("ms", 1e-3),
    ("s", 1.0),
    ("m", 60.0),
    ("h", 3600.0),
    ("d", 86400.0),
];

/// A fixed length of time such as `90s`, `30m`, `24h`, `7d`, `1d12h`,
/// `1.5h`, `300ms`, or `0`. Surrounding white space is ignored.
pub fn parse_duration(input: &str) -> Result<Duration, Error> {
    let fail = |reason: String| {
        Error::Invalid(format!(
            "invalid duration {input:?}: {reason}; write numbers followed by s, m (minutes), h or d, for example 90s, 30m, 24h, 1d12h or 1.5h (0 for none)"
        ))
    };
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let names = FIXED_UNITS.map(|(n, _)| n);
    let mut seconds = 0f64;
    for t in terms(s, &names, true).map_err(fail)? {
        let n: f64 = t
            .number
            .parse()
            .map_err(|_| fail(format!("{} is not a number", t.number)))?;
        let unit = FIXED_UNITS
            .iter()
            .find(|(name, _)| *name == t.unit)
            .map_or(0.0, |(_, secs)| *secs);
        seconds += n * unit;
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| fail("it is too long".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_the_earlier_readers_took_is_still_read() {
        let s = Duration::from_secs;
        for (text, want) in [
            // prune --grace
            ("0", s(0)),
            (" 24h ", s(86400)),
            ("30m", s(1800)),
            ("7d", s(7 * 86400)),
            ("1d12h", s(36 * 3600)),
            ("90s", s(90)),
            ("0s", s(0)),
            // restore --wait-timeout (Go durations)
            ("1m30s", s(90)),
            ("1h2m3s", s(3723)),
            ("1.5s", Duration::from_millis(1500)),
            ("250ms", Duration::from_millis(250)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("+5m", s(300)),
            (".5h", s(1800)),
        ] {
            assert_eq!(parse_duration(text).unwrap(), want, "{text:?}");
        }
    }

    #[test]
    fn empty_and_garbage_are_refused_with_the_reason() {
        for (text, why) in [
            ("", "it is empty"),
            ("  ", "it is empty"),
            ("+", "it is empty"),
            ("12", "the number 12 has no unit"),
            ("h", "unit 'h' has no number before it"),
            ("-5m", "unexpected character '-'"),
            ("5 m", "unknown unit ' ' after 5"),
            ("3w", "unknown unit 'w' after 3"),
            ("1..5h", "1..5 is not a number"),
            ("5h!", "unexpected character '!'"),
            ("99999999999999999999d", "too long"),
        ] {
            let err = parse_duration(text).unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err}");
            assert!(err.contains(&format!("{text:?}")), "{text:?}: {err}");
        }
    }
}
