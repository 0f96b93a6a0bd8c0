//! One module per group of subcommands.

pub mod about;
pub mod audit;
pub mod copy;
pub mod find;
pub mod init;
pub mod inspect;
pub mod key;
pub mod maintenance;
pub mod mount;
pub mod restore;
pub mod restore_pvc;
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
