//! Restores in place: exact content after restoring over a dirty target,
//! extra entries removed without following symlinks, and chunks already in
//! place not written again. And a fresh restore cut into many units for more
//! workers than files: every byte and every time lands.

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{RestoreOptions, RestoreProgress, RestoreSummary, restore};
use crate::IndexedRepository;
use crate::backup::BackupOptions;
use crate::snapshot::Snapshot;
use crate::testutil::{self, noise};

fn repo() -> IndexedRepository {
    testutil::indexed_repo(16 * 1024, 64 * 1024, 256 * 1024)
}

fn snapshot(repo: &mut IndexedRepository, dir: &Path) -> Snapshot {
    testutil::backup_indexed(repo, dir, &BackupOptions::default())
}

static IN_PLACE: std::sync::LazyLock<RestoreOptions> =
    std::sync::LazyLock::new(|| RestoreOptions {
        delete_extra: true,
        overwrite: super::Overwrite::IfChanged,
        ..RestoreOptions::default()
    });

fn restore_with(
    repo: &IndexedRepository,
    snap: &Snapshot,
    target: &Path,
    opts: &RestoreOptions,
) -> RestoreSummary {
    let s = restore(repo, snap, None, target, opts, &RestoreProgress::default()).expect("restore");
    assert!(s.damaged.is_empty(), "{:?}", s.damaged);
    s
}

