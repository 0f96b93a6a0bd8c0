//! A read-only virtual filesystem over a repository: what `pvsnap mount` shows.
//!
//! [`Vfs`] owns path lookup and reads; the FUSE adapter (`pvsnap-fuse`) only
//! translates its answers into kernel replies. Everything here is plain Rust
//! over engine types, so it is tested without a kernel.
//!
//! # Layout
//! The root holds `snapshots/`, `sources/` and `ids/` (see [`layout`] for the
//! names); below a snapshot's folder its tree appears exactly as captured. With
//! [`VfsOptions::snapshot`] the root is that snapshot's tree instead. New
//! snapshots appear without remounting: a lookup, listing or stat of a layout
//! folder re-lists the snapshot objects at most every
//! [`VfsOptions::refresh_every`], and when the list changed the index is
//! reloaded (before the new snapshots become visible) and the layout rebuilt.
//!
//! # Inodes
//! [`ROOT`] is 1. The layout's folders and links get numbers on first sight
//! (lookup or listing). An entry of a snapshot is numbered by where it is: a
//! folder whose entries are looked up or listed gets a range of numbers, and
//! entry `i` of its tree is `first + i`. The table keeps, per snapshot entry
//! the kernel holds, only its number and the references the kernel holds:
//! one per [`Vfs::lookup`] and per entry taken by [`Vfs::readdir_plus`], given
//! back by [`Vfs::forget`]. At zero the inode is dropped; a folder dropped
//! takes its range along, and a folder looked up again numbers its entries
//! anew, so a number never names another entry. Browsing a million files
//! holds only what the kernel still caches, at about 45 bytes an inode.
//! Records of inodes the kernel does not count (layout entries, hardlinked
//! nodes and ranges seen by a plain listing) are swept once they outnumber a
//! bound ([`VfsOptions::idle_inodes`], [`SWEEP_AT`] by default). A snapshot
//! reached through `snapshots/` and through `sources/` is two distinct trees
//! of inodes (a folder must not have two parents). Within one such tree,
//! non-folder nodes with a link count above one and the same (device, inode)
//! share the number of the first name seen: hardlinks stay hardlinks, and
//! such a node and the snapshot roots (in no tree) are kept whole.
//! Folders report the link count captured; the layout's folders report 1
//! ("unknown", which keeps `find` from guessing subfolder counts).
//!
//! Attributes, names and extent lists are read from a byte-bounded LRU of
//! folder trees ([`VfsOptions::tree_cache_bytes`]) when asked, and read again
//! from the repository after eviction. A tree is kept packed (`vfs/packed.rs`:
//! its plaintext, an entry decoded when asked), about a quarter of its
//! decoded size. A folder that is open (from [`Vfs::opendir`] to
//! [`Vfs::releasedir`]) keeps its tree, however large, so the many readdir
//! calls of a huge folder read it once; a lookup in a folder binary-searches
//! its sorted names in place.
//!
//! # Reads
//! A file's extents are indexed by their start offsets; a read finds its first
//! extent by binary search, copies from decompressed chunks and zero-fills
//! holes. Chunks come from a byte-bounded LRU cache ([`VfsOptions::cache_bytes`])
//! that loads each chunk once however many readers want it. When a file is read
//! sequentially, the chunks of the next [`VfsOptions::readahead_bytes`] are
//! loaded ahead on [`VfsOptions::readahead_threads`] threads of their own.
//!
//! Every method takes `&self` and is safe to call from many threads at once.

mod cache;
mod file;
pub mod layout;
mod packed;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;

use crate::cache::Lru;
use crate::error::Error;
use crate::repo::IndexedRepository;
use crate::repo::format::ObjectKind;
use crate::repo::id::{SnapshotId, TreeId};
use crate::snapshot::Snapshot;
use crate::store::blob::BlobKind;
use crate::tree::{Node, NodeKind};
use cache::{ChunkCache, Loader};
pub use file::{FileMap, ReadData};
use layout::{VDir, VNode};
use packed::PackedTree;

/// The inode number of the root folder.
pub const ROOT: u64 = 1;

/// How the filesystem behaves.
#[derive(Debug, Clone)]
pub struct VfsOptions {
    /// Show only this snapshot's tree, at the root.
    pub snapshot: Option<Snapshot>,
    /// Bound of the decompressed chunk cache, in bytes.
    pub cache_bytes: usize,
    /// How far ahead of a sequential reader chunks are loaded, in bytes.
    pub readahead_bytes: u64,
    /// Threads loading chunks ahead of readers.
    pub readahead_threads: usize,
    /// Bound of the tree cache, in (estimated) bytes.
    pub tree_cache_bytes: usize,
    /// How often, at most, the snapshot list is checked for changes.
    pub refresh_every: Duration,
    /// Inodes the kernel holds no reference to (made by plain listings)
    /// are swept when the table has grown by this many since the last sweep.
    pub idle_inodes: usize,
    /// Owner of the layout's folders and links.
    pub uid: u32,
    pub gid: u32,
    /// Time zone of the names in the layout.
    pub time_zone: TimeZone,
}

