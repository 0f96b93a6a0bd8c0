//! Repository locks.
//!
//! A lock is an object `locks/<random id>` holding JSON: exclusive or shared,
//! host, pid, operation and time. Taking a lock is: write our lock object, then
//! list all locks; if any live lock conflicts (either side exclusive), delete
//! ours and fail. Two writers racing see each other; the older attempt (by
//! time, then name) stays, waiting until the newer one has deleted its lock,
//! and the newer one backs off, so the first comer wins and a race costs a
//! moment, not both operations. Only a listing without a conflict lets an
//! attempt go on, so the protocol is safe on any backend that lists what was
//! written before. An attempt that backed off tries again after a random
//! pause (a lock really held still fails it). An
//! attempt that fails for any reason (a conflict, a listing that fails) deletes
//! the lock object it wrote.
//!
//! A lock is live while its holder refreshes it: the holder writes a new lock
//! object and deletes the old one every [`REFRESH`]. Every other lock object is
//! stale, and [`LockStatus`] says why:
//!
//! - its time is more than [`STALE`] ago (the holder stopped refreshing it);
//! - it was written on this host by a process that no longer exists;
//! - its time is more than [`SKEW`] in the future: no clock we trust wrote it,
//!   and a future time would otherwise block for as long as the clocks
//!   disagree. It is reported whenever a lock is taken. A lock up to [`SKEW`]
//!   ahead is live (clocks of hosts differ a little);
//! - it cannot be read (empty, truncated, garbage, a name that is no lock id).
//!   Objects are written whole (temporary name, then link; on object storage a
//!   put is atomic), so an unreadable lock is not one being written: it is
//!   damage, and no process can be relying on it. It is reported whenever a
//!   lock is taken.
//!
//! Times are the storage's clock ([`crate::backend::Backend::now`]: the
//! server's `Date` on object storage), both when a lock is written and when
//! its age is judged, so hosts whose clocks disagree with each other (or
//! with the server) agree on which locks are stale.
//!
//! Stale locks never block, and `pvsnap unlock` deletes them. A live lock of
//! another host that is known to be gone (a killed pod) is deleted with
//! `pvsnap unlock <id>` or `pvsnap unlock --remove-all`, after making sure the
//! process is gone; otherwise it turns stale [`STALE`] after its time.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::backend::{DynBackend, ObjectKey};
use crate::error::{Error, FormatError, Result};
use crate::repo::format::{ObjectKind, decode_checked, encode_checked};
use crate::repo::id::LockId;