/// Every entry below `root`: path, type, mode, size, mtime and content.
fn manifest(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let p = entry.expect("entry").path();
            let m = fs::symlink_metadata(&p).expect("lstat");
            let rel = p
                .strip_prefix(root)
                .expect("below root")
                .display()
                .to_string();
            let ft = m.file_type();
            let what = if ft.is_symlink() {
                format!("link -> {}", fs::read_link(&p).expect("readlink").display())
            } else if ft.is_dir() {
                stack.push(p.clone());
                format!("dir {:o} mtime {}", m.mode(), m.mtime())
            } else {
                let data = fs::read(&p).expect("read");
                format!(
                    "file {:o} mtime {}.{} size {} {:016x}",
                    m.mode(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.len(),
                    fnv(&data)
                )
            };
            out.push(format!("{rel}: {what}"));
        }
    }
    out.sort();
    out
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
        (h ^ *x as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// A volume-like folder: a large file of several chunks, small files,
/// nested folders, a symlink, an empty file and a sparse file.
fn build_source(root: &Path) {
    fs::create_dir_all(root.join("db/base")).unwrap();
    fs::create_dir_all(root.join("logs")).unwrap();
    fs::write(root.join("db/base/table.dat"), noise(1, 1_500_000)).unwrap();
    fs::write(root.join("db/PG_VERSION"), b"16\n").unwrap();
    fs::write(root.join("logs/app.log"), "request served\n".repeat(20_000)).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("db/PG_VERSION", root.join("version-link")).unwrap();
    let sparse = fs::File::create(root.join("sparse.img")).unwrap();
    sparse.set_len(8 * 1024 * 1024).unwrap();
    sparse
        .write_all_at(&noise(2, 100_000), 4 * 1024 * 1024)
        .unwrap();
    fs::set_permissions(
        root.join("db/PG_VERSION"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// A snapshot of [`build_source`] in a fresh repository, and the temporary
/// folder holding the source (`src`) and the restore targets.
struct Fixture {
    dir: tempfile::TempDir,
    src: PathBuf,
    repo: IndexedRepository,
    snap: Snapshot,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        build_source(&src);
        let mut repo = repo();
        let snap = snapshot(&mut repo, &src);
        Fixture {
            dir,
            src,
            repo,
            snap,
        }
    }

    /// `name` below the temporary folder.
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A fresh restore of the snapshot to `name` below the temporary folder.
    fn restored(&self, name: &str) -> PathBuf {
        let target = self.path(name);
        self.restore(&target, &RestoreOptions::default());
        target
    }

    /// Restores the snapshot to `target`; see [`restore_with`].
    fn restore(&self, target: &Path, opts: &RestoreOptions) -> RestoreSummary {
        restore_with(&self.repo, &self.snap, target, opts)
    }
}

/// Writes `bytes` at `offset` into the existing file `path`, and returns the
/// file still open for writing.
fn write_at(path: &Path, offset: u64, bytes: &[u8]) -> fs::File {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    f
}

#[test]
fn in_place_restore_over_a_dirty_target_gives_the_snapshot_exactly() {
    let fx = Fixture::new();
    let fresh = fx.restored("fresh");

    // The volume as a running workload left it after the snapshot.
    let vol = fx.restored("vol");
    write_at(&vol.join("db/base/table.dat"), 700_000, b"overwritten page")
        .set_len(2_000_000) // grown
        .unwrap();
    fs::write(vol.join("logs/app.log"), "short\n").unwrap(); // shrunk
    fs::remove_file(vol.join("db/PG_VERSION")).unwrap(); // deleted
    fs::create_dir_all(vol.join("db/pg_wal/archive")).unwrap(); // extra tree
    fs::write(vol.join("db/pg_wal/archive/000001"), noise(3, 50_000)).unwrap();
    fs::write(vol.join("new-file"), b"extra").unwrap();
    fs::remove_file(vol.join("empty")).unwrap();
    fs::create_dir(vol.join("empty")).unwrap(); // a folder where a file was
    fs::remove_dir_all(vol.join("logs")).unwrap();
    fs::write(vol.join("logs"), b"a file where a folder was").unwrap();
    fs::remove_file(vol.join("version-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", vol.join("version-link")).unwrap(); // retargeted
    write_at(&vol.join("sparse.img"), 100, b"data in a hole");
    fs::set_permissions(vol.join("db"), fs::Permissions::from_mode(0o700)).unwrap();
    xattr::set(vol.join("db/base/table.dat"), "user.stale", b"1").unwrap();
    xattr::set(vol.join("db"), "user.stale", b"1").unwrap();
    assert_ne!(manifest(&vol), manifest(&fresh));

    let s = fx.restore(&vol, &IN_PLACE);
    assert_eq!(manifest(&vol), manifest(&fresh));
    assert_eq!(s.deleted, 2, "db/pg_wal and new-file: {s:?}");
    for p in ["db/base/table.dat", "db"] {
        assert_eq!(
            xattr::list(vol.join(p)).unwrap().count(),
            0,
            "{p} keeps an xattr the snapshot does not have"
        );
    }
    // The hole is a hole again, not only zeros.
    let sparse = fs::metadata(vol.join("sparse.img")).unwrap();
    assert!(
        sparse.blocks() * 512 < 1024 * 1024,
        "{} blocks",
        sparse.blocks()
    );
}

#[test]
fn chunks_already_in_place_are_not_written() {
    let fx = Fixture::new();
    let vol = fx.path("vol");
    let full = fx.restore(&vol, &RestoreOptions::default());
    assert!(full.bytes_written > 1_500_000, "{full:?}");

    // Unchanged volume: nothing to write.
    let same = fx.restore(&vol, &IN_PLACE);
    assert_eq!(same.bytes_written, 0, "{same:?}");
    assert_eq!(same.files_skipped, same.files, "{same:?}");
    assert_eq!(same.bytes_skipped, full.bytes_written);

    // One page changed in the large file: only its chunk is written.
    write_at(&vol.join("db/base/table.dat"), 1_000_000, b"changed");
    let one = fx.restore(&vol, &IN_PLACE);
    assert!(
        one.bytes_written > 0 && one.bytes_written <= 256 * 1024,
        "{one:?}"
    );
    assert_eq!(one.files_skipped, one.files - 1, "{one:?}");
    assert_eq!(
        fs::read(vol.join("db/base/table.dat")).unwrap(),
        fs::read(fx.src.join("db/base/table.dat")).unwrap()
    );

    // With `Overwrite::Always` the same restore writes everything again.
    let always = RestoreOptions {
        overwrite: super::Overwrite::Always,
        ..RestoreOptions::default()
    };
    let again = fx.restore(&vol, &always);
    assert_eq!(again.bytes_written, full.bytes_written);
}

#[test]
fn deleting_extra_entries_never_follows_symlinks_out_of_the_target() {
    let fx = Fixture::new();
    let outside = fx.path("outside");
    fs::create_dir_all(outside.join("keep")).unwrap();
    fs::write(outside.join("keep/precious"), b"not the volume's").unwrap();
    fs::write(outside.join("table.dat"), b"not the volume's either").unwrap();

    let vol = fx.path("vol");
    fs::create_dir_all(&vol).unwrap();
    // An extra symlink to a folder outside, and a symlink where the
    // snapshot has a folder (`db`), pointing outside too.
    std::os::unix::fs::symlink(&outside, vol.join("escape")).unwrap();
    std::os::unix::fs::symlink(&outside, vol.join("db")).unwrap();
    let s = fx.restore(&vol, &IN_PLACE);

    assert!(s.deleted >= 1, "{s:?}");
    assert!(
        fs::symlink_metadata(vol.join("escape")).is_err(),
        "extra symlink removed"
    );
    assert!(
        fs::symlink_metadata(vol.join("db")).unwrap().is_dir(),
        "db is a real folder again"
    );
    assert_eq!(
        fs::read(outside.join("keep/precious")).unwrap(),
        b"not the volume's"
    );
    assert_eq!(
        fs::read(outside.join("table.dat")).unwrap(),
        b"not the volume's either"
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 2);
}

#[test]
fn a_file_with_two_names_is_replaced_not_written_through() {
    let fx = Fixture::new();
    let vol = fx.restored("vol");
    // Another name for the volume's file, outside the volume.
    let other = fx.path("other-name");
    fs::write(vol.join("db/PG_VERSION"), b"15\n").unwrap();
    fs::hard_link(vol.join("db/PG_VERSION"), &other).unwrap();
    fx.restore(&vol, &IN_PLACE);
    assert_eq!(fs::read(vol.join("db/PG_VERSION")).unwrap(), b"16\n");
    assert_eq!(fs::read(&other).unwrap(), b"15\n");
}

#[test]
fn deleting_extra_entries_with_filters_stays_inside_the_selection() {
    let fx = Fixture::new();
    let vol = fx.restored("vol");
    fs::write(vol.join("db/extra"), b"x").unwrap();
    fs::write(vol.join("db/base/extra"), b"x").unwrap();
    fs::write(vol.join("db/keep.tmp"), b"x").unwrap();
    fs::write(vol.join("logs/extra"), b"x").unwrap();
    fs::write(vol.join("top-extra"), b"x").unwrap();
    let opts = RestoreOptions {
        includes: vec!["db".into()],
        excludes: vec!["*.tmp".into()],
        ..IN_PLACE.clone()
    };
    let s = fx.restore(&vol, &opts);
    assert_eq!(s.deleted, 2, "db/extra and db/base/extra");
    assert!(!vol.join("db/extra").exists());
    assert!(!vol.join("db/base/extra").exists());
    assert!(vol.join("db/keep.tmp").exists(), "excluded: kept");
    assert!(
        vol.join("logs/extra").exists(),
        "outside the selection: kept"
    );
    assert!(
        vol.join("top-extra").exists(),
        "the partly selected top: kept"
    );
}

#[test]
fn a_dry_run_changes_nothing_and_says_what_it_would_do() {
    let fx = Fixture::new();
    let vol = fx.restored("vol");
    fs::write(vol.join("db/extra"), b"x").unwrap();
    fs::write(vol.join("db/PG_VERSION"), b"17\n").unwrap();
    let before = manifest(&vol);
    let opts = RestoreOptions {
        dry_run: true,
        ..IN_PLACE.clone()
    };
    let s = fx.restore(&vol, &opts);
    assert_eq!(manifest(&vol), before);
    let p = s.preview.expect("a preview");
    let vol_s = vol.display().to_string();
    assert_eq!(p.delete, vec![format!("{vol_s}/db/extra")]);
    assert_eq!(p.write, vec![(format!("{vol_s}/db/PG_VERSION"), 3)]);
    // A target that does not exist is not made.
    let none = fx.path("none");
    let s = fx.restore(&none, &opts);
    assert!(!none.exists());
    assert_eq!(s.preview.unwrap().write.len() as u64, s.files + s.specials);
}

#[test]
fn overwrite_never_keeps_existing_entries() {
    let fx = Fixture::new();
    let vol = fx.restored("vol");
    fs::write(vol.join("db/PG_VERSION"), b"17\n").unwrap();
    fs::remove_file(vol.join("empty")).unwrap();
    let opts = RestoreOptions {
        overwrite: super::Overwrite::Never,
        ..RestoreOptions::default()
    };
    let s = fx.restore(&vol, &opts);
    assert_eq!(fs::read(vol.join("db/PG_VERSION")).unwrap(), b"17\n");
    assert!(vol.join("empty").exists(), "what was missing is restored");
    assert_eq!(s.kept, 5, "four files and the symlink");
    let both = RestoreOptions {
        delete_extra: true,
        ..opts
    };
    let err = restore(
        &fx.repo,
        &fx.snap,
        None,
        &vol,
        &both,
        &RestoreProgress::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("--overwrite never"), "{err}");
}

#[test]
fn many_units_and_more_workers_than_files_restore_every_byte_and_time() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("small")).unwrap();
    // Two files of several units each, and a copy of one (the same chunks go
    // to two files).
    let big = noise(21, 19 * 1024 * 1024 + 333);
    fs::write(src.join("big-a"), &big).unwrap();
    fs::write(src.join("big-copy"), &big).unwrap();
    fs::write(src.join("big-b"), noise(22, 17 * 1024 * 1024)).unwrap();
    // One block repeated: the same chunks go to many offsets of one file.
    fs::write(src.join("repeated"), noise(23, 300 * 1024).repeat(40)).unwrap();
    for i in 0..200u64 {
        let p = src.join("small").join(format!("f{i}"));
        fs::write(&p, noise(100 + i, 500 + i as usize * 37)).unwrap();
    }
    for (i, name) in ["big-a", "big-copy", "big-b", "repeated", "small/f7"]
        .iter()
        .enumerate()
    {
        let t =
            std::time::UNIX_EPOCH + std::time::Duration::new(1_600_000_000 + i as u64, 123_456_789);
        fs::File::options()
            .write(true)
            .open(src.join(name))
            .unwrap()
            .set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
            .unwrap();
    }
    let mut r = repo();
    let snap = snapshot(&mut r, &src);
    let target = tmp.path().join("target");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    let summary = pool.install(|| restore_with(&r, &snap, &target, &RestoreOptions::default()));
    assert_eq!(summary.files, 204);
    assert_eq!(manifest(&src), manifest(&target));
}

#[test]
fn holes_stay_holes_and_allocated_zeros_stay_allocated_through_two_round_trips() {
    const MIB: u64 = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    // A 1 MiB hole, 2 MiB preallocated (unwritten), data, 1 MiB of written
    // zeros, data, a 1 MiB hole at the end.
    let f = fs::File::create(src.join("vm.img")).unwrap();
    f.set_len(7 * MIB).unwrap();
    let test = "holes_stay_holes_and_allocated_zeros_stay_allocated_through_two_round_trips";
    let allocated = crate::sys::extents::allocate(&f, MIB, 2 * MIB);
    if !testutil::can_run(
        test,
        allocated
            .is_err()
            .then_some("this file system cannot preallocate"),
    ) {
        return;
    }
    // tmpfs preallocates but has no extent map to show it with: there the
    // snapshot reads the space as a hole, which is what the file system says.
    let mapped = matches!(crate::sys::extents::unwritten_extents(&f), Ok(e) if !e.is_empty());
    let why = "this file system does not report preallocated extents";
    if !testutil::can_run(test, (!mapped).then_some(why)) {
        return;
    }
    f.write_all_at(&noise(7, MIB as usize), 3 * MIB).unwrap();
    f.write_all_at(&vec![0u8; MIB as usize], 4 * MIB).unwrap();
    f.write_all_at(&noise(8, MIB as usize), 5 * MIB).unwrap();
    f.sync_all().unwrap();
    let allocated = |p: &Path| fs::metadata(p).unwrap().blocks() * 512;
    assert_eq!(allocated(&src.join("vm.img")), 5 * MIB);

    let mut repo = repo();
    let mut from = src.clone();
    for round in 1..=2 {
        let snap = snapshot(&mut repo, &from);
        let to = dir.path().join(format!("restored{round}"));
        restore_with(&repo, &snap, &to, &RestoreOptions::default());
        assert_eq!(manifest(&to), manifest(&src), "round {round}");
        let file = fs::File::open(to.join("vm.img")).unwrap();
        file.sync_all().unwrap();
        // (ext4 counts a block of its extent tree too.)
        let a = allocated(&to.join("vm.img"));
        assert!(
            (5 * MIB..5 * MIB + 64 * 1024).contains(&a),
            "round {round}: {a} bytes allocated, not 5 MiB as in the source"
        );
        from = to;
    }
}

/// A stop requested while data is written ends the restore with
/// `RestoreInterrupted` before every byte is written; the same restore run
/// again finishes it exactly.
#[test]
fn a_stopped_restore_says_so_and_running_it_again_finishes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = tmp.path().join("vol");
    fs::create_dir_all(vol.join("a/b")).unwrap();
    for i in 0..12 {
        fs::write(vol.join(format!("a/b/f{i}")), noise(i, 3 << 20)).unwrap();
    }
    let mut repo = repo();
    let snap = snapshot(&mut repo, &vol);
    let target = tmp.path().join("target");
    let opts = RestoreOptions::default();
    let progress = RestoreProgress::default();
    let stopper = {
        let stop = opts.stop.clone();
        move |p: &RestoreProgress| {
            while p.bytes.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                std::thread::yield_now();
            }
            stop.request();
        }
    };
    let out = std::thread::scope(|s| {
        s.spawn(|| stopper(&progress));
        restore(&repo, &snap, None, &target, &opts, &progress)
    });
    match out {
        Err(crate::Error::RestoreInterrupted { bytes }) => {
            assert!(bytes > 0 && bytes < 36 << 20, "{bytes} bytes written");
        }
        other => panic!("a stopped restore returned {other:?}"),
    }
    assert_ne!(
        manifest(&vol),
        manifest(&target),
        "the stop changed nothing"
    );
    let again = RestoreOptions {
        delete_extra: true,
        ..RestoreOptions::default()
    };
    restore_with(&repo, &snap, &target, &again);
    assert_eq!(manifest(&vol), manifest(&target));
}

