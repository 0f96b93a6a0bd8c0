//! Repository locks.
//!
//! A lock is an object `locks/<random id>` holding JSON: exclusive or shared,
//! host, pid, operation and time. Taking a lock is: write our lock object, then
//! list all locks; if any live lock conflicts (either side exclusive), delete
//! ours and fail. Two writers racing both see each other and both back off, so
//! the protocol is safe on any backend that lists what was written before.
//!
//! A lock is live while its holder refreshes it: the holder writes a new lock
//! object and deletes the old one every [`REFRESH`]. A lock older than [`STALE`]
//! is stale; so is a lock from this host whose process is gone. Stale locks are
//! ignored, and `pvsnap unlock` deletes them.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::backend::{DynBackend, ObjectKey};
use crate::error::{Error, Result};
use crate::format::{ObjectKind, decode_checked, encode_checked};
use crate::id::LockId;

pub const REFRESH: Duration = Duration::from_secs(5 * 60);
pub const STALE: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub exclusive: bool,
    pub hostname: String,
    pub pid: u32,
    pub operation: String,
    pub time: Timestamp,
}

impl LockInfo {
    pub fn encode(&self) -> Vec<u8> {
        encode_checked(
            ObjectKind::Lock,
            false,
            &serde_json::to_vec(self).expect("lock info serializes"),
        )
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (_, json) = decode_checked(bytes, ObjectKind::Lock, &|| "lock object".into())?;
        serde_json::from_slice(json).map_err(|e| Error::Invalid(format!("lock object: {e}")))
    }

