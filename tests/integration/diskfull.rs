//! A repository on a full file system: a small ext4 loop file system (root
//! and a loop device needed; skipped loudly otherwise, failed instead when
//! `PVSNAP_REQUIRE_LOOP=1`).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util;

/// Unmounts the loop file system however the test ends.
struct Mounted {
    point: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.point)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds it (a failed assertion mid-command): detach.
            let _ = Command::new("umount").arg("-l").arg(&self.point).status();
        }
    }
}

/// Why a loop file system cannot be had here, if it cannot.
fn unavailable(img: &Path, point: &Path) -> Option<String> {
    if !util::is_root() {
        return Some("not running as root".into());
    }
    let f = std::fs::File::create(img).ok()?;
    f.set_len(64 << 20).ok()?;
    drop(f);
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0"])
        .arg(img)
        .output();
    match mkfs {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Some(format!(
                "mkfs.ext4 failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Err(e) => return Some(format!("mkfs.ext4 cannot run: {e}")),
    }
    std::fs::create_dir_all(point).ok()?;
    match Command::new("mount")
        .arg("-o")
        .arg("loop")
        .arg(img)
        .arg(point)
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "mount -o loop failed: {}",
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Some(format!("mount cannot run: {e}")),
    }
}

/// Bytes an unprivileged writer could still use on the file system of `p`.
fn free_bytes(p: &Path) -> u64 {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs fills the zeroed struct for a valid path.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s.f_bavail as u64 * s.f_frsize as u64
}

fn pvsnap(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pvsnap"))
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env_remove("PVSNAP_PASSWORD")
        .env_remove("PVSNAP_REPO")
        .env_remove("PVSNAP_PASSWORD_FILE")
        .output()
        .expect("run pvsnap")
}

fn ok(repo: &Path, args: &[&str]) -> Output {
    let out = pvsnap(repo, args);
    assert!(
        out.status.success(),
        "pvsnap {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// `files` files of `size` bytes in `dir`, their content chosen by `seed`.
fn write_noise(dir: &Path, seed: u64, files: usize, size: usize) {
    util::write_noise_files(dir, seed * 1000, files, size);
}

#[test]
fn a_full_disk_says_what_to_run_and_that_command_gives_the_space_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, point) = (tmp.path().join("fs.img"), tmp.path().join("mnt"));
    if let Some(why) = unavailable(&img, &point) {
        if std::env::var("PVSNAP_REQUIRE_LOOP").as_deref() == Ok("1") {
            panic!("PVSNAP_REQUIRE_LOOP=1 but no loop file system can be mounted: {why}");
        }
        eprintln!(
            "\n*** SKIPPED a_full_disk_says_what_to_run_and_that_command_gives_the_space_back: {why} (set PVSNAP_REQUIRE_LOOP=1 to make this a failure) ***\n"
        );
        return;
    }
    let _mounted = Mounted {
        point: point.clone(),
    };
    let repo = point.join("repo");
    ok(&repo, &["init", "--pack-size", "4"]);

    // An earlier snapshot that must survive.
    let small = tmp.path().join("small");
    write_noise(&small, 1, 4, 1 << 20);
    let first = ok(&repo, &["snapshot", small.to_str().unwrap(), "--json"]);
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let first_id = first[0]["id"].as_str().unwrap().to_string();
    let free_after_first = free_bytes(&point);

    // A source bigger than the free space (random, so nothing compresses).
    let big = tmp.path().join("big");
    let per_file = 8 << 20;
    let n = (free_after_first as usize / per_file) + 3;
    write_noise(&big, 2, n, per_file);
    let out = pvsnap(&repo, &["snapshot", big.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the snapshot cannot fit: {err}");
    assert!(err.contains("no space left"), "{err}");
    let free_before = free_bytes(&point);
    assert!(
        free_before + (8 << 20) < free_after_first,
        "the failed run left its packs: {free_before} free of {free_after_first}"
    );

    // The repository is consistent: check reports at most leftovers.
    let out = ok(&repo, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("no errors found") && !text.contains("error:"),
        "{text}"
    );
    // The earlier snapshot restores bit-exact.
    let target = tmp.path().join("restored");
    ok(
        &repo,
        &["restore", &first_id, "--target", target.to_str().unwrap()],
    );
    for i in 0..4 {
        let name = format!("f{i:02}");
        assert!(
            std::fs::read(target.join(&name)).unwrap() == std::fs::read(small.join(&name)).unwrap(),
            "{name} differs"
        );
    }

    // The command the error names gives the space back.
    let named = err
        .split('`')
        .find(|part| part.starts_with("pvsnap ") && part.contains("--grace 0"))
        .unwrap_or_else(|| panic!("no prune command named: {err}"));
    let words: Vec<&str> = named.split_whitespace().collect();
    assert_eq!(
        &words[..3],
        &["pvsnap", "--repo", repo.to_str().unwrap()],
        "{named}"
    );
    ok(&repo, &words[3..]);
    let free_after = free_bytes(&point);
    assert!(
        free_after + (1 << 20) >= free_after_first,
        "space given back: {free_before} -> {free_after} free (after the first snapshot: {free_after_first})"
    );
    let out = ok(&repo, &["check", "--read-data"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !text.contains("warning:") && !text.contains("error:") && text.contains("no errors found"),
        "{text}"
    );
    // And the repository takes snapshots again.
    ok(&repo, &["snapshot", small.to_str().unwrap()]);
}
