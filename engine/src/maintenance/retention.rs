//! Retention policy: which snapshots `forget` keeps, and why.
//!
//! The caller hands over a list of [`SnapshotInfo`], a [`KeepPolicy`], a
//! [`GroupBy`] and the time zone in which calendar buckets are computed;
//! [`decide`] answers with one [`Decision`] per snapshot. Nothing is deleted
//! here: the caller removes the snapshots whose decision says `keep: false`.
//!
//! # How a decision is made
//!
//! Snapshots are split into groups ([`GroupBy`], by default the source). Each
//! group is walked newest first; snapshots with identical times are ordered
//! by id, the smallest id counting as the newer one, so the outcome never
//! depends on the order of the input. A snapshot is kept when at least one
//! rule keeps it, and its decision lists every rule that did:
//!
//! - `last`: the `keep_last` newest snapshots of the group.
//! - `hourly`, `daily`, `weekly`, `monthly`, `yearly`: each calendar rule
//!   keeps the newest snapshot of every distinct bucket it meets, until it has
//!   kept its count of buckets. Weeks are ISO 8601 weeks, keyed by ISO
//!   week-year and week number, so 2026-12-31 and 2027-01-01 share the week
//!   2026-W53. Years and months are calendar years and months.
//! - `within`: every snapshot no older than the `keep_within` duration
//!   measured back from the group's newest snapshot (not from now). The
//!   boundary is inclusive. Years, months, weeks and days are subtracted on
//!   the wall clock of the time zone (2026-03-31 minus one month is
//!   2026-02-28, a day across a DST change may last 23 or 25 hours); hours are
//!   elapsed time. A cutoff that falls before the earliest representable
//!   instant keeps the whole group.
//! - `tag:<name>`: every snapshot carrying a tag named in `keep_tags`, one
//!   reason per matching tag, in the order of the policy.
//!
//! A count of 0, a zero `keep_within` and an empty `keep_tags` each switch
//! their rule off. A policy with no rule switched on is refused by
//! [`KeepPolicy::validate`] (and so by [`decide`]): it would remove
//! everything.
//!
//! # Calendar buckets and daylight saving time
//!
//! Buckets are read off the wall clock of the time zone passed in. Days,
//! weeks, months and years follow the local date, so a 23-hour or 25-hour day
//! is still one day. An hour bucket is the local date and hour *together with
//! the UTC offset*: in the autumn, when the clock repeats an hour, 02:30 before
//! the change and 02:30 an hour later are two buckets, and no hour bucket ever
//! spans more than one real hour. A local hour skipped in the spring has no
//! bucket at all. Buckets are remembered as a set, so a bucket met twice (a
//! zone that steps back across midnight) is still counted once.
//!
//! # Output order
//!
//! Decisions come grouped: groups in ascending [`GroupKey`] order, and within
//! a group newest first, in the walk order described above.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde::{Deserialize, Serialize};

/// Everything that can go wrong when building or applying a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// The policy has no rule switched on.
    #[error(
        "refusing to forget with a policy that keeps nothing: every snapshot would be removed; \
         pass at least one --keep-* option (for example --keep-last 1); a count of 0 switches a rule off"
    )]
    EmptyPolicy,
    /// A `keep_tags` entry is empty.
    #[error(
        "empty --keep-tag (keep_tags entry): no snapshot carries an empty tag, so the rule would \
         keep nothing; name a tag (list them with `pvsnap snapshots`) or leave the option out"
    )]
    EmptyTag,
    /// A `keep_within` string could not be read.
    #[error(
        "invalid keep-within duration {input:?}: {reason}; write numbers followed by \
         y (years), m (months), w (weeks), d (days) or h (hours), for example \"1y2m3d4h\""
    )]
    InvalidWithin { input: String, reason: String },
    /// A group-by string named an unknown criterion.
    #[error(
        "invalid group-by {input:?}: unknown criterion {item:?}; use a comma-separated list of \
         source, host and tags, or an empty string to put all snapshots in one group"
    )]
    InvalidGroupBy { input: String, item: String },
    /// The same snapshot id was passed twice.
    #[error("snapshot {id:?} is listed more than once; pass each snapshot once")]
    DuplicateSnapshotId { id: String },
}

/// What the policy needs to know about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub id: String,
    pub time: Timestamp,
    pub tags: Vec<String>,
    pub source: String,
    pub host: String,
}

/// A `keep_within` duration such as `1y2m3d4h`.
///
/// Units: `y` years, `m` months, `w` weeks, `d` days, `h` hours; each at most
/// once, in any order. It serializes as its canonical string (units in the
/// order y, m, w, d, h; zero parts left out; `0h` when all are zero).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeepWithin {
    years: u32,
    months: u32,
    weeks: u32,
    days: u32,
    hours: u32,
    /// Built from the parts above at construction, so always in jiff's range.
    span: Span,
}

impl KeepWithin {
    /// Builds a duration from its parts, refusing one beyond jiff's range.
    pub fn new(
        years: u32,
        months: u32,
        weeks: u32,
        days: u32,
        hours: u32,
    ) -> Result<Self, RetentionError> {
        let parts = [years, months, weeks, days, hours];
        Self::from_parts(parts).map_err(|reason| RetentionError::InvalidWithin {
            input: canonical(parts),
            reason,
        })
    }

    fn from_parts(parts: [u32; 5]) -> Result<Self, String> {
        let [years, months, weeks, days, hours] = parts;
        let span = Span::new()
            .try_years(years)
            .and_then(|s| s.try_months(months))
            .and_then(|s| s.try_weeks(weeks))
            .and_then(|s| s.try_days(days))
            .and_then(|s| s.try_hours(hours))
            .map_err(|e| format!("the duration is too long ({e})"))?;
        Ok(Self {
            years,
            months,
            weeks,
            days,
            hours,
            span,
        })
    }

    /// The duration as a jiff span (calendar units plus hours).
    pub fn span(&self) -> Span {
        self.span
    }

    /// True when every part is zero: such a rule keeps nothing and is off.
    pub fn is_zero(&self) -> bool {
        self.span.is_zero()
    }

    fn parts(&self) -> [u32; 5] {
        [self.years, self.months, self.weeks, self.days, self.hours]
    }

    /// The oldest instant still "within" `newest`, or `None` when that lies
    /// before the earliest instant jiff can represent (everything is within).
    fn cutoff(&self, newest: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        newest
            .to_zoned(tz.clone())
            .checked_sub(self.span)
            .ok()
            .map(|zoned| zoned.timestamp())
    }
}

const WITHIN_UNITS: [char; 5] = ['y', 'm', 'w', 'd', 'h'];

