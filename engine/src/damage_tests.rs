//! Damage must not stop everything: an unreadable snapshot object, an
//! unreadable index file, a truncated pack and the leftovers of interrupted
//! writes, each met by the commands a user runs next.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jiff::tz::TimeZone;

use crate::backend::local::LocalBackend;
use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, DynBackend, ObjectKey};
use crate::error::Error;
use crate::maintenance::check::{self, ProblemKind, ReadData};
use crate::maintenance::forget::{self, Selection};
use crate::maintenance::prune::{self, PruneOptions};
use crate::maintenance::repair;
use crate::maintenance::retention::{GroupBy, KeepPolicy};
use crate::repo::Repository;
use crate::repo::catalog::IndexMode;
use crate::repo::format::{HEADER_LEN, ObjectKind};
use crate::repo::id::{IndexId, PackId};
use crate::repo::lock::Access;
use crate::snapshot::Snapshot;
use crate::testutil::{self, exclusive, mem_repo, restore_files, stored_bytes};
use crate::tree::NodeKind;
use crate::tree::walk;

type Files = BTreeMap<String, Vec<u8>>;

fn grace(g: Duration) -> PruneOptions {
    PruneOptions {
        grace: g,
        max_unused_percent: 10.0,
        // Forgotten snapshots leave the trash at once.
        keep_deleted: Duration::ZERO,
        ..PruneOptions::default()
    }
}

fn snap_dir(repo: &Repository, files: &Files, source: &str, time: &str) -> Snapshot {
    let dir = tempfile::tempdir().unwrap();
    testutil::write_tree(dir.path(), files);
    testutil::snapshot(repo, dir.path(), source, time)
}

fn assert_whole(repo: &Repository, s: &Snapshot, files: &Files) {
    let (got, damaged) = restore_files(repo, s);
    assert!(damaged.is_empty(), "snapshot {}: {damaged:?}", s.id);
    assert!(got == *files, "snapshot {} restores other bytes", s.id);
}

/// The names of every pack, index file and snapshot.
fn objects(mem: &MemoryBackend) -> BTreeSet<String> {
    [ObjectKind::Pack, ObjectKind::Index, ObjectKind::Snapshot]
        .into_iter()
        .flat_map(|k| mem.list(k).unwrap())
        .map(|(n, _)| n)
        .collect()
}