/// Reads that take a while, as over a network, counting how many are in
/// flight at once.
struct SlowGets {
    inner: std::sync::Arc<dyn crate::backend::Backend>,
    parallel: usize,
    in_flight: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

impl crate::backend::Forward for SlowGets {
    fn inner(&self) -> &dyn crate::backend::Backend {
        &*self.inner
    }
    fn parallel_gets(&self) -> usize {
        self.parallel
    }
    fn get_range_into(
        &self,
        key: &crate::backend::ObjectKey,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), crate::error::BackendError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(30));
        self.in_flight.fetch_sub(1, SeqCst);
        self.inner.get_range_into(key, offset, len, buf)
    }
}

/// A remote repository is read with as many ranges in flight as it takes
/// (its connections), not one per core.
#[test]
fn a_restore_keeps_as_many_reads_in_flight_as_the_backend_takes() {
    let (mem, _) = testutil::mem_repo(false);
    let slow = std::sync::Arc::new(SlowGets {
        inner: mem,
        parallel: 6,
        in_flight: Default::default(),
        most: Default::default(),
    });
    let repo = testutil::reopen(slow.clone());
    let src = tempfile::tempdir().unwrap();
    let files = testutil::files(5, 16, 96 * 1024);
    testutil::write_tree(src.path(), &files);
    let snap = testutil::snapshot(&repo, src.path(), "/src", "2026-12-04T12:00:00Z");
    let (restored, damaged) = testutil::restore_files(&repo, &snap);
    assert!(damaged.is_empty(), "{damaged:?}");
    assert_eq!(restored, files);
    assert_eq!(slow.most.load(std::sync::atomic::Ordering::SeqCst), 6);
}

