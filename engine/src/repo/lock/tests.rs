use super::*;
use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, Forward};
use crate::error::BackendError;

fn mem() -> DynBackend {
    Arc::new(MemoryBackend::new())
}

fn info(host: &str, exclusive: bool, age_secs: i64) -> LockInfo {
    LockInfo {
        exclusive,
        hostname: host.into(),
        pid: 4242,
        operation: if exclusive { "prune" } else { "snapshot" }.into(),
        time: Timestamp::now() - SignedDuration::from_secs(age_secs),
    }
}

/// Stores `bytes` as a lock object and returns its name.
fn plant(b: &DynBackend, bytes: &[u8]) -> String {
    let name = LockId(crate::repo::id::Id::random()).to_hex();
    b.put(&ObjectKey::new(ObjectKind::Lock, name.clone()), bytes)
        .unwrap();
    name
}

fn names(b: &DynBackend) -> Vec<String> {
    let mut v: Vec<String> = list_locks(b).unwrap().into_iter().map(|l| l.name).collect();
    v.sort();
    v
}

#[test]
fn shared_locks_coexist_and_exclusive_excludes() {
    let b = mem();
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
    let b = mem();
    let old = info("elsewhere", true, 3600);
    plant(&b, &old.encode());
    let dead_here = LockInfo {
        hostname: "h".into(),
        pid: 999_999_999,
        time: Timestamp::now(),
        ..old.clone()
    };
    assert_eq!(
        dead_here.status(Timestamp::now(), "h"),
        LockStatus::HolderGone
    );
    assert_eq!(old.status(Timestamp::now(), "h"), LockStatus::Expired);
    assert!(
        !LockInfo {
            time: Timestamp::now(),
            ..old
        }
        .is_stale(Timestamp::now(), "h")
    );
    LockGuard::acquire(b, true, "prune", "h").unwrap();
}

#[test]
fn pids_that_name_process_groups_are_not_alive() {
    // kill(0) and kill(-1) would succeed: they address groups, not a process.
    for pid in [0, u32::MAX, i32::MAX as u32 + 1] {
        let l = LockInfo {
            pid,
            ..info("h", true, 0)
        };
        assert_eq!(l.status(Timestamp::now(), "h"), LockStatus::HolderGone);
    }
}

#[test]
fn unreadable_locks_do_not_block_and_unlock_removes_them() {
    let b = mem();
    let empty = plant(&b, b"");
    let garbage = plant(&b, b"\x00\x01 not a lock at all");
    let mut bad_json = b"PVSN\x06\x01\x00\x00".to_vec(); // version 1: no checksum
    bad_json.extend_from_slice(b"{\"exclusive\": tru");
    let bad_json = plant(&b, &bad_json);
    b.put(
        &ObjectKey::new(ObjectKind::Lock, "not-a-lock-id"),
        &info("h", true, 0).encode(),
    )
    .unwrap();
    let listed = list_locks(&b).unwrap();
    assert_eq!(listed.len(), 4);
    for l in &listed {
        match l.status(Timestamp::now(), "h") {
            LockStatus::Unreadable(why) => assert!(!why.is_empty()),
            s => panic!("{} is {s:?}, expected unreadable", l.name),
        }
        assert!(l.describe_at(Timestamp::now()).contains(&l.name));
    }
    // Neither a shared nor an exclusive lock is blocked, and each attempt
    // leaves only its own (released) lock.
    drop(LockGuard::acquire(b.clone(), true, "prune", "h").unwrap());
    drop(LockGuard::acquire(b.clone(), false, "check", "h").unwrap());
    assert_eq!(names(&b).len(), 4);
    let live = LockGuard::acquire(b.clone(), false, "snapshot", "h").unwrap();
    let r = unlock(&b, &Unlock::Stale, "h").unwrap();
    let mut removed: Vec<String> = r.removed.iter().map(|(l, _)| l.name.clone()).collect();
    removed.sort();
    let mut expected = vec![empty, garbage, bad_json, "not-a-lock-id".to_string()];
    expected.sort();
    assert_eq!(removed, expected);
    assert!(
        r.removed
            .iter()
            .all(|(_, s)| matches!(s, LockStatus::Unreadable(_)))
    );
    assert_eq!(r.kept.len(), 1, "the live lock is kept");
    assert_eq!(names(&b).len(), 1);
    drop(live);
    assert!(names(&b).is_empty());
}

