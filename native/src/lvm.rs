//! LVM: a logical volume snapshots itself (`lvcreate -s`).
//!
//! **Thick snapshots** (of an ordinary volume) get a size of their own:
//! [`Lvm::snapshot_size`], by default a share of the origin. They fill as
//! the origin changes, and one that fills up becomes invalid (the 5th
//! character of `lv_attr` is `I`) and is useless: pvsnap never opens an
//! invalid snapshot, warns at [`WARN_AT`] full, and a reader polling
//! [`Provider::usage`] stops before it overflows ([`ABORT_AT`]).
//! **Thin snapshots** (of a thin volume) take room from the thin pool as
//! needed; a full thin pool breaks every volume in it, so pvsnap refuses to
//! make one when the pool's data is over [`THIN_POOL_LIMIT`] full.
//!
//! **Reading** a snapshot means mounting it: read-only, under
//! `/run/pvsnap/lvm/<name>`, with `nouuid` for XFS (the snapshot carries the
//! origin's UUID, which XFS refuses twice) and `noload` for ext3/4 (no
//! journal replay on a read-only device). Thin snapshots are created with
//! the activation-skip flag; they are activated with `lvchange -ay -K`.
//! **Rollback** is `lvconvert --merge`: when the origin is open (mounted),
//! the merge completes on its next activation. **clone_to** makes a
//! writable thin snapshot of the snapshot and mounts it (thin only).
//!
//! Every call goes through the lvm2 tools with `--reportformat json`
//! (lvm2 2.03: `{"report": [{"lv": [{…}]}]}`, every value a string, `""`
//! for none; sizes with `--units b --nosuffix`).
//!
//! LVM cannot run on the machine this was built on (no device-mapper):
//! the tests drive a recording stand-in of the lvm2 tools
//! (`tests/stand-ins/lvm/`), which answers in lvm2's formats.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::naming::{self, Purpose};
use crate::tool::Tool;
use crate::{Kind, Leftover, NativeSnapshot, Placed, Provider, ReadView, Volume};

/// Warn when a thick snapshot is this full.
pub const WARN_AT: f64 = 0.80;
/// Stop reading from a thick snapshot this full: it would soon overflow.
pub const ABORT_AT: f64 = 0.95;
/// Refuse a thin snapshot when the pool's data is this full.
pub const THIN_POOL_LIMIT: f64 = 0.80;
/// Where snapshots are mounted to be read.
pub const MOUNT_BASE: &str = "/run/pvsnap/lvm";

/// How big a thick snapshot is made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SnapshotSize {
    /// A share of the origin's size (0.2: a fifth).
    Share(f64),
    /// Bytes.
    Bytes(u64),
}

impl Default for SnapshotSize {
    fn default() -> Self {
        SnapshotSize::Share(0.2)
    }
}

impl SnapshotSize {
    /// `20%` or a size such as `10G`, `512M`, `1073741824`.
    pub fn parse(s: &str) -> std::result::Result<SnapshotSize, String> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.parse().map_err(|_| format!("`{s}`: not a percentage"))?;
            if !(1.0..=100.0).contains(&v) {
                return Err(format!("`{s}`: a share from 1% to 100% of the origin"));
            }
            return Ok(SnapshotSize::Share(v / 100.0));
        }
        let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
            Some((i, _)) => {
                let mult: u64 = match t[i..].to_ascii_uppercase().as_str() {
                    "K" | "KB" | "KIB" => 1 << 10,
                    "M" | "MB" | "MIB" => 1 << 20,
                    "G" | "GB" | "GIB" => 1 << 30,
                    "T" | "TB" | "TIB" => 1 << 40,
                    other => {
                        return Err(format!(
                            "`{s}`: unknown unit {other}; use K, M, G or T, or a share like 20%"
                        ));
                    }
                };
                (&t[..i], mult)
            }
            None => (t, 1),
        };
        let n: u64 = num
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: not a size (e.g. 10G) or a share (e.g. 20%)"))?;
        Ok(SnapshotSize::Bytes(n.saturating_mul(mult)))
    }

    /// Bytes for an origin of `origin` bytes: at least 64 MiB, whole MiB.
    pub fn bytes_for(self, origin: u64) -> u64 {
        let b = match self {
            SnapshotSize::Share(f) => (origin as f64 * f) as u64,
            SnapshotSize::Bytes(b) => b,
        };
        b.max(64 << 20).div_ceil(1 << 20) * (1 << 20)
    }
}