/// `verify` passes a faithful restore and names each kind of difference:
/// a changed byte, a changed mode, a changed time, a missing entry, an
/// extra one; a name that is not UTF-8 is checked like any other.
#[test]
fn verify_finds_every_kind_of_difference_and_nothing_in_a_faithful_restore() {
    use std::os::unix::ffi::OsStrExt;

    use super::verify::{VerifyProgress, verify};

    let tmp = tempfile::tempdir().unwrap();
    let vol = tmp.path().join("vol");
    fs::create_dir_all(vol.join("a/b")).unwrap();
    fs::write(vol.join("a/b/big"), noise(3, 700_000)).unwrap();
    fs::write(vol.join("top"), b"top").unwrap();
    fs::write(
        vol.join(std::ffi::OsStr::from_bytes(b"caf\xe9")),
        b"latin-1",
    )
    .unwrap();
    std::os::unix::fs::symlink("a/b/big", vol.join("link")).unwrap();
    let sparse = fs::File::create(vol.join("sparse")).unwrap();
    sparse.set_len(3 << 20).unwrap();
    sparse.write_all_at(b"end", (3 << 20) - 3).unwrap();
    drop(sparse);
    let mut repo = repo();
    let snap = snapshot(&mut repo, &vol);
    let target = tmp.path().join("target");
    restore_with(&repo, &snap, &target, &RestoreOptions::default());

    let check = |t: &Path| verify(&repo, &snap.root, t, &VerifyProgress::default()).unwrap();
    let good = check(&target);
    assert!(good.ok(), "{:?}", good.mismatches);
    assert_eq!(good.files_verified, 4);
    assert_eq!(good.entries, 7);
    assert_eq!(good.bytes, 700_000 + 3 + 7 + (3 << 20));

    let f = fs::OpenOptions::new()
        .write(true)
        .open(target.join("a/b/big"))
        .unwrap();
    f.write_all_at(b"X", 123_456).unwrap();
    drop(f);
    fs::set_permissions(target.join("top"), fs::Permissions::from_mode(0o600)).unwrap();
    let hole = fs::OpenOptions::new()
        .write(true)
        .open(target.join("sparse"))
        .unwrap();
    hole.write_all_at(b"data in a hole", 1000).unwrap();
    drop(hole);
    fs::remove_file(target.join("link")).unwrap();
    fs::write(target.join("a/extra"), b"not restored").unwrap();
    let bad = check(&target);
    let said: Vec<String> = bad
        .mismatches
        .iter()
        .map(|(p, w)| format!("{p}: {w}"))
        .collect();
    let has = |path: &str, what: &str| {
        assert!(
            bad.mismatches
                .iter()
                .any(|(p, w)| p == path && w.contains(what)),
            "{path} ({what}) not in {said:#?}"
        )
    };
    has("a/b/big", "differ from chunk");
    has("top", "mode 0600");
    has("sparse", "hole");
    has("link", "missing");
    has("a/extra", "not in the snapshot");
    // Writing moved the times of the files and of the folder that gained
    // an entry; the mode change did not.
    has("a/b/big", "modified at");
    has("a", "modified at");
    assert_eq!(bad.mismatches.len(), 6, "{said:#?}");
    assert_eq!(
        bad.files_verified, 1,
        "only the name that is not UTF-8 still holds"
    );
}

