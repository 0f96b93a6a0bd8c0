//! The real kube client of pvsnap-k8s against an in-process fake API server.
//!
//! Each file is one idea; `scenario` is the harness they share (the
//! fixtures, changed the way a test needs, and a client of them). Families
//! of alike cases are tables run by one test, each case named in its
//! failure message.

#[path = "k8s/claims.rs"]
mod claims;
#[path = "k8s/clone.rs"]
mod clone;
#[path = "k8s/config.rs"]
mod config;
#[path = "k8s/csi.rs"]
mod csi;
#[path = "k8s/hooked.rs"]
mod hooked;
#[path = "k8s/pod_hooks.rs"]
mod pod_hooks;
#[path = "k8s/podfreeze.rs"]
mod podfreeze;
#[path = "k8s/scenario.rs"]
mod scenario;
#[path = "k8s/workloads.rs"]
mod workloads;
