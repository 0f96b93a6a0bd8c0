//! `pvsnap mount` for real: a FUSE mount in a child process, read through the
//! kernel. Needs root and /dev/fuse; without them these tests fail, unless
//! PVSNAP_SKIP_FUSE_TESTS=1 says to skip them.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, Env};

/// Whether the mount tests can run; panics with the reason when they cannot
/// and nobody asked to skip them.
fn fuse_or_skip(test: &str) -> bool {
    let missing = if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse does not exist")
    } else if !util::is_root() {
        Some("they must run as root")
    } else {
        None
    };
    let Some(why) = missing else { return true };
    if std::env::var("PVSNAP_SKIP_FUSE_TESTS").as_deref() == Ok("1") {
        eprintln!("skipping {test}: {why} (PVSNAP_SKIP_FUSE_TESTS=1)");
        return false;
    }
    panic!(
        "{test}: cannot test the FUSE mount: {why}; run as root with /dev/fuse, or set PVSNAP_SKIP_FUSE_TESTS=1 to skip"
    );
}

/// The mount points in /proc/self/mountinfo.
fn mount_points() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .collect()
}

fn is_mounted(p: &Path) -> bool {
    mount_points().iter().any(|m| m == p)
}

/// `pvsnap mount` running in the background; killed and unmounted on drop.
struct Mounted {
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
}

impl Mounted {
    fn start(env: &Env, name: &str, extra: &[&str]) -> Mounted {
        Self::start_with(env, name, extra, &[])
    }