fn canonical(parts: [u32; 5]) -> String {
    let text: String = parts
        .iter()
        .zip(WITHIN_UNITS)
        .filter(|(n, _)| **n != 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        "0h".to_string()
    } else {
        text
    }
}

impl PartialEq for KeepWithin {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for KeepWithin {}

impl fmt::Display for KeepWithin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&canonical(self.parts()))
    }
}

impl FromStr for KeepWithin {
    type Err = RetentionError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| RetentionError::InvalidWithin {
            input: input.to_string(),
            reason,
        };
        let mut parts: [Option<u32>; 5] = [None; 5];
        for t in crate::maintenance::duration::terms(input, &["y", "m", "w", "d", "h"], false)
            .map_err(fail)?
        {
            let slot = WITHIN_UNITS
                .iter()
                .position(|u| t.unit.starts_with(*u))
                .expect("terms only gives the units asked for");
            let value: u32 = t
                .number
                .parse()
                .map_err(|_| fail(format!("the number {} is too large", t.number)))?;
            if parts[slot].replace(value).is_some() {
                return Err(fail(format!("unit '{}' appears more than once", t.unit)));
            }
        }
        Self::from_parts(parts.map(|p| p.unwrap_or(0))).map_err(fail)
    }
}

impl TryFrom<String> for KeepWithin {
    type Error = RetentionError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<KeepWithin> for String {
    fn from(value: KeepWithin) -> Self {
        value.to_string()
    }
}

/// Which snapshots to keep. Serialized with the names of the CLI options
/// (`keep_last`, `keep_hourly`, ..., `keep_within`, `keep_tags`).
///
/// `Default` is the empty policy, which [`KeepPolicy::validate`] refuses; it
/// is there for `..Default::default()`. See [`default_policy`] for a usable one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeepPolicy {
    #[serde(rename = "keep_last", skip_serializing_if = "Option::is_none")]
    pub last: Option<u32>,
    #[serde(rename = "keep_hourly", skip_serializing_if = "Option::is_none")]
    pub hourly: Option<u32>,
    #[serde(rename = "keep_daily", skip_serializing_if = "Option::is_none")]
    pub daily: Option<u32>,
    #[serde(rename = "keep_weekly", skip_serializing_if = "Option::is_none")]
    pub weekly: Option<u32>,
    #[serde(rename = "keep_monthly", skip_serializing_if = "Option::is_none")]
    pub monthly: Option<u32>,
    #[serde(rename = "keep_yearly", skip_serializing_if = "Option::is_none")]
    pub yearly: Option<u32>,
    #[serde(rename = "keep_within", skip_serializing_if = "Option::is_none")]
    pub within: Option<KeepWithin>,
    #[serde(rename = "keep_tags", skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl KeepPolicy {
    /// True when no rule is switched on (counts absent or 0, no or a zero
    /// `within`, no tags).
    pub fn is_empty(&self) -> bool {
        let counts = [
            self.last,
            self.hourly,
            self.daily,
            self.weekly,
            self.monthly,
            self.yearly,
        ];
        counts.iter().all(|n| n.unwrap_or(0) == 0)
            && self.within.is_none_or(|w| w.is_zero())
            && self.tags.is_empty()
    }

    /// Refuses a policy that would keep nothing, so that `forget` never
    /// removes every snapshot by accident.
    pub fn validate(&self) -> Result<(), RetentionError> {
        // An empty tag is carried by no snapshot: it would switch the tag
        // rule on while keeping nothing.
        if self.tags.iter().any(|t| t.trim().is_empty()) {
            return Err(RetentionError::EmptyTag);
        }
        if self.is_empty() {
            Err(RetentionError::EmptyPolicy)
        } else {
            Ok(())
        }
    }

    fn count(&self, unit: Calendar) -> u32 {
        let n = match unit {
            Calendar::Hourly => self.hourly,
            Calendar::Daily => self.daily,
            Calendar::Weekly => self.weekly,
            Calendar::Monthly => self.monthly,
            Calendar::Yearly => self.yearly,
        };
        n.unwrap_or(0)
    }
}

/// 24 hourly, 7 daily, 4 weekly and 12 monthly snapshots.
pub fn default_policy() -> KeepPolicy {
    KeepPolicy {
        hourly: Some(24),
        daily: Some(7),
        weekly: Some(4),
        monthly: Some(12),
        ..KeepPolicy::default()
    }
}

/// Which attributes split snapshots into groups; each group is judged on its
/// own. Written as a comma-separated list (`"source,host"`); the empty string
/// puts all snapshots in one group. The default is `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GroupBy {
    pub source: bool,
    pub host: bool,
    /// Groups by the sorted, de-duplicated set of tags.
    pub tags: bool,
}

impl GroupBy {
    /// All snapshots in one group.
    pub const NONE: GroupBy = GroupBy {
        source: false,
        host: false,
        tags: false,
    };

    /// The key of the group `snapshot` belongs to.
    pub fn key(&self, snapshot: &SnapshotInfo) -> GroupKey {
        GroupKey {
            source: self.source.then(|| snapshot.source.clone()),
            host: self.host.then(|| snapshot.host.clone()),
            tags: self.tags.then(|| {
                let mut tags = snapshot.tags.clone();
                tags.sort();
                tags.dedup();
                tags
            }),
        }
    }
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            source: true,
            ..GroupBy::NONE
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.source, "source"),
            (self.host, "host"),
            (self.tags, "tags"),
        ];
        let on: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect();
        f.write_str(&on.join(","))
    }
}

impl FromStr for GroupBy {
    type Err = RetentionError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let mut group_by = GroupBy::NONE;
        if input.trim().is_empty() {
            return Ok(group_by);
        }
        for item in input.split(',').map(str::trim) {
            match item {
                "source" => group_by.source = true,
                "host" => group_by.host = true,
                "tags" => group_by.tags = true,
                _ => {
                    return Err(RetentionError::InvalidGroupBy {
                        input: input.to_string(),
                        item: item.to_string(),
                    });
                }
            }
        }
        Ok(group_by)
    }
}

impl TryFrom<String> for GroupBy {
    type Error = RetentionError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<GroupBy> for String {
    fn from(value: GroupBy) -> Self {
        value.to_string()
    }
}

/// The identity of a group: the attributes named by [`GroupBy`], the others
/// `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Sorted and de-duplicated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(source) = &self.source {
            parts.push(format!("source {source}"));
        }
        if let Some(host) = &self.host {
            parts.push(format!("host {host}"));
        }
        if let Some(tags) = &self.tags {
            parts.push(format!("tags [{}]", tags.join(",")));
        }
        if parts.is_empty() {
            f.write_str("all snapshots")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// The verdict on one snapshot. `reasons` names every rule that kept it
/// (`last`, `hourly`, `daily`, `weekly`, `monthly`, `yearly`, `within`,
/// `tag:<name>`, in that order) and is empty exactly when `keep` is false.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub id: String,
    pub group: GroupKey,
    pub keep: bool,
    pub reasons: Vec<String>,
}

