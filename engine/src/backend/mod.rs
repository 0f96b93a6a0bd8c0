//! Storage backends: where repository objects live.
//!
//! # Contract
//! A backend stores immutable, whole objects under keys made of a kind (its
//! folder) and a name. The contract maps one-to-one onto S3-style object storage:
//! there is no append, no rename and no partial write.
//!
//! - [`Backend::put`] stores a whole object. When it returns `Ok`, the object is
//!   durable (it survives a crash of this machine) and readers see either nothing
//!   or all of it, never a prefix. If an object with that key already exists with
//!   the *same* bytes, `put` succeeds; with *different* bytes it fails with
//!   [`BackendError::Conflict`] and the stored object is untouched.
//! - [`Backend::get`] returns the whole object; [`Backend::get_range`] returns
//!   exactly `len` bytes at `offset`, or [`BackendError::OutOfRange`].
//! - [`Backend::list`] returns every object of a kind with its size; objects
//!   being written concurrently may or may not be listed.
//! - [`Backend::delete`] removes an object; deleting a missing object succeeds
//!   (so an interrupted prune can simply run again).
//! - [`Backend::modified`] tells when an object was written (S3's
//!   `Last-Modified`, a file's mtime), or `None` when the backend cannot say.
//!   Prune uses it to leave young packs that no index names yet alone (see
//!   `ARCHITECTURE.md`, "Prune and concurrent snapshots").
//! - [`Backend::leftovers`] lists the temporary objects that interrupted
//!   writes left behind (a killed process, a full disk): they are no objects,
//!   `list` never shows them, and nothing reads them. [`Backend::remove_leftover`]
//!   removes one. Backends whose writes leave nothing behind (S3's single PUT,
//!   memory) list none. Check reports them; prune removes those older than its
//!   grace period, since a young one may belong to a write still running.
//!
//! Implementations: [`local::LocalBackend`] (the default), [`memory::MemoryBackend`]
//! for tests, and the decorators [`Cached`] (a local copy of what a remote
//! repository is read for most), [`DryRun`], [`Throttled`] (an upload limit)
//! and [`faulty::FaultyBackend`],
//! which pass on what they do not change through [`Forward`].

pub mod cached;
mod dry_run;
pub mod faulty;
mod forward;
pub mod local;
pub mod memory;
pub mod s3;
#[doc(hidden)]
pub mod s3_test_server;
mod throttle;

pub use cached::Cached;
pub use dry_run::DryRun;
pub use forward::Forward;
pub use throttle::Throttled;

use std::sync::Arc;

use crate::error::BackendError;
use crate::repo::format::ObjectKind;

/// Address of one object: its kind and its name inside that kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: ObjectKind,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: ObjectKind, name: impl Into<String>) -> Self {
        ObjectKey {
            kind,
            name: name.into(),
        }
    }

    pub fn config() -> Self {
        ObjectKey::new(ObjectKind::Config, "config")
    }

    /// The relative path of the object: `data/<2 hex>/<name>` for packs,
    /// `config` for the config, `<kind>/<name>` otherwise.
    pub fn path(&self) -> String {
        match self.kind {
            ObjectKind::Config => "config".to_string(),
            ObjectKind::Pack => format!(
                "data/{}/{}",
                &self.name[..2.min(self.name.len())],
                self.name
            ),
            k => format!("{}/{}", k.name(), self.name),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path())
    }
}

/// A temporary object left by an interrupted write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Where it is, relative to the repository (`data/ab/.tmp-1f2e3d4c`).
    pub path: String,
    pub size: u64,
    /// When it was last written; `None` when the backend cannot tell (prune
    /// then treats it as too young to remove).
    pub modified: Option<jiff::Timestamp>,
}

impl Leftover {
    /// Whether it was last written at least `age` before `now`.
    pub fn older_than(&self, age: std::time::Duration, now: jiff::Timestamp) -> bool {
        let age = jiff::SignedDuration::try_from(age).unwrap_or(jiff::SignedDuration::MAX);
        self.modified.is_some_and(|t| now.duration_since(t) >= age)
    }
}

