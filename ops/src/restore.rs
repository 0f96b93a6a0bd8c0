//! A claim restored in place: scale down → safety snapshot → restore →
//! scale back.

use std::sync::Arc;
use std::time::Duration;

use pvsnap_engine::IndexedRepository;
use pvsnap_engine::backup::{self, BackupOptions, Progress};
use pvsnap_engine::restore::{self, RestoreOptions, RestoreProgress, RestoreSummary};
use pvsnap_engine::snapshot::Snapshot;
use pvsnap_engine::stop::Stop;
use pvsnap_k8s::{ClaimRef, Cluster, ResolveOptions, ResolvedClaim, Workload};

use crate::claim::{claim_key, source_of};
use crate::error::{Error, Result};
use crate::observe::Observer;

/// Tag of the snapshot taken before an in-place restore.
pub const PRE_RESTORE_TAG: &str = "pre-restore";

/// A claim an in-place restore will write into, and what uses it.
#[derive(Debug, Clone)]
pub struct InPlaceTarget {
    pub claim: ClaimRef,
    pub resolved: ResolvedClaim,
    /// The Deployments and StatefulSets to stop meanwhile.
    pub workloads: Vec<Workload>,
}

/// How an in-place restore runs.
#[derive(Debug, Clone)]
pub struct InPlaceOptions {
    /// How long to wait for the claim's pods to stop.
    pub wait_timeout: Duration,
    /// Asks the run to stop (SIGINT, SIGTERM). Before the restore writes,
    /// the volume is unchanged and the workloads are scaled back; once it
    /// writes, it stops after the data in hand and the workloads stay
    /// scaled down ([`ScaleBack::LeftDown`]).
    pub stop: Stop,
}

/// What became of the workloads scaled down for an in-place restore.
#[derive(Debug)]
pub enum ScaleBack {
    /// Back at their replica counts from before.
    Done,
    /// Scaling back failed.
    Failed(pvsnap_k8s::Error),
    /// Left at zero on purpose: the restore was stopped while it wrote, so
    /// the volume holds part of the snapshot, and starting the workloads
    /// on it could harm their data. `commands` start them by hand once the
    /// volume is whole again (the restore run again, or the safety
    /// snapshot restored).
    LeftDown { commands: Vec<String> },
}

impl ScaleBack {
    pub fn is_done(&self) -> bool {
        matches!(self, ScaleBack::Done)
    }
}

/// What an in-place restore did. The restore and the scaling back are
/// reported apart: a restore that succeeded is still a restore when the
/// workloads could not be scaled back, and the reverse.
#[derive(Debug)]
pub struct InPlace {
    /// The snapshot of the content from before, once it was taken.
    pub safety: Option<Snapshot>,
    /// Waiting for the pods, the safety snapshot and the restore.
    pub restored: Result<RestoreSummary>,
    /// Scaling the workloads back to their counts from before.
    pub scaled_back: ScaleBack,
}

/// Finds the claim's volume directory on this host and the workloads that
/// use it, changing nothing (so the caller can ask before going on).
pub async fn prepare_in_place(
    cluster: &Cluster,
    claim: &ClaimRef,
    resolve: &ResolveOptions,
) -> Result<InPlaceTarget> {
    let key = claim_key(claim);
    let resolved = cluster
        .resolve_claim(&claim.namespace, &claim.name, resolve)
        .await
        .map_err(|e| Error::RestoreTarget {
            key: key.clone(),
            source: Box::new(e),
        })?;
    if !resolved.host_path.is_dir() {
        return Err(Error::RestoreTargetNotHere {
            key,
            dir: resolved.host_path,
        });
    }
    let workloads = cluster
        .workloads_mounting(&claim.namespace, &claim.name)
        .await?;
    Ok(InPlaceTarget {
        claim: claim.clone(),
        resolved,
        workloads,
    })
}

