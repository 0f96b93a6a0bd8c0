//! One model of a repository's health, gathered once ([`gather`]) and
//! rendered twice: the Prometheus text format ([`render_metrics`], for
//! `pvsnap metrics` and a `/metrics` endpoint) and the problems a person or
//! a monitoring check acts on ([`assess`], for `pvsnap status`).
//!
//! Where each number comes from:
//! - snapshots per source and host: the snapshot objects (time, duration,
//!   added bytes, size; the native snapshot's `usage`, the last LVM usage
//!   the read's watch saw, FORMAT.md `source_snapshot`);
//! - runs, failed ones included (a run that wrote nothing still has an
//!   entry): the audit trail's `snapshot` entries, one per source, and what
//!   `audit forget` entries carried of the ones they removed
//!   (`audit::history`), so the failure counter never goes down;
//! - check and drill: the newest `check` and `drill` audit entries (a
//!   drill entry carries `rto_seconds`);
//! - sizes: the object listing (stored) and the index (raw); free bytes by
//!   `statvfs` of a local repository folder; locks from the lock objects.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use jiff::Timestamp;
use pvsnap_engine::backend::ObjectKey;
use pvsnap_engine::repo::audit::{self, Outcome};
use pvsnap_engine::repo::format::ObjectKind;
use pvsnap_engine::repo::lock::list_locks;
use pvsnap_engine::store::blob::BlobKind;
use pvsnap_engine::{IndexedRepository, Result};
use serde::Serialize;

/// How many of a source's newest snapshot sizes the trend keeps.
pub const TREND_LEN: usize = 10;

/// A repository's health at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// When it was gathered.
    pub time: Timestamp,
    pub repository: RepositoryHealth,
    /// One per source and host, sorted by source then host.
    pub sources: Vec<SourceHealth>,
    /// Snapshot objects that could not be read: id and reason.
    pub unreadable: Vec<Unreadable>,
}

/// A snapshot object that could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    pub id: String,
    pub error: String,
}

/// The repository as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryHealth {
    pub location: String,
    /// Bytes of every object stored (packs, index, snapshots, keys, config).
    pub stored_bytes: u64,
    /// Bytes of the distinct data chunks before compression.
    pub raw_bytes: u64,
    /// Free bytes of the filesystem holding a local repository; absent on
    /// object storage.
    pub free_bytes: Option<u64>,
    pub snapshots: usize,
    pub last_check: Option<Run>,
    pub last_drill: Option<Drill>,
    pub locks: Vec<Lock>,
    /// Audit objects that could not be read (their ids).
    pub damaged_audit_entries: Vec<String>,
}

/// How one recorded run ended.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub time: Timestamp,
    pub ok: bool,
    /// `ok`, `failed` or `interrupted`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The newest restore drill.
#[derive(Debug, Clone, Serialize)]
pub struct Drill {
    #[serde(flatten)]
    pub run: Run,
    pub source: Option<String>,
    pub snapshot: Option<String>,
    /// Absent in drills recorded before the audit entry carried it.
    pub rto_seconds: Option<f64>,
}

