//! ZFS native snapshots through the `zfs` tool, on OpenZFS and on zfs-fuse.
//!
//! The two differ in what pvsnap needs:
//! - OpenZFS has `zfs version`, `zfs list -p`, `zfs holds` and the
//!   `.zfs/snapshot/NAME` folder: a snapshot is read there, held by a hold
//!   tagged `pvsnap` while it is read.
//! - zfs-fuse has none of these (its `zfs holds` needs a Python helper it
//!   does not ship): a snapshot is read through a temporary clone
//!   `DATASET/pvsnap-tmp-…` mounted under the temporary folder, and the hold
//!   is seen only as the snapshot's `userrefs` count.
//!
//! Both answer `zfs get -H -p -o name,value creation` with the creation
//! time in whole seconds since 1970, which is what `list` reports on
//! zfs-fuse.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::naming::{self, Purpose};
use crate::tool::Tool;
use crate::{Kind, Leftover, NativeSnapshot, Provider, ReadView, Volume};

/// The tag of the hold pvsnap puts on a snapshot while reading it.
pub const HOLD_TAG: &str = "pvsnap";

/// Which `zfs` is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    OpenZfs,
    ZfsFuse,
}

/// The ZFS [`Provider`].
#[derive(Debug, Default)]
pub struct Zfs {
    flavor: OnceLock<Flavor>,
}

fn zfs() -> Tool {
    Tool::new("zfs")
}

impl Zfs {
    pub fn new() -> Zfs {
        Zfs::default()
    }

    /// A provider that takes `flavor` as given instead of asking `zfs`.
    pub fn with_flavor(flavor: Flavor) -> Zfs {
        let z = Zfs::default();
        let _ = z.flavor.set(flavor);
        z
    }

    /// Which `zfs` is installed: OpenZFS answers `zfs version` (0.8 and
    /// later) or takes `zfs list -p`; zfs-fuse rejects both.
    pub fn flavor(&self) -> Result<Flavor> {
        if let Some(f) = self.flavor.get() {
            return Ok(*f);
        }
        let f = match zfs().arg("version").run() {
            Ok(()) => Flavor::OpenZfs,
            Err(Error::ToolFailed { .. }) => {
                match zfs()
                    .args(["list", "-H", "-p", "-o", "name", "-d", "0"])
                    .run()
                {
                    Err(Error::ToolFailed { stderr, .. })
                        if stderr.contains("invalid option 'p'") =>
                    {
                        Flavor::ZfsFuse
                    }
                    _ => Flavor::OpenZfs,
                }
            }
            Err(e) => return Err(e),
        };
        let _ = self.flavor.set(f);
        Ok(f)
    }

    /// All snapshots of `dataset` itself (not its children), in the order
    /// ZFS made them, with their creation times.
    fn snapshots(&self, dataset: &str) -> Result<Vec<(String, i64)>> {
        match self.flavor()? {
            Flavor::OpenZfs => {
                let t = zfs().args([
                    "list",
                    "-H",
                    "-p",
                    "-t",
                    "snapshot",
                    "-o",
                    "name,creation",
                    "-d",
                    "1",
                ]);
                let t = t.arg(dataset);
                let shown = t.shown().to_owned();
                let out = t.output()?;
                let rows = parse_rows(&shown, &out, 2)?;
                rows.into_iter()
                    .map(|r| Ok((r[0].clone(), parse_secs(&shown, &r[1])?)))
                    .collect()
            }
            Flavor::ZfsFuse => {
                let names = self.snapshot_names(dataset)?;
                let times = self.get_numbers(&names, "creation")?;
                Ok(names.into_iter().zip(times).collect())
            }
        }
    }

    /// The names of the snapshots of `dataset` itself, oldest first.
    fn snapshot_names(&self, dataset: &str) -> Result<Vec<String>> {
        let t = zfs()
            .args(["list", "-H", "-t", "snapshot", "-o", "name", "-d", "1"])
            .arg(dataset);
        let shown = t.shown().to_owned();
        let out = t.output()?;
        Ok(parse_rows(&shown, &out, 1)?
            .into_iter()
            .map(|mut r| r.remove(0))
            .filter(|n| n.split_once('@').is_some_and(|(d, _)| d == dataset))
            .collect())
    }

    /// A numeric property of each of `names`, in their order.
    fn get_numbers(&self, names: &[String], property: &str) -> Result<Vec<i64>> {
        if names.is_empty() {
            return Ok(vec![]);
        }
        let t = zfs()
            .args(["get", "-H", "-p", "-o", "name,value", property])
            .args(names);
        let shown = t.shown().to_owned();
        let out = t.output()?;
        let rows = parse_rows(&shown, &out, 2)?;
        names
            .iter()
            .map(|n| {
                let row = rows
                    .iter()
                    .find(|r| &r[0] == n)
                    .ok_or_else(|| Error::Unparsed {
                        command: shown.clone(),
                        detail: format!("no {property} for {n}"),
                        output: out.clone(),
                    })?;
                parse_secs(&shown, &row[1])
            })
            .collect()
    }

