//! The trash: snapshots that `forget` removed, kept until `prune` expires
//! them after a grace period (`--keep-deleted`), and `undelete`.
//!
//! A trash entry is the snapshot object's bytes, unchanged (sealed as
//! before in an encrypted repository), stored as `trash/<id>-<unix
//! seconds>`: the name says which snapshot and when it was removed, on the
//! storage's clock ([`crate::backend::Backend::now`]). Object storage has
//! no rename, so forgetting writes the entry first and deletes the snapshot
//! object second; a crash in between leaves both, never neither. Readers
//! take a snapshot present in both places as live (its entry is a leftover
//! that prune removes); undelete writes the snapshot object back before it
//! deletes the entry, for the same reason.

use jiff::Timestamp;

use super::Repository;
use crate::backend::ObjectKey;
use crate::error::{Error, Result};
use crate::repo::format::ObjectKind;
use crate::repo::id::SnapshotId;
use crate::snapshot::Snapshot;

/// One object in the trash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashEntry {
    pub id: SnapshotId,
    /// When `forget` removed it, on the storage's clock (whole seconds).
    pub deleted: Timestamp,
}

impl TrashEntry {
    /// The object's name: `<snapshot id>-<unix seconds>`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.id.to_hex(), self.deleted.as_second())
    }

    fn key(&self) -> ObjectKey {
        ObjectKey::new(ObjectKind::Trash, self.name())
    }

    /// Reads an object name; `None` for a name this build does not write.
    pub fn parse(name: &str) -> Option<TrashEntry> {
        let (id, secs) = name.split_once('-')?;
        Some(TrashEntry {
            id: id.parse().ok()?,
            deleted: Timestamp::from_second(secs.parse().ok()?).ok()?,
        })
    }

    /// When prune may remove it: `deleted` plus `keep`.
    pub fn expires(&self, keep: std::time::Duration) -> Timestamp {
        let keep = jiff::SignedDuration::try_from(keep).unwrap_or(jiff::SignedDuration::MAX);
        self.deleted.checked_add(keep).unwrap_or(Timestamp::MAX)
    }
}

/// A snapshot in the trash, with the entry that holds it.
#[derive(Debug, Clone)]
pub struct Trashed {
    pub entry: TrashEntry,
    pub snapshot: Snapshot,
}

/// The trash as readers see it.
#[derive(Debug, Default)]
pub struct Trash {
    /// Entries of snapshots that are not live, one per snapshot (its newest
    /// entry), oldest removal first.
    pub entries: Vec<Trashed>,
    /// Entries that cannot be read, with the reason.
    pub unreadable: Vec<(TrashEntry, Error)>,
    /// Every entry whose snapshot is also live (a forget or undelete was
    /// interrupted) or that an entry of the same snapshot written later
    /// replaces: nothing needs them.
    pub stale: Vec<TrashEntry>,
}

