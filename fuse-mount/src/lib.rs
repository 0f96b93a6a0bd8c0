//! The FUSE adapter of pvsnap: it serves the engine's read-only
//! [`pvsnap_engine::vfs::Vfs`] to the kernel and does nothing else. Every path
//! lookup, listing and read is the engine's; this crate converts attributes and
//! errors and chooses how long the kernel may cache what.
//!
//! The mount is read-only (`ro`, `nodev`, `nosuid`, `default_permissions`):
//! the kernel itself refuses writes with `EROFS`, and every write-ish request
//! that reaches us is answered `EROFS` too. Requests are served by a
//! multithreaded fuser session (one `/dev/fuse` clone per thread), so a slow
//! read does not hold up a `stat`.
//!
//! Files are opened for direct I/O where the kernel allows mmap of such files
//! (Linux 6.6+): reads bypass the kernel's page cache and the vfs's own chunk
//! cache and read-ahead serve them, which halves the CPU a sequential read
//! costs. Elsewhere the page cache is used, with a widened read-ahead window.
//!
//! Mounting needs no libfuse: as root this crate calls mount(2) itself; other
//! users need the setuid `fusermount3`.

mod attr;
mod fs;
mod mount;
mod mountinfo;

pub use mount::{Mount, MountOptions, Unmounted, mount};
pub use mountinfo::{MountEntry, is_mount_point, mount_table};
