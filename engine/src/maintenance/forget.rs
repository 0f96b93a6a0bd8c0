//! `forget`: applying a retention policy to the snapshots of a repository.
//!
//! The calendar logic is [`crate::maintenance::retention::decide`]; this module feeds it
//! the repository's snapshots, explains every verdict and deletes the
//! snapshot objects that no rule keeps into the trash (see
//! [`crate::repo::trash`]), from where `undelete` brings them back. Forgetting
//! frees nothing by itself: `prune` removes the data that neither a remaining
//! snapshot nor one still kept in the trash needs.
//!
//! A snapshot object that cannot be read can still be removed by its id (or
//! a unique prefix of its name), and is deleted outright (the trash holds
//! only snapshots prune can read); a policy cannot judge it, so it leaves it
//! alone and reports it.

use std::collections::HashMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::maintenance::retention::{self, GroupBy, GroupKey, KeepPolicy, SnapshotInfo};
use crate::repo::Repository;
use crate::repo::id::SnapshotId;
use crate::repo::lock::Access;
use crate::snapshot::Snapshot;

/// What to forget.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Apply a policy, each group on its own.
    Policy { keep: KeepPolicy, group_by: GroupBy },
    /// Remove exactly these snapshots.
    Ids(Vec<SnapshotId>),
}

/// The verdict on one snapshot, with what a user needs to recognise it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub id: SnapshotId,
    pub short_id: String,
    pub time: Timestamp,
    pub hostname: String,
    pub source: String,
    pub tags: Vec<String>,
    pub group: GroupKey,
    pub keep: bool,
    /// The rules that kept it (`last`, `hourly`, …, `within`, `tag:<t>`);
    /// empty exactly when the snapshot is removed.
    pub reasons: Vec<String>,
}

/// What `forget` decided and did.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    /// Groups in order, newest first inside a group.
    pub snapshots: Vec<Verdict>,
    pub kept: usize,
    pub removed: usize,
    /// Unreadable snapshot objects removed because their id was given.
    pub unreadable_removed: Vec<SnapshotId>,
    /// Unreadable snapshot objects left alone (a policy cannot judge them).
    pub unreadable_skipped: Vec<UnreadableSnapshot>,
}

/// A snapshot object that cannot be read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnreadableSnapshot {
    pub id: SnapshotId,
    pub error: String,
}

/// Resolves what the user typed (full ids, unique prefixes, `latest`,
/// `latest:SOURCE`) to snapshot ids. Ids and prefixes are matched against the
/// names of every snapshot object, readable or not, so a damaged one can be
/// named; `latest` forms consider the readable ones and resolve as every
/// other command does: a plain `latest` only when the repository holds one
/// source, else an error listing the sources (`forget latest` must never
/// remove the newest snapshot of whichever source happened to run last).
pub fn resolve_ids(repo: &Repository, specs: &[String]) -> Result<Vec<SnapshotId>> {
    let (snaps, _) = repo.snapshots_lenient()?;
    let all: Vec<SnapshotId> = repo
        .backend()
        .list(crate::repo::format::ObjectKind::Snapshot)?
        .into_iter()
        .filter_map(|(n, _)| n.parse().ok())
        .collect();
    specs
        .iter()
        .map(|spec| {
            if spec.starts_with("latest") {
                return Ok(crate::repo::resolve_for(&snaps, spec, None)?.id);
            }
            let lower = spec.to_ascii_lowercase();
            if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::SnapshotNotFound(spec.clone()));
            }
            let matches: Vec<&SnapshotId> = all
                .iter()
                .filter(|id| id.to_hex().starts_with(&lower))
                .collect();
            match matches.len() {
                0 => Err(Error::SnapshotNotFound(spec.clone())),
                1 => Ok(*matches[0]),
                n => Err(Error::AmbiguousSnapshot {
                    prefix: spec.clone(),
                    count: n,
                }),
            }
        })
        .collect()
}

fn info(s: &Snapshot) -> SnapshotInfo {
    SnapshotInfo {
        id: s.id.to_hex(),
        time: s.time,
        tags: s.tags.clone(),
        source: s.source.key(),
        host: s.hostname.clone(),
    }
}

