//! What the file system under a repository can do, found out once.
//!
//! A NAS share mounted on the host (NFS, SMB/CIFS) or a plain FAT disk is a
//! local folder to pvsnap, but may lack what the local backend uses on
//! ext4: hard links (to place a finished object without replacing one),
//! `O_DIRECT`, fsync on folders, and permission bits. [`Abilities::probe`]
//! tries each once, with temporary files in the repository root, before
//! the first write; the backend then uses what works and falls back where
//! it does not. The put contract never changes: an object appears whole or
//! not at all, and is never replaced by different bytes.
//!
//! Placing a finished temporary file at its name without replacing one,
//! in order of preference ([`Place`]):
//! 1. a hard link to the name (fails if the name exists);
//! 2. `renameat2` with `RENAME_NOREPLACE` (the same promise, by rename);
//! 3. a claim: the writer creates `.tmp-claim-<name>` with `O_EXCL` (atomic
//!    on NFSv3 and later and on SMB), looks whether the name exists, renames
//!    the file into place, and removes the claim. A second writer of the
//!    same name waits while the claim exists and then compares; a claim
//!    older than [`CLAIM_WAIT`] is taken as left by a killed writer.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use super::TMP_PREFIX;

/// How a finished temporary file is put at its object's name; see the
/// module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Link,
    RenameNoReplace,
    Claim,
}

/// What the repository's file system allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abilities {
    pub place: Place,
    /// `O_DIRECT` opens work.
    pub direct: bool,
    /// Folders can be fsynced.
    pub dir_sync: bool,
    /// Permission bits can be set (FAT cannot: the mount options decide).
    pub chmod: bool,
}

/// How long a writer waits for another's claim on a name before it takes
/// the claim as left behind by a killed process.
#[cfg(not(test))]
pub const CLAIM_WAIT: Duration = Duration::from_secs(30);
#[cfg(test)]
pub const CLAIM_WAIT: Duration = Duration::from_millis(500);

impl Abilities {
    /// Everything a local Linux file system offers.
    pub const FULL: Abilities = Abilities {
        place: Place::Link,
        direct: true,
        dir_sync: true,
        chmod: true,
    };

    /// Tries each ability in `dir` with temporary files, removed again.
    /// `None` when `dir` cannot be written at all (missing, read-only): the
    /// caller assumes [`Abilities::FULL`] for now and probes again later.
    pub fn probe(dir: &Path, file_mode: u32) -> Option<Abilities> {
        let name = |what: &str| {
            dir.join(format!(
                "{TMP_PREFIX}probe-{what}-{}",
                crate::repo::id::Id::random().short()
            ))
        };
        let (a, b, c) = (name("a"), name("b"), name("c"));
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&a)
            .ok()?;
        let chmod = f
            .set_permissions(fs::Permissions::from_mode(file_mode))
            .is_ok()
            && f.metadata()
                .is_ok_and(|m| m.permissions().mode() & 0o777 == file_mode);
        drop(f);
        let direct = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&a)
            .is_ok();
        let dir_sync = File::open(dir).and_then(|d| d.sync_all()).is_ok();
        let place = if fs::hard_link(&a, &b).is_ok() {
            Place::Link
        } else if crate::sys::io::rename_noreplace(&a, &b).is_ok() {
            // Renamed; does it also refuse an existing name?
            let refused = File::create(&c).is_ok()
                && crate::sys::io::rename_noreplace(&c, &b)
                    .is_err_and(|e| e.kind() == ErrorKind::AlreadyExists);
            if refused {
                Place::RenameNoReplace
            } else {
                Place::Claim
            }
        } else {
            Place::Claim
        };
        for p in [&a, &b, &c] {
            let _ = fs::remove_file(p);
        }
        Some(Abilities {
            place,
            direct,
            dir_sync,
            chmod,
        })
    }

    /// What is missing, for the log; `None` when nothing is.
    pub fn missing(&self) -> Option<String> {
        let mut out = Vec::new();
        match self.place {
            Place::Link => {}
            Place::RenameNoReplace => out.push("hard links (objects are renamed into place, never over another)"),
            Place::Claim => out.push("hard links and rename without replace (objects are placed under an exclusive claim file)"),
        }
        if !self.direct {
            out.push("O_DIRECT");
        }
        if !self.dir_sync {
            out.push("fsync on folders (the share's own write-through is relied on)");
        }
        if !self.chmod {
            out.push("permission bits (the mount options decide them)");
        }
        (!out.is_empty()).then(|| out.join(", "))
    }
}

