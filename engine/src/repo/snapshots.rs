//! Snapshot objects in the repository: saving, loading, listing in one
//! order, resolving a user's spec.

use std::borrow::Borrow;

use rayon::prelude::*;

use super::Repository;
use crate::backend::ObjectKey;
use crate::error::{BackendError, Error, Result};
use crate::repo::format::ObjectKind;
use crate::repo::id::SnapshotId;
use crate::snapshot::Snapshot;

/// A snapshot object that could not be read, and why.
pub type Unreadable = (SnapshotId, Error);

/// Logs a warning for each unreadable snapshot object, naming the command
/// that removes it.
pub fn warn_unreadable_snapshots(bad: &[Unreadable]) {
    for (id, e) in bad {
        tracing::warn!(
            "skipped an unreadable snapshot object: {e}; remove it with `pvsnap forget {id}`"
        );
    }
}

impl Repository {
    fn snapshot_key(id: &SnapshotId) -> ObjectKey {
        ObjectKey::new(ObjectKind::Snapshot, id.to_hex())
    }

    /// Encodes a snapshot object.
    pub fn encode_snapshot(&self, snap: &Snapshot) -> Vec<u8> {
        crate::snapshot::encode_snapshot(snap, &self.crypto)
    }

    /// Writes a snapshot object: the commit point. Returns the bytes written.
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<u64> {
        let bytes = self.encode_snapshot(snap);
        self.backend.put(&Self::snapshot_key(&snap.id), &bytes)?;
        Ok(bytes.len() as u64)
    }

    /// Reads and validates one snapshot object (see
    /// [`crate::snapshot::decode_snapshot`]).
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let bytes = self.backend.get(&Self::snapshot_key(id))?;
        crate::snapshot::decode_snapshot(&bytes, &self.crypto, id)
    }

    /// Every snapshot, oldest first (ties broken by id); fails on the first
    /// object that cannot be read (see [`Repository::snapshots_lenient`]).
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let names = self.backend.list(ObjectKind::Snapshot)?;
        let mut snaps: Vec<Snapshot> = names
            .par_iter()
            .filter_map(|(n, _)| n.parse::<SnapshotId>().ok())
            .map(|id| self.load_snapshot(&id))
            .collect::<Result<_>>()?;
        sort_snapshots(&mut snaps);
        Ok(snaps)
    }

    /// Every readable snapshot, oldest first, and the ids of those that could
    /// not be read with the reason: one damaged snapshot object must not
    /// hide the others or stop a backup. Callers decide what an unreadable
    /// one means: readers warn and go on, `forget` removes it only by id,
    /// and prune refuses to run (it cannot know what the object needs).
    pub fn snapshots_lenient(&self) -> Result<(Vec<Snapshot>, Vec<Unreadable>)> {
        let names = self.backend.list(ObjectKind::Snapshot)?;
        let loaded: Vec<(SnapshotId, Result<Snapshot>)> = names
            .par_iter()
            .filter_map(|(n, _)| n.parse::<SnapshotId>().ok())
            .map(|id| (id, self.load_snapshot(&id)))
            .collect();
        let mut snaps = Vec::new();
        let mut bad = Vec::new();
        for (id, r) in loaded {
            match r {
                Ok(s) => snaps.push(s),
                Err(Error::Backend(BackendError::NotFound { .. })) => {} // forgotten meanwhile
                Err(e) => bad.push((id, e)),
            }
        }
        sort_snapshots(&mut snaps);
        Ok((snaps, bad))
    }

    /// Rewrites `snap` with `tags` as its tags and returns the new snapshot.
    /// Snapshot objects are never changed in place: the copy gets a new id
    /// and names the first id in `original`; it is written before the old
    /// object is removed, so a crash in between leaves both (the copy's
    /// `original` tells them apart), never neither.
    pub fn retag(&self, snap: &Snapshot, tags: Vec<String>) -> Result<Snapshot> {
        let mut new = snap.clone();
        new.id = SnapshotId(crate::repo::id::Id::random());
        new.original = Some(snap.original.unwrap_or(snap.id));
        new.tags = tags;
        self.save_snapshot(&new)?;
        self.delete_snapshot(&snap.id)?;
        Ok(new)
    }

    pub fn delete_snapshot(&self, id: &SnapshotId) -> Result<()> {
        Ok(self.backend.delete(&Self::snapshot_key(id))?)
    }

    /// Resolves a full id, a unique prefix, `latest` or `latest:SOURCE` for
    /// a command that works on one source: `latest` is the newest snapshot
    /// of the repository's only source, and an error listing the sources
    /// when it holds several (see [`resolve_for`]). Damaged snapshot objects
    /// are skipped with a warning.
    pub fn resolve_snapshot(&self, spec: &str) -> Result<Snapshot> {
        let (snaps, bad) = self.snapshots_lenient()?;
        warn_unreadable_snapshots(&bad);
        resolve_for(&snaps, spec, None).cloned()
    }

    /// As [`Repository::resolve_snapshot`], but `latest` is the newest
    /// snapshot of the source key `near` when it has one (the claim a
    /// restore writes into).
    pub fn resolve_snapshot_near(&self, spec: &str, near: &str) -> Result<Snapshot> {
        let (snaps, bad) = self.snapshots_lenient()?;
        warn_unreadable_snapshots(&bad);
        resolve_for(&snaps, spec, Some(near)).cloned()
    }

    /// Resolves the two sides of a comparison: a plain `latest` on one side
    /// is the newest snapshot of the other side's source.
    pub fn resolve_pair(&self, from: &str, to: &str) -> Result<(Snapshot, Snapshot)> {
        let (snaps, bad) = self.snapshots_lenient()?;
        warn_unreadable_snapshots(&bad);
        let (x, y) = if from == LATEST && to != LATEST {
            let y = resolve_for(&snaps, to, None)?;
            (resolve_for(&snaps, from, Some(&y.source.key()))?, y)
        } else {
            let x = resolve_for(&snaps, from, None)?;
            (x, resolve_for(&snaps, to, Some(&x.source.key()))?)
        };
        Ok((x.clone(), y.clone()))
    }
}

