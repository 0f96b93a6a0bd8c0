//! btrfs: a subvolume snapshots itself (`btrfs subvolume snapshot -r`).
//!
//! **The volume** of a source folder is the innermost subvolume that holds
//! it (a folder whose inode is 256, confirmed by `btrfs subvolume show`).
//! pvsnap snapshots only a subvolume of its own: not the filesystem's top
//! level (ID 5) and not a subvolume that is the root of its mount, whose
//! snapshots would have no place on the same mount. For such a source the
//! error says how to make the folder a subvolume.
//!
//! **Where snapshots live**: beside the subvolume, in
//! `<parent of the subvolume>/.pvsnap-snapshots/<subvolume's name>/`, so
//! that they are on the same filesystem and mount and never inside the
//! folder an application sees. A read-only snapshot is a folder: reading it
//! needs no mount.
//!
//! **Nested subvolumes are not in a btrfs snapshot**: they appear in it as
//! empty folders. [`place`] lists them (`btrfs subvolume list -o`) as
//! caveats for a warning.
//!
//! **Rollback** swaps subvolumes: the live one is renamed aside to
//! `pvsnap-before-rollback-…` in the snapshots folder (kept, never removed
//! by cleanup: it is not a [`naming`](crate::naming) name), and a writable
//! snapshot of the kept one takes its place. **clone_to** is a writable
//! snapshot at the target, which must be on the same btrfs filesystem.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::naming::{self, Purpose};
use crate::tool::Tool;
use crate::{Kind, Leftover, NativeSnapshot, Placed, Provider, ReadView, Volume};

/// The folder, beside each subvolume, that holds pvsnap's snapshots of it.
pub const SNAPSHOTS_DIR: &str = ".pvsnap-snapshots";

/// The name prefix of a live subvolume set aside by a rollback.
pub const BEFORE_ROLLBACK: &str = "pvsnap-before-rollback-";

/// The inode number of every subvolume's root folder
/// (BTRFS_FIRST_FREE_OBJECTID).
const SUBVOLUME_ROOT_INODE: u64 = 256;

pub struct Btrfs;

/// How to make the folder `dir` a subvolume of its own, for errors.
pub fn make_subvolume_hint(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "make the folder a btrfs subvolume of its own: stop what writes to it, then `mv {d} {d}.old && btrfs subvolume create {d} && cp -a --reflink=always {d}.old/. {d}/ && rm -rf {d}.old`; or snapshot with --source-snapshot off (a live read)"
    )
}

/// Narrows the first look from the mount table (`detect::place`) to the
/// subvolume that holds `path` (canonical), with the nested subvolumes
/// inside the source as caveats.
pub fn place(path: &Path, first: &Placed) -> Result<Placed> {
    let mount = &first.volume.mount_point;
    let root = subvolume_root(path, mount)?;
    let not_native = |reason: String| Error::NotNative {
        path: path.to_owned(),
        reason: format!("{reason}; {}", make_subvolume_hint(path)),
    };
    let show = Tool::new("btrfs")
        .args(["subvolume", "show"])
        .arg(&root)
        .output()?;
    let id = show_field(&show, "Subvolume ID:").and_then(|v| v.parse::<u64>().ok());
    if id == Some(5) || id.is_none() && show.lines().next().map(str::trim) == Some("/") {
        return Err(not_native(format!(
            "on btrfs, but in no subvolume of its own: its subvolume is the whole filesystem mounted at {}",
            mount.display()
        )));
    }
    if root == *mount {
        return Err(not_native(format!(
            "on btrfs, but its subvolume {} is the root of its mount, so its snapshots would have no place beside it on the same mount",
            root.display()
        )));
    }
    let within = path
        .strip_prefix(&root)
        .map(Path::to_owned)
        .unwrap_or_default();
    let mut caveats = Vec::new();
    let here = show
        .lines()
        .next()
        .map(|l| strip_fs_tree(l.trim()).to_owned())
        .unwrap_or_default();
    let list = Tool::new("btrfs")
        .args(["subvolume", "list", "-o"])
        .arg(&root)
        .output()?;
    for line in list.lines() {
        let Some((_, p)) = line.split_once(" path ") else {
            continue;
        };
        let p = strip_fs_tree(p.trim());
        let rel = if here.is_empty() || here == "/" {
            Some(p)
        } else {
            p.strip_prefix(here.as_str())
                .and_then(|r| r.strip_prefix('/'))
        };
        let Some(rel) = rel else { continue };
        if Path::new(rel).starts_with(&within) {
            caveats.push(format!(
                "{} is a nested btrfs subvolume, and nested subvolumes are not in a btrfs snapshot: it is read as an empty folder; snapshot it as a source of its own",
                root.join(rel).display()
            ));
        }
    }
    Ok(Placed {
        volume: Volume {
            kind: Kind::Btrfs,
            name: root.to_string_lossy().into_owned(),
            mount_point: root,
            fs_type: first.volume.fs_type.clone(),
            device: first.volume.device.clone(),
        },
        within,
        caveats,
    })
}

