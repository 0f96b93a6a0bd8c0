//! Named retention policies stored in the repository.
//!
//! A policy is an object `policies/<NAME>@<REVISION>` (see `FORMAT-policy.md`):
//! the common header, then the JSON of [`NamedPolicy`], sealed with the
//! repository key when the repository is encrypted (bound to the object name,
//! so a policy cannot be passed off under another name).
//!
//! Objects are immutable, so replacing a policy writes a new revision under a
//! new unique name and only then deletes the older revisions. A reader that
//! finds several revisions of a name (a `policy set` interrupted between the
//! two steps, or two running at once) takes the newest by its recorded time,
//! ties broken by object name; a later `policy set` removes the leftovers.
//! There is never a moment at which the name has no policy.
//!
//! The policy named [`DEFAULT_NAME`] exists even if it was never stored: it is
//! [`retention::default_policy`] grouped by source. Storing a policy under that
//! name overrides it.

use jiff::Timestamp;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::backend::ObjectKey;
use crate::error::{BackendError, Error, FormatError, MaintenanceError, Result};
use crate::maintenance::retention::{self, GroupBy, KeepPolicy};
use crate::repo::Repository;
use crate::repo::format::{ObjectKind, decode_checked, encode_checked};

/// The name of the built-in policy.
pub const DEFAULT_NAME: &str = "default";

/// Longest policy name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Separates the policy name from the revision in an object name.
const REVISION_SEP: char = '@';

/// A retention policy with its name, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPolicy {
    pub name: String,
    /// When this revision was written.
    pub time: Timestamp,
    #[serde(default)]
    pub group_by: GroupBy,
    pub keep: KeepPolicy,
    /// True for the built-in `default` when no policy of that name is stored;
    /// never true in a stored object.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub builtin: bool,
}

impl NamedPolicy {
    /// The built-in `default` policy.
    pub fn builtin_default() -> Self {
        NamedPolicy {
            name: DEFAULT_NAME.into(),
            time: Timestamp::UNIX_EPOCH,
            group_by: GroupBy::default(),
            keep: retention::default_policy(),
            builtin: true,
        }
    }
}

