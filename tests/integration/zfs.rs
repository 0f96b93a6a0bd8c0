//! The `pvsnap` binary on a real ZFS pool (zfs-fuse under `scripts/test`;
//! a pool on a file, made and destroyed by the test): frozen snapshots
//! kept as restore points, `--keep-native`, the listing of kept and gone
//! ones, rollback (refused past newer snapshots, naming them), a clone,
//! and forget destroying the native snapshot with its record. Root only;
//! skipped loudly without a usable ZFS unless `PVSNAP_REQUIRE_ZFS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use crate::util::{self, Env};

/// Runs a ZFS tool with a two-minute limit (a wedged zfs-fuse daemon fails
/// the test instead of hanging the suite).
pub(crate) fn sh(program: &str, args: &[&str]) -> Result<String, String> {
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
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One test pool at a time in this process: zfs-fuse has hung working on
/// one pool while another was being destroyed (and the name is per process).
static ONE_POOL: Mutex<()> = Mutex::new(());

/// A pool on a file with one dataset `vol`; destroyed on drop.
pub(crate) struct Pool {
    pub(crate) name: String,
    pub(crate) mnt: PathBuf,
    _dir: tempfile::TempDir,
    /// Dropped after the pool is destroyed (fields drop after `drop`).
    _one: MutexGuard<'static, ()>,
}

impl Pool {
    /// A pool of `mib` MiB on a file, or `None` after saying loudly why
    /// the test is skipped (a failure under `PVSNAP_REQUIRE_ZFS=1`).
    pub(crate) fn new(test: &str, mib: u64) -> Option<Pool> {
        Pool::named(test, format!("pvti{}", std::process::id()), mib)
    }

    /// [`Pool::new`] named `name` (`pvti<pid>x<n>`, which `scripts/test`
    /// sweeps too).
    pub(crate) fn named(test: &str, name: String, mib: u64) -> Option<Pool> {
        let why = if !util::is_root() {
            Some("not root".to_string())
        } else {
            sh("zpool", &["list"]).err()
        };
        if let Some(why) = why {
            if std::env::var("PVSNAP_REQUIRE_ZFS").as_deref() == Ok("1") {
                panic!("{test}: PVSNAP_REQUIRE_ZFS=1 but ZFS is unusable: {why}");
            }
            eprintln!(
                "\n*** SKIPPED {test}: no usable ZFS ({why}); set PVSNAP_REQUIRE_ZFS=1 to make this a failure ***\n"
            );
            return None;
        }
        let one = ONE_POOL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pool");
        std::fs::File::create(&file)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let mnt = dir.path().join("mnt");
        sh(
            "zpool",
            &[
                "create",
                "-m",
                mnt.to_str().unwrap(),
                &name,
                file.to_str().unwrap(),
            ],
        )
        .unwrap();
        let pool = Pool {
            name,
            mnt,
            _dir: dir,
            _one: one,
        };
        sh("zfs", &["create", &format!("{}/vol", pool.name)]).unwrap();
        Some(pool)
    }

    /// Every dataset and snapshot of the pool.
    pub(crate) fn all(&self) -> Vec<String> {
        sh(
            "zfs",
            &["list", "-H", "-t", "all", "-o", "name", "-r", &self.name],
        )
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let mut children = self.all();
        children.retain(|d| d != &self.name && !d.contains('@'));
        for d in children.iter().rev() {
            let _ = sh("zfs", &["destroy", "-R", d]);
        }
        // zfs-fuse may still call the pool busy right after its datasets
        // went (their unmounts finish late): try a few times.
        let mut last = Ok(String::new());
        for _ in 0..10 {
            last = sh("zpool", &["destroy", "-f", &self.name]);
            if last.is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        if let Err(e) = last {
            eprintln!("zfs.rs: could not destroy the test pool {}: {e}", self.name);
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn kept_zfs_snapshots_roll_back_clone_and_go_with_their_records() {
    let Some(pool) = Pool::new(
        "kept_zfs_snapshots_roll_back_clone_and_go_with_their_records",
        128,
    ) else {
        return;
    };
    let vol = pool.mnt.join("vol");
    std::fs::create_dir(vol.join("d")).unwrap();
    std::fs::write(vol.join("d/g"), b"g").unwrap();
    let env = Env::new();
    env.init();

    // Three frozen snapshots keeping the last two native ones.
    let mut ids = vec![];
    let mut handles = vec![];
    let mut contents = vec![];
    for i in 0..3 {
        std::fs::write(vol.join("f"), format!("version {i}")).unwrap();
        contents.push(util::manifest(&vol));
        let snap = env.snapshot(
            &vol,
            &["--source-snapshot", "required", "--keep-native", "2"],
        );
        let n = &snap["source_snapshot"];
        assert_eq!(n["kind"], "zfs", "{snap}");
        assert_eq!(n["kept"], true, "{snap}");
        assert_eq!(n["volume"], format!("{}/vol", pool.name));
        ids.push(snap["id"].as_str().unwrap().to_owned());
        handles.push(n["handle"].as_str().unwrap().to_owned());
    }
    let all = pool.all();
    assert!(
        !all.contains(&handles[0]),
        "beyond --keep-native 2: {all:?}"
    );
    assert!(
        all.contains(&handles[1]) && all.contains(&handles[2]),
        "{all:?}"
    );
    assert!(
        !all.iter()
            .any(|d| d.contains("pvsnap-tmp") || d.contains("pvsnap-read")),
        "no read clone or read snapshot left: {all:?}"
    );
    let list = util::stdout(&env.ok(&["snapshots"]));
    let line = |id: &str| {
        list.lines()
            .find(|l| l.starts_with(&id[..8]))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line(&ids[0]).contains("[zfs snapshot gone]"), "{list}");
    assert!(line(&ids[1]).contains("[+ zfs snapshot kept]"), "{list}");

    // What was stored is what each snapshot froze, although the three ran
    // within a second or two and zfs-fuse's times are whole seconds: a
    // file changed in the same second as its parent read it, at the same
    // size, is read again, not taken as unchanged.
    for (i, id) in ids.iter().enumerate() {
        let out = env.path(&format!("out{i}"));
        env.ok(&["restore", id, "--target", s(&out)]);
        assert_eq!(util::manifest(&out), contents[i], "snapshot {i}");
    }

    // Rollback past a newer snapshot is refused, naming it; to the newest
    // it returns the dataset exactly.
    std::fs::write(vol.join("f"), b"changed after").unwrap();
    std::fs::write(vol.join("new"), b"new").unwrap();
    let refused = util::code(&env, &["restore", &ids[1], "--rollback", "--yes"], 1);
    let err = util::stderr(&refused);
    assert!(
        err.contains(&handles[2]) && err.contains("pvsnap forget"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(vol.join("new")).unwrap(),
        b"new",
        "nothing changed"
    );
    env.ok(&["restore", &ids[2], "--rollback", "--yes"]);
    assert_eq!(util::manifest(&vol), contents[2]);

    // A clone is a writable copy; the snapshot under it is untouched.
    let clone = pool.mnt.join("staging");
    env.ok(&["restore", &ids[1], "--clone-to", s(&clone)]);
    assert_eq!(util::manifest(&clone), contents[1]);
    std::fs::write(clone.join("f"), b"written in the clone").unwrap();
    let again = env.path("again");
    env.ok(&["restore", &ids[1], "--target", s(&again)]);
    assert_eq!(util::manifest(&again), contents[1]);

    // Forget destroys the native snapshot with its record, except one a
    // clone depends on: the record goes, the error names the clone.
    let out = util::code(&env, &["forget", &ids[1]], 1);
    assert!(
        util::stderr(&out).contains("has clones"),
        "{}",
        util::stderr(&out)
    );
    assert!(pool.all().contains(&handles[1]));
    let out = env.ok(&["forget", &ids[2]]);
    assert!(
        util::stderr(&out).contains("destroyed the zfs snapshot"),
        "{}",
        util::stderr(&out)
    );
    let all = pool.all();
    assert!(!all.contains(&handles[2]), "{all:?}");
    env.ok(&["prune", "--keep-deleted", "0"]);
    env.ok(&["check", "--read-data"]);
}
