//! Snapshots of host folders and of claims, between their hooks.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use pvsnap_engine::IndexedRepository;
use pvsnap_engine::backup::{self, BackupOptions, PendingSnapshot, Progress};
use pvsnap_engine::snapshot::{Snapshot, Source};
use pvsnap_k8s::{BodyOutcome, ClaimRef, Cluster, HookOutcome, HostHook, PodRef, ResolveOptions};

use crate::claim::source_of;
use crate::error::{Error, Result};
use crate::native::{NativeOptions, Natives, ReadFrom, SourceFreezer};
use crate::observe::Observer;

/// What every snapshot of one run records and leaves out.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    /// Globs of entries left out (a name, or a path relative to the folder).
    pub excludes: Vec<String>,
    /// Do not descend into other filesystems.
    pub one_file_system: bool,
    /// The time recorded instead of now.
    pub time: Option<jiff::Timestamp>,
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// The host name recorded instead of the machine's.
    pub hostname: Option<String>,
    /// When index checkpoints are written while a source is stored.
    pub checkpoints: backup::Checkpoints,
    /// Stops the source being stored cleanly (its post hooks still run):
    /// it fails with the engine's `Error::Interrupted`, and the caller
    /// starts no further source.
    pub stop: backup::Stop,
    /// How claims a CSI driver provides are snapshotted.
    pub csi: crate::csi::CsiOptions,
}

/// Commands run on the host around every source (`sh -c`). The pre hook
/// failing skips the source; the post hook runs whenever the pre hook ran.
#[derive(Debug, Clone, Default)]
pub struct HostHooks {
    pub pre: Option<HostHook>,
    pub post: Option<HostHook>,
}

/// One source's snapshot, committed.
#[derive(Debug)]
pub struct Taken {
    pub snapshot: Snapshot,
    /// A post hook with on-error Fail that failed after the data was read:
    /// the snapshot is saved (with the outcome recorded), but the source
    /// counts as failed.
    pub post_hook_failure: Option<HookOutcome>,
    /// Native snapshots destroyed by `--keep-native N` after this one.
    pub native_pruned: Vec<String>,
}

/// What a claim adds to a hooked snapshot: its cluster, the pods that
/// mount it (their hooks run) and the freezer run in one of them.
struct ClaimSide<'a> {
    cluster: &'a Cluster,
    pods: &'a [PodRef],
    freezer: Option<&'a SourceFreezer>,
}

/// One run over several sources. Each source is its own timeline: its
/// parent is the latest snapshot of the same source, taken before the run
/// or earlier in it. A source that fails (its folder unreadable, a hook, the
/// repository refusing a write) changes nothing the run holds: the caller
/// reports it and goes on with the next source, as `pvsnap snapshot` does.
pub struct SnapshotRun<'r> {
    repo: &'r mut IndexedRepository,
    options: SnapshotOptions,
    existing: Vec<Snapshot>,
    taken: Vec<Snapshot>,
    pub(crate) native: Natives,
}

impl<'r> SnapshotRun<'r> {
    /// Reads the snapshots that may be parents; an unreadable one is no
    /// parent (warned about and looked past).
    pub fn new(repo: &'r mut IndexedRepository, options: SnapshotOptions) -> Result<Self> {
        let (existing, bad) = repo.snapshots_lenient()?;
        pvsnap_engine::repo::warn_unreadable_snapshots(&bad);
        Ok(SnapshotRun {
            repo,
            options,
            existing,
            taken: Vec::new(),
            native: Natives::default(),
        })
    }

    /// Reads sources through native snapshots as `options` say, frozen by
    /// `freezer` while each native snapshot is made.
    pub fn with_native(
        mut self,
        options: NativeOptions,
        freezer: Option<Box<dyn pvsnap_native::Freezer>>,
    ) -> Self {
        self.native.options = options;
        self.native.freezer = freezer;
        self
    }

    /// Releases the run's native snapshots now (destroying those not kept);
    /// what could not be released. Dropping the run does it too.
    pub fn release_native(&self) -> Vec<String> {
        self.native.release()
    }