fn strip_fs_tree(p: &str) -> &str {
    p.strip_prefix("<FS_TREE>/").unwrap_or(p)
}

fn show_field<'a>(show: &'a str, key: &str) -> Option<&'a str> {
    show.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .map(str::trim)
}

/// The innermost subvolume root at or above `path`, not above `mount`.
fn subvolume_root(path: &Path, mount: &Path) -> Result<PathBuf> {
    let mut at = path;
    loop {
        let meta = std::fs::metadata(at).map_err(|source| Error::Io {
            path: at.to_owned(),
            source,
        })?;
        if meta.ino() == SUBVOLUME_ROOT_INODE || at == mount {
            return Ok(at.to_owned());
        }
        match at.parent() {
            Some(p) => at = p,
            None => return Ok(mount.to_owned()),
        }
    }
}

/// Where the snapshots of `volume` (a subvolume's path) live.
pub fn snapshots_dir(volume: &Volume) -> PathBuf {
    let root = &volume.mount_point;
    let parent = root.parent().unwrap_or(Path::new("/"));
    let name = root
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "root".into());
    parent.join(SNAPSHOTS_DIR).join(name)
}

/// The subvolumes set aside by rollbacks of `volume`, oldest first.
pub fn set_aside(volume: &Volume) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(snapshots_dir(volume))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(BEFORE_ROLLBACK))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn delete(handle: &str) -> Result<()> {
    if std::fs::symlink_metadata(handle).is_err() {
        return Err(Error::Missing {
            what: format!("btrfs snapshot {handle}"),
        });
    }
    Tool::new("btrfs")
        .args(["subvolume", "delete", handle])
        .run()
}

impl Provider for Btrfs {
    fn kind(&self) -> Kind {
        Kind::Btrfs
    }

    fn create(&self, volume: &Volume, name: &str) -> Result<NativeSnapshot> {
        let dir = snapshots_dir(volume);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let target = dir.join(name);
        Tool::new("btrfs")
            .args(["subvolume", "snapshot", "-r"])
            .arg(&volume.mount_point)
            .arg(&target)
            .run()?;
        Ok(NativeSnapshot {
            kind: Kind::Btrfs,
            volume: volume.name.clone(),
            name: name.to_owned(),
            handle: target.to_string_lossy().into_owned(),
            created: Some(jiff::Timestamp::now()),
        })
    }

    fn open(&self, snapshot: &NativeSnapshot) -> Result<ReadView> {
        let root = PathBuf::from(&snapshot.handle);
        if !root.is_dir() {
            return Err(Error::Missing {
                what: format!("btrfs snapshot {}", snapshot.handle),
            });
        }
        Ok(ReadView::plain(root))
    }

    fn destroy(&self, snapshot: &NativeSnapshot) -> Result<()> {
        delete(&snapshot.handle)
    }