/// A lock held on the repository.
#[derive(Debug, Clone, Serialize)]
pub struct Lock {
    pub id: String,
    pub exclusive: Option<bool>,
    pub operation: Option<String>,
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub time: Option<Timestamp>,
    /// Why the lock object cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One source as seen from one host.
#[derive(Debug, Clone, Serialize)]
pub struct SourceHealth {
    pub source: String,
    pub host: String,
    /// The newest snapshot; absent when the source never succeeded.
    pub last_snapshot: Option<LastSnapshot>,
    pub snapshots: usize,
    /// Total bytes of the newest snapshots, oldest first (at most
    /// [`TREND_LEN`]).
    pub size_trend_bytes: Vec<u64>,
    /// Runs that ended failed or interrupted (from the audit trail).
    pub failures: u64,
    /// The newest recorded run, whatever its outcome.
    pub last_run: Option<Run>,
    /// The newest native snapshot usage seen (LVM), with its volume.
    pub native_usage: Option<NativeUsage>,
}

/// The newest snapshot of a source.
#[derive(Debug, Clone, Serialize)]
pub struct LastSnapshot {
    pub id: String,
    pub time: Timestamp,
    pub duration_seconds: f64,
    pub added_bytes: u64,
    pub total_bytes: u64,
}

/// How full a native snapshot got (0.0 to 1.0).
#[derive(Debug, Clone, Serialize)]
pub struct NativeUsage {
    pub volume: String,
    pub ratio: f64,
    pub time: Timestamp,
}

fn run_of(e: &audit::Entry) -> Run {
    Run {
        time: e.time,
        ok: e.outcome == Outcome::Ok,
        outcome: e.outcome.to_string(),
        error: e.error.clone(),
    }
}

/// Gathers the health of `repo`; `local` is the folder of a local
/// repository (for its free space). Unreadable snapshot objects are listed,
/// not fatal; a repository that cannot be listed is an error.
pub fn gather(repo: &IndexedRepository, local: Option<&Path>) -> Result<Health> {
    let now = Timestamp::now();
    let (snaps, bad) = repo.snapshots_lenient()?;
    let trail = audit::read(repo)?;

    let mut sources: BTreeMap<(String, String), SourceHealth> = BTreeMap::new();
    let blank = |source: &str, host: &str| SourceHealth {
        source: source.to_owned(),
        host: host.to_owned(),
        last_snapshot: None,
        snapshots: 0,
        size_trend_bytes: Vec::new(),
        failures: 0,
        last_run: None,
        native_usage: None,
    };
    // Oldest first, so the last one seen is the newest.
    for s in &snaps {
        let key = (s.source.key(), s.hostname.clone());
        let h = sources
            .entry(key)
            .or_insert_with(|| blank(&s.source.key(), &s.hostname));
        h.snapshots += 1;
        if s.is_native_only() {
            // A restore point holds no files: its size says nothing.
        } else {
            h.size_trend_bytes.push(s.summary.total_bytes);
        }
        h.last_snapshot = Some(LastSnapshot {
            id: s.id.to_hex(),
            time: s.time,
            duration_seconds: s.summary.duration_s,
            added_bytes: s.summary.bytes_added,
            total_bytes: s.summary.total_bytes,
        });
        if let Some(n) = &s.source_snapshot
            && let Some(ratio) = n.usage
        {
            h.native_usage = Some(NativeUsage {
                volume: n.handle.clone(),
                ratio,
                time: s.time,
            });
        }
    }
    for h in sources.values_mut() {
        let n = h.size_trend_bytes.len();
        h.size_trend_bytes.drain(..n.saturating_sub(TREND_LEN));
    }

    // The history counts what `audit forget` removed too: a counter never
    // goes down.
    let history = audit::history(&trail);
    for ((source, host), n) in &history.failures {
        sources
            .entry((source.clone(), host.clone()))
            .or_insert_with(|| blank(source, host))
            .failures = *n;
    }
    let mut last_check: Option<Run> = None;
    let mut last_drill: Option<Drill> = None;
    for ((operation, source, host), e) in &history.latest {
        match operation.as_str() {
            "snapshot" => {
                sources
                    .entry((source.clone(), host.clone()))
                    .or_insert_with(|| blank(source, host))
                    .last_run = Some(run_of(e));
            }
            "check" => last_check = Some(run_of(e)),
            "drill" => {
                last_drill = Some(Drill {
                    run: run_of(e),
                    source: e.source.clone(),
                    snapshot: e.snapshots.first().cloned(),
                    rto_seconds: e.rto_seconds,
                })
            }
            _ => {}
        }
    }

    let mut stored_bytes = 0;
    for kind in [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
    ] {
        stored_bytes += repo
            .backend()
            .list(kind)?
            .iter()
            .map(|(_, s)| s)
            .sum::<u64>();
    }
    let mut seen = std::collections::HashSet::new();
    let raw_bytes = repo
        .index()
        .iter()
        .filter(|l| l.entry.kind == BlobKind::Data && seen.insert(l.entry.id))
        .map(|l| l.entry.raw_len as u64)
        .sum();
    let locks = list_locks(repo.backend())?
        .into_iter()
        .map(|l| match l.info {
            Ok(i) => Lock {
                id: l.name,
                exclusive: Some(i.exclusive),
                operation: Some(i.operation),
                host: Some(i.hostname),
                pid: Some(i.pid),
                time: Some(i.time),
                error: None,
            },
            Err(e) => Lock {
                id: l.name,
                exclusive: None,
                operation: None,
                host: None,
                pid: None,
                time: None,
                error: Some(e),
            },
        })
        .collect();
    let free_bytes = local.and_then(|p| pvsnap_engine::sys::host::free_bytes(p).ok());

    Ok(Health {
        time: now,
        repository: RepositoryHealth {
            location: repo.backend().location(),
            stored_bytes,
            raw_bytes,
            free_bytes,
            snapshots: snaps.len(),
            last_check,
            last_drill,
            locks,
            damaged_audit_entries: trail.damaged.iter().map(|(id, _)| id.clone()).collect(),
        },
        sources: sources.into_values().collect(),
        unreadable: bad
            .into_iter()
            .map(|(id, e)| Unreadable {
                id: id.to_hex(),
                error: e.to_string(),
            })
            .collect(),
    })
}

/// The key of a snapshot object, for messages naming it.
pub fn snapshot_object(id: &str) -> String {
    ObjectKey::new(ObjectKind::Snapshot, id).path()
}

// ---------------------------------------------------------------------------
// Prometheus text format

/// A label value in the text format: `\`, `"` and newline escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value in the text format (`+Inf`, `-Inf`, `NaN` spelled as
/// Prometheus reads them).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], v: f64) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(v));
    }
}

fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

/// The Prometheus text format of `h` (exposition format 0.0.4). Every
/// source known from a snapshot or a recorded run has every per-source
/// series; one that never succeeded shows 0 as its last snapshot time.
pub fn render_metrics(h: &Health) -> String {
    let mut out = String::new();
    let per_source = |out: &mut String,
                      name: &'static str,
                      kind: &str,
                      help: &str,
                      v: &dyn Fn(&SourceHealth) -> f64| {
        let mut f = family(out, name, kind, help);
        for s in &h.sources {
            f.sample(&[("source", &s.source), ("host", &s.host)], v(s));
        }
    };
    per_source(
        &mut out,
        "pvsnap_last_snapshot_timestamp_seconds",
        "gauge",
        "Time of the newest snapshot of the source (0: none yet).",
        &|s| s.last_snapshot.as_ref().map_or(0.0, |l| seconds(l.time)),
    );
    per_source(
        &mut out,
        "pvsnap_last_snapshot_duration_seconds",
        "gauge",
        "Seconds the newest snapshot of the source took.",
        &|s| s.last_snapshot.as_ref().map_or(0.0, |l| l.duration_seconds),
    );
    per_source(
        &mut out,
        "pvsnap_last_snapshot_added_bytes",
        "gauge",
        "Bytes the newest snapshot of the source added to the repository.",
        &|s| {
            s.last_snapshot
                .as_ref()
                .map_or(0.0, |l| l.added_bytes as f64)
        },
    );
    per_source(
        &mut out,
        "pvsnap_snapshots",
        "gauge",
        "Snapshots of the source in the repository.",
        &|s| s.snapshots as f64,
    );
    per_source(
        &mut out,
        "pvsnap_snapshot_failures_total",
        "counter",
        "Snapshot runs of the source that failed or were interrupted (audit trail).",
        &|s| s.failures as f64,
    );
    per_source(
        &mut out,
        "pvsnap_last_snapshot_success",
        "gauge",
        "1 when the newest recorded run of the source succeeded, else 0.",
        &|s| match &s.last_run {
            Some(r) => f64::from(u8::from(r.ok)),
            None => f64::from(u8::from(s.last_snapshot.is_some())),
        },
    );
    {
        let mut f = family(
            &mut out,
            "pvsnap_native_snapshot_usage_ratio",
            "gauge",
            "How full the native snapshot got during the newest read of the volume (LVM data percent / 100).",
        );
        for s in &h.sources {
            if let Some(u) = &s.native_usage {
                f.sample(
                    &[
                        ("source", &s.source),
                        ("host", &s.host),
                        ("volume", &u.volume),
                    ],
                    u.ratio,
                );
            }
        }
    }
    let r = &h.repository;
    let mut single = |name: &'static str, kind: &str, help: &str, v: f64| {
        family(&mut out, name, kind, help).sample(&[], v);
    };
    single(
        "pvsnap_repository_stored_bytes",
        "gauge",
        "Bytes stored in the repository.",
        r.stored_bytes as f64,
    );
    single(
        "pvsnap_repository_raw_bytes",
        "gauge",
        "Bytes of distinct data before compression.",
        r.raw_bytes as f64,
    );
    if let Some(free) = r.free_bytes {
        single(
            "pvsnap_repository_free_bytes",
            "gauge",
            "Free bytes of the filesystem holding the repository.",
            free as f64,
        );
    }
    single(
        "pvsnap_last_check_timestamp_seconds",
        "gauge",
        "Time of the newest check (0: never).",
        r.last_check.as_ref().map_or(0.0, |c| seconds(c.time)),
    );
    single(
        "pvsnap_last_check_success",
        "gauge",
        "1 when the newest check passed, else 0 (also when never checked).",
        r.last_check
            .as_ref()
            .map_or(0.0, |c| f64::from(u8::from(c.ok))),
    );
    single(
        "pvsnap_last_drill_timestamp_seconds",
        "gauge",
        "Time of the newest restore drill (0: never).",
        r.last_drill.as_ref().map_or(0.0, |d| seconds(d.run.time)),
    );
    single(
        "pvsnap_last_drill_success",
        "gauge",
        "1 when the newest restore drill passed, else 0 (also when never drilled).",
        r.last_drill
            .as_ref()
            .map_or(0.0, |d| f64::from(u8::from(d.run.ok))),
    );
    if let Some(rto) = r.last_drill.as_ref().and_then(|d| d.rto_seconds) {
        single(
            "pvsnap_last_drill_rto_seconds",
            "gauge",
            "Recovery time of the newest restore drill, in seconds.",
            rto,
        );
    }
    single(
        "pvsnap_locks",
        "gauge",
        "Locks held on the repository.",
        r.locks.len() as f64,
    );
    single(
        "pvsnap_unreadable_snapshots",
        "gauge",
        "Snapshot objects that cannot be read.",
        h.unreadable.len() as f64,
    );
    out
}

