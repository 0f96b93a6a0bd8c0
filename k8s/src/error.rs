//! Errors of this crate. Every message names the object involved and says
//! what to do next.

use std::path::PathBuf;
use std::time::Duration;

/// One configuration source that [`crate::connect`] tried, and why it could
/// not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceAttempt {
    /// What was tried, e.g. `--kubeconfig /tmp/kc` or `in-cluster service account`.
    pub source: String,
    /// Why it could not be used.
    pub reason: String,
}

fn list_attempts(attempts: &[SourceAttempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("\n  - {}: {}", a.source, a.reason))
        .collect()
}

fn list_names(names: &[String]) -> String {
    names.join(", ")
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--freeze` for a claim that has no pod or container to run it in.
    #[error("cannot freeze the database of claim {claim}: {reason}")]
    FreezeRefused {
        /// `namespace/name` of the claim.
        claim: String,
        /// Why, and what to do.
        reason: String,
    },

    /// No configuration source gave a usable cluster configuration.
    #[error(
        "no usable Kubernetes configuration; tried:{}\nnext step: pass --kubeconfig FILE, set KUBECONFIG, \
         or on MicroK8s run `microk8s config > ~/.kube/config` (reading MicroK8s's own file needs root or the microk8s group)",
        list_attempts(.attempts)
    )]
    NoConfig {
        /// Every source tried, in order.
        attempts: Vec<SourceAttempt>,
    },

    /// A configuration was found but the client could not be built from it.
    #[error(
        "cannot build a Kubernetes client from {source_name}: {source}; check the server address and certificates in it"
    )]
    Client {
        /// The configuration source that was used.
        source_name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },

    /// A request to the API server failed for a reason not covered by a
    /// more specific variant.
    #[error(
        "Kubernetes API request failed while {action}: {source}; check that the cluster is reachable and that your credentials allow this (RBAC)"
    )]
    Api {
        /// What was being done, e.g. `reading persistentvolumeclaim default/data`.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },

    /// The claim does not exist.
    #[error(
        "persistentvolumeclaim {namespace}/{name} not found; check the name with `kubectl get pvc -n {namespace}`"
    )]
    ClaimNotFound {
        /// Namespace of the claim.
        namespace: String,
        /// Name of the claim.
        name: String,
    },

    /// The claim exists but is not bound to a volume.
    #[error(
        "persistentvolumeclaim {namespace}/{name} is not bound (phase {phase}); nothing to snapshot until a volume is bound to it — check `kubectl describe pvc -n {namespace} {name}`"
    )]
    ClaimNotBound {
        /// Namespace of the claim.
        namespace: String,
        /// Name of the claim.
        name: String,
        /// Phase reported by the API server (`Pending`, `Lost`, or `unknown`).
        phase: String,
    },

    /// The claim names a volume that does not exist.
    #[error(
        "persistentvolume {pv} (bound to claim {namespace}/{claim}) not found; the claim is probably Lost — check `kubectl get pv {pv}`"
    )]
    VolumeNotFound {
        /// Name of the volume.
        pv: String,
        /// Namespace of the claim.
        namespace: String,
        /// Name of the claim.
        claim: String,
    },

    /// The volume lives on another node than this one.
    #[error(
        "persistentvolume {pv} of claim {namespace}/{claim} is on node {volume_node}, but this is node {this_node}; run pvsnap on node {volume_node}"
    )]
    WrongNode {
        /// Name of the volume.
        pv: String,
        /// Namespace of the claim.
        namespace: String,
        /// Name of the claim.
        claim: String,
        /// Node(s) the volume is pinned to.
        volume_node: String,
        /// The node we are running on.
        this_node: String,
    },

    /// The volume is provided by a CSI driver, whose data is not a plain host
    /// directory that can be read here.
    #[error(
        "persistentvolume {pv} of claim {namespace}/{claim} is provided by CSI driver {driver}; its files cannot be read from the host (only hostPath and local volumes can) — `pvsnap snapshot pvc/{namespace}/{claim}` makes a CSI VolumeSnapshot of it instead; reading a CSI snapshot's content into the repository (a short-lived pod mounting a claim made from it) is not built yet"
    )]
    CsiVolume {
        /// Name of the volume.
        pv: String,
        /// Namespace of the claim.
        namespace: String,
        /// Name of the claim.
        claim: String,
        /// The CSI driver name from `spec.csi.driver`.
        driver: String,
    },

    /// A CSI VolumeSnapshot was asked of a claim whose volume is not CSI.
    #[error(
        "persistentvolume {pv} of claim {namespace}/{claim} is not provided by a CSI driver, so it has no CSI VolumeSnapshots; snapshot it into the repository instead"
    )]
    NotCsi {
        pv: String,
        namespace: String,
        claim: String,
    },

    /// The VolumeSnapshotClass asked for does not exist.
    #[error(
        "volumesnapshotclass {class} not found; list the classes with `kubectl get volumesnapshotclass`"
    )]
    SnapshotClassNotFound { class: String },

    /// The VolumeSnapshotClass asked for is of another driver.
    #[error(
        "volumesnapshotclass {class} is for CSI driver {class_driver}, but the volume is provided by {driver}; pass --snapshot-class with a class of {driver}"
    )]
    SnapshotClassDriver {
        class: String,
        class_driver: String,
        driver: String,
    },

    /// No class given and the driver has no default class.
    #[error(
        "CSI driver {driver} has no default VolumeSnapshotClass (its classes: {classes}); pass --snapshot-class NAME, or make one the default with `kubectl annotate volumesnapshotclass NAME snapshot.storage.kubernetes.io/is-default-class=true`"
    )]
    NoDefaultSnapshotClass { driver: String, classes: String },

    /// No class given and the driver has several default classes.
    #[error(
        "CSI driver {driver} has more than one default VolumeSnapshotClass ({classes}), so which to use is ambiguous; pass --snapshot-class NAME, or keep one default with `kubectl annotate volumesnapshotclass NAME snapshot.storage.kubernetes.io/is-default-class-`"
    )]
    AmbiguousDefaultSnapshotClass { driver: String, classes: String },

    /// The VolumeSnapshot to create exists already.
    #[error(
        "volumesnapshot {namespace}/{name} already exists; run the snapshot again for a new name"
    )]
    SnapshotExists { namespace: String, name: String },

    /// A VolumeSnapshot being waited for or used is gone.
    #[error(
        "volumesnapshot {namespace}/{name} is gone (deleted by someone else?); check `kubectl get volumesnapshot -n {namespace}`"
    )]
    SnapshotVanished { namespace: String, name: String },

    /// The driver reported an error for a VolumeSnapshot.
    #[error(
        "CSI volumesnapshot {snapshot} of claim {claim} failed: {message}; {cleanup}. Check the driver's snapshotter with `kubectl describe volumesnapshot -n {}`",
        .snapshot.split('/').next().unwrap_or("")
    )]
    SnapshotFailed {
        /// `NAMESPACE/NAME`.
        snapshot: String,
        /// `NAMESPACE/NAME` of the claim.
        claim: String,
        /// `status.error.message`.
        message: String,
        /// What became of the snapshot.
        cleanup: String,
    },

    /// A VolumeSnapshot was not ready in time.
    #[error(
        "CSI volumesnapshot {snapshot} of claim {claim} was not {stage} after {timeout:?} ({detail}). Raise --csi-timeout, or check that the CSI snapshotter runs (`kubectl get volumesnapshotcontent`, the driver's snapshot-controller logs)"
    )]
    SnapshotTimeout {
        /// `NAMESPACE/NAME`.
        snapshot: String,
        /// `NAMESPACE/NAME` of the claim.
        claim: String,
        /// What it was waited for: `ready to use`, `cut (creationTime)`.
        stage: &'static str,
        timeout: Duration,
        /// Its content, and what became of it.
        detail: String,
    },

    /// A claim from a snapshot was asked in another namespace.
    #[error(
        "a claim made from volumesnapshot {snapshot} must be in its namespace, not {namespace}; use --to-new-pvc {}/{name}",
        .snapshot.split('/').next().unwrap_or("")
    )]
    SnapshotOtherNamespace {
        snapshot: String,
        namespace: String,
        name: String,
    },

    /// A claim from a snapshot was asked of a snapshot not ready.
    #[error(
        "volumesnapshot {snapshot} is not ready to use (error: {error}); no claim can be made from it yet — check `kubectl describe volumesnapshot`"
    )]
    SnapshotNotReady { snapshot: String, error: String },

    /// The volume type is neither hostPath nor local.
    #[error(
        "persistentvolume {pv} of claim {namespace}/{claim} has unsupported volume type {kind}; only hostPath and local volumes (such as microk8s-hostpath) can be snapshotted"
    )]
    UnsupportedVolume {
        /// Name of the volume.
        pv: String,
        /// Namespace of the claim.
        namespace: String,
        /// Name of the claim.
        claim: String,
        /// The volume source found in the spec, e.g. `nfs`.
        kind: String,
    },

    /// A resource quantity could not be parsed.
    #[error(
        "cannot parse quantity {quantity:?} of {object}; expected a Kubernetes quantity such as 10Gi or 500M"
    )]
    InvalidQuantity {
        /// The text that failed to parse.
        quantity: String,
        /// The object the quantity belongs to.
        object: String,
    },

    /// The claim to create already exists.
    #[error(
        "persistentvolumeclaim {namespace}/{name} already exists; choose another name for the clone or delete the existing claim first"
    )]
    ClaimExists {
        /// Namespace of the claim.
        namespace: String,
        /// Name of the claim.
        name: String,
    },

    /// The volume to create already exists.
    #[error(
        "persistentvolume {pv} already exists (left over from an earlier clone?); delete it with `kubectl delete pv {pv}` or choose another claim name"
    )]
    VolumeExists {
        /// Name of the volume.
        pv: String,
    },

    /// A name given to the crate cannot be used as a Kubernetes object name.
    #[error(
        "{what} {name:?} is not a valid Kubernetes name; use lowercase letters, digits and '-'"
    )]
    InvalidName {
        /// What the name is for.
        what: &'static str,
        /// The name.
        name: String,
    },

    /// A clone directory that is not absolute.
    #[error("clone directory {} must be an absolute path on the node", .0.display())]
    RelativeHostDir(PathBuf),

    /// Pods still use a claim after the waiting time.
    #[error("pods still using persistentvolumeclaim {namespace}/{claim} after {timeout:?}: {}; stop them (e.g. `kubectl delete pod -n {namespace} NAME`) or raise the timeout", list_names(.pods))]
    PodsStillPresent {
        /// Namespace of the claim.
        namespace: String,
        /// Name of the claim.
        claim: String,
        /// The pods still present.
        pods: Vec<String>,
        /// How long we waited.
        timeout: Duration,
    },

    /// Scaling a workload failed; the ones already scaled were put back.
    #[error(
        "cannot scale {workload} to {replicas}: {source}; workloads scaled before it were restored — check RBAC for the scale subresource"
    )]
    Scale {
        /// `Deployment ns/name` or `StatefulSet ns/name`.
        workload: String,
        /// Target replica count.
        replicas: i32,
        /// The client error.
        #[source]
        source: kube::Error,
    },

    /// Restoring the original replica counts failed for some workloads.
    #[error("could not scale back {}; run these by hand: {}", list_names(.workloads), .commands.join("; "))]
    RestoreScale {
        /// The workloads that could not be scaled back, with the reason.
        workloads: Vec<String>,
        /// `kubectl scale` commands that restore them by hand.
        commands: Vec<String>,
    },
}

impl Error {
    pub(crate) fn api(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Api {
            action: action.into(),
            source,
        }
    }
}

/// True when the error is the API server's 404.
pub(crate) fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

/// True when the error is the API server's 409 AlreadyExists.
pub(crate) fn is_already_exists(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409)
}
