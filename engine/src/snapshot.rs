//! Snapshot objects: the commit point of a backup.
//!
//! `snapshots/<id>` holds the header and the (sealed) JSON of [`Snapshot`]. A
//! snapshot exists once its object exists; everything it references was written
//! before it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::id::{SnapshotId, TreeId};
use crate::tree::Node;

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
}

impl Snapshot {
    pub fn short_id(&self) -> String {
        self.id.short()
    }
}