// ---------------------------------------------------------------------------
// Assessment

/// How bad a problem is, in the order of the Nagios convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Ok,
    Warning,
    Critical,
    /// The repository, or part of it, cannot be read: nothing can be said.
    Unknown,
}

impl Severity {
    /// The Nagios plugin exit code: 0, 1, 2, 3.
    pub fn nagios_code(self) -> u8 {
        self as u8
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Ok => "OK",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
            Severity::Unknown => "UNKNOWN",
        })
    }
}

/// What counts as healthy.
#[derive(Debug, Clone)]
pub struct Thresholds {
    /// A source's newest snapshot may be this old.
    pub max_age: jiff::SignedDuration,
    /// The newest check may be this old (`None`: never asked for).
    pub check_max_age: Option<jiff::SignedDuration>,
    /// A native snapshot this full (0.0–1.0) is a warning.
    pub native_usage_warn: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_age: jiff::SignedDuration::from_hours(24),
            check_max_age: Some(jiff::SignedDuration::from_hours(7 * 24)),
            native_usage_warn: 0.8,
        }
    }
}

/// One thing that is not right.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub severity: Severity,
    /// The source it is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub message: String,
}

/// A person's short form of a duration: `3d 4h`, `5h 2m`, `40s`.
pub fn age(d: jiff::SignedDuration) -> String {
    let s = d.as_secs();
    let (sign, s) = if s < 0 { ("-", -s) } else { ("", s) };
    let text = match s {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    };
    format!("{sign}{text}")
}