    fn get_value(&self, name: &str, property: &str) -> Result<String> {
        let t = zfs().args(["get", "-H", "-o", "value", property]).arg(name);
        let shown = t.shown().to_owned();
        let out = t.output()?;
        let mut rows = parse_rows(&shown, &out, 1)?;
        if rows.len() != 1 {
            return Err(Error::Unparsed {
                command: shown,
                detail: "expected one value".into(),
                output: out,
            });
        }
        Ok(rows.remove(0).remove(0))
    }

    /// The file systems in `dataset`'s pool that are clones of `snapshot`.
    fn clones_of(&self, snapshot: &str) -> Result<Vec<String>> {
        let pool = snapshot.split(['/', '@']).next().unwrap_or(snapshot);
        let t = zfs().args(["list", "-H", "-o", "name,origin", "-r", pool]);
        let shown = t.shown().to_owned();
        let out = t.output()?;
        Ok(parse_rows(&shown, &out, 2)?
            .into_iter()
            .filter(|r| r[1] == snapshot)
            .map(|mut r| r.remove(0))
            .collect())
    }

    /// The tags of the holds on each of `snapshots` that are pvsnap's
    /// (OpenZFS: `zfs holds`; zfs-fuse: a pvsnap-named snapshot with
    /// `userrefs` above 0, since the tags cannot be listed there).
    fn held(&self, snapshots: &[String]) -> Result<Vec<String>> {
        if snapshots.is_empty() {
            return Ok(vec![]);
        }
        match self.flavor()? {
            Flavor::OpenZfs => {
                let t = zfs().args(["holds", "-H"]).args(snapshots);
                let shown = t.shown().to_owned();
                let out = t.output()?;
                Ok(parse_holds(&shown, &out)?
                    .into_iter()
                    .filter(|(_, tag)| tag == HOLD_TAG)
                    .map(|(snap, _)| snap)
                    .collect())
            }
            Flavor::ZfsFuse => {
                let refs = self.get_numbers(snapshots, "userrefs")?;
                Ok(snapshots
                    .iter()
                    .zip(refs)
                    .filter(|(s, n)| *n > 0 && leaf_is_ours(s))
                    .map(|(s, _)| s.clone())
                    .collect())
            }
        }
    }

    fn release_hold(snapshot: &str) -> Result<()> {
        zfs().args(["release", HOLD_TAG, snapshot]).run()
    }

    /// Returns `volume` to `snapshot`; the snapshots made after it are
    /// destroyed when `destroy_newer` (ZFS `rollback -r`), else the
    /// rollback is refused naming them.
    pub fn rollback_allowing(
        &self,
        volume: &Volume,
        snapshot: &NativeSnapshot,
        destroy_newer: bool,
    ) -> Result<()> {
        let names = self.snapshot_names(&volume.name)?;
        let Some(at) = names.iter().position(|n| n == &snapshot.handle) else {
            return Err(Error::Refused {
                what: snapshot.handle.clone(),
                detail: format!(
                    "no such snapshot of {}; see `zfs list -t snapshot`",
                    volume.name
                ),
            });
        };
        let newer = &names[at + 1..];
        if !newer.is_empty() && !destroy_newer {
            return Err(Error::Refused {
                what: snapshot.handle.clone(),
                detail: format!(
                    "rolling back would destroy the newer snapshots {}; roll back to the newest, or first `pvsnap forget` the snapshots that keep the newer ones (or `zfs destroy` them)",
                    newer.join(", ")
                ),
            });
        }
        let mut t = zfs().arg("rollback");
        if destroy_newer {
            t = t.arg("-r");
        }
        t.arg(&snapshot.handle).run()
    }

    fn snapshot_of(&self, volume: &str, name: &str, created: Option<i64>) -> NativeSnapshot {
        NativeSnapshot {
            kind: Kind::Zfs,
            volume: volume.to_owned(),
            name: name.to_owned(),
            handle: format!("{volume}@{name}"),
            created: created.and_then(|s| jiff::Timestamp::from_second(s).ok()),
        }
    }

