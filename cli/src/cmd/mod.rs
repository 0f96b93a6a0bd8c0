//! One module per group of subcommands.

pub mod init;
pub mod inspect;
pub mod key;
pub mod maintenance;
pub mod mount;
pub mod restore;
pub mod restore_pvc;
pub mod snapshot;

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
    Ok((repo.load_index()?, guard))
}
