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
mod tests;
