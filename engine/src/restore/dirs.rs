//! The folders of a restore, reached only by descriptor from the target's.
//!
//! Every folder the plan makes or enters gets a slot here: its parent slot
//! and its name (one validated component). Entries are created, opened and
//! removed relative to their folder's [`Dir`], which is opened step by step
//! from the target with `O_DIRECTORY|O_NOFOLLOW` (see [`crate::sys::dir`]).
//! So a folder that is swapped for a symlink while the restore runs makes
//! the entries below it fail with an error naming the folder, and nothing is
//! written where the symlink points.
//!
//! Open folders are kept in a small cache so that files of one folder,
//! restored one after the other, do not re-walk the chain; the cache is
//! bounded so that a restore of many folders stays far from the limit on
//! open descriptors.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::sys::dir::Dir;
pub(super) use crate::sys::dir::EntryKind;

/// Most folders kept open at once by the cache.
const CACHED: usize = 256;

/// Index of the target itself.
pub(super) const TARGET: usize = 0;

struct Slot {
    parent: usize,
    name: Vec<u8>,
    path: PathBuf,
    /// Exists as a real folder (made or checked by this restore).
    made: bool,
}

pub(super) struct Dirs {
    slots: Vec<Slot>,
    /// `None`: the target does not exist (a dry run, which makes nothing).
    target: Option<Arc<Dir>>,
    cache: Mutex<HashMap<usize, Arc<Dir>>>,
}

/// The error for a folder that could not be entered without following a
/// symlink (or that is no longer a folder).
fn enter_error(path: &Path, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => Error::Unsafe {
            path: path.display().to_string(),
            detail: "is not a folder any more (a symlink or file took its place during the restore); nothing is written through it: check who changes the target, then restore again".into(),
        },
        _ => Error::io(path, "open folder", e),
    }
}

