//! Cron expressions: when a scheduled job runs.
//!
//! Five fields, `minute hour day-of-month month day-of-week`, each `*`, a
//! number, a range `a-b`, a list `a,b,c`, a step `*/n` or `a-b/n`; months
//! and weekdays also by their English names (`jan`, `mon`; Sunday is 0 or
//! 7). The macros `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly`,
//! `@yearly` (`@annually`). As in Vixie cron, when both day fields are
//! restricted a day matches if either does. Times are civil times in the
//! schedule's time zone: a time that a DST change skips runs at the first
//! instant after the gap, a repeated hour runs once.

use std::fmt;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

/// A parsed expression.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Whether each day field was `*` (for the either-day rule).
    any_day: bool,
    any_weekday: bool,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.text)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Cron {
    /// Parses `text`; the error names the field and what is wrong.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let trimmed = text.trim();
        let expanded = match trimmed {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            s if s.starts_with('@') => {
                return Err(format!(
                    "cron `{text}`: unknown macro; use @hourly, @daily, @weekly, @monthly or @yearly"
                ));
            }
            s => s,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "cron `{text}`: {} field(s); a cron expression has 5: minute hour day-of-month month day-of-week (e.g. `30 2 * * *`)",
                fields.len()
            ));
        }
        let field = |i: usize, name: &str, lo: u32, hi: u32, names: &[&str], base: u32| {
            parse_field(fields[i], lo, hi, names, base)
                .map_err(|e| format!("cron `{text}`: {name} `{}`: {e}", fields[i]))
        };
        let mut weekdays = field(4, "day-of-week", 0, 7, &WEEKDAYS, 0)?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Cron {
            text: trimmed.to_owned(),
            minutes: field(0, "minute", 0, 59, &[], 0)?,
            hours: field(1, "hour", 0, 23, &[], 0)?,
            days: field(2, "day-of-month", 1, 31, &[], 0)?,
            months: field(3, "month", 1, 12, &MONTHS, 1)?,
            weekdays,
            any_day: fields[2] == "*",
            any_weekday: fields[4] == "*",
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first time strictly after `after` that matches, in `tz`; `None`
    /// when none does within 8 years (e.g. `0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone()).datetime();
        // The next whole minute after `after`.
        let mut t = start
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = start.checked_add(8.years()).ok()?;
        while t <= limit {
            if self.months & (1 << t.month()) == 0 {
                t = first_of_next_month(t)?;
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t.date().tomorrow().ok()?.to_datetime(Time::midnight());
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            let at = resolve(t, tz)?;
            if at > after {
                return Some(at);
            }
            // A repeated hour (DST ended): its civil time maps before `after`.
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }

    /// The last matching time at or before `at` and after `since`, if any:
    /// the run a scheduler that was down has missed.
    pub fn last_between(
        &self,
        since: Timestamp,
        at: Timestamp,
        tz: &TimeZone,
    ) -> Option<Timestamp> {
        let mut last = None;
        let mut t = since;
        while let Some(n) = self.next_after(t, tz) {
            if n > at {
                break;
            }
            last = Some(n);
            t = n;
        }
        last
    }
}

fn first_of_next_month(t: DateTime) -> Option<DateTime> {
    let first = t.date().first_of_month();
    Some(
        first
            .checked_add(1.month())
            .ok()?
            .to_datetime(Time::midnight()),
    )
}

/// The instant of civil time `t` in `tz`: the earlier of a repeated time,
/// the first instant after a skipped one.
fn resolve(t: DateTime, tz: &TimeZone) -> Option<Timestamp> {
    let z: Zoned = tz.to_ambiguous_zoned(t).compatible().ok()?;
    Some(z.timestamp())
}

/// One field as a bit set over `lo..=hi`.
/// `names[i]` stands for `base + i`.
fn parse_field(s: &str, lo: u32, hi: u32, names: &[&str], base: u32) -> Result<u64, String> {
    let value = |v: &str| -> Result<u32, String> {
        let lower = v.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            // Month names count from 1, weekday names from 0.
            return Ok(i as u32 + base);
        }
        let n: u32 = v
            .parse()
            .map_err(|_| format!("`{v}` is not a number{}", name_hint(names)))?;
        if n < lo || n > hi {
            return Err(format!("{n} is outside {lo}-{hi}"));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for part in s.split(',') {
        if part.is_empty() {
            return Err("an empty list item".into());
        }
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => {
                let step: u32 = st
                    .parse()
                    .map_err(|_| format!("step `{st}` is not a number"))?;
                if step == 0 {
                    return Err("a step of 0".into());
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (a, b) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None if step > 1 => (value(r)?, hi),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        if a > b {
            return Err(format!("the range {a}-{b} runs backwards"));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

fn name_hint(names: &[&str]) -> String {
    match names.len() {
        0 => String::new(),
        _ => format!(" or one of {}", names.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(expr: &str, after: &str) -> String {
        Cron::parse(expr)
            .unwrap()
            .next_after(ts(after), &TimeZone::UTC)
            .map(|t| t.to_string())
            .unwrap_or_else(|| "none".into())
    }

    #[test]
    fn next_times_of_common_expressions() {
        assert_eq!(
            next("*/15 * * * *", "2026-12-04T12:07:30Z"),
            "2026-12-04T12:15:00Z"
        );
        assert_eq!(
            next("0 * * * *", "2026-12-04T12:00:00Z"),
            "2026-12-04T13:00:00Z"
        );
        assert_eq!(
            next("30 2 * * *", "2026-12-04T02:30:00Z"),
            "2026-12-05T02:30:00Z"
        );
        assert_eq!(
            next("@daily", "2026-12-31T23:59:59Z"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            next("0 3 * * sun", "2026-12-04T12:00:00Z"),
            "2026-12-06T03:00:00Z"
        );
        assert_eq!(
            next("0 3 * * 7", "2026-12-04T12:00:00Z"),
            "2026-12-06T03:00:00Z"
        );
        assert_eq!(
            next("0 0 29 feb *", "2026-03-01T00:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
        assert_eq!(next("0 0 30 2 *", "2026-01-01T00:00:00Z"), "none");
        // Either day field matches when both are restricted (Vixie cron).
        assert_eq!(
            next("0 0 13 * fri", "2026-12-04T12:00:00Z"),
            "2026-12-11T00:00:00Z"
        );
        assert_eq!(
            next("0 9-17/4 * * mon-fri", "2026-12-04T13:00:00Z"),
            "2026-12-04T17:00:00Z"
        );
        assert_eq!(
            next("5,10 4 1 jan,jul *", "2026-12-04T00:00:00Z"),
            "2027-01-01T04:05:00Z"
        );
    }

    #[test]
    fn daylight_saving_gaps_and_repeats() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let c = Cron::parse("30 2 * * *").unwrap();
        // 2027-03-28 02:00 → 03:00 in Berlin: 02:30 does not exist that day.
        let at = c.next_after(ts("2027-03-27T12:00:00Z"), &tz).unwrap();
        assert_eq!(
            at.to_zoned(tz.clone()).to_string(),
            "2027-03-28T03:30:00+02:00[Europe/Berlin]"
        );
        // 2027-10-31 03:00 → 02:00: 02:30 happens twice, the job runs once.
        let first = c.next_after(ts("2027-10-30T12:00:00Z"), &tz).unwrap();
        let second = c.next_after(first, &tz).unwrap();
        assert_eq!(
            first.to_string(),
            "2027-10-31T00:30:00Z",
            "the first 02:30 (CEST)"
        );
        assert_eq!(
            second.to_zoned(tz.clone()).to_string(),
            "2027-11-01T02:30:00+01:00[Europe/Berlin]",
            "not the repeated 02:30 (CET) of the same day"
        );
    }

    #[test]
    fn bad_expressions_name_the_field() {
        for (expr, says) in [
            ("* * * *", "4 field(s)"),
            ("60 * * * *", "minute `60`: 60 is outside 0-59"),
            ("* 24 * * *", "hour `24`"),
            ("* * 0 * *", "day-of-month `0`"),
            ("* * * 13 *", "month `13`"),
            ("* * * * 8", "day-of-week `8`"),
            ("*/0 * * * *", "a step of 0"),
            ("5-1 * * * *", "runs backwards"),
            ("* * * foo *", "one of jan"),
            ("1,,2 * * * *", "empty list item"),
            ("@often", "unknown macro"),
        ] {
            let e = Cron::parse(expr).unwrap_err();
            assert!(e.contains(says), "{expr}: {e}");
        }
    }

    #[test]
    fn the_missed_run_is_the_last_slot_before_now() {
        let c = Cron::parse("0 */6 * * *").unwrap();
        let tz = TimeZone::UTC;
        assert_eq!(
            c.last_between(ts("2026-12-04T01:00:00Z"), ts("2026-12-04T13:00:00Z"), &tz),
            Some(ts("2026-12-04T12:00:00Z"))
        );
        assert_eq!(
            c.last_between(ts("2026-12-04T12:00:00Z"), ts("2026-12-04T13:00:00Z"), &tz),
            None
        );
    }
}