/// Passes through, but reading one object fails (a permission problem, an
/// I/O error), so listing the locks fails.
struct UnreadableObject {
    inner: DynBackend,
    name: String,
}

impl Forward for UnreadableObject {
    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }
    fn get(&self, key: &ObjectKey) -> std::result::Result<Vec<u8>, BackendError> {
        if key.name == self.name {
            return Err(BackendError::Injected(format!("get {key}")));
        }
        self.inner.get(key)
    }
}

#[test]
fn a_failed_attempt_removes_its_own_lock() {
    let inner = mem();
    let name = plant(&inner, &info("h", false, 0).encode());
    let b: DynBackend = Arc::new(UnreadableObject {
        inner: inner.clone(),
        name: name.clone(),
    });
    for exclusive in [false, true] {
        let err = LockGuard::acquire(b.clone(), exclusive, "prune", "h")
            .err()
            .expect("listing fails");
        assert!(err.to_string().contains("injected"), "{err}");
        assert_eq!(names(&inner), vec![name.clone()], "no lock left behind");
    }
}

#[test]
fn the_locked_message_names_the_holder_its_age_and_the_command() {
    let b = mem();
    let other = info("node-b", true, 7 * 60);
    let name = plant(&b, &other.encode());
    let err = LockGuard::acquire(b.clone(), false, "snapshot", "node-a")
        .err()
        .expect("a live exclusive lock of another host blocks");
    let msg = err.to_string();
    for want in [
        "exclusive lock for `prune`",
        "pid 4242",
        "host node-b",
        "taken or refreshed 7m ",
        "unlock --remove-all",
        &format!("unlock {}", &name[..8]),
        &format!("locks/{name}"),
        "turns stale at",
        "make sure it is",
    ] {
        assert!(msg.contains(want), "`{want}` missing from: {msg}");
    }
    // 30 minutes after a time 7 minutes ago, give or take the test's run time.
    assert!(
        msg.contains("(in 22m ") || msg.contains("(in 23m 0s)"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("--repo {}", b.location())),
        "the command names the repository: {msg}"
    );
    assert_eq!(names(&b), vec![name], "the attempt removed its own lock");

    // A live process of this host: wait for it, or remove it by id.
    let b = mem();
    let mine = LockInfo {
        pid: std::process::id(),
        ..info("node-a", true, 0)
    };
    plant(&b, &mine.encode());
    let msg = LockGuard::acquire(b, true, "forget", "node-a")
        .err()
        .expect("a live lock of this host blocks")
        .to_string();
    assert!(
        msg.contains(&format!("wait for pid {} to finish", std::process::id())),
        "{msg}"
    );
    assert!(!msg.contains("--remove-all"), "{msg}");
}

#[test]
fn a_lock_from_the_future_is_stale_within_the_skew_it_is_live() {
    let b = mem();
    let future = info("node-b", true, -(SKEW.as_secs() as i64) - 600);
    let future_name = plant(&b, &future.encode());
    assert_eq!(
        future.status(Timestamp::now(), "node-a"),
        LockStatus::Future
    );
    drop(LockGuard::acquire(b.clone(), true, "prune", "node-a").expect("future lock is stale"));

    let ahead = info("node-b", true, -120);
    let ahead_name = plant(&b, &ahead.encode());
    assert_eq!(ahead.status(Timestamp::now(), "node-a"), LockStatus::Live);
    let msg = LockGuard::acquire(b.clone(), false, "snapshot", "node-a")
        .err()
        .expect("a lock a minute ahead is live")
        .to_string();
    assert!(msg.contains("s in the future ("), "{msg}");

    let r = unlock(&b, &Unlock::Stale, "node-a").unwrap();
    assert_eq!(r.removed.len(), 1);
    assert_eq!(r.removed[0].0.name, future_name);
    assert_eq!(r.removed[0].1, LockStatus::Future);
    assert_eq!(names(&b), vec![ahead_name]);
}

