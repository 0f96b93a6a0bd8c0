//! Maintenance: verifying (`check`), removing snapshots (`forget`, by the
//! keep rules of `retention`), garbage collection (`prune`) and rebuilding
//! (`repair`); copying snapshots to another repository (`copy`).

pub mod check;
pub mod copy;
pub mod duration;
pub mod forget;
pub mod prune;
pub mod repair;
pub mod retention;
pub mod steps;

#[cfg(test)]
mod copy_tests;