/// The LVM provider.
#[derive(Debug, Clone)]
pub struct Lvm {
    pub snapshot_size: SnapshotSize,
    /// Where snapshots are mounted to be read ([`MOUNT_BASE`]).
    pub mount_base: PathBuf,
    /// The folder of the lvm2 tools and `mount`/`umount`; `None`: `PATH`.
    pub bin: Option<PathBuf>,
}

impl Default for Lvm {
    fn default() -> Self {
        Lvm {
            snapshot_size: SnapshotSize::default(),
            mount_base: PathBuf::from(MOUNT_BASE),
            bin: None,
        }
    }
}

/// One row of an `lvs` report.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LvRow {
    pub lv_name: String,
    pub vg_name: String,
    pub lv_attr: String,
    #[serde(default)]
    pub lv_size: String,
    #[serde(default)]
    pub data_percent: String,
    #[serde(default)]
    pub origin: String,
    #[serde(default)]
    pub pool_lv: String,
    #[serde(default)]
    pub lv_time: String,
}

impl LvRow {
    /// A thick snapshot (`s`) or a thin volume (`V`)?
    fn kind_char(&self) -> char {
        self.lv_attr.chars().next().unwrap_or('-')
    }
    pub fn is_thin(&self) -> bool {
        self.kind_char() == 'V'
    }
    /// The 5th `lv_attr` character `I`: a snapshot that overflowed.
    pub fn is_invalid(&self) -> bool {
        self.lv_attr.chars().nth(4) == Some('I')
    }
    pub fn size(&self) -> Option<u64> {
        self.lv_size.trim().parse().ok()
    }
    /// `data_percent` as 0.0–1.0; `None` when empty.
    pub fn usage(&self) -> Option<f64> {
        self.data_percent
            .trim()
            .parse::<f64>()
            .ok()
            .map(|p| p / 100.0)
    }
}

#[derive(Deserialize)]
struct Report {
    report: Vec<ReportPart>,
}

#[derive(Deserialize)]
struct ReportPart {
    #[serde(default)]
    lv: Vec<LvRow>,
}

const FIELDS: &str = "lv_name,vg_name,lv_attr,lv_size,data_percent,origin,pool_lv,lv_time";

/// Parses an `lvs --reportformat json` report; `command` names it in errors.
pub fn parse_lvs(command: &str, out: &str) -> Result<Vec<LvRow>> {
    let r: Report = serde_json::from_str(out).map_err(|e| Error::Unparsed {
        command: command.to_owned(),
        detail: format!("not an lvm2 JSON report: {e}"),
        output: out.chars().take(400).collect(),
    })?;
    Ok(r.report.into_iter().flat_map(|p| p.lv).collect())
}

impl Lvm {
    fn tool(&self, program: &str) -> Tool {
        match &self.bin {
            Some(dir) => Tool::new(&dir.join(program).to_string_lossy()),
            None => Tool::new(program),
        }
    }

    fn lvs(&self, target: &str) -> Result<Vec<LvRow>> {
        let tool = self.tool("lvs").args([
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            FIELDS,
            target,
        ]);
        let shown = tool.shown().to_owned();
        parse_lvs(&shown, &tool.output()?)
    }

    /// The one row of `vg/lv`.
    fn lv(&self, name: &str) -> Result<LvRow> {
        let rows = self.lvs(name).map_err(|e| match e {
            Error::ToolFailed { stderr, .. }
                if stderr.contains("Failed to find logical volume") =>
            {
                Error::Missing {
                    what: format!("LVM volume {name}"),
                }
            }
            e => e,
        })?;
        let (vg, lv) = split(name)?;
        rows.into_iter()
            .find(|r| r.vg_name == vg && r.lv_name == lv)
            .ok_or_else(|| Error::Missing {
                what: format!("LVM volume {name}"),
            })
    }

