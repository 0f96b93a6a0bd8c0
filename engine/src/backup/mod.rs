//! The snapshot pipeline.
//!
//! [`backup`] is the whole pipeline in one place, as named stages:
//!
//! 1. **walk**: read each folder, sort its entries by name, drop excluded ones;
//! 2. **compare with parent**: a file whose size, mtime, ctime and inode equal
//!    the parent snapshot's entry (and whose chunks are all indexed) keeps its
//!    chunk list and is not read;
//! 3. **read / chunk / hash** (parallel): other files are read in large blocks,
//!    holes skipped, cut by FastCDC and hashed with blake3;
//! 4. **dedup**: chunks already in the index, or being stored by another
//!    thread, are skipped;
//! 5. **compress / encrypt**: zstd, then XChaCha20-Poly1305 when encrypted;
//! 6. **pack**: blobs are appended to an in-memory pack (data and trees in
//!    separate packs); a full pack is written by the thread that filled it;
//! 7. **index**: index checkpoints name the packs stored so far every few
//!    hundred MiB or minutes while the walk runs; after it, one more names
//!    the rest (a run stopped on request writes it too, then returns
//!    [`Error::Interrupted`](crate::error::Error::Interrupted));
//! 8. **commit**: the snapshot object is written last.
//!
//! [`store`] runs stages 1-7 and returns a [`PendingSnapshot`]; its
//! [`commit`](PendingSnapshot::commit) is stage 8. [`backup`] does both.
//!
//! Folders and files are processed in parallel by a rayon pool; each folder's
//! tree is written once all its children are done, so trees are written after
//! the blobs they reference.
//!
//! The stages live in rooms of their own: [`pipeline`] runs them in order
//! and keeps the counters, `walker` walks folders and compares with the
//! parent, `chunker` reads and cuts file content, and
//! [`crate::store::packer`] compresses, encrypts, packs and stores.
//!
//! When a progress display asks for it ([`Progress::want_scan`]), `scan`
//! counts the files and bytes to expect on a thread of its own, reading
//! metadata only, while the stages run.

mod chunker;
pub mod pipeline;
mod scan;
mod seen;
mod walker;

pub use crate::store::packer::Checkpoints;
pub use pipeline::{
    BackupOptions, BackupOutcome, PendingSnapshot, Progress, Stop, backup, find_parent, store,
};

#[cfg(test)]
mod tests;
