//! The audit trail: one immutable object per run of a command that changes
//! the repository or a volume, recording who ran what, where, and how it
//! ended (see `FORMAT.md`, "Audit entries").
//!
//! An entry is an object `audit/<ID>`: the common header and checksum, then
//! the JSON of [`Entry`], sealed with the repository key when the repository
//! is encrypted. `ID` is the BLAKE3 hash of the whole stored object, so the
//! name proves the bytes. Each entry names the entries that were the newest
//! when it was written (`parents`: those no other entry names), which makes
//! the trail a hash chain; two writers at once both name the same parents,
//! so the chain is a DAG with several heads, which is normal.
//!
//! [`verify`] finds objects whose bytes do not match their name (altered),
//! that cannot be read, and parents that are missing (a gap) without an
//! `audit forget` entry that accounts for them. What it cannot find: the
//! newest entries (heads) removed together, and, in an unencrypted
//! repository, a whole rewritten trail (anyone can compute the hashes).
//! ARCHITECTURE.md says more.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::backend::ObjectKey;
use crate::error::{BackendError, FormatError, Result};
use crate::repo::Repository;
use crate::repo::format::{ObjectKind, decode_checked, encode_checked};

/// The operation name of an `audit forget` entry.
pub const FORGET_OPERATION: &str = "audit forget";

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Failed,
    Interrupted,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        })
    }
}

/// The Kubernetes pod a command ran in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kubernetes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// One audit entry, as stored (without its id, which is the hash of the
/// stored object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub time: Timestamp,
    /// The command, as typed after `pvsnap` (`snapshot`, `restore`, `key add`).
    pub operation: String,
    /// The arguments that matter (sources, targets, filters); never passwords.
    #[serde(default)]
    pub args: Vec<String>,
    /// The source a snapshot run was about (one entry per source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Snapshots written, restored, forgotten or tagged.
    #[serde(default)]
    pub snapshots: Vec<String>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Kubernetes>,
    /// The pvsnap version that wrote the entry.
    pub version: String,
    /// Ids of the entries that were the newest when this one was written.
    #[serde(default)]
    pub parents: Vec<String>,
    /// For `audit forget`: the ids of the entries it removed, so that
    /// [`verify`] does not report them as a gap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forgotten: Vec<String>,
    /// For `drill`: the recovery time, seconds from the start of the
    /// restore to its end (absent in entries older than this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// For `audit forget`: what numbers derived from the trail (metrics)
    /// took from the entries it removed, so removing them changes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried: Option<Carried>,
    /// For an entry `copy` re-sealed for another repository's key: the ids
    /// it had in the repositories it came from (oldest first). Parents and
    /// `forgotten` lists name entries by those ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// What an `audit forget` entry carries forward of the entries it removed
/// (and of the forget entries among them): the failed snapshot runs per
/// source and host, and the newest removed `snapshot` entry of each source
/// and host, `check` and `drill` entry, as they were.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Carried {
    #[serde(default)]
    pub failures: Vec<SourceFailures>,
    /// Copies with `parents`, `forgotten` and `carried` emptied.
    #[serde(default)]
    pub latest: Vec<Entry>,
}

/// Snapshot runs of one source on one host that ended failed or interrupted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFailures {
    pub source: String,
    pub host: String,
    pub count: u64,
}

impl Entry {
    /// An entry for `operation` now, by this process on this machine, with
    /// no parents yet ([`record`] fills them in).
    pub fn new(operation: &str, outcome: Outcome) -> Self {
        let uid = crate::sys::host::euid();
        Entry {
            time: Timestamp::now(),
            operation: operation.into(),
            args: Vec::new(),
            source: None,
            snapshots: Vec::new(),
            outcome,
            error: None,
            uid,
            user: crate::sys::host::user_name(uid),
            host: crate::repo::host::hostname(),
            kubernetes: kubernetes_identity(),
            version: env!("CARGO_PKG_VERSION").into(),
            parents: Vec::new(),
            forgotten: Vec::new(),
            rto_seconds: None,
            carried: None,
            aliases: Vec::new(),
        }
    }
}

