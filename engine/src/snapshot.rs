//! Snapshot objects: the commit point of a backup.
//!
//! `snapshots/<id>` holds the header and the (sealed) JSON of [`Snapshot`]. A
//! snapshot exists once its object exists; everything it references was written
//! before it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{FormatError, Result};
use crate::repo::crypto::Crypto;
use crate::repo::format::{ObjectKind, decode_checked, encode_checked};
use crate::repo::id::{SnapshotId, TreeId};
use crate::tree::{Node, NodeKind};

/// What a snapshot is a snapshot of. Snapshots of the same source form one
/// timeline: the parent of a new snapshot is the latest of its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// A directory on this host.
    Path { path: String },
    /// A Kubernetes PersistentVolumeClaim.
    Pvc {
        cluster: String,
        namespace: String,
        pvc: String,
        pv: String,
        #[serde(default)]
        storage_class: Option<String>,
        #[serde(default)]
        capacity: Option<String>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        #[serde(default)]
        node: Option<String>,
        host_path: String,
    },
}

impl Source {
    /// The timeline key: the path, or `pvc/<namespace>/<name>`.
    pub fn key(&self) -> String {
        match self {
            Source::Path { path } => path.clone(),
            Source::Pvc { namespace, pvc, .. } => format!("pvc/{namespace}/{pvc}"),
        }
    }
}

/// Counters of one snapshot run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    /// Bytes of file content read from the source.
    pub bytes_read: u64,
    /// Bytes written to the repository (packs, index, snapshot).
    pub bytes_added: u64,
    pub data_blobs_added: u64,
    pub tree_blobs_added: u64,
    /// Files and bytes in the snapshot as a whole.
    pub total_files: u64,
    pub total_bytes: u64,
    pub duration_s: f64,
}

/// A problem met while taking a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathIssue {
    /// `unreadable`, `vanished`, `changed`, `skipped`, or `lost` (set by `repair snapshots`).
    pub kind: String,
    pub path: String,
    pub message: String,
}

impl PathIssue {
    /// Whether the issue means content is missing from the snapshot.
    pub fn is_loss(&self) -> bool {
        matches!(self.kind.as_str(), "unreadable" | "vanished" | "lost")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub time: Timestamp,
    pub hostname: String,
    pub source: Source,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub parent: Option<SnapshotId>,
    /// The root folder's own entry; its `Dir` subtree is [`Snapshot::tree`].
    pub root: Node,
    pub tree: TreeId,
    pub summary: Summary,
    #[serde(default)]
    pub errors: Vec<PathIssue>,
    /// Hook outcomes and other records of the run, as JSON.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<serde_json::Value>,
    pub program_version: String,
    /// The id this snapshot was first written under: for a copy made by
    /// `pvsnap copy`, the snapshot it copies (a copy of a copy names the
    /// first); for a snapshot rewritten by `pvsnap tag`, its id before.
    /// Absent in snapshots never copied or rewritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
    /// The native snapshot (btrfs, ZFS, LVM, CSI) the data was read from,
    /// or that this record stands for (a native restore point). Absent in
    /// snapshots read from the live folder and in repositories older than
    /// native snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_snapshot: Option<SourceSnapshot>,
}

/// The native snapshot behind a repository snapshot (FORMAT.md,
/// `source_snapshot`). The engine only records it; the storage is handled
/// by `pvsnap-native`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSnapshot {
    /// `btrfs`, `zfs`, `lvm` or `csi`.
    pub kind: String,
    /// The volume it is a snapshot of (the btrfs subvolume's path, the ZFS
    /// dataset, the LVM volume, the claim).
    pub volume: String,
    /// Its pvsnap name (`pvsnap-keep-…`, `pvsnap-read-…`).
    pub name: String,
    /// What the storage's tools call it (a btrfs snapshot's path,
    /// `dataset@name`, `vg/lv`).
    pub handle: String,
    /// The source folder relative to the volume's root (empty: the root).
    #[serde(default)]
    pub within: String,
    /// Seconds the storage took to make it.
    pub create_s: f64,
    /// Seconds from freeze to thaw (no freezer: the creation time).
    pub freeze_window_s: f64,
    /// Whether it was left on the storage after the run (a restore point,
    /// removed by `forget` with this record).
    pub kept: bool,
    /// A native restore point only (`snapshot --native-only`): nothing was
    /// read, the tree is an empty folder, and the content is the native
    /// snapshot's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub native_only: bool,
    /// How full the native snapshot was when last looked at during the
    /// read (LVM thick snapshots: data percent / 100); absent where the
    /// storage has no such limit or nobody looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<f64>,
    /// CSI only: seconds until the VolumeSnapshot was ready to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_s: Option<f64>,
    /// CSI only: the CSI driver of the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// CSI only: the class's `deletionPolicy` (`Delete`, `Retain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<String>,
    /// CSI only: the VolumeSnapshot as it was when ready (its JSON, read
    /// by `pvsnap-ops`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<serde_json::Value>,
}

