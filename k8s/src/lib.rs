//! Kubernetes side of pvsnap.
//!
//! pvsnap takes deduplicated snapshots of the host directories behind
//! Kubernetes PersistentVolumes, starting with MicroK8s's
//! `microk8s-hostpath` storage class. This crate talks to the API server; it
//! prints nothing and parses no command line.
//!
//! * [`connect`] / [`connect_with`] find a configuration: `--kubeconfig`,
//!   `KUBECONFIG`, `~/.kube/config`, MicroK8s's
//!   `/var/snap/microk8s/current/credentials/client.config`, then the pod's
//!   service account. When nothing works the error lists every source and why
//!   it failed.
//! * [`Cluster::resolve_claim`] follows PVC → PV → `hostPath`/`local` path,
//!   checks the node pinning, and refuses unbound claims, CSI volumes and
//!   other volume types. [`Cluster::list_claims`] lists claims by namespace
//!   and label selector.
//! * [`Cluster::pods_mounting`], [`Cluster::run_hooks`], [`run_host_hook`]
//!   and [`with_hooks`] run Velero-compatible backup hooks
//!   (`pre.hook.backup.velero.io/command` and friends) through the exec
//!   subresource, plus host commands.
//! * [`PodFreezer`] runs a database freeze preset (`--freeze postgres`)
//!   in the pod that mounts a claim, over exec with stdin open.
//! * [`Cluster::workloads_mounting`], [`Cluster::scale_down`] /
//!   [`ScaledDown::restore_scale`] and [`Cluster::wait_pods_gone`] stop the
//!   users of a claim for an in-place restore.
//! * [`Cluster::create_clone_claim`] makes a new claim on a restored
//!   directory.
//! * [`Cluster::csi_claim`], [`Cluster::snapshot_class`],
//!   [`Cluster::create_volume_snapshot`], [`Cluster::wait_volume_snapshot`],
//!   [`Cluster::delete_volume_snapshot`], [`Cluster::pvsnap_volume_snapshots`]
//!   and [`Cluster::create_claim_from_snapshot`]: CSI VolumeSnapshots of
//!   claims a CSI driver provides, and claims made from them.
//!
//! # TLS crypto provider
//!
//! The client uses rustls with the `ring` crypto provider only (no aws-lc,
//! so no cmake or C toolchain beyond `cc`). rustls picks a process-wide
//! provider by itself only when exactly one provider feature is compiled
//! into the binary. Once another dependency (an object-storage SDK, say)
//! enables `aws-lc-rs` too, building a TLS client panics with "no
//! process-level CryptoProvider available". [`install_crypto_provider`]
//! installs `ring` explicitly, once; [`connect`] calls it, and the binary
//! should call it first thing in `main`, before any other TLS client is
//! built, so that every client in the process shares the same provider.
//!
//! # Hooks
//!
//! Pod hooks follow Velero's annotations: `command` (a JSON array of
//! strings; any other text is a single argv element, as in Velero),
//! `container` (default: the first container), `on-error` (`Fail` or
//! `Continue`, default `Fail`) and `timeout` (a Go duration, default `30s`),
//! under `pre.hook.backup.velero.io/` and `post.hook.backup.velero.io/`
//! (pre hooks also read the older `hook.backup.velero.io/`). The exit code
//! comes from the Status object the API server sends on the exec status
//! channel. A hook that times out is abandoned; the process in the container
//! is not killed (the exec protocol has no way to), which is also how Velero
//! behaves. See [`with_hooks`] for ordering and failure rules.
//!
//! # Clones
//!
//! A clone claim is bound statically: this crate creates a PersistentVolume
//! pointing at the restored directory (hostPath, pinned to the node,
//! reclaim policy Retain, `claimRef` to the new claim) and a claim naming
//! that volume in `volumeName`. The hostpath provisioner is not involved, so
//! the data need not be copied into a directory the provisioner picked, and
//! Retain keeps the restored data when the claim is deleted. The cost is
//! that removing the clone's data is a manual step after deleting the volume.

mod claims;
mod clone;
mod config;
mod csi;
mod error;
mod hooks;
mod podfreeze;
mod workloads;

#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Once;

pub use claims::{
    Capacity, ClaimRef, HOSTNAME_LABEL, ResolveOptions, ResolvedClaim, Scope, VolumeKind,
    map_host_path, parse_quantity,
};
pub use clone::{CloneTarget, MANAGED_BY, MANAGED_BY_LABEL, clone_volume_name};
pub use config::{
    Cluster, ConfigSource, ConfigSources, ConnectOptions, MICROK8S_CLIENT_CONFIG,
    SERVICE_ACCOUNT_DIR, connect, connect_with,
};
pub use csi::{
    ClaimFromSnapshot, CsiClaim, CsiSnapshot, DEFAULT_CSI_TIMEOUT,
    DEFAULT_SNAPSHOT_CLASS_ANNOTATION, RUN_ANNOTATION, SNAPSHOT_API_GROUP, SnapshotClass,
    SnapshotDeleted,
};
pub use error::{Error, Result, SourceAttempt};
pub use hooks::{
    BodyOutcome, DEFAULT_HOOK_TIMEOUT, HookOutcome, HookPhase, HookedRun, HostHook, InvalidHook,
    OUTPUT_TAIL_BYTES, OnError, PodHook, PodRef, parse_go_duration, pod_hook, run_host_hook,
    with_hooks,
};
pub use podfreeze::{FREEZE_CONTAINER_ANNOTATION, PodFreezer};
pub use workloads::{POLL_INTERVAL, ScaledDown, Workload, WorkloadKind};

/// The `kube` crate, re-exported so callers use the same version.
pub use kube;

static CRYPTO_PROVIDER: Once = Once::new();

/// Install rustls's `ring` crypto provider as the process default, once.
///
/// Safe to call any number of times from any thread. If another provider
/// was installed before the first call, that one stays and a debug message
/// is logged. See the crate docs for why this matters.
pub fn install_crypto_provider() {
    CRYPTO_PROVIDER.call_once(|| {
        if rustls::crypto::ring::default_provider()
            .install_default()
            .is_err()
        {
            tracing::debug!("a rustls crypto provider was already installed; keeping it");
        }
    });
}
