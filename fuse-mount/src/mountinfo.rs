//! The mount table, as `/proc/self/mountinfo` gives it.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One mount, as `/proc/self/mountinfo` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted device.
    pub device: String,
    pub point: PathBuf,
}

/// The mounts this process sees.
pub fn mount_table() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read("/proc/self/mountinfo")?))
}

/// Whether `path` (absolute, resolved) is a mount point.
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    Ok(mount_table()?.iter().any(|e| e.point == path))
}

/// Fields 3 (device) and 5 (mount point, octal escapes undone) of each line.
fn parse_mountinfo(info: &[u8]) -> Vec<MountEntry> {
    let unescape = |field: &[u8]| {
        let mut out = Vec::with_capacity(field.len());
        let mut i = 0;
        while i < field.len() {
            let octal = field
                .get(i + 1..i + 4)
                .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
            match octal {
                Some(d) => {
                    out.push(
                        d.iter()
                            .fold(0u8, |acc, c| acc.wrapping_mul(8) + (c - b'0')),
                    );
                    i += 4;
                }
                None => {
                    out.push(field[i]);
                    i += 1;
                }
            }
        }
        PathBuf::from(OsStr::from_bytes(&out))
    };
    info.split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut fields = line.split(|&b| b == b' ');
            let device = fields.nth(2)?;
            let point = fields.nth(1)?;
            Some(MountEntry {
                device: String::from_utf8_lossy(device).into_owned(),
                point: unescape(point),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_device_and_unescaped_mount_point() {
        let info = b"22 1 8:1 / / rw - ext4 /dev/sda1 rw\n36 22 0:31 / /mnt/with\\040space rw - fuse.pvsnap pvsnap rw\n";
        let entries = parse_mountinfo(info);
        let want = [("8:1", "/"), ("0:31", "/mnt/with space")].map(|(d, p)| MountEntry {
            device: d.into(),
            point: p.into(),
        });
        assert_eq!(entries, want);
    }
}
