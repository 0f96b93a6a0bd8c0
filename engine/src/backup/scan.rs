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
//! snapshot itself says what it could not read.

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
            let Ok(meta) = ent.metadata() else {
                continue;
            };
            if meta.is_dir() {
                if !one_file_system || meta.dev() == root_dev {
                    todo.push((ent.path(), child_rel));
                }
            } else if meta.is_file() {
                progress.scanned_files.fetch_add(1, Ordering::Relaxed);
                progress
                    .scanned_bytes
                    .fetch_add(meta.len(), Ordering::Relaxed);
            }
        }
    }
    progress.scan_done.store(true, Ordering::Release);
}