    /// Reads `snapshot` through a temporary read-only clone mounted under
    /// the temporary folder; the returned view destroys it and releases
    /// the hold.
    fn open_by_clone(snapshot: &NativeSnapshot) -> Result<ReadView> {
        let tmp = naming::Name::new(Purpose::Tmp).to_string();
        let clone = format!("{}/{tmp}", snapshot.volume);
        let dir = std::env::temp_dir().join(&tmp);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let made = zfs()
            .args(["clone", "-o", "readonly=on", "-o"])
            .arg(format!("mountpoint={}", dir.display()))
            .arg(&snapshot.handle)
            .arg(&clone)
            .run();
        if let Err(e) = made {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        let handle = snapshot.handle.clone();
        Ok(ReadView::with_release(dir.clone(), move || {
            destroy_clone(&clone, Some(&dir))?;
            Zfs::release_hold(&handle)
        }))
    }
}

/// Destroys a temporary clone and the folder it was mounted on.
fn destroy_clone(clone: &str, dir: Option<&Path>) -> Result<()> {
    // A clone whose reader was just killed can be "busy" for a moment
    // while the filesystem lets go of its files: retried briefly.
    let mut tries = 0;
    loop {
        match zfs().args(["destroy", clone]).run() {
            Err(Error::ToolFailed { stderr, .. }) if stderr.contains("busy") && tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            r => break r?,
        }
    }
    if let Some(dir) = dir {
        // Only an empty folder goes: the clone is unmounted by now.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

/// Whether the last part of a dataset or snapshot name is a pvsnap name.
fn leaf_is_ours(name: &str) -> bool {
    let leaf = name.rsplit(['/', '@']).next().unwrap_or(name);
    naming::Name::parse(leaf).is_some()
}

/// Splits `zfs … -H` output into rows of exactly `columns` tab-separated
/// fields (dataset names may hold spaces, never tabs).
pub fn parse_rows(command: &str, out: &str, columns: usize) -> Result<Vec<Vec<String>>> {
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let row: Vec<String> = l.split('\t').map(str::to_owned).collect();
            if row.len() != columns {
                return Err(Error::Unparsed {
                    command: command.to_owned(),
                    detail: format!(
                        "expected {columns} tab-separated columns, found {}",
                        row.len()
                    ),
                    output: l.to_owned(),
                });
            }
            Ok(row)
        })
        .collect()
}

/// Parses `zfs holds -H` output: `SNAPSHOT\tTAG\tTIMESTAMP` rows; returns
/// (snapshot, tag).
pub fn parse_holds(command: &str, out: &str) -> Result<Vec<(String, String)>> {
    Ok(parse_rows(command, out, 3)?
        .into_iter()
        .map(|mut r| {
            let tag = r.remove(1);
            (r.remove(0), tag)
        })
        .collect())
}

fn parse_secs(command: &str, s: &str) -> Result<i64> {
    s.parse().map_err(|_| Error::Unparsed {
        command: command.to_owned(),
        detail: "expected a whole number (zfs -p)".into(),
        output: s.to_owned(),
    })
}

impl Provider for Zfs {
    fn kind(&self) -> Kind {
        Kind::Zfs
    }

    fn create(&self, volume: &Volume, name: &str) -> Result<NativeSnapshot> {
        if naming::Name::parse(name).is_none() {
            return Err(Error::Refused {
                what: format!("{}@{name}", volume.name),
                detail: "not a pvsnap snapshot name (pvsnap-keep|read|tmp-…)".into(),
            });
        }
        let handle = format!("{}@{name}", volume.name);
        zfs().args(["snapshot", &handle]).run()?;
        let created = self.get_numbers(std::slice::from_ref(&handle), "creation")?;
        Ok(self.snapshot_of(&volume.name, name, created.first().copied()))
    }

    fn open(&self, snapshot: &NativeSnapshot) -> Result<ReadView> {
        zfs().args(["hold", HOLD_TAG, &snapshot.handle]).run()?;
        let opened = (|| {
            if self.flavor()? == Flavor::OpenZfs {
                let mp = self.get_value(&snapshot.volume, "mountpoint")?;
                let dir = Path::new(&mp).join(".zfs/snapshot").join(&snapshot.name);
                // Looking inside mounts it; `snapdir=disabled` or an
                // unmounted dataset leaves it missing, and a clone is used.
                if mp.starts_with('/') && dir.is_dir() {
                    let handle = snapshot.handle.clone();
                    return Ok(ReadView::with_release(dir, move || {
                        Zfs::release_hold(&handle)
                    }));
                }
            }
            Zfs::open_by_clone(snapshot)
        })();
        if opened.is_err() {
            let _ = Zfs::release_hold(&snapshot.handle);
        }
        opened
    }

    fn destroy(&self, snapshot: &NativeSnapshot) -> Result<()> {
        let clones = self.clones_of(&snapshot.handle)?;
        if !clones.is_empty() {
            return Err(Error::Refused {
                what: snapshot.handle.clone(),
                detail: format!(
                    "it has clones {}; destroy or `zfs promote` them first",
                    clones.join(", ")
                ),
            });
        }
        if !self
            .held(std::slice::from_ref(&snapshot.handle))?
            .is_empty()
        {
            Zfs::release_hold(&snapshot.handle)?;
        }
        zfs().args(["destroy", &snapshot.handle]).run()
    }