/// The problems of `h` against `t`, worst first.
pub fn assess(h: &Health, t: &Thresholds) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut add = |severity, source: Option<&str>, message: String| {
        out.push(Problem {
            severity,
            source: source.map(str::to_owned),
            message,
        })
    };
    for u in &h.unreadable {
        add(
            Severity::Unknown,
            None,
            format!(
                "snapshot object {} cannot be read ({}); run `pvsnap check`, and remove it with `pvsnap forget {}` if it stays unreadable",
                snapshot_object(&u.id),
                u.error,
                u.id
            ),
        );
    }
    if h.sources.is_empty() {
        add(
            Severity::Warning,
            None,
            "no snapshot was taken yet; run `pvsnap snapshot DIR`".into(),
        );
    }
    for s in &h.sources {
        let who = if s.host.is_empty() {
            s.source.clone()
        } else {
            format!("{} on {}", s.source, s.host)
        };
        match &s.last_snapshot {
            None => add(
                Severity::Critical,
                Some(&s.source),
                format!("{who}: no snapshot ever succeeded"),
            ),
            Some(l) => {
                let a = h.time.duration_since(l.time);
                if a > t.max_age {
                    add(
                        Severity::Critical,
                        Some(&s.source),
                        format!(
                            "{who}: the newest snapshot is {} old (more than {})",
                            age(a),
                            age(t.max_age)
                        ),
                    );
                } else if a < -jiff::SignedDuration::from_mins(5) {
                    add(
                        Severity::Warning,
                        Some(&s.source),
                        format!(
                            "{who}: the newest snapshot is dated {} in the future; check the clocks of this machine and {}",
                            age(-a),
                            s.host
                        ),
                    );
                }
            }
        }
        if let Some(r) = &s.last_run
            && !r.ok
        {
            add(
                Severity::Critical,
                Some(&s.source),
                format!(
                    "{who}: the last run {} {} ago{}",
                    r.outcome,
                    age(h.time.duration_since(r.time)),
                    r.error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            );
        }
        if let Some(u) = &s.native_usage
            && u.ratio >= t.native_usage_warn
        {
            add(
                Severity::Warning,
                Some(&s.source),
                format!(
                    "{who}: native snapshot {} was {:.0}% full (warning at {:.0}%); give it more room with --lvm-snapshot-size",
                    u.volume,
                    u.ratio * 100.0,
                    t.native_usage_warn * 100.0
                ),
            );
        }
    }
    let r = &h.repository;
    match &r.last_check {
        Some(c) if !c.ok => add(
            Severity::Critical,
            None,
            format!(
                "the last check {} {} ago; run `pvsnap check` and see its report",
                c.outcome,
                age(h.time.duration_since(c.time))
            ),
        ),
        Some(c) => {
            if let Some(max) = t.check_max_age
                && h.time.duration_since(c.time) > max
            {
                add(
                    Severity::Warning,
                    None,
                    format!(
                        "the last check is {} old (more than {}); run `pvsnap check`",
                        age(h.time.duration_since(c.time)),
                        age(max)
                    ),
                );
            }
        }
        None if t.check_max_age.is_some() && !h.sources.is_empty() => add(
            Severity::Warning,
            None,
            "the repository was never checked; run `pvsnap check`".into(),
        ),
        None => {}
    }
    if !r.damaged_audit_entries.is_empty() {
        add(
            Severity::Warning,
            None,
            format!(
                "{} audit entr{} cannot be read ({}); run `pvsnap audit verify`",
                r.damaged_audit_entries.len(),
                if r.damaged_audit_entries.len() == 1 {
                    "y"
                } else {
                    "ies"
                },
                r.damaged_audit_entries.join(", ")
            ),
        );
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.severity));
    out
}

/// The worst severity of `problems` (OK when there are none).
pub fn verdict(problems: &[Problem]) -> Severity {
    problems
        .iter()
        .map(|p| p.severity)
        .max()
        .unwrap_or(Severity::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_label("/plain/path"), "/plain/path");
    }

    #[test]
    fn numbers_use_prometheus_spellings() {
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
    }

    #[test]
    fn ages_read_well() {
        use jiff::SignedDuration as D;
        assert_eq!(age(D::from_secs(40)), "40s");
        assert_eq!(age(D::from_secs(3 * 86_400 + 4 * 3600)), "3d 4h");
        assert_eq!(age(D::from_secs(-7200)), "-2h 0m");
    }
}