    /// [`Mounted::start`] with more environment variables (credentials).
    fn start_with(env: &Env, name: &str, extra: &[&str], vars: &[(&str, &str)]) -> Mounted {
        let dir = env.path(name);
        fs::create_dir_all(&dir).unwrap();
        let dir = fs::canonicalize(dir).unwrap();
        let log = env.path(&format!("{name}.log"));
        let child = env
            .cmd()
            .envs(vars.iter().copied())
            .arg("mount")
            .arg(&dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start pvsnap mount");
        let mut m = Mounted {
            child: Some(child),
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !is_mounted(&m.dir) {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "pvsnap mount exited with {status} before mounting:\n{}",
                    m.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "not mounted after 60 s:\n{}",
                m.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Waits for the mount process to end; returns whether it exited 0.
    fn wait_exit(&mut self) -> bool {
        let mut child = self.child.take().expect("still running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("pvsnap mount did not exit within 30 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("running").id() as libc::pid_t;
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(&self.dir) {
            let c = std::ffi::CString::new(self.dir.as_os_str().as_bytes()).unwrap();
            // SAFETY: c is a valid path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// A folder with every kind of entry a mount must show as captured.
fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    fs::write(root.join("text"), "some text\n".repeat(1000)).unwrap();
    fs::write(
        root.join("a/b/c/noise"),
        util::noise(3, 3 * 1024 * 1024 + 5),
    )
    .unwrap();
    fs::write(root.join("zero-length"), b"").unwrap();
    fs::write(root.join("one"), b"two names, one file").unwrap();
    fs::hard_link(root.join("one"), root.join("a/other-name")).unwrap();
    std::os::unix::fs::symlink("text", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", root.join("dangling")).unwrap();
    util::mknod(&root.join("fifo"), libc::S_IFIFO, 0);
    util::mknod(&root.join("null-ish"), libc::S_IFCHR, libc::makedev(1, 3));
    util::mknod(&root.join("loop-ish"), libc::S_IFBLK, libc::makedev(7, 300));
    fs::write(
        root.join(OsStr::from_bytes(b"name-\xff-not-utf8")),
        b"bytes",
    )
    .unwrap();
    let exe = root.join("setuid");
    fs::write(&exe, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o4750)).unwrap();
    fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::lchown(root.join("text"), Some(4321), Some(8765)).unwrap();
    xattr::set(root.join("text"), "user.colour", b"blue").unwrap();
    xattr::set(root.join("a"), "user.empty", b"").unwrap();
    let sparse = fs::File::create(root.join("sparse")).unwrap();
    sparse.set_len(8 * 1024 * 1024).unwrap();
    sparse.write_all_at(b"an island", 5 * 1024 * 1024).unwrap();
}

/// The only entry of a folder.
fn only_entry(dir: &Path) -> String {
    let names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?} in {}", dir.display());
    names[0].clone()
}

#[test]
fn a_snapshot_copied_out_of_the_mount_equals_the_original() {
    if !fuse_or_skip("a_snapshot_copied_out_of_the_mount_equals_the_original") {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    build_tree(&src);
    env.snapshot(&src, &[]);
    let m = Mounted::start(&env, "mnt", &[]);
    let snap = m.path("snapshots").join(only_entry(&m.path("snapshots")));
    let want = util::manifest(&src);
    assert_eq!(
        util::manifest(&snap),
        want,
        "the tree as seen through the mount"
    );
    let out = env.path("out");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&snap)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        cp.status.success(),
        "cp -a: {}",
        String::from_utf8_lossy(&cp.stderr)
    );
    assert_eq!(util::manifest(&out), want, "the tree copied out with cp -a");
    // The manifest does not show inode numbers: hardlinks must share one.
    use std::os::unix::fs::MetadataExt;
    let (x, y) = (
        fs::metadata(snap.join("one")).unwrap(),
        fs::metadata(snap.join("a/other-name")).unwrap(),
    );
    assert_eq!((x.ino(), x.nlink()), (y.ino(), 2));
    assert_ne!(x.ino(), fs::metadata(snap.join("text")).unwrap().ino());
    // Holes are where the original has them (SEEK_DATA / SEEK_HOLE).
    let (orig, mounted) = (
        fs::File::open(src.join("sparse")).unwrap(),
        fs::File::open(snap.join("sparse")).unwrap(),
    );
    let seek = |f: &fs::File, off: i64, whence: i32| {
        use std::os::fd::AsRawFd;
        // SAFETY: lseek on an open descriptor has no memory-safety preconditions.
        unsafe { libc::lseek(f.as_raw_fd(), off, whence) }
    };
    for (off, whence) in [
        (0, libc::SEEK_DATA),
        (0, libc::SEEK_HOLE),
        (5 << 20, libc::SEEK_HOLE),
        ((5 << 20) + 3, libc::SEEK_DATA),
        (7 << 20, libc::SEEK_DATA),
    ] {
        assert_eq!(
            seek(&mounted, off, whence),
            seek(&orig, off, whence),
            "lseek({off}, {whence})"
        );
    }
}

#[test]
fn random_reads_of_a_large_file_match_the_original() {
    if !fuse_or_skip("random_reads_of_a_large_file_match_the_original") {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    // 40 MiB, random and compressible stretches: many 1 MiB chunks.
    let mut data = Vec::with_capacity(40 << 20);
    for i in 0..40u64 {
        if i % 3 == 0 {
            data.extend("compressible line of text\n".repeat(1 << 20).as_bytes()[..1 << 20].iter());
        } else {
            data.extend(util::noise(i, 1 << 20));
        }
    }
    fs::write(src.join("big"), &data).unwrap();
    let snap = env.snapshot(&src, &[]);
    let short = snap["short_id"].as_str().unwrap();
    let m = Mounted::start(&env, "mnt", &["--snapshot", short]);
    let f = fs::File::open(m.path("big")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), data.len() as u64);
    let mut x = 0x5eed_u64;
    for i in 0..300 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (x >> 24) % (data.len() as u64 + 4096);
        let len = if i % 10 == 0 {
            3 << 20
        } else {
            (x >> 40) as usize % 300_000 + 1
        };
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let n = f.read_at(&mut buf[got..], off + got as u64).unwrap();
            if n == 0 {
                break;
            }
            got += n;
        }
        let from = (off as usize).min(data.len());
        let to = (off as usize + len).min(data.len());
        assert!(
            buf[..got] == data[from..to],
            "pread of {len} bytes at {off}"
        );
    }
    assert!(
        fs::read(m.path("big")).unwrap() == data,
        "a sequential read of the whole file"
    );
    // Mapped, as a program run from the mount would be.
    use std::os::fd::AsRawFd;
    // SAFETY: a private read-only mapping of an open file, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            data.len(),
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the mapping is data.len() readable bytes.
    let mapped = unsafe { std::slice::from_raw_parts(p as *const u8, data.len()) };
    assert!(mapped == &data[..], "the mapped file");
    // SAFETY: p is the mapping made above.
    unsafe { libc::munmap(p, data.len()) };
}

/// The folder name of a path source, as the documentation describes it.
fn escaped(path: &Path) -> String {
    let s = path.to_str().unwrap();
    s.replace('%', "%25").replace('_', "%5F").replace('/', "_")
}

fn local_name(rfc3339: &str) -> String {
    let t: jiff::Timestamp = rfc3339.parse().unwrap();
    t.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

#[test]
fn the_layout_finds_snapshots_by_time_source_and_id_and_new_ones_appear() {
    if !fuse_or_skip("the_layout_finds_snapshots_by_time_source_and_id_and_new_ones_appear") {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("my_data");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"first").unwrap();
    // Two snapshots in the same second.
    let first = env.snapshot(&src, &["--time", "2026-03-04T05:06:07.1Z"]);
    fs::write(src.join("f"), b"second").unwrap();
    let second = env.snapshot(&src, &["--time", "2026-03-04T05:06:07.9Z"]);
    let (s1, s2) = (
        first["short_id"].as_str().unwrap(),
        second["short_id"].as_str().unwrap(),
    );
    let time = local_name("2026-03-04T05:06:07Z");
    let m = Mounted::start(&env, "mnt", &[]);

    let mut names: Vec<String> = fs::read_dir(m.path("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want = vec![format!("{time}_{s1}"), format!("{time}_{s2}")];
    want.sort();
    assert_eq!(names, want);
    assert_eq!(
        fs::read_link(m.path(&format!("ids/{s2}"))).unwrap(),
        Path::new(&format!("../snapshots/{time}_{s2}"))
    );
    assert_eq!(fs::read(m.path(&format!("ids/{s1}/f"))).unwrap(), b"first");

    let timeline = m
        .path("sources")
        .join(escaped(&fs::canonicalize(&src).unwrap()));
    assert!(
        timeline
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("my%5Fdata"),
        "{}",
        timeline.display()
    );
    assert_eq!(fs::read(timeline.join(&time).join("f")).unwrap(), b"first");
    let later = format!("{time}_{s2}");
    assert_eq!(
        fs::read_link(timeline.join("latest")).unwrap(),
        Path::new(&later),
        "same second: the later one has its id appended"
    );
    assert_eq!(fs::read(timeline.join("latest/f")).unwrap(), b"second");

    // Taken while mounted: shows up without remounting.
    fs::write(src.join("f"), b"third").unwrap();
    let third = env.snapshot(&src, &[]);
    let s3 = third["short_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs::read_dir(m.path("snapshots")).unwrap().count() < 3 {
        assert!(
            Instant::now() < deadline,
            "the new snapshot did not appear:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(fs::read(m.path(&format!("ids/{s3}/f"))).unwrap(), b"third");
    assert_eq!(fs::read(timeline.join("latest/f")).unwrap(), b"third");
}

#[test]
fn writes_fail_with_erofs() {
    if !fuse_or_skip("writes_fail_with_erofs") {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"keep me").unwrap();
    let snap = env.snapshot(&src, &[]);
    let m = Mounted::start(
        &env,
        "mnt",
        &["--snapshot", snap["short_id"].as_str().unwrap()],
    );
    let erofs = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
    };
    erofs(
        fs::OpenOptions::new()
            .write(true)
            .open(m.path("f"))
            .map(drop),
        "open for writing",
    );
    erofs(fs::File::create(m.path("new")).map(drop), "create");
    erofs(fs::remove_file(m.path("f")), "unlink");
    erofs(fs::create_dir(m.path("d")), "mkdir");
    erofs(fs::rename(m.path("f"), m.path("g")), "rename");
    erofs(
        fs::set_permissions(m.path("f"), fs::Permissions::from_mode(0o600)),
        "chmod",
    );
    erofs(xattr::set(m.path("f"), "user.x", b"y"), "setxattr");
    assert_eq!(fs::read(m.path("f")).unwrap(), b"keep me");
}

#[test]
fn sigterm_and_fusermount_unmount_cleanly() {
    if !fuse_or_skip("sigterm_and_fusermount_unmount_cleanly") {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    env.snapshot(&src, &[]);
    let locks = || fs::read_dir(env.repo().join("locks")).unwrap().count();

    let mut m = Mounted::start(&env, "mnt", &[]);
    assert_eq!(locks(), 1, "a shared lock while mounted");
    m.signal(libc::SIGTERM);
    assert!(m.wait_exit(), "exit 0 after SIGTERM:\n{}", m.log());
    assert!(!is_mounted(&m.dir), "unmounted after SIGTERM");
    assert_eq!(locks(), 0, "the lock is released");

    let mut m = Mounted::start(&env, "mnt2", &[]);
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(&m.dir)
        .output()
        .expect("fusermount3 (apt-get install fuse3)");
    assert!(
        out.status.success(),
        "fusermount3 -u: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(m.wait_exit(), "exit 0 after fusermount3 -u:\n{}", m.log());
    assert!(!is_mounted(&m.dir));
    assert_eq!(locks(), 0);
}

#[test]
fn bad_mountpoints_are_refused_clearly() {
    if !fuse_or_skip("bad_mountpoints_are_refused_clearly") {
        return;
    }
    let env = Env::new();
    env.init();
    let missing = env.path("missing");
    let out = env.run(&["mount", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such folder"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = env.path("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("x"), b"").unwrap();
    let out = env.run(&["mount", full.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Mounted::start(&env, "mnt", &[]);
    let out = env.run(&["mount", m.dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already a mount point"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Inodes of the files in `dir` as the mount's statfs counts them (the
/// filesystem reports the inodes it holds as its total).
fn inodes_held(dir: &Path) -> u64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%c"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The kernel forgets inodes when it drops its caches; the mount then lets
/// them go, so browsing a large snapshot holds only what the kernel holds,
/// and a file looked up again reads the same.
#[test]
fn the_mount_lets_go_of_inodes_the_kernel_forgets() {
    if !fuse_or_skip("the_mount_lets_go_of_inodes_the_kernel_forgets") {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for d in 0..20 {
        let dir = src.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..500 {
            fs::write(dir.join(format!("f{f:03}")), format!("{d} {f}")).unwrap();
        }
    }
    env.snapshot(&src, &[]);
    let m = Mounted::start(&env, "mnt", &["--snapshot", "latest"]);
    let before = inodes_held(&m.dir);
    let found = Command::new("find")
        .arg(&m.dir)
        .arg("-type")
        .arg("f")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&found.stdout).lines().count(),
        10_000
    );
    let browsed = inodes_held(&m.dir);
    assert!(
        browsed >= 10_000,
        "find looked up every file: {before} → {browsed}"
    );
    // Dentries and inodes out of the kernel's caches: it sends forgets.
    let mut after = browsed;
    for _ in 0..50 {
        fs::write("/proc/sys/vm/drop_caches", "2\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        after = inodes_held(&m.dir);
        if after < 1_000 {
            break;
        }
    }
    assert!(
        after < 1_000,
        "the mount still holds {after} of {browsed} inodes"
    );
    assert_eq!(fs::read_to_string(m.dir.join("d07/f123")).unwrap(), "7 123");
}

/// A repository in a bucket mounts like a folder: its snapshots are listed
/// and a file reads back through the kernel.
#[test]
fn a_repository_in_a_bucket_mounts() {
    if !fuse_or_skip("a_repository_in_a_bucket_mounts") {
        return;
    }
    let Some((env, _proxy, _bucket)) = crate::s3::s3_env("m") else {
        return;
    };
    let src = env.path("src");
    build_tree(&src);
    crate::s3::ok(&env, &["init"]);
    crate::s3::ok(&env, &["snapshot", src.to_str().unwrap()]);
    let vars = [
        ("AWS_ACCESS_KEY_ID", crate::s3::KEY),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_REGION", "us-east-1"),
    ];
    let m = Mounted::start_with(&env, "mnt", &[], &vars);
    let ids: Vec<_> = fs::read_dir(m.path("ids")).unwrap().collect();
    assert_eq!(ids.len(), 1, "one snapshot listed: {}", m.log());
    let id = ids[0].as_ref().unwrap().file_name();
    let root = m.path("ids").join(id);
    let mut names: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.contains(&"text".to_string()) && names.contains(&"a".to_string()),
        "{names:?}"
    );
    assert_eq!(
        fs::read(root.join("text")).unwrap(),
        "some text\n".repeat(1000).as_bytes()
    );
    assert_eq!(
        fs::read(root.join("a/b/c/noise")).unwrap(),
        util::noise(3, 3 * 1024 * 1024 + 5)
    );
}

/// VmRSS of process `pid` in KiB.
fn vm_rss(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// How much more the mount may hold after `find` over 50k files than over
/// 10k, the kernel keeping every inode. An inode costs the mount about
/// 45 bytes (its number and the kernel's count; the entry stays in the
/// tree cache): 40k files more, some 2 MiB. The tree cache holds the 40
/// folders more, packed (about 95 bytes an entry): some 4 MiB. Measured:
/// 5 MiB. When each inode held its node (about 1 KiB), it was 45 MiB; with
/// decoded trees in the cache, 16 MiB.
const MOUNT_MAX_GROWTH_KIB: u64 = 12 * 1024;

/// The mount's RSS after `find` over a snapshot of `n` small files.
fn mount_rss_after_find(n: usize) -> (u64, u64) {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    crate::restore_memory::tree(&src, n);
    env.snapshot(&src, &[]);
    let m = Mounted::start(&env, "mnt", &["--snapshot", "latest"]);
    // Sizes need a stat of every entry: the kernel looks each one up.
    let found = Command::new("find")
        .arg(&m.dir)
        .args(["-printf", "%s\n"])
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&found.stdout).lines().count();
    assert_eq!(lines, 1 + n + n.div_ceil(1000), "find saw every entry");
    let pid = m.child.as_ref().unwrap().id();
    (vm_rss(pid), inodes_held(&m.dir))
}

/// Issue #23: browsing three snapshots of a million files must fit in
/// 256 MiB, so what the mount holds per file the kernel holds is bounded.
#[test]
fn mount_memory_grows_by_a_few_bytes_per_file() {
    if !fuse_or_skip("mount_memory_grows_by_a_few_bytes_per_file") {
        return;
    }
    let (small, small_held) = mount_rss_after_find(10_000);
    let (big, big_held) = mount_rss_after_find(50_000);
    eprintln!(
        "mount RSS after find: 10k files {small} KiB ({small_held} inodes held), 50k files {big} KiB ({big_held} inodes held)"
    );
    assert!(
        big_held >= 40_000,
        "the kernel kept the inodes ({big_held} held), else this measures nothing"
    );
    assert!(
        big.saturating_sub(small) <= MOUNT_MAX_GROWTH_KIB,
        "the mount held {big} KiB after find over 50k files, {small} KiB over 10k: {} KiB more (bound {MOUNT_MAX_GROWTH_KIB} KiB); what it holds per inode grew",
        big - small
    );
}
