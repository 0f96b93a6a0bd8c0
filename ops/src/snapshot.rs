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
        })
    }

    /// The snapshots this run has committed, in order.
    pub fn taken(&self) -> &[Snapshot] {
        &self.taken
    }

    /// Snapshots the folder `dir` (an absolute path, recorded as the source).
    pub fn folder(&mut self, dir: &Path, observer: &dyn Observer) -> Result<Taken> {
        let opts = self.backup_options(path_source(dir));
        let pending = self.store(dir, &opts, observer)?;
        self.commit(pending, None)
    }

    /// Snapshots the folder `dir` (an absolute path) between the host hooks.
    pub async fn hooked_folder(
        &mut self,
        dir: &Path,
        host: &HostHooks,
        observer: &dyn Observer,
    ) -> Result<Taken> {
        self.hooked(dir, path_source(dir), None, &[], host, observer)
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
        let source = source_of(&resolved);
        self.hooked(
            &resolved.host_path,
            source,
            Some(cluster),
            &pods,
            host,
            observer,
        )
        .await
    }

    /// Host pre hook, pods' pre hooks, store, pods' post hooks, host post
    /// hook, then commit with every outcome recorded.
    async fn hooked(
        &mut self,
        dir: &Path,
        source: Source,
        cluster: Option<&Cluster>,
        pods: &[PodRef],
        host: &HostHooks,
        observer: &dyn Observer,
    ) -> Result<Taken> {
        // The hooks learn what they run for: the source as snapshots name
        // it, and the host folder that is read.
        let told = |h: &HostHook| {
            h.clone()
                .with_env("PVSNAP_SOURCE", source.key())
                .with_env("PVSNAP_SNAPSHOT_PATH", dir.to_string_lossy())
        };
        let (pre, post) = (host.pre.as_ref().map(told), host.post.as_ref().map(told));
        let opts = self.backup_options(source);
        let this = &*self;
        let hooked = pvsnap_k8s::with_hooks(cluster, pods, pre.as_ref(), post.as_ref(), || async {
            this.store(dir, &opts, observer)
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
            BodyOutcome::Ran(Err(e)) => Err(e.into()),
            BodyOutcome::Ran(Ok(mut pending)) => {
                pending.add_hooks(outcomes);
                self.commit(pending, post_failure)
            }
        }
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

    fn store(
        &self,
        dir: &Path,
        opts: &BackupOptions,
        observer: &dyn Observer,
    ) -> pvsnap_engine::Result<PendingSnapshot> {
        let progress = Arc::new(Progress::default());
        let _watch = observer.storing(progress.clone());
        backup::store(self.repo, dir, opts, &progress)
    }

    pub(crate) fn commit(
        &mut self,
        pending: PendingSnapshot,
        post_hook_failure: Option<HookOutcome>,
    ) -> Result<Taken> {
        let outcome = pending.commit(self.repo)?;
        self.taken.push(outcome.snapshot.clone());
        Ok(Taken {
            snapshot: outcome.snapshot,
            post_hook_failure,
        })
    }
}

fn path_source(dir: &Path) -> Source {
    Source::Path {
        path: dir.to_string_lossy().into_owned(),
    }
}