/// Decides, without touching the repository, which of `snaps` to keep.
pub fn plan(snaps: &[Snapshot], selection: &Selection, tz: &TimeZone) -> Result<Vec<Verdict>> {
    let verdict = |s: &Snapshot, group: GroupKey, keep: bool, reasons: Vec<String>| Verdict {
        id: s.id,
        short_id: s.short_id(),
        time: s.time,
        hostname: s.hostname.clone(),
        source: s.source.key(),
        tags: s.tags.clone(),
        group,
        keep,
        reasons,
    };
    match selection {
        Selection::Policy { keep, group_by } => {
            let infos: Vec<SnapshotInfo> = snaps.iter().map(info).collect();
            let decisions = retention::decide(&infos, keep, *group_by, tz)?;
            // By id, not a search per decision: that was quadratic (8 s of
            // 10,000 snapshots' ids formatted over and over).
            let by_hex: HashMap<&str, &Snapshot> = infos
                .iter()
                .zip(snaps)
                .map(|(i, s)| (i.id.as_str(), s))
                .collect();
            decisions
                .into_iter()
                .map(|d| {
                    let s = by_hex
                        .get(d.id.as_str())
                        .expect("decide answers for the snapshots it was given");
                    Ok(verdict(s, d.group, d.keep, d.reasons))
                })
                .collect()
        }
        Selection::Ids(ids) => {
            let by_id: HashMap<SnapshotId, &Snapshot> = snaps.iter().map(|s| (s.id, s)).collect();
            ids.iter()
                .map(|id| {
                    let s = by_id
                        .get(id)
                        .ok_or_else(|| Error::SnapshotNotFound(id.to_hex()))?;
                    Ok(verdict(s, GroupKey::default(), false, vec![]))
                })
                .collect()
        }
    }
}

