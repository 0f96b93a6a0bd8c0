//! This machine's host name, as recorded in snapshots and locks.

/// This machine's host name, as recorded in snapshots and locks.
pub fn hostname_public() -> String {
    hostname()
}

pub(crate) fn hostname() -> String {
    crate::sys::host::hostname().unwrap_or_else(|| "unknown".into())
}
