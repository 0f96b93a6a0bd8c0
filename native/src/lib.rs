//! Native snapshots: the storage under a source folder snapshots itself
//! (btrfs, ZFS, LVM), atomically and in about a second whatever the size.
//!
//! pvsnap uses them two ways: as the frozen source a snapshot reads into the
//! repository (freeze → native snapshot → thaw → read → release), and as
//! restore points of their own (`snapshot --native-only`, `--keep-native`).
//! CSI VolumeSnapshots are the same idea for claims and live in `pvsnap-k8s`.
//!
//! Rules for this crate:
//! - Everything pvsnap makes on the storage (snapshots, holds, clones,
//!   mounts, LVM snapshot volumes) carries a name from [`naming`], so that
//!   after a kill -9 the next run finds exactly its own leftovers and
//!   nothing else ([`Provider::leftovers`], [`Provider::remove_leftover`]).
//! - Tools are run through [`tool::Tool`], by name from `PATH`, never through
//!   a shell; their exact stderr reaches the error. Tests put recording
//!   stand-ins first on `PATH`.
//! - Synchronous, like the engine; prints nothing.

pub mod btrfs;
pub mod detect;
pub mod error;
pub mod freeze;
pub mod lvm;
pub mod mountinfo;
pub mod naming;
pub mod tool;
pub mod zfs;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::{Error, Result};

/// The provider of one storage kind: a single match, so each kind's owner
/// adds its arm.
pub fn provider_for(kind: Kind) -> Result<Box<dyn Provider>> {
    match kind {
        Kind::Btrfs => Ok(Box::new(btrfs::Btrfs)),
        Kind::Lvm => Ok(Box::new(lvm::Lvm::default())),
        Kind::Zfs => Ok(Box::new(zfs::Zfs::new())),
        Kind::Csi => Err(Error::Refused {
            what: format!("{kind} native snapshots"),
            detail:
                "not built yet in this pvsnap; snapshot with --source-snapshot off (a live read)"
                    .into(),
        }),
    }
}

/// Places a source folder on its volume, as the storage's own provider
/// sees it: the first look from the mount table ([`detect::place`]), then,
/// for btrfs, the subvolume that holds it. `Ok(None)`: a filesystem with no
/// native snapshots.
pub fn place(path: &Path) -> Result<Option<Placed>> {
    let Some(first) = detect::place(path)? else {
        return Ok(None);
    };
    match first.volume.kind {
        Kind::Btrfs => {
            let path = std::fs::canonicalize(path).map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?;
            btrfs::place(&path, &first).map(Some)
        }
        Kind::Lvm => lvm::Lvm::default().place(&first).map(Some),
        _ => Ok(Some(first)),
    }
}

/// The kinds of native snapshot, as written in a snapshot's JSON
/// (`source_snapshot.kind`) and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Btrfs,
    Zfs,
    Lvm,
    Csi,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Btrfs => "btrfs",
            Kind::Zfs => "zfs",
            Kind::Lvm => "lvm",
            Kind::Csi => "csi",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A volume that can snapshot itself: what a native snapshot covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub kind: Kind,
    /// What the storage calls it: the btrfs subvolume's path, the ZFS
    /// dataset (`tank/data`), the LVM volume (`vg0/data`).
    pub name: String,
    /// Where the volume's root is mounted on this host.
    pub mount_point: PathBuf,
    /// The filesystem type from the mount table (`btrfs`, `zfs`, `xfs`, …).
    pub fs_type: String,
    /// The mount's source from the mount table (device or dataset).
    pub device: String,
}

/// A source folder placed on its volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub volume: Volume,
    /// The source folder relative to the volume's root (empty: the root).
    pub within: PathBuf,
    /// Why some of the source will not be in a native snapshot of the
    /// volume (btrfs: nested subvolumes are not included), for a warning.
    pub caveats: Vec<String>,
}

/// A native snapshot pvsnap made (or found, with a pvsnap name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeSnapshot {
    pub kind: Kind,
    /// The volume it is a snapshot of ([`Volume::name`]).
    pub volume: String,
    /// Its pvsnap name ([`naming`]), without the volume part.
    pub name: String,
    /// The full name the storage's tools take: a btrfs snapshot's path,
    /// `dataset@name`, `vg/lv`.
    pub handle: String,
    /// When the storage says it was made, if it says.
    pub created: Option<jiff::Timestamp>,
}

/// A native snapshot's content, readable as a folder for as long as this
/// lives. Dropping it (or [`ReadView::release`], which reports failures)
/// undoes whatever made it readable: a temporary clone, a mount.
pub struct ReadView {
    /// The folder holding the volume's root as of the snapshot.
    pub root: PathBuf,
    release: Option<Box<dyn FnOnce() -> Result<()> + Send>>,
}

impl ReadView {
    /// A view that needs no undoing (a btrfs snapshot is a folder).
    pub fn plain(root: PathBuf) -> Self {
        ReadView {
            root,
            release: None,
        }
    }

    /// A view with a step that undoes it.
    pub fn with_release(
        root: PathBuf,
        release: impl FnOnce() -> Result<()> + Send + 'static,
    ) -> Self {
        ReadView {
            root,
            release: Some(Box::new(release)),
        }
    }

    /// The folder to read for the source placed at `within` on the volume.
    pub fn source(&self, within: &Path) -> PathBuf {
        self.root.join(within)
    }

