//! Which storage a source folder lives on, from the mount table.
//!
//! This is the first look, from mountinfo alone: a btrfs mount, a ZFS
//! dataset (`zfs`, or zfs-fuse's `fuse` mount of a dataset), a device-mapper
//! device that may be an LVM volume. Each provider then confirms with its
//! own tools (`btrfs subvolume show`, `zfs list`, `lvs`) before anything is
//! made.

use std::path::Path;

use crate::error::{Error, Result};
use crate::mountinfo::{self, Mount};
use crate::{Kind, Placed, Volume};

/// Places `path` (a folder) on its mount; `None` when the mount is of a
/// kind with no native snapshots (ext4 on a plain disk, tmpfs, NFS, …).
pub fn place(path: &Path) -> Result<Option<Placed>> {
    let path = std::fs::canonicalize(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let mounts = mountinfo::read()?;
    Ok(mountinfo::holding(&mounts, &path).and_then(|m| place_on(m, &path)))
}

/// Places `path` on the mount `m` that holds it.
pub fn place_on(m: &Mount, path: &Path) -> Option<Placed> {
    let kind = kind_of(m)?;
    let within = path.strip_prefix(&m.mount_point).ok()?.to_owned();
    let name = match kind {
        // The mounted subvolume; a provider narrows it to a nested
        // subvolume holding the source when there is one.
        Kind::Btrfs => m.root.to_string_lossy().into_owned(),
        Kind::Zfs => m.source.clone(),
        Kind::Lvm => lvm_name(&m.source)?,
        Kind::Csi => return None,
    };
    Some(Placed {
        volume: Volume {
            kind,
            name,
            mount_point: m.mount_point.clone(),
            fs_type: m.fs_type.clone(),
            device: m.source.clone(),
        },
        within,
        caveats: vec![],
    })
}

fn kind_of(m: &Mount) -> Option<Kind> {
    match m.fs_type.as_str() {
        "btrfs" => Some(Kind::Btrfs),
        "zfs" => Some(Kind::Zfs),
        // zfs-fuse mounts a dataset as `fuse` with the dataset as source.
        // zfs-fuse 0.7 (Debian) shows `fuse.zfs`; a dataset name may hold
        // spaces, never a leading `/`.
        "fuse.zfs" if !m.source.is_empty() && !m.source.starts_with('/') => Some(Kind::Zfs),
        "fuse" if looks_like_dataset(&m.source) => Some(Kind::Zfs),
        _ if m.source.starts_with("/dev/mapper/") || m.source.starts_with("/dev/dm-") => {
            Some(Kind::Lvm)
        }
        _ => None,
    }
}

fn looks_like_dataset(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('/') && s.split('/').all(|p| !p.is_empty()) && !s.contains(' ')
}

/// `vg0/my-data` from `/dev/mapper/vg0-my--data` (device-mapper doubles the
/// dashes inside each name); `None` for a `/dev/dm-N` name, which only
/// `lvs` can resolve.
pub fn lvm_name(device: &str) -> Option<String> {
    let dm = device.strip_prefix("/dev/mapper/")?;
    let b = dm.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' {
            if b.get(i + 1) == Some(&b'-') {
                i += 2;
                continue;
            }
            let (vg, lv) = (&dm[..i], &dm[i + 1..]);
            if vg.is_empty() || lv.is_empty() {
                return None;
            }
            return Some(format!(
                "{}/{}",
                vg.replace("--", "-"),
                lv.replace("--", "-")
            ));
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_mapper_names_split_at_the_single_dash() {
        assert_eq!(
            lvm_name("/dev/mapper/vg0-data").as_deref(),
            Some("vg0/data")
        );
        assert_eq!(
            lvm_name("/dev/mapper/my--vg-my--lv").as_deref(),
            Some("my-vg/my-lv")
        );
        assert_eq!(
            lvm_name("/dev/mapper/vg0-lv-snap").as_deref(),
            Some("vg0/lv-snap")
        );
        assert_eq!(lvm_name("/dev/mapper/nodash"), None);
        assert_eq!(lvm_name("/dev/sda1"), None);
    }
}
