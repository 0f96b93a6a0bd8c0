//! Integration tests: they drive the `pvsnap` binary. All of them compile into
//! one test binary; shared helpers live in `util.rs`.

mod util;

mod about;
mod audit;
mod btrfs;
mod claim_rollback;
mod copy;
mod corruption;
mod csi;
mod damage;
mod database;
mod deploy;
mod diskfull;
mod drill;
mod extras;
mod first_use;
mod fixture;
mod garage;
mod guards;
mod health;
mod honest_sources;
mod hostile;
mod interrupt;
mod k8s;
mod kill;
mod latest_source;
mod locks;
mod maintenance;
mod mariadb;
mod mount;
mod nas;
mod partial_restore;
mod permissions;
mod podfreeze;
mod progress;
mod prometheus;
mod restore_memory;
mod rollback;
mod s3;
mod s3_faults;
mod safety;
mod serve;
mod shapes;
mod snapshot_restore;
mod zfs;