/// Applies `policy` to `snapshots`, grouped by `group_by`, with calendar
/// buckets in `tz`. See the module documentation for the rules and the order
/// of the result (groups by key, newest first inside a group).
///
/// Fails if the policy keeps nothing or a snapshot id is listed twice.
pub fn decide(
    snapshots: &[SnapshotInfo],
    policy: &KeepPolicy,
    group_by: GroupBy,
    tz: &TimeZone,
) -> Result<Vec<Decision>, RetentionError> {
    policy.validate()?;
    let mut ids = HashSet::with_capacity(snapshots.len());
    if let Some(dup) = snapshots.iter().find(|s| !ids.insert(s.id.as_str())) {
        return Err(RetentionError::DuplicateSnapshotId { id: dup.id.clone() });
    }

    let mut groups: BTreeMap<GroupKey, Vec<&SnapshotInfo>> = BTreeMap::new();
    for snapshot in snapshots {
        groups
            .entry(group_by.key(snapshot))
            .or_default()
            .push(snapshot);
    }

    let mut decisions = Vec::with_capacity(snapshots.len());
    for (key, mut members) in groups {
        members.sort_by(|a, b| newest_first(a, b));
        decide_group(&key, &members, policy, tz, &mut decisions);
    }
    Ok(decisions)
}

/// Newest first; equal times by ascending id.
fn newest_first(a: &SnapshotInfo, b: &SnapshotInfo) -> Ordering {
    b.time.cmp(&a.time).then_with(|| a.id.cmp(&b.id))
}

/// The calendar rules, in the order their reasons are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Calendar {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Calendar {
    const ALL: [Calendar; 5] = [
        Calendar::Hourly,
        Calendar::Daily,
        Calendar::Weekly,
        Calendar::Monthly,
        Calendar::Yearly,
    ];

    fn reason(self) -> &'static str {
        match self {
            Calendar::Hourly => "hourly",
            Calendar::Daily => "daily",
            Calendar::Weekly => "weekly",
            Calendar::Monthly => "monthly",
            Calendar::Yearly => "yearly",
        }
    }

    /// The bucket of a local wall-clock time whose UTC offset is
    /// `offset_seconds`. Only the hour bucket looks at the offset (see the
    /// module documentation on DST).
    fn bucket(self, local: DateTime, offset_seconds: i32) -> [i32; 5] {
        let (year, month, day) = (
            i32::from(local.year()),
            i32::from(local.month()),
            i32::from(local.day()),
        );
        match self {
            Calendar::Hourly => [year, month, day, i32::from(local.hour()), offset_seconds],
            Calendar::Daily => [year, month, day, 0, 0],
            Calendar::Weekly => {
                let week = local.iso_week_date();
                [i32::from(week.year()), i32::from(week.week()), 0, 0, 0]
            }
            Calendar::Monthly => [year, month, 0, 0, 0],
            Calendar::Yearly => [year, 0, 0, 0, 0],
        }
    }
}

/// A calendar rule while walking one group.
struct CalendarWalk {
    unit: Calendar,
    left: u32,
    seen: HashSet<[i32; 5]>,
}