impl Default for VfsOptions {
    fn default() -> Self {
        VfsOptions {
            snapshot: None,
            cache_bytes: 64 << 20,
            readahead_bytes: 8 << 20,
            readahead_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            tree_cache_bytes: 32 << 20,
            refresh_every: Duration::from_secs(3),
            idle_inodes: SWEEP_AT,
            uid: crate::sys::host::euid(),
            gid: crate::sys::host::egid(),
            time_zone: TimeZone::system(),
        }
    }
}

/// Errors of the virtual filesystem; [`VfsError::errno`] maps them to POSIX.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VfsError {
    #[error("no such entry")]
    NotFound,
    #[error("inode {0} is unknown")]
    UnknownInode(u64),
    #[error("inode {0} is not a folder")]
    NotDir(u64),
    #[error("inode {0} is a folder")]
    IsDir(u64),
    #[error("inode {0} is not a symlink")]
    NotSymlink(u64),
    #[error("inode {0} is not a regular file")]
    NotFile(u64),
    #[error("no such extended attribute")]
    NoXattr,
    #[error("no data or hole at or after the offset")]
    PastEnd,
    #[error(transparent)]
    Repo(#[from] Error),
}

impl VfsError {
    /// The errno a filesystem call fails with.
    pub fn errno(&self) -> i32 {
        match self {
            VfsError::NotFound | VfsError::UnknownInode(_) => libc::ENOENT,
            VfsError::NotDir(_) => libc::ENOTDIR,
            VfsError::IsDir(_) => libc::EISDIR,
            VfsError::NotSymlink(_) | VfsError::NotFile(_) => libc::EINVAL,
            VfsError::NoXattr => libc::ENODATA,
            VfsError::PastEnd => libc::ENXIO,
            VfsError::Repo(_) => libc::EIO,
        }
    }
}

pub type VfsResult<T> = std::result::Result<T, VfsError>;

/// The type of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
}

/// What `stat` shows of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    /// Permission and special bits (`mode & 0o7777`).
    pub perm: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte blocks of stored content (holes take none).
    pub blocks: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// Device number of a device node (`st_rdev`, glibc encoding).
    pub rdev: u64,
    /// Whether the entry can never change. The layout's folders and links
    /// change as snapshots are added; a snapshot's content never does.
    pub stable: bool,
}

/// One entry of a folder listing. `next_offset` is the offset to continue
/// listing after this entry.
#[derive(Debug, Clone, Copy)]
pub struct DirEntry<'a> {
    pub name: &'a [u8],
    pub attr: Attr,
    pub next_offset: u64,
}

/// References the kernel holds to one inode (lookups not yet forgotten):
/// all the table keeps per held inode of a snapshot entry (with its number,
/// 16 bytes). Raised under the table's read lock, checked for zero under its
/// write lock. At `u32::MAX` it stays: the inode is then held until unmounted.
#[derive(Default)]
struct Held(AtomicU32);

impl Held {
    fn take(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_add(1))
            });
    }

    fn untake(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                (c != u32::MAX).then(|| c.saturating_sub(1))
            });
    }
}

/// A folder of a snapshot: its tree, and the snapshot root inode it was
/// reached through (the scope of its hardlinks).
#[derive(Debug, Clone, Copy)]
struct Folder {
    subtree: TreeId,
    view: u64,
}

/// The numbers of a folder's entries: entry `i` of its tree is inode
/// `first + i`. Given out when its entries are first looked up or listed,
/// dropped with the folder's inode; a folder looked up again gets new ones.
#[derive(Debug, Clone, Copy)]
struct Range {
    folder: Folder,
    first: u64,
    len: u64,
}

/// A node the table holds whole: a snapshot root (in no tree) or a file with
/// hardlinks (one inode under several folders, any of which the kernel may
/// forget first). Both are rare next to the other inodes.
struct Own {
    node: Arc<Node>,
    parent: u64,
    /// The snapshot of a snapshot root.
    snapshot: Option<SnapshotId>,
    /// The name of a snapshot root in its layout folder.
    layout_name: Option<Vec<u8>>,
    /// (view, device, inode) of a hardlinked node.
    link: Option<(u64, u64, u64)>,
}

/// A folder or link of the layout.
struct LayoutInode {
    parent: u64,
    /// From the root.
    path: Vec<Vec<u8>>,
}

/// The default of [`VfsOptions::idle_inodes`].
pub const SWEEP_AT: usize = 65_536;

/// A table that held at least this many inodes is shrunk once the kernel
/// forgot three quarters of them (see [`Table::shrink_if_emptied`]).
const SHRINK_FROM: usize = 4096;

/// How many bytes of file extent lists are kept indexed for reads.
const FILE_MAP_BYTES: usize = 16 << 20;