pub const REFRESH: Duration = Duration::from_secs(5 * 60);
pub const STALE: Duration = Duration::from_secs(30 * 60);
/// How far in the future a lock's time may be and the lock still count as
/// live (clock differences between hosts).
pub const SKEW: Duration = Duration::from_secs(5 * 60);

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

    /// Whether this lock is live or stale, and why, as seen by `this_host`
    /// at `now`.
    pub fn status(&self, now: Timestamp, this_host: &str) -> LockStatus {
        let age = now.duration_since(self.time);
        if age < -signed(SKEW) {
            return LockStatus::Future;
        }
        if age > signed(STALE) {
            return LockStatus::Expired;
        }
        if self.hostname == this_host && !process_alive(self.pid) {
            return LockStatus::HolderGone;
        }
        LockStatus::Live
    }

    /// Whether the holder is known to be gone (see [`LockInfo::status`]).
    pub fn is_stale(&self, now: Timestamp, this_host: &str) -> bool {
        self.status(now, this_host) != LockStatus::Live
    }

    /// When this lock turns stale by itself unless its holder refreshes it.
    pub fn stale_at(&self) -> Timestamp {
        self.time.saturating_add(signed(STALE)).unwrap_or(self.time)
    }

    pub fn describe(&self) -> String {
        format!("{} since {}", self.holder(), self.time)
    }

    /// "an exclusive lock for `prune` by pid 7 on host h".
    fn holder(&self) -> String {
        format!(
            "{} lock for `{}` by pid {} on host {}",
            if self.exclusive {
                "an exclusive"
            } else {
                "a shared"
            },
            self.operation,
            self.pid,
            self.hostname
        )
    }

    /// [`LockInfo::describe`] with the age of the lock as seen at `now`.
    pub fn describe_at(&self, now: Timestamp) -> String {
        let age = now.duration_since(self.time);
        let when = if age.is_negative() {
            format!("{} in the future", human(-age))
        } else {
            format!("{} ago", human(age))
        };
        format!(
            "{}, taken or refreshed {when} ({})",
            self.holder(),
            self.time
        )
    }
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// A duration as a person reads it: `2h 5m`, `12m 3s`, `40s`.
fn human(d: SignedDuration) -> String {
    let s = d.as_secs().unsigned_abs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

/// What a lock object means to an operation that wants a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockStatus {
    /// Its holder may still run: it blocks conflicting operations.
    Live,
    /// Its time is more than [`STALE`] ago: the holder stopped refreshing it.
    Expired,
    /// Written on this host by a process that no longer exists.
    HolderGone,
    /// Its time is more than [`SKEW`] in the future.
    Future,
    /// The object cannot be read; the reason.
    Unreadable(String),
    /// Written by a newer pvsnap (a lock version or flags this one does not
    /// know): it cannot be judged, so it is taken as a live exclusive lock
    /// and only removed by its id.
    Newer(String),
}

impl LockStatus {
    /// Whether the lock blocks: live, or too new to judge.
    pub fn is_live(&self) -> bool {
        matches!(self, LockStatus::Live | LockStatus::Newer(_))
    }

    /// Why a stale lock is stale, for messages; `None` for a live one.
    pub fn reason(&self) -> Option<String> {
        match self {
            LockStatus::Live | LockStatus::Newer(_) => None,
            LockStatus::Expired => Some(format!(
                "not refreshed for more than {}",
                human(signed(STALE))
            )),
            LockStatus::HolderGone => Some("its process on this host is gone".into()),
            LockStatus::Future => Some(format!(
                "its time is more than {} in the future (a host with a wrong clock?)",
                human(signed(SKEW))
            )),
            LockStatus::Unreadable(why) => Some(format!("unreadable: {why}")),
        }
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        // 0 and negative numbers name process groups, never one process.
        return false;
    }
    crate::sys::host::process_exists(pid)
}

/// One object under `locks/`, as read.
#[derive(Debug, Clone)]
pub struct ListedLock {
    /// The object name: a lock id in hex, unless the object is damage.
    pub name: String,
    /// What it holds, or why it cannot be read.
    pub info: std::result::Result<LockInfo, String>,
    /// The object is well formed but of a newer lock version or with flags
    /// this pvsnap does not know (see [`LockStatus::Newer`]).
    pub newer: bool,
}

impl ListedLock {
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(ObjectKind::Lock, self.name.clone())
    }

    /// The first 8 hex digits of the name, as `pvsnap unlock` accepts it.
    pub fn short(&self) -> &str {
        self.name.get(..8).unwrap_or(&self.name)
    }

    pub fn status(&self, now: Timestamp, this_host: &str) -> LockStatus {
        match &self.info {
            Ok(info) => info.status(now, this_host),
            Err(why) if self.newer => LockStatus::Newer(why.clone()),
            Err(why) => LockStatus::Unreadable(why.clone()),
        }
    }

    /// `locks/<name>` and what it holds, for messages.
    pub fn describe_at(&self, now: Timestamp) -> String {
        match &self.info {
            Ok(info) => format!("{} ({})", info.describe_at(now), self.key().path()),
            Err(_) if self.newer => {
                format!("a lock written by a newer pvsnap ({})", self.key().path())
            }
            Err(_) => format!("unreadable lock {}", self.key().path()),
        }
    }
}