const LATEST: &str = "latest";

/// The source key a user's SOURCE names (in `latest:SOURCE` and
/// `snapshots --source`): `pvc/NS/NAME` and absolute paths as written; a
/// relative path resolved against the current folder the way `pvsnap
/// snapshot` resolves its folders (symlinks followed), or, when it does not
/// exist any more, with `.` and `..` taken as written.
pub fn source_key(arg: &str) -> String {
    let path = std::path::Path::new(arg);
    if arg.is_empty() || path.is_absolute() || arg.starts_with("pvc/") {
        return arg.to_string();
    }
    if let Ok(abs) = std::fs::canonicalize(path) {
        return abs.to_string_lossy().into_owned();
    }
    let Ok(mut abs) = std::env::current_dir() else {
        return arg.to_string();
    };
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                abs.pop();
            }
            std::path::Component::Normal(n) => abs.push(n),
            _ => {}
        }
    }
    abs.to_string_lossy().into_owned()
}

/// Whether a snapshot's source key is the one a user named (trailing `/`
/// aside); `want` is already through [`source_key`].
pub fn same_source(key: &str, want: &str) -> bool {
    key.trim_end_matches('/') == want.trim_end_matches('/')
}

/// The distinct source keys of `snaps`, sorted.
fn source_keys(snaps: &[Snapshot]) -> Vec<String> {
    let keys: std::collections::BTreeSet<String> = snaps.iter().map(|s| s.source.key()).collect();
    keys.into_iter().collect()
}

/// The one order of snapshots: oldest first, ties broken by id.
pub fn sort_snapshots<S: Borrow<Snapshot>>(snaps: &mut [S]) {
    snaps.sort_by(|a, b| {
        let (a, b) = (a.borrow(), b.borrow());
        a.time.cmp(&b.time).then(a.id.cmp(&b.id))
    });
}