impl Snapshot {
    pub fn short_id(&self) -> String {
        self.id.short()
    }

    /// The id of the snapshot as first taken: [`Snapshot::original`] for a
    /// copy, its own id otherwise. A snapshot and all its copies share it.
    pub fn origin(&self) -> SnapshotId {
        self.original.unwrap_or(self.id)
    }

    /// A native restore point: the record of a native snapshot, whose tree
    /// is an empty folder ([`SourceSnapshot::native_only`]).
    pub fn is_native_only(&self) -> bool {
        self.source_snapshot.as_ref().is_some_and(|n| n.native_only)
    }

    /// The native snapshot this record keeps on the storage, if any. A CSI
    /// VolumeSnapshot is not one: it lives in the cluster, and `pvsnap-ops`
    /// handles it (`csi_record`).
    pub fn kept_native(&self) -> Option<&SourceSnapshot> {
        self.source_snapshot
            .as_ref()
            .filter(|n| n.kept && n.kind != "csi")
    }
}

/// Encodes a snapshot object: the checked header (see
/// [`crate::repo::format::encode_checked`]) around `seal(id, JSON)`.
pub fn encode_snapshot(snap: &Snapshot, crypto: &Crypto) -> Vec<u8> {
    let json = serde_json::to_vec(snap).expect("snapshot serializes");
    let sealed = crypto.seal(snap.id.0.as_bytes(), json);
    encode_checked(ObjectKind::Snapshot, crypto.is_encrypted(), &sealed)
}

/// Decodes and validates the snapshot object stored as `snapshots/<id>`.
///
/// Besides the checksum (version 2) or seal (encrypted), the snapshot must
/// claim the id it is stored under, and its root entry must be what every
/// pvsnap writes: a folder with an empty name whose subtree is the
/// snapshot's `tree`. A root named `../x` or `/abs`, or a root that is a
/// symlink, would otherwise steer a restore outside its target.
pub fn decode_snapshot(bytes: &[u8], crypto: &Crypto, id: &SnapshotId) -> Result<Snapshot> {
    let what = || format!("snapshot {id}");
    let (header, sealed) = decode_checked(bytes, ObjectKind::Snapshot, &what)?;
    if header.encrypted() != crypto.is_encrypted() {
        return Err(FormatError::Invalid {
            what: what(),
            detail: "encryption flag does not match the repository".into(),
        }
        .into());
    }
    let json = crypto.open(id.0.as_bytes(), sealed, &what)?;
    let snap: Snapshot = serde_json::from_slice(&json).map_err(|e| FormatError::Invalid {
        what: what(),
        detail: e.to_string(),
    })?;
    if snap.id != *id {
        return Err(FormatError::Invalid {
            what: what(),
            detail: format!("object claims id {}", snap.id),
        }
        .into());
    }
    snap.validate_root()?;
    Ok(snap)
}

impl Snapshot {
    /// Checks the root entry: a folder, with an empty name, whose subtree is
    /// [`Snapshot::tree`].
    pub fn validate_root(&self) -> Result<(), FormatError> {
        let bad = |detail: String| FormatError::Invalid {
            what: format!("snapshot {}", self.id),
            detail: format!("{detail}; the object is damaged or crafted, and is not used"),
        };
        if !self.root.name.is_empty() {
            return Err(bad(format!(
                "its root entry is named {:?}, but a root has no name",
                String::from_utf8_lossy(&self.root.name)
            )));
        }
        match &self.root.kind {
            NodeKind::Dir { subtree } if *subtree == self.tree => Ok(()),
            NodeKind::Dir { subtree } => Err(bad(format!(
                "its root folder names tree {subtree}, but the snapshot names tree {}",
                self.tree
            ))),
            other => Err(bad(format!(
                "its root entry is a {}, not a folder",
                other.name()
            ))),
        }
    }
}
