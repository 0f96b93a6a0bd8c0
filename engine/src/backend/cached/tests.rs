//! The cache keeps what it promises: no pack read twice from the remote for
//! trees, damaged cache files never served, a bound, and no leftovers of
//! deleted objects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::backend::memory::MemoryBackend;
use crate::testutil::{self, reopen};

/// Counts the reads that reach the backend it wraps (the "remote").
#[derive(Default)]
struct Counts {
    pack_reads: AtomicU64,
    other_reads: AtomicU64,
    audit_reads: AtomicU64,
    lists: AtomicU64,
}

struct Counting {
    inner: DynBackend,
    counts: Arc<Counts>,
}

impl Counting {
    fn count(&self, key: &ObjectKey) {
        // Config, key slots and locks are never cached: not counted.
        let c = match key.kind {
            ObjectKind::Pack => &self.counts.pack_reads,
            ObjectKind::Index | ObjectKind::Snapshot => &self.counts.other_reads,
            ObjectKind::Audit => &self.counts.audit_reads,
            _ => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl Forward for Counting {
    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }
    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
        self.count(key);
        self.inner.get(key)
    }
    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        self.count(key);
        self.inner.get_range(key, offset, len)
    }
    fn get_range_into(
        &self,
        key: &ObjectKey,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        self.count(key);
        self.inner.get_range_into(key, offset, len, buf)
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>, BackendError> {
        self.counts.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list(kind)
    }
}

impl Counts {
    fn take(&self) -> (u64, u64) {
        (
            self.pack_reads.swap(0, Ordering::Relaxed),
            self.other_reads.swap(0, Ordering::Relaxed),
        )
    }
}

struct Setup {
    mem: Arc<MemoryBackend>,
    remote: DynBackend,
    counts: Arc<Counts>,
    cache: tempfile::TempDir,
}

impl Setup {
    fn new(encrypted: bool) -> Setup {
        let (mem, _) = testutil::mem_repo(encrypted);
        let counts = Arc::new(Counts::default());
        let remote: DynBackend = Arc::new(Counting {
            inner: mem.clone(),
            counts: counts.clone(),
        });
        Setup {
            mem,
            remote,
            counts,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn opts(&self, limit: u64) -> CacheOptions {
        CacheOptions {
            root: self.cache.path().to_path_buf(),
            limit,
        }
    }

    /// The repository as a new process opens it: a fresh cache decorator
    /// over the same cache folder.
    fn open(&self) -> (DynBackend, crate::Repository) {
        let b = Cached::wrap(self.remote.clone(), &self.opts(DEFAULT_LIMIT));
        (b.clone(), reopen(b))
    }

    /// Every cache file of `kind`.
    fn cached_files(&self, kind: ObjectKind) -> Vec<PathBuf> {
        let id = reopen(self.mem.clone()).config().id.to_hex();
        scan(&self.cache.path().join(id).join(kind.name()))
            .into_iter()
            .filter(|f| !f.temporary)
            .map(|f| f.path)
            .collect()
    }
}

fn many_files(n: usize) -> BTreeMap<String, Vec<u8>> {
    (0..n)
        .map(|i| {
            (
                format!("d{:02}/e{}/f{i}", i % 50, i % 7),
                format!("file {i}\n").into_bytes(),
            )
        })
        .collect()
}

/// Names every tree node below `snap` (what `ls` prints).
fn ls(repo: &crate::Repository, snap: &crate::snapshot::Snapshot) -> usize {
    let indexed = repo.clone().load_index().unwrap();
    let mut n = 0;
    crate::tree::walk::walk(&indexed, &snap.tree, "", &mut |_, _| {
        n += 1;
        Ok(())
    })
    .unwrap();
    n
}

#[test]
fn an_unchanged_resnapshot_ls_and_diff_read_no_pack_from_the_remote() {
    let s = Setup::new(true);
    let src = tempfile::tempdir().unwrap();
    let files = many_files(5000);
    testutil::write_tree(src.path(), &files);

    let (_, repo) = s.open();
    let a = testutil::snapshot(&repo, src.path(), "/v", "2026-01-01T00:00:00Z");
    assert!(
        !s.cached_files(ObjectKind::Pack).is_empty(),
        "tree packs are kept on put"
    );
    s.counts.take();

    // A new process: the parent's trees, the index and the snapshot list
    // come from the cache.
    let (_, repo) = s.open();
    let b = testutil::snapshot(&repo, src.path(), "/v", "2026-01-02T00:00:00Z");
    assert_eq!(b.tree, a.tree);
    let (packs, others) = s.counts.take();
    assert_eq!(
        packs, 0,
        "an unchanged re-snapshot read packs from the remote"
    );
    assert_eq!(others, 0, "index files and snapshots come from the cache");

    std::fs::write(src.path().join("d07/e0/f7"), b"changed\n").unwrap();
    let (_, repo) = s.open();
    let c = testutil::snapshot(&repo, src.path(), "/v", "2026-01-03T00:00:00Z");
    assert_eq!(
        s.counts.take().0,
        0,
        "a changed file needs no pack read either"
    );

    let (_, repo) = s.open();
    assert_eq!(ls(&repo, &a), 5000 + 50 + 50 * 7);
    let indexed = repo.clone().load_index().unwrap();
    let changes = crate::tree::walk::diff(&indexed, &a.tree, &c.tree).unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        s.counts.take().0,
        0,
        "ls and diff read packs from the remote"
    );

    // Without the cache the same ls reads tree packs: the counter counts.
    let repo = reopen(s.remote.clone());
    ls(&repo, &a);
    let uncached = s.counts.take().0;
    assert!(uncached > 0);
    eprintln!(
        "ls of 5,000 files: {uncached} pack reads from the remote without the cache, 0 with it"
    );
    // And what the cache served is what the remote holds.
    let (files_back, damaged) = testutil::restore_files(&s.open().1, &b);
    assert!(damaged.is_empty());
    assert_eq!(files_back, files);
}

#[test]
fn a_damaged_cache_file_is_dropped_and_read_again_never_served() {
    let s = Setup::new(false);
    let src = tempfile::tempdir().unwrap();
    testutil::write_tree(src.path(), &testutil::files(3, 30, 2000));
    let (_, repo) = s.open();
    let a = testutil::snapshot(&repo, src.path(), "/v", "2026-01-01T00:00:00Z");
    let want = ls(&repo, &a);

    type Harm = fn(&mut Vec<u8>);
    let harms: [(&str, Harm); 5] = [
        ("a flipped body byte", |b| *b.last_mut().unwrap() ^= 1),
        ("a truncated body", |b| b.truncate(b.len() - 1)),
        ("a truncated header", |b| b.truncate(20)),
        ("an empty file", |b| b.clear()),
        // Consistent header and body, but not the object its name stands for.
        ("another object's bytes", |b| {
            let body = b"PVSN other bytes".to_vec();
            *b = header(&body).to_vec();
            b.extend_from_slice(&body);
        }),
    ];
    for (what, harm) in harms {
        for kind in [ObjectKind::Pack, ObjectKind::Index, ObjectKind::Snapshot] {
            if kind == ObjectKind::Snapshot && what == "another object's bytes" {
                continue; // not named by content: its header is all there is
            }
            for f in s.cached_files(kind) {
                let mut bytes = std::fs::read(&f).unwrap();
                harm(&mut bytes);
                std::fs::write(&f, bytes).unwrap();
            }
        }
        s.counts.take();
        let (_, repo) = s.open();
        let snaps = repo.snapshots().unwrap();
        assert_eq!(snaps.len(), 1, "{what}");
        assert_eq!(snaps[0].tree, a.tree, "{what}");
        assert_eq!(ls(&repo, &a), want, "{what}");
        let (packs, others) = s.counts.take();
        assert!(packs > 0 && others > 0, "{what}: nothing was read again");
        // Read again, the cache holds sound copies: the next run is free.
        let (_, repo) = s.open();
        assert_eq!(ls(&repo, &a), want);
        assert_eq!(
            s.counts.take(),
            (0, 0),
            "{what}: the cache was not refilled"
        );
    }
}

#[test]
fn the_cache_stays_within_its_limit_least_recently_used_first() {
    let s = Setup::new(false);
    let b = Cached::wrap(s.remote.clone(), &s.opts(10_000));
    let keys: Vec<ObjectKey> = (0..6u8)
        .map(|i| ObjectKey::new(ObjectKind::Snapshot, format!("{i:02}").repeat(32)))
        .collect();
    for k in &keys[..4] {
        b.put(k, &[7u8; 2000]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // 0 is read again: 1 becomes the least recently used.
    assert_eq!(b.get(&keys[0]).unwrap(), vec![7u8; 2000]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    for k in &keys[4..] {
        b.put(k, &[7u8; 2000]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let files = s.cached_files(ObjectKind::Snapshot);
    let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    assert!(bytes <= 10_000, "{bytes} bytes cached");
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&keys[0].name),
        "the recently read one was evicted"
    );
    assert!(names.contains(&keys[5].name));
    assert!(
        !names.contains(&keys[1].name),
        "the least recently used one stayed"
    );
    // An object larger than the whole cache is not kept.
    let big = ObjectKey::new(ObjectKind::Snapshot, "ff".repeat(32));
    b.put(&big, &[1u8; 20_000]).unwrap();
    assert!(
        !s.cached_files(ObjectKind::Snapshot)
            .iter()
            .any(|f| f.ends_with(&big.name))
    );
}

#[test]
fn objects_the_repository_no_longer_lists_leave_the_cache() {
    let s = Setup::new(false);
    let (b, _) = s.open();
    let gone = ObjectKey::new(ObjectKind::Snapshot, "aa".repeat(32));
    let kept = ObjectKey::new(ObjectKind::Snapshot, "bb".repeat(32));
    b.put(&gone, b"one").unwrap();
    b.put(&kept, b"two").unwrap();
    assert_eq!(s.cached_files(ObjectKind::Snapshot).len(), 2);
    // Another machine deletes one; our next listing drops its copy.
    s.mem.delete(&gone).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (b, _) = s.open();
    b.list(ObjectKind::Snapshot).unwrap();
    let left = s.cached_files(ObjectKind::Snapshot);
    assert_eq!(left.len(), 1);
    assert!(left[0].ends_with(&kept.name));
    // Our own delete drops it at once.
    b.delete(&kept).unwrap();
    assert!(s.cached_files(ObjectKind::Snapshot).is_empty());
}

#[test]
fn the_cache_keeps_the_backend_contract() {
    let s = Setup::new(false);
    // The cache opens on a repository (it is named by the config's id); the
    // contract test then starts from a backend without one.
    let scratch = Arc::new(MemoryBackend::new());
    let config = s.mem.get(&ObjectKey::config()).unwrap();
    scratch.put(&ObjectKey::config(), &config).unwrap();
    let cached = Cached::wrap(scratch.clone(), &s.opts(DEFAULT_LIMIT));
    scratch.delete(&ObjectKey::config()).unwrap();
    super::super::contract_tests::run(&*cached);
    // And again with what it caches: index files, snapshots, tree packs.
    let k = ObjectKey::new(ObjectKind::Snapshot, "ab".repeat(32));
    cached.put(&k, b"snapshot").unwrap();
    assert!(matches!(
        cached.put(&k, b"other"),
        Err(BackendError::Conflict { .. })
    ));
    assert_eq!(cached.get(&k).unwrap(), b"snapshot");
    let body = b"tree pack".to_vec();
    let p = ObjectKey::new(ObjectKind::Pack, blake3::hash(&body).to_hex().to_string());
    cached.put_tree_pack(&p, &body).unwrap();
    assert_eq!(scratch.get(&p).unwrap(), body, "written through");
    assert_eq!(cached.get_tree_pack(&p).unwrap(), body);
    assert_eq!(cached.get_range(&p, 5, 4).unwrap(), b"pack");
    cached.delete(&p).unwrap();
    assert!(matches!(
        cached.get_tree_pack(&p),
        Err(BackendError::NotFound { .. })
    ));
}

#[test]
fn two_processes_sharing_one_cache_folder_never_serve_each_other_torn_files() {
    let s = Setup::new(false);
    let keys: Vec<(ObjectKey, Vec<u8>)> = (0..40u64)
        .map(|i| {
            let body = testutil::noise(i, 30_000 + i as usize * 100);
            let key = ObjectKey::new(ObjectKind::Pack, blake3::hash(&body).to_hex().to_string());
            s.mem.put(&key, &body).unwrap();
            (key, body)
        })
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let b = Cached::wrap(s.remote.clone(), &s.opts(600_000));
                for round in 0..5 {
                    for (k, body) in keys.iter().cycle().skip(round * 7).take(keys.len()) {
                        assert!(b.get_tree_pack(k).unwrap() == *body);
                    }
                }
            });
        }
    });
}