/// The storage contract; see the module documentation.
pub trait Backend: Send + Sync {
    /// A human-readable location, for messages (`/var/lib/pvsnap/repo`).
    fn location(&self) -> String;
    fn put(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError>;
    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError>;
    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, BackendError>;
    /// [`Backend::get_range`] into `buf`, whose content is replaced: a caller
    /// reading many ranges reuses one allocation. The default calls
    /// `get_range`; backends that can read into a buffer override it.
    fn get_range_into(
        &self,
        key: &ObjectKey,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        *buf = self.get_range(key, offset, len)?;
        Ok(())
    }
    /// Every object of `kind`, as (name, size in bytes), in no particular order.
    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>, BackendError>;
    fn delete(&self, key: &ObjectKey) -> Result<(), BackendError>;
    /// When the object was written; `Ok(None)` when the backend cannot tell,
    /// which prune treats as "too young to delete".
    fn modified(&self, _key: &ObjectKey) -> Result<Option<jiff::Timestamp>, BackendError> {
        Ok(None)
    }
    /// [`Backend::put`] of a pack that holds tree blobs. Tree packs are read
    /// whole by every snapshot (its parent's trees), `ls`, `diff` and mount,
    /// so a caching decorator ([`Cached`]) keeps a copy; every other backend
    /// stores it as any object (the default). A decorator that does not
    /// override it sends it to its own `put`.
    fn put_tree_pack(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        self.put(key, data)
    }
    /// [`Backend::get`] of a whole pack that holds tree blobs; see
    /// [`Backend::put_tree_pack`]. The default is `get`.
    fn get_tree_pack(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
        self.get(key)
    }
    /// Whether the object exists. The default asks `list`; backends override it.
    fn exists(&self, key: &ObjectKey) -> Result<bool, BackendError> {
        Ok(self.list(key.kind)?.iter().any(|(n, _)| *n == key.name))
    }
    /// Replaces a damaged copy of an object named by its content with
    /// `data`, the bytes its name stands for; the caller has checked that
    /// they hash to the name. A crash leaves the damaged copy or the new one,
    /// never neither, on backends that override it; the default deletes,
    /// then puts.
    fn replace_damaged(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        self.delete(key)?;
        self.put(key, data)
    }
    /// How many puts of packs to have in flight at a time for the best
    /// throughput: a local disk takes one (the writer thread overlaps it
    /// with reading; more would only compete for the same disk), a remote
    /// store more, since each put waits mostly on the network. Each costs a
    /// pack's worth of memory. The default is 1.
    fn parallel_puts(&self) -> usize {
        1
    }
    /// How many reads to have in flight at a time for the best throughput
    /// when reading many ranges (restore): a local disk is served well by
    /// one reader per core (the default, 1, means no more than that); a
    /// remote store by as many as its connections, since each read waits
    /// mostly on the network.
    fn parallel_gets(&self) -> usize {
        1
    }
    /// Temporary objects left by interrupted writes, in no particular order.
    /// The default (a backend whose writes leave nothing behind) lists none.
    fn leftovers(&self) -> Result<Vec<Leftover>, BackendError> {
        Ok(Vec::new())
    }
    /// Removes a leftover that [`Backend::leftovers`] listed; removing one
    /// that is already gone succeeds. A path that names no leftover (an
    /// object, or outside the repository) is refused.
    fn remove_leftover(&self, leftover: &Leftover) -> Result<(), BackendError> {
        Err(BackendError::NotALeftover {
            path: leftover.path.clone(),
        })
    }
    /// The time now on the clock that [`Backend::modified`] reads: the
    /// storage server's for object storage (its `Date`), this machine's
    /// otherwise (the default). Ages (prune's grace, stale locks) are taken
    /// on this clock, so a client whose clock is off judges them right.
    fn now(&self) -> Result<jiff::Timestamp, BackendError> {
        Ok(jiff::Timestamp::now())
    }
}

/// A shared, dynamically dispatched backend.
pub type DynBackend = Arc<dyn Backend>;

/// Checks a requested range against an object's size; shared by backends.
pub(crate) fn check_range(
    key: &ObjectKey,
    offset: u64,
    len: u64,
    size: u64,
) -> Result<(), BackendError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BackendError::OutOfRange {
            key: key.path(),
            offset,
            len,
            size,
        }),
    }
}

