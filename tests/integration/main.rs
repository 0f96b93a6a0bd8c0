//! Integration tests: they drive the `pvsnap` binary. All of them compile into
//! one test binary; shared helpers live in `util.rs`.

mod util;

mod about;
mod corruption;
mod damage;
mod deploy;
mod diskfull;
mod first_use;
mod fixture;
mod guards;
mod honest_sources;
mod hostile;
mod k8s;
mod kill;
mod latest_source;
mod locks;
mod maintenance;
mod mount;
mod partial_restore;
mod permissions;
mod progress;
mod rollback;
mod safety;
mod snapshot_restore;
