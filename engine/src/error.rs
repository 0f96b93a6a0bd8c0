//! Errors of the engine.
//!
//! Rules for this module:
//! - One typed enum per area ([`FormatError`], [`BackendError`], [`CryptoError`],
//!   [`MaintenanceError`])
//!   and one umbrella [`Error`] that the public API returns. The umbrella is
//!   `#[non_exhaustive]` so new areas can be added without breaking callers.
//! - Every message names the thing it is about (the path, the object, the
//!   snapshot id) and, where the user can do something, says what to do next.
//! - No error carries secret material (keys, passphrases, plaintext).

use std::path::PathBuf;

/// Problems decoding bytes read from a repository.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("{what}: object is truncated ({have} bytes, at least {need} needed)")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{what}: not a pvsnap object (bad magic)")]
    BadMagic { what: &'static str },
    #[error("unknown object kind {0}")]
    UnknownKind(u8),
    #[error("expected a {expected} object, found a {found} object")]
    WrongKind {
        expected: &'static str,
        found: &'static str,
    },
    #[error(
        "{what}: format version {found} is newer than this pvsnap supports ({supported}); upgrade pvsnap to read this repository"
    )]
    UnsupportedVersion {
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("{what}: unknown flags {flags:#06x}; this object was written by a newer pvsnap")]
    UnknownFlags { what: &'static str, flags: u16 },
    #[error("repository requires feature `{0}` which this pvsnap does not know; upgrade pvsnap")]
    UnknownFeature(String),
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
    #[error(
        "{what}: checksum mismatch, the object is damaged; run `pvsnap check` to see what it affects"
    )]
    ChecksumMismatch { what: String },
}

/// Problems talking to the storage behind a repository.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("{key}: not found in the repository")]
    NotFound { key: String },
    #[error("{key}: already exists with different content; refusing to replace it")]
    Conflict { key: String },
    #[error("{key}: {op} failed: {source}")]
    Io {
        key: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: range {offset}+{len} is past the end of the object ({size} bytes)")]
    OutOfRange {
        key: String,
        offset: u64,
        len: u64,
        size: u64,
    },
    /// A remote store (S3) refused or failed a request after its retries;
    /// the message names the endpoint, the bucket and what to do next.
    #[error("{key}: {message}")]
    Remote { key: String, message: String },
    #[error("injected fault: {0}")]
    Injected(String),
    #[error("{path}: not a temporary file left by an interrupted write; refusing to remove it")]
    NotALeftover { path: String },
    #[error(
        "{key}: {op} failed: no space left on the file system holding the repository {location}. Free space there (or give the repository more room) and run the command again. A snapshot keeps what its last index checkpoint named, and the next run stores only what is missing; packs stored after that checkpoint are given back by `pvsnap --repo {location} prune` once older than the grace period (24h by default), or right away by `pvsnap --repo {location} prune --grace 0` when no other pvsnap command is using the repository"
    )]
    NoSpace {
        key: String,
        op: &'static str,
        location: String,
    },
}

/// Problems with keys and sealed data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error(
        "wrong password: no key slot of this repository opens with it; check PVSNAP_PASSWORD or --password-file"
    )]
    WrongPassword,
    #[error(
        "no intact key slot opens with this password, and key slot(s) {} are damaged (unreadable, or with impossible sizes); if the password belongs to one of them, open the repository with another password of it and see `pvsnap key list`",
        damaged.join(", ")
    )]
    DamagedSlots { damaged: Vec<String> },
    #[error(
        "this repository is encrypted; give its password via PVSNAP_PASSWORD, --password-file or the prompt"
    )]
    PasswordRequired,
    #[error(
        "{what}: authentication failed; the data is damaged or was not written with this repository's key"
    )]
    Authentication { what: String },
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// Problems of the maintenance commands: forget, prune, check, repair and
/// named policies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaintenanceError {
    #[error("invalid policy name `{name}`: {reason}")]
    InvalidPolicyName { name: String, reason: String },
    #[error("no policy named `{0}`; list them with `pvsnap policy list`")]
    PolicyNotFound(String),
    #[error("policies/{object}: {detail}")]
    PolicyDamaged { object: String, detail: String },
    #[error(
        "snapshot {snapshot} needs {kind} blob {blob}, which no readable pack holds ({detail}); prune would lose track of it, so nothing was changed. Run `pvsnap check`, then `pvsnap repair index` or `pvsnap repair snapshots`"
    )]
    MissingBlob {
        snapshot: String,
        kind: &'static str,
        blob: String,
        detail: String,
    },
    #[error(transparent)]
    Retention(#[from] crate::maintenance::retention::RetentionError),
}