fn index_names(mem: &MemoryBackend) -> BTreeSet<String> {
    mem.list(ObjectKind::Index)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

#[test]
fn an_unreadable_snapshot_is_skipped_removable_and_only_blocks_prune() {
    for encrypted in [false, true] {
        let (mem, repo) = mem_repo(encrypted);
        let backend: DynBackend = mem.clone();
        let v1 = testutil::files(1, 6, 9_000);
        let mut v2 = v1.clone();
        v2.insert("extra".into(), testutil::noise(77, 30_000));
        let first = snap_dir(&repo, &v1, "/data", "2026-01-01T00:00:00Z");
        let second = snap_dir(&repo, &v2, "/data", "2026-01-02T00:00:00Z");
        let key = ObjectKey::new(ObjectKind::Snapshot, second.id.to_hex());
        mem.tamper(&key, |b| b.truncate(b.len().min(400) / 2));

        // A new snapshot looks past it for its parent and is whole.
        let third = snap_dir(&repo, &v2, "/data", "2026-01-03T00:00:00Z");
        assert_eq!(third.parent, Some(first.id), "the damaged one is no parent");
        assert_whole(&repo, &third, &v2);

        // check names it and the command that removes it.
        let r = check::check(&repo, ReadData::None).unwrap();
        assert!(!r.ok);
        let p = r
            .errors
            .iter()
            .find(|e| e.kind == ProblemKind::SnapshotDamaged)
            .expect("named");
        assert_eq!(p.snapshot, Some(second.id));
        assert!(
            p.detail
                .contains(&format!("pvsnap forget {}", second.id.to_hex())),
            "{}",
            p.detail
        );

        // prune refuses, changes nothing, and says what to do.
        let before = stored_bytes(mem.as_ref());
        let e = prune::prune(&repo, &exclusive(&backend), &grace(Duration::ZERO)).unwrap_err();
        assert!(matches!(e, Error::SnapshotUnreadable { .. }), "{e}");
        assert!(e.to_string().contains("pvsnap forget"), "{e}");
        assert_eq!(stored_bytes(mem.as_ref()), before);
        // A dry run that assumes it removed (`forget --dry-run --prune`) runs.
        prune::prune(
            &repo,
            Access::DryRun,
            &PruneOptions {
                assume_removed: vec![second.id],
                ..grace(Duration::ZERO)
            },
        )
        .unwrap();

        // repair snapshots does not fail on it.
        let rep = repair::repair_snapshots(&repo, &exclusive(&backend), false).unwrap();
        assert_eq!(rep.unreadable.len(), 1, "{:?}", rep.unreadable);
        assert!(rep.repaired.is_empty());

        // A policy neither fails on it nor removes it.
        let keep_last = Selection::Policy {
            keep: KeepPolicy {
                last: Some(5),
                ..KeepPolicy::default()
            },
            group_by: GroupBy::default(),
        };
        let f = forget::forget(&repo, &exclusive(&backend), &keep_last, &TimeZone::UTC).unwrap();
        assert_eq!(f.removed, 0);
        assert_eq!(
            f.unreadable_skipped
                .iter()
                .map(|u| u.id)
                .collect::<Vec<_>>(),
            vec![second.id]
        );
        assert!(mem.exists(&key).unwrap());

        // forget by a prefix of its name removes it.
        let prefix = second.id.to_hex()[..10].to_string();
        let ids = forget::resolve_ids(&repo, &[prefix]).unwrap();
        assert_eq!(ids, vec![second.id]);
        let f = forget::forget(
            &repo,
            &exclusive(&backend),
            &Selection::Ids(ids),
            &TimeZone::UTC,
        )
        .unwrap();
        assert_eq!(f.unreadable_removed, vec![second.id]);
        assert_eq!(f.removed, 1);
        assert!(!mem.exists(&key).unwrap());

        // Now prune runs and the rest is whole.
        prune::prune(&repo, &exclusive(&backend), &grace(Duration::ZERO)).unwrap();
        let r = check::check(&repo, ReadData::All).unwrap();
        assert!(r.ok, "{r:#?}");
        assert_whole(&repo, &first, &v1);
        assert_whole(&repo, &third, &v2);
    }
}

#[test]
fn an_unreadable_index_file_is_skipped_by_readers_named_by_check_and_refused_by_prune() {
    for encrypted in [true, false] {
        let (mem, repo) = mem_repo(encrypted);
        let backend: DynBackend = mem.clone();
        let a = testutil::files(1, 6, 9_000);
        let b = testutil::files(2, 6, 9_000);
        let sa = snap_dir(&repo, &a, "/a", "2026-01-01T00:00:00Z");
        let before_b = index_names(&mem);
        let sb = snap_dir(&repo, &b, "/b", "2026-01-02T00:00:00Z");
        let victims: Vec<String> = index_names(&mem).difference(&before_b).cloned().collect();
        assert!(!victims.is_empty());
        for v in &victims {
            mem.tamper(&ObjectKey::new(ObjectKind::Index, v), |bytes| {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x40;
                if !encrypted {
                    // Unencrypted, a flip may still decode: cut it short.
                    bytes.truncate(HEADER_LEN + 3);
                }
            });
        }

        // Readers load what the other files describe.
        let read = repo.catalog(IndexMode::Lenient).unwrap();
        let unreadable: BTreeSet<String> = read.unreadable.iter().map(|u| u.name.clone()).collect();
        assert_eq!(unreadable, victims.iter().cloned().collect());
        assert!(
            read.unreadable[0]
                .to_string()
                .contains("pvsnap repair index"),
            "{}",
            read.unreadable[0]
        );
        assert_whole(&repo, &sa, &a);

        // check names each damaged file.
        let r = check::check(&repo, ReadData::None).unwrap();
        for v in &victims {
            let id: IndexId = v.parse().unwrap();
            assert!(
                r.errors
                    .iter()
                    .any(|e| e.kind == ProblemKind::IndexDamaged && e.index == Some(id)),
                "{v} not named: {:?}",
                r.errors
            );
        }

        // prune refuses and changes nothing.
        let before = stored_bytes(mem.as_ref());
        let e = prune::prune(&repo, &exclusive(&backend), &grace(Duration::ZERO)).unwrap_err();
        assert!(matches!(e, Error::IndexUnreadable { .. }), "{e}");
        assert!(e.to_string().contains("pvsnap repair index"), "{e}");
        assert_eq!(stored_bytes(mem.as_ref()), before);

        // A snapshot taken meanwhile stores what it cannot find, and is whole
        // even before the index is repaired.
        let sb2 = snap_dir(&repo, &b, "/b", "2026-01-03T00:00:00Z");
        assert_whole(&repo, &sb2, &b);

        // repair index gets everything back.
        repair::repair_index(&repo, &exclusive(&backend)).unwrap();
        let r = check::check(&repo, ReadData::All).unwrap();
        assert!(r.ok, "{r:#?}");
        for (s, f) in [(&sa, &a), (&sb, &b), (&sb2, &b)] {
            assert_whole(&repo, s, f);
        }
    }
}

/// For each file of `s` (relative path, as restored), where its chunks end:
/// (pack, offset + stored length).
fn chunk_ends(repo: &Repository, s: &Snapshot) -> BTreeMap<String, Vec<(PackId, u64)>> {
    let idx = repo.clone().load_index().unwrap();
    let mut out = BTreeMap::new();
    walk::walk(&idx, &s.tree, "", &mut |path, node| {
        if matches!(node.kind, NodeKind::File { .. }) {
            let ends = node
                .chunks()
                .map(|c| {
                    let l = idx.index().get(&c.0).unwrap();
                    (l.pack, l.entry.offset as u64 + l.entry.stored_len as u64)
                })
                .collect();
            out.insert(path.trim_start_matches('/').to_string(), ends);
        }
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn a_truncated_pack_is_salvaged_and_the_next_snapshot_is_whole() {
    for encrypted in [false, true] {
        let (mem, repo) = mem_repo(encrypted);
        let backend: DynBackend = mem.clone();
        let files = testutil::files(3, 18, 12_000);
        let s = snap_dir(&repo, &files, "/data", "2026-01-01T00:00:00Z");
        let ends = chunk_ends(&repo, &s);
        // The data pack holding chunks of the most files.
        let mut count: BTreeMap<PackId, usize> = BTreeMap::new();
        for e in ends.values() {
            for p in e.iter().map(|(p, _)| *p).collect::<BTreeSet<_>>() {
                *count.entry(p).or_default() += 1;
            }
        }
        let (&victim, _) = count.iter().max_by_key(|(_, n)| **n).unwrap();
        let key = ObjectKey::new(ObjectKind::Pack, victim.to_hex());
        let size = mem.get(&key).unwrap().len() as u64;
        let cut = size / 2;
        mem.tamper(&key, |b| b.truncate(cut as usize));
        let lost: BTreeSet<String> = ends
            .iter()
            .filter(|(_, e)| e.iter().any(|(p, end)| *p == victim && *end > cut))
            .map(|(f, _)| f.clone())
            .collect();
        let intact_in_victim = ends
            .iter()
            .filter(|(f, e)| !lost.contains(*f) && e.iter().any(|(p, _)| *p == victim))
            .count();
        assert!(!lost.is_empty() && intact_in_victim > 0, "a useful cut");

        // check names the pack.
        let r = check::check(&repo, ReadData::None).unwrap();
        assert!(
            r.errors.iter().any(|e| e.pack == Some(victim)),
            "{:?}",
            r.errors
        );
        // Restore writes every intact file and names only the lost ones.
        let (got, damaged) = restore_files(&repo, &s);
        let damaged: BTreeSet<String> = damaged.into_iter().collect();
        assert_eq!(damaged, lost);
        for (f, content) in &files {
            if !lost.contains(f) {
                assert!(got.get(f) == Some(content), "{f} not restored intact");
            }
        }

        // repair index keeps exactly the whole blobs.
        let rep = repair::repair_index(&repo, &exclusive(&backend)).unwrap();
        assert_eq!(rep.packs_salvaged.len(), 1, "{rep:?}");
        let sp = &rep.packs_salvaged[0];
        assert_eq!(sp.pack, victim);
        assert!(sp.kept > 0 && sp.dropped > 0, "{sp:?}");
        let idx = repo.clone().load_index().unwrap();
        assert!(
            idx.index().iter().all(|l| l.pack != victim),
            "the damaged pack left the index"
        );
        let r = check::check(&repo, ReadData::All).unwrap();
        let named: BTreeSet<String> = r
            .damaged_snapshots
            .iter()
            .flat_map(|d| d.paths.iter().map(|p| p.path[1..].to_string()))
            .collect();
        assert_eq!(named, lost, "{r:#?}");
        assert!(r.errors.is_empty(), "{:?}", r.errors);

        // The next snapshot of the source stores the lost chunks it still
        // has again (one lost file was deleted from the source meanwhile).
        let gone = lost.iter().next().unwrap().clone();
        let mut now = files.clone();
        now.remove(&gone);
        let s2 = snap_dir(&repo, &now, "/data", "2026-01-02T00:00:00Z");
        assert_whole(&repo, &s2, &now);
        let r = check::check(&repo, ReadData::All).unwrap();
        let named: Vec<&str> = r
            .damaged_snapshots
            .iter()
            .flat_map(|d| d.paths.iter().map(|p| &p.path[1..]))
            .collect();
        assert_eq!(named, vec![gone.as_str()], "the rest is whole again");

        // Repairing and forgetting the damaged snapshot makes check clean.
        let rs = repair::repair_snapshots(&repo, &exclusive(&backend), false).unwrap();
        assert_eq!(rs.repaired.len(), 1);
        let mut saved = files.clone();
        saved.remove(&gone);
        let copy = repo
            .load_snapshot(&rs.repaired[0].repaired.unwrap())
            .unwrap();
        assert_whole(&repo, &copy, &saved);
        forget::forget(
            &repo,
            &exclusive(&backend),
            &Selection::Ids(vec![s.id]),
            &TimeZone::UTC,
        )
        .unwrap();
        let r = check::check(&repo, ReadData::All).unwrap();
        assert!(r.ok, "{r:#?}");
        prune::prune(&repo, &exclusive(&backend), &grace(Duration::ZERO)).unwrap();
        assert!(!mem.exists(&key).unwrap(), "prune removed the damaged pack");
        let r = check::check(&repo, ReadData::All).unwrap();
        assert!(r.ok && r.warnings.is_empty(), "{r:#?}");
        assert_whole(&repo, &s2, &now);
        assert_whole(&repo, &copy, &saved);
    }
}

fn set_age(path: &std::path::Path, age: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

#[test]
fn check_reports_leftovers_and_prune_removes_those_past_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalBackend::new(dir.path());
    local.create_layout().unwrap();
    let backend: DynBackend = Arc::new(local);
    let repo = Repository::init(backend.clone(), crate::repo::InitOptions::default()).unwrap();
    let files = testutil::files(4, 3, 5_000);
    let s = snap_dir(&repo, &files, "/data", "2026-01-01T00:00:00Z");
    let day = Duration::from_secs(24 * 3600);
    let planted = [
        ("data/3f/.tmp-0000aaaa", 4000usize, 2 * day),
        ("index/.tmp-0000bbbb", 100, day + Duration::from_secs(60)),
        ("snapshots/.tmp-0000cccc", 10, Duration::ZERO),
    ];
    for (p, n, age) in planted {
        let path = dir.path().join(p);
        std::fs::write(&path, vec![7u8; n]).unwrap();
        set_age(&path, age);
    }

    let r = check::check(&repo, ReadData::None).unwrap();
    assert!(r.ok, "leftovers are a warning: {r:#?}");
    assert_eq!((r.leftovers, r.leftover_bytes), (3, 4110));
    let w = r
        .warnings
        .iter()
        .find(|w| w.kind == ProblemKind::Leftovers)
        .expect("reported");
    assert!(w.detail.contains("pvsnap prune --grace 0"), "{}", w.detail);

    let dry = prune::prune(
        &repo,
        Access::DryRun,
        &PruneOptions {
            ..PruneOptions::default()
        },
    )
    .unwrap();
    assert_eq!((dry.leftovers_removed, dry.leftovers_kept), (2, 1));
    assert_eq!(
        backend.leftovers().unwrap().len(),
        3,
        "a dry run removes nothing"
    );

    let p = prune::prune(&repo, &exclusive(&backend), &PruneOptions::default()).unwrap();
    assert_eq!(
        (
            p.leftovers_removed,
            p.leftover_bytes_removed,
            p.leftovers_kept
        ),
        (2, 4100, 1)
    );
    let left: Vec<String> = backend
        .leftovers()
        .unwrap()
        .into_iter()
        .map(|l| l.path)
        .collect();
    assert_eq!(left, vec!["snapshots/.tmp-0000cccc".to_string()]);

    let p = prune::prune(&repo, &exclusive(&backend), &grace(Duration::ZERO)).unwrap();
    assert_eq!(p.leftovers_removed, 1);
    let r = check::check(&repo, ReadData::All).unwrap();
    assert!(r.ok && r.leftovers == 0 && r.warnings.is_empty(), "{r:#?}");
    assert_whole(&repo, &s, &files);
}

/// A snapshot taken after a pack was truncated or lost, before anyone ran
/// check or repair, must not deduplicate against the blobs that are gone: it
/// stores them again, so it restores whole although it exited 0.
#[test]
fn a_snapshot_taken_before_repair_does_not_lean_on_a_truncated_or_lost_pack() {
    for (encrypted, lose_whole_pack) in [(false, false), (true, false), (false, true)] {
        let (mem, repo) = mem_repo(encrypted);
        let files = testutil::files(7, 18, 12_000);
        let s = snap_dir(&repo, &files, "/data", "2026-01-01T00:00:00Z");
        let ends = chunk_ends(&repo, &s);
        let victim = ends.values().flatten().map(|(p, _)| *p).next().unwrap();
        let key = ObjectKey::new(ObjectKind::Pack, victim.to_hex());
        if lose_whole_pack {
            mem.delete(&key).unwrap();
        } else {
            let size = mem.get(&key).unwrap().len();
            mem.tamper(&key, |b| b.truncate(size / 2));
        }
        let s2 = snap_dir(&repo, &files, "/data", "2026-01-02T00:00:00Z");
        assert_whole(&repo, &s2, &files);
    }
}

/// A pack that is gone while a snapshot needs data in it: prune refuses,
/// names the snapshot, the blob and the missing pack, and changes nothing.
/// Once that snapshot is forgotten into the trash, what it needs is kept as
/// far as it exists, and the missing data no longer stops prune.
#[test]
fn prune_refuses_while_a_snapshot_needs_a_missing_pack_and_not_once_it_is_in_the_trash() {
    let (mem, repo) = mem_repo(false);
    let backend: DynBackend = mem.clone();
    let first: Files = (0..6)
        .map(|i| (format!("a{i}"), testutil::noise(100 + i, 30_000)))
        .collect();
    let s1 = snap_dir(&repo, &first, "/one", "2026-01-01T00:00:00Z");
    let before: BTreeSet<String> = mem
        .list(ObjectKind::Pack)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let second: Files = (0..6)
        .map(|i| (format!("b{i}"), testutil::noise(200 + i, 30_000)))
        .collect();
    let s2 = snap_dir(&repo, &second, "/two", "2026-01-02T00:00:00Z");
    // A pack only the second snapshot uses, holding data.
    let idx = repo.clone().load_index().unwrap();
    let victim = idx
        .index()
        .iter()
        .find(|l| {
            l.entry.kind == crate::store::blob::BlobKind::Data && !before.contains(&l.pack.to_hex())
        })
        .map(|l| l.pack)
        .expect("a data pack of the second snapshot");
    mem.delete(&ObjectKey::new(ObjectKind::Pack, victim.to_hex()))
        .unwrap();
    let was = objects(&mem);

    let opts = PruneOptions {
        grace: Duration::ZERO,
        ..PruneOptions::default()
    };
    let e = prune::prune(&repo, &exclusive(&backend), &opts).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&s2.id.to_hex())
            && msg.contains(&format!("its pack {victim} is missing"))
            && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert_eq!(objects(&mem), was, "a refused prune changes nothing");

    // Forgotten (into the trash, kept 7 days by default): prune runs, keeps
    // the first snapshot whole and what the second still has.
    forget::forget(
        &repo,
        &exclusive(&backend),
        &Selection::Ids(vec![s2.id]),
        &TimeZone::UTC,
    )
    .unwrap();
    let r = prune::prune(&repo, &exclusive(&backend), &opts).unwrap();
    assert_eq!(r.missing_packs_forgotten, 1, "{r:?}");
    assert_whole(&repo, &s1, &first);
    let trashed = repo.trash().unwrap();
    assert_eq!(trashed.entries.len(), 1);
    let (got, damaged) = restore_files(&repo, &trashed.entries[0].snapshot);
    assert!(!damaged.is_empty(), "the lost data is named");
    for (f, content) in &got {
        if !damaged.contains(f) {
            assert_eq!(Some(content), second.get(f), "{f} kept intact in the trash");
        }
    }
    assert!(
        got.len() > damaged.len(),
        "something of the second was kept"
    );
}

/// A tree that no index file lists (its index file was lost) can still be
/// read from its pack's trailer, but prune must not take that for "kept":
/// the pack is unindexed and would be deleted. Prune refuses, naming the
/// snapshot, and changes nothing; `repair index` lists the pack again and
/// prune then runs and keeps the snapshot whole.
#[test]
fn prune_refuses_while_a_snapshot_needs_a_tree_no_index_lists() {
    let (mem, repo) = mem_repo(false);
    let backend: DynBackend = mem.clone();
    // Folders and empty files only: every blob of the snapshot is a tree.
    let dir = tempfile::tempdir().unwrap();
    for d in ["a", "a/b", "c"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
        std::fs::write(dir.path().join(d).join("empty"), b"").unwrap();
    }
    let s = testutil::snapshot(&repo, dir.path(), "/trees", "2026-01-01T00:00:00Z");
    for (name, _) in mem.list(ObjectKind::Index).unwrap() {
        mem.delete(&ObjectKey::new(ObjectKind::Index, &name))
            .unwrap();
    }
    let was = objects(&mem);
    let e = prune::prune(&repo, &exclusive(&backend), &grace(Duration::ZERO)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&s.id.to_hex()) && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert_eq!(objects(&mem), was, "a refused prune changes nothing");

    repair::repair_index(&repo, &exclusive(&backend)).unwrap();
    prune::prune(&repo, &exclusive(&backend), &grace(Duration::ZERO)).unwrap();
    let r = check::check(&repo, ReadData::All).unwrap();
    assert!(r.ok, "{r:#?}");
    let (got, damaged) = restore_files(&repo, &s);
    assert!(damaged.is_empty(), "{damaged:?}");
    assert_eq!(got.len(), 3, "{got:?}");
}