/// Every object under `locks/`, readable or not. Fails only when the listing
/// or a read fails, never on the bytes of an object.
pub fn list_locks(backend: &DynBackend) -> Result<Vec<ListedLock>> {
    let mut out = Vec::new();
    for (name, _) in backend.list(ObjectKind::Lock)? {
        let mut newer = false;
        let info = match backend.get(&ObjectKey::new(ObjectKind::Lock, &name)) {
            Ok(_) if name.parse::<LockId>().is_err() => {
                Err("the name is not a lock id (64 hex digits)".to_string())
            }
            Ok(bytes) => LockInfo::decode(&bytes).map_err(|e| {
                newer = matches!(
                    e,
                    Error::Format(
                        FormatError::UnsupportedVersion { .. } | FormatError::UnknownFlags { .. }
                    )
                );
                e.to_string()
            }),
            Err(crate::error::BackendError::NotFound { .. }) => continue, // released meanwhile
            Err(e) => return Err(e.into()),
        };
        out.push(ListedLock { name, info, newer });
    }
    Ok(out)
}

/// The message of a failed lock attempt: who holds the conflicting lock, how
/// old it is, and what removes it.
fn locked_error(backend: &DynBackend, lock: &ListedLock, now: Timestamp, this_host: &str) -> Error {
    let location = backend.location();
    let repo = shell_word(location.trim_end_matches(" (dry run)"));
    let holder = lock.describe_at(now);
    let Ok(info) = &lock.info else {
        // Only locks of a newer pvsnap conflict among those not read.
        return Error::Locked {
            holder,
            remedy: format!(
                "wait for the newer pvsnap to finish, or upgrade this one; if no newer pvsnap runs on any host, remove it with `pvsnap --repo {repo} unlock {}`",
                lock.short()
            ),
        };
    };
    let stale_at = info.stale_at();
    let by_itself = format!(
        "unless it is refreshed, it turns stale at {stale_at} (in {}) and stops blocking",
        human(stale_at.duration_since(now).max(SignedDuration::ZERO))
    );
    let remedy = if info.hostname == this_host {
        format!(
            "wait for pid {} to finish, or stop it (its lock goes with it); if pid {} is not pvsnap, remove the lock with `pvsnap --repo {repo} unlock {}`; {by_itself}",
            info.pid,
            info.pid,
            lock.short()
        )
    } else {
        format!(
            "wait for it to finish; if that process is gone (a killed pod, a host that went down), make sure it is, then run `pvsnap --repo {repo} unlock --remove-all` (or `pvsnap --repo {repo} unlock {}` to remove only this lock); {by_itself}",
            lock.short()
        )
    };
    Error::Locked { holder, remedy }
}

/// `s` quoted for a POSIX shell when it needs to be.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%=".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Which locks [`unlock`] removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unlock {
    /// Stale and unreadable locks only.
    Stale,
    /// Every lock, live ones included.
    All,
    /// The locks whose names start with these prefixes, live or not.
    Named(Vec<String>),
}

/// What [`unlock`] did.
#[derive(Debug, Default)]
pub struct UnlockReport {
    /// Removed locks, each with its status when it was removed.
    pub removed: Vec<(ListedLock, LockStatus)>,
    /// Live locks left in place.
    pub kept: Vec<ListedLock>,
}