    /// The snapshots this run has committed, in order.
    pub fn taken(&self) -> &[Snapshot] {
        &self.taken
    }

    /// Snapshots the folder `dir` (an absolute path, recorded as the source).
    pub fn folder(&mut self, dir: &Path, observer: &dyn Observer) -> Result<Taken> {
        self.catch_up_index();
        let opts = self.backup_options(path_source(dir));
        let pending = self.store(dir, &opts, None, observer)?;
        self.commit(pending, None)
    }

    /// Snapshots the folder `dir` (an absolute path) between the host hooks.
    pub async fn hooked_folder(
        &mut self,
        dir: &Path,
        host: &HostHooks,
        observer: &dyn Observer,
    ) -> Result<Taken> {
        self.hooked(dir, path_source(dir), None, host, observer)
            .await
    }

    /// Resolves a claim to its volume directory on this node and snapshots
    /// it between the host hooks and the hooks of the pods that mount it.
    pub async fn claim(
        &mut self,
        cluster: &Cluster,
        claim: &ClaimRef,
        resolve: &ResolveOptions,
        host: &HostHooks,
        observer: &dyn Observer,
    ) -> Result<Taken> {
        let resolved = match cluster
            .resolve_claim(&claim.namespace, &claim.name, resolve)
            .await
        {
            // Its files are not on the host: a VolumeSnapshot instead.
            Err(pvsnap_k8s::Error::CsiVolume { .. }) => {
                return self.csi_claim(cluster, claim, host, observer).await;
            }
            r => r?,
        };
        if !resolved.host_path.is_dir() {
            return Err(Error::VolumeNotHere {
                dir: resolved.host_path,
                volume_path: resolved.volume_path,
                host_root: resolve.host_root.clone(),
                pv: resolved.pv,
                node: resolved.node,
            });
        }
        let pods = cluster.pods_mounting(&claim.namespace, &claim.name).await?;
        // `--freeze` for a claim: its database is in its pod, so the
        // preset's session runs there (never on this host).
        let own = match self.pod_freezer(cluster, claim, &pods)? {
            Some(f) => {
                let (pod, container) = f.place();
                Some(SourceFreezer {
                    freezer: Box::new(f),
                    key: format!("pod {pod} container {container}"),
                })
            }
            None => None,
        };
        let source = source_of(&resolved);
        let claim = ClaimSide {
            cluster,
            pods: &pods,
            freezer: own.as_ref(),
        };
        self.hooked(&resolved.host_path, source, Some(claim), host, observer)
            .await
    }

    /// With `--freeze`: the freezer that runs the preset's session in the
    /// pod of `claim` (its database is there, never on this host).
    pub(crate) fn pod_freezer(
        &self,
        cluster: &pvsnap_k8s::Cluster,
        claim: &ClaimRef,
        pods: &[PodRef],
    ) -> Result<Option<pvsnap_k8s::PodFreezer>> {
        let Some(preset) = self.native.options.freeze else {
            return Ok(None);
        };
        Ok(Some(pvsnap_k8s::PodFreezer::for_claim(
            cluster,
            &claim.namespace,
            &claim.name,
            pods,
            preset,
            pvsnap_native::freeze::DEFAULT_TIMEOUT,
        )?))
    }