/// Refuses names that are not one plain word: they become part of an object
/// name, so no `/`, no leading `.` (hidden from listings) and no `@`.
pub fn validate_name(name: &str) -> Result<(), MaintenanceError> {
    let fail = |reason: &str| MaintenanceError::InvalidPolicyName {
        name: name.into(),
        reason: reason.into(),
    };
    if name.is_empty() {
        return Err(fail("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(fail(&format!("longer than {MAX_NAME_LEN} characters")));
    }
    if name.contains('/') {
        return Err(fail("it contains `/`"));
    }
    if name.starts_with(['.', '-']) {
        return Err(fail("it starts with `.` or `-`"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(fail(&format!(
            "character {c:?} is not allowed; use letters, digits, `.`, `_` and `-`"
        )));
    }
    Ok(())
}

fn aad(object_name: &str) -> Vec<u8> {
    format!("pvsnap policy {object_name}").into_bytes()
}

/// Encodes one revision; returns its object name and bytes.
pub fn encode(repo: &Repository, policy: &NamedPolicy) -> (String, Vec<u8>) {
    let mut rev = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut rev);
    let object = format!("{}{REVISION_SEP}{}", policy.name, hex::encode(rev));
    let json = serde_json::to_vec(policy).expect("policy serializes");
    let sealed = repo.crypto().seal(&aad(&object), json);
    let bytes = encode_checked(ObjectKind::Policy, repo.crypto().is_encrypted(), &sealed);
    (object, bytes)
}

/// Decodes the object `object` (its name in `policies/`).
pub fn decode(repo: &Repository, object: &str, bytes: &[u8]) -> Result<NamedPolicy> {
    let what = || format!("policies/{object}");
    let (header, sealed) = decode_checked(bytes, ObjectKind::Policy, &what)?;
    if header.encrypted() != repo.crypto().is_encrypted() {
        return Err(FormatError::Invalid {
            what: what(),
            detail: "encryption flag does not match the repository".into(),
        }
        .into());
    }
    let json = repo.crypto().open(&aad(object), sealed, &what)?;
    let p: NamedPolicy = serde_json::from_slice(&json).map_err(|e| FormatError::Invalid {
        what: what(),
        detail: e.to_string(),
    })?;
    if Some(p.name.as_str()) != name_of(object) || p.builtin {
        return Err(FormatError::Invalid {
            what: what(),
            detail: format!("object claims to be policy `{}`", p.name),
        }
        .into());
    }
    Ok(p)
}

/// The policy name part of an object name.
fn name_of(object: &str) -> Option<&str> {
    object.rsplit_once(REVISION_SEP).map(|(n, _)| n)
}

/// The stored revisions: those that decode, as (object name, policy),
/// oldest first, and those that do not, as (object name, error).
type Revisions = (Vec<(String, NamedPolicy)>, Vec<(String, Error)>);

fn revisions(repo: &Repository) -> Result<Revisions> {
    let mut out = Vec::new();
    let mut damaged = Vec::new();
    for (object, _) in repo.backend().list(ObjectKind::Policy)? {
        if name_of(&object).is_none() {
            continue;
        }
        match repo
            .backend()
            .get(&ObjectKey::new(ObjectKind::Policy, &object))
        {
            Ok(bytes) => match decode(repo, &object, &bytes) {
                Ok(p) => out.push((object.clone(), p)),
                Err(e) => damaged.push((object.clone(), e)),
            },
            Err(BackendError::NotFound { .. }) => {} // replaced meanwhile
            Err(e) => return Err(e.into()),
        }
    }
    out.sort_by(|(oa, a), (ob, b)| {
        (a.name.as_str(), a.time, oa).cmp(&(b.name.as_str(), b.time, ob))
    });
    damaged.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, damaged))
}

/// Policy objects that cannot be read, as (object name, what is wrong and
/// what to run); `check` reports them.
pub fn damaged(repo: &Repository) -> Result<Vec<(String, String)>> {
    let (_, damaged) = revisions(repo)?;
    Ok(damaged
        .into_iter()
        .map(|(object, e)| {
            let name = name_of(&object).unwrap_or_default().to_string();
            (object, format!("{e}; {}", remedy(&name)))
        })
        .collect())
}

fn remedy(name: &str) -> String {
    format!(
        "remove policy `{name}` with `pvsnap policy remove {name}` and set it again with `pvsnap policy set {name} ...`"
    )
}

/// Every policy (newest revision of each name), sorted by name; the built-in
/// `default` is included unless a stored policy overrides it. A policy
/// with a damaged revision is left out with a warning: an older revision
/// would be a policy nobody set last.
pub fn list(repo: &Repository) -> Result<Vec<NamedPolicy>> {
    let (revisions, damaged) = revisions(repo)?;
    let unusable: std::collections::BTreeSet<&str> =
        damaged.iter().filter_map(|(o, _)| name_of(o)).collect();
    for (object, e) in &damaged {
        tracing::warn!(
            "policies/{object}: {e}; {}",
            remedy(name_of(object).unwrap_or_default())
        );
    }
    let mut out: Vec<NamedPolicy> = Vec::new();
    for (_, p) in revisions {
        if unusable.contains(p.name.as_str()) {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.name == p.name => *last = p,
            _ => out.push(p),
        }
    }
    if !out.iter().any(|p| p.name == DEFAULT_NAME) && !unusable.contains(DEFAULT_NAME) {
        out.push(NamedPolicy::builtin_default());
        out.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(out)
}

/// The policy called `name`; an error naming the damage if one of its
/// revisions cannot be read.
pub fn get(repo: &Repository, name: &str) -> Result<NamedPolicy> {
    validate_name(name)?;
    let (_, damaged) = revisions(repo)?;
    if let Some((object, e)) = damaged.into_iter().find(|(o, _)| name_of(o) == Some(name)) {
        return Err(MaintenanceError::PolicyDamaged {
            object,
            detail: format!("{e}; {}", remedy(name)),
        }
        .into());
    }
    list(repo)?
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| MaintenanceError::PolicyNotFound(name.into()).into())
}

/// Stores `keep` under `name`, replacing an earlier policy of that name:
/// the new revision is written first, older ones are deleted after.
pub fn set(
    repo: &Repository,
    name: &str,
    keep: KeepPolicy,
    group_by: GroupBy,
) -> Result<NamedPolicy> {
    validate_name(name)?;
    keep.validate()?;
    let policy = NamedPolicy {
        name: name.into(),
        time: Timestamp::now(),
        group_by,
        keep,
        builtin: false,
    };
    let (object, bytes) = encode(repo, &policy);
    repo.backend()
        .put(&ObjectKey::new(ObjectKind::Policy, &object), &bytes)?;
    // Only revisions older than ours: a concurrent `set` that wrote a newer
    // one wins. Damaged revisions of the name are replaced by this one.
    let (revisions, damaged) = revisions(repo)?;
    for (old, p) in revisions {
        if p.name == name && old != object && p.time <= policy.time {
            repo.backend()
                .delete(&ObjectKey::new(ObjectKind::Policy, &old))?;
        }
    }
    for (old, _) in damaged {
        if name_of(&old) == Some(name) {
            repo.backend()
                .delete(&ObjectKey::new(ObjectKind::Policy, &old))?;
        }
    }
    Ok(policy)
}

/// Deletes every stored revision of `name`; false if there was none.
pub fn remove(repo: &Repository, name: &str) -> Result<bool> {
    validate_name(name)?;
    let mut found = false;
    let (revisions, damaged) = revisions(repo)?;
    let objects = revisions
        .into_iter()
        .filter(|(_, p)| p.name == name)
        .map(|(o, _)| o)
        .chain(
            damaged
                .into_iter()
                .filter(|(o, _)| name_of(o) == Some(name))
                .map(|(o, _)| o),
        );
    for object in objects {
        {
            repo.backend()
                .delete(&ObjectKey::new(ObjectKind::Policy, &object))?;
            found = true;
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::backend::memory::MemoryBackend;
    use crate::testutil;

    fn repo(encrypted: bool) -> (std::sync::Arc<MemoryBackend>, Repository) {
        testutil::mem_repo(encrypted)
    }

    #[test]
    fn names_with_slashes_and_other_oddities_are_refused() {
        for bad in [
            "",
            "a/b",
            "../x",
            ".hidden",
            "-x",
            "a@b",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        let err = validate_name("a/b").unwrap_err().to_string();
        assert!(err.contains("`/`"), "{err}");
        for good in ["default", "nightly-db", "v1.2_x"] {
            validate_name(good).unwrap();
        }
    }

    #[test]
    fn default_exists_without_being_stored_and_can_be_overridden() {
        let (_, r) = repo(false);
        let d = get(&r, "default").unwrap();
        assert!(d.builtin);
        assert_eq!(d.keep, retention::default_policy());
        assert!(matches!(
            get(&r, "nightly"),
            Err(crate::Error::Maintenance(MaintenanceError::PolicyNotFound(
                _
            )))
        ));
        let keep = KeepPolicy {
            last: Some(3),
            ..KeepPolicy::default()
        };
        set(&r, "default", keep.clone(), GroupBy::default()).unwrap();
        let d = get(&r, "default").unwrap();
        assert!(!d.builtin);
        assert_eq!(d.keep, keep);
        assert!(remove(&r, "default").unwrap());
        assert!(get(&r, "default").unwrap().builtin);
    }

    #[test]
    fn set_replaces_and_leaves_one_revision_in_both_modes() {
        for encrypted in [false, true] {
            let (mem, r) = repo(encrypted);
            let a = KeepPolicy {
                daily: Some(7),
                ..KeepPolicy::default()
            };
            let b = KeepPolicy {
                hourly: Some(24),
                within: Some("2d".parse().unwrap()),
                ..KeepPolicy::default()
            };
            set(&r, "nightly", a, GroupBy::default()).unwrap();
            set(&r, "nightly", b.clone(), "host".parse().unwrap()).unwrap();
            let got = get(&r, "nightly").unwrap();
            assert_eq!(got.keep, b);
            assert_eq!(got.group_by, "host".parse().unwrap());
            assert_eq!(mem.list(ObjectKind::Policy).unwrap().len(), 1);
            let names: Vec<String> = list(&r).unwrap().into_iter().map(|p| p.name).collect();
            assert_eq!(names, ["default", "nightly"]);
            assert!(set(&r, "empty", KeepPolicy::default(), GroupBy::default()).is_err());
        }
    }

    #[test]
    fn an_interrupted_replace_reads_the_newest_revision() {
        let (mem, r) = repo(false);
        let mut old = NamedPolicy {
            name: "p".into(),
            time: "2026-01-01T00:00:00Z".parse().unwrap(),
            group_by: GroupBy::default(),
            keep: KeepPolicy {
                last: Some(1),
                ..KeepPolicy::default()
            },
            builtin: false,
        };
        let (o1, b1) = encode(&r, &old);
        mem.put(&ObjectKey::new(ObjectKind::Policy, &o1), &b1)
            .unwrap();
        old.time = "2026-02-01T00:00:00Z".parse().unwrap();
        old.keep.last = Some(2);
        let (o2, b2) = encode(&r, &old);
        mem.put(&ObjectKey::new(ObjectKind::Policy, &o2), &b2)
            .unwrap();
        assert_eq!(get(&r, "p").unwrap().keep.last, Some(2));
    }

    #[test]
    fn a_policy_copied_under_another_name_is_refused() {
        let (mem, r) = repo(true);
        let keep = KeepPolicy {
            last: Some(1),
            ..KeepPolicy::default()
        };
        set(&r, "a", keep, GroupBy::default()).unwrap();
        let (obj, _) = mem.list(ObjectKind::Policy).unwrap().remove(0);
        let bytes = mem.get(&ObjectKey::new(ObjectKind::Policy, &obj)).unwrap();
        mem.put(
            &ObjectKey::new(ObjectKind::Policy, "b@0000000000000000"),
            &bytes,
        )
        .unwrap();
        assert!(get(&r, "b").is_err());
    }
}