/// Where the service account token's namespace lies in a pod.
const SA_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The pod this process runs in: `POD_NAME` and `POD_NAMESPACE` (set from
/// the downward API), else the service account's namespace; `None`
/// outside Kubernetes.
pub fn kubernetes_identity() -> Option<Kubernetes> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let pod = env("POD_NAME");
    let namespace = env("POD_NAMESPACE").or_else(|| {
        std::fs::read_to_string(SA_NAMESPACE)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    });
    (pod.is_some() || namespace.is_some()).then_some(Kubernetes { pod, namespace })
}

const AAD: &[u8] = b"pvsnap audit";

/// Encodes an entry; returns its id (object name) and bytes.
pub fn encode(repo: &Repository, entry: &Entry) -> (String, Vec<u8>) {
    let json = serde_json::to_vec(entry).expect("audit entry serializes");
    let sealed = repo.crypto().seal(AAD, json);
    let bytes = encode_checked(ObjectKind::Audit, repo.crypto().is_encrypted(), &sealed);
    (blake3::hash(&bytes).to_hex().to_string(), bytes)
}

/// Decodes the object `id`, checking that its bytes hash to its name.
pub fn decode(repo: &Repository, id: &str, bytes: &[u8]) -> Result<Entry> {
    let what = || format!("audit/{id}");
    let invalid = |detail: String| FormatError::Invalid {
        what: what(),
        detail,
    };
    if blake3::hash(bytes).to_hex().as_str() != id {
        return Err(invalid("its bytes do not match its name: altered or damaged".into()).into());
    }
    let (header, sealed) = decode_checked(bytes, ObjectKind::Audit, &what)?;
    if header.version < 2 {
        return Err(invalid("version 1 was never written for audit entries".into()).into());
    }
    if header.encrypted() != repo.crypto().is_encrypted() {
        return Err(invalid("encryption flag does not match the repository".into()).into());
    }
    let json = repo.crypto().open(AAD, sealed, &what)?;
    Ok(serde_json::from_slice(&json).map_err(|e| invalid(e.to_string()))?)
}

/// What reading the trail found.
#[derive(Debug, Default)]
pub struct Trail {
    /// Entries that decode, by id.
    pub entries: BTreeMap<String, Entry>,
    /// Objects that do not, as (id, what is wrong).
    pub damaged: Vec<(String, String)>,
}

impl Trail {
    /// Entries oldest first (ties by id).
    pub fn sorted(&self) -> Vec<(&String, &Entry)> {
        let mut v: Vec<_> = self.entries.iter().collect();
        v.sort_by(|a, b| (a.1.time, a.0).cmp(&(b.1.time, b.0)));
        v
    }

    /// Ids no other entry names as a parent: the newest, which the next
    /// entry will name. Damaged objects count as seen, so a later entry
    /// still points at them and `verify` keeps reporting them.
    pub fn heads(&self) -> Vec<String> {
        let named: BTreeSet<&str> = self
            .entries
            .values()
            .flat_map(|e| e.parents.iter().map(String::as_str))
            .collect();
        let aliases_named = |id: &str| {
            self.entries
                .get(id)
                .is_some_and(|e| e.aliases.iter().any(|a| named.contains(a.as_str())))
        };
        self.entries
            .keys()
            .chain(self.damaged.iter().map(|(id, _)| id))
            .filter(|id| !named.contains(id.as_str()) && !aliases_named(id))
            .cloned()
            .collect()
    }

    /// Every id an entry of the trail is known by: its own, its aliases
    /// (copied entries), and damaged objects' ids.
    pub fn known_ids(&self) -> BTreeSet<&str> {
        self.entries
            .iter()
            .flat_map(|(id, e)| std::iter::once(id).chain(&e.aliases))
            .chain(self.damaged.iter().map(|(id, _)| id))
            .map(String::as_str)
            .collect()
    }
}