    fn handles_of(&self, volume: &str) -> Result<Option<Vec<String>>> {
        self.snapshot_names(volume).map(Some)
    }

    fn list(&self, volume: &Volume) -> Result<Vec<NativeSnapshot>> {
        let mut all: Vec<NativeSnapshot> = self
            .snapshots(&volume.name)?
            .into_iter()
            .filter_map(|(full, secs)| {
                let (_, name) = full.split_once('@')?;
                naming::Name::parse(name)?;
                Some(self.snapshot_of(&volume.name, name, Some(secs)))
            })
            .collect();
        // Stable: ZFS lists in the order it made them, which breaks ties
        // within one second.
        all.sort_by_key(|s| s.created);
        Ok(all)
    }

    fn rollback(&self, volume: &Volume, snapshot: &NativeSnapshot) -> Result<()> {
        self.rollback_allowing(volume, snapshot, false)
    }

    fn clone_to(&self, snapshot: &NativeSnapshot, target: &Path) -> Result<PathBuf> {
        if !target.is_absolute() {
            return Err(Error::Refused {
                what: target.display().to_string(),
                detail: "a clone's mount point must be an absolute path".into(),
            });
        }
        // `tank/data-pvsnap-keep-…` next to the volume (`tank/tank-…` for
        // a pool's root), and not a leftover: its last part is not a
        // pvsnap name.
        let clone = match snapshot.volume.rsplit_once('/') {
            Some(_) => format!("{}-{}", snapshot.volume, snapshot.name),
            None => format!("{0}/{0}-{1}", snapshot.volume, snapshot.name),
        };
        zfs()
            .args(["clone", "-o"])
            .arg(format!("mountpoint={}", target.display()))
            .arg(&snapshot.handle)
            .arg(&clone)
            .run()?;
        Ok(target.to_owned())
    }

    fn leftovers(&self, volume: &Volume) -> Result<Vec<Leftover>> {
        let leftover = |what: &str, handle: &str| Leftover {
            kind: Kind::Zfs,
            what: what.to_owned(),
            handle: handle.to_owned(),
        };
        let mut found = vec![];
        // Clones first: the snapshots they come from cannot go before them.
        let t = zfs()
            .args(["list", "-H", "-t", "filesystem", "-o", "name", "-d", "1"])
            .arg(&volume.name);
        let shown = t.shown().to_owned();
        for row in parse_rows(&shown, &t.output()?, 1)? {
            let name = &row[0];
            let ours = name
                .strip_prefix(&format!("{}/", volume.name))
                .and_then(naming::Name::parse)
                .is_some_and(|n| n.purpose == Purpose::Tmp);
            if ours {
                found.push(leftover("clone", name));
            }
        }
        let snaps = self.snapshot_names(&volume.name)?;
        for s in self.held(&snaps)? {
            found.push(leftover("hold", &s));
        }
        for s in &snaps {
            let purpose = s
                .split_once('@')
                .and_then(|(_, n)| naming::Name::parse(n))
                .map(|n| n.purpose);
            if matches!(purpose, Some(Purpose::Read | Purpose::Tmp)) {
                found.push(leftover("snapshot", s));
            }
        }
        Ok(found)
    }

    fn remove_leftover(&self, leftover: &Leftover) -> Result<()> {
        let h = &leftover.handle;
        let purpose =
            naming::Name::parse(h.rsplit(['/', '@']).next().unwrap_or(h)).map(|n| n.purpose);
        let refuse = || Error::Refused {
            what: h.clone(),
            detail: format!("not a {} pvsnap leaves behind; left alone", leftover.what),
        };
        match leftover.what.as_str() {
            "clone" if purpose == Some(Purpose::Tmp) && !h.contains('@') => {
                let mp = self.get_value(h, "mountpoint")?;
                let dir = Path::new(&mp);
                let ours_dir = dir.starts_with(std::env::temp_dir())
                    && dir
                        .file_name()
                        .is_some_and(|f| f.to_string_lossy().starts_with(naming::PREFIX));
                destroy_clone(h, ours_dir.then_some(dir))
            }
            "hold" if h.contains('@') => Zfs::release_hold(h),
            "snapshot"
                if matches!(purpose, Some(Purpose::Read | Purpose::Tmp)) && h.contains('@') =>
            {
                let clones = self.clones_of(h)?;
                if !clones.is_empty() {
                    return Err(Error::Refused {
                        what: h.clone(),
                        detail: format!("it has clones {}; remove them first", clones.join(", ")),
                    });
                }
                zfs().args(["destroy", h]).run()
            }
            _ => Err(refuse()),
        }
    }
}