    /// Undoes the view now and says whether that worked.
    pub fn release(mut self) -> Result<()> {
        match self.release.take() {
            Some(f) => f(),
            None => Ok(()),
        }
    }
}

impl Drop for ReadView {
    fn drop(&mut self) {
        if let Some(f) = self.release.take()
            && let Err(e) = f()
        {
            tracing::warn!(
                "releasing the native snapshot view {}: {e}",
                self.root.display()
            );
        }
    }
}

/// What one storage kind can do. Every method runs the storage's own tools
/// and waits for them; each error names the volume or snapshot and says
/// what to do next.
pub trait Provider: Send + Sync {
    fn kind(&self) -> Kind;

    /// Creates a read-only native snapshot of `volume` named `name` (a name
    /// from [`naming`]). Atomic: all of the volume as of one instant.
    fn create(&self, volume: &Volume, name: &str) -> Result<NativeSnapshot>;

    /// Makes a snapshot readable as a folder (btrfs: its path; ZFS: the
    /// `.zfs/snapshot` folder, else a temporary clone; LVM: a read-only
    /// mount, `nouuid` for XFS), holding it against removal while the view
    /// lives where the storage can (ZFS `hold`).
    fn open(&self, snapshot: &NativeSnapshot) -> Result<ReadView>;

    /// Removes a snapshot from the storage.
    fn destroy(&self, snapshot: &NativeSnapshot) -> Result<()>;

    /// The pvsnap-named snapshots of `volume`, oldest first.
    fn list(&self, volume: &Volume) -> Result<Vec<NativeSnapshot>>;

    /// The handles of the snapshots of the volume named `volume` (a
    /// record's `volume`), where the storage can list them by that name
    /// alone (ZFS: `pool/dataset@name`); `None` where it cannot (btrfs
    /// handles are folders to look at; LVM needs the volume group).
    fn handles_of(&self, _volume: &str) -> Result<Option<Vec<String>>> {
        Ok(None)
    }

    /// Returns the volume to `snapshot` (ZFS rollback, LVM merge, btrfs
    /// subvolume swap). The caller has stopped every writer.
    fn rollback(&self, volume: &Volume, snapshot: &NativeSnapshot) -> Result<()>;

    /// A writable copy of `snapshot` at `target` that shares its data (ZFS
    /// clone mounted there, btrfs snapshot); returns the folder.
    fn clone_to(&self, snapshot: &NativeSnapshot, target: &Path) -> Result<PathBuf>;

    /// How full a snapshot is, 0.0 to 1.0, where the storage has such a
    /// limit (LVM thick snapshots: `data_percent` / 100); `None` elsewhere.
    fn usage(&self, _snapshot: &NativeSnapshot) -> Result<Option<f64>> {
        Ok(None)
    }

    /// Temporary things a killed run left on `volume` (snapshots taken for
    /// one read, holds, clones, mounts), by [`naming`]; never a kept
    /// restore point.
    fn leftovers(&self, volume: &Volume) -> Result<Vec<Leftover>>;

    /// Removes one leftover found by [`Provider::leftovers`].
    fn remove_leftover(&self, leftover: &Leftover) -> Result<()>;
}

/// Something a killed run left behind on the storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leftover {
    pub kind: Kind,
    /// `snapshot`, `hold`, `clone`, `mount`, `volume`.
    pub what: String,
    /// The storage's name for it (what the removing tool takes).
    pub handle: String,
}

/// Holds a database still while a native snapshot is made, and lets it go.
/// The freeze presets (`--freeze postgres|mysql|mongodb`) implement it for
/// host processes; claims run the same recipes in the pod over exec.
pub trait Freezer {
    /// What it freezes, for messages (`postgres`, `mysql`, `mongodb`).
    fn name(&self) -> &str;
    /// Freezes; the writes are held until the returned guard is thawed.
    fn freeze(&self) -> Result<Box<dyn Frozen>>;
}

/// A database held still. Thawing it (or dropping it) lets writes go on;
/// `thaw` reports whether that worked.
pub trait Frozen {
    fn thaw(self: Box<Self>) -> Result<()>;

    /// When the database began to be held: the statement that holds it was
    /// sent (what comes before it, such as connecting or PostgreSQL's
    /// `CHECKPOINT`, prepares and holds nothing). The freeze window is
    /// counted from here; `None`: from the call to freeze.
    fn held_since(&self) -> Option<std::time::Instant> {
        None
    }

    /// Thaws, and returns the files the database hands back for the
    /// snapshot. PostgreSQL: `backup_label` (and `tablespace_map` when there
    /// are tablespaces) from `pg_backup_stop`; the caller records them with
    /// the snapshot. They are for archive recovery: written into a restored
    /// data directory's root together with a `restore_command` that reaches
    /// the WAL up to the backup's end (written after the snapshot). Without
    /// them an atomic native snapshot starts by crash recovery, which is
    /// what a plain restore should do: with the label but without that WAL,
    /// PostgreSQL refuses to start. Others: none.
    fn thaw_keeping(self: Box<Self>) -> Result<Vec<KeptFile>> {
        self.thaw().map(|()| Vec::new())
    }
}

/// A file a frozen database returned on thaw, to be restored beside its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptFile {
    /// Its name in the data directory's root (`backup_label`).
    pub name: String,
    pub contents: String,
}
