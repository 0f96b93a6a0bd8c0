//! The world a sequence runs in: a repository, its source folders, and the
//! model of what every remaining snapshot holds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::{Change, Content, Op, SOURCES};
use crate::backend::DynBackend;
use crate::backend::Forward;
use crate::backend::faulty::FaultyBackend;
use crate::backend::local::LocalBackend;
use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, ObjectKey};
use crate::backup::{self, BackupOptions, Checkpoints, Progress, Stop};
use crate::error::BackendError;
use crate::maintenance::check::{self, ProblemKind, ReadData};
use crate::maintenance::forget::{self, Selection};
use crate::maintenance::prune::{self, PruneOptions};
use crate::maintenance::repair;
use crate::maintenance::retention::{GroupBy, KeepPolicy};
use crate::repo::crypto::KdfParams;
use crate::repo::lock::ExclusiveLock;
use crate::repo::{ChunkerAlgorithm, ChunkerParams, InitOptions, Repository};
use crate::restore::{self, RestoreOptions, RestoreProgress};
use crate::snapshot::{Snapshot, Source};
use crate::testutil::{noise, reopen};

/// What a path of a source (or of a restored snapshot) is.
#[derive(Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    File(Arc<Vec<u8>>),
    Symlink(String),
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Dir => write!(f, "dir"),
            Entry::File(b) => write!(f, "file of {} bytes ({})", b.len(), blake3::hash(b)),
            Entry::Symlink(t) => write!(f, "symlink to {t:?}"),
        }
    }
}

/// Relative path → entry; folders that hold something are listed too.
type Tree = BTreeMap<String, Entry>;

/// Small chunks and packs, so that big files span many packs.
fn init_options(encrypted: bool) -> InitOptions {
    InitOptions {
        password: encrypted.then(|| b"pw".to_vec()),
        chunker: ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min: 2048,
            avg: 8192,
            max: 32768,
            seed: None,
        },
        compression_level: 3,
        pack_size: 128 * 1024,
        kdf: KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        },
    }
}

/// A repository, its source folders, and the model of every live snapshot.
pub(super) struct World {
    dir: tempfile::TempDir,
    backend: DynBackend,
    repo: Repository,
    sources: Vec<Tree>,
    snaps: Vec<(Snapshot, Tree)>,
    /// Distinct modification times for every write, so that a changed file
    /// never looks unchanged to the parent comparison.
    clock: u64,
    /// Snapshot times, one hour apart.
    time: Timestamp,
    pub(super) stats: Stats,
    /// An interrupted run may have left garbage that no complete prune has
    /// removed since: `check` may warn about it.
    garbage: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Stats {
    pub(super) sequences: u64,
    pub(super) steps: u64,
    pub(super) snapshots: u64,
    pub(super) restores: u64,
    pub(super) checks: u64,
    pub(super) prunes: u64,
    pub(super) forgets: u64,
    pub(super) repairs: u64,
    pub(super) interrupted: u64,
}

pub(super) type Outcome = std::result::Result<(), String>;

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl World {
    pub(super) fn new(local: bool, encrypted: bool) -> std::result::Result<World, String> {
        let dir = tempfile::tempdir().map_err(err("tempdir"))?;
        let backend: DynBackend = if local {
            let b = LocalBackend::new(dir.path().join("repo"));
            b.create_layout().map_err(err("create layout"))?;
            Arc::new(b)
        } else {
            Arc::new(MemoryBackend::new())
        };
        let repo =
            Repository::init(backend.clone(), init_options(encrypted)).map_err(err("init"))?;
        let mut w = World {
            dir,
            backend,
            repo,
            sources: vec![Tree::new(); SOURCES],
            snaps: Vec::new(),
            clock: 0,
            time: "2026-01-01T00:00:00Z".parse().expect("time"),
            stats: Stats::default(),
            garbage: false,
        };
        for s in 0..SOURCES {
            std::fs::create_dir_all(w.source_dir(s)).map_err(err("mkdir"))?;
            // One file at first: its chunks fill packs in one order only.
            let big = Content::Big {
                seed: s as u8,
                size: 0,
            };
            w.write(s, "d0/f4", &big.bytes())?;
        }
        Ok(w)
    }

    fn source_dir(&self, s: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("src{s}"))
    }