impl Dirs {
    /// Opens the target folder (which must exist; a symlink is refused).
    pub fn new(target: &Path) -> Result<Dirs> {
        let dir = Dir::open(target).map_err(|e| {
            let link = std::fs::symlink_metadata(target).is_ok_and(|m| m.is_symlink());
            match e.raw_os_error() {
                Some(libc::ELOOP | libc::ENOTDIR) if link => Error::Unsafe {
                    path: target.display().to_string(),
                    detail: "the restore target is a symlink; pass the folder it points to".into(),
                },
                Some(libc::ENOTDIR) => Error::Unsafe {
                    path: target.display().to_string(),
                    detail: "the restore target is not a folder; pass a folder (new or existing)"
                        .into(),
                },
                _ => Error::io(target, "open target folder", e),
            }
        })?;
        Ok(Dirs {
            slots: vec![Slot {
                parent: TARGET,
                name: Vec::new(),
                path: target.to_path_buf(),
                made: true,
            }],
            target: Some(Arc::new(dir)),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The folders of a target that does not exist, for a dry run: every
    /// folder fails to open, as not there.
    pub fn absent(target: &Path) -> Dirs {
        Dirs {
            slots: vec![Slot {
                parent: TARGET,
                name: Vec::new(),
                path: target.to_path_buf(),
                made: true,
            }],
            target: None,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for folder `name` in folder `parent`; `made` when it was just
    /// made a real folder (otherwise [`Dirs::ensure`] makes it on demand).
    pub fn add(&mut self, parent: usize, name: &[u8], made: bool) -> usize {
        let path = self.slots[parent].path.join(OsStr::from_bytes(name));
        self.slots.push(Slot {
            parent,
            name: name.to_vec(),
            path,
            made,
        });
        self.slots.len() - 1
    }

    pub fn path(&self, dir: usize) -> &Path {
        &self.slots[dir].path
    }

    /// The folder's open descriptor, opened step by step from the target.
    pub fn open(&self, dir: usize) -> Result<Arc<Dir>> {
        if dir == TARGET {
            return self.target.clone().ok_or_else(|| {
                Error::io(
                    self.path(TARGET),
                    "open folder",
                    std::io::ErrorKind::NotFound.into(),
                )
            });
        }
        if let Some(d) = self.cache.lock().expect("dir cache").get(&dir) {
            return Ok(d.clone());
        }
        let slot = &self.slots[dir];
        let parent = self.open(slot.parent)?;
        let d = Arc::new(
            parent
                .open_dir(OsStr::from_bytes(&slot.name))
                .map_err(|e| enter_error(&slot.path, e))?,
        );
        let mut cache = self.cache.lock().expect("dir cache");
        if cache.len() >= CACHED {
            cache.clear();
        }
        cache.insert(dir, d.clone());
        Ok(d)
    }

    /// Makes sure the folder and those above it exist as real folders.
    pub fn ensure(&mut self, dir: usize) -> Result<()> {
        if self.slots[dir].made {
            return Ok(());
        }
        let parent = self.slots[dir].parent;
        self.ensure(parent)?;
        let d = self.open(parent)?;
        let slot = &self.slots[dir];
        ensure_dir(&d, &slot.name, &slot.path)?;
        self.slots[dir].made = true;
        Ok(())
    }
}

/// Removes whatever is at `name` in `dir` (a folder with its content, a
/// symlink itself), staying below `dir`.
pub(super) fn remove_existing(dir: &Dir, name: &[u8], path: &Path) -> Result<()> {
    dir.remove_all(OsStr::from_bytes(name))
        .map_err(|e| Error::io(path, "replace", e))
}

/// Makes `name` in `dir` a real folder, replacing a symlink or file there.
pub(super) fn ensure_dir(dir: &Dir, name: &[u8], path: &Path) -> Result<()> {
    let name = OsStr::from_bytes(name);
    match dir.entry(name).map_err(|e| Error::io(path, "inspect", e))? {
        Some(e) if e.kind == EntryKind::Dir => return Ok(()),
        Some(_) => dir
            .remove_file(name)
            .map_err(|e| Error::io(path, "replace", e))?,
        None => {}
    }
    dir.create_dir(name, 0o700)
        .map_err(|e| Error::io(path, "create folder", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_empty(p: &Path) -> bool {
        std::fs::read_dir(p).unwrap().next().is_none()
    }

    /// What restore does for a file in `d/`: open the folder by descriptor
    /// from the target, then create the file in it.
    fn write_in(dirs: &Dirs, dir: usize, name: &str) -> Result<()> {
        let f = dirs
            .open(dir)?
            .open_file(OsStr::new(name), libc::O_WRONLY | libc::O_CREAT, 0o600)
            .map_err(|e| Error::io(dirs.path(dir), "create", e))?;
        std::io::Write::write_all(&mut &f, b"payload").unwrap();
        Ok(())
    }

    #[test]
    fn a_folder_swapped_for_a_symlink_before_it_is_opened_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let (target, outside) = (base.path().join("t"), base.path().join("outside"));
        std::fs::create_dir_all(target.join("d/e")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        let mut dirs = Dirs::new(&target).unwrap();
        let d = dirs.add(TARGET, b"d", true);
        let e = dirs.add(d, b"e", true);
        // The swap: `d` becomes a symlink to a folder outside (with an `e`).
        std::fs::create_dir(outside.join("e")).unwrap();
        std::fs::rename(target.join("d"), target.join("d.old")).unwrap();
        std::os::unix::fs::symlink(&outside, target.join("d")).unwrap();
        for dir in [d, e] {
            let err = write_in(&dirs, dir, "f").unwrap_err();
            assert!(
                matches!(&err, Error::Unsafe { path, .. } if path.ends_with("t/d")),
                "names the swapped folder: {err}"
            );
            assert!(err.to_string().contains("not a folder any more"), "{err}");
        }
        assert!(is_empty(&outside.join("e")), "nothing written outside");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
    }

    #[test]
    fn a_folder_swapped_after_it_was_opened_keeps_receiving_inside_the_target() {
        let base = tempfile::tempdir().unwrap();
        let (target, outside) = (base.path().join("t"), base.path().join("outside"));
        std::fs::create_dir_all(target.join("d")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        let mut dirs = Dirs::new(&target).unwrap();
        let d = dirs.add(TARGET, b"d", true);
        write_in(&dirs, d, "first").unwrap();
        std::fs::rename(target.join("d"), target.join("d.old")).unwrap();
        std::os::unix::fs::symlink(&outside, target.join("d")).unwrap();
        // The descriptor held for `d` is the real folder, now `d.old`.
        write_in(&dirs, d, "second").unwrap();
        assert!(is_empty(&outside), "nothing written outside");
        assert_eq!(
            std::fs::read(target.join("d.old/second")).unwrap(),
            b"payload"
        );
    }

    #[test]
    fn removing_a_folder_never_follows_a_symlink_inside_it() {
        let base = tempfile::tempdir().unwrap();
        let (target, outside) = (base.path().join("t"), base.path().join("outside"));
        std::fs::create_dir_all(target.join("d/deeper")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        std::os::unix::fs::symlink(&outside, target.join("d/link")).unwrap();
        std::os::unix::fs::symlink(&outside, target.join("d/deeper/link")).unwrap();
        let dirs = Dirs::new(&target).unwrap();
        remove_existing(&dirs.open(TARGET).unwrap(), b"d", &target.join("d")).unwrap();
        assert!(!target.join("d").exists());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"k");
    }

    #[test]
    fn a_target_that_is_a_symlink_is_refused() {
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir(base.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", base.path().join("link")).unwrap();
        let Err(err) = Dirs::new(&base.path().join("link")) else {
            panic!("a symlink target was opened");
        };
        assert!(err.to_string().contains("is a symlink"), "{err}");
    }
}
