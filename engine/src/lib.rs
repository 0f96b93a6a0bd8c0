//! pvsnap's engine: a content-addressed, deduplicating, compressed and
//! optionally encrypted snapshot repository.
//!
//! # Architecture
//! A repository is a set of immutable objects behind a [`backend::Backend`]:
//! `config`, `keys/*`, `data/xx/*` (pack files of blobs), `index/*`,
//! `snapshots/*`, `locks/*`. File content is cut into chunks by FastCDC, each
//! chunk named by its blake3 id, compressed with zstd, sealed when encrypted,
//! and appended to a pack. Each folder becomes a tree blob. A snapshot object
//! names the root tree. See `FORMAT.md` for the bytes and `ARCHITECTURE.md` for
//! the map.
//!
//! # Invariants
//! - Objects are written whole and never changed; a name is either absent or
//!   final. Packs and index files are named by the hash of their bytes.
//! - Order of writes in a snapshot: packs, then the index files describing them,
//!   then the snapshot object. A snapshot that exists references only blobs
//!   whose packs and index entries are durable.
//! - Nothing that a snapshot references is deleted while that snapshot exists.
//!
//! # Locking
//! | operation | lock |
//! |---|---|
//! | snapshot, restore, check, mount | shared |
//! | ls, diff, dump, stats, snapshots | none (read only: a concurrent prune can make them fail, never make them wrong) |
//! | policy set, policy remove | shared (revisions resolve races, see [`repo::policy`]) |
//! | forget, prune, repair | exclusive (`forget`/`prune --dry-run`: shared) |
//!
//! Shared locks coexist; an exclusive lock excludes every other lock. See
//! [`repo::lock`] for the protocol and stale-lock rules. Operations that delete
//! (forget, prune, repair) take a [`repo::lock::ExclusiveLock`] (or run as a
//! dry run): the type, not a check at run time, holds the rule.
//! Prune also leaves young packs that no index names alone, in case a
//! snapshot is running behind a lock that looked stale; see [`maintenance::prune`].
//!
//! # Unsafe code
//! Only [`sys`] holds `unsafe` blocks, each behind a safe function with its
//! SAFETY note; the rest of the engine does not compile with one.

#![deny(unsafe_code)]

pub mod backend;
pub mod backup;
pub mod cache;
pub mod error;
pub mod fsmeta;
#[doc(hidden)]
pub mod fuzzing;
pub mod maintenance;
pub mod repo;
pub mod restore;
pub mod snapshot;
pub mod stop;
pub mod store;
#[allow(unsafe_code)]
pub mod sys;
pub mod tree;
pub mod vfs;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod damage_tests;
// A counting global allocator (test only) is unsafe by its trait.
#[cfg(test)]
#[allow(unsafe_code)]
mod fuzz_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod maintenance_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
pub(crate) mod testutil;

pub use error::{Error, Result};
pub use repo::{IndexedRepository, InitOptions, Repository};