/// Removes locks: stale and unreadable ones, every one, or the named ones. A
/// prefix that names no lock, or more than one, is an error and nothing is
/// removed.
pub fn unlock(backend: &DynBackend, which: &Unlock, this_host: &str) -> Result<UnlockReport> {
    let now = backend.now()?;
    let locks = list_locks(backend)?;
    let mut named = std::collections::HashSet::new();
    if let Unlock::Named(prefixes) = which {
        for p in prefixes {
            let p = p.to_ascii_lowercase();
            let hits: Vec<&ListedLock> = locks.iter().filter(|l| l.name.starts_with(&p)).collect();
            match hits.as_slice() {
                [one] => {
                    named.insert(one.name.clone());
                }
                [] => {
                    return Err(Error::Invalid(format!(
                        "no lock in {} starts with `{p}`; `pvsnap unlock` without ids lists the locks it keeps",
                        backend.location()
                    )));
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "`{p}` matches {} locks; give more digits of the lock id",
                        hits.len()
                    )));
                }
            }
        }
    }
    let mut report = UnlockReport::default();
    for lock in locks {
        let status = lock.status(now, this_host);
        let remove = match which {
            Unlock::Stale => !status.is_live(),
            Unlock::All => true,
            Unlock::Named(_) => named.contains(&lock.name),
        };
        if remove {
            backend.delete(&lock.key())?;
            report.removed.push((lock, status));
        } else if status.is_live() {
            report.kept.push(lock);
        }
    }
    Ok(report)
}

/// A held lock; released (deleted) on drop.
pub struct LockGuard {
    backend: DynBackend,
    current: Arc<Mutex<LockId>>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl LockGuard {
    /// Takes a shared (`exclusive == false`) or exclusive lock for `operation`.
    ///
    /// Two processes taking conflicting locks at the same instant see each
    /// other; the one that came first stays and the other backs off (see
    /// [`settle`]). An attempt that backed off is tried again after a random
    /// pause, [`RACE_RETRIES`] times over a few seconds, in case what it met
    /// was only another attempt; a lock that is really held still fails the
    /// call, only a little later.
    pub fn acquire(
        backend: DynBackend,
        exclusive: bool,
        operation: &str,
        hostname: &str,
    ) -> Result<LockGuard> {
        let mut attempt = 0;
        loop {
            let started = std::time::Instant::now();
            match Self::try_once(backend.clone(), exclusive, operation, hostname) {
                // An attempt that waited its whole bound met a lock that is
                // held, not another attempt: trying again would only wait again.
                Err(Error::Locked { .. })
                    if attempt < RACE_RETRIES && started.elapsed() < WAIT_FOR_NEWER =>
                {
                    attempt += 1;
                    std::thread::sleep(race_pause(attempt));
                }
                other => return other,
            }
        }
    }

    fn try_once(
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
            time: backend.now()?,
        };
        let id = LockId(crate::repo::id::Id::random());
        let key = ObjectKey::new(ObjectKind::Lock, id.to_hex());
        backend.put(&key, &info.encode())?;
        if let Err(e) = settle(&backend, id, &info, hostname) {
            if let Err(d) = backend.delete(&key) {
                tracing::warn!(
                    "could not remove this attempt's lock {}: {d}; `pvsnap unlock` removes it once this process is gone",
                    key.path()
                );
            }
            return Err(e);
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
            current,
            stop: Some(stop),
            refresher,
        })
    }
}

/// How many times a conflicting lock attempt is tried again before the
/// conflict is reported (see [`LockGuard::acquire`]).
pub const RACE_RETRIES: u32 = 3;

/// The pause before retry `attempt` (1-based): random within a window that
/// doubles each time (0.1–0.6 s, 0.2–1.2 s, 0.4–2.4 s), so two racing
/// processes retry at different moments.
fn race_pause(attempt: u32) -> Duration {
    let base = 100u64 << (attempt - 1);
    let jitter = u64::from(crate::repo::id::Id::random().0[0]) * base * 5 / 255;
    Duration::from_millis(base + jitter)
}

/// How long an attempt waits for conflicting attempts that came after it to
/// back off (see [`settle`]).
pub const WAIT_FOR_NEWER: Duration = Duration::from_secs(5);