#[cfg(test)]
pub(crate) mod contract_tests {
    //! The written contract, as tests every backend must pass.
    use super::*;

    pub fn run(b: &dyn Backend) {
        let k = ObjectKey::new(ObjectKind::Pack, "ab".repeat(32));
        assert!(matches!(b.get(&k), Err(BackendError::NotFound { .. })));
        assert!(!b.exists(&k).unwrap());
        b.put(&k, b"hello world").unwrap();
        assert!(b.exists(&k).unwrap());
        assert_eq!(b.get(&k).unwrap(), b"hello world");
        assert_eq!(b.get_range(&k, 6, 5).unwrap(), b"world");
        assert!(matches!(
            b.get_range(&k, 6, 6),
            Err(BackendError::OutOfRange { .. })
        ));
        let mut buf = b"stale bytes from an earlier read".to_vec();
        b.get_range_into(&k, 0, 5, &mut buf).unwrap();
        assert_eq!(buf, b"hello");
        assert!(matches!(
            b.get_range_into(&k, 10, 2, &mut buf),
            Err(BackendError::OutOfRange { .. })
        ));
        // Large objects (written by other paths in some backends), with a
        // length that is no multiple of any block size.
        let big_key = ObjectKey::new(ObjectKind::Pack, "cd".repeat(32));
        let big: Vec<u8> = (0..5 * 1024 * 1024 + 1234u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        b.put(&big_key, &big).unwrap();
        assert!(b.get(&big_key).unwrap() == big);
        b.get_range_into(&big_key, 4096 * 300 + 7, 3 * 1024 * 1024, &mut buf)
            .unwrap();
        assert!(buf[..] == big[4096 * 300 + 7..][..3 * 1024 * 1024]);
        b.put(&big_key, &big).unwrap();
        let mut other = big.clone();
        *other.last_mut().unwrap() ^= 1;
        assert!(matches!(
            b.put(&big_key, &other),
            Err(BackendError::Conflict { .. })
        ));
        b.delete(&big_key).unwrap();
        // Same content again: fine. Different content: refused, original kept.
        b.put(&k, b"hello world").unwrap();
        assert!(matches!(
            b.put(&k, b"other"),
            Err(BackendError::Conflict { .. })
        ));
        assert_eq!(b.get(&k).unwrap(), b"hello world");
        let listed = b.list(ObjectKind::Pack).unwrap();
        assert_eq!(listed, vec![("ab".repeat(32), 11)]);
        assert!(b.list(ObjectKind::Index).unwrap().is_empty());
        b.delete(&k).unwrap();
        b.delete(&k).unwrap();
        assert!(b.list(ObjectKind::Pack).unwrap().is_empty());
        let cfg = ObjectKey::config();
        b.put(&cfg, b"c").unwrap();
        assert_eq!(b.get(&cfg).unwrap(), b"c");
        assert_eq!(
            b.list(ObjectKind::Config).unwrap(),
            vec![("config".to_string(), 1)]
        );
        // Whole writes leave nothing behind, and an object is no leftover.
        assert!(b.leftovers().unwrap().is_empty());
        let not_one = Leftover {
            path: "config".into(),
            size: 1,
            modified: None,
        };
        assert!(matches!(
            b.remove_leftover(&not_one),
            Err(BackendError::NotALeftover { .. })
        ));
        assert_eq!(b.get(&cfg).unwrap(), b"c");
    }
}