#[test]
fn unlock_by_id_removes_only_that_lock_and_refuses_unknown_ids() {
    let b = mem();
    let a = plant(&b, &info("node-b", true, 0).encode());
    let c = plant(&b, &info("node-c", false, 0).encode());
    let stale = plant(&b, &info("node-d", false, 3600).encode());
    let err = unlock(&b, &Unlock::Named(vec!["zz".into()]), "node-a")
        .expect_err("no lock starts with zz");
    assert!(err.to_string().contains("no lock"), "{err}");
    let err = unlock(&b, &Unlock::Named(vec![String::new()]), "node-a")
        .expect_err("an empty prefix names every lock");
    assert!(err.to_string().contains("matches 3 locks"), "{err}");
    assert_eq!(names(&b).len(), 3, "nothing removed by a refused unlock");

    let r = unlock(&b, &Unlock::Named(vec![a[..8].to_uppercase()]), "node-a").unwrap();
    assert_eq!(r.removed.len(), 1);
    assert_eq!(r.removed[0].1, LockStatus::Live);
    let mut left = vec![c.clone(), stale];
    left.sort();
    assert_eq!(names(&b), left);

    let r = unlock(&b, &Unlock::Stale, "node-a").unwrap();
    assert_eq!(r.removed.len(), 1, "only the expired lock");
    assert_eq!(r.kept.len(), 1);
    assert_eq!(names(&b), vec![c]);

    let r = unlock(&b, &Unlock::All, "node-a").unwrap();
    assert_eq!(r.removed.len(), 1);
    assert!(names(&b).is_empty());
}

#[test]
fn durations_read_like_a_person_writes_them() {
    assert_eq!(human(SignedDuration::from_secs(40)), "40s");
    assert_eq!(human(SignedDuration::from_secs(12 * 60 + 3)), "12m 3s");
    assert_eq!(human(SignedDuration::from_secs(2 * 3600 + 5 * 60)), "2h 5m");
    assert_eq!(human(SignedDuration::from_secs(-90)), "1m 30s");
    assert_eq!(shell_word("/srv/repo"), "/srv/repo");
    assert_eq!(shell_word("/srv/my repo's"), r"'/srv/my repo'\''s'");
}

/// A lock of a newer pvsnap cannot be judged (its holder, age and kind are
/// in bytes this version does not know), so it blocks every operation, is
/// kept by a plain `unlock`, and goes only when removed by its id. Damage, in
/// contrast, never blocks.
#[test]
fn a_lock_of_a_newer_version_blocks_and_only_its_id_removes_it() {
    let b = mem();
    let mut newer = info("h", false, 0).encode();
    newer[5] = 9; // a lock version from the future
    let name = plant(&b, &newer);
    let listed = list_locks(&b).unwrap();
    assert!(matches!(
        listed[0].status(Timestamp::now(), "h"),
        LockStatus::Newer(_)
    ));
    for exclusive in [false, true] {
        let Err(err) = LockGuard::acquire(b.clone(), exclusive, "snapshot", "h") else {
            panic!("a lock of a newer pvsnap did not block");
        };
        let text = err.to_string();
        assert!(
            text.contains("newer pvsnap") && text.contains(&format!("unlock {}", &name[..8])),
            "{text}"
        );
    }
    let r = unlock(&b, &Unlock::Stale, "h").unwrap();
    assert!(r.removed.is_empty() && r.kept.len() == 1, "{r:?}");
    unlock(&b, &Unlock::Named(vec![name[..8].to_string()]), "h").unwrap();
    drop(LockGuard::acquire(b.clone(), true, "prune", "h").unwrap());
    assert!(names(&b).is_empty());
}

/// An exclusive locker racing this one: at the first listing its lock is
/// there, written `age_secs` before; by the next listing it is gone (it saw
/// our lock too and backed off, or, older, it was done).
struct Racer {
    inner: DynBackend,
    age_secs: i64,
    /// `None` before the race, then the racer's lock until it is removed.
    racer: Mutex<Option<Option<String>>>,
    /// Lock objects this side wrote.
    puts: std::sync::atomic::AtomicUsize,
}