    /// Host pre hook, pods' pre hooks, store, pods' post hooks, host post
    /// hook, then commit with every outcome recorded.
    async fn hooked(
        &mut self,
        dir: &Path,
        source: Source,
        claim: Option<ClaimSide<'_>>,
        host: &HostHooks,
        observer: &dyn Observer,
    ) -> Result<Taken> {
        let (cluster, pods, own) = match &claim {
            Some(c) => (Some(c.cluster), c.pods, c.freezer),
            None => (None, &[][..], None),
        };
        // The hooks learn what they run for: the source as snapshots name
        // it, and the host folder that is read.
        let told = |h: &HostHook| {
            h.clone()
                .with_env("PVSNAP_SOURCE", source.key())
                .with_env("PVSNAP_SNAPSHOT_PATH", dir.to_string_lossy())
        };
        let (pre, post) = (host.pre.as_ref().map(told), host.post.as_ref().map(told));
        self.catch_up_index();
        let opts = self.backup_options(source);
        let this = &*self;
        let hooked = pvsnap_k8s::with_hooks(cluster, pods, pre.as_ref(), post.as_ref(), || async {
            this.store(dir, &opts, own, observer)
        })
        .await;
        let outcomes: Vec<serde_json::Value> = hooked
            .outcomes()
            .map(|o| serde_json::to_value(o).expect("hook outcome serializes"))
            .collect();
        let post_failure = hooked.post.iter().find(|o| o.is_fatal()).cloned();
        match hooked.body {
            BodyOutcome::Skipped { reason } => Err(Error::Skipped {
                reason,
                hooks: hooked.pre.into_iter().chain(hooked.post).collect(),
            }),
            BodyOutcome::Ran(Err(e)) => Err(e),
            BodyOutcome::Ran(Ok(mut pending)) => {
                pending.add_hooks(outcomes);
                self.commit(pending, post_failure)
            }
        }
    }

    /// Before a source is stored: the index gets the blobs of the sources
    /// this run committed, so it deduplicates against them. After the last
    /// source nothing loads them: the run ends without that memory.
    pub(crate) fn catch_up_index(&mut self) {
        self.repo.load_written_index();
    }

    pub(crate) fn options(&self) -> &SnapshotOptions {
        &self.options
    }

    pub(crate) fn repo(&self) -> &IndexedRepository {
        self.repo
    }

    /// The repository's snapshots, from before the run and taken in it.
    pub(crate) fn all_snapshots(&self) -> Vec<&Snapshot> {
        self.existing.iter().chain(&self.taken).collect()
    }

    pub(crate) fn backup_options(&self, source: Source) -> BackupOptions {
        let o = &self.options;
        BackupOptions {
            parent: backup::find_parent(&self.existing, &source)
                .or_else(|| backup::find_parent(&self.taken, &source)),
            source: Some(source),
            excludes: o.excludes.clone(),
            one_file_system: o.one_file_system,
            time: o.time,
            tags: o.tags.clone(),
            labels: o.labels.clone(),
            hostname: o.hostname.clone(),
            hooks: vec![],
            checkpoints: o.checkpoints,
            stop: o.stop.clone(),
        }
    }

    /// Reads `dir` (through a native snapshot where the run says so) and
    /// stores it.
    fn store(
        &self,
        dir: &Path,
        opts: &BackupOptions,
        own: Option<&SourceFreezer>,
        observer: &dyn Observer,
    ) -> Result<PendingSnapshot> {
        let (read, record) = match self.native.read_from(dir, own, observer)? {
            // A freeze lasts as long as making a native snapshot; held
            // around a whole live read it would stop the database for
            // minutes, so it is refused instead.
            ReadFrom::Live if self.native.freezer.is_some() || own.is_some() => {
                return Err(Error::Invalid(format!(
                    "{}: --freeze needs a native snapshot of the source, and it is read live here; put it on btrfs, ZFS or LVM (see --source-snapshot required), or freeze with --pre-hook/--post-hook around the whole read",
                    dir.display()
                )));
            }
            ReadFrom::Live => (None, None),
            ReadFrom::Native { dir: read, record } => (Some(read), Some(*record)),
        };
        let native_only = record.as_ref().is_some_and(|r| r.native_only);
        // A native restore point records an empty folder as its tree.
        let empty = if native_only {
            Some(tempfile::tempdir().map_err(|e| {
                Error::Invalid(format!("cannot make an empty folder for the record: {e}"))
            })?)
        } else {
            None
        };
        let mut opts = opts.clone();
        if native_only {
            opts.parent = None;
        }
        let from = match (&empty, &read) {
            (Some(e), _) => e.path().to_owned(),
            (None, Some(r)) => {
                opts.excludes = crate::native::rebase_excludes(&opts.excludes, dir);
                r.clone()
            }
            (None, None) => dir.to_owned(),
        };
        let progress = Arc::new(Progress::default());
        let _watch = observer.storing(progress.clone());
        let watched = match &record {
            Some(r) if !native_only && r.kind == "lvm" => Some(r.clone()),
            _ => None,
        };
        let mut usage = None;
        let mut pending = match watched {
            None => backup::store(self.repo, &from, &opts, &progress)?,
            Some(r) => self.store_watched(&from, opts, &progress, &r, observer, &mut usage)?,
        };
        if let Some(mut r) = record {
            // The last usage the watch saw (a final look when the read was
            // too short for one) goes into the record, for `status` and
            // `metrics` (pvsnap_native_snapshot_usage_ratio).
            r.usage = usage.or_else(|| self.native.usage(&r));
            pending.record_source_snapshot(r);
        }
        Ok(pending)
    }