/// The inodes. An entry of a snapshot has no record of its own: its number
/// says where it is (the folder [`Range`] holding it, and its index there),
/// and the table keeps only the kernel's references to it ([`Held`]). Folders
/// whose entries have numbers add a [`Range`]; the layout's inodes and the
/// rare [`Own`] ones hold more.
struct Table {
    held: HashMap<u64, Held>,
    /// Folder inode → the numbers of its entries.
    dirs: HashMap<u64, Range>,
    /// First number of a range → its folder inode.
    ranges: BTreeMap<u64, u64>,
    own: HashMap<u64, Own>,
    layout: HashMap<u64, LayoutInode>,
    /// (parent, name) → inode, for the layout's entries.
    layout_names: HashMap<(u64, Vec<u8>), u64>,
    /// (view, device, inode) of multiply linked nodes.
    links: HashMap<(u64, u64, u64), u64>,
    /// The next number: numbers are never given to another entry.
    next: u64,
    /// Records (ranges, own nodes, layout inodes) that trigger the next sweep.
    sweep_at: usize,
    /// [`VfsOptions::idle_inodes`].
    idle: usize,
    /// The most inodes held since memory was last given back (see
    /// [`Table::shrink_if_emptied`]).
    peak: usize,
}

impl Table {
    fn new(snapshot: Option<&Snapshot>, idle: usize) -> Table {
        let mut t = Table {
            held: HashMap::new(),
            dirs: HashMap::new(),
            ranges: BTreeMap::new(),
            own: HashMap::new(),
            layout: HashMap::new(),
            layout_names: HashMap::new(),
            links: HashMap::new(),
            next: ROOT + 1,
            sweep_at: idle.max(1),
            idle: idle.max(1),
            peak: 1,
        };
        match snapshot {
            Some(s) => t.add_snapshot_root(ROOT, ROOT, s, None),
            None => {
                t.layout.insert(
                    ROOT,
                    LayoutInode {
                        parent: ROOT,
                        path: vec![],
                    },
                );
            }
        }
        t
    }

    fn add_snapshot_root(&mut self, ino: u64, parent: u64, s: &Snapshot, name: Option<Vec<u8>>) {
        self.own.insert(
            ino,
            Own {
                node: Arc::new(s.root.clone()),
                parent,
                snapshot: Some(s.id),
                layout_name: name,
                link: None,
            },
        );
    }

    /// A new number for a record about to be added; sweeps first when the
    /// records of unheld inodes piled up.
    fn number(&mut self, len: u64) -> u64 {
        if self.dirs.len() + self.own.len() + self.layout.len() >= self.sweep_at {
            self.sweep();
        }
        let n = self.next;
        self.next = self.next.saturating_add(len.max(1));
        n
    }

    /// Takes a reference for the kernel to `ino`.
    fn hold(&mut self, ino: u64) {
        self.held.entry(ino).or_default().take();
        self.peak = self.peak.max(self.held.len());
    }

    fn is_held(&self, ino: u64) -> bool {
        self.held
            .get(&ino)
            .is_some_and(|h| h.0.load(Ordering::Relaxed) > 0)
    }

    /// Once the kernel has forgotten most inodes (the table holds under a
    /// quarter of its peak, and the peak was large), shrinks the maps to
    /// what they hold; returns whether it did, so the caller gives the
    /// freed memory back to the system once the table's lock is released.
    /// A hash map keeps its capacity when emptied, and the allocator keeps
    /// what it freed: without this, a mount stays at the size of the
    /// largest walk through it.
    fn shrink_if_emptied(&mut self) -> bool {
        if self.peak < SHRINK_FROM || self.held.len() * 4 > self.peak {
            return false;
        }
        self.held.shrink_to_fit();
        self.dirs.shrink_to_fit();
        self.own.shrink_to_fit();
        self.layout.shrink_to_fit();
        self.layout_names.shrink_to_fit();
        self.links.shrink_to_fit();
        self.peak = self.held.len().max(1);
        true
    }

    /// Drops inode `ino`: its references, and the records and keys that
    /// lead to it. The numbers of its entries (a folder's) are never given
    /// out again.
    fn drop_inode(&mut self, ino: u64) {
        if ino == ROOT {
            return;
        }
        self.held.remove(&ino);
        if let Some(r) = self.dirs.remove(&ino)
            && self.ranges.get(&r.first) == Some(&ino)
        {
            self.ranges.remove(&r.first);
        }
        if let Some(own) = self.own.remove(&ino) {
            if let Some(l) = own.link
                && self.links.get(&l) == Some(&ino)
            {
                self.links.remove(&l);
            }
            if let Some(name) = own.layout_name {
                self.drop_layout_name((own.parent, name), ino);
            }
        }
        if let Some(mut l) = self.layout.remove(&ino)
            && let Some(name) = l.path.pop()
        {
            self.drop_layout_name((l.parent, name), ino);
        }
    }

    fn drop_layout_name(&mut self, key: (u64, Vec<u8>), ino: u64) {
        if self.layout_names.get(&key) == Some(&ino) {
            self.layout_names.remove(&key);
        }
    }