impl Forward for Racer {
    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }
    fn put(&self, key: &ObjectKey, data: &[u8]) -> std::result::Result<(), BackendError> {
        self.puts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.put(key, data)
    }
    fn list(&self, kind: ObjectKind) -> std::result::Result<Vec<(String, u64)>, BackendError> {
        if kind == ObjectKind::Lock {
            let mut racer = self.racer.lock().unwrap();
            match &mut *racer {
                None => {
                    let lock = info("other", true, self.age_secs).encode();
                    *racer = Some(Some(plant(&self.inner, &lock)));
                }
                Some(name) => {
                    if let Some(name) = name.take() {
                        self.inner
                            .delete(&ObjectKey::new(ObjectKind::Lock, name))
                            .unwrap();
                    }
                }
            }
        }
        self.inner.list(kind)
    }
}

/// A racer that came later is waited for (it backs off); one that came
/// first makes this attempt back off and try again after a pause. Either
/// way the lock is taken, without two holders at any listing.
#[test]
fn a_lock_taken_in_the_same_instant_as_a_conflicting_one_is_settled() {
    for (age_secs, retried) in [(-1, false), (1, true)] {
        for exclusive in [false, true] {
            let inner = mem();
            let racer = Arc::new(Racer {
                inner: inner.clone(),
                age_secs,
                racer: Mutex::new(None),
                puts: Default::default(),
            });
            let b: DynBackend = racer.clone();
            let started = std::time::Instant::now();
            let guard = LockGuard::acquire(b.clone(), exclusive, "snapshot", "h")
                .expect("the race is settled");
            let took = started.elapsed();
            assert!(took >= Duration::from_millis(100), "it paused: {took:?}");
            assert!(took < Duration::from_secs(3), "{took:?}");
            assert_eq!(names(&inner).len(), 1, "only our lock is left");
            let attempts = racer.puts.load(std::sync::atomic::Ordering::SeqCst);
            assert_eq!(attempts, 1 + usize::from(retried), "age {age_secs}");
            drop(guard);
            assert!(names(&inner).is_empty());
        }
    }
}

#[test]
fn a_lock_really_held_still_fails_after_the_retries() {
    let b = mem();
    let _held = LockGuard::acquire(b.clone(), true, "prune", "h").unwrap();
    let started = std::time::Instant::now();
    let err = LockGuard::acquire(b.clone(), false, "snapshot", "h")
        .err()
        .expect("held");
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "gives up within seconds: {:?}",
        started.elapsed()
    );
    assert_eq!(names(&b).len(), 1, "each attempt removed its own lock");
}

/// Threads taking shared and exclusive locks at random moments: at no time
/// does an exclusive holder share the repository with any other holder, and
/// most attempts get the lock (a race costs a pause, not the attempt).
#[test]
fn racing_lockers_never_hold_conflicting_locks_at_once() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let b = mem();
    let shared = Arc::new(AtomicUsize::new(0));
    let exclusive = Arc::new(AtomicUsize::new(0));
    let granted = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (b, shared, exclusive, granted) = (
                b.clone(),
                shared.clone(),
                exclusive.clone(),
                granted.clone(),
            );
            std::thread::spawn(move || {
                for i in 0..15 {
                    let excl = (t + i) % 3 == 0;
                    let Ok(guard) = LockGuard::acquire(b.clone(), excl, "t", "h") else {
                        continue;
                    };
                    granted.fetch_add(1, SeqCst);
                    let mine = if excl { &exclusive } else { &shared };
                    mine.fetch_add(1, SeqCst);
                    let (s, x) = (shared.load(SeqCst), exclusive.load(SeqCst));
                    assert!(
                        x <= 1 && (x == 0 || s == 0),
                        "{x} exclusive and {s} shared holders"
                    );
                    std::thread::sleep(Duration::from_millis(3));
                    let (s, x) = (shared.load(SeqCst), exclusive.load(SeqCst));
                    assert!(
                        x <= 1 && (x == 0 || s == 0),
                        "{x} exclusive and {s} shared holders"
                    );
                    mine.fetch_sub(1, SeqCst);
                    drop(guard);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("no two conflicting holders");
    }
    let granted = granted.load(SeqCst);
    assert!(granted >= 48, "only {granted} of 60 attempts got the lock");
    assert!(names(&b).is_empty(), "every lock was released");
}