/// A fresh restore runs a batch of [`super::plan::BATCH`] entries (3 in unit
/// tests) at a time: hardlinks whose first name was written batches earlier,
/// symlinks and folder times set across batches, and the counts summed.
#[test]
fn a_restore_in_batches_keeps_hardlinks_symlinks_and_folder_times() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for d in ["a", "b", "c/deep"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::write(src.join("a/first"), noise(1, 70_000)).unwrap();
    for i in 0..7 {
        fs::write(src.join(format!("b/f{i}")), noise(10 + i, 100 + i as usize)).unwrap();
    }
    fs::hard_link(src.join("a/first"), src.join("c/deep/second")).unwrap();
    fs::hard_link(src.join("a/first"), src.join("c/third")).unwrap();
    std::os::unix::fs::symlink("../a/first", src.join("c/deep/link")).unwrap();
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    for d in ["a", "b", "c/deep", "c", ""] {
        let times = fs::FileTimes::new().set_modified(old).set_accessed(old);
        fs::File::open(src.join(d))
            .unwrap()
            .set_times(times)
            .unwrap();
    }
    let mut repo = repo();
    let snap = snapshot(&mut repo, &src);
    let target = dir.path().join("restored");
    let s = restore_with(&repo, &snap, &target, &RestoreOptions::default());
    assert_eq!(manifest(&target), manifest(&src));
    let ino = |p: &str| fs::metadata(target.join(p)).unwrap().ino();
    assert_eq!(ino("a/first"), ino("c/deep/second"), "link across batches");
    assert_eq!(ino("a/first"), ino("c/third"), "link across batches");
    assert_eq!((s.files, s.links, s.specials, s.dirs), (8, 2, 1, 5));
    let mtime = |p: &Path| fs::symlink_metadata(p).unwrap().mtime();
    for d in ["a", "b", "c/deep", "c"] {
        assert_eq!(
            mtime(&target.join(d)),
            1_500_000_000,
            "{d}: folder time set last"
        );
    }
}

