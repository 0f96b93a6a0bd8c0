//! Maintenance: verifying (`check`), removing snapshots (`forget`, by the
//! keep rules of `retention`), garbage collection (`prune`) and rebuilding
//! (`repair`).

pub mod check;
pub mod duration;
pub mod forget;
pub mod prune;
pub mod repair;
pub mod retention;
pub mod steps;
