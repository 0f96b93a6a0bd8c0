//! Test support, compiled only with the `testing` feature: an in-process
//! stand-in for the Kubernetes API server ([`fake`]) and objects shaped like
//! a MicroK8s cluster's ([`fixtures`]). Used by this crate's tests and by the
//! `pvsnap` binary's integration tests; never part of a release build.

pub mod fake;
pub mod fixtures;
