//! A claim's volume rolled back to a native snapshot in place: the same
//! scale-down safety as an in-place restore ([`crate::restore_in_place`]),
//! with the native rollback (btrfs subvolume swap, `zfs rollback`,
//! `lvconvert --merge`) as the work done while the workloads are down.

use std::path::PathBuf;

use pvsnap_engine::snapshot::{Snapshot, Source};
use pvsnap_k8s::{Cluster, Workload};

use crate::error::{Error, Result};
use crate::native::{Rollback, open_under};
use crate::observe::Observer;
use crate::restore::{InPlaceOptions, InPlaceTarget, ScaleBack, with_workloads_down};

/// What a claim's rollback did. The rollback and the scaling back are
/// reported apart, as for an in-place restore.
#[derive(Debug)]
pub struct RolledBack {
    /// Waiting for the pods, then the rollback: where the content from
    /// before is kept, when the storage keeps it (btrfs). On an error the
    /// volume is unchanged, except where the error says otherwise.
    pub rolled: Result<Option<PathBuf>>,
    /// The workloads scaled to zero, with their replica counts from before.
    pub scaled: Vec<Workload>,
    /// Scaling them back (tried whether the rollback worked or not: it
    /// happened whole or not at all), or `LeftDown` after an LVM merge,
    /// which completes at the volume's next activation.
    pub scaled_back: ScaleBack,
}

/// Checks, changing nothing, that `snap` keeps a native snapshot of the
/// claim `target` as it is now: the same claim, bound to the same
/// PersistentVolume, whose folder is still on the same native volume and
/// is that whole volume (a rollback swaps the whole volume: other claims'
/// folders in it would be rolled back with it, their workloads running).
pub fn check_claim_rollback(snap: &Snapshot, target: &InPlaceTarget) -> Result<Rollback> {
    let key = crate::claim_key(&target.claim);
    let Source::Pvc {
        namespace, pvc, pv, ..
    } = &snap.source
    else {
        return Err(Error::Invalid(format!(
            "snapshot {} is of {}, not of claim {key}; nothing was changed",
            snap.short_id(),
            snap.source.key()
        )));
    };
    if *namespace != target.claim.namespace || *pvc != target.claim.name {
        return Err(Error::Invalid(format!(
            "snapshot {} is of claim {namespace}/{pvc}, not of {key}; nothing was changed",
            snap.short_id()
        )));
    }
    let now = &target.resolved.pv;
    if pv != now {
        return Err(Error::Invalid(format!(
            "{key} is now bound to persistentvolume {now}, not to {pv} that snapshot {} was taken of (the claim was recreated on another volume), so it cannot be rolled back to it; nothing was changed. Copy the old content out with `pvsnap restore {} --target DIR` (or --clone-to PATH)",
            snap.short_id(),
            snap.short_id()
        )));
    }
    let rollback = Rollback::check(snap, &target.resolved.host_path)?;
    if !rollback.within().as_os_str().is_empty() {
        let n = rollback.record();
        return Err(Error::Invalid(format!(
            "the folder of {key} ({}) is {} inside the {} volume {}, which a rollback would return to the snapshot whole, other folders in it included, while only {key}'s workloads are stopped; nothing was changed. Give each claim a volume of its own (btrfs: `btrfs subvolume create` per claim folder), or restore with `pvsnap restore {} --target DIR` or --clone-to PATH",
            target.resolved.host_path.display(),
            rollback.within().display(),
            n.kind,
            n.volume,
            snap.short_id()
        )));
    }
    Ok(rollback)
}

/// Rolls the claim's volume back: scales its workloads to zero and waits
/// for their pods (exactly as [`crate::restore_in_place`] does), refuses
/// while a process on this host still has the volume open, rolls back,
/// and scales the workloads back to their counts from before on every
/// path but one: after an LVM merge, which completes only when the volume
/// is next activated, they are left down ([`ScaleBack::LeftDown`]). A stop requested before the rollback starts leaves the volume
/// unchanged; the rollback itself is not interrupted. Fails only when
/// scaling down fails (then nothing was changed).
pub async fn rollback_in_place(
    cluster: &Cluster,
    rollback: Rollback,
    target: &InPlaceTarget,
    options: &InPlaceOptions,
    observer: &dyn Observer,
) -> Result<RolledBack> {
    // An LVM merge into a volume still mounted (a hostPath volume stays
    // mounted on the node) waits for its next activation: workloads
    // started before would write into content the merge then replaces.
    let merge_waits = rollback.record().kind == pvsnap_native::Kind::Lvm.as_str();
    let down = with_workloads_down(
        cluster,
        target,
        options.wait_timeout,
        observer,
        || {
            if options.stop.requested() {
                return Err(Error::Invalid(
                    "stopped before the rollback; the volume was not changed".into(),
                ));
            }
            let users = open_under(rollback.swapped());
            if !users.is_empty() {
                return Err(Error::Invalid(format!(
                    "{} is still in use by {} after the claim's pods stopped; stop them first: a rollback swaps the volume under them. The volume was not changed",
                    rollback.swapped().display(),
                    users.join(", ")
                )));
            }
            rollback.run()
        },
        // Otherwise a rollback is whole or not done: the workloads can
        // start on the volume either way.
        |rolled| merge_waits && rolled.is_ok(),
    )
    .await?;
    Ok(RolledBack {
        rolled: down.done,
        scaled: down.scaled,
        scaled_back: down.scaled_back,
    })
}
