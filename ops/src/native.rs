//! Native snapshots in the pipeline: the frozen source, native restore
//! points, and restoring from them.
//!
//! A source read through a native snapshot goes: place the folder on its
//! volume → remove that volume's leftovers from killed runs (reported) →
//! freeze (optional [`Freezer`]) → native snapshot → thaw → read the
//! snapshot's copy of the folder, recorded as the live folder's path (so
//! parents, `latest:SOURCE` and retention see one timeline) → release at
//! the end of the run (destroyed unless kept). Sources on one volume in one
//! run share one native snapshot, so they are consistent with each other.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use pvsnap_engine::snapshot::{Snapshot, SourceSnapshot};
use pvsnap_native::naming::{Name, Purpose};
use pvsnap_native::{Freezer, Kind, NativeSnapshot, Placed, Provider, ReadView};

use crate::error::{Error, Result};
use crate::observe::Observer;

/// `--source-snapshot`: whether a source is read through a native snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceSnapshotMode {
    /// Native where the storage can, else the live folder (with a note).
    Auto,
    /// Native, or the source fails naming why and what to do.
    Required,
    /// The live folder (and the default of this library).
    #[default]
    Off,
}

/// What a run does with native snapshots.
#[derive(Debug, Clone, Default)]
pub struct NativeOptions {
    pub mode: SourceSnapshotMode,
    /// Keep only the native snapshot, read nothing (a native restore point).
    pub native_only: bool,
    /// After a frozen read, keep the native snapshot and the last N kept
    /// ones of the source (`--keep-native N`).
    pub keep_native: Option<usize>,
    /// The size of thick LVM snapshots (`--lvm-snapshot-size`).
    pub lvm_snapshot_size: Option<pvsnap_native::lvm::SnapshotSize>,
    /// `--freeze NAME` for claims: the preset's session runs in the pod
    /// that mounts the claim (folders use the run's host freezer).
    pub freeze: Option<pvsnap_native::freeze::Preset>,
}

/// A freezer for one source (a claim's database, frozen in its pod), and
/// what it freezes: a native snapshot made under it is not shared with
/// sources frozen otherwise.
pub(crate) struct SourceFreezer {
    pub(crate) freezer: Box<dyn Freezer>,
    pub(crate) key: String,
}

/// One native snapshot a run made and reads from.
struct Held {
    provider: Box<dyn Provider>,
    snapshot: NativeSnapshot,
    view: Option<ReadView>,
    create_s: f64,
    freeze_window_s: f64,
    kept: bool,
    /// The [`SourceFreezer`] it was made under, if any.
    frozen_for: Option<String>,
}

/// The native snapshots of one run, released when it ends.
#[derive(Default)]
pub(crate) struct Natives {
    pub(crate) options: NativeOptions,
    pub(crate) freezer: Option<Box<dyn Freezer>>,
    held: Mutex<Vec<Held>>,
}

/// Where to read a source from: the folder in a native snapshot and its
/// record, or the live folder.
pub(crate) enum ReadFrom {
    Live,
    Native {
        dir: PathBuf,
        record: Box<SourceSnapshot>,
    },
}