    /// Drops the records of inodes the kernel holds no reference to.
    fn sweep(&mut self) {
        let idle: Vec<u64> = (self.dirs.keys())
            .chain(self.own.keys())
            .chain(self.layout.keys())
            .chain(self.held.keys())
            .filter(|&&ino| ino != ROOT && !self.is_held(ino))
            .copied()
            .collect();
        for ino in idle {
            self.drop_inode(ino);
        }
        self.sweep_at = self.dirs.len() + self.own.len() + self.layout.len() + self.idle;
    }

    /// How many inodes are held or have records.
    fn count(&self) -> usize {
        let unheld: BTreeSet<u64> = (self.dirs.keys())
            .chain(self.own.keys())
            .chain(self.layout.keys())
            .filter(|ino| !self.held.contains_key(ino))
            .copied()
            .collect();
        self.held.len() + unheld.len()
    }
}

/// A snapshot entry found: decoded from a cached tree, or held whole.
enum NodeRef {
    Decoded(Box<Node>),
    Own(Arc<Node>),
}

impl std::ops::Deref for NodeRef {
    type Target = Node;
    fn deref(&self) -> &Node {
        match self {
            NodeRef::Decoded(node) => node,
            NodeRef::Own(node) => node,
        }
    }
}

/// What an inode stands for, looked up when asked.
enum Found {
    /// A folder or symlink of the layout, by its path from the root.
    Layout(Vec<Vec<u8>>),
    /// An entry of a snapshot; `dir` when it is a folder.
    Node { node: NodeRef, dir: Option<Folder> },
}

/// Trees of the folders that are open (opendir to releasedir): a listing
/// of a huge folder comes in many readdir calls, and its tree may be larger
/// than the tree cache.
#[derive(Default)]
struct OpenDirs {
    next: u64,
    handles: HashMap<u64, TreeId>,
    trees: HashMap<TreeId, (Arc<PackedTree>, usize)>,
}

/// The repository and snapshots as of the last refresh.
struct State {
    repo: Arc<IndexedRepository>,
    ids: BTreeSet<SnapshotId>,
    snaps: Vec<Arc<Snapshot>>,
    layout: VDir,
}

/// The read-only filesystem; see the module documentation.
pub struct Vfs {
    opts: VfsOptions,
    state: RwLock<Arc<State>>,
    table: RwLock<Table>,
    trees: Mutex<Lru<TreeId, Arc<PackedTree>>>,
    open_dirs: Mutex<OpenDirs>,
    /// Tree blobs read and decoded so far.
    trees_read: AtomicUsize,
    /// Extent lists of files being read, indexed, by inode.
    files: Mutex<Lru<u64, (Arc<FileMap>, u64)>>,
    chunks: Arc<ChunkCache>,
    loader: Loader,
    checked: Mutex<Instant>,
    started_ns: i64,
}

impl Vfs {
    /// A filesystem over `repo`: the layout of every snapshot, or only
    /// `opts.snapshot`'s tree.
    pub fn new(repo: IndexedRepository, opts: VfsOptions) -> crate::Result<Vfs> {
        let started_ns = jiff::Timestamp::now().as_nanosecond() as i64;
        if let Some(s) = &opts.snapshot
            && !s.root.is_dir()
        {
            return Err(Error::Invalid(format!(
                "snapshot {}: its root is not a folder",
                s.id.short()
            )));
        }
        let (ids, snaps) = match &opts.snapshot {
            Some(_) => (BTreeSet::new(), vec![]),
            None => {
                let (snaps, bad) = repo.snapshots_lenient()?;
                crate::repo::warn_unreadable_snapshots(&bad);
                let snaps: Vec<Arc<Snapshot>> = snaps.into_iter().map(Arc::new).collect();
                (snaps.iter().map(|s| s.id).collect(), snaps)
            }
        };
        let layout = layout::build(&snaps, &opts.time_zone);
        let vfs = Vfs {
            state: RwLock::new(Arc::new(State {
                repo: Arc::new(repo),
                ids,
                snaps,
                layout,
            })),
            table: RwLock::new(Table::new(opts.snapshot.as_ref(), opts.idle_inodes)),
            trees: Mutex::new(Lru::new(opts.tree_cache_bytes)),
            open_dirs: Mutex::new(OpenDirs::default()),
            trees_read: AtomicUsize::new(0),
            files: Mutex::new(Lru::new(FILE_MAP_BYTES)),
            chunks: Arc::new(ChunkCache::new(opts.cache_bytes)),
            loader: Loader::new(opts.readahead_threads),
            checked: Mutex::new(Instant::now()),
            started_ns,
            opts,
        };
        Ok(vfs)
    }

    /// How many snapshots the layout shows (0 with a single snapshot at the root).
    pub fn snapshot_count(&self) -> usize {
        self.state().snaps.len()
    }

    /// How many inodes are held now (the root included).
    pub fn inode_count(&self) -> usize {
        self.table.read().expect("inode table").count()
    }

    /// How many inodes the table has room for without growing.
    #[cfg(test)]
    fn inode_capacity(&self) -> usize {
        self.table.read().expect("inode table").held.capacity()
    }