/// Restores `snap` into the target's volume: scales its workloads to zero
/// and waits for their pods, keeps the current content in a snapshot tagged
/// [`PRE_RESTORE_TAG`], restores writing only chunks that differ and
/// deleting extra entries, and scales the workloads back on every path but
/// one: a stop requested while the restore writes leaves them scaled down
/// ([`ScaleBack::LeftDown`]). Fails only when scaling down fails (then
/// nothing was changed and what was already scaled down is scaled back).
pub async fn restore_in_place(
    repo: &mut IndexedRepository,
    cluster: &Cluster,
    snap: &Snapshot,
    target: &InPlaceTarget,
    options: &InPlaceOptions,
    observer: &dyn Observer,
) -> Result<InPlace> {
    let mut safety: Option<Snapshot> = None;
    let down = with_workloads_down(
        cluster,
        target,
        options.wait_timeout,
        observer,
        || {
            let taken = safety_snapshot(repo, &target.resolved, &options.stop, observer)?;
            observer.kept(&taken);
            safety = Some(taken);
            let opts = RestoreOptions {
                delete_extra: true,
                stop: options.stop.clone(),
                ..RestoreOptions::default()
            };
            let progress = Arc::new(RestoreProgress::default());
            let _watch = observer.restoring(progress.clone());
            Ok(restore::restore(
                repo,
                snap,
                None,
                &target.resolved.host_path,
                &opts,
                &progress,
            )?)
        },
        // Stopped while it wrote: the volume holds part of the snapshot.
        |restored| {
            matches!(
                restored,
                Err(Error::Engine(
                    pvsnap_engine::Error::RestoreInterrupted { .. }
                ))
            )
        },
    )
    .await?;
    Ok(InPlace {
        safety,
        restored: down.done,
        scaled_back: down.scaled_back,
    })
}

/// What became of work done while a claim's workloads were scaled down.
#[derive(Debug)]
pub(crate) struct WhileDown<T> {
    /// Waiting for the pods, then the work.
    pub(crate) done: Result<T>,
    /// The workloads with the replica counts they had before.
    pub(crate) scaled: Vec<Workload>,
    pub(crate) scaled_back: ScaleBack,
}

/// The safety of every in-place change of a claim's volume: scales the
/// target's workloads to zero, waits for their pods to go, runs `work`,
/// then scales them back to their counts from before on every path but
/// one: when `leave_down` says the outcome left the volume in a state its
/// workloads must not start on ([`ScaleBack::LeftDown`]). A timeout
/// waiting for the pods skips the work and scales back. Fails only when
/// scaling down fails (then nothing else ran and what was already scaled
/// down is scaled back).
pub(crate) async fn with_workloads_down<T>(
    cluster: &Cluster,
    target: &InPlaceTarget,
    wait_timeout: Duration,
    observer: &dyn Observer,
    work: impl FnOnce() -> Result<T>,
    leave_down: impl FnOnce(&Result<T>) -> bool,
) -> Result<WhileDown<T>> {
    let claim = &target.claim;
    let mut down = cluster.scale_down(&target.workloads).await?;
    observer.scaled_down(down.originals());
    let done = match cluster
        .wait_pods_gone(&claim.namespace, &claim.name, wait_timeout)
        .await
    {
        Ok(()) => work(),
        Err(e) => Err(e.into()),
    };
    let scaled_back = if leave_down(&done) {
        ScaleBack::LeftDown {
            commands: down.manual_restore_commands(),
        }
    } else {
        match down.restore_scale().await {
            Ok(()) => {
                observer.scaled_back(down.originals());
                ScaleBack::Done
            }
            Err(e) => ScaleBack::Failed(e),
        }
    };
    Ok(WhileDown {
        done,
        scaled: down.originals().to_vec(),
        scaled_back,
    })
}

/// Snapshots the claim's current content, tagged `pre-restore`.
fn safety_snapshot(
    repo: &mut IndexedRepository,
    resolved: &ResolvedClaim,
    stop: &Stop,
    observer: &dyn Observer,
) -> Result<Snapshot> {
    let source = source_of(resolved);
    let (existing, bad) = repo.snapshots_lenient()?;
    pvsnap_engine::repo::warn_unreadable_snapshots(&bad);
    let opts = BackupOptions {
        parent: backup::find_parent(&existing, &source),
        source: Some(source),
        tags: vec![PRE_RESTORE_TAG.to_string()],
        stop: stop.clone(),
        ..BackupOptions::default()
    };
    let progress = Arc::new(Progress::default());
    let watch = observer.storing(progress.clone());
    let out = backup::backup(repo, &resolved.host_path, &opts, &progress);
    drop(watch);
    let out = out.map_err(|source| Error::SafetySnapshot {
        dir: resolved.host_path.clone(),
        source,
    })?;
    Ok(out.snapshot)
}