/// A restore in batches knows its totals before the first byte is written,
/// and they do not change: the counters end exactly at them, with or
/// without include patterns.
#[test]
fn a_restore_in_batches_knows_its_totals_first() {
    use std::sync::atomic::Ordering::{Acquire, Relaxed};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for d in ["a", "b/c"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    for i in 0..11 {
        let d = if i % 2 == 0 { "a" } else { "b/c" };
        fs::write(
            src.join(format!("{d}/f{i}")),
            noise(i, 1000 * (i as usize + 1)),
        )
        .unwrap();
    }
    let mut repo = repo();
    let snap = snapshot(&mut repo, &src);
    for (includes, files) in [(vec![], 11), (vec!["/b".to_string()], 5)] {
        let target = dir.path().join(format!("restored-{files}"));
        let opts = RestoreOptions {
            includes,
            ..RestoreOptions::default()
        };
        let progress = RestoreProgress::default();
        let seen_first = std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                while !progress.planned.load(Acquire) {
                    std::thread::yield_now();
                }
                (
                    progress.total_files.load(Relaxed),
                    progress.total_bytes.load(Relaxed),
                )
            });
            restore(&repo, &snap, None, &target, &opts, &progress).expect("restore");
            watcher.join().unwrap()
        });
        let end = (
            progress.total_files.load(Relaxed),
            progress.total_bytes.load(Relaxed),
        );
        assert_eq!(seen_first, end, "the totals changed after they were shown");
        assert_eq!(end.0, files);
        assert_eq!(
            progress.files.load(Relaxed),
            end.0,
            "files end at the total"
        );
        assert_eq!(
            progress.bytes.load(Relaxed),
            end.1,
            "bytes end at the total"
        );
    }
}