/// Applies `selection` to the repository's snapshots and, under the
/// exclusive lock, deletes the snapshot objects it does not keep (a dry run
/// only reports them).
pub fn forget<'a>(
    repo: &Repository,
    access: impl Into<Access<'a>>,
    selection: &Selection,
    tz: &TimeZone,
) -> Result<ForgetReport> {
    let dry_run = access.into().is_dry_run();
    let (snaps, bad) = repo.snapshots_lenient()?;
    let (verdicts, unreadable_removed, unreadable_skipped) = match selection {
        Selection::Ids(ids) => {
            let (gone, readable): (Vec<SnapshotId>, Vec<SnapshotId>) =
                ids.iter().partition(|id| bad.iter().any(|(b, _)| b == *id));
            let verdicts = plan(&snaps, &Selection::Ids(readable), tz)?;
            let skipped = bad
                .iter()
                .filter(|(b, _)| !gone.contains(b))
                .map(|(id, e)| UnreadableSnapshot {
                    id: *id,
                    error: e.to_string(),
                })
                .collect();
            (verdicts, gone, skipped)
        }
        Selection::Policy { .. } => {
            let skipped: Vec<UnreadableSnapshot> = bad
                .iter()
                .map(|(id, e)| UnreadableSnapshot {
                    id: *id,
                    error: e.to_string(),
                })
                .collect();
            for u in &skipped {
                tracing::warn!(
                    "left an unreadable snapshot object alone (no rule can judge it): {}; remove it with `pvsnap forget {}`",
                    u.error,
                    u.id
                );
            }
            (plan(&snaps, selection, tz)?, Vec::new(), skipped)
        }
    };
    let removed = verdicts.iter().filter(|v| !v.keep).count();
    if !dry_run {
        for id in &unreadable_removed {
            repo.delete_snapshot(id)?;
            tracing::info!("removed unreadable snapshot {id}");
        }
        for v in verdicts.iter().filter(|v| !v.keep) {
            repo.trash_snapshot(&v.id)?;
            tracing::info!(
                "moved snapshot {} of {} at {} to the trash",
                v.short_id,
                v.source,
                v.time
            );
        }
    }
    Ok(ForgetReport {
        dry_run,
        kept: verdicts.len() - removed,
        removed: removed + unreadable_removed.len(),
        snapshots: verdicts,
        unreadable_removed,
        unreadable_skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::lock::LockGuard;
    use crate::testutil;

    /// Each verdict describes the snapshot of its own id (they are looked up
    /// by id since the search per decision was quadratic), every snapshot
    /// once; by ids, in the order given, and an unknown id is an error.
    #[test]
    fn verdicts_describe_their_own_snapshots_among_many() {
        let (_mem, repo) = testutil::mem_repo(false);
        let dir = tempfile::tempdir().unwrap();
        testutil::write_tree(dir.path(), &testutil::files(1, 1, 10));
        let base = testutil::snapshot(&repo, dir.path(), "/src", "2026-01-01T00:00:00Z");
        let snaps: Vec<Snapshot> = (0..600i64)
            .map(|i| {
                let mut s = base.clone();
                s.id = SnapshotId(crate::repo::id::Id::random());
                s.time = base
                    .time
                    .checked_add(jiff::SignedDuration::from_hours(i))
                    .unwrap();
                s.hostname = format!("h{}", i % 3);
                s
            })
            .collect();
        let sel = Selection::Policy {
            keep: KeepPolicy {
                last: Some(2),
                daily: Some(4),
                ..KeepPolicy::default()
            },
            group_by: GroupBy::default(),
        };
        let verdicts = plan(&snaps, &sel, &TimeZone::UTC).unwrap();
        assert_eq!(verdicts.len(), snaps.len());
        let ids: std::collections::HashSet<SnapshotId> = verdicts.iter().map(|v| v.id).collect();
        assert_eq!(ids.len(), snaps.len());
        for v in &verdicts {
            let s = snaps.iter().find(|s| s.id == v.id).unwrap();
            assert_eq!((v.time, &v.hostname), (s.time, &s.hostname));
        }
        assert!(verdicts.iter().any(|v| v.keep) && verdicts.iter().any(|v| !v.keep));
        let picked = vec![snaps[7].id, snaps[3].id, snaps[599].id];
        let by_id = plan(&snaps, &Selection::Ids(picked.clone()), &TimeZone::UTC).unwrap();
        assert_eq!(by_id.iter().map(|v| v.id).collect::<Vec<_>>(), picked);
        assert_eq!(by_id[1].time, snaps[3].time);
        let unknown = SnapshotId(crate::repo::id::Id::random());
        assert!(matches!(
            plan(&snaps, &Selection::Ids(vec![unknown]), &TimeZone::UTC),
            Err(Error::SnapshotNotFound(_))
        ));
    }

    #[test]
    fn forget_removes_what_no_rule_keeps_and_explains_the_rest() {
        let (mem, repo) = testutil::mem_repo(false);
        let dir = tempfile::tempdir().unwrap();
        testutil::write_tree(dir.path(), &testutil::files(1, 2, 1000));
        let times = [
            "2026-03-01T10:00:00Z",
            "2026-03-01T11:00:00Z",
            "2026-03-02T10:00:00Z",
            "2026-03-03T10:00:00Z",
        ];
        let ids: Vec<SnapshotId> = times
            .iter()
            .map(|t| testutil::snapshot(&repo, dir.path(), "/src", t).id)
            .collect();
        let lock = testutil::exclusive(&(mem.clone() as crate::backend::DynBackend));
        let sel = Selection::Policy {
            keep: KeepPolicy {
                last: Some(1),
                daily: Some(2),
                ..KeepPolicy::default()
            },
            group_by: GroupBy::default(),
        };
        let dry = forget(&repo, Access::DryRun, &sel, &TimeZone::UTC).unwrap();
        assert_eq!(
            repo.snapshots().unwrap().len(),
            4,
            "a dry run removes nothing"
        );
        let got: Vec<(SnapshotId, Vec<String>)> = dry
            .snapshots
            .iter()
            .map(|v| (v.id, v.reasons.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (ids[3], vec!["last".to_string(), "daily".into()]),
                (ids[2], vec!["daily".into()]),
                (ids[1], vec![]),
                (ids[0], vec![]),
            ]
        );
        let done = forget(&repo, &lock, &sel, &TimeZone::UTC).unwrap();
        assert_eq!((done.kept, done.removed), (2, 2));
        let left: Vec<SnapshotId> = repo.snapshots().unwrap().iter().map(|s| s.id).collect();
        assert_eq!(left, vec![ids[2], ids[3]]);

        let shared = LockGuard::acquire(mem.clone(), false, "t", "h");
        assert!(shared.is_err(), "the exclusive lock is still held");
        drop(lock);
        LockGuard::acquire(mem, false, "t", "h").unwrap();
    }
}
