//! The kernel's mount table (`/proc/self/mountinfo`), and which mount holds
//! a path.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The folder of the filesystem that is mounted here (for btrfs, the
    /// subvolume's path inside the filesystem; `/` for a whole filesystem).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// The device or dataset (`/dev/mapper/vg0-data`, `tank/data`).
    pub source: String,
    /// The per-mount options (`rw,noatime`).
    pub options: String,
    /// The filesystem's own options (btrfs: `subvolid=…,subvol=…`).
    pub super_options: String,
}

/// Reads this process's mount table.
pub fn read() -> Result<Vec<Mount>> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text)
}

/// Parses mountinfo text (see proc(5)).
pub fn parse(text: &str) -> Result<Vec<Mount>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            parse_line(line).ok_or_else(|| Error::Unparsed {
                command: "/proc/self/mountinfo".into(),
                detail: "a line without the fields proc(5) describes".into(),
                output: line.to_owned(),
            })
        })
        .collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    let (head, tail) = line.split_once(" - ")?;
    let head: Vec<&str> = head.split(' ').collect();
    if head.len() < 6 {
        return None;
    }
    let mut tail = tail.split(' ');
    let fs_type = unescape(tail.next()?);
    let source = unescape(tail.next()?);
    let super_options = unescape(tail.next().unwrap_or(""));
    Some(Mount {
        root: PathBuf::from(unescape(head[3])),
        mount_point: PathBuf::from(unescape(head[4])),
        fs_type,
        source,
        options: head[5].to_owned(),
        super_options,
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount that holds `path` (an absolute, symlink-free path): the last
/// mounted of those whose mount point is the longest prefix of it.
pub fn holding<'m>(mounts: &'m [Mount], path: &Path) -> Option<&'m Mount> {
    let mut best: Option<&Mount> = None;
    for m in mounts {
        if path.starts_with(&m.mount_point)
            && best.is_none_or(|b| {
                m.mount_point.components().count() >= b.mount_point.components().count()
            })
        {
            best = Some(m);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 7:0 / /srv/pool rw,relatime shared:20 - btrfs /dev/loop0 rw,space_cache=v2,subvolid=5,subvol=/
41 22 7:0 /data /srv/data rw,relatime shared:21 - btrfs /dev/loop0 rw,subvolid=256,subvol=/data
42 22 0:50 / /tank/pg\\040data rw,relatime shared:22 - zfs tank/pg rw,xattr,noacl
43 22 253:3 / /mnt/lv rw,relatime shared:23 - xfs /dev/mapper/vg0-my--data rw,attr2
44 40 7:0 / /srv/pool rw,relatime shared:24 - btrfs /dev/loop1 rw,subvolid=5,subvol=/
";

    #[test]
    fn parses_fields_and_escapes() {
        let m = parse(SAMPLE).unwrap();
        assert_eq!(m.len(), 6);
        assert_eq!(m[2].root, Path::new("/data"));
        assert_eq!(m[2].super_options, "rw,subvolid=256,subvol=/data");
        assert_eq!(m[3].mount_point, Path::new("/tank/pg data"));
        assert_eq!(m[3].source, "tank/pg");
        assert_eq!(m[4].source, "/dev/mapper/vg0-my--data");
        assert!(parse("garbage line").is_err());
    }

    #[test]
    fn the_deepest_and_latest_mount_holds_a_path() {
        let m = parse(SAMPLE).unwrap();
        assert_eq!(
            holding(&m, Path::new("/srv/data/x")).unwrap().mount_point,
            Path::new("/srv/data")
        );
        assert_eq!(
            holding(&m, Path::new("/srv/database")).unwrap().mount_point,
            Path::new("/")
        );
        // Mounted over: the later mount on the same point wins.
        assert_eq!(
            holding(&m, Path::new("/srv/pool/a")).unwrap().source,
            "/dev/loop1"
        );
        assert_eq!(
            holding(&m, Path::new("/tank/pg data/base"))
                .unwrap()
                .fs_type,
            "zfs"
        );
    }
}
