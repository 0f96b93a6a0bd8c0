//! The ZFS provider against the real `zfs` on this machine (zfs-fuse under
//! `scripts/test`): each test makes its own pool on a file in a tempdir and
//! destroys it on drop, even after a panic. Root only; skips loudly without
//! root or `zfs` unless `PVSNAP_REQUIRE_ZFS=1`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use pvsnap_native::naming::{Name, Purpose};
use pvsnap_native::zfs::Zfs;
use pvsnap_native::{Kind, Provider, Volume};

/// Runs a tool with a two-minute limit, so a wedged zfs-fuse daemon fails
/// the test instead of hanging the whole suite.
fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("timeout")
        .args(["-k", "10", "120", program])
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {args:?} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Whether the tests can run; says why not on stderr, or panics when
/// `PVSNAP_REQUIRE_ZFS=1`.
fn available(test: &str) -> bool {
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("not root".to_owned())
    } else if sh("zpool", &["list"]).is_err() {
        // zfs-fuse runs as a daemon; start it when it is installed.
        if Path::new("/usr/sbin/zfs-fuse").exists() || sh("which", &["zfs-fuse"]).is_ok() {
            let _ = sh("zfs-fuse", &[]);
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        sh("zpool", &["list"]).err()
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if std::env::var("PVSNAP_REQUIRE_ZFS").as_deref() == Ok("1") => {
            panic!("{test}: ZFS required (PVSNAP_REQUIRE_ZFS=1) but unusable: {why}")
        }
        Some(why) => {
            eprintln!(
                "SKIPPED {test}: no usable ZFS ({why}); run as root with zfs-fuse or OpenZFS"
            );
            false
        }
    }
}

/// A pool on a file, destroyed on drop.
struct Pool {
    name: String,
    mount: PathBuf,
    _dir: tempfile::TempDir,
    /// One pool at a time: zfs-fuse was seen to hang in `zfs destroy -R`
    /// of a clone while another test's pool was being worked on.
    _alone: std::sync::MutexGuard<'static, ()>,
}

static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

static COUNT: AtomicUsize = AtomicUsize::new(0);

