//! One module per group of subcommands.

pub mod about;
pub mod audit;
pub mod copy;
pub mod drill;
pub mod find;
pub mod health;
pub mod init;
pub mod inspect;
pub mod key;
pub mod maintenance;
pub mod mount;
pub mod notify;
pub mod probe;
pub mod restore;
pub mod restore_native;
pub mod restore_pvc;
pub mod serve;
pub mod snapshot;
pub mod tag;

use anyhow::Result;
use pvsnap_engine::repo::lock::LockGuard;
use pvsnap_engine::{IndexedRepository, Repository};

/// Takes the repository lock for `operation` and loads the index.
pub fn locked(
    repo: Repository,
    exclusive: bool,
    operation: &str,
) -> Result<(IndexedRepository, LockGuard)> {
    let host = pvsnap_engine::repo::hostname_public();
    let guard = LockGuard::acquire(repo.backend().clone(), exclusive, operation, &host)?;
    tracing::info!(
        "took a {} lock for {operation}",
        if exclusive { "exclusive" } else { "shared" }
    );
    let repo = repo.load_index()?;
    tracing::info!("index loaded: {} blobs", repo.index().len());
    Ok((repo, guard))
}

/// A workflow's error as the command reports it: the engine's and the
/// Kubernetes crate's errors as themselves, so exit codes and the checks
/// for particular errors see them.
pub fn ops_error(e: pvsnap_ops::Error) -> anyhow::Error {
    match e {
        pvsnap_ops::Error::Engine(e) => e.into(),
        pvsnap_ops::Error::Kube(e) => e.into(),
        e => e.into(),
    }
}

/// Refuses `what` (a command reading the repository's copy of the data) on
/// a native restore point, whose content is on the storage only.
pub fn refuse_native_only(
    snap: &pvsnap_engine::snapshot::Snapshot,
    what: &str,
) -> anyhow::Result<()> {
    restore::refuse_csi(snap, what)?;
    match &snap.source_snapshot {
        Some(n) if n.native_only => anyhow::bail!(
            "snapshot {} is a native restore point: its content is the {} snapshot {}, not stored in the repository, so {what} has nothing to read; use `pvsnap restore {} --target DIR` (a copy), `--clone-to PATH` or `--rollback`",
            snap.short_id(),
            n.kind,
            n.handle,
            snap.short_id()
        ),
        _ => Ok(()),
    }
}