    /// The kernel gives back `n` references to `ino` (FUSE forget); at zero
    /// the inode is dropped. Unknown inodes are ignored.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut t = self.table.write().expect("inode table");
        let Some(h) = t.held.get(&ino) else {
            return;
        };
        let held = h.0.load(Ordering::Relaxed);
        if held == u32::MAX {
            return;
        }
        let left = u64::from(held).saturating_sub(n) as u32;
        h.0.store(left, Ordering::Relaxed);
        if left == 0 {
            t.drop_inode(ino);
            if t.shrink_if_emptied() {
                drop(t);
                crate::sys::host::release_free_memory();
            }
        }
    }

    fn state(&self) -> Arc<State> {
        self.state.read().expect("vfs state").clone()
    }

    /// What inode `ino` stands for, and its parent inode. An entry of a
    /// snapshot is read from its folder's tree (the tree cache).
    fn find(&self, ino: u64) -> VfsResult<(u64, Found)> {
        let (folder, index) = {
            let t = self.table.read().expect("inode table");
            if let Some(own) = t.own.get(&ino) {
                let dir = match &own.node.kind {
                    NodeKind::Dir { subtree } if own.snapshot.is_some() => Some(Folder {
                        subtree: *subtree,
                        view: ino,
                    }),
                    _ => None,
                };
                let node = NodeRef::Own(own.node.clone());
                return Ok((own.parent, Found::Node { node, dir }));
            }
            if let Some(l) = t.layout.get(&ino) {
                return Ok((l.parent, Found::Layout(l.path.clone())));
            }
            // The kernel holds a folder while it holds anything in it;
            // without its folder's range the number is stale.
            let (first, folder) = t
                .ranges
                .range(..=ino)
                .next_back()
                .ok_or(VfsError::UnknownInode(ino))?;
            let range = t.dirs.get(folder).ok_or(VfsError::UnknownInode(ino))?;
            if ino - first >= range.len {
                return Err(VfsError::UnknownInode(ino));
            }
            ((*folder, range.folder), (ino - first) as usize)
        };
        let tree = self.tree(&self.state().repo, &folder.1.subtree)?;
        if index >= tree.len() {
            return Err(VfsError::UnknownInode(ino));
        }
        let node = tree.node(index).map_err(Error::from)?;
        let dir = match &node.kind {
            NodeKind::Dir { subtree } => Some(Folder {
                subtree: *subtree,
                view: folder.1.view,
            }),
            _ => None,
        };
        let node = NodeRef::Decoded(Box::new(node));
        Ok((folder.0, Found::Node { node, dir }))
    }

    /// Whether inode `ino` is the layout's.
    fn is_layout(&self, ino: u64) -> bool {
        let t = self.table.read().expect("inode table");
        t.layout.contains_key(&ino)
    }

    /// Takes a reference for the kernel to `ino` when `counted`.
    fn take(&self, ino: u64, counted: bool) {
        if !counted {
            return;
        }
        {
            let t = self.table.read().expect("inode table");
            if let Some(h) = t.held.get(&ino) {
                return h.take();
            }
        }
        self.table.write().expect("inode table").hold(ino);
    }

    /// Gives back the reference a listing counted for an entry it could not
    /// hand over (the kernel's buffer was full).
    fn untake(&self, ino: u64, counted: bool) {
        if !counted {
            return;
        }
        let t = self.table.read().expect("inode table");
        if let Some(h) = t.held.get(&ino) {
            h.untake();
        }
    }

    /// The numbers of the entries of folder `ino`, given out now if they
    /// were not yet.
    fn range(&self, ino: u64, folder: Folder, len: usize) -> Range {
        if let Some(r) = self.table.read().expect("inode table").dirs.get(&ino) {
            return *r;
        }
        let mut t = self.table.write().expect("inode table");
        if let Some(r) = t.dirs.get(&ino) {
            return *r;
        }
        let len = len as u64;
        let first = t.number(len);
        let r = Range { folder, first, len };
        t.dirs.insert(ino, r);
        t.ranges.insert(first, ino);
        r
    }

    /// Re-lists snapshots if the last check is older than `refresh_every`;
    /// a concurrent caller does not wait for a refresh under way.
    fn maybe_refresh(&self) {
        if self.opts.snapshot.is_some() {
            return;
        }
        let Ok(mut checked) = self.checked.try_lock() else {
            return;
        };
        if checked.elapsed() < self.opts.refresh_every {
            return;
        }
        if let Err(e) = self.refresh() {
            tracing::warn!("could not re-read the snapshot list: {e}");
        }
        *checked = Instant::now();
    }

    /// Re-lists the snapshot objects; when the list changed, reloads the index
    /// and rebuilds the layout. Returns whether anything changed.
    pub fn refresh(&self) -> crate::Result<bool> {
        let old = self.state();
        let listed: BTreeSet<SnapshotId> = old
            .repo
            .backend()
            .list(ObjectKind::Snapshot)?
            .into_iter()
            .filter_map(|(name, _)| name.parse().ok())
            .collect();
        if listed == old.ids {
            return Ok(false);
        }
        let known: HashMap<SnapshotId, &Arc<Snapshot>> =
            old.snaps.iter().map(|s| (s.id, s)).collect();
        let mut ids = BTreeSet::new();
        let mut snaps = Vec::with_capacity(listed.len());
        for id in listed {
            match known.get(&id) {
                Some(s) => snaps.push((*s).clone()),
                None => match old.repo.load_snapshot(&id) {
                    Ok(s) => snaps.push(Arc::new(s)),
                    Err(e) => {
                        tracing::warn!("snapshot {}: cannot be read, not shown: {e}", id.short());
                        continue;
                    }
                },
            }
            ids.insert(id);
        }
        crate::repo::sort_snapshots(&mut snaps);
        // Index files are written before the snapshots that need them, so an
        // index read after listing covers every snapshot listed.
        let repo = Arc::new(old.repo.repository().clone().load_index()?);
        let layout = layout::build(&snaps, &self.opts.time_zone);
        *self.state.write().expect("vfs state") = Arc::new(State {
            repo,
            ids,
            snaps,
            layout,
        });
        Ok(true)
    }

    /// The inode of layout entry `name` in layout folder `parent` (at
    /// `path`). A snapshot root is held whole; the known inode is kept
    /// unless the entry changed kind or snapshot (a refresh).
    fn layout_child(
        &self,
        parent: u64,
        path: &[Vec<u8>],
        name: &[u8],
        node: &VNode,
        counted: bool,
    ) -> u64 {
        let snapshot = match node {
            VNode::Snapshot(s) => Some(s),
            _ => None,
        };
        let fits = |t: &Table, ino: u64| match (snapshot, t.own.get(&ino)) {
            (Some(s), Some(own)) => own.snapshot == Some(s.id),
            (None, None) => t.layout.contains_key(&ino),
            _ => false,
        };
        let key = (parent, name.to_vec());
        {
            let t = self.table.read().expect("inode table");
            if let Some(&ino) = t.layout_names.get(&key)
                && fits(&t, ino)
            {
                if !counted {
                    return ino;
                }
                if let Some(h) = t.held.get(&ino) {
                    h.take();
                    return ino;
                }
            }
        }
        // Made and counted under one write lock, so no sweep drops it in between.
        let mut t = self.table.write().expect("inode table");
        let ino = match t.layout_names.get(&key) {
            Some(&ino) if fits(&t, ino) => ino,
            _ => {
                let ino = t.number(1);
                match snapshot {
                    Some(s) => t.add_snapshot_root(ino, parent, s, Some(name.to_vec())),
                    None => {
                        let mut path = path.to_vec();
                        path.push(name.to_vec());
                        t.layout.insert(ino, LayoutInode { parent, path });
                    }
                }
                t.layout_names.insert(key, ino);
                ino
            }
        };
        if counted {
            t.hold(ino);
        }
        ino
    }

    /// The number of `node`, entry `index` of a folder with entry numbers
    /// `range`: `first + index`, or, for non-folders with a link count above
    /// one, the number of the first name seen with the same (device, inode)
    /// (hardlinks stay hardlinks). The kernel's reference is taken by the caller.
    fn node_child(&self, range: &Range, node: &Node, index: usize, parent: u64) -> u64 {
        let ino = range.first + index as u64;
        if node.is_dir() || node.links <= 1 {
            return ino;
        }
        let link = (range.folder.view, node.device, node.inode);
        if let Some(&other) = self.table.read().expect("inode table").links.get(&link) {
            return other;
        }
        let mut t = self.table.write().expect("inode table");
        if let Some(&other) = t.links.get(&link) {
            return other;
        }
        t.number(0);
        t.own.insert(
            ino,
            Own {
                node: Arc::new(node.clone()),
                parent,
                snapshot: None,
                layout_name: None,
                link: Some(link),
            },
        );
        t.links.insert(link, ino);
        ino
    }

    /// The tree `id`: from an open folder, the tree cache, or the repository.
    fn tree(&self, repo: &IndexedRepository, id: &TreeId) -> VfsResult<Arc<PackedTree>> {
        if let Some((t, _)) = self.open_dirs.lock().expect("open folders").trees.get(id) {
            return Ok(t.clone());
        }
        if let Some(t) = self.trees.lock().expect("tree cache").get(id) {
            return Ok(t);
        }
        let bytes = repo.read_blob(BlobKind::Tree, &id.0)?;
        let tree = Arc::new(PackedTree::new(bytes, id).map_err(Error::from)?);
        self.trees_read.fetch_add(1, Ordering::Relaxed);
        let weight = tree.weight();
        self.trees
            .lock()
            .expect("tree cache")
            .insert(*id, tree.clone(), weight);
        Ok(tree)
    }

    /// Empties the tree and file caches (tests: answers after a cache miss).
    #[cfg(test)]
    fn drop_caches(&self) {
        *self.trees.lock().unwrap() = Lru::new(self.opts.tree_cache_bytes);
        *self.files.lock().unwrap() = Lru::new(FILE_MAP_BYTES);
    }

    /// How many tree blobs were read and decoded (tests: how often).
    #[cfg(test)]
    fn trees_read(&self) -> usize {
        self.trees_read.load(Ordering::Relaxed)
    }

    fn attr_of(&self, ino: u64, found: &Found, state: &State) -> VfsResult<Attr> {
        let path = match found {
            Found::Node { node, .. } => return Ok(node_attr(ino, node)),
            Found::Layout(path) => path,
        };
        let root = &state.layout;
        let (kind, perm, size, mtime) = match path.is_empty() {
            true => (FileKind::Dir, 0o555, 0, root.mtime_ns),
            false => match root.resolve(path).ok_or(VfsError::NotFound)? {
                VNode::Dir(d) => (FileKind::Dir, 0o555, 0, d.mtime_ns),
                VNode::Link(target) => {
                    (FileKind::Symlink, 0o777, target.len() as u64, root.mtime_ns)
                }
                // Snapshot roots get inodes of their own; a layout inode here is stale.
                VNode::Snapshot(_) => return Err(VfsError::NotFound),
            },
        };
        // Before the first snapshot, the layout is as old as the mount.
        let mtime = if mtime == 0 { self.started_ns } else { mtime };
        Ok(Attr {
            ino,
            kind,
            perm,
            nlink: 1,
            uid: self.opts.uid,
            gid: self.opts.gid,
            size,
            blocks: 0,
            mtime_ns: mtime,
            ctime_ns: mtime,
            rdev: 0,
            stable: false,
        })
    }

    /// Attributes of inode `ino`.
    pub fn getattr(&self, ino: u64) -> VfsResult<Attr> {
        if self.is_layout(ino) {
            self.maybe_refresh();
        }
        let (_, found) = self.find(ino)?;
        self.attr_of(ino, &found, &self.state())
    }

    /// The entry `name` in folder `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> VfsResult<Attr> {
        if self.is_layout(parent) {
            self.maybe_refresh();
        }
        let (_, found) = self.find(parent)?;
        let state = self.state();
        match &found {
            Found::Layout(path) => {
                let dir = layout_dir(&state.layout, path, parent)?;
                let child = dir.entries.get(name).ok_or(VfsError::NotFound)?;
                let ino = self.layout_child(parent, path, name, child, true);
                self.find(ino)
                    .and_then(|(_, found)| self.attr_of(ino, &found, &state))
                    .inspect_err(|_| self.untake(ino, true))
            }
            Found::Node { dir, .. } => {
                let dir = dir.ok_or(VfsError::NotDir(parent))?;
                let tree = self.tree(&state.repo, &dir.subtree)?;
                let index = tree.find(name).ok_or(VfsError::NotFound)?;
                let child = tree.node(index).map_err(Error::from)?;
                let range = self.range(parent, dir, tree.len());
                let ino = self.node_child(&range, &child, index, parent);
                self.take(ino, true);
                Ok(node_attr(ino, &child))
            }
        }
    }

    /// Opens folder `ino` for listing; returns the handle to list it with
    /// and give back with [`Vfs::releasedir`]. While open, its tree stays
    /// decoded, however large, so a listing in many calls decodes it once.
    pub fn opendir(&self, ino: u64) -> VfsResult<u64> {
        let (_, found) = self.find(ino)?;
        let Found::Node { node, dir } = found else {
            return Ok(0);
        };
        let dir = dir.ok_or(VfsError::NotDir(ino))?;
        drop(node);
        let tree = self.tree(&self.state().repo, &dir.subtree)?;
        let mut open = self.open_dirs.lock().expect("open folders");
        open.next += 1;
        let fh = open.next;
        open.handles.insert(fh, dir.subtree);
        open.trees.entry(dir.subtree).or_insert((tree, 0)).1 += 1;
        Ok(fh)
    }

    /// Closes a folder opened by [`Vfs::opendir`]; unknown handles are ignored.
    pub fn releasedir(&self, fh: u64) {
        let mut open = self.open_dirs.lock().expect("open folders");
        let Some(id) = open.handles.remove(&fh) else {
            return;
        };
        if let Some((_, n)) = open.trees.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                open.trees.remove(&id);
            }
        }
    }

    /// Lists folder `ino` from `offset` (0: the start), calling `add` for each
    /// entry, `.` and `..` first, until `add` returns true (its buffer is full;
    /// that entry was not taken).
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> VfsResult<()> {
        self.list(ino, offset, false, add)
    }

    /// [`Vfs::readdir`] for a listing that hands the kernel each entry's
    /// attributes (FUSE readdirplus): every entry taken but `.` and `..` is
    /// a reference the kernel gives back with [`Vfs::forget`].
    pub fn readdir_plus(
        &self,
        ino: u64,
        offset: u64,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> VfsResult<()> {
        self.list(ino, offset, true, add)
    }

    fn list(
        &self,
        ino: u64,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> VfsResult<()> {
        if self.is_layout(ino) {
            self.maybe_refresh();
        }
        let (parent, found) = self.find(ino)?;
        let state = self.state();
        let own = self.attr_of(ino, &found, &state)?;
        if own.kind != FileKind::Dir {
            return Err(VfsError::NotDir(ino));
        }
        if offset == 0
            && add(DirEntry {
                name: b".",
                attr: own,
                next_offset: 1,
            })
        {
            return Ok(());
        }
        if offset <= 1 {
            // The kernel holds the parent of a folder it lists; should it be
            // gone anyway, `..` shows the folder itself rather than fail.
            let attr = match self.find(parent) {
                Ok((_, p)) => self.attr_of(parent, &p, &state)?,
                Err(_) => own,
            };
            if add(DirEntry {
                name: b"..",
                attr,
                next_offset: 2,
            }) {
                return Ok(());
            }
        }
        let skip = offset.saturating_sub(2) as usize;
        match &found {
            Found::Layout(path) => {
                let dir = layout_dir(&state.layout, path, ino)?;
                for (i, (name, child)) in dir.entries.iter().enumerate().skip(skip) {
                    let cino = self.layout_child(ino, path, name, child, plus);
                    let attr = self
                        .find(cino)
                        .and_then(|(_, found)| self.attr_of(cino, &found, &state))
                        .inspect_err(|_| self.untake(cino, plus))?;
                    if add(DirEntry {
                        name,
                        attr,
                        next_offset: i as u64 + 3,
                    }) {
                        self.untake(cino, plus);
                        break;
                    }
                }
            }
            Found::Node { dir, .. } => {
                let dir = dir.ok_or(VfsError::NotDir(ino))?;
                let tree = self.tree(&state.repo, &dir.subtree)?;
                let range = self.range(ino, dir, tree.len());
                for i in skip..tree.len() {
                    let child = tree.node(i).map_err(Error::from)?;
                    let cino = self.node_child(&range, &child, i, ino);
                    if add(DirEntry {
                        name: &child.name,
                        attr: node_attr(cino, &child),
                        next_offset: i as u64 + 3,
                    }) {
                        break;
                    }
                    // Counted once taken: the number is only handed over
                    // with this reply, so no forget can come before.
                    self.take(cino, plus);
                }
            }
        }
        Ok(())
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> VfsResult<Vec<u8>> {
        match self.find(ino)?.1 {
            Found::Layout(path) => match self.state().layout.resolve(&path) {
                Some(VNode::Link(target)) => Ok(target.clone()),
                Some(_) => Err(VfsError::NotSymlink(ino)),
                None => Err(VfsError::NotFound),
            },
            Found::Node { node, .. } => match &node.kind {
                NodeKind::Symlink { target } => Ok(target.clone()),
                _ => Err(VfsError::NotSymlink(ino)),
            },
        }
    }

    /// The names of the extended attributes of `ino`, each followed by a NUL
    /// (the `listxattr` format).
    pub fn listxattr(&self, ino: u64) -> VfsResult<Vec<u8>> {
        let mut out = Vec::new();
        if let Found::Node { node, .. } = self.find(ino)?.1 {
            for x in &node.xattrs {
                out.extend_from_slice(&x.name);
                out.push(0);
            }
        }
        Ok(out)
    }

    /// The value of extended attribute `name` of `ino`.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> VfsResult<Vec<u8>> {
        match self.find(ino)?.1 {
            Found::Node { node, .. } => node
                .xattrs
                .iter()
                .find(|x| x.name == name)
                .map(|x| x.value.clone())
                .ok_or(VfsError::NoXattr),
            Found::Layout(_) => Err(VfsError::NoXattr),
        }
    }
}

fn layout_dir<'a>(root: &'a VDir, path: &[Vec<u8>], ino: u64) -> VfsResult<&'a VDir> {
    if path.is_empty() {
        return Ok(root);
    }
    match root.resolve(path) {
        Some(VNode::Dir(d)) => Ok(d),
        Some(_) => Err(VfsError::NotDir(ino)),
        None => Err(VfsError::NotFound),
    }
}

fn node_attr(ino: u64, node: &Node) -> Attr {
    let mut stored = 0u64;
    let (kind, size, rdev) = match &node.kind {
        NodeKind::Dir { .. } => (FileKind::Dir, 0, 0),
        NodeKind::File { content } => {
            stored = content
                .iter()
                .filter(|e| e.chunk.is_some())
                .fold(0u64, |n, e| n.saturating_add(e.len));
            (FileKind::File, node.size, 0)
        }
        NodeKind::Symlink { target } => (FileKind::Symlink, target.len() as u64, 0),
        NodeKind::Fifo => (FileKind::Fifo, 0, 0),
        NodeKind::CharDevice { rdev } => (FileKind::CharDevice, 0, *rdev),
        NodeKind::BlockDevice { rdev } => (FileKind::BlockDevice, 0, *rdev),
    };
    Attr {
        ino,
        kind,
        perm: node.mode & 0o7777,
        nlink: node.links.max(1),
        uid: node.uid,
        gid: node.gid,
        size,
        blocks: stored.min(node.size).div_ceil(512),
        mtime_ns: node.mtime_ns,
        ctime_ns: node.ctime_ns,
        rdev,
        stable: true,
    }
}

#[cfg(test)]
mod tests;