/// Puts the finished temporary file `tmp` at `path` unless something is
/// there already: `Ok(true)` when placed, `Ok(false)` when `path` exists
/// (the caller compares its content).
pub fn place(how: Place, tmp: &Path, path: &Path) -> io::Result<bool> {
    let exists = |r: io::Result<()>| match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    };
    match how {
        Place::Link => exists(fs::hard_link(tmp, path)),
        Place::RenameNoReplace => exists(crate::sys::io::rename_noreplace(tmp, path)),
        Place::Claim => place_claimed(tmp, path),
    }
}

fn place_claimed(tmp: &Path, path: &Path) -> io::Result<bool> {
    let name = path
        .file_name()
        .expect("objects have a name")
        .to_string_lossy();
    let claim = path.with_file_name(format!("{TMP_PREFIX}claim-{name}"));
    let step = Duration::from_millis(20);
    let mut waited = Duration::ZERO;
    let mut broke_one = false;
    loop {
        match OpenOptions::new().write(true).create_new(true).open(&claim) {
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                if path.exists() {
                    return Ok(false); // the other writer placed it
                }
                if waited >= CLAIM_WAIT {
                    if broke_one {
                        return Err(io::Error::new(
                            ErrorKind::TimedOut,
                            format!("{} stays claimed by another writer", claim.display()),
                        ));
                    }
                    tracing::warn!(
                        "{}: claimed for {}s and not placed; taken as left by a killed writer",
                        claim.display(),
                        CLAIM_WAIT.as_secs()
                    );
                    let _ = fs::remove_file(&claim);
                    broke_one = true;
                    waited = Duration::ZERO;
                    continue;
                }
                std::thread::sleep(step);
                waited += step;
            }
            Err(e) => return Err(e),
        }
    }
    let placed = if path.exists() {
        Ok(false)
    } else {
        fs::rename(tmp, path).map(|()| true)
    };
    let _ = fs::remove_file(&claim);
    placed
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::backend::{Backend, ObjectKey};
    use crate::error::BackendError;
    use crate::repo::format::ObjectKind;

    /// Two writers (each its own backend, as two processes would have) put
    /// the same names at once: equal bytes both succeed, different bytes
    /// leave exactly one winner and its bytes; a reader meanwhile sees
    /// whole objects or nothing.
    pub(crate) fn racing_writers(open: &(dyn Fn() -> LocalBackend + Sync)) {
        let body = |writer: u8, i: usize| {
            let mut v = vec![writer; 200_000 + i];
            v[0] = i as u8;
            v
        };
        let keys: Vec<ObjectKey> = (0..16)
            .map(|i| ObjectKey::new(ObjectKind::Snapshot, format!("{i:02x}").repeat(32)))
            .collect();
        let wins = std::sync::Mutex::new(vec![Vec::new(); keys.len()]);
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let b = open();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    for (i, k) in keys.iter().enumerate() {
                        if let Ok(got) = b.get(k) {
                            assert!(
                                got == body(1, i) || got == body(2, i),
                                "a reader saw {} bytes of {k}",
                                got.len()
                            );
                        }
                    }
                }
            });
            let writers: Vec<_> = [1u8, 2]
                .into_iter()
                .map(|w| {
                    let (keys, wins) = (&keys, &wins);
                    scope.spawn(move || {
                        let b = open();
                        for (i, k) in keys.iter().enumerate() {
                            match b.put(k, &body(w, i)) {
                                Ok(()) => wins.lock().unwrap()[i].push(w),
                                Err(BackendError::Conflict { .. }) => {}
                                Err(e) => panic!("{k}: {e}"),
                            }
                            // The same bytes again: always fine.
                            let same = ObjectKey::new(ObjectKind::Index, k.name.clone());
                            b.put(&same, &body(0, i)).unwrap();
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().unwrap();
        });
        let b = open();
        for (i, k) in keys.iter().enumerate() {
            let won = &wins.lock().unwrap()[i];
            assert_eq!(won.len(), 1, "{k}: winners {won:?}");
            assert_eq!(b.get(k).unwrap(), body(won[0], i));
        }
        assert!(b.leftovers().unwrap().is_empty(), "{:?}", b.leftovers());
    }

    #[test]
    fn a_claim_left_by_a_killed_writer_is_taken_over_after_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let abilities = Abilities {
            place: Place::Claim,
            ..Abilities::FULL
        };
        let b = LocalBackend::new(dir.path()).with_abilities(abilities);
        b.create_layout().unwrap();
        let k = ObjectKey::new(ObjectKind::Snapshot, "ab".repeat(32));
        let claim = dir
            .path()
            .join(format!("snapshots/{TMP_PREFIX}claim-{}", k.name));
        fs::write(&claim, b"").unwrap();
        assert_eq!(b.leftovers().unwrap().len(), 1, "a claim is a leftover");
        let start = std::time::Instant::now();
        b.put(&k, b"snapshot").unwrap();
        assert!(start.elapsed() >= CLAIM_WAIT, "it waited for the claim");
        assert_eq!(b.get(&k).unwrap(), b"snapshot");
        assert!(!claim.exists());
        // A claimed name that appears meanwhile is compared, not replaced.
        fs::write(&claim, b"").unwrap();
        assert!(matches!(
            b.put(&k, b"other"),
            Err(BackendError::Conflict { .. })
        ));
        b.put(&k, b"snapshot").unwrap();
        assert_eq!(b.get(&k).unwrap(), b"snapshot");
    }

    #[test]
    fn a_repository_on_fat_keeps_the_contract_without_hard_links() {
        let test = "a_repository_on_fat_keeps_the_contract_without_hard_links";
        let Some(fat) = crate::testutil::FatMount::new(test) else {
            return;
        };
        let root = fat.point.join("repo");
        fs::create_dir(&root).unwrap();
        let b = LocalBackend::new(&root);
        b.create_layout().unwrap();
        let a = b.abilities();
        assert_ne!(a.place, Place::Link, "FAT has no hard links: {a:?}");
        assert!(!a.chmod, "{a:?}");
        assert!(a.missing().is_some());
        super::super::super::contract_tests::run(&b);
        racing_writers(&|| LocalBackend::new(&root));
        // Leftover claims and probes are gone.
        let dots: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(dots.is_empty(), "{dots:?}");
        // A whole repository: snapshot, restore bit for bit.
        let b2 = LocalBackend::new(fat.point.join("r2"));
        b2.create_layout().unwrap();
        let repo = crate::Repository::init(
            std::sync::Arc::new(b2),
            crate::InitOptions {
                pack_size: 64 * 1024,
                ..crate::InitOptions::default()
            },
        )
        .unwrap();
        let src = tempfile::tempdir().unwrap();
        let files = crate::testutil::files(5, 40, 30_000);
        crate::testutil::write_tree(src.path(), &files);
        let snap = crate::testutil::snapshot(&repo, src.path(), "/v", "2026-01-01T00:00:00Z");
        let (back, damaged) = crate::testutil::restore_files(&repo, &snap);
        assert!(damaged.is_empty());
        assert_eq!(back, files);
    }

    #[test]
    fn a_local_file_system_has_every_ability() {
        let dir = tempfile::tempdir().unwrap();
        let a = Abilities::probe(dir.path(), 0o600).unwrap();
        assert_eq!(a.place, Place::Link);
        assert!(a.dir_sync && a.chmod);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the probe cleans up"
        );
    }
}