/// Reads every audit object, several at a time (a remote repository's
/// local cache keeps them, so a trail is fetched once).
pub fn read(repo: &Repository) -> Result<Trail> {
    use rayon::prelude::*;
    let names: Vec<String> = repo
        .backend()
        .list(ObjectKind::Audit)?
        .into_iter()
        .map(|(id, _)| id)
        // A temporary file of an interrupted write.
        .filter(|id| !id.starts_with('.'))
        .collect();
    let read: Vec<(String, std::result::Result<Vec<u8>, BackendError>)> = names
        .into_par_iter()
        .map(|id| {
            let got = repo.backend().get(&ObjectKey::new(ObjectKind::Audit, &id));
            (id, got)
        })
        .collect();
    let mut trail = Trail::default();
    for (id, got) in read {
        match got {
            Ok(bytes) => match decode(repo, &id, &bytes) {
                Ok(e) => {
                    trail.entries.insert(id, e);
                }
                Err(e) => trail.damaged.push((id, e.to_string())),
            },
            Err(BackendError::NotFound { .. }) => {} // forgotten meanwhile
            Err(e) => return Err(e.into()),
        }
    }
    trail.damaged.sort();
    Ok(trail)
}

/// Writes `entry`, chained to the current heads; returns its id.
pub fn record(repo: &Repository, mut entry: Entry) -> Result<String> {
    let trail = read(repo)?;
    entry.parents = trail.heads();
    let (id, bytes) = encode(repo, &entry);
    repo.backend()
        .put(&ObjectKey::new(ObjectKind::Audit, &id), &bytes)?;
    Ok(id)
}

/// The operations whose newest entry numbers derived from the trail use.
const TRACKED: [&str; 3] = ["snapshot", "check", "drill"];

/// The trail as numbers derived from it see it, the entries `audit forget`
/// removed included: what forget entries carried forward plus the entries
/// present. A counter derived from it never goes down.
#[derive(Debug, Default, PartialEq)]
pub struct History {
    /// Failed or interrupted `snapshot` runs per (source, host).
    pub failures: BTreeMap<(String, String), u64>,
    /// The newest entry per (operation, source, host) of the operations
    /// `snapshot` (per source and host), `check` and `drill` (source and
    /// host empty), with `parents`, `forgotten` and `carried` emptied.
    pub latest: BTreeMap<(String, String, String), Entry>,
}

impl History {
    fn consider(&mut self, e: &Entry) {
        if !TRACKED.contains(&e.operation.as_str()) {
            return;
        }
        let key = if e.operation == "snapshot" {
            let Some(source) = &e.source else { return };
            (e.operation.clone(), source.clone(), e.host.clone())
        } else {
            (e.operation.clone(), String::new(), String::new())
        };
        if self.latest.get(&key).is_none_or(|old| old.time <= e.time) {
            let mut e = e.clone();
            e.parents.clear();
            e.forgotten.clear();
            e.carried = None;
            self.latest.insert(key, e);
        }
    }

    fn into_carried(self) -> Option<Carried> {
        let c = Carried {
            failures: self
                .failures
                .into_iter()
                .map(|((source, host), count)| SourceFailures {
                    source,
                    host,
                    count,
                })
                .collect(),
            latest: self.latest.into_values().collect(),
        };
        (c != Carried::default()).then_some(c)
    }
}

/// Ids a present `audit forget` entry lists as removed. One still present
/// outlived an interrupted forget, which already carries what it counts.
fn accounted(trail: &Trail) -> BTreeSet<&str> {
    trail
        .entries
        .values()
        .filter(|e| e.operation == FORGET_OPERATION)
        .flat_map(|e| e.forgotten.iter().map(String::as_str))
        .collect()
}

fn summarize<'a>(
    entries: impl Iterator<Item = (&'a String, &'a Entry)>,
    accounted: &BTreeSet<&str>,
) -> History {
    let mut h = History::default();
    for (id, e) in entries {
        if std::iter::once(id)
            .chain(&e.aliases)
            .any(|i| accounted.contains(i.as_str()))
        {
            // Outlived the forget that removed it, which carries it.
        } else if e.operation == FORGET_OPERATION {
            for c in e.carried.iter() {
                for f in &c.failures {
                    *h.failures
                        .entry((f.source.clone(), f.host.clone()))
                        .or_default() += f.count;
                }
                c.latest.iter().for_each(|l| h.consider(l));
            }
        } else {
            if e.operation == "snapshot"
                && e.outcome != Outcome::Ok
                && let Some(source) = &e.source
            {
                *h.failures
                    .entry((source.clone(), e.host.clone()))
                    .or_default() += 1;
            }
            h.consider(e);
        }
    }
    h
}