fn decide_group(
    key: &GroupKey,
    members: &[&SnapshotInfo],
    policy: &KeepPolicy,
    tz: &TimeZone,
    decisions: &mut Vec<Decision>,
) {
    let Some(newest) = members.first() else {
        return;
    };
    // Outer None: no within rule. Inner None: the cutoff precedes all time.
    let within_cutoff = policy
        .within
        .filter(|w| !w.is_zero())
        .map(|w| w.cutoff(newest.time, tz));
    let mut last_left = policy.last.unwrap_or(0);
    let mut calendars: Vec<CalendarWalk> = Calendar::ALL
        .into_iter()
        .map(|unit| CalendarWalk {
            unit,
            left: policy.count(unit),
            seen: HashSet::new(),
        })
        .filter(|walk| walk.left > 0)
        .collect();
    let mut rule_tags: Vec<&str> = Vec::with_capacity(policy.tags.len());
    for tag in &policy.tags {
        if !rule_tags.contains(&tag.as_str()) {
            rule_tags.push(tag);
        }
    }

    for snapshot in members {
        let mut reasons = Vec::new();
        if last_left > 0 {
            last_left -= 1;
            reasons.push("last".to_string());
        }
        if calendars.iter().any(|walk| walk.left > 0) {
            let local = tz.to_datetime(snapshot.time);
            let offset = tz.to_offset(snapshot.time).seconds();
            for walk in calendars.iter_mut().filter(|walk| walk.left > 0) {
                if walk.seen.insert(walk.unit.bucket(local, offset)) {
                    walk.left -= 1;
                    reasons.push(walk.unit.reason().to_string());
                }
            }
        }
        let within = match within_cutoff {
            Some(Some(cutoff)) => snapshot.time >= cutoff,
            Some(None) => true,
            None => false,
        };
        if within {
            reasons.push("within".to_string());
        }
        for tag in &rule_tags {
            if snapshot.tags.iter().any(|t| t == tag) {
                reasons.push(format!("tag:{tag}"));
            }
        }
        decisions.push(Decision {
            id: snapshot.id.clone(),
            group: key.clone(),
            keep: !reasons.is_empty(),
            reasons,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("test timestamp")
    }

    /// A named zone from the system database, or its POSIX rule (exact for
    /// the years used here) where the machine has no zoneinfo.
    fn zone(name: &str, posix: &str) -> TimeZone {
        TimeZone::get(name).unwrap_or_else(|_| TimeZone::posix(posix).expect("posix rule"))
    }

    fn berlin() -> TimeZone {
        zone("Europe/Berlin", "CET-1CEST,M3.5.0,M10.5.0/3")
    }

    fn new_york() -> TimeZone {
        zone("America/New_York", "EST5EDT,M3.2.0,M11.1.0")
    }

    fn snap(id: &str, time: &str) -> SnapshotInfo {
        tagged(id, time, &[])
    }

    fn tagged(id: &str, time: &str, tags: &[&str]) -> SnapshotInfo {
        SnapshotInfo {
            id: id.to_string(),
            time: ts(time),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            source: "/data".to_string(),
            host: "node1".to_string(),
        }
    }

    fn run(snapshots: &[SnapshotInfo], policy: &KeepPolicy, tz: &TimeZone) -> Vec<Decision> {
        decide(snapshots, policy, GroupBy::default(), tz).expect("valid policy")
    }

    /// (id, reasons) of every decision, in output order; removed ones have
    /// an empty reason list.
    fn verdicts(decisions: &[Decision]) -> Vec<(String, Vec<String>)> {
        decisions
            .iter()
            .map(|d| (d.id.clone(), d.reasons.clone()))
            .collect()
    }

    fn expect(rows: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        rows.iter()
            .map(|(id, reasons)| {
                (
                    id.to_string(),
                    reasons.iter().map(|r| r.to_string()).collect(),
                )
            })
            .collect()
    }

    fn kept_ids(decisions: &[Decision]) -> Vec<&str> {
        decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.as_str())
            .collect()
    }

    #[test]
    fn several_rules_together_keep_the_union_with_every_reason() {
        let snapshots = vec![
            snap("k", "2024-06-01T00:00:00Z"),
            snap("a", "2026-05-10T18:00:00Z"), // Sunday, ISO week 19
            snap("i", "2026-05-09T08:00:00Z"),
            snap("b", "2026-05-10T09:00:00Z"),
            snap("c", "2026-05-09T20:00:00Z"),
            snap("d", "2026-05-08T07:00:00Z"),
            snap("e", "2026-05-01T12:00:00Z"), // Friday, ISO week 18
            snap("j", "2026-04-25T12:00:00Z"),
            snap("f", "2026-04-20T12:00:00Z"),
            snap("g", "2026-03-15T12:00:00Z"),
            snap("h", "2025-12-31T23:00:00Z"),
        ];
        let policy = KeepPolicy {
            last: Some(2),
            daily: Some(3),
            weekly: Some(2),
            monthly: Some(3),
            yearly: Some(2),
            ..KeepPolicy::default()
        };
        let decisions = run(&snapshots, &policy, &TimeZone::UTC);
        let all_five: &[&str] = &["last", "daily", "weekly", "monthly", "yearly"];
        assert_eq!(
            verdicts(&decisions),
            expect(&[
                ("a", all_five),
                ("b", &["last"]),
                ("c", &["daily"]),
                ("i", &[]),
                ("d", &["daily"]),
                ("e", &["weekly"]),
                ("j", &["monthly"]),
                ("f", &[]),
                ("g", &["monthly"]),
                ("h", &["yearly"]),
                ("k", &[]),
            ])
        );
    }

    #[test]
    fn duplicates_in_one_hour_keep_only_the_newest() {
        let snapshots = vec![
            snap("10:05", "2026-02-02T10:05:00Z"),
            snap("10:55", "2026-02-02T10:55:00Z"),
            snap("10:20", "2026-02-02T10:20:00Z"),
            snap("11:01", "2026-02-02T11:01:00Z"),
            snap("09:59", "2026-02-02T09:59:00Z"),
        ];
        let policy = KeepPolicy {
            hourly: Some(3),
            ..KeepPolicy::default()
        };
        let decisions = run(&snapshots, &policy, &TimeZone::UTC);
        assert_eq!(kept_ids(&decisions), ["11:01", "10:55", "09:59"]);
    }

    #[test]
    fn hourly_across_spring_forward_in_berlin_has_no_two_oclock_bucket() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00Z).
        let times = [
            "2026-03-28T23:00:00Z", // 00:00 CET
            "2026-03-28T23:30:00Z", // 00:30 CET
            "2026-03-29T00:00:00Z", // 01:00 CET
            "2026-03-29T00:30:00Z", // 01:30 CET
            "2026-03-29T01:00:00Z", // 03:00 CEST
            "2026-03-29T01:30:00Z", // 03:30 CEST
            "2026-03-29T02:00:00Z", // 04:00 CEST
            "2026-03-29T02:30:00Z", // 04:30 CEST
            "2026-03-29T03:00:00Z", // 05:00 CEST
        ];
        let snapshots: Vec<_> = times.iter().map(|t| snap(t, t)).collect();
        let policy = KeepPolicy {
            hourly: Some(24),
            ..KeepPolicy::default()
        };
        let tz = berlin();
        let decisions = run(&snapshots, &policy, &tz);
        assert_eq!(
            kept_ids(&decisions),
            [
                "2026-03-29T03:00:00Z",
                "2026-03-29T02:30:00Z",
                "2026-03-29T01:30:00Z",
                "2026-03-29T00:30:00Z",
                "2026-03-28T23:30:00Z",
            ]
        );
        let hours: Vec<i8> = kept_ids(&decisions)
            .iter()
            .map(|id| tz.to_datetime(ts(id)).hour())
            .collect();
        assert_eq!(hours, [5, 4, 3, 1, 0]);
    }

    #[test]
    fn hourly_in_berlin_autumn_repeated_hour_is_two_buckets() {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00Z).
        let snapshots = vec![
            snap("01:50 CEST", "2026-10-24T23:50:00Z"),
            snap("02:10 CEST", "2026-10-25T00:10:00Z"),
            snap("02:30 CEST", "2026-10-25T00:30:00Z"),
            snap("02:10 CET", "2026-10-25T01:10:00Z"),
            snap("02:30 CET", "2026-10-25T01:30:00Z"),
        ];
        let policy = KeepPolicy {
            hourly: Some(10),
            ..KeepPolicy::default()
        };
        let decisions = run(&snapshots, &policy, &berlin());
        assert_eq!(
            kept_ids(&decisions),
            ["02:30 CET", "02:30 CEST", "01:50 CEST"]
        );
    }

    #[test]
    fn hourly_and_daily_in_new_york_fall_back() {
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST (06:00Z).
        let snapshots = vec![
            snap("01:30 EDT", "2026-11-01T05:30:00Z"),
            snap("01:30 EST", "2026-11-01T06:30:00Z"),
            snap("01:45 EST", "2026-11-01T06:45:00Z"),
        ];
        let policy = KeepPolicy {
            hourly: Some(5),
            daily: Some(5),
            ..KeepPolicy::default()
        };
        let decisions = run(&snapshots, &policy, &new_york());
        assert_eq!(
            verdicts(&decisions),
            expect(&[
                ("01:45 EST", &["hourly", "daily"]),
                ("01:30 EST", &[]),
                ("01:30 EDT", &["hourly"]),
            ])
        );
    }

    #[test]
    fn daily_spring_forward_day_is_one_bucket_in_berlin_not_in_utc() {
        let snapshots = vec![
            snap("03-28 23:45 CET", "2026-03-28T22:45:00Z"),
            snap("03-29 00:15 CET", "2026-03-28T23:15:00Z"),
            snap("03-29 23:45 CEST", "2026-03-29T21:45:00Z"),
        ];
        let policy = KeepPolicy {
            daily: Some(10),
            ..KeepPolicy::default()
        };
        let in_berlin = run(&snapshots, &policy, &berlin());
        assert_eq!(
            kept_ids(&in_berlin),
            ["03-29 23:45 CEST", "03-28 23:45 CET"]
        );
        let in_utc = run(&snapshots, &policy, &TimeZone::UTC);
        assert_eq!(kept_ids(&in_utc), ["03-29 23:45 CEST", "03-29 00:15 CET"]);
    }

    #[test]
    fn daily_fall_back_day_is_one_bucket_in_berlin_not_in_utc() {
        // The 25-hour day 2026-10-25 runs from 22:00Z on the 24th to 23:00Z.
        let snapshots = vec![
            snap("10-25 00:15 CEST", "2026-10-24T22:15:00Z"),
            snap("10-25 23:45 CET", "2026-10-25T22:45:00Z"),
            snap("10-26 00:15 CET", "2026-10-25T23:15:00Z"),
        ];
        let policy = KeepPolicy {
            daily: Some(10),
            ..KeepPolicy::default()
        };
        let in_berlin = run(&snapshots, &policy, &berlin());
        assert_eq!(kept_ids(&in_berlin), ["10-26 00:15 CET", "10-25 23:45 CET"]);
        let in_utc = run(&snapshots, &policy, &TimeZone::UTC);
        assert_eq!(kept_ids(&in_utc), ["10-26 00:15 CET", "10-25 00:15 CEST"]);
    }

    #[test]
    fn weekly_uses_iso_week_53_across_new_year_while_yearly_uses_calendar_year() {
        let snapshots = vec![
            snap("2026-12-27 Sun W52", "2026-12-27T12:00:00Z"),
            snap("2026-12-28 Mon W53", "2026-12-28T12:00:00Z"),
            snap("2026-12-31 Thu W53", "2026-12-31T12:00:00Z"),
            snap("2027-01-01 Fri W53", "2027-01-01T12:00:00Z"),
            snap("2027-01-03 Sun W53", "2027-01-03T12:00:00Z"),
            snap("2027-01-04 Mon W01", "2027-01-04T12:00:00Z"),
        ];
        let policy = KeepPolicy {
            weekly: Some(10),
            yearly: Some(10),
            ..KeepPolicy::default()
        };
        let decisions = run(&snapshots, &policy, &TimeZone::UTC);
        assert_eq!(
            verdicts(&decisions),
            expect(&[
                ("2027-01-04 Mon W01", &["weekly", "yearly"]),
                ("2027-01-03 Sun W53", &["weekly"]),
                ("2027-01-01 Fri W53", &[]),
                ("2026-12-31 Thu W53", &["yearly"]),
                ("2026-12-28 Mon W53", &[]),
                ("2026-12-27 Sun W52", &["weekly"]),
            ])
        );
    }

    #[test]
    fn weekly_puts_late_december_into_next_iso_year() {
        // 2024-12-30 is a Monday of 2025-W01.
        let snapshots = vec![
            snap("2024-12-29 W52", "2024-12-29T12:00:00Z"),
            snap("2024-12-30 2025-W01", "2024-12-30T12:00:00Z"),
            snap("2025-01-05 2025-W01", "2025-01-05T12:00:00Z"),
        ];
        let policy = KeepPolicy {
            weekly: Some(10),
            ..KeepPolicy::default()
        };
        let decisions = run(&snapshots, &policy, &TimeZone::UTC);
        assert_eq!(
            kept_ids(&decisions),
            ["2025-01-05 2025-W01", "2024-12-29 W52"]
        );
    }

    #[test]
    fn empty_input_gives_no_decisions() {
        for group_by in [
            GroupBy::default(),
            GroupBy::NONE,
            "host,tags".parse().unwrap(),
        ] {
            let decisions = decide(&[], &default_policy(), group_by, &TimeZone::UTC).unwrap();
            assert!(decisions.is_empty(), "{group_by}: {decisions:?}");
        }
    }

    #[test]
    fn rules_with_nothing_left_to_keep_remove_the_rest() {
        // monthly asks for more buckets than exist; last 1 leaves the rest to it.
        let snapshots = vec![
            snap("jan", "2026-01-10T00:00:00Z"),
            snap("jan-old", "2026-01-05T00:00:00Z"),
            snap("feb", "2026-02-10T00:00:00Z"),
        ];
        let policy = KeepPolicy {
            last: Some(1),
            monthly: Some(12),
            ..KeepPolicy::default()
        };
        let decisions = run(&snapshots, &policy, &TimeZone::UTC);
        assert_eq!(
            verdicts(&decisions),
            expect(&[
                ("feb", &["last", "monthly"]),
                ("jan", &["monthly"]),
                ("jan-old", &[]),
            ])
        );
    }

    #[test]
    fn no_grouping_puts_everything_into_one_group() {
        let mut other = snap("other", "2026-01-02T00:00:00Z");
        other.source = "/elsewhere".to_string();
        other.host = "node2".to_string();
        let snapshots = vec![snap("mine", "2026-01-01T00:00:00Z"), other];
        let policy = KeepPolicy {
            last: Some(1),
            ..KeepPolicy::default()
        };
        let decisions = decide(&snapshots, &policy, GroupBy::NONE, &TimeZone::UTC).unwrap();
        assert_eq!(kept_ids(&decisions), ["other"]);
        assert!(decisions.iter().all(|d| d.group == GroupKey::default()));
        assert_eq!(decisions[0].group.to_string(), "all snapshots");
    }

    #[test]
    fn keep_within_is_measured_from_the_newest_snapshot_not_from_now() {
        let snapshots = vec![
            snap("newest", "2020-06-10T12:00:00Z"),
            snap("1.5d", "2020-06-09T00:00:00Z"),
            snap("exactly 2d", "2020-06-08T12:00:00Z"),
            snap("2d + 1s", "2020-06-08T11:59:59Z"),
        ];
        let policy = KeepPolicy {
            within: Some("2d".parse().unwrap()),
            ..KeepPolicy::default()
        };
        let decisions = run(&snapshots, &policy, &TimeZone::UTC);
        assert_eq!(
            verdicts(&decisions),
            expect(&[
                ("newest", &["within"]),
                ("1.5d", &["within"]),
                ("exactly 2d", &["within"]),
                ("2d + 1s", &[]),
            ])
        );
    }

    #[test]
    fn keep_within_months_clamp_to_the_end_of_a_shorter_month() {
        let snapshots = vec![
            snap("newest", "2026-03-31T10:00:00Z"),
            snap("03-03", "2026-03-03T10:00:00Z"),
            snap("02-28 10:00", "2026-02-28T10:00:00Z"),
            snap("02-28 09:59", "2026-02-28T09:59:00Z"),
        ];
        let policy = KeepPolicy {
            within: Some("1m".parse().unwrap()),
            ..KeepPolicy::default()
        };
        let decisions = run(&snapshots, &policy, &TimeZone::UTC);
        assert_eq!(kept_ids(&decisions), ["newest", "03-03", "02-28 10:00"]);
    }

    #[test]
    fn keep_within_days_follow_the_wall_clock_across_dst_but_hours_do_not() {
        // Newest is 2026-03-29 12:00 CEST; one calendar day back is
        // 2026-03-28 12:00 CET, only 23 hours earlier.
        let snapshots = vec![
            snap("newest", "2026-03-29T10:00:00Z"),
            snap("23h", "2026-03-28T11:00:00Z"),
            snap("23.5h", "2026-03-28T10:30:00Z"),
        ];
        let within = |text: &str| KeepPolicy {
            within: Some(text.parse().unwrap()),
            ..KeepPolicy::default()
        };
        let day_in_berlin = run(&snapshots, &within("1d"), &berlin());
        assert_eq!(kept_ids(&day_in_berlin), ["newest", "23h"]);
        let day_in_utc = run(&snapshots, &within("1d"), &TimeZone::UTC);
        assert_eq!(kept_ids(&day_in_utc), ["newest", "23h", "23.5h"]);
        let hours_in_berlin = run(&snapshots, &within("24h"), &berlin());
        assert_eq!(kept_ids(&hours_in_berlin), ["newest", "23h", "23.5h"]);
    }

    #[test]
    fn tag_rules_keep_any_matching_tag_and_name_each_one() {
        let snapshots = vec![
            tagged("prod", "2026-01-01T00:00:00Z", &["prod"]),
            tagged("both", "2026-01-02T00:00:00Z", &["keep", "prod"]),
            tagged("dev", "2026-01-03T00:00:00Z", &["dev"]),
            tagged("none", "2026-01-04T00:00:00Z", &[]),
            tagged("prefix", "2026-01-05T00:00:00Z", &["production"]),
        ];
        let policy = KeepPolicy {
            tags: vec!["prod".into(), "keep".into(), "prod".into()],
            ..KeepPolicy::default()
        };
        let decisions = run(&snapshots, &policy, &TimeZone::UTC);
        assert_eq!(
            verdicts(&decisions),
            expect(&[
                ("prefix", &[]),
                ("none", &[]),
                ("dev", &[]),
                ("both", &["tag:prod", "tag:keep"]),
                ("prod", &["tag:prod"]),
            ])
        );
    }

    #[test]
    fn grouping_by_source_keeps_each_sources_own_newest() {
        let at = |id: &str, time: &str, source: &str| SnapshotInfo {
            source: source.to_string(),
            ..snap(id, time)
        };
        let snapshots = vec![
            at("a-new", "2026-05-02T00:00:00Z", "/a"),
            at("b-new", "2026-01-02T00:00:00Z", "/b"),
            at("a-old", "2026-05-01T00:00:00Z", "/a"),
            at("b-old", "2026-01-01T00:00:00Z", "/b"),
        ];
        let policy = KeepPolicy {
            last: Some(1),
            ..KeepPolicy::default()
        };
        let decisions = run(&snapshots, &policy, &TimeZone::UTC);
        assert_eq!(kept_ids(&decisions), ["a-new", "b-new"]);
        let groups: Vec<String> = decisions.iter().map(|d| d.group.to_string()).collect();
        assert_eq!(groups, ["source /a", "source /a", "source /b", "source /b"]);
        assert!(decisions.iter().all(|d| d.group.host.is_none()));
    }

    #[test]
    fn grouping_by_host_and_tags_uses_the_sorted_tag_set() {
        let on = |id: &str, time: &str, host: &str, tags: &[&str]| SnapshotInfo {
            host: host.to_string(),
            ..tagged(id, time, tags)
        };
        let snapshots = vec![
            on("ab-1", "2026-01-01T00:00:00Z", "h1", &["b", "a"]),
            on("ab-2", "2026-01-02T00:00:00Z", "h1", &["a", "b", "a"]),
            on("a-1", "2026-01-03T00:00:00Z", "h1", &["a"]),
            on("ab-h2", "2026-01-04T00:00:00Z", "h2", &["a", "b"]),
        ];
        let policy = KeepPolicy {
            last: Some(1),
            ..KeepPolicy::default()
        };
        let group_by: GroupBy = "host,tags".parse().unwrap();
        let decisions = decide(&snapshots, &policy, group_by, &TimeZone::UTC).unwrap();
        assert_eq!(kept_ids(&decisions), ["a-1", "ab-2", "ab-h2"]);
        let ab_h1 = GroupKey {
            source: None,
            host: Some("h1".into()),
            tags: Some(vec!["a".into(), "b".into()]),
        };
        let in_ab_h1: Vec<&str> = decisions
            .iter()
            .filter(|d| d.group == ab_h1)
            .map(|d| d.id.as_str())
            .collect();
        assert_eq!(in_ab_h1, ["ab-2", "ab-1"]);
    }

    #[test]
    fn identical_times_are_ordered_by_id() {
        let snapshots = vec![
            snap("b", "2026-01-01T00:00:00Z"),
            snap("c", "2026-01-01T00:00:00Z"),
            snap("a", "2026-01-01T00:00:00Z"),
        ];
        let policy = KeepPolicy {
            last: Some(1),
            hourly: Some(1),
            ..KeepPolicy::default()
        };
        let decisions = run(&snapshots, &policy, &TimeZone::UTC);
        assert_eq!(
            verdicts(&decisions),
            expect(&[("a", &["last", "hourly"]), ("b", &[]), ("c", &[])])
        );
    }

    #[test]
    fn duplicate_snapshot_ids_are_refused() {
        let snapshots = vec![
            snap("x", "2026-01-01T00:00:00Z"),
            snap("x", "2026-01-02T00:00:00Z"),
        ];
        let err = decide(
            &snapshots,
            &default_policy(),
            GroupBy::default(),
            &TimeZone::UTC,
        )
        .unwrap_err();
        assert_eq!(err, RetentionError::DuplicateSnapshotId { id: "x".into() });
    }

    #[test]
    fn validate_refuses_a_policy_that_keeps_nothing() {
        let zeros = KeepPolicy {
            last: Some(0),
            hourly: Some(0),
            daily: Some(0),
            weekly: Some(0),
            monthly: Some(0),
            yearly: Some(0),
            within: Some("0d".parse().unwrap()),
            tags: vec![],
        };
        for policy in [KeepPolicy::default(), zeros] {
            let err = policy.validate().unwrap_err();
            assert_eq!(err, RetentionError::EmptyPolicy);
            assert!(err.to_string().contains("at least one --keep-* option"));
            let snapshots = [snap("s", "2026-01-01T00:00:00Z")];
            let refused = decide(&snapshots, &policy, GroupBy::default(), &TimeZone::UTC);
            assert_eq!(refused, Err(RetentionError::EmptyPolicy));
        }
        let only_tags = KeepPolicy {
            tags: vec!["prod".into()],
            ..KeepPolicy::default()
        };
        assert_eq!(only_tags.validate(), Ok(()));
        for empty in ["", "  "] {
            let tags = KeepPolicy {
                tags: vec!["prod".into(), empty.into()],
                ..KeepPolicy::default()
            };
            assert_eq!(tags.validate(), Err(RetentionError::EmptyTag));
        }
        assert_eq!(default_policy().validate(), Ok(()));
    }

    #[test]
    fn default_policy_is_24_hourly_7_daily_4_weekly_12_monthly() {
        let expected = KeepPolicy {
            hourly: Some(24),
            daily: Some(7),
            weekly: Some(4),
            monthly: Some(12),
            ..KeepPolicy::default()
        };
        assert_eq!(default_policy(), expected);
    }

    #[test]
    fn keep_within_parses_every_unit_and_prints_canonically() {
        let within: KeepWithin = "4h3d2m1y".parse().unwrap();
        assert_eq!(within.to_string(), "1y2m3d4h");
        let span = within.span();
        assert_eq!(
            (
                span.get_years(),
                span.get_months(),
                span.get_days(),
                span.get_hours()
            ),
            (1, 2, 3, 4)
        );
        assert_eq!("2w".parse::<KeepWithin>().unwrap().span().get_weeks(), 2);
        assert_eq!(within, KeepWithin::new(1, 2, 0, 3, 4).unwrap());
        assert!("0d".parse::<KeepWithin>().unwrap().is_zero());
        assert!(!"007h".parse::<KeepWithin>().unwrap().is_zero());
    }

    #[test]
    fn keep_within_parse_errors_name_the_input_and_the_problem() {
        let cases = [
            ("", "it is empty"),
            ("12", "the number 12 has no unit"),
            ("d", "unit 'd' has no number before it"),
            ("3x", "unknown unit 'x' after 3"),
            ("3M", "unknown unit 'M' after 3"),
            ("1d2d", "unit 'd' appears more than once"),
            ("-1d", "unexpected character '-'"),
            ("1d ", "unexpected character ' '"),
            ("99999999999d", "the number 99999999999 is too large"),
            ("20000y", "the duration is too long"),
        ];
        for (input, problem) in cases {
            let err = input.parse::<KeepWithin>().unwrap_err();
            let RetentionError::InvalidWithin {
                input: named,
                reason,
            } = &err
            else {
                panic!("{input:?} gave {err:?}");
            };
            assert_eq!(named, input);
            assert!(reason.contains(problem), "{input:?}: {reason}");
            assert!(err.to_string().contains(&format!("{input:?}")), "{err}");
        }
        let too_long = KeepWithin::new(0, 0, 0, 0, u32::MAX).unwrap_err();
        assert!(
            too_long.to_string().contains("\"4294967295h\""),
            "{too_long}"
        );
    }

    #[test]
    fn group_by_parses_lists_and_names_unknown_criteria() {
        let all: GroupBy = " tags, source ,host".parse().unwrap();
        assert_eq!(
            all,
            GroupBy {
                source: true,
                host: true,
                tags: true
            }
        );
        assert_eq!(all.to_string(), "source,host,tags");
        assert_eq!("".parse::<GroupBy>().unwrap(), GroupBy::NONE);
        assert_eq!(GroupBy::default().to_string(), "source");
        let err = "host,paths".parse::<GroupBy>().unwrap_err();
        assert_eq!(
            err,
            RetentionError::InvalidGroupBy {
                input: "host,paths".into(),
                item: "paths".into()
            }
        );
    }

    #[test]
    fn policy_json_round_trips_with_cli_field_names() {
        let policy = KeepPolicy {
            last: Some(3),
            within: Some("1y2m".parse().unwrap()),
            tags: vec!["prod".into()],
            ..default_policy()
        };
        let json = serde_json::to_value(&policy).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "keep_last": 3,
                "keep_hourly": 24,
                "keep_daily": 7,
                "keep_weekly": 4,
                "keep_monthly": 12,
                "keep_within": "1y2m",
                "keep_tags": ["prod"],
            })
        );
        let back: KeepPolicy = serde_json::from_value(json).unwrap();
        assert_eq!(back, policy);

        let sparse: KeepPolicy = serde_json::from_str(r#"{"keep_daily": 2}"#).unwrap();
        assert_eq!(sparse.daily, Some(2));
        assert!(serde_json::from_str::<KeepPolicy>(r#"{"keep_dayly": 2}"#).is_err());
        let bad = serde_json::from_str::<KeepPolicy>(r#"{"keep_within": "2q"}"#).unwrap_err();
        assert!(bad.to_string().contains("\"2q\""), "{bad}");
    }

    #[test]
    fn decisions_serialize_for_json_output() {
        let snapshots = [snap("s1", "2026-01-01T00:00:00Z")];
        let policy = KeepPolicy {
            last: Some(1),
            ..KeepPolicy::default()
        };
        let decisions = run(&snapshots, &policy, &TimeZone::UTC);
        let json = serde_json::to_value(&decisions).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{
                "id": "s1",
                "group": {"source": "/data"},
                "keep": true,
                "reasons": ["last"],
            }])
        );
        let back: Vec<Decision> = serde_json::from_value(json).unwrap();
        assert_eq!(back, decisions);
    }

    // ---- properties ----

    fn arb_snapshots() -> impl Strategy<Value = Vec<SnapshotInfo>> {
        let one = (0i64..120, 0i64..3, 0usize..3, 0usize..2, 0u8..8);
        prop::collection::vec(one, 0..40).prop_map(|items| {
            let base = ts("2026-03-20T00:00:00Z");
            let names = ["prod", "db", "dev"];
            items
                .into_iter()
                .enumerate()
                .map(|(i, (step, minute, source, host, tag_bits))| SnapshotInfo {
                    id: format!("s{i:02}"),
                    time: base
                        .checked_add(Span::new().hours(step * 53).minutes(minute * 20))
                        .unwrap(),
                    tags: (0..3)
                        .filter(|bit| tag_bits & (1 << bit) != 0)
                        .map(|bit| names[bit].to_string())
                        .collect(),
                    source: format!("/src{source}"),
                    host: format!("host{host}"),
                })
                .collect()
        })
    }

    fn arb_policy() -> impl Strategy<Value = KeepPolicy> {
        let count = || prop::option::of(0u32..6);
        let within = prop::option::of((0u32..2, 0u32..3, 0u32..10, 0u32..30)).prop_map(|w| {
            w.map(|(months, weeks, days, hours)| {
                KeepWithin::new(0, months, weeks, days, hours).unwrap()
            })
        });
        let tags = prop::sample::subsequence(vec!["prod".to_string(), "dev".to_string()], 0..=2);
        (
            count(),
            count(),
            count(),
            count(),
            count(),
            count(),
            within,
            tags,
        )
            .prop_map(
                |(last, hourly, daily, weekly, monthly, yearly, within, tags)| KeepPolicy {
                    last,
                    hourly,
                    daily,
                    weekly,
                    monthly,
                    yearly,
                    within,
                    tags,
                },
            )
            .prop_filter("policy must keep something", |p| p.validate().is_ok())
    }

    fn arb_group_by() -> impl Strategy<Value = GroupBy> {
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(source, host, tags)| GroupBy {
            source,
            host,
            tags,
        })
    }

    fn arb_zone() -> impl Strategy<Value = TimeZone> {
        prop_oneof![
            Just(TimeZone::UTC),
            Just(berlin()),
            Just(new_york()),
            Just(TimeZone::fixed(jiff::tz::offset(5))),
        ]
    }

    /// Members of each group, newest first, computed independently of `decide`.
    fn groups_newest_first(
        snapshots: &[SnapshotInfo],
        group_by: GroupBy,
    ) -> BTreeMap<GroupKey, Vec<SnapshotInfo>> {
        let mut groups: BTreeMap<GroupKey, Vec<SnapshotInfo>> = BTreeMap::new();
        for s in snapshots {
            groups.entry(group_by.key(s)).or_default().push(s.clone());
        }
        for members in groups.values_mut() {
            members.sort_by_key(|s| (std::cmp::Reverse(s.time), s.id.clone()));
        }
        groups
    }

    /// An independent bucket label for the calendar rule `rule`.
    fn label(rule: &str, time: Timestamp, tz: &TimeZone) -> String {
        let zoned = time.to_zoned(tz.clone());
        match rule {
            "hourly" => zoned.strftime("%Y-%m-%d %H %:z").to_string(),
            "daily" => zoned.date().to_string(),
            "weekly" => {
                let week = zoned.date().iso_week_date();
                format!("{}-W{}", week.year(), week.week())
            }
            "monthly" => zoned.strftime("%Y-%m").to_string(),
            _ => zoned.year().to_string(),
        }
    }

    proptest! {
        #[test]
        fn prop_reasons_agree_with_keep_and_every_snapshot_is_decided_once(
            snapshots in arb_snapshots(),
            policy in arb_policy(),
            group_by in arb_group_by(),
            tz in arb_zone(),
        ) {
            let decisions = decide(&snapshots, &policy, group_by, &tz).unwrap();
            let mut decided: Vec<&str> = decisions.iter().map(|d| d.id.as_str()).collect();
            let mut given: Vec<&str> = snapshots.iter().map(|s| s.id.as_str()).collect();
            decided.sort_unstable();
            given.sort_unstable();
            prop_assert_eq!(decided, given);
            for d in &decisions {
                prop_assert_eq!(d.keep, !d.reasons.is_empty(), "{:?}", d);
                for reason in &d.reasons {
                    let known = ["last", "hourly", "daily", "weekly", "monthly", "yearly", "within"]
                        .contains(&reason.as_str())
                        || reason.strip_prefix("tag:").is_some_and(|t| policy.tags.iter().any(|p| p == t));
                    prop_assert!(known, "unexpected reason {:?}", reason);
                }
            }
        }

        #[test]
        fn prop_keep_last_keeps_exactly_the_newest_of_each_group(
            snapshots in arb_snapshots(),
            policy in arb_policy(),
            n in 1u32..8,
            group_by in arb_group_by(),
        ) {
            let policy = KeepPolicy { last: Some(n), ..policy };
            let decisions = decide(&snapshots, &policy, group_by, &TimeZone::UTC).unwrap();
            let mut expected: Vec<String> = Vec::new();
            for members in groups_newest_first(&snapshots, group_by).values() {
                expected.extend(members.iter().take(n as usize).map(|s| s.id.clone()));
            }
            let mut by_last: Vec<String> = decisions
                .iter()
                .filter(|d| d.reasons.iter().any(|r| r == "last"))
                .map(|d| d.id.clone())
                .collect();
            expected.sort();
            by_last.sort();
            prop_assert_eq!(by_last, expected);
        }

        #[test]
        fn prop_result_does_not_depend_on_input_order(
            (snapshots, shuffled) in arb_snapshots()
                .prop_flat_map(|s| (Just(s.clone()), Just(s).prop_shuffle())),
            policy in arb_policy(),
            group_by in arb_group_by(),
            tz in arb_zone(),
        ) {
            let first = decide(&snapshots, &policy, group_by, &tz).unwrap();
            let second = decide(&shuffled, &policy, group_by, &tz).unwrap();
            prop_assert_eq!(first, second);
        }

        #[test]
        fn prop_calendar_rules_keep_the_newest_of_the_first_n_buckets(
            snapshots in arb_snapshots(),
            policy in arb_policy(),
            group_by in arb_group_by(),
            tz in arb_zone(),
        ) {
            let decisions = decide(&snapshots, &policy, group_by, &tz).unwrap();
            let rules = [
                ("hourly", policy.hourly),
                ("daily", policy.daily),
                ("weekly", policy.weekly),
                ("monthly", policy.monthly),
                ("yearly", policy.yearly),
            ];
            for (rule, count) in rules {
                let mut expected: Vec<String> = Vec::new();
                for members in groups_newest_first(&snapshots, group_by).values() {
                    let mut seen: Vec<String> = Vec::new();
                    for s in members {
                        let bucket = label(rule, s.time, &tz);
                        if seen.len() < count.unwrap_or(0) as usize && !seen.contains(&bucket) {
                            seen.push(bucket);
                            expected.push(s.id.clone());
                        }
                    }
                }
                let mut got: Vec<String> = decisions
                    .iter()
                    .filter(|d| d.reasons.iter().any(|r| r == rule))
                    .map(|d| d.id.clone())
                    .collect();
                expected.sort();
                got.sort();
                prop_assert_eq!(got, expected, "rule {}", rule);
            }
        }
    }
}