/// The umbrella error of the engine's public API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Maintenance(#[from] MaintenanceError),
    #[error("{path}: {action} failed: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: not a pvsnap repository (no config object); create one with `pvsnap init`")]
    NotARepository(String),
    /// The config object is there but cannot be decoded: without it the
    /// repository cannot be read, and `init` must not replace it.
    #[error(
        "{location}/config: the repository's config object is damaged ({detail}); nothing in the repository can be read without it. Put back config from a copy of this repository (a backup or a replica of the folder); do not run `pvsnap init` here, a new config cannot read the data"
    )]
    ConfigDamaged { location: String, detail: String },
    #[error("{0}: a repository already exists here")]
    AlreadyInitialized(String),
    #[error("no snapshot matches `{0}`; list them with `pvsnap snapshots`")]
    SnapshotNotFound(String),
    #[error(
        "no snapshot in the trash matches `{0}`: either it was never forgotten, or prune removed it from the trash after its grace period (--keep-deleted) and it is gone; list the trash with `pvsnap snapshots --deleted`"
    )]
    SnapshotGone(String),
    #[error("`{prefix}` matches {count} snapshots; give more digits of the id")]
    AmbiguousSnapshot { prefix: String, count: usize },
    /// `latest` where a command works on one source and the repository
    /// holds several; `near` is the source that had none (a claim).
    #[error("{}", latest_needs_source(near.as_deref(), sources))]
    LatestNeedsSource {
        near: Option<String>,
        sources: Vec<String>,
    },
    /// `latest:SOURCE` for a source without snapshots; `key` is what
    /// `given` names (a relative path resolved).
    #[error("{}", no_snapshot_of_source(given, key, sources))]
    NoSnapshotOfSource {
        given: String,
        key: String,
        sources: Vec<String>,
    },
    #[error("{path}: no such path in snapshot {snapshot}")]
    PathNotInSnapshot { snapshot: String, path: String },
    #[error(
        "blob {id} ({kind}) is not in the index; run `pvsnap check`, then `pvsnap repair index`"
    )]
    BlobNotInIndex { id: String, kind: &'static str },
    #[error("blob {id} in pack {pack}: {detail}; run `pvsnap check --read-data`")]
    CorruptBlob {
        id: String,
        pack: String,
        detail: String,
    },
    #[error("{path}: {detail}")]
    Unsafe { path: String, detail: String },
    /// The tree of the folder a restore or listing starts from: without it
    /// no name below is known.
    #[error(
        "{path}: the folder's tree {tree} cannot be read, so nothing in it can be restored or listed: {detail}"
    )]
    TopTreeUnreadable {
        path: String,
        tree: String,
        detail: String,
    },
    /// `remedy` says how long the lock may still block and the command that
    /// removes it.
    #[error("repository is locked by {holder}; {remedy}")]
    Locked { holder: String, remedy: String },
    #[error("invalid pattern `{pattern}`: {detail}")]
    Pattern { pattern: String, detail: String },
    #[error(
        "index file {name} cannot be read ({detail}); the packs it describes cannot be told from unused ones, so nothing was changed. Run `pvsnap repair index`, then this command again"
    )]
    IndexUnreadable { name: String, detail: String },
    #[error(
        "{detail}; the data this snapshot needs cannot be known, so nothing was deleted. Remove it with `pvsnap forget {id}` (or put back an intact copy of snapshots/{id}), then run this command again"
    )]
    SnapshotUnreadable { id: String, detail: String },
    #[error(
        "--include {patterns} matches nothing in snapshot {snapshot}{below}; nothing was restored. See what it holds with `pvsnap ls {snapshot}`"
    )]
    IncludeMatchesNothing {
        patterns: String,
        snapshot: String,
        below: String,
    },
    /// A snapshot stopped on request ([`crate::backup::Stop`]) before its
    /// snapshot object was written. What it stored is indexed and stays:
    /// the next snapshot of the source stores only what is missing.
    #[error(
        "interrupted: kept {bytes} bytes in {packs} pack(s), indexed; no snapshot was saved, the next snapshot of this source stores only what is missing"
    )]
    Interrupted { packs: usize, bytes: u64 },
    /// A restore stopped on request while writing data: the target holds
    /// part of the snapshot (files written whole or in part, metadata not
    /// yet applied); running the restore again finishes it.
    #[error(
        "interrupted after writing {bytes} bytes: the target holds part of the snapshot; run the same restore again to finish it"
    )]
    RestoreInterrupted { bytes: u64 },
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            path: path.into(),
            action,
            source,
        }
    }
}

impl From<crate::maintenance::retention::RetentionError> for Error {
    fn from(e: crate::maintenance::retention::RetentionError) -> Self {
        Error::Maintenance(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The message of [`Error::LatestNeedsSource`]: every source, in the form
/// that names its newest snapshot.
fn latest_needs_source(near: Option<&str>, sources: &[String]) -> String {
    let why = match near {
        Some(n) => format!("{n} has no snapshot, and this repository"),
        None => "`latest` is ambiguous: this repository".to_string(),
    };
    let mut m = format!(
        "{why} holds snapshots of {} sources; name one as `latest:SOURCE`:",
        sources.len()
    );
    for s in sources {
        m.push_str(&format!("\n  latest:{s}"));
    }
    m
}

/// The message of [`Error::NoSnapshotOfSource`].
fn no_snapshot_of_source(given: &str, key: &str, sources: &[String]) -> String {
    let named = if given.trim_end_matches('/') == key.trim_end_matches('/') {
        format!("`{given}`")
    } else {
        format!("`{given}` (that is {key})")
    };
    if sources.is_empty() {
        return format!("no snapshot of source {named}: this repository holds no snapshot");
    }
    let mut m = format!("no snapshot of source {named}; the sources with snapshots are:");
    for s in sources {
        m.push_str(&format!("\n  latest:{s}"));
    }
    m
}
