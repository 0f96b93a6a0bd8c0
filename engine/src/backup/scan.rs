//! The size pre-scan: a walk of metadata only, alongside the snapshot, so
//! that a progress display knows the total before the data is read.
//!
//! It reads folders and the metadata of their entries (no content, no
//! extended attributes), with the snapshot's excludes and one-file-system
//! rule, and adds to [`Progress::scanned_files`] and
//! [`Progress::scanned_bytes`]; [`Progress::scan_done`] is set when it has
//! seen everything. Memory: the folders found but not yet listed (a depth-
//! first walk keeps them few), never a list of files. It stops early when
//! `stop` is set (the snapshot ended first) and never records issues: the
//! snapshot itself says what it could not read. It runs at the lowest
//! priority, on time the snapshot's workers leave.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::tree::filter::Excludes;

use super::pipeline::Progress;

/// Counts the files and bytes below `root` into `progress`.
pub(super) fn scan(
    root: &Path,
    excludes: &Excludes,
    one_file_system: bool,
    root_dev: u64,
    progress: &Progress,
    stop: &AtomicBool,
) {
    // The snapshot's own workers come first: the scan takes idle time.
    crate::sys::host::lower_thread_priority();
    // (absolute path, path relative to the root) of folders to list.
    let mut todo: Vec<(PathBuf, PathBuf)> = vec![(root.to_path_buf(), PathBuf::new())];
    while let Some((dir, rel)) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for ent in entries.flatten() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let name = ent.file_name();
            let child_rel = rel.join(&name);
            if !excludes.is_empty() && excludes.matches(&child_rel, &name) {
                continue;
            }
            // The entry's type comes with the listing: only files and (for
            // one file system) folders need a stat.
            let Ok(kind) = ent.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !one_file_system || ent.metadata().is_ok_and(|m| m.dev() == root_dev) {
                    todo.push((ent.path(), child_rel));
                }
            } else if kind.is_file() {
                let Ok(meta) = ent.metadata() else {
                    continue;
                };
                progress.scanned_files.fetch_add(1, Ordering::Relaxed);
                progress
                    .scanned_bytes
                    .fetch_add(meta.len(), Ordering::Relaxed);
            }
        }
    }
    progress.scan_done.store(true, Ordering::Release);
}