    /// Places a source on its LVM volume: confirms with `lvs` that the
    /// mount's device is a logical volume and not itself a snapshot.
    pub fn place(&self, first: &Placed) -> Result<Placed> {
        let row = self.lv(&first.volume.name)?;
        if row.kind_char() == 's' || !row.origin.is_empty() {
            return Err(Error::Refused {
                what: first.volume.name.clone(),
                detail: "is itself an LVM snapshot; snapshot its origin".into(),
            });
        }
        Ok(first.clone())
    }
}

fn split(name: &str) -> Result<(&str, &str)> {
    name.split_once('/').ok_or_else(|| Error::Refused {
        what: name.to_owned(),
        detail: "not an LVM volume name of the form VG/LV".into(),
    })
}

impl Lvm {
    fn snapshot(&self, vg: &str, name: &str, volume: &str) -> NativeSnapshot {
        NativeSnapshot {
            kind: Kind::Lvm,
            volume: volume.to_owned(),
            name: name.to_owned(),
            handle: format!("{vg}/{name}"),
            created: naming::Name::parse(name).map(|n| n.time),
        }
    }

    fn mount_point(&self, snapshot: &NativeSnapshot) -> PathBuf {
        self.mount_base.join(&snapshot.name)
    }
}

/// Mount options for reading a snapshot of a filesystem of `fs_type`.
pub fn read_only_options(fs_type: &str) -> String {
    match fs_type {
        "xfs" => "ro,nouuid".into(),
        "ext3" | "ext4" => "ro,noload".into(),
        _ => "ro".into(),
    }
}

impl Provider for Lvm {
    fn kind(&self) -> Kind {
        Kind::Lvm
    }

    fn create(&self, volume: &Volume, name: &str) -> Result<NativeSnapshot> {
        let origin = self.lv(&volume.name)?;
        let (vg, _) = split(&volume.name)?;
        let mut tool = self.tool("lvcreate").args(["--snapshot", "--name", name]);
        if origin.is_thin() {
            let pool = self.lv(&format!("{vg}/{}", origin.pool_lv))?;
            if let Some(u) = pool.usage()
                && u > THIN_POOL_LIMIT
            {
                return Err(Error::Refused {
                    what: format!("thin pool {vg}/{}", origin.pool_lv),
                    detail: format!(
                        "is {:.0}% full: a snapshot would take room as the volume changes, and a full thin pool breaks every volume in it; extend the pool (`lvextend -L +SIZE {vg}/{}`) or free room first",
                        u * 100.0,
                        origin.pool_lv
                    ),
                });
            }
        } else {
            let size = self.snapshot_size.bytes_for(origin.size().unwrap_or(0));
            tool = tool.args(["--size", &format!("{size}b")]);
        }
        tool.arg(&volume.name).run()?;
        Ok(self.snapshot(vg, name, &volume.name))
    }

    fn open(&self, snapshot: &NativeSnapshot) -> Result<ReadView> {
        let row = self.lv(&snapshot.handle)?;
        if row.is_invalid() {
            return Err(Error::Refused {
                what: format!("LVM snapshot {}", snapshot.handle),
                detail: "is invalid (it filled up, lv_attr says I): its content is lost; give the next one more room with --lvm-snapshot-size".into(),
            });
        }
        if row.is_thin() {
            self.tool("lvchange")
                .args(["--activate", "y", "--ignoreactivationskip"])
                .arg(&snapshot.handle)
                .run()?;
        }
        let fs_type = mounted_type(&snapshot.volume).unwrap_or_default();
        let dir = self.mount_point(snapshot);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let device = format!("/dev/{}", snapshot.handle);
        self.tool("mount")
            .args(["-o", &read_only_options(&fs_type), &device])
            .arg(&dir)
            .run()?;
        let at = dir.clone();
        let umount = self.tool("umount");
        Ok(ReadView::with_release(dir, move || {
            umount.arg(&at).run()?;
            let _ = std::fs::remove_dir(&at);
            Ok(())
        }))
    }

    fn destroy(&self, snapshot: &NativeSnapshot) -> Result<()> {
        match self
            .tool("lvremove")
            .args(["--yes", &snapshot.handle])
            .run()
        {
            Err(Error::ToolFailed { stderr, .. })
                if stderr.contains("Failed to find logical volume") =>
            {
                Err(Error::Missing {
                    what: format!("LVM snapshot {}", snapshot.handle),
                })
            }
            r => r,
        }
    }