impl Pool {
    fn new() -> Pool {
        // A test that failed while holding it leaves it poisoned: still ours.
        let alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pool");
        let f = std::fs::File::create(&file).unwrap();
        f.set_len(128 << 20).unwrap();
        let name = format!(
            "pvt{}x{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        );
        let mount = dir.path().join("mnt");
        sh(
            "zpool",
            &[
                "create",
                "-m",
                mount.to_str().unwrap(),
                &name,
                file.to_str().unwrap(),
            ],
        )
        .unwrap();
        Pool {
            name,
            mount,
            _dir: dir,
            _alone: alone,
        }
    }

    fn volume(&self) -> Volume {
        Volume {
            kind: Kind::Zfs,
            name: self.name.clone(),
            mount_point: self.mount.clone(),
            fs_type: "fuse.zfs".into(),
            device: self.name.clone(),
        }
    }

    fn snapshots(&self) -> Vec<String> {
        sh(
            "zfs",
            &[
                "list", "-H", "-t", "snapshot", "-o", "name", "-r", &self.name,
            ],
        )
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
    }

    fn datasets(&self) -> Vec<String> {
        sh("zfs", &["list", "-H", "-o", "name", "-r", &self.name])
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Children (clones) first; a pool with a mounted clone is busy.
        let mut children = self.datasets();
        children.retain(|d| d != &self.name);
        for d in children.iter().rev() {
            let _ = sh("zfs", &["destroy", "-R", d]);
        }
        // zfs-fuse answers "pool is busy" for a moment after a clone goes.
        for attempt in 1..=10 {
            match sh("zpool", &["destroy", "-f", &self.name]) {
                Ok(_) => return,
                Err(e) if attempt == 10 || e.contains("status: 124") => {
                    eprintln!("LEFT BEHIND: test pool {}: {e}", self.name);
                    return;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
            }
        }
    }
}

fn name(p: Purpose) -> String {
    Name::new(p).to_string()
}

#[test]
fn a_snapshot_holds_its_instant_and_reading_it_leaves_nothing() {
    if !available("a_snapshot_holds_its_instant_and_reading_it_leaves_nothing") {
        return;
    }
    let pool = Pool::new();
    let z = Zfs::new();
    let v = pool.volume();
    std::fs::write(pool.mount.join("before"), b"old").unwrap();
    let t0 = std::time::Instant::now();
    let snap = z.create(&v, &name(Purpose::Read)).unwrap();
    eprintln!("zfs snapshot of a small dataset: {:?}", t0.elapsed());
    assert!(snap.created.is_some());
    std::fs::write(pool.mount.join("after"), b"new").unwrap();
    std::fs::write(pool.mount.join("before"), b"changed").unwrap();

    let view = z.open(&snap).unwrap();
    assert_eq!(std::fs::read(view.root.join("before")).unwrap(), b"old");
    assert!(!view.root.join("after").exists());
    // While read, it is held: it cannot be destroyed by ZFS.
    assert!(sh("zfs", &["destroy", &snap.handle]).is_err());
    let root = view.root.clone();
    view.release().unwrap();
    assert!(!root.exists(), "{} left behind", root.display());
    assert_eq!(pool.datasets(), vec![pool.name.clone()]);
    assert!(
        z.leftovers(&v)
            .unwrap()
            .iter()
            .all(|l| l.what != "hold" && l.what != "clone")
    );

    assert_eq!(z.list(&v).unwrap(), vec![snap.clone()]);
    z.destroy(&snap).unwrap();
    assert!(pool.snapshots().is_empty());
}

#[test]
fn list_is_pvsnap_names_oldest_first() {
    if !available("list_is_pvsnap_names_oldest_first") {
        return;
    }
    let pool = Pool::new();
    let z = Zfs::new();
    let v = pool.volume();
    sh("zfs", &["snapshot", &format!("{}@daily", pool.name)]).unwrap();
    let a = z.create(&v, &name(Purpose::Keep)).unwrap();
    let b = z.create(&v, &name(Purpose::Keep)).unwrap();
    assert_eq!(z.list(&v).unwrap(), vec![a, b]);
    let e = z.create(&v, "daily2").unwrap_err().to_string();
    assert!(e.contains("not a pvsnap snapshot name"), "{e}");
}

#[test]
fn rollback_refuses_to_lose_newer_snapshots_unless_allowed() {
    if !available("rollback_refuses_to_lose_newer_snapshots_unless_allowed") {
        return;
    }
    let pool = Pool::new();
    let z = Zfs::new();
    let v = pool.volume();
    std::fs::write(pool.mount.join("f"), b"one").unwrap();
    let one = z.create(&v, &name(Purpose::Keep)).unwrap();
    std::fs::write(pool.mount.join("f"), b"two").unwrap();
    let two = z.create(&v, &name(Purpose::Keep)).unwrap();
    std::fs::write(pool.mount.join("f"), b"three").unwrap();

    z.rollback(&v, &two).unwrap();
    assert_eq!(std::fs::read(pool.mount.join("f")).unwrap(), b"two");

    let e = z.rollback(&v, &one).unwrap_err().to_string();
    assert!(
        e.contains(&two.handle) && e.contains("pvsnap forget"),
        "{e}"
    );
    assert_eq!(std::fs::read(pool.mount.join("f")).unwrap(), b"two");
    assert_eq!(pool.snapshots().len(), 2);

    z.rollback_allowing(&v, &one, true).unwrap();
    assert_eq!(std::fs::read(pool.mount.join("f")).unwrap(), b"one");
    assert_eq!(pool.snapshots(), vec![one.handle.clone()]);
}

#[test]
fn a_clone_is_writable_and_keeps_its_snapshot_from_being_destroyed() {
    if !available("a_clone_is_writable_and_keeps_its_snapshot_from_being_destroyed") {
        return;
    }
    let pool = Pool::new();
    let z = Zfs::new();
    let v = pool.volume();
    std::fs::write(pool.mount.join("f"), b"one").unwrap();
    let snap = z.create(&v, &name(Purpose::Keep)).unwrap();
    let target = pool._dir.path().join("copy");
    let at = z.clone_to(&snap, &target).unwrap();
    assert_eq!(std::fs::read(at.join("f")).unwrap(), b"one");
    std::fs::write(at.join("g"), b"mine").unwrap();
    assert!(!pool.mount.join("g").exists());

    let e = z.destroy(&snap).unwrap_err().to_string();
    let clone = format!("{0}/{0}-{1}", pool.name, snap.name);
    assert!(e.contains(&clone), "{e}");
    assert_eq!(pool.snapshots(), vec![snap.handle.clone()]);
    // A user's clone is never a leftover.
    assert!(z.leftovers(&v).unwrap().is_empty(), "{:?}", z.leftovers(&v));
    let e = z
        .clone_to(&snap, Path::new("rel/dir"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("absolute"), "{e}");
}

const CHILD: &str = "PVSNAP_ZFS_KILLED_CHILD";

/// Run as a child by `a_killed_read_leaves_exactly_its_own_leftovers`:
/// creates a read snapshot, opens it, says so and waits to be killed.
#[test]
fn killed_child() {
    let Ok(pool) = std::env::var(CHILD) else {
        return;
    };
    let z = Zfs::new();
    let v = Volume {
        kind: Kind::Zfs,
        name: pool.clone(),
        mount_point: PathBuf::new(),
        fs_type: "fuse.zfs".into(),
        device: pool,
    };
    let snap = z.create(&v, &name(Purpose::Read)).unwrap();
    let view = z.open(&snap).unwrap();
    println!("READY {} {}", snap.handle, view.root.display());
    std::thread::sleep(std::time::Duration::from_secs(120));
    drop(view);
}

#[test]
fn a_killed_read_leaves_exactly_its_own_leftovers() {
    if !available("a_killed_read_leaves_exactly_its_own_leftovers") {
        return;
    }
    let pool = Pool::new();
    let z = Zfs::new();
    let v = pool.volume();
    let daily = format!("{}@daily", pool.name);
    sh("zfs", &["snapshot", &daily]).unwrap();
    let kept = z.create(&v, &name(Purpose::Keep)).unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "killed_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, &pool.name)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = loop {
        let l = lines.next().expect("the child ended before READY").unwrap();
        // libtest prints `test killed_child ... ` first on the line.
        if let Some((_, r)) = l.split_once("READY ") {
            break r.to_owned();
        }
    };
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let (snap, root) = ready.split_once(' ').unwrap();

    let found = z.leftovers(&v).unwrap();
    let mut whats: Vec<(String, String)> = found
        .iter()
        .map(|l| (l.what.clone(), l.handle.clone()))
        .collect();
    whats.sort();
    let clone = pool
        .datasets()
        .into_iter()
        .find(|d| d.starts_with(&format!("{}/pvsnap-tmp-", pool.name)))
        .expect("the child's clone");
    let mut want = vec![
        ("clone".to_owned(), clone),
        ("hold".to_owned(), snap.to_owned()),
        ("snapshot".to_owned(), snap.to_owned()),
    ];
    want.sort();
    assert_eq!(whats, want);

    for l in &found {
        z.remove_leftover(l).unwrap();
    }
    assert!(z.leftovers(&v).unwrap().is_empty());
    assert_eq!(pool.datasets(), vec![pool.name.clone()]);
    assert_eq!(pool.snapshots(), vec![daily.clone(), kept.handle.clone()]);
    assert!(!Path::new(root).exists(), "{root} left behind");

    // Nothing but a pvsnap leftover is removed, whatever the caller says.
    for (what, handle) in [
        ("snapshot", daily.as_str()),
        ("snapshot", kept.handle.as_str()),
    ] {
        let e = z
            .remove_leftover(&pvsnap_native::Leftover {
                kind: Kind::Zfs,
                what: what.into(),
                handle: handle.into(),
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("left alone"), "{e}");
    }
    assert_eq!(pool.snapshots().len(), 2);
}

#[test]
#[ignore = "measurement: cargo test -p pvsnap-native --test zfs_real -- --ignored --nocapture"]
fn snapshot_time_of_a_1_gib_dataset() {
    if !available("snapshot_time_of_a_1_gib_dataset") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pool");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(1600 << 20)
        .unwrap();
    let pool_name = format!("pvtbig{}", std::process::id());
    let mount = dir.path().join("mnt");
    sh(
        "zpool",
        &[
            "create",
            "-m",
            mount.to_str().unwrap(),
            &pool_name,
            file.to_str().unwrap(),
        ],
    )
    .unwrap();
    let pool = Pool {
        name: pool_name,
        mount,
        _dir: dir,
        _alone: ALONE.lock().unwrap_or_else(|e| e.into_inner()),
    };
    let mut f = std::fs::File::create(pool.mount.join("big")).unwrap();
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for _ in 0..1024 {
        std::io::Write::write_all(&mut f, &chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let z = Zfs::new();
    let t0 = std::time::Instant::now();
    z.create(&pool.volume(), &name(Purpose::Read)).unwrap();
    eprintln!("zfs snapshot of a 1 GiB dataset: {:?}", t0.elapsed());
}