/// Lists the locks until the attempt `own` (written with `info`) may go on:
/// `Ok` once no live lock conflicts. Of two conflicting attempts that see
/// each other, the older one (by time, then name) stays and the newer one
/// backs off, so the one that came first wins the race: a conflicting lock
/// older than `own` fails the attempt at once, and a newer one is waited
/// for, at most [`WAIT_FOR_NEWER`], to go away. Only a listing without a
/// conflict lets the attempt go on, so waiting never lets two conflicting
/// holders in. Reports unreadable and future locks on the way.
fn settle(backend: &DynBackend, own: LockId, info: &LockInfo, this_host: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + WAIT_FOR_NEWER;
    let own = (info.time, own.to_hex());
    let mut reported = false;
    loop {
        let now = backend.now()?;
        let mut older = None;
        let mut newer = None;
        for lock in list_locks(backend)? {
            if lock.name == own.1 {
                continue;
            }
            match (lock.status(now, this_host), &lock.info) {
                (LockStatus::Live, Ok(other)) if info.exclusive || other.exclusive => {
                    if (other.time, &lock.name) < (own.0, &own.1) {
                        older.get_or_insert(lock);
                    } else {
                        newer.get_or_insert(lock);
                    }
                }
                // Of a newer pvsnap: it cannot be judged, so it wins.
                (LockStatus::Newer(_), _) => {
                    older.get_or_insert(lock);
                }
                (LockStatus::Unreadable(why), _) if !reported => tracing::warn!(
                    "lock {} is unreadable ({why}); it is ignored, and `pvsnap unlock` removes it",
                    lock.key().path()
                ),
                (LockStatus::Future, _) if !reported => tracing::warn!(
                    "{} is more than {} in the future: it is treated as stale, and `pvsnap unlock` removes it; check the clock of that host",
                    lock.describe_at(now),
                    human(signed(SKEW))
                ),
                _ => {}
            }
        }
        reported = true;
        match (older, newer) {
            (Some(lock), _) => return Err(locked_error(backend, &lock, now, this_host)),
            (None, None) => return Ok(()),
            (None, Some(lock)) if std::time::Instant::now() >= deadline => {
                return Err(locked_error(backend, &lock, now, this_host));
            }
            (None, Some(_)) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A held exclusive lock: while it exists no other operation holds a lock.
/// Operations that delete (forget, prune, repair) take one through
/// [`Access::Write`], so the compiler, not a check at run time, sees that
/// they run alone:
///
/// ```no_run
/// # use pvsnap_engine::{Repository, repo::lock::ExclusiveLock};
/// # use pvsnap_engine::maintenance::prune::{prune, PruneOptions};
/// fn alone(repo: &Repository, lock: &ExclusiveLock) {
///     let _ = prune(repo, lock, &PruneOptions::default());
/// }
/// ```
///
/// ```compile_fail
/// # use pvsnap_engine::{Repository, repo::lock::LockGuard};
/// # use pvsnap_engine::maintenance::prune::{prune, PruneOptions};
/// fn shared(repo: &Repository, guard: &LockGuard) {
///     let _ = prune(repo, guard, &PruneOptions::default()); // a LockGuard does not do
/// }
/// ```
pub struct ExclusiveLock {
    _guard: LockGuard,
}

impl ExclusiveLock {
    /// Takes the exclusive lock for `operation`.
    pub fn acquire(backend: DynBackend, operation: &str, hostname: &str) -> Result<ExclusiveLock> {
        Ok(ExclusiveLock {
            _guard: LockGuard::acquire(backend, true, operation, hostname)?,
        })
    }
}

/// What an operation that deletes may do: change the repository, under the
/// exclusive lock, or only work out and report what it would change.
#[derive(Clone, Copy)]
pub enum Access<'a> {
    Write(&'a ExclusiveLock),
    /// Change nothing (the caller holds a shared lock, or none).
    DryRun,
}

impl Access<'_> {
    pub fn is_dry_run(&self) -> bool {
        matches!(self, Access::DryRun)
    }
}

impl<'a> From<&'a ExclusiveLock> for Access<'a> {
    fn from(lock: &'a ExclusiveLock) -> Self {
        Access::Write(lock)
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
        info.time = match backend.now() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("could not refresh the repository lock: {e}");
                continue;
            }
        };
        let new = LockId(crate::repo::id::Id::random());
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
mod tests;
