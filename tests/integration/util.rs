//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch repository and folders, removed at the end of the test.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// A repository that is not the folder `repo` (an `s3:` location).
    pub repo_at: Option<PathBuf>,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
            repo_at: None,
        }
    }

    pub fn repo(&self) -> PathBuf {
        self.repo_at
            .clone()
            .unwrap_or_else(|| self.dir.path().join("repo"))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `pvsnap --repo <repo> ARGS`, with no password in the environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pvsnap"));
        c.arg("--repo").arg(self.repo());
        c.env_remove("PVSNAP_PASSWORD")
            .env_remove("PVSNAP_REPO")
            .env_remove("PVSNAP_PASSWORD_FILE")
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"));
        c
    }

    /// Runs pvsnap and requires success.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().expect("run pvsnap");
        assert!(
            out.status.success(),
            "pvsnap {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        out
    }

    /// Runs pvsnap and returns the output whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run pvsnap")
    }

    /// `key add`: a key slot opened by `new_password_file`, added with the
    /// key of `password_file`.
    pub fn add_key(&self, password_file: &str, new_password_file: &str) -> Output {
        self.ok(&[
            "--password-file",
            password_file,
            "key",
            "add",
            "--new-password-file",
            new_password_file,
        ])
    }

    pub fn init(&self) {
        self.ok(&["init"]);
    }

    /// `snapshot PATH --json`, returning the first snapshot object.
    pub fn snapshot(&self, path: &Path, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["snapshot", path.to_str().expect("utf-8 path"), "--json"];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("snapshot --json prints JSON");
        v[0].clone()
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Deterministic pseudo-random bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut h = blake3_like(seed);
    for chunk in out.chunks_mut(8) {
        h = h
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let b = (h ^ (h >> 29)).to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    out
}

fn blake3_like(seed: u64) -> u64 {
    seed.wrapping_mul(0x9E3779B97F4A7C15) ^ 0xD1B54A32D192ED03
}

/// Every file below `root` (anything but a folder, which is entered), in
/// path order.
pub fn files_below(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.sort();
    out
}

/// `path` relative to `root`, as text.
pub fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .expect("below root")
        .to_string_lossy()
        .into_owned()
}

/// Writes `n` files `f00`, `f01`, ... of `size` bytes into `dir` (made if
/// missing), file `i` holding the [`noise`] of seed `first_seed + i`.
pub fn write_noise_files(dir: &Path, first_seed: u64, n: usize, size: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        std::fs::write(
            dir.join(format!("f{i:02}")),
            noise(first_seed + i as u64, size),
        )
        .unwrap();
    }
}

/// Every entry below `root` with its metadata, for comparing trees.
pub fn manifest(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let rel = p.strip_prefix(root).expect("below root");
            let ft = m.file_type();
            let mut xattrs: Vec<String> = xattr::list(&p)
                .map(|l| {
                    l.map(|n| {
                        let v = xattr::get(&p, &n).ok().flatten().unwrap_or_default();
                        format!("{}={}", n.to_string_lossy(), hex(&v))
                    })
                    .collect()
                })
                .unwrap_or_default();
            xattrs.sort();
            let content = if ft.is_file() {
                format!("blake3-ish:{}", checksum(&std::fs::read(&p).expect("read")))
            } else if ft.is_symlink() {
                format!("-> {:?}", std::fs::read_link(&p).expect("readlink"))
            } else {
                String::new()
            };
            let is_dir = ft.is_dir();
            out.push(format!(
                "{:?} mode={:o} uid={} gid={} size={} mtime={}.{} rdev={} nlink={} {} [{}]",
                rel,
                m.mode(),
                m.uid(),
                m.gid(),
                if is_dir { 0 } else { m.size() },
                if ft.is_symlink() { 0 } else { m.mtime() },
                if ft.is_symlink() { 0 } else { m.mtime_nsec() },
                m.rdev(),
                if is_dir { 0 } else { m.nlink() },
                content,
                xattrs.join(",")
            ));
            if is_dir {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A content checksum good enough to compare files in tests (FNV-1a 64).
pub fn checksum(b: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for x in b {
        h ^= *x as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}:{}", b.len())
}

/// Makes a fifo or device node (mode 0640).
pub fn mknod(p: &Path, kind: libc::mode_t, rdev: libc::dev_t) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: c is a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mknod(c.as_ptr(), kind | 0o640, rdev) },
        0,
        "mknod {}",
        p.display()
    );
}

/// Sets a path's atime and mtime without following a symlink.
pub fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let t = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    ];
    // SAFETY: valid path and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

/// Runs `cmd` with a new pseudo-terminal as its controlling terminal and its
/// standard input, output and error, as a person at a terminal would; the
/// prompts in `answers` (text to wait for, reply) are answered in order.
/// Returns the exit status and everything the terminal showed.
pub fn in_pty(mut cmd: Command, answers: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    use std::os::unix::process::CommandExt;
    // SAFETY: posix_openpt, grantpt, unlockpt and ptsname get a fresh pty
    // pair; every return value is checked and each descriptor owned by one File.
    let (mut master, slave) = unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(m >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(m), 0, "grantpt");
        assert_eq!(libc::unlockpt(m), 0, "unlockpt");
        let name = libc::ptsname(m);
        assert!(!name.is_null(), "ptsname");
        let s = libc::open(name, libc::O_RDWR | libc::O_NOCTTY);
        assert!(s >= 0, "open the pty's terminal side");
        (std::fs::File::from_raw_fd(m), std::fs::File::from_raw_fd(s))
    };
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    // SAFETY: setsid and ioctl are async-signal-safe; the child becomes the
    // leader of a new session whose controlling terminal is the pty.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start in a pty");
    // The parent's copies of the terminal side go, so reads end with the child.
    drop(cmd);
    let mut shown = Vec::new();
    let mut next = 0;
    let mut answered_up_to = 0;
    let mut buf = [0u8; 4096];
    loop {
        let n = match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            // EIO: every terminal side is closed, the child is gone.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("read the pty: {e}"),
        };
        shown.extend_from_slice(&buf[..n]);
        if let Some((prompt, reply)) = answers.get(next) {
            let since = String::from_utf8_lossy(&shown[answered_up_to..]).into_owned();
            if since.contains(prompt) {
                master
                    .write_all(reply.as_bytes())
                    .expect("answer in the pty");
                answered_up_to = shown.len();
                next += 1;
            }
        }
    }
    let status = child.wait().expect("wait for the child");
    (status, String::from_utf8_lossy(&shown).into_owned())
}

/// A command's standard error, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A command's standard output, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs pvsnap and requires exit code `want`; the message shows both streams.
pub fn code(env: &Env, args: &[&str], want: i32) -> Output {
    let out = env.run(args);
    assert_eq!(
        out.status.code(),
        Some(want),
        "pvsnap {args:?}:\n{}\n{}",
        stderr(&out),
        stdout(&out)
    );
    out
}