#[test]
fn temporary_files_of_a_killed_writer_are_removed_once_old() {
    let s = Setup::new(false);
    let (b, _) = s.open();
    b.put(&ObjectKey::new(ObjectKind::Snapshot, "aa".repeat(32)), b"x")
        .unwrap();
    let folder = s.cached_files(ObjectKind::Snapshot)[0]
        .parent()
        .unwrap()
        .to_path_buf();
    let (old, young) = (folder.join(".tmp-00000001"), folder.join(".tmp-00000002"));
    std::fs::write(&old, b"half").unwrap();
    std::fs::write(&young, b"half").unwrap();
    let hours_ago = SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(hours_ago)
        .unwrap();
    s.open(); // a new process counts the folder
    assert!(!old.exists(), "an old temporary file stayed");
    assert!(young.exists(), "a write that may still run lost its file");
}

/// Every command that changes the repository reads the whole audit trail
/// to chain its entry: from the cache after the first time, each entry
/// checked against its name, and gone from the cache with the entry.
#[test]
fn audit_entries_are_read_from_the_remote_once_and_never_served_damaged() {
    use crate::repo::audit::{self, Entry, Outcome};
    let s = Setup::new(true);
    let (_, repo) = s.open();
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut e = Entry::new("snapshot", Outcome::Ok);
        e.source = Some(format!("/v{i}"));
        ids.push(audit::record(&repo, e).unwrap());
    }
    s.counts.audit_reads.swap(0, Ordering::Relaxed);

    // A new process: the trail comes from the cache, whole and chained.
    let (_, repo) = s.open();
    let trail = audit::read(&repo).unwrap();
    assert_eq!(trail.entries.len(), 6);
    assert!(trail.damaged.is_empty());
    assert_eq!(trail.heads(), vec![ids[5].clone()], "one chain");
    assert_eq!(s.counts.audit_reads.swap(0, Ordering::Relaxed), 0);

    // Damaged cache copies (another entry's bytes under this one's name
    // among them) are dropped and read again, never served.
    let files = s.cached_files(ObjectKind::Audit);
    assert_eq!(files.len(), 6, "every entry is kept on put");
    let other = std::fs::read(&files[1]).unwrap();
    std::fs::write(&files[0], &other).unwrap();
    let mut flipped = std::fs::read(&files[2]).unwrap();
    *flipped.last_mut().unwrap() ^= 1;
    std::fs::write(&files[2], flipped).unwrap();
    let (_, repo) = s.open();
    let again = audit::read(&repo).unwrap();
    assert_eq!(again.entries, trail.entries);
    assert_eq!(s.counts.audit_reads.swap(0, Ordering::Relaxed), 2);

    // An entry the repository no longer lists leaves the cache.
    s.mem
        .delete(&ObjectKey::new(ObjectKind::Audit, &ids[0]))
        .unwrap();
    let (_, repo) = s.open();
    assert_eq!(audit::read(&repo).unwrap().entries.len(), 5);
    assert_eq!(s.cached_files(ObjectKind::Audit).len(), 5);
}