    /// Whether the holder is known to be gone.
    pub fn is_stale(&self, now: Timestamp, this_host: &str) -> bool {
        let age = now.duration_since(self.time);
        if age > jiff::SignedDuration::try_from(STALE).expect("fits") {
            return true;
        }
        self.hostname == this_host && !process_alive(self.pid)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} lock for `{}` by pid {} on {} since {}",
            if self.exclusive {
                "an exclusive"
            } else {
                "a shared"
            },
            self.operation,
            self.pid,
            self.hostname,
            self.time
        )
    }
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Every lock object in the repository.
pub fn list_locks(backend: &DynBackend) -> Result<Vec<(LockId, LockInfo)>> {
    let mut out = Vec::new();
    for (name, _) in backend.list(ObjectKind::Lock)? {
        let Ok(id) = name.parse::<LockId>() else {
            continue;
        };
        match backend.get(&ObjectKey::new(ObjectKind::Lock, &name)) {
            Ok(bytes) => out.push((id, LockInfo::decode(&bytes)?)),
            Err(crate::error::BackendError::NotFound { .. }) => {} // released meanwhile
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// A held lock; released (deleted) on drop.
pub struct LockGuard {
    backend: DynBackend,
    exclusive: bool,
    current: Arc<Mutex<LockId>>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl LockGuard {
    /// Takes a shared (`exclusive == false`) or exclusive lock for `operation`.
    pub fn acquire(
        backend: DynBackend,
        exclusive: bool,
        operation: &str,
        hostname: &str,
    ) -> Result<LockGuard> {
        let info = LockInfo {
            exclusive,
            hostname: hostname.to_string(),
            pid: std::process::id(),
            operation: operation.to_string(),
            time: Timestamp::now(),
        };
        let id = LockId(crate::id::Id::random());
        let key = ObjectKey::new(ObjectKind::Lock, id.to_hex());
        backend.put(&key, &info.encode())?;
        let now = Timestamp::now();
        let conflicts: Vec<LockInfo> = list_locks(&backend)?
            .into_iter()
            .filter(|(other, l)| {
                *other != id && (exclusive || l.exclusive) && !l.is_stale(now, hostname)
            })
            .map(|(_, l)| l)
            .collect();
        if let Some(c) = conflicts.first() {
            backend.delete(&key)?;
            return Err(Error::Locked {
                holder: c.describe(),
            });
        }
        let current = Arc::new(Mutex::new(id));
        let (stop, stop_rx) = std::sync::mpsc::channel();
        let refresher = {
            let (backend, current) = (backend.clone(), current.clone());
            std::thread::Builder::new()
                .name("pvsnap-lock-refresh".into())
                .spawn(move || refresh_loop(backend, current, stop_rx, info))
                .ok()
        };
        Ok(LockGuard {
            backend,
            exclusive,
            current,
            stop: Some(stop),
            refresher,
        })
    }
}

impl LockGuard {
    /// Whether this is an exclusive lock; operations that delete take one as
    /// proof that no other operation runs.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }
}

fn refresh_loop(
    backend: DynBackend,
    current: Arc<Mutex<LockId>>,
    stop: std::sync::mpsc::Receiver<()>,
    mut info: LockInfo,
) {
    // Wakes at once when the guard is dropped (the sender goes away).
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(REFRESH) {
        info.time = Timestamp::now();
        let new = LockId(crate::id::Id::random());
        if backend
            .put(
                &ObjectKey::new(ObjectKind::Lock, new.to_hex()),
                &info.encode(),
            )
            .is_ok()
        {
            let mut cur = current.lock().expect("lock id mutex");
            let old = std::mem::replace(&mut *cur, new);
            if let Err(e) = backend.delete(&ObjectKey::new(ObjectKind::Lock, old.to_hex())) {
                tracing::warn!("could not delete the old lock object {old}: {e}");
            }
        } else {
            tracing::warn!("could not refresh the repository lock");
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        let id = *self.current.lock().expect("lock id mutex");
        if let Err(e) = self
            .backend
            .delete(&ObjectKey::new(ObjectKind::Lock, id.to_hex()))
        {
            tracing::warn!("could not release lock {id}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    #[test]
    fn shared_locks_coexist_and_exclusive_excludes() {
        let b: DynBackend = Arc::new(MemoryBackend::new());
        let s1 = LockGuard::acquire(b.clone(), false, "snapshot", "h").unwrap();
        let s2 = LockGuard::acquire(b.clone(), false, "snapshot", "h").unwrap();
        let err = LockGuard::acquire(b.clone(), true, "prune", "h")
            .err()
            .expect("must conflict");
        assert!(
            err.to_string().contains("shared lock for `snapshot`"),
            "{err}"
        );
        assert_eq!(
            list_locks(&b).unwrap().len(),
            2,
            "failed attempt left no lock behind"
        );
        drop(s1);
        drop(s2);
        assert!(list_locks(&b).unwrap().is_empty());
        let x = LockGuard::acquire(b.clone(), true, "prune", "h").unwrap();
        assert!(LockGuard::acquire(b.clone(), false, "snapshot", "h").is_err());
        drop(x);
        LockGuard::acquire(b.clone(), false, "snapshot", "h").unwrap();
    }

    #[test]
    fn stale_locks_are_ignored() {
        let b: DynBackend = Arc::new(MemoryBackend::new());
        let old = LockInfo {
            exclusive: true,
            hostname: "elsewhere".into(),
            pid: 1,
            operation: "prune".into(),
            time: Timestamp::now() - jiff::SignedDuration::from_secs(3600),
        };
        b.put(
            &ObjectKey::new(ObjectKind::Lock, LockId(crate::id::Id::random()).to_hex()),
            &old.encode(),
        )
        .unwrap();
        let dead_here = LockInfo {
            hostname: "h".into(),
            pid: 999_999_999,
            time: Timestamp::now(),
            ..old.clone()
        };
        assert!(dead_here.is_stale(Timestamp::now(), "h"));
        assert!(
            !LockInfo {
                time: Timestamp::now(),
                ..old
            }
            .is_stale(Timestamp::now(), "h")
        );
        LockGuard::acquire(b, false, "snapshot", "h").unwrap();
    }
}