/// The run history of the whole trail, removed entries included.
pub fn history(trail: &Trail) -> History {
    summarize(trail.entries.iter(), &accounted(trail))
}

/// What [`copy_to`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CopiedEntries {
    /// Entries stored with their bytes and id unchanged.
    pub verbatim: usize,
    /// Entries the target's key could not open, re-sealed with it (a new
    /// id; the old one kept in `aliases`).
    pub resealed: usize,
    /// Entries of the source that cannot be read (left behind; `audit
    /// verify` on the source names them).
    pub damaged: usize,
}

/// Copies the entries of `src`'s trail that `dst` lacks (by id or alias):
/// byte for byte when `dst` can read them as they are (both unencrypted),
/// else re-sealed with `dst`'s key, the source id added to `aliases`, so
/// that parents and `forgotten` lists still resolve. Running it again
/// copies nothing.
pub fn copy_to(src: &Repository, dst: &Repository) -> Result<CopiedEntries> {
    let from = read(src)?;
    let to = read(dst)?;
    let known = to.known_ids();
    let mut done = CopiedEntries {
        damaged: from.damaged.len(),
        ..CopiedEntries::default()
    };
    for (id, e) in from.sorted() {
        if std::iter::once(id)
            .chain(&e.aliases)
            .any(|i| known.contains(i.as_str()))
        {
            continue;
        }
        let bytes = src.backend().get(&ObjectKey::new(ObjectKind::Audit, id))?;
        if decode(dst, id, &bytes).is_ok() {
            dst.backend()
                .put(&ObjectKey::new(ObjectKind::Audit, id), &bytes)?;
            done.verbatim += 1;
        } else {
            let mut e = e.clone();
            e.aliases.push(id.clone());
            let (new_id, bytes) = encode(dst, &e);
            dst.backend()
                .put(&ObjectKey::new(ObjectKind::Audit, &new_id), &bytes)?;
            done.resealed += 1;
        }
    }
    Ok(done)
}

/// One problem [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `altered` (bytes do not match the name, or cannot be read) or `gap`
    /// (a parent is missing and no `audit forget` removed it).
    pub kind: &'static str,
    pub id: String,
    pub detail: String,
}

/// Checks the trail: every object's bytes match its name and decode, and
/// every parent named exists or was removed by `audit forget`.
pub fn verify(trail: &Trail) -> Vec<Problem> {
    let mut problems: Vec<Problem> = trail
        .damaged
        .iter()
        .map(|(id, e)| Problem {
            kind: "altered",
            id: id.clone(),
            detail: e.clone(),
        })
        .collect();
    let forgotten = accounted(trail);
    let known = trail.known_ids();
    for (id, e) in trail.sorted() {
        for p in &e.parents {
            let p = p.as_str();
            if !known.contains(p) && !forgotten.contains(p) {
                problems.push(Problem {
                    kind: "gap",
                    id: p.to_string(),
                    detail: format!(
                        "named as a parent by audit/{id} ({} {}) but missing: an entry was removed",
                        e.operation, e.time
                    ),
                });
            }
        }
    }
    problems
}

