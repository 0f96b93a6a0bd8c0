//! The workflows of pvsnap, below any user interface: the `pvsnap` command
//! calls them today, a scheduler or a metrics endpoint can call the same
//! code tomorrow.
//!
//! * [`SnapshotRun`]: one run over several sources, each its own timeline.
//!   [`SnapshotRun::folder`] snapshots a host folder;
//!   [`SnapshotRun::hooked_folder`] does it between host hooks;
//!   [`SnapshotRun::claim`] resolves a claim to its volume directory on this
//!   node and snapshots it between its running pods' backup hooks (and the
//!   host hooks). Every source is hooks → store → post hooks → commit, so
//!   post-hook outcomes are recorded in the snapshot they belong to. A claim
//!   a CSI driver provides gets a VolumeSnapshot between the hooks instead,
//!   recorded as a native restore point ([`CsiRecord`]; [`forget_csi`],
//!   [`restore_csi_to_new_claim`], [`remove_csi_leftovers`]).
//! * [`prepare_in_place`] then [`restore_in_place`]: a claim restored in
//!   place. Its Deployments and StatefulSets are scaled to zero and their
//!   pods waited for, the volume's current content is kept in a snapshot
//!   tagged [`PRE_RESTORE_TAG`], the snapshot is restored writing only what
//!   differs and deleting extra entries, and the workloads are scaled back
//!   on every path, failed restores included.
//! * [`check_claim_rollback`] then [`rollback_in_place`]: a claim's volume
//!   returned to a native snapshot, with the same scale-down safety (one
//!   helper runs both: workloads to zero, pods gone, the work, scaled back).
//! * [`restore_to_new_claim`]: a snapshot restored into a new folder of the
//!   node's storage folder, then a volume pinned to the node and a claim
//!   bound to it are created.
//! * [`drill`]: a restore drill: a snapshot restored into a scratch folder,
//!   every file checked against the snapshot, a command run on the copy,
//!   the recovery time reported, the copy removed.
//!
//! Workflows take plain inputs (an indexed repository, a cluster client,
//! options) and return reports; they print nothing and decide no exit code.
//! What happens while they run reaches the caller through an [`Observer`].
//! Kubernetes requests are async; the engine's work inside a workflow runs
//! on the calling thread, so a caller with a multi-threaded runtime should
//! run a workflow where blocking is allowed.
//!
//! Errors are [`Error`]: the engine's and the Kubernetes crate's errors
//! unchanged, plus what only a workflow can find out (a volume directory
//! missing on this host, a snapshot skipped by a failing pre hook).

mod claim;
mod clone;
mod csi;
mod drill;
mod error;
pub mod health;
pub mod native;
mod observe;
mod restore;
mod rollback;
pub mod schedule;
mod snapshot;

pub use claim::{claim_key, source_of};
pub use clone::{CloneOptions, Cloned, restore_to_new_claim};
pub use csi::{
    CsiOptions, CsiRecord, SOURCE_SNAPSHOT, csi_record, forget_csi, remove_csi_leftovers,
    restore_csi_to_new_claim,
};
pub use drill::{CommandOutcome, DrillOptions, DrillReport, drill};
pub use error::{Error, Result};
pub use native::{NativeOptions, SourceSnapshotMode};
pub use observe::{Observer, Quiet, Watch};
pub use restore::{
    InPlace, InPlaceOptions, InPlaceTarget, PRE_RESTORE_TAG, ScaleBack, prepare_in_place,
    restore_in_place,
};
pub use rollback::{RolledBack, check_claim_rollback, rollback_in_place};
pub use snapshot::{HostHooks, SnapshotOptions, SnapshotRun, Taken};