/// Resolves `spec` within a list sorted oldest first for a command that
/// works on one source: `latest` is the newest snapshot of `near` when that
/// source has one, else of the only source in `snaps`; with several sources
/// it is an error that lists them in the `latest:SOURCE` form.
pub fn resolve_for<'a>(
    snaps: &'a [Snapshot],
    spec: &str,
    near: Option<&str>,
) -> Result<&'a Snapshot> {
    if spec != LATEST {
        return resolve_in(snaps, spec);
    }
    if let Some(near) = near
        && let Some(s) = snaps
            .iter()
            .rev()
            .find(|s| same_source(&s.source.key(), near))
    {
        return Ok(s);
    }
    let sources = source_keys(snaps);
    if sources.len() > 1 {
        return Err(Error::LatestNeedsSource {
            near: near.map(str::to_string),
            sources,
        });
    }
    resolve_in(snaps, spec)
}

/// Resolves `spec` within a list sorted oldest first; `latest` is the newest
/// snapshot of any source (callers that act on one source use
/// [`resolve_for`]).
pub fn resolve_in<'a>(snaps: &'a [Snapshot], spec: &str) -> Result<&'a Snapshot> {
    if spec == LATEST {
        return snaps
            .last()
            .ok_or_else(|| Error::SnapshotNotFound(spec.into()));
    }
    if let Some(source) = spec.strip_prefix("latest:") {
        let want = source_key(source);
        return snaps
            .iter()
            .rev()
            .find(|s| same_source(&s.source.key(), &want))
            .ok_or_else(|| Error::NoSnapshotOfSource {
                given: source.to_string(),
                key: want,
                sources: source_keys(snaps),
            });
    }
    let lower = spec.to_ascii_lowercase();
    if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::SnapshotNotFound(spec.into()));
    }
    let matches: Vec<&Snapshot> = snaps
        .iter()
        .filter(|s| s.id.to_hex().starts_with(&lower))
        .collect();
    match matches.len() {
        0 => Err(Error::SnapshotNotFound(spec.into())),
        1 => Ok(matches[0]),
        n => Err(Error::AmbiguousSnapshot {
            prefix: spec.into(),
            count: n,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::backend::DynBackend;
    use crate::backend::faulty::FaultyBackend;
    use crate::testutil::{mem_repo, reopen, snapshot};

    #[test]
    fn retag_writes_the_copy_before_removing_the_original() {
        let (mem, repo) = mem_repo(true);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let snap = snapshot(&repo, dir.path(), "/src", "2026-01-01T00:00:00Z");
        // The copy cannot be written: the original stays as it was.
        let no_puts: DynBackend = Arc::new(FaultyBackend::new(mem.clone(), 0));
        assert!(reopen(no_puts).retag(&snap, vec!["t".into()]).is_err());
        assert_eq!(repo.snapshots().unwrap(), vec![snap.clone()]);
        // The original cannot be removed (a crash there): both remain, the
        // copy naming the original.
        let no_deletes: DynBackend =
            Arc::new(FaultyBackend::new(mem.clone(), -1).fail_deletes_after(0));
        assert!(reopen(no_deletes).retag(&snap, vec!["t".into()]).is_err());
        let both = repo.snapshots().unwrap();
        assert_eq!(both.len(), 2);
        let copy = both.iter().find(|s| s.id != snap.id).unwrap();
        assert_eq!(copy.original, Some(snap.id));
        assert_eq!((copy.tree, &copy.tags), (snap.tree, &vec!["t".to_string()]));
        // A copy of the copy still names the first id.
        let again = repo.retag(copy, vec![]).unwrap();
        assert_eq!(again.original, Some(snap.id));
        assert!(repo.load_snapshot(&copy.id).is_err());
    }
}