impl Repository {
    /// Every trash entry, oldest removal first (ties broken by id).
    pub fn trash_entries(&self) -> Result<Vec<TrashEntry>> {
        let mut out: Vec<TrashEntry> = self
            .backend
            .list(ObjectKind::Trash)?
            .into_iter()
            .filter_map(|(n, _)| TrashEntry::parse(&n))
            .collect();
        out.sort_by(|a, b| a.deleted.cmp(&b.deleted).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Reads the snapshot an entry holds.
    pub fn load_trashed(&self, e: &TrashEntry) -> Result<Snapshot> {
        let bytes = self.backend.get(&e.key())?;
        crate::snapshot::decode_snapshot(&bytes, &self.crypto, &e.id)
    }

    /// The trash, each entry read; `live` are the ids of the snapshot
    /// objects present (readable or not).
    pub fn trash(&self) -> Result<Trash> {
        let live: std::collections::HashSet<SnapshotId> = self
            .backend
            .list(ObjectKind::Snapshot)?
            .into_iter()
            .filter_map(|(n, _)| n.parse().ok())
            .collect();
        let all = self.trash_entries()?;
        let mut trash = Trash::default();
        for (i, e) in all.iter().enumerate() {
            let newer = all[i + 1..].iter().any(|n| n.id == e.id);
            if newer || live.contains(&e.id) {
                trash.stale.push(e.clone());
                continue;
            }
            match self.load_trashed(e) {
                Ok(snapshot) => trash.entries.push(Trashed {
                    entry: e.clone(),
                    snapshot,
                }),
                Err(err) => trash.unreadable.push((e.clone(), err)),
            }
        }
        Ok(trash)
    }

    /// Moves a snapshot object into the trash: writes the entry (the
    /// object's bytes, unchanged), then deletes the snapshot object.
    pub fn trash_snapshot(&self, id: &SnapshotId) -> Result<TrashEntry> {
        let bytes = self
            .backend
            .get(&ObjectKey::new(ObjectKind::Snapshot, id.to_hex()))?;
        let now = self.backend.now()?;
        let entry = TrashEntry {
            id: *id,
            deleted: Timestamp::from_second(now.as_second())
                .expect("whole seconds of a timestamp are one"),
        };
        self.backend.put(&entry.key(), &bytes)?;
        self.delete_snapshot(id)?;
        Ok(entry)
    }

    /// Brings back the trashed snapshot `spec` names (its id or a unique
    /// prefix): writes the snapshot object, then deletes its trash entries.
    pub fn undelete(&self, spec: &str) -> Result<Snapshot> {
        let trash = self.trash()?;
        let lower = spec.to_ascii_lowercase();
        let hex = !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_hexdigit());
        let matches: Vec<&Trashed> = trash
            .entries
            .iter()
            .filter(|t| hex && t.entry.id.to_hex().starts_with(&lower))
            .collect();
        let t = match matches.len() {
            1 => matches[0],
            0 => {
                if let Some((e, err)) = trash
                    .unreadable
                    .iter()
                    .find(|(e, _)| hex && e.id.to_hex().starts_with(&lower))
                {
                    return Err(Error::SnapshotUnreadable {
                        id: e.id.to_hex(),
                        detail: format!("its trash entry trash/{}: {err}", e.name()),
                    });
                }
                let (live, _) = self.snapshots_lenient()?;
                if let Ok(s) = crate::repo::resolve_in(&live, spec) {
                    return Err(Error::Invalid(format!(
                        "snapshot {} is not deleted: `pvsnap snapshots` lists it",
                        s.short_id()
                    )));
                }
                return Err(Error::SnapshotGone(spec.to_string()));
            }
            n => {
                return Err(Error::AmbiguousSnapshot {
                    prefix: spec.into(),
                    count: n,
                });
            }
        };
        let bytes = self.backend.get(&t.entry.key())?;
        self.backend.put(
            &ObjectKey::new(ObjectKind::Snapshot, t.entry.id.to_hex()),
            &bytes,
        )?;
        for e in self.trash_entries()?.iter().filter(|e| e.id == t.entry.id) {
            self.backend.delete(&e.key())?;
        }
        Ok(t.snapshot.clone())
    }

    /// Removes one trash entry (prune, once it expired or went stale).
    pub fn delete_trash_entry(&self, e: &TrashEntry) -> Result<()> {
        Ok(self.backend.delete(&e.key())?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::backend::faulty::FaultyBackend;
    use crate::backend::{Backend, DynBackend};
    use crate::maintenance::forget::{Selection, forget};
    use crate::maintenance::prune::{PruneOptions, prune};
    use crate::testutil::{self, exclusive, mem_repo, reopen, restore_files, snapshot};

    const DAY: u64 = 24 * 3600;

    fn forget_ids(repo: &Repository, mem: &DynBackend, ids: &[SnapshotId]) {
        let lock = exclusive(mem);
        forget(
            repo,
            &lock,
            &Selection::Ids(ids.to_vec()),
            &jiff::tz::TimeZone::UTC,
        )
        .unwrap();
    }

    fn prune_keeping(repo: &Repository, mem: &DynBackend, keep: Duration) {
        let lock = exclusive(mem);
        let opts = PruneOptions {
            keep_deleted: keep,
            grace: Duration::ZERO,
            ..PruneOptions::default()
        };
        prune(repo, &lock, &opts).unwrap();
    }

    /// Moves an entry's removal time `secs` into the past, as if `forget`
    /// had run then.
    fn backdate(b: &dyn Backend, e: &TrashEntry, secs: u64) -> TrashEntry {
        let bytes = b.get(&e.key()).unwrap();
        let old = TrashEntry {
            id: e.id,
            deleted: Timestamp::from_second(e.deleted.as_second() - secs as i64).unwrap(),
        };
        b.put(&old.key(), &bytes).unwrap();
        b.delete(&e.key()).unwrap();
        old
    }

    #[test]
    fn forget_trashes_prune_keeps_undelete_restores_bit_exact_then_expiry_loses_it() {
        for encrypted in [false, true] {
            let (mem, repo) = mem_repo(encrypted);
            let dynb: DynBackend = mem.clone();
            let dir = tempfile::tempdir().unwrap();
            let files = testutil::files(7, 3, 50_000);
            testutil::write_tree(dir.path(), &files);
            let snap = snapshot(&repo, dir.path(), "/src", "2026-01-01T00:00:00Z");
            let before = testutil::pack_and_index_bytes(&*mem);
            forget_ids(&repo, &dynb, &[snap.id]);
            assert!(repo.snapshots().unwrap().is_empty(), "forget hides it");
            let trash = repo.trash().unwrap();
            assert_eq!(trash.entries.len(), 1);
            assert_eq!(trash.entries[0].snapshot, snap, "the entry keeps it whole");
            // Prune keeps every blob the trashed snapshot needs.
            prune_keeping(&repo, &dynb, Duration::from_secs(7 * DAY));
            assert_eq!(testutil::pack_and_index_bytes(&*mem), before);
            let back = repo.undelete(&snap.id.to_hex()[..6]).unwrap();
            assert_eq!(back, snap);
            assert!(repo.trash_entries().unwrap().is_empty());
            let (got, damaged) = restore_files(&repo, &repo.snapshots().unwrap()[0]);
            assert!(damaged.is_empty());
            assert_eq!(got, files, "undeleted snapshot restores bit-exact");
            // Forgotten again, 8 days ago: prune expires it and frees its data.
            forget_ids(&repo, &dynb, &[snap.id]);
            let e = repo.trash_entries().unwrap().remove(0);
            backdate(&*mem, &e, 8 * DAY);
            prune_keeping(&repo, &dynb, Duration::from_secs(7 * DAY));
            assert!(repo.trash_entries().unwrap().is_empty());
            assert!(testutil::pack_and_index_bytes(&*mem) < before / 2);
            let err = repo.undelete(&snap.id.to_hex()).unwrap_err();
            assert!(matches!(err, Error::SnapshotGone(_)), "{err}");
            assert!(err.to_string().contains("it is gone"), "{err}");
        }
    }

    #[test]
    fn a_crash_between_trash_entry_and_delete_leaves_the_snapshot_live() {
        let (mem, repo) = mem_repo(true);
        let dynb: DynBackend = mem.clone();
        let dir = tempfile::tempdir().unwrap();
        let files = testutil::files(3, 2, 20_000);
        testutil::write_tree(dir.path(), &files);
        let snap = snapshot(&repo, dir.path(), "/src", "2026-01-01T00:00:00Z");
        // The entry is written, the snapshot object's delete fails (a kill
        // -9 at that point leaves the same objects).
        let no_deletes: DynBackend =
            Arc::new(FaultyBackend::new(dynb.clone(), -1).fail_deletes_after(0));
        assert!(reopen(no_deletes).trash_snapshot(&snap.id).is_err());
        assert_eq!(repo.snapshots().unwrap(), vec![snap.clone()]);
        let trash = repo.trash().unwrap();
        assert!(
            trash.entries.is_empty(),
            "a live snapshot is not listed as deleted"
        );
        assert_eq!(trash.stale.len(), 1);
        assert!(matches!(
            repo.undelete(&snap.id.to_hex()).unwrap_err(),
            Error::Invalid(m) if m.contains("is not deleted")
        ));
        // Prune removes the leftover entry and nothing the snapshot needs.
        prune_keeping(&repo, &dynb, Duration::ZERO);
        assert!(repo.trash_entries().unwrap().is_empty());
        let (got, damaged) = restore_files(&repo, &snap);
        assert!(damaged.is_empty());
        assert_eq!(got, files);
        // The entry cannot be written: nothing changes.
        let no_puts: DynBackend = Arc::new(FaultyBackend::new(dynb.clone(), 0));
        assert!(reopen(no_puts).trash_snapshot(&snap.id).is_err());
        assert_eq!(repo.snapshots().unwrap(), vec![snap]);
        assert!(repo.trash_entries().unwrap().is_empty());
    }

    /// Random sequences of snapshot / forget / undelete / prune (with a
    /// random grace, and removal times moved into the past as a clock that
    /// advances) against a model: which snapshots are live, which are in
    /// the trash, and every live or kept one restores bit-exact.
    #[test]
    fn model_snapshot_forget_undelete_prune() {
        let mut seed: u64 = 0x5eed_7a54;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for round in 0..4 {
            let (mem, repo) = mem_repo(round % 2 == 1);
            let dynb: DynBackend = mem.clone();
            let mut contents: BTreeMap<SnapshotId, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
            let mut live: BTreeSet<SnapshotId> = BTreeSet::new();
            // In the trash: id -> age in days.
            let mut trashed: BTreeMap<SnapshotId, u64> = BTreeMap::new();
            for step in 0..25 {
                match next(5) {
                    0 | 1 => {
                        let dir = tempfile::tempdir().unwrap();
                        let files = testutil::files(next(4), 2, 10_000);
                        testutil::write_tree(dir.path(), &files);
                        let t = format!("2026-01-01T00:{:02}:{:02}Z", round, step);
                        let s = snapshot(&repo, dir.path(), "/src", &t);
                        contents.insert(s.id, files);
                        live.insert(s.id);
                    }
                    2 if !live.is_empty() => {
                        let id = *live.iter().nth(next(live.len() as u64) as usize).unwrap();
                        forget_ids(&repo, &dynb, &[id]);
                        live.remove(&id);
                        trashed.insert(id, 0);
                    }
                    3 if !trashed.is_empty() => {
                        let id = *trashed
                            .keys()
                            .nth(next(trashed.len() as u64) as usize)
                            .unwrap();
                        repo.undelete(&id.to_hex()).unwrap();
                        trashed.remove(&id);
                        live.insert(id);
                    }
                    _ => {
                        // Time passes, then prune with a random grace.
                        let days = next(4);
                        for e in repo.trash_entries().unwrap() {
                            backdate(&*mem, &e, days * DAY);
                        }
                        for age in trashed.values_mut() {
                            *age += days;
                        }
                        let keep = next(6);
                        prune_keeping(&repo, &dynb, Duration::from_secs(keep * DAY));
                        trashed.retain(|_, age| *age < keep);
                    }
                }
                let got_live: BTreeSet<SnapshotId> =
                    repo.snapshots().unwrap().iter().map(|s| s.id).collect();
                assert_eq!(got_live, live, "round {round} step {step}");
                let got_trash: BTreeSet<SnapshotId> = repo
                    .trash()
                    .unwrap()
                    .entries
                    .iter()
                    .map(|t| t.entry.id)
                    .collect();
                assert_eq!(
                    got_trash,
                    trashed.keys().copied().collect(),
                    "round {round} step {step}"
                );
            }
            // Everything the model still holds comes back whole.
            for id in trashed.keys() {
                repo.undelete(&id.to_hex()).unwrap();
            }
            for s in repo.snapshots().unwrap() {
                let (got, damaged) = restore_files(&repo, &s);
                assert!(damaged.is_empty(), "round {round}");
                assert_eq!(got, contents[&s.id], "round {round}");
            }
            for id in contents
                .keys()
                .filter(|id| !live.contains(id) && !trashed.contains_key(id))
            {
                assert!(repo.undelete(&id.to_hex()).is_err(), "expired {id} is gone");
            }
        }
    }
}
