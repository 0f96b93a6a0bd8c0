//! Interrupted maintenance followed directly by the next command, as after a
//! `kill -9` (the integration suite `kill.rs` does it with the real binary).

use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;

use crate::backend::DynBackend;
use crate::backend::faulty::FaultyBackend;
use crate::maintenance::check::{self, ReadData};
use crate::maintenance::forget::{self, Selection};
use crate::maintenance::prune::{self, PruneOptions};
use crate::testutil::{self, exclusive, mem_repo, reopen, restore_files};

fn prune_opts() -> PruneOptions {
    PruneOptions {
        max_unused_percent: 0.0,
        grace: Duration::ZERO,
        // Forgotten snapshots leave the trash at once.
        keep_deleted: Duration::ZERO,
        ..PruneOptions::default()
    }
}

/// A prune interrupted after writing repacked packs but before the index
/// that names them leaves those packs unindexed. The next prune, with a
/// grace period of 0, repacks the same blobs into packs of the same name and
/// also deletes them as unindexed: the new index then names missing packs.
///
/// Packs are filled by several threads, so in some layouts prune has nothing
/// to repack (one write: the index); the test tries layouts until one
/// interrupts prune between a repacked pack and the index.
#[test]
fn prune_after_an_interrupted_prune_keeps_the_packs_it_writes() {
    let mut interruptions = 0;
    for _ in 0..10 {
        interruptions = interrupt_prune_at_every_write();
        if interruptions >= 2 {
            break;
        }
    }
    assert!(
        interruptions >= 2,
        "no layout had a write before the index: {interruptions} crash points"
    );
}

/// Interrupts prune at each of its writes in turn (on a new repository
/// each time), then prunes with a grace period of 0, checks and restores.
/// Returns how many crash points were tried.
fn interrupt_prune_at_every_write() -> usize {
    let mut interruptions = 0;
    for puts in 0..40 {
        let (mem, repo) = mem_repo(false);
        let backend: DynBackend = mem.clone();
        let dir = tempfile::tempdir().unwrap();
        let mut files = testutil::files(1, 12, 20_000);
        let mut snaps = Vec::new();
        for v in 0..4u64 {
            for i in (v as usize % 3..12).step_by(3) {
                files.insert(
                    format!("d{}/f{i:02}", i % 3),
                    testutil::noise(100 * v + i as u64, 20_000),
                );
            }
            testutil::write_tree(dir.path(), &files);
            let time = format!("2026-01-0{}T00:00:00Z", v + 1);
            snaps.push((
                testutil::snapshot(&repo, dir.path(), "/data", &time),
                files.clone(),
            ));
        }
        let gone: Vec<_> = snaps.drain(..2).map(|(s, _)| s.id).collect();
        forget::forget(
            &repo,
            &exclusive(&backend),
            &Selection::Ids(gone),
            &TimeZone::UTC,
        )
        .unwrap();

        let faulty: DynBackend = Arc::new(FaultyBackend::new(mem.clone(), puts));
        if prune::prune(&reopen(faulty), &exclusive(&backend), &prune_opts()).is_ok() {
            break; // past the last write: every crash point was tried
        }
        interruptions += 1;
        // The next command, straight away.
        prune::prune(&repo, &exclusive(&backend), &prune_opts()).unwrap();
        let r = check::check(&repo, ReadData::All).unwrap();
        assert!(r.ok, "interrupted after {puts} puts: {r:#?}");
        for (s, expected) in &snaps {
            let (got, damaged) = restore_files(&repo, s);
            assert!(damaged.is_empty(), "{damaged:?}");
            assert_eq!(got, *expected, "snapshot {}", s.id);
        }
    }
    interruptions
}
