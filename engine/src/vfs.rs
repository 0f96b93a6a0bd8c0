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
//! Inode numbers are handed out on first sight (lookup or listing) and never
//! reused while mounted; [`ROOT`] is 1. Each inode counts the references the
//! kernel holds: one per [`Vfs::lookup`] and per entry taken by
//! [`Vfs::readdir_plus`], given back by [`Vfs::forget`]; at zero the inode is
//! dropped (a later lookup of the same name gets a new number), so browsing
//! a million files holds only what the kernel still caches. Inodes made by a
//! plain listing, which the kernel does not count, are swept once they
//! outnumber a bound ([`VfsOptions::idle_inodes`], [`SWEEP_AT`] by default). An inode is keyed by its
//! parent inode and name, so a snapshot reached through `snapshots/` and through
//! `sources/` is two distinct trees of inodes (a folder must not have two
//! parents). Within one such tree, non-folder nodes with a link count above one
//! and the same (device, inode) share an inode number: hardlinks stay hardlinks.
//! Folders report the link count captured; the layout's folders report 1
//! ("unknown", which keeps `find` from guessing subfolder counts).
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

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;

use crate::cache::Lru;
use crate::error::Error;
use crate::repo::IndexedRepository;
use crate::repo::format::ObjectKind;
use crate::repo::id::{SnapshotId, TreeId};
use crate::snapshot::Snapshot;
use crate::tree::{Extent, Node, NodeKind, Tree};
use cache::{ChunkCache, Loader};
pub use file::{FileMap, ReadData};
use layout::{VDir, VNode};

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

/// What an inode stands for.
#[allow(
    clippy::large_enum_variant,
    reason = "inodes already live behind an Arc; most are nodes"
)]
enum What {
    /// A folder or symlink of the layout, by its path from the root.
    Layout(Vec<Vec<u8>>),
    /// An entry of a snapshot, reached through the snapshot root inode `view`.
    /// A file's extents live in `file`, not in `node`.
    Node {
        view: u64,
        snapshot: SnapshotId,
        node: Node,
        file: Option<FileMap>,
    },
}

struct Inode {
    parent: u64,
    what: What,
    /// References the kernel holds (lookups not yet forgotten). Raised
    /// under the table's read lock, checked for zero under its write lock.
    lookups: std::sync::atomic::AtomicU64,
}

/// An inode in the table, with the keys that lead to it (to drop them with it).
struct Slot {
    inode: Arc<Inode>,
    names: Vec<(u64, Vec<u8>)>,
    link: Option<(u64, u64, u64)>,
}

/// The default of [`VfsOptions::idle_inodes`].
pub const SWEEP_AT: usize = 65_536;

/// A table that held at least this many inodes is shrunk once the kernel
/// forgot three quarters of them (see [`Table::shrink_if_emptied`]).
const SHRINK_FROM: usize = 4096;

struct Table {
    inodes: HashMap<u64, Slot>,
    /// The next inode number: numbers are never reused.
    next: u64,
    /// The table's size that triggers the next sweep.
    sweep_at: usize,
    /// [`VfsOptions::idle_inodes`].
    idle: usize,
    names: HashMap<(u64, Vec<u8>), u64>,
    /// (view, device, inode) of multiply linked nodes.
    links: HashMap<(u64, u64, u64), u64>,
    /// The most inodes held since memory was last given back (see
    /// [`Table::shrink_if_emptied`]).
    peak: usize,
}