    /// Stores `from` while a watch polls how full the LVM snapshot it is
    /// read from gets: a warning at 80 %, and at 95 % the read stops
    /// cleanly (what was stored is indexed) before the snapshot overflows
    /// and its content is lost.
    fn store_watched(
        &self,
        from: &Path,
        mut opts: BackupOptions,
        progress: &Progress,
        record: &pvsnap_engine::snapshot::SourceSnapshot,
        observer: &dyn Observer,
        seen: &mut Option<f64>,
    ) -> Result<PendingSnapshot> {
        use pvsnap_native::lvm::{ABORT_AT, WARN_AT};
        let outer = opts.stop.clone();
        let inner = pvsnap_engine::stop::Stop::default();
        opts.stop = inner.clone();
        // The store runs on a thread of its own; the watch here, where the
        // held snapshot and the observer are.
        let repo: &IndexedRepository = self.repo;
        let (stored, overflow) = std::thread::scope(|s| {
            let store = s.spawn(|| backup::store(repo, from, &opts, progress));
            let mut warned = false;
            let mut overflow = None;
            let mut last = std::time::Instant::now() - std::time::Duration::from_secs(10);
            while !store.is_finished() {
                if outer.requested() {
                    inner.request();
                }
                if overflow.is_none() && last.elapsed() >= std::time::Duration::from_secs(2) {
                    last = std::time::Instant::now();
                    if let Some(u) = self.native.usage(record) {
                        *seen = Some(u);
                        if u >= ABORT_AT {
                            inner.request();
                            overflow = Some(u);
                        } else if u >= WARN_AT && !warned {
                            warned = true;
                            observer.note(
                                &record.handle,
                                &format!(
                                    "the LVM snapshot is {:.0}% full; it is read on, and stopped at {:.0}%",
                                    u * 100.0,
                                    ABORT_AT * 100.0
                                ),
                            );
                        }
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            (store.join().expect("the store does not panic"), overflow)
        });
        match (stored, overflow) {
            (Err(_), Some(u)) => Err(Error::Native {
                source_dir: from.to_owned(),
                error: pvsnap_native::Error::Refused {
                    what: format!("LVM snapshot {}", record.handle),
                    detail: format!(
                        "is {:.0}% full: the read stopped before it overflows (what was stored is kept for the next run); give it more room with --lvm-snapshot-size",
                        u * 100.0
                    ),
                },
            }),
            (stored, _) => Ok(stored?),
        }
    }

    pub(crate) fn commit(
        &mut self,
        pending: PendingSnapshot,
        post_hook_failure: Option<HookOutcome>,
    ) -> Result<Taken> {
        let outcome = pending.commit(self.repo)?;
        self.taken.push(outcome.snapshot.clone());
        let s = &outcome.snapshot;
        let native_pruned = match self.native.options.keep_native {
            Some(n) if s.kept_native().is_some() && !s.is_native_only() => {
                let all: Vec<Snapshot> = self.existing.iter().chain(&self.taken).cloned().collect();
                crate::native::prune_kept(&all, &s.source.key(), n)
            }
            _ => vec![],
        };
        Ok(Taken {
            snapshot: outcome.snapshot,
            post_hook_failure,
            native_pruned,
        })
    }
}

fn path_source(dir: &Path) -> Source {
    Source::Path {
        path: dir.to_string_lossy().into_owned(),
    }
}
