//! What a workflow can fail with.

use std::path::{Path, PathBuf};

use pvsnap_k8s::HookOutcome;

/// A workflow's error. The engine's and the Kubernetes crate's errors pass
/// through unchanged (same message, same source chain).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Engine(#[from] pvsnap_engine::Error),
    #[error(transparent)]
    Kube(#[from] pvsnap_k8s::Error),
    /// A claim resolved to a volume directory this host does not have.
    #[error(
        "volume directory {}{} of persistentvolume {pv} is not a folder on this host; is pvsnap running on node {} with the host's storage mounted?",
        .dir.display(),
        below_host_root(.volume_path, .host_root.as_deref()),
        .node.as_deref().unwrap_or("of the volume")
    )]
    VolumeNotHere {
        /// Where the directory was looked for.
        dir: PathBuf,
        /// The volume's path as the node sees it.
        volume_path: PathBuf,
        /// Where the host's root is mounted, when it is.
        host_root: Option<PathBuf>,
        pv: String,
        node: Option<String>,
    },
    /// A pre hook with on-error Fail failed, so nothing was read.
    #[error("skipped, no snapshot taken: {reason}")]
    Skipped {
        reason: String,
        /// Every hook that ran, pre then post.
        hooks: Vec<HookOutcome>,
    },
    /// The claim to restore into cannot be resolved.
    #[error("cannot restore into {key}")]
    RestoreTarget {
        key: String,
        #[source]
        source: Box<pvsnap_k8s::Error>,
    },
    /// The claim to restore into has no volume directory on this host.
    #[error(
        "cannot restore into {key}: its volume directory {} is not a folder on this host (check --host-root and --node)",
        .dir.display()
    )]
    RestoreTargetNotHere { key: String, dir: PathBuf },
    /// A new claim's name is no valid Kubernetes name.
    #[error("{name:?} is not a valid claim name; use lowercase letters, digits and '-'")]
    InvalidClaimName { name: String },
    /// The claim a clone would create exists already.
    #[error(
        "{key} already exists; choose another name for the new claim (to overwrite it, use --to-pvc)"
    )]
    ClaimExists { key: String },
    /// The folder a clone's data would go into holds something.
    #[error("{} exists and is not empty; remove it or choose another claim name", .dir.display())]
    CloneFolderNotEmpty { dir: PathBuf },
    /// A clone's data is restored, but its volume or claim could not be made.
    #[error("the data is restored in {}, but the claim could not be created", .dir.display())]
    CloneClaimNotCreated {
        dir: PathBuf,
        #[source]
        source: Box<pvsnap_k8s::Error>,
    },
    /// A restore drill could not be set up (its folder, its snapshot).
    #[error("drill: {0}")]
    Drill(String),
    /// A dry run reached a CSI claim: nothing is made in the cluster.
    #[error(
        "dry run: {key} is provided by CSI driver {driver}; a real run makes a VolumeSnapshot of class {class} (nothing was made)"
    )]
    CsiDryRun {
        key: String,
        driver: String,
        class: String,
    },
    /// No empty folder could be made to record a CSI snapshot with.
    #[error(
        "cannot make an empty temporary folder to record the CSI snapshot with: {0}; check TMPDIR (the VolumeSnapshot was deleted again)"
    )]
    CsiTempFolder(#[source] std::io::Error),
    /// The snapshot of the current content before an in-place restore failed.
    #[error("cannot take the safety snapshot of {} before restoring", .dir.display())]
    SafetySnapshot {
        dir: PathBuf,
        #[source]
        source: pvsnap_engine::Error,
    },
    /// Native snapshots of the source's storage failed (or were required
    /// where there are none); the message names the path and what to do.
    #[error("{}", native_text(.error))]
    Native {
        source_dir: PathBuf,
        error: pvsnap_native::Error,
    },
    /// The database freeze asked for (`--freeze`) failed.
    #[error("freezing {freezer}: {error}")]
    Freeze {
        freezer: String,
        error: pvsnap_native::Error,
    },
    /// A request that cannot be carried out as given.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A native snapshot error without the path the caller already names.
fn native_text(e: &pvsnap_native::Error) -> String {
    match e {
        pvsnap_native::Error::NotNative { reason, .. } => reason.clone(),
        e => e.to_string(),
    }
}

fn below_host_root(volume_path: &Path, host_root: Option<&Path>) -> String {
    match host_root {
        Some(root) => format!(
            " (volume path {} below --host-root {})",
            volume_path.display(),
            root.display()
        ),
        None => String::new(),
    }
}