impl Table {
    fn new(root: Inode, idle: usize) -> Table {
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT,
            Slot {
                inode: Arc::new(root),
                names: vec![],
                link: None,
            },
        );
        Table {
            inodes,
            next: ROOT + 1,
            sweep_at: idle.max(1),
            idle: idle.max(1),
            names: HashMap::new(),
            links: HashMap::new(),
            peak: 1,
        }
    }

    /// Once the kernel has forgotten most inodes (the table holds under a
    /// quarter of its peak, and the peak was large), shrinks the maps to
    /// what they hold; returns whether it did, so the caller gives the
    /// freed memory back to the system once the table's lock is released.
    /// A hash map keeps its capacity when emptied, and the allocator keeps
    /// what it freed: without this, a mount stays at the size of the
    /// largest walk through it.
    fn shrink_if_emptied(&mut self) -> bool {
        if self.peak < SHRINK_FROM || self.inodes.len() * 4 > self.peak {
            return false;
        }
        self.inodes.shrink_to_fit();
        self.names.shrink_to_fit();
        self.links.shrink_to_fit();
        self.peak = self.inodes.len().max(1);
        true
    }

    /// Drops inode `ino` and the names and link that lead to it.
    fn drop_inode(&mut self, ino: u64) {
        if ino == ROOT {
            return;
        }
        if let Some(slot) = self.inodes.remove(&ino) {
            for key in slot.names {
                if self.names.get(&key) == Some(&ino) {
                    self.names.remove(&key);
                }
            }
            if let Some(l) = slot.link
                && self.links.get(&l) == Some(&ino)
            {
                self.links.remove(&l);
            }
        }
    }

    /// Drops every inode the kernel holds no reference to.
    fn sweep(&mut self) {
        let idle: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(ino, s)| **ino != ROOT && s.inode.lookups.load(Ordering::Relaxed) == 0)
            .map(|(ino, _)| *ino)
            .collect();
        for ino in idle {
            self.drop_inode(ino);
        }
        self.sweep_at = self.inodes.len() + self.idle;
    }
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
    trees: Mutex<Lru<TreeId, Arc<Tree>>>,
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
        let root = match &opts.snapshot {
            Some(s) => {
                if !s.root.is_dir() {
                    return Err(Error::Invalid(format!(
                        "snapshot {}: its root is not a folder",
                        s.id.short()
                    )));
                }
                Inode {
                    parent: ROOT,
                    what: What::Node {
                        view: ROOT,
                        snapshot: s.id,
                        node: s.root.clone(),
                        file: None,
                    },
                    lookups: Default::default(),
                }
            }
            None => Inode {
                parent: ROOT,
                what: What::Layout(vec![]),
                lookups: Default::default(),
            },
        };
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
            table: RwLock::new(Table::new(root, opts.idle_inodes)),
            trees: Mutex::new(Lru::new(opts.tree_cache_bytes)),
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
        self.table.read().expect("inode table").inodes.len()
    }

    /// How many inodes the table has room for without growing.
    #[cfg(test)]
    fn inode_capacity(&self) -> usize {
        self.table.read().expect("inode table").inodes.capacity()
    }

    /// The kernel gives back `n` references to `ino` (FUSE forget); at zero
    /// the inode is dropped. Unknown inodes are ignored.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut t = self.table.write().expect("inode table");
        let Some(slot) = t.inodes.get(&ino) else {
            return;
        };
        let left = slot.inode.lookups.load(Ordering::Relaxed).saturating_sub(n);
        slot.inode.lookups.store(left, Ordering::Relaxed);
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

    fn inode(&self, ino: u64) -> VfsResult<Arc<Inode>> {
        let t = self.table.read().expect("inode table");
        t.inodes
            .get(&ino)
            .map(|s| s.inode.clone())
            .ok_or(VfsError::UnknownInode(ino))
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

    /// The inode for `name` in `parent`, made by `make(ino)` when new or when
    /// the known one no longer `fits`. `link` is the hardlink key, if any.
    /// `counted`: the kernel takes a reference to it (a lookup), raised here
    /// under the table's lock so that no sweep drops it in between.
    fn intern(
        &self,
        parent: u64,
        name: &[u8],
        make: impl FnOnce(u64) -> What,
        fits: impl Fn(&What) -> bool,
        link: Option<(u64, u64, u64)>,
        counted: bool,
    ) -> (u64, Arc<Inode>) {
        let key = (parent, name.to_vec());
        let count = |inode: &Arc<Inode>| {
            if counted {
                inode.lookups.fetch_add(1, Ordering::Relaxed);
            }
            inode.clone()
        };
        {
            let t = self.table.read().expect("inode table");
            if let Some(slot) = t.names.get(&key).and_then(|ino| t.inodes.get(ino))
                && fits(&slot.inode.what)
            {
                return (t.names[&key], count(&slot.inode));
            }
        }
        let mut t = self.table.write().expect("inode table");
        if let Some(&ino) = t.names.get(&key)
            && let Some(slot) = t.inodes.get(&ino)
            && fits(&slot.inode.what)
        {
            return (ino, count(&slot.inode));
        }
        if let Some(&ino) = link.as_ref().and_then(|l| t.links.get(l))
            && t.inodes.contains_key(&ino)
        {
            t.names.insert(key.clone(), ino);
            let slot = t.inodes.get_mut(&ino).expect("linked inode");
            slot.names.push(key);
            return (ino, count(&slot.inode));
        }
        if t.inodes.len() >= t.sweep_at {
            t.sweep();
        }
        let ino = t.next;
        t.next += 1;
        let inode = Arc::new(Inode {
            parent,
            what: make(ino),
            lookups: std::sync::atomic::AtomicU64::new(u64::from(counted)),
        });
        t.inodes.insert(
            ino,
            Slot {
                inode: inode.clone(),
                names: vec![key.clone()],
                link,
            },
        );
        t.names.insert(key, ino);
        if let Some(l) = link {
            t.links.insert(l, ino);
        }
        t.peak = t.peak.max(t.inodes.len());
        (ino, inode)
    }

    fn layout_child(
        &self,
        parent: u64,
        path: &[Vec<u8>],
        name: &[u8],
        node: &VNode,
        counted: bool,
    ) -> (u64, Arc<Inode>) {
        match node {
            VNode::Snapshot(s) => self.intern(
                parent,
                name,
                |ino| What::Node {
                    view: ino,
                    snapshot: s.id,
                    node: s.root.clone(),
                    file: None,
                },
                |w| matches!(w, What::Node { snapshot, .. } if *snapshot == s.id),
                None,
                counted,
            ),
            _ => self.intern(
                parent,
                name,
                |_| {
                    let mut p = path.to_vec();
                    p.push(name.to_vec());
                    What::Layout(p)
                },
                |w| matches!(w, What::Layout(_)),
                None,
                counted,
            ),
        }
    }

    fn node_child(
        &self,
        parent: u64,
        view: u64,
        snapshot: SnapshotId,
        node: &Node,
        counted: bool,
    ) -> (u64, Arc<Inode>) {
        let link = (!node.is_dir() && node.links > 1).then_some((view, node.device, node.inode));
        self.intern(
            parent,
            &node.name,
            |_| {
                let mut node = node.clone();
                let file = match &mut node.kind {
                    NodeKind::File { content } => Some(FileMap::new(std::mem::take(content))),
                    _ => None,
                };
                What::Node {
                    view,
                    snapshot,
                    node,
                    file,
                }
            },
            |_| true,
            link,
            counted,
        )
    }

    fn tree(&self, repo: &IndexedRepository, id: &TreeId) -> VfsResult<Arc<Tree>> {
        if let Some(t) = self.trees.lock().expect("tree cache").get(id) {
            return Ok(t);
        }
        let tree = Arc::new(repo.read_tree(id)?);
        let weight = tree
            .nodes
            .iter()
            .map(|n| {
                let content = match &n.kind {
                    NodeKind::File { content } => content.len() * std::mem::size_of::<Extent>(),
                    _ => 0,
                };
                std::mem::size_of::<Node>()
                    + n.name.len()
                    + content
                    + n.xattrs
                        .iter()
                        .map(|x| x.name.len() + x.value.len() + 48)
                        .sum::<usize>()
            })
            .sum::<usize>()
            + 64;
        self.trees
            .lock()
            .expect("tree cache")
            .insert(*id, tree.clone(), weight);
        Ok(tree)
    }

    fn attr_of(&self, ino: u64, inode: &Inode, state: &State) -> VfsResult<Attr> {
        let path = match &inode.what {
            What::Node { node, file, .. } => return Ok(node_attr(ino, node, file.as_ref())),
            What::Layout(path) => path,
        };
        let root = &state.layout;
        let (kind, perm, size, mtime) = match path.is_empty() {
            true => (FileKind::Dir, 0o555, 0, root.mtime_ns),
            false => match root.resolve(path).ok_or(VfsError::NotFound)? {
                VNode::Dir(d) => (FileKind::Dir, 0o555, 0, d.mtime_ns),
                VNode::Link(target) => {
                    (FileKind::Symlink, 0o777, target.len() as u64, root.mtime_ns)
                }
                // Snapshot roots get `What::Node` inodes; a layout inode here is stale.
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
        let inode = self.inode(ino)?;
        if matches!(inode.what, What::Layout(_)) {
            self.maybe_refresh();
        }
        self.attr_of(ino, &inode, &self.state())
    }

    /// The entry `name` in folder `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> VfsResult<Attr> {
        let p = self.inode(parent)?;
        match &p.what {
            What::Layout(path) => {
                self.maybe_refresh();
                let state = self.state();
                let dir = layout_dir(&state.layout, path, parent)?;
                let child = dir.entries.get(name).ok_or(VfsError::NotFound)?;
                let (ino, inode) = self.layout_child(parent, path, name, child, true);
                self.attr_of(ino, &inode, &state)
                    .inspect_err(|_| untake(&inode, true))
            }
            What::Node {
                view,
                snapshot,
                node,
                ..
            } => {
                let NodeKind::Dir { subtree } = &node.kind else {
                    return Err(VfsError::NotDir(parent));
                };
                let state = self.state();
                let tree = self.tree(&state.repo, subtree)?;
                let child = tree.find(name).ok_or(VfsError::NotFound)?;
                let (ino, inode) = self.node_child(parent, *view, *snapshot, child, true);
                self.attr_of(ino, &inode, &state)
                    .inspect_err(|_| untake(&inode, true))
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
        let inode = self.inode(ino)?;
        if matches!(inode.what, What::Layout(_)) {
            self.maybe_refresh();
        }
        let state = self.state();
        let own = self.attr_of(ino, &inode, &state)?;
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
            let attr = match self.inode(inode.parent) {
                Ok(parent) => self.attr_of(inode.parent, &parent, &state)?,
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
        match &inode.what {
            What::Layout(path) => {
                let dir = layout_dir(&state.layout, path, ino)?;
                for (i, (name, child)) in dir.entries.iter().enumerate().skip(skip) {
                    let (cino, cinode) = self.layout_child(ino, path, name, child, plus);
                    let attr = self
                        .attr_of(cino, &cinode, &state)
                        .inspect_err(|_| untake(&cinode, plus))?;
                    if add(DirEntry {
                        name,
                        attr,
                        next_offset: i as u64 + 3,
                    }) {
                        untake(&cinode, plus);
                        break;
                    }
                }
            }
            What::Node {
                view,
                snapshot,
                node,
                ..
            } => {
                let NodeKind::Dir { subtree } = &node.kind else {
                    return Err(VfsError::NotDir(ino));
                };
                let tree = self.tree(&state.repo, subtree)?;
                for (i, child) in tree.nodes.iter().enumerate().skip(skip) {
                    let (cino, cinode) = self.node_child(ino, *view, *snapshot, child, plus);
                    let attr = self
                        .attr_of(cino, &cinode, &state)
                        .inspect_err(|_| untake(&cinode, plus))?;
                    if add(DirEntry {
                        name: &child.name,
                        attr,
                        next_offset: i as u64 + 3,
                    }) {
                        untake(&cinode, plus);
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> VfsResult<Vec<u8>> {
        let inode = self.inode(ino)?;
        match &inode.what {
            What::Layout(path) => match self.state().layout.resolve(path) {
                Some(VNode::Link(target)) => Ok(target.clone()),
                Some(_) => Err(VfsError::NotSymlink(ino)),
                None => Err(VfsError::NotFound),
            },
            What::Node { node, .. } => match &node.kind {
                NodeKind::Symlink { target } => Ok(target.clone()),
                _ => Err(VfsError::NotSymlink(ino)),
            },
        }
    }

    /// The names of the extended attributes of `ino`, each followed by a NUL
    /// (the `listxattr` format).
    pub fn listxattr(&self, ino: u64) -> VfsResult<Vec<u8>> {
        let inode = self.inode(ino)?;
        let mut out = Vec::new();
        if let What::Node { node, .. } = &inode.what {
            for x in &node.xattrs {
                out.extend_from_slice(&x.name);
                out.push(0);
            }
        }
        Ok(out)
    }

    /// The value of extended attribute `name` of `ino`.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> VfsResult<Vec<u8>> {
        let inode = self.inode(ino)?;
        match &inode.what {
            What::Node { node, .. } => node
                .xattrs
                .iter()
                .find(|x| x.name == name)
                .map(|x| x.value.clone())
                .ok_or(VfsError::NoXattr),
            What::Layout(_) => Err(VfsError::NoXattr),
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

fn node_attr(ino: u64, node: &Node, file: Option<&FileMap>) -> Attr {
    let (kind, size, rdev) = match &node.kind {
        NodeKind::Dir { .. } => (FileKind::Dir, 0, 0),
        NodeKind::File { .. } => (FileKind::File, node.size, 0),
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
        blocks: file.map_or(0, |f| f.stored_len().min(node.size).div_ceil(512)),
        mtime_ns: node.mtime_ns,
        ctime_ns: node.ctime_ns,
        rdev,
        stable: true,
    }
}

#[cfg(test)]
mod tests;

/// Gives back the reference a listing counted for an entry it could not
/// hand over (the kernel's buffer was full).
fn untake(inode: &Inode, counted: bool) {
    if counted {
        inode.lookups.fetch_sub(1, Ordering::Relaxed);
    }
}