fn seconds(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

impl Natives {
    /// Places `dir` and makes (or reuses) the native snapshot to read it
    /// from, frozen by `own` (a claim's pod) or else the run's freezer.
    pub(crate) fn read_from(
        &self,
        dir: &Path,
        own: Option<&SourceFreezer>,
        observer: &dyn Observer,
    ) -> Result<ReadFrom> {
        let mode = self.options.mode;
        if mode == SourceSnapshotMode::Off {
            return Ok(ReadFrom::Live);
        }
        let fallback = |e: pvsnap_native::Error| -> Result<ReadFrom> {
            if mode == SourceSnapshotMode::Required {
                return Err(Error::Native {
                    source_dir: dir.to_owned(),
                    error: e,
                });
            }
            observer.note(
                &dir.display().to_string(),
                &format!("no native snapshot, reading the live folder: {e}"),
            );
            Ok(ReadFrom::Live)
        };
        let placed = match pvsnap_native::place(dir) {
            Ok(Some(p)) => p,
            Ok(None) if mode == SourceSnapshotMode::Auto => return Ok(ReadFrom::Live),
            Ok(None) => return fallback(not_native(dir)),
            Err(e) => return fallback(e),
        };
        let provider = match pvsnap_native::provider_for(placed.volume.kind) {
            Ok(_) if placed.volume.kind == pvsnap_native::Kind::Lvm => {
                Box::new(pvsnap_native::lvm::Lvm {
                    snapshot_size: self.options.lvm_snapshot_size.unwrap_or_default(),
                    ..Default::default()
                }) as Box<dyn Provider>
            }
            Ok(p) => p,
            // A kind this pvsnap does not snapshot yet (any device-mapper
            // device looks like LVM at first): auto reads live quietly.
            Err(e) if mode == SourceSnapshotMode::Auto => {
                tracing::info!("{}: {e}; reading the live folder", dir.display());
                return Ok(ReadFrom::Live);
            }
            Err(e) => return fallback(e),
        };
        for c in &placed.caveats {
            observer.note(&dir.display().to_string(), c);
        }
        let mut held = self.held.lock().expect("native snapshots");
        let frozen_for = own.map(|o| o.key.clone());
        let i = match held.iter().position(|h| {
            h.snapshot.kind == placed.volume.kind
                && h.snapshot.volume == placed.volume.name
                && h.frozen_for == frozen_for
        }) {
            Some(i) => i,
            None => match self.make(provider, &placed, own, observer) {
                Ok(h) => {
                    held.push(h);
                    held.len() - 1
                }
                Err(Error::Native { error, .. }) => return fallback(error),
                Err(e) => return Err(e),
            },
        };
        let h = &held[i];
        let view = h.view.as_ref().expect("a held snapshot is open");
        Ok(ReadFrom::Native {
            dir: view.source(&placed.within),
            record: Box::new(SourceSnapshot {
                kind: h.snapshot.kind.as_str().to_owned(),
                volume: h.snapshot.volume.clone(),
                name: h.snapshot.name.clone(),
                handle: h.snapshot.handle.clone(),
                within: placed.within.to_string_lossy().into_owned(),
                create_s: h.create_s,
                freeze_window_s: h.freeze_window_s,
                kept: h.kept,
                native_only: self.options.native_only,
                usage: None,
                ready_s: None,
                driver: None,
                deletion_policy: None,
                snapshot: None,
            }),
        })
    }

    /// Leftovers removed, freeze, native snapshot, thaw, open.
    fn make(
        &self,
        provider: Box<dyn Provider>,
        placed: &Placed,
        own: Option<&SourceFreezer>,
        observer: &dyn Observer,
    ) -> Result<Held> {
        let freezer = match own {
            Some(o) => Some(o.freezer.as_ref()),
            None => self.freezer.as_deref(),
        };
        let volume = &placed.volume;
        let native = |error| Error::Native {
            source_dir: volume.mount_point.join(&placed.within),
            error,
        };
        for l in provider.leftovers(volume).map_err(native)? {
            provider.remove_leftover(&l).map_err(native)?;
            observer.note(
                &volume.name,
                &format!("removed {} {} left by an interrupted run", l.what, l.handle),
            );
        }
        let kept = self.options.native_only || self.options.keep_native.is_some();
        let name = Name::new(if kept { Purpose::Keep } else { Purpose::Read }).to_string();
        let (frozen, held_since) = freeze(freezer)?;
        let started = Instant::now();
        let made = provider.create(volume, &name);
        let create_s = seconds(started);
        let thawed = frozen.map(|f| f.thaw());
        let freeze_window_s = if freezer.is_some() {
            seconds(held_since)
        } else {
            create_s
        };
        let snapshot = made.map_err(native)?;
        if let Some(Err(e)) = thawed {
            let _ = provider.destroy(&snapshot);
            return Err(Error::Freeze {
                freezer: freezer.map(|f| f.name().to_owned()).unwrap_or_default(),
                error: e,
            });
        }
        let view = match provider.open(&snapshot) {
            Ok(v) => v,
            Err(e) => {
                let _ = provider.destroy(&snapshot);
                return Err(native(e));
            }
        };
        Ok(Held {
            provider,
            snapshot,
            view: Some(view),
            create_s,
            freeze_window_s,
            kept,
            frozen_for: own.map(|o| o.key.clone()),
        })
    }

    /// How full the held native snapshot of `record` is (LVM thick
    /// snapshots), for a watch during the read; `None` where the storage
    /// has no such limit.
    pub(crate) fn usage(&self, record: &SourceSnapshot) -> Option<f64> {
        let held = self.held.lock().expect("native snapshots");
        let h = held.iter().find(|h| h.snapshot.handle == record.handle)?;
        h.provider.usage(&h.snapshot).ok().flatten()
    }

    /// Closes every view and destroys the snapshots not kept; the failures.
    pub(crate) fn release(&self) -> Vec<String> {
        let mut failed = vec![];
        for mut h in self.held.lock().expect("native snapshots").drain(..) {
            if let Some(v) = h.view.take()
                && let Err(e) = v.release()
            {
                failed.push(naming(&h.snapshot.handle, &e));
            }
            if !h.kept
                && let Err(e) = h.provider.destroy(&h.snapshot)
            {
                failed.push(format!(
                    "{}; the next snapshot of this volume removes it",
                    naming(&h.snapshot.handle, &e)
                ));
            }
        }
        failed
    }
}

impl Drop for Natives {
    fn drop(&mut self) {
        for f in self.release() {
            tracing::warn!("releasing a native snapshot: {f}");
        }
    }
}

fn not_native(dir: &Path) -> pvsnap_native::Error {
    let on = pvsnap_native::mountinfo::read()
        .ok()
        .and_then(|m| {
            let canon = std::fs::canonicalize(dir).ok()?;
            pvsnap_native::mountinfo::holding(&m, &canon)
                .map(|m| format!("{} at {}", m.fs_type, m.mount_point.display()))
        })
        .unwrap_or_else(|| "a filesystem".into());
    pvsnap_native::Error::NotNative {
        path: dir.to_owned(),
        reason: format!(
            "on {on}, which has no native snapshots (btrfs, ZFS, LVM); move the folder to such storage (on btrfs: `btrfs subvolume create {}` and copy the content in), or snapshot with --source-snapshot auto or off (a live read)",
            dir.display()
        ),
    }
}

/// The excludes of a source read from `read` instead of `live`: a full host
/// path inside the live folder becomes the pattern anchored at the root.
pub(crate) fn rebase_excludes(excludes: &[String], live: &Path) -> Vec<String> {
    let root = live.to_string_lossy();
    let root = root.trim_end_matches('/');
    excludes
        .iter()
        .map(|p| match p.strip_prefix(root) {
            Some(rest) if rest.starts_with('/') && !root.is_empty() => rest.to_owned(),
            _ => p.clone(),
        })
        .collect()
}

/// The storage's view of a recorded native snapshot, and its provider.
pub fn recorded(rec: &SourceSnapshot) -> Result<(Box<dyn Provider>, NativeSnapshot)> {
    let kind: Kind = serde_json::from_value(serde_json::Value::String(rec.kind.clone()))
        .map_err(|_| Error::Invalid(format!(
            "the native snapshot {} is of kind {:?}, which this pvsnap does not know; use a newer pvsnap",
            rec.handle, rec.kind
        )))?;
    let provider = pvsnap_native::provider_for(kind).map_err(|error| Error::Native {
        source_dir: PathBuf::from(&rec.volume),
        error,
    })?;
    Ok((
        provider,
        NativeSnapshot {
            kind,
            volume: rec.volume.clone(),
            name: rec.name.clone(),
            handle: rec.handle.clone(),
            created: None,
        },
    ))
}

/// Destroys the native snapshots kept by `forgotten` that no snapshot in
/// `remaining` still records; a native snapshot already gone is a note.
/// Returns one line per native snapshot: what happened.
pub fn destroy_forgotten(forgotten: &[Snapshot], remaining: &[Snapshot]) -> Vec<(bool, String)> {
    let still: HashSet<&str> = remaining
        .iter()
        .filter_map(|s| s.kept_native())
        .map(|n| n.handle.as_str())
        .collect();
    let mut done = HashSet::new();
    let mut out = vec![];
    for s in forgotten {
        let Some(n) = s.kept_native() else { continue };
        if still.contains(n.handle.as_str()) || !done.insert(n.handle.clone()) {
            continue;
        }
        let r = recorded(n).and_then(|(p, snap)| {
            p.destroy(&snap).map_err(|error| Error::Native {
                source_dir: PathBuf::from(&n.volume),
                error,
            })
        });
        out.push(match r {
            Ok(()) => (
                true,
                format!("destroyed the {} snapshot {}", n.kind, n.handle),
            ),
            Err(Error::Native {
                error: pvsnap_native::Error::Missing { .. },
                ..
            }) => (
                true,
                format!(
                    "warning: the {} snapshot {} was already gone from the storage",
                    n.kind, n.handle
                ),
            ),
            Err(e) => (false, naming(&n.handle, &e)),
        });
    }
    out
}

/// Freezes with `freezer`, if any: the guard, and when the database began
/// to be held (the freeze window's start). A freeze that fails stops the
/// source: it was asked for.
pub(crate) fn freeze(
    freezer: Option<&dyn Freezer>,
) -> Result<(Option<Box<dyn pvsnap_native::Frozen>>, Instant)> {
    let called = Instant::now();
    let frozen = match freezer {
        Some(f) => Some(f.freeze().map_err(|error| Error::Freeze {
            freezer: f.name().to_owned(),
            error,
        })?),
        None => None,
    };
    let since = frozen
        .as_ref()
        .and_then(|f| f.held_since())
        .unwrap_or(called);
    Ok((frozen, since))
}

/// `handle: error`, unless the error already starts with the handle (a
/// refusal names what it refused).
fn naming(handle: &str, e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    if text.starts_with(handle) {
        text
    } else {
        format!("{handle}: {text}")
    }
}

/// `--keep-native N` after a frozen read of `source`: the native snapshots
/// kept by the source's records beyond the newest `keep` are destroyed
/// (unless a newer record shares them). Returns what was destroyed.
pub(crate) fn prune_kept(snaps: &[Snapshot], source: &str, keep: usize) -> Vec<String> {
    let mut mine: Vec<&Snapshot> = snaps
        .iter()
        .filter(|s| s.source.key() == source && !s.is_native_only() && s.kept_native().is_some())
        .collect();
    mine.sort_by_key(|s| std::cmp::Reverse(s.time));
    let (newest, older) = mine.split_at(keep.min(mine.len()));
    let older: Vec<Snapshot> = older.iter().map(|s| (*s).clone()).collect();
    let newest: Vec<Snapshot> = newest.iter().map(|s| (*s).clone()).collect();
    destroy_forgotten(&older, &newest)
        .into_iter()
        .filter(|(_, line)| !line.starts_with("warning: "))
        .map(|(_, line)| line)
        .collect()
}

/// The folder holding `snap`'s source inside its native snapshot, and the
/// view that keeps it readable.
fn open_recorded(snap: &Snapshot) -> Result<(ReadView, PathBuf, SourceSnapshot)> {
    let Some(n) = snap.kept_native() else {
        return Err(Error::Invalid(format!(
            "snapshot {} keeps no native snapshot",
            snap.short_id()
        )));
    };
    let (provider, native) = recorded(n)?;
    let view = provider.open(&native).map_err(|error| Error::Native {
        source_dir: PathBuf::from(snap.source.key()),
        error,
    })?;
    let dir = view.source(Path::new(&n.within));
    Ok((view, dir, n.clone()))
}

/// `restore SNAP --target DIR` of a native restore point: a plain recursive
/// copy (`cp -a`, which keeps owners, modes, times, xattrs and hard links,
/// and shares data with `--reflink=auto` where the filesystem can) out of
/// the native snapshot into `target`, which must be missing or empty.
pub fn copy_out(snap: &Snapshot, target: &Path) -> Result<()> {
    if let Ok(mut rd) = std::fs::read_dir(target)
        && rd.next().is_some()
    {
        return Err(Error::Invalid(format!(
            "{} is not empty; a native restore point is copied into a new or empty folder",
            target.display()
        )));
    }
    std::fs::create_dir_all(target)
        .map_err(|e| Error::Invalid(format!("{}: cannot create: {e}", target.display())))?;
    let (view, dir, _) = open_recorded(snap)?;
    let mut from = dir.into_os_string();
    from.push("/.");
    pvsnap_native::tool::Tool::new("cp")
        .args(["-a", "--reflink=auto", "--"])
        .arg(&from)
        .arg(target)
        .run()
        .map_err(|error| Error::Native {
            source_dir: target.to_owned(),
            error,
        })?;
    view.release().map_err(|error| Error::Native {
        source_dir: target.to_owned(),
        error,
    })
}

/// `restore SNAP --clone-to PATH`: a writable copy sharing the data.
pub fn clone_to(snap: &Snapshot, target: &Path) -> Result<PathBuf> {
    let Some(n) = snap.kept_native() else {
        return Err(Error::Invalid(format!(
            "snapshot {} keeps no native snapshot to clone; restore it with --target",
            snap.short_id()
        )));
    };
    let (provider, native) = recorded(n)?;
    let made = provider
        .clone_to(&native, target)
        .map_err(|error| Error::Native {
            source_dir: target.to_owned(),
            error,
        })?;
    // The clone holds the whole volume; the source is inside it.
    Ok(made.join(&n.within))
}

/// `restore SNAP --rollback`: the source's volume returned to the native
/// snapshot. The caller has stopped every writer. Returns where the
/// volume's content from before is kept, when the storage keeps it.
pub fn rollback(snap: &Snapshot) -> Result<Option<PathBuf>> {
    let live = PathBuf::from(match &snap.source {
        pvsnap_engine::snapshot::Source::Path { path } => path.clone(),
        pvsnap_engine::snapshot::Source::Pvc { host_path, .. } => host_path.clone(),
    });
    Rollback::check(snap, &live)?.run()
}

/// A rollback checked against the storage, not yet run.
pub struct Rollback {
    live: PathBuf,
    placed: Placed,
    provider: Box<dyn Provider>,
    native: NativeSnapshot,
    record: SourceSnapshot,
}

impl Rollback {
    /// Checks, changing nothing, that `live` (the source's folder as this
    /// process sees it) is still on the volume `snap`'s native snapshot
    /// was made of, at the same place in it.
    pub fn check(snap: &Snapshot, live: &Path) -> Result<Rollback> {
        let Some(n) = snap.kept_native() else {
            return Err(Error::Invalid(format!(
                "snapshot {} keeps no native snapshot to roll back to; restore it with --target",
                snap.short_id()
            )));
        };
        let native_err = |error| Error::Native {
            source_dir: live.to_owned(),
            error,
        };
        let placed = pvsnap_native::place(live)
            .map_err(native_err)?
            .ok_or_else(|| native_err(not_native(live)))?;
        if placed.volume.name != n.volume || placed.volume.kind.as_str() != n.kind {
            return Err(Error::Invalid(format!(
                "{} is now on the {} volume {}, not on {} that the snapshot was made of; nothing was changed",
                live.display(),
                placed.volume.kind,
                placed.volume.name,
                n.volume
            )));
        }
        if placed.within != Path::new(&n.within) {
            return Err(Error::Invalid(format!(
                "{} is now at {:?} in the {} volume {}, not at {:?} where the snapshot found it; nothing was changed",
                live.display(),
                placed.within,
                n.kind,
                n.volume,
                n.within
            )));
        }
        let (provider, native) = recorded(n)?;
        Ok(Rollback {
            live: live.to_owned(),
            placed,
            provider,
            native,
            record: n.clone(),
        })
    }

    /// The native snapshot rolled back to.
    pub fn record(&self) -> &SourceSnapshot {
        &self.record
    }

    /// Where the source's folder is inside the volume (empty: the source
    /// is the whole volume).
    pub fn within(&self) -> &Path {
        &self.placed.within
    }

    /// The folder the rollback replaces: the whole volume's mount (btrfs:
    /// the subvolume), which holds the source.
    pub fn swapped(&self) -> &Path {
        &self.placed.volume.mount_point
    }

    /// Returns the volume to the snapshot; where the content from before
    /// is kept, when the storage keeps it (btrfs).
    pub fn run(self) -> Result<Option<PathBuf>> {
        self.provider
            .rollback(&self.placed.volume, &self.native)
            .map_err(|error| Error::Native {
                source_dir: self.live.clone(),
                error,
            })?;
        Ok(match self.placed.volume.kind {
            Kind::Btrfs => pvsnap_native::btrfs::set_aside(&self.placed.volume).pop(),
            _ => None,
        })
    }
}

/// The processes (`pid (command)`) with a file, folder or working folder
/// under `dir`, from `/proc`.
pub fn open_under(dir: &Path) -> Vec<String> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let me = std::process::id().to_string();
    let mut out = vec![];
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let base = p.path();
        let mut links: Vec<PathBuf> = vec![base.join("cwd"), base.join("root")];
        if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
            links.extend(fds.flatten().map(|f| f.path()));
        }
        let hit = links
            .iter()
            .filter_map(|l| std::fs::read_link(l).ok())
            .any(|t| t.starts_with(dir));
        if hit {
            let comm = std::fs::read_to_string(base.join("comm")).unwrap_or_default();
            out.push(format!("{pid} ({})", comm.trim()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::naming;

    #[test]
    fn a_refusal_that_names_the_snapshot_is_not_named_twice() {
        let refused = pvsnap_native::Error::Refused {
            what: "tank/k8s@pvsnap-1".into(),
            detail: "it has clones tank/dev; remove them first".into(),
        };
        assert_eq!(
            naming("tank/k8s@pvsnap-1", &refused),
            "tank/k8s@pvsnap-1: it has clones tank/dev; remove them first"
        );
        let missing = pvsnap_native::Error::Missing {
            what: "the pool".into(),
        };
        assert_eq!(
            naming("tank/k8s@pvsnap-1", &missing),
            "tank/k8s@pvsnap-1: the pool no longer exists"
        );
    }
}