/// Removes entries older than `cutoff`, after writing an entry of
/// operation [`FORGET_OPERATION`] that lists them (so [`verify`] knows the
/// gap is intended) and carries what [`history`] took from them (so
/// metrics do not change). Returns the ids removed. Entries that cannot be
/// read are kept.
pub fn forget_older_than(
    repo: &Repository,
    cutoff: Timestamp,
    mut entry: Entry,
) -> Result<Vec<String>> {
    let trail = read(repo)?;
    let old: Vec<String> = trail
        .entries
        .iter()
        .filter(|(_, e)| e.time < cutoff)
        .map(|(id, _)| id.clone())
        .collect();
    entry.operation = FORGET_OPERATION.into();
    // With their aliases: copied entries' parents name them by those.
    entry.forgotten = old
        .iter()
        .flat_map(|id| std::iter::once(id).chain(&trail.entries[id].aliases))
        .cloned()
        .collect();
    entry.carried = summarize(
        old.iter().map(|id| (id, &trail.entries[id])),
        &accounted(&trail),
    )
    .into_carried();
    // Earlier forget entries' lists are carried forward, so removing an old
    // forget entry does not turn what it removed into a gap.
    for e in trail.entries.values() {
        if e.operation == FORGET_OPERATION && e.time < cutoff {
            entry.forgotten.extend(e.forgotten.iter().cloned());
        }
    }
    entry.forgotten.sort();
    entry.forgotten.dedup();
    entry.parents = trail.heads();
    let (id, bytes) = encode(repo, &entry);
    repo.backend()
        .put(&ObjectKey::new(ObjectKind::Audit, &id), &bytes)?;
    for old_id in &old {
        repo.backend()
            .delete(&ObjectKey::new(ObjectKind::Audit, old_id))?;
    }
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(encrypted: bool) -> Repository {
        crate::testutil::mem_repo(encrypted).1
    }

    fn entry(op: &str, t: i64) -> Entry {
        let mut e = Entry::new(op, Outcome::Ok);
        e.time = Timestamp::from_second(t).unwrap();
        e
    }

    #[test]
    fn entries_chain_and_verify_clean() {
        for enc in [false, true] {
            let r = repo(enc);
            let a = record(&r, entry("snapshot", 100)).unwrap();
            let b = record(&r, entry("forget", 200)).unwrap();
            let t = read(&r).unwrap();
            assert_eq!(t.entries.len(), 2);
            assert_eq!(t.entries[&b].parents, vec![a.clone()]);
            assert_eq!(t.heads(), vec![b]);
            assert!(verify(&t).is_empty(), "{:?}", verify(&t));
        }
    }

    #[test]
    fn removed_middle_entry_is_a_gap_and_altered_bytes_are_found() {
        let r = repo(true);
        let a = record(&r, entry("snapshot", 100)).unwrap();
        let b = record(&r, entry("restore", 200)).unwrap();
        let c = record(&r, entry("forget", 300)).unwrap();
        r.backend()
            .delete(&ObjectKey::new(ObjectKind::Audit, &b))
            .unwrap();
        let p = verify(&read(&r).unwrap());
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].kind, p[0].id.as_str()), ("gap", b.as_str()));
        // Flip a byte of the first entry.
        let key = ObjectKey::new(ObjectKind::Audit, &a);
        let mut bytes = r.backend().get(&key).unwrap();
        let n = bytes.len() - 1;
        bytes[n] ^= 1;
        r.backend().delete(&key).unwrap();
        r.backend().put(&key, &bytes).unwrap();
        let p = verify(&read(&r).unwrap());
        assert!(p.iter().any(|p| p.kind == "altered" && p.id == a), "{p:?}");
        // The next entry still points at c, the head (and at the altered
        // one, which nothing readable names any more).
        let d = record(&r, entry("prune", 400)).unwrap();
        assert!(read(&r).unwrap().entries[&d].parents.contains(&c));
    }

    #[test]
    fn concurrent_writers_make_two_heads_that_the_next_entry_joins() {
        let r = repo(false);
        let a = record(&r, entry("snapshot", 100)).unwrap();
        // Two writers that both saw only `a`.
        let mut x = entry("snapshot", 200);
        x.parents = vec![a.clone()];
        let mut y = entry("snapshot", 201);
        y.parents = vec![a];
        for e in [x, y] {
            let (id, bytes) = encode(&r, &e);
            r.backend()
                .put(&ObjectKey::new(ObjectKind::Audit, &id), &bytes)
                .unwrap();
        }
        assert_eq!(read(&r).unwrap().heads().len(), 2);
        let z = record(&r, entry("prune", 300)).unwrap();
        let t = read(&r).unwrap();
        assert_eq!(t.entries[&z].parents.len(), 2);
        assert!(verify(&t).is_empty());
    }

    #[test]
    fn forget_removes_old_entries_without_a_gap() {
        let r = repo(false);
        record(&r, entry("snapshot", 100)).unwrap();
        record(&r, entry("snapshot", 200)).unwrap();
        let keep = record(&r, entry("snapshot", 300)).unwrap();
        let gone =
            forget_older_than(&r, Timestamp::from_second(250).unwrap(), entry("x", 400)).unwrap();
        assert_eq!(gone.len(), 2);
        let t = read(&r).unwrap();
        assert_eq!(t.entries.len(), 2);
        assert!(t.entries.contains_key(&keep));
        assert!(verify(&t).is_empty(), "{:?}", verify(&t));
        // A second forget that removes the first forget entry keeps the gap explained.
        forget_older_than(&r, Timestamp::from_second(450).unwrap(), entry("x", 500)).unwrap();
        let t = read(&r).unwrap();
        assert_eq!(t.entries.len(), 1);
        assert!(verify(&t).is_empty(), "{:?}", verify(&t));
    }

    fn failed(source: &str, t: i64) -> Entry {
        let mut e = entry("snapshot", t);
        e.outcome = Outcome::Failed;
        e.source = Some(source.into());
        e
    }

    #[test]
    fn history_survives_forget_of_everything_and_a_forget_of_the_forget() {
        let r = repo(true);
        record(&r, failed("/a", 100)).unwrap();
        record(&r, failed("/a", 110)).unwrap();
        record(&r, failed("/b", 120)).unwrap();
        let mut ok = entry("snapshot", 130);
        ok.source = Some("/b".into());
        record(&r, ok).unwrap();
        record(&r, entry("check", 140)).unwrap();
        let mut drill = entry("drill", 150);
        drill.rto_seconds = Some(2.5);
        record(&r, drill).unwrap();
        let before = history(&read(&r).unwrap());
        let host = crate::repo::host::hostname();
        assert_eq!(before.failures[&("/a".into(), host.clone())], 2);
        assert_eq!(before.failures[&("/b".into(), host.clone())], 1);
        assert_eq!(before.latest.len(), 4, "{:?}", before.latest.keys());
        forget_older_than(&r, Timestamp::from_second(200).unwrap(), entry("x", 300)).unwrap();
        let t = read(&r).unwrap();
        assert_eq!(t.entries.len(), 1);
        assert_eq!(history(&t), before);
        assert!(verify(&t).is_empty(), "{:?}", verify(&t));
        // New failures add to the carried ones; a second forget that also
        // removes the first forget entry keeps every count.
        record(&r, failed("/a", 400)).unwrap();
        forget_older_than(&r, Timestamp::from_second(450).unwrap(), entry("x", 500)).unwrap();
        let t = read(&r).unwrap();
        assert_eq!(t.entries.len(), 1);
        let after = history(&t);
        assert_eq!(after.failures[&("/a".into(), host.clone())], 3);
        assert_eq!(after.failures[&("/b".into(), host.clone())], 1);
        let newest_a = &after.latest[&("snapshot".into(), "/a".into(), host)];
        assert_eq!(newest_a.time, Timestamp::from_second(400).unwrap());
        assert_eq!(
            after.latest[&("drill".into(), String::new(), String::new())].rto_seconds,
            Some(2.5)
        );
        assert!(verify(&t).is_empty(), "{:?}", verify(&t));
    }

    #[test]
    fn an_interrupted_forget_counts_nothing_twice() {
        let r = repo(false);
        let a = record(&r, failed("/a", 100)).unwrap();
        record(&r, failed("/a", 110)).unwrap();
        let before = history(&read(&r).unwrap());
        let key = ObjectKey::new(ObjectKind::Audit, &a);
        let bytes = r.backend().get(&key).unwrap();
        forget_older_than(&r, Timestamp::from_second(200).unwrap(), entry("x", 300)).unwrap();
        // Put one removed entry back, as if the forget died before deleting
        // it: it is counted once, and a later forget does not count it again.
        r.backend().put(&key, &bytes).unwrap();
        assert_eq!(read(&r).unwrap().entries.len(), 2);
        assert_eq!(history(&read(&r).unwrap()), before);
        forget_older_than(&r, Timestamp::from_second(350).unwrap(), entry("x", 400)).unwrap();
        assert_eq!(history(&read(&r).unwrap()), before);
    }

    #[test]
    fn copy_keeps_ids_between_plain_repositories_reseals_otherwise_and_is_idempotent() {
        for (src_enc, dst_enc) in [(false, false), (true, true), (false, true), (true, false)] {
            let (src, dst) = (repo(src_enc), repo(dst_enc));
            let a = record(&src, failed("/a", 100)).unwrap();
            record(&src, entry("check", 200)).unwrap();
            forget_older_than(&src, Timestamp::from_second(150).unwrap(), entry("x", 300)).unwrap();
            record(&src, entry("drill", 400)).unwrap();
            let own = record(&dst, entry("init", 50)).unwrap();
            let done = copy_to(&src, &dst).unwrap();
            let t = read(&dst).unwrap();
            assert_eq!(t.entries.len(), 4, "{src_enc}->{dst_enc}");
            let verbatim = !src_enc && !dst_enc;
            assert_eq!(
                (done.verbatim, done.resealed),
                if verbatim { (3, 0) } else { (0, 3) }
            );
            let src_ids: BTreeSet<String> = read(&src).unwrap().entries.into_keys().collect();
            if verbatim {
                assert!(src_ids.iter().all(|id| t.entries.contains_key(id)));
            } else {
                let aliases: BTreeSet<String> =
                    t.entries.values().flat_map(|e| e.aliases.clone()).collect();
                assert_eq!(aliases, src_ids);
            }
            assert!(
                verify(&t).is_empty(),
                "{src_enc}->{dst_enc}: {:?}",
                verify(&t)
            );
            // The forget's carry travels: the failure removed at the source counts.
            let host = crate::repo::host::hostname();
            assert_eq!(history(&t).failures[&("/a".into(), host)], 1);
            assert!(!t.entries.contains_key(&a) || verbatim);
            // Heads: the copied trail's newest and the target's own.
            assert_eq!(t.heads().len(), 2, "{:?}", t.heads());
            assert!(t.heads().contains(&own));
            assert_eq!(copy_to(&src, &dst).unwrap(), CopiedEntries::default());
            // The next entry joins both; still clean.
            record(&dst, entry("prune", 500)).unwrap();
            let t = read(&dst).unwrap();
            assert_eq!(t.heads().len(), 1);
            assert!(verify(&t).is_empty(), "{:?}", verify(&t));
            // A forget at the target of the oldest copied entry leaves no gap.
            let dst2 = repo(dst_enc);
            copy_to(&src, &dst2).unwrap();
            record(&dst2, entry("prune", 500)).unwrap();
            forget_older_than(&dst2, Timestamp::from_second(350).unwrap(), entry("x", 600))
                .unwrap();
            let t2 = read(&dst2).unwrap();
            assert_eq!(t2.entries.len(), 3, "drill, prune, the new forget");
            assert!(
                verify(&t2).is_empty(),
                "{src_enc}->{dst_enc}: {:?}",
                verify(&t2)
            );
            assert_eq!(history(&t2).failures.values().sum::<u64>(), 1);
            // Removing a copied middle entry is a gap the target reports.
            let check = t
                .entries
                .iter()
                .find(|(_, e)| e.operation == FORGET_OPERATION)
                .map(|(id, _)| id.clone())
                .unwrap();
            dst.backend()
                .delete(&ObjectKey::new(ObjectKind::Audit, &check))
                .unwrap();
            let p = verify(&read(&dst).unwrap());
            assert!(p.iter().any(|p| p.kind == "gap"), "{p:?}");
        }
    }
}