    fn list(&self, volume: &Volume) -> Result<Vec<NativeSnapshot>> {
        let dir = snapshots_dir(volume);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(source) => return Err(Error::Io { path: dir, source }),
        };
        let mut out: Vec<(naming::Name, NativeSnapshot)> = entries
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                let name = naming::Name::parse(&file)?;
                let snap = NativeSnapshot {
                    kind: Kind::Btrfs,
                    volume: volume.name.clone(),
                    handle: e.path().to_string_lossy().into_owned(),
                    created: Some(name.time),
                    name: file,
                };
                Some((name, snap))
            })
            .collect();
        out.sort_by(|a, b| a.0.time.cmp(&b.0.time).then(a.1.name.cmp(&b.1.name)));
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    fn rollback(&self, volume: &Volume, snapshot: &NativeSnapshot) -> Result<()> {
        let live = &volume.mount_point;
        let kept = Path::new(&snapshot.handle);
        if !kept.is_dir() {
            return Err(Error::Missing {
                what: format!("btrfs snapshot {}", snapshot.handle),
            });
        }
        // Nested subvolumes would go aside with the live one and be
        // missing (empty folders) in the rolled-back volume.
        let nested: Vec<String> = Tool::new("btrfs")
            .args(["subvolume", "list", "-o"])
            .arg(live)
            .output()?
            .lines()
            .filter_map(|l| l.split_once(" path ").map(|(_, p)| p.trim().to_owned()))
            .collect();
        if !nested.is_empty() {
            return Err(Error::Refused {
                what: live.display().to_string(),
                detail: format!(
                    "holds nested subvolumes ({}), which a rollback would set aside with the live subvolume, leaving empty folders in their place; move them out of {} first, or restore with --target or --clone-to",
                    nested.join(", "),
                    live.display()
                ),
            });
        }
        let n = naming::Name::new(Purpose::Tmp);
        let aside = snapshots_dir(volume).join(format!(
            "{BEFORE_ROLLBACK}{}-{}",
            n.time.strftime("%Y%m%dT%H%M%SZ"),
            n.nonce
        ));
        std::fs::rename(live, &aside).map_err(|source| Error::Io {
            path: live.clone(),
            source,
        })?;
        let made = Tool::new("btrfs")
            .args(["subvolume", "snapshot"])
            .arg(kept)
            .arg(live)
            .run();
        if let Err(e) = made {
            // The live subvolume goes back where it was.
            return match std::fs::rename(&aside, live) {
                Ok(()) => Err(e),
                Err(back) => Err(Error::Refused {
                    what: live.display().to_string(),
                    detail: format!(
                        "{e}; and moving the live subvolume back failed ({back}): it is at {}, move it back with `mv {} {}`",
                        aside.display(),
                        aside.display(),
                        live.display()
                    ),
                }),
            };
        }
        Ok(())
    }

    fn clone_to(&self, snapshot: &NativeSnapshot, target: &Path) -> Result<PathBuf> {
        if std::fs::symlink_metadata(target).is_ok() {
            return Err(Error::Refused {
                what: target.display().to_string(),
                detail: "already exists; give a path that does not exist yet".into(),
            });
        }
        let made = Tool::new("btrfs")
            .args(["subvolume", "snapshot"])
            .arg(&snapshot.handle)
            .arg(target)
            .run();
        match made {
            Err(Error::ToolFailed { stderr, .. })
                if stderr.contains("cross-device") || stderr.contains("not a btrfs filesystem") =>
            {
                Err(Error::Refused {
                    what: target.display().to_string(),
                    detail: format!(
                        "not on the btrfs filesystem of {} ({stderr}); a clone shares the snapshot's data, so give a path on that filesystem, or use --target DIR to copy",
                        snapshot.handle
                    ),
                })
            }
            Err(e) => Err(e),
            Ok(()) => Ok(target.to_owned()),
        }
    }

    fn leftovers(&self, volume: &Volume) -> Result<Vec<Leftover>> {
        let dir = snapshots_dir(volume);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(source) => return Err(Error::Io { path: dir, source }),
        };
        let mut out: Vec<Leftover> = entries
            .flatten()
            .filter(|e| {
                naming::Name::parse(&e.file_name().to_string_lossy())
                    .is_some_and(|n| n.purpose != Purpose::Keep)
            })
            .map(|e| Leftover {
                kind: Kind::Btrfs,
                what: "snapshot".into(),
                handle: e.path().to_string_lossy().into_owned(),
            })
            .collect();
        out.sort_by(|a, b| a.handle.cmp(&b.handle));
        Ok(out)
    }

    fn remove_leftover(&self, leftover: &Leftover) -> Result<()> {
        delete(&leftover.handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_live_beside_the_subvolume() {
        let v = Volume {
            kind: Kind::Btrfs,
            name: "/srv/pvs/db".into(),
            mount_point: "/srv/pvs/db".into(),
            fs_type: "btrfs".into(),
            device: "/dev/sdb".into(),
        };
        assert_eq!(
            snapshots_dir(&v),
            Path::new("/srv/pvs/.pvsnap-snapshots/db")
        );
    }

    #[test]
    fn show_fields_and_fs_tree_paths() {
        let show = "vol\n\tName: \t\t\tvol\n\tSubvolume ID: \t\t256\n";
        assert_eq!(show_field(show, "Subvolume ID:"), Some("256"));
        assert_eq!(strip_fs_tree("<FS_TREE>/vol/a"), "vol/a");
        assert_eq!(strip_fs_tree("vol/a"), "vol/a");
    }
}
