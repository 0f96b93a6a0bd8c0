//! `forget`: applying a retention policy to the snapshots of a repository.
//!
//! The calendar logic is [`crate::retention::decide`]; this module feeds it
//! the repository's snapshots, explains every verdict and deletes the
//! snapshot objects that no rule keeps. Deleting snapshots frees nothing by
//! itself: `prune` removes the data that no remaining snapshot needs.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::error::{Error, MaintenanceError, Result};
use crate::id::SnapshotId;
use crate::lock::LockGuard;
use crate::repo::Repository;
use crate::retention::{self, GroupBy, GroupKey, KeepPolicy, SnapshotInfo};
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
            decisions
                .into_iter()
                .map(|d| {
                    let s = snaps
                        .iter()
                        .find(|s| s.id.to_hex() == d.id)
                        .expect("decide answers for the snapshots it was given");
                    Ok(verdict(s, d.group, d.keep, d.reasons))
                })
                .collect()
        }
        Selection::Ids(ids) => ids
            .iter()
            .map(|id| {
                let s = snaps
                    .iter()
                    .find(|s| s.id == *id)
                    .ok_or_else(|| Error::SnapshotNotFound(id.to_hex()))?;
                Ok(verdict(s, GroupKey::default(), false, vec![]))
            })
            .collect(),
    }
}

/// Applies `selection` to the repository's snapshots and, unless `dry_run`,
/// deletes the snapshot objects it does not keep. Needs the exclusive lock
/// unless it is a dry run.
pub fn forget(
    repo: &Repository,
    lock: &LockGuard,
    selection: &Selection,
    tz: &TimeZone,
    dry_run: bool,
) -> Result<ForgetReport> {
    if !dry_run && !lock.is_exclusive() {
        return Err(MaintenanceError::NeedsExclusiveLock {
            operation: "forget",
        }
        .into());
    }
    let snaps = repo.snapshots()?;
    let verdicts = plan(&snaps, selection, tz)?;
    let removed = verdicts.iter().filter(|v| !v.keep).count();
    if !dry_run {
        for v in verdicts.iter().filter(|v| !v.keep) {
            repo.delete_snapshot(&v.id)?;
            tracing::info!(
                "removed snapshot {} of {} at {}",
                v.short_id,
                v.source,
                v.time
            );
        }
    }
    Ok(ForgetReport {
        dry_run,
        kept: verdicts.len() - removed,
        removed,
        snapshots: verdicts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;

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
        let dry = forget(&repo, &lock, &sel, &TimeZone::UTC, true).unwrap();
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
        let done = forget(&repo, &lock, &sel, &TimeZone::UTC, false).unwrap();
        assert_eq!((done.kept, done.removed), (2, 2));
        let left: Vec<SnapshotId> = repo.snapshots().unwrap().iter().map(|s| s.id).collect();
        assert_eq!(left, vec![ids[2], ids[3]]);

        let shared = LockGuard::acquire(mem.clone(), false, "t", "h");
        assert!(shared.is_err(), "the exclusive lock is still held");
        drop(lock);
        let shared = LockGuard::acquire(mem, false, "t", "h").unwrap();
        assert!(matches!(
            forget(
                &repo,
                &shared,
                &Selection::Ids(vec![ids[2]]),
                &TimeZone::UTC,
                false
            ),
            Err(Error::Maintenance(
                MaintenanceError::NeedsExclusiveLock { .. }
            ))
        ));
    }
}