    fn list(&self, volume: &Volume) -> Result<Vec<NativeSnapshot>> {
        let (vg, lv_name) = split(&volume.name)?;
        let mut out: Vec<(jiff::Timestamp, NativeSnapshot)> = self
            .lvs(vg)?
            .into_iter()
            .filter(|r| r.origin == lv_name)
            .filter_map(|r| {
                let n = naming::Name::parse(&r.lv_name)?;
                Some((n.time, self.snapshot(vg, &r.lv_name, &volume.name)))
            })
            .collect();
        out.sort_by_key(|(t, _)| *t);
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    fn rollback(&self, _volume: &Volume, snapshot: &NativeSnapshot) -> Result<()> {
        self.tool("lvconvert")
            .args(["--merge", &snapshot.handle])
            .run()
    }

    fn clone_to(&self, snapshot: &NativeSnapshot, target: &Path) -> Result<PathBuf> {
        let row = self.lv(&snapshot.handle)?;
        if !row.is_thin() {
            return Err(Error::Refused {
                what: format!("LVM snapshot {}", snapshot.handle),
                detail: "is a thick snapshot: a writable copy of it would share its room and overflow it; clones are made of thin snapshots only (restore with --target to copy it out)".into(),
            });
        }
        let (vg, _) = split(&snapshot.handle)?;
        let name = naming::Name::new(Purpose::Keep).to_string();
        self.tool("lvcreate")
            .args(["--snapshot", "--name", &name, &snapshot.handle])
            .run()?;
        let handle = format!("{vg}/{name}");
        self.tool("lvchange")
            .args(["--activate", "y", "--ignoreactivationskip", &handle])
            .run()?;
        std::fs::create_dir_all(target).map_err(|source| Error::Io {
            path: target.to_owned(),
            source,
        })?;
        self.tool("mount")
            .arg(format!("/dev/{handle}"))
            .arg(target)
            .run()?;
        Ok(target.to_owned())
    }

    fn usage(&self, snapshot: &NativeSnapshot) -> Result<Option<f64>> {
        let row = self.lv(&snapshot.handle)?;
        if row.is_invalid() {
            return Ok(Some(1.0));
        }
        // Thin snapshots have no room of their own: the pool's is what fills.
        Ok(if row.is_thin() { None } else { row.usage() })
    }

    fn leftovers(&self, volume: &Volume) -> Result<Vec<Leftover>> {
        let (vg, lv_name) = split(&volume.name)?;
        let mut out = vec![];
        // Mounts of ours first: a volume cannot go while mounted.
        if let Ok(mounts) = crate::mountinfo::read() {
            for m in mounts {
                if m.mount_point.starts_with(&self.mount_base)
                    && m.mount_point
                        .file_name()
                        .and_then(|n| naming::Name::parse(&n.to_string_lossy()))
                        .is_some_and(|n| n.purpose != Purpose::Keep)
                {
                    out.push(Leftover {
                        kind: Kind::Lvm,
                        what: "mount".into(),
                        handle: m.mount_point.to_string_lossy().into_owned(),
                    });
                }
            }
        }
        for r in self.lvs(vg)? {
            if r.origin == lv_name
                && naming::Name::parse(&r.lv_name).is_some_and(|n| n.purpose != Purpose::Keep)
            {
                out.push(Leftover {
                    kind: Kind::Lvm,
                    what: "volume".into(),
                    handle: format!("{vg}/{}", r.lv_name),
                });
            }
        }
        Ok(out)
    }

    fn remove_leftover(&self, leftover: &Leftover) -> Result<()> {
        match leftover.what.as_str() {
            "mount" => {
                self.tool("umount").arg(&leftover.handle).run()?;
                let _ = std::fs::remove_dir(&leftover.handle);
                Ok(())
            }
            _ => self
                .tool("lvremove")
                .args(["--yes", &leftover.handle])
                .run(),
        }
    }
}

/// The filesystem type the volume `vg/lv` is mounted with, from the mount
/// table (its `/dev/mapper` name).
fn mounted_type(name: &str) -> Option<String> {
    let mounts = crate::mountinfo::read().ok()?;
    mounts
        .into_iter()
        .find(|m| crate::detect::lvm_name(&m.source).as_deref() == Some(name))
        .map(|m| m.fs_type)
}

#[cfg(test)]
mod tests;