    fn lock(&self) -> std::result::Result<ExclusiveLock, String> {
        ExclusiveLock::acquire(self.backend.clone(), "model", "test-host").map_err(err("lock"))
    }

    /// Writes a file with a modification time no other write has had.
    fn write(&mut self, s: usize, rel: &str, bytes: &[u8]) -> Outcome {
        let p = self.source_dir(s).join(rel);
        let parent = p.parent().expect("below the source");
        std::fs::create_dir_all(parent).map_err(err("mkdir"))?;
        if let Some((d, _)) = rel.rsplit_once('/') {
            self.sources[s].insert(d.to_string(), Entry::Dir);
        }
        std::fs::write(&p, bytes).map_err(err("write"))?;
        self.clock += 1;
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + self.clock);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_modified(mtime))
            .map_err(err("set mtime"))?;
        self.sources[s].insert(rel.to_string(), Entry::File(Arc::new(bytes.to_vec())));
        Ok(())
    }

    fn apply(&mut self, s: usize, change: &Change) -> Outcome {
        let root = self.source_dir(s);
        match change {
            Change::None => {}
            Change::Write { name, content } => {
                let rel = if *name < 4 {
                    format!("f{name}")
                } else {
                    format!("d{}/f{name}", name % 2)
                };
                self.write(s, &rel, &content.bytes())?;
            }
            Change::Append { pick, seed } => {
                let files: Vec<(String, Arc<Vec<u8>>)> = self.sources[s]
                    .iter()
                    .filter_map(|(p, e)| match e {
                        Entry::File(b) => Some((p.clone(), b.clone())),
                        _ => None,
                    })
                    .collect();
                if !files.is_empty() {
                    let (rel, old) = &files[*pick as usize % files.len()];
                    let mut bytes = old.to_vec();
                    bytes.extend_from_slice(&noise(4000 + *seed as u64, 700));
                    self.write(s, rel, &bytes)?;
                }
            }
            Change::Delete { pick } => {
                let tree = &self.sources[s];
                let victims: Vec<String> = tree
                    .iter()
                    .filter(|(p, e)| {
                        !matches!(e, Entry::Dir)
                            || !tree.keys().any(|q| q.starts_with(&format!("{p}/")))
                    })
                    .map(|(p, _)| p.clone())
                    .collect();
                if !victims.is_empty() {
                    let rel = &victims[*pick as usize % victims.len()];
                    let p = root.join(rel);
                    match self.sources[s][rel] {
                        Entry::Dir => std::fs::remove_dir(&p),
                        _ => std::fs::remove_file(&p),
                    }
                    .map_err(err("delete"))?;
                    self.sources[s].remove(rel);
                }
            }
            Change::Mkdir { name } => {
                let rel = format!("e{name}");
                if let std::collections::btree_map::Entry::Vacant(v) = self.sources[s].entry(rel) {
                    std::fs::create_dir(root.join(v.key())).map_err(err("mkdir"))?;
                    v.insert(Entry::Dir);
                }
            }
            Change::Symlink { name, target } => {
                let rel = format!("l{name}");
                let target = format!("f{target}");
                let p = root.join(&rel);
                if self.sources[s].contains_key(&rel) {
                    std::fs::remove_file(&p).map_err(err("remove symlink"))?;
                }
                std::os::unix::fs::symlink(&target, &p).map_err(err("symlink"))?;
                self.sources[s].insert(rel, Entry::Symlink(target));
            }
            Change::CopyFrom { other } => {
                let other = *other as usize;
                if other != s {
                    std::fs::remove_dir_all(&root).map_err(err("clear"))?;
                    std::fs::create_dir(&root).map_err(err("mkdir"))?;
                    self.sources[s].clear();
                    for (rel, e) in self.sources[other].clone() {
                        match e {
                            Entry::Dir => {
                                std::fs::create_dir_all(root.join(&rel)).map_err(err("mkdir"))?;
                                self.sources[s].insert(rel, Entry::Dir);
                            }
                            Entry::File(b) => self.write(s, &rel, &b)?,
                            Entry::Symlink(t) => {
                                std::os::unix::fs::symlink(&t, root.join(&rel))
                                    .map_err(err("symlink"))?;
                                self.sources[s].insert(rel, Entry::Symlink(t));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, s: usize) -> Outcome {
        let repo = self.repo.clone();
        self.snapshot_through(&repo, s, Stop::default())
    }

    /// A snapshot of source `s` through `repo` (which may fail on command),
    /// with index checkpoints every two packs, honouring `stop`.
    fn snapshot_through(&mut self, repo: &Repository, s: usize, stop: Stop) -> Outcome {
        let mut indexed = repo.clone().load_index().map_err(err("load index"))?;
        let snaps = repo.snapshots().map_err(err("list snapshots"))?;
        let source = Source::Path {
            path: format!("/src/{s}"),
        };
        self.time += SignedDuration::from_hours(1);
        let opts = BackupOptions {
            parent: backup::find_parent(&snaps, &source),
            source: Some(source),
            time: Some(self.time),
            hostname: Some("test-host".into()),
            checkpoints: Checkpoints {
                bytes: 2 * init_options(false).pack_size as u64,
                // Small, so runs drop the blob lists of checkpointed packs
                // and later runs load their index files back.
                blobs: 40,
                interval: Duration::from_secs(3600),
            },
            stop,
            ..BackupOptions::default()
        };
        let out = backup::backup(
            &mut indexed,
            &self.source_dir(s),
            &opts,
            &Progress::default(),
        )
        .map_err(err("snapshot"))?;
        self.snaps.push((out.snapshot, self.sources[s].clone()));
        self.stats.snapshots += 1;
        Ok(())
    }

    pub(super) fn restore(&mut self, i: usize) -> Outcome {
        let (snap, expected) = &self.snaps[i];
        let indexed = self.repo.clone().load_index().map_err(err("load index"))?;
        let target = tempfile::tempdir().map_err(err("tempdir"))?;
        let summary = restore::restore(
            &indexed,
            snap,
            None,
            target.path(),
            &RestoreOptions::default(),
            &RestoreProgress::default(),
        )
        .map_err(err(&format!("restore of snapshot {}", snap.id)))?;
        if !summary.damaged.is_empty() {
            return Err(format!(
                "restore of snapshot {} names damage: {:?}",
                snap.id, summary.damaged
            ));
        }
        let got = read_tree(target.path())?;
        self.stats.restores += 1;
        compare(&got, expected).map_err(|d| format!("restore of snapshot {}: {d}", snap.id))
    }

    pub(super) fn check(&mut self) -> Outcome {
        let r = check::check(&self.repo, ReadData::All).map_err(err("check"))?;
        self.stats.checks += 1;
        if !r.ok || !r.errors.is_empty() || !r.damaged_snapshots.is_empty() {
            return Err(format!(
                "check is not clean: errors {:#?}, damaged {:#?}",
                r.errors, r.damaged_snapshots
            ));
        }
        let leftovers = |k| {
            matches!(
                k,
                ProblemKind::UnreferencedPack | ProblemKind::SupersededIndex
            )
        };
        if r.warnings
            .iter()
            .any(|w| !self.garbage || !leftovers(w.kind))
        {
            return Err(format!("check warns: {:#?}", r.warnings));
        }
        if r.snapshots != self.snaps.len() {
            return Err(format!(
                "check counts {} snapshots, the model {}",
                r.snapshots,
                self.snaps.len()
            ));
        }
        Ok(())
    }

    fn forget_last(&mut self, keep: u32) -> Outcome {
        let lock = self.lock()?;
        let sel = Selection::Policy {
            keep: KeepPolicy {
                last: Some(keep),
                ..KeepPolicy::default()
            },
            group_by: GroupBy::default(),
        };
        let r = forget::forget(&self.repo, &lock, &sel, &TimeZone::UTC).map_err(err("forget"))?;
        // The model: the newest `keep` of each source stay.
        let mut kept = BTreeSet::new();
        for s in 0..SOURCES {
            let key = format!("/src/{s}");
            let mut of: Vec<&Snapshot> = self
                .snaps
                .iter()
                .map(|(x, _)| x)
                .filter(|x| matches!(&x.source, Source::Path { path } if *path == key))
                .collect();
            of.sort_by_key(|x| std::cmp::Reverse(x.time));
            kept.extend(of.iter().take(keep as usize).map(|x| x.id));
        }
        let got: BTreeSet<_> = r
            .snapshots
            .iter()
            .filter(|v| v.keep)
            .map(|v| v.id)
            .collect();
        if got != kept {
            return Err(format!("forget kept {got:?}, the model {kept:?}"));
        }
        self.snaps.retain(|(x, _)| kept.contains(&x.id));
        Ok(())
    }

    /// How many snapshots the model holds.
    pub(super) fn snapshot_count(&self) -> usize {
        self.snaps.len()
    }

    /// Packs that no index file names.
    fn unindexed_packs(&self) -> std::result::Result<usize, String> {
        let indexed = self.repo.clone().load_index().map_err(err("load index"))?;
        let packs = self
            .backend
            .list(crate::repo::format::ObjectKind::Pack)
            .map_err(err("list packs"))?;
        let named: BTreeSet<String> = indexed.index().pack_ids().map(|p| p.to_hex()).collect();
        Ok(packs
            .iter()
            .filter(|(name, _)| !named.contains(name))
            .count())
    }

    fn interrupted(&mut self) {
        self.stats.interrupted += 1;
        self.garbage = true;
    }

    pub(super) fn step(&mut self, op: &Op) -> Outcome {
        self.stats.steps += 1;
        match op {
            Op::Snapshot { source, change } => {
                let s = *source as usize;
                self.apply(s, change)?;
                self.snapshot(s)?;
            }
            Op::ForgetId { pick } => {
                if !self.snaps.is_empty() {
                    let (snap, _) = self.snaps.remove(*pick as usize % self.snaps.len());
                    let lock = self.lock()?;
                    forget::forget(
                        &self.repo,
                        &lock,
                        &Selection::Ids(vec![snap.id]),
                        &TimeZone::UTC,
                    )
                    .map_err(err("forget"))?;
                    self.stats.forgets += 1;
                }
            }
            Op::ForgetLast { keep } => {
                self.forget_last(*keep)?;
                self.stats.forgets += 1;
            }
            Op::Prune { max_unused } => {
                let lock = self.lock()?;
                let opts = PruneOptions {
                    max_unused_percent: *max_unused as f64,
                    grace: Duration::ZERO,
                    ..PruneOptions::default()
                };
                prune::prune(&self.repo, &lock, &opts).map_err(err("prune"))?;
                self.stats.prunes += 1;
                self.garbage = false;
            }
            Op::InterruptedSnapshot {
                source,
                change,
                puts,
            } => {
                let s = *source as usize;
                self.apply(s, change)?;
                let faulty = FaultyBackend::new(self.backend.clone(), *puts as i64);
                match self.snapshot_through(&reopen(Arc::new(faulty)), s, Stop::default()) {
                    Ok(()) => {}
                    Err(e) if e.contains("injected fault") => self.interrupted(),
                    Err(e) => return Err(e),
                }
            }
            Op::StoppedSnapshot {
                source,
                change,
                puts,
            } => {
                let s = *source as usize;
                self.apply(s, change)?;
                let stop = Stop::default();
                let stopping = StopAfterPuts {
                    inner: self.backend.clone(),
                    stop: stop.clone(),
                    left: std::sync::atomic::AtomicI64::new(i64::from(*puts)),
                };
                let unindexed_before = self.unindexed_packs()?;
                match self.snapshot_through(&reopen(Arc::new(stopping)), s, stop) {
                    Ok(()) => {}
                    Err(e) if e.contains("interrupted: kept") => {
                        // A clean stop indexes every pack it stored.
                        let unindexed = self.unindexed_packs()?;
                        if unindexed > unindexed_before {
                            return Err(format!(
                                "a stopped snapshot left {} pack(s) unindexed",
                                unindexed - unindexed_before
                            ));
                        }
                        self.stats.interrupted += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
            Op::InterruptedPrune {
                max_unused,
                puts,
                deletes,
            } => {
                let lock = self.lock()?;
                let opts = PruneOptions {
                    max_unused_percent: *max_unused as f64,
                    grace: Duration::ZERO,
                    ..PruneOptions::default()
                };
                let faulty = FaultyBackend::new(self.backend.clone(), *puts as i64)
                    .fail_deletes_after(deletes.map_or(-1, i64::from));
                match prune::prune(&reopen(Arc::new(faulty)), &lock, &opts) {
                    Ok(_) => self.garbage = false,
                    Err(e) if e.to_string().contains("injected fault") => self.interrupted(),
                    Err(e) => return Err(format!("prune: {e}")),
                }
            }
            Op::RepairIndex => {
                let lock = self.lock()?;
                let r = repair::repair_index(&self.repo, &lock).map_err(err("repair index"))?;
                if !r.packs_unreadable.is_empty() || !r.packs_missing.is_empty() {
                    return Err(format!("repair index: {r:#?}"));
                }
                self.stats.repairs += 1;
            }
            Op::Check => self.check()?,
            Op::Restore { pick } => {
                if !self.snaps.is_empty() {
                    self.restore(*pick as usize % self.snaps.len())?;
                }
            }
        }
        Ok(())
    }
}

/// Reads a restored folder into the model's form.
fn read_tree(root: &Path) -> std::result::Result<Tree, String> {
    let mut out = Tree::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(err("read_dir"))? {
            let p = e.map_err(err("read_dir"))?.path();
            let rel = p
                .strip_prefix(root)
                .expect("below the root")
                .to_string_lossy()
                .into_owned();
            let ft = std::fs::symlink_metadata(&p)
                .map_err(err("lstat"))?
                .file_type();
            let entry = if ft.is_dir() {
                stack.push(p);
                Entry::Dir
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&p).map_err(err("readlink"))?;
                Entry::Symlink(t.to_string_lossy().into_owned())
            } else {
                Entry::File(Arc::new(std::fs::read(&p).map_err(err("read"))?))
            };
            out.insert(rel, entry);
        }
    }
    Ok(out)
}

/// Names every path where `got` and `expected` differ.
fn compare(got: &Tree, expected: &Tree) -> Outcome {
    let paths: BTreeSet<&String> = got.keys().chain(expected.keys()).collect();
    let diff: Vec<String> = paths
        .into_iter()
        .filter(|p| got.get(*p) != expected.get(*p))
        .map(|p| format!("{p}: got {:?}, expected {:?}", got.get(p), expected.get(p)))
        .collect();
    if diff.is_empty() {
        Ok(())
    } else {
        Err(diff.join("; "))
    }
}

/// A backend that asks a snapshot to stop (as SIGINT does) once `left`
/// writes have passed, then goes on writing what the stop writes.
struct StopAfterPuts {
    inner: DynBackend,
    stop: Stop,
    left: std::sync::atomic::AtomicI64,
}

impl Forward for StopAfterPuts {
    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }

    fn put(&self, key: &ObjectKey, data: &[u8]) -> std::result::Result<(), BackendError> {
        if self.left.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) <= 0 {
            self.stop.request();
        }
        self.inner.put(key, data)
    }
}
