//! Native snapshots on real btrfs (issue #21): a loop file, `mkfs.btrfs`,
//! `mount -o loop`, as root. Skipped loudly when not root or without
//! btrfs-progs; a failure instead when `PVSNAP_REQUIRE_BTRFS=1` (as
//! `scripts/test` sets for root).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::util::{self, Env};

/// A btrfs filesystem on a loop file, mounted until dropped.
pub(crate) struct Btrfs {
    _dir: tempfile::TempDir,
    pub(crate) mnt: PathBuf,
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.mnt).status();
        if !ok.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

pub(crate) fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A mounted btrfs, or `None` after saying loudly why the test is skipped.
pub(crate) fn btrfs(test: &str) -> Option<Btrfs> {
    let why = if !util::is_root() {
        Err("not root: a loop btrfs needs root".to_string())
    } else {
        make()
    };
    match why {
        Ok(b) => Some(b),
        Err(why) => {
            if std::env::var("PVSNAP_REQUIRE_BTRFS").as_deref() == Ok("1") {
                panic!("{test}: PVSNAP_REQUIRE_BTRFS=1 but no btrfs can be mounted: {why}");
            }
            eprintln!(
                "\n*** SKIPPED {test}: {why} (set PVSNAP_REQUIRE_BTRFS=1 to make this a failure) ***\n"
            );
            None
        }
    }
}

fn make() -> Result<Btrfs, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let img = dir.path().join("fs.img");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(512 << 20))
        .map_err(|e| e.to_string())?;
    sh(&["mkfs.btrfs", "-q", img.to_str().unwrap()])?;
    sh(&[
        "mount",
        "-o",
        "loop",
        img.to_str().unwrap(),
        mnt.to_str().unwrap(),
    ])?;
    Ok(Btrfs { _dir: dir, mnt })
}

impl Btrfs {
    /// A new subvolume at `rel`.
    pub(crate) fn subvolume(&self, rel: &str) -> PathBuf {
        let p = self.mnt.join(rel);
        sh(&["btrfs", "subvolume", "create", p.to_str().unwrap()]).unwrap();
        p
    }

    /// The names in the snapshots folder of the subvolume `rel`.
    fn snapshots(&self, rel: &str) -> Vec<String> {
        let dir = self.mnt.join(".pvsnap-snapshots").join(rel);
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn env() -> Env {
    let env = Env::new();
    env.init();
    env
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_frozen_source_is_one_instant_restored_bit_exact_while_a_writer_runs() {
    let Some(fs) = btrfs("a_frozen_source_is_one_instant_restored_bit_exact_while_a_writer_runs")
    else {
        return;
    };
    let vol = fs.subvolume("vol");
    let data = vol.join("data");
    std::fs::create_dir(&data).unwrap();
    util::write_noise_files(&data, 1, 48, 256 * 1024);
    let env = env();
    // A writer rewrites files and adds new ones for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, data) = (stop.clone(), data.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let name = data.join(format!("file-{:03}", i % 48));
                let _ = std::fs::write(&name, util::noise(1000 + i, 256 * 1024));
                let _ = std::fs::write(data.join(format!("new-{i}")), b"written during the run");
                i += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let snap = env.snapshot(&data, &["--keep-native", "1"]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let n = &snap["source_snapshot"];
    assert_eq!(n["kind"], "btrfs", "{snap}");
    assert_eq!(n["kept"], true, "{snap}");
    assert_eq!(n["volume"], s(&vol), "{snap}");
    assert_eq!(
        snap["source"]["path"],
        s(&data),
        "recorded as the live folder"
    );
    assert!(n["create_s"].as_f64().unwrap() < 5.0, "{snap}");
    assert_eq!(n["freeze_window_s"], n["create_s"], "no freezer: {snap}");
    // The repository holds exactly the native snapshot's folder, which is
    // one instant: not what the writer did while the data was read.
    let kept = PathBuf::from(n["handle"].as_str().unwrap()).join("data");
    let out = env.path("out");
    env.ok(&["restore", snap["id"].as_str().unwrap(), "--target", s(&out)]);
    assert_eq!(util::manifest(&out), util::manifest(&kept));
    assert_ne!(
        util::manifest(&out),
        util::manifest(&data),
        "the writer changed the live folder after the snapshot"
    );
    // The next snapshot of the same folder has the first as parent.
    let next = env.snapshot(&data, &[]);
    assert_eq!(next["parent"], snap["id"]);
    assert_eq!(next["source_snapshot"]["kept"], false);
    assert!(
        !Path::new(next["source_snapshot"]["handle"].as_str().unwrap()).exists(),
        "a read snapshot is removed after the read"
    );
    // --source-snapshot off reads the live folder and records nothing.
    let live = env.snapshot(&data, &["--source-snapshot", "off"]);
    assert!(live.get("source_snapshot").is_none(), "{live}");
}

#[test]
fn nested_subvolumes_are_said_and_sources_on_one_volume_share_a_snapshot() {
    let Some(fs) = btrfs("nested_subvolumes_are_said_and_sources_on_one_volume_share_a_snapshot")
    else {
        return;
    };
    let vol = fs.subvolume("vol");
    std::fs::create_dir_all(vol.join("a")).unwrap();
    std::fs::create_dir_all(vol.join("b")).unwrap();
    std::fs::write(vol.join("a/f"), b"a").unwrap();
    std::fs::write(vol.join("b/f"), b"b").unwrap();
    fs.subvolume("vol/a/inner");
    std::fs::write(vol.join("a/inner/x"), b"inner").unwrap();
    let env = env();
    let out = env.ok(&["snapshot", s(&vol.join("a")), s(&vol.join("b")), "--json"]);
    let err = util::stderr(&out);
    assert!(
        err.contains(&format!(
            "{} is a nested btrfs subvolume, and nested subvolumes are not in a btrfs snapshot",
            vol.join("a/inner").display()
        )),
        "{err}"
    );
    assert_eq!(
        err.matches("nested btrfs subvolume").count(),
        1,
        "only the source holding it: {err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v[0]["source_snapshot"]["handle"], v[1]["source_snapshot"]["handle"],
        "one native snapshot for both sources: {v}"
    );
    assert_eq!(v[0]["source_snapshot"]["within"], "a");
    assert_eq!(fs.snapshots("vol"), Vec::<String>::new(), "released");
    // An exclude given as the live folder's full host path still applies
    // to the copy read from the native snapshot.
    std::fs::write(vol.join("b/skip"), b"s").unwrap();
    let snap = env.snapshot(
        &vol.join("b"),
        &[
            "--exclude",
            s(&vol.join("b/skip")),
            "--source-snapshot",
            "required",
        ],
    );
    let ls = util::stdout(&env.ok(&["ls", snap["id"].as_str().unwrap()]));
    assert!(ls.contains("/f") && !ls.contains("skip"), "{ls}");
}

#[test]
fn required_fails_naming_the_path_and_the_next_step() {
    let env = env();
    // Not btrfs: the test folder's filesystem (ext4 or tmpfs).
    let plain = env.path("plain");
    std::fs::create_dir(&plain).unwrap();
    let out = util::code(
        &env,
        &["snapshot", s(&plain), "--source-snapshot", "required"],
        1,
    );
    let err = util::stderr(&out);
    assert!(
        err.contains(&format!("pvsnap: {}: on ", plain.display()))
            && err.contains("which has no native snapshots")
            && err.contains("--source-snapshot auto or off"),
        "{err}"
    );
    // A freeze needs a native snapshot: refused for a live read.
    let out = util::code(&env, &["snapshot", s(&plain), "--freeze", "postgres"], 1);
    assert!(
        util::stderr(&out).contains("--freeze needs a native snapshot"),
        "{}",
        util::stderr(&out)
    );
    util::code(&env, &["snapshot", s(&plain), "--freeze", "oracle"], 2);
    // auto reads it live, saying nothing.
    let out = env.ok(&["snapshot", s(&plain)]);
    assert!(
        !util::stderr(&out).contains("native"),
        "{}",
        util::stderr(&out)
    );

    let Some(fs) = btrfs("required_fails_naming_the_path_and_the_next_step") else {
        return;
    };
    // On btrfs, but in the top-level subvolume: the whole filesystem.
    let top = fs.mnt.join("plain");
    std::fs::create_dir(&top).unwrap();
    let out = util::code(
        &env,
        &["snapshot", s(&top), "--source-snapshot", "required"],
        1,
    );
    let err = util::stderr(&out);
    assert!(
        err.contains("its subvolume is the whole filesystem")
            && err.contains(&format!("btrfs subvolume create {}", top.display())),
        "{err}"
    );
    // auto: a note, and the live folder is read.
    let out = env.ok(&["snapshot", s(&top), "--json"]);
    assert!(
        util::stderr(&out).contains("reading the live folder"),
        "{}",
        util::stderr(&out)
    );
    // --native-only needs a native snapshot too.
    let out = util::code(&env, &["snapshot", s(&top), "--native-only"], 1);
    assert!(util::stderr(&out).contains("btrfs subvolume create"));
    // Options that need native snapshots with `off`.
    let out = util::code(
        &env,
        &[
            "snapshot",
            s(&top),
            "--source-snapshot",
            "off",
            "--keep-native",
            "2",
        ],
        1,
    );
    assert!(
        util::stderr(&out).contains("--source-snapshot off reads the live folder"),
        "{}",
        util::stderr(&out)
    );
}

#[test]
fn native_restore_points_are_listed_restored_rolled_back_cloned_and_forgotten() {
    let Some(fs) =
        btrfs("native_restore_points_are_listed_restored_rolled_back_cloned_and_forgotten")
    else {
        return;
    };
    let vol = fs.subvolume("vol");
    std::fs::write(vol.join("f"), b"first").unwrap();
    std::fs::create_dir(vol.join("d")).unwrap();
    std::fs::write(vol.join("d/g"), b"g").unwrap();
    let before = util::manifest(&vol);
    let env = env();
    let out = env.ok(&["snapshot", s(&vol), "--native-only", "--json"]);
    let point: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let point = &point[0];
    let id = point["id"].as_str().unwrap().to_string();
    let n = &point["source_snapshot"];
    assert_eq!(n["native_only"], true, "{point}");
    assert_eq!(n["kept"], true);
    assert_eq!(point["summary"]["total_files"], 0);
    let handle = PathBuf::from(n["handle"].as_str().unwrap());
    assert!(handle.starts_with(fs.mnt.join(".pvsnap-snapshots/vol")));
    assert_eq!(util::manifest(&handle), before);

    // Listed with its kind; a later data snapshot does not take it as parent.
    let list = util::stdout(&env.ok(&["snapshots"]));
    assert!(
        list.contains("[native btrfs restore point pvsnap-keep-"),
        "{list}"
    );
    let data = env.snapshot(&vol, &[]);
    assert!(data["parent"].is_null(), "{data}");

    // Readers of the repository's copy say what it is.
    for args in [
        vec!["ls", id.as_str()],
        vec!["diff", id.as_str(), data["id"].as_str().unwrap()],
        vec!["dump", id.as_str(), "f"],
    ] {
        let out = util::code(&env, &args, 1);
        assert!(
            util::stderr(&out).contains("is a native restore point"),
            "{args:?}: {}",
            util::stderr(&out)
        );
    }
    env.ok(&["check"]);
    let other = Env::new();
    other.init();
    let out = env.ok(&["copy", "--to", other.repo().to_str().unwrap()]);
    assert!(
        util::stderr(&out).contains("is a native restore point"),
        "{}",
        util::stderr(&out)
    );
    let copied = util::stdout(&other.ok(&["snapshots", "--json"]));
    assert!(!copied.contains("native_only"), "{copied}");
    assert!(!copied.contains("\"kept\":true"), "{copied}");

    // restore --target copies out of the native snapshot.
    let out_dir = env.path("out");
    env.ok(&["restore", &id, "--target", s(&out_dir)]);
    assert_eq!(util::manifest(&out_dir), before);
    let out = util::code(&env, &["restore", &id, "--target", s(&out_dir)], 1);
    assert!(util::stderr(&out).contains("is not empty"));

    // --clone-to: a writable copy on the same filesystem.
    let clone = fs.mnt.join("staging");
    env.ok(&["restore", &id, "--clone-to", s(&clone)]);
    assert_eq!(util::manifest(&clone), before);
    std::fs::write(clone.join("f"), b"changed in the clone").unwrap();
    assert_eq!(util::manifest(&handle), before, "the snapshot is untouched");
    let out = util::code(&env, &["restore", &id, "--clone-to", s(&env.path("x"))], 1);
    assert!(util::stderr(&out).contains("not on the btrfs filesystem"));

    // --rollback: refused without --yes and while a process is inside.
    std::fs::write(vol.join("f"), b"second").unwrap();
    std::fs::write(vol.join("new"), b"new").unwrap();
    let out = util::code(&env, &["restore", &id, "--rollback"], 1);
    assert!(util::stderr(&out).contains("then add --yes"));
    let mut inside = Command::new("sleep")
        .arg("30")
        .current_dir(vol.join("d"))
        .spawn()
        .unwrap();
    let out = util::code(&env, &["restore", &id, "--rollback", "--yes"], 1);
    inside.kill().unwrap();
    inside.wait().unwrap();
    assert!(
        util::stderr(&out).contains(&format!("is in use by {} (sleep)", inside.id())),
        "{}",
        util::stderr(&out)
    );
    let out = env.ok(&["restore", &id, "--rollback", "--yes"]);
    assert_eq!(util::manifest(&vol), before);
    let said = util::stdout(&out);
    assert!(
        said.contains("the content from before is kept at"),
        "{said}"
    );
    let aside = fs
        .snapshots("vol")
        .into_iter()
        .find(|n| n.starts_with("pvsnap-before-rollback-"))
        .unwrap();
    let aside = fs.mnt.join(".pvsnap-snapshots/vol").join(aside);
    assert_eq!(std::fs::read(aside.join("new")).unwrap(), b"new");
    // The rolled-back volume is writable again.
    std::fs::write(vol.join("after"), b"x").unwrap();

    // forget destroys the native snapshot with the record; one already
    // gone is a warning, and the record is still forgotten.
    let out = env.ok(&["forget", &id]);
    assert!(
        util::stderr(&out).contains("destroyed the btrfs snapshot"),
        "{}",
        util::stderr(&out)
    );
    assert!(!handle.exists());
    let out = env.ok(&["snapshot", s(&vol), "--native-only", "--json"]);
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let h2 = second[0]["source_snapshot"]["handle"].as_str().unwrap();
    sh(&["btrfs", "subvolume", "delete", h2]).unwrap();
    let out = env.ok(&["forget", second[0]["id"].as_str().unwrap()]);
    assert!(
        util::stderr(&out).contains("was already gone"),
        "{}",
        util::stderr(&out)
    );
    let list = util::stdout(&env.ok(&["snapshots", "--json"]));
    assert!(!list.contains(second[0]["id"].as_str().unwrap()));
    // What pvsnap did not name stays.
    assert!(aside.exists());
}

#[test]
fn keep_native_keeps_the_last_n_and_retention_forgets_with_them() {
    let Some(fs) = btrfs("keep_native_keeps_the_last_n_and_retention_forgets_with_them") else {
        return;
    };
    let vol = fs.subvolume("vol");
    let env = env();
    let mut handles = vec![];
    for i in 0..3 {
        std::fs::write(vol.join("f"), format!("v{i}")).unwrap();
        let snap = env.snapshot(&vol, &["--keep-native", "2"]);
        handles.push(PathBuf::from(
            snap["source_snapshot"]["handle"].as_str().unwrap(),
        ));
    }
    assert!(!handles[0].exists(), "beyond the last 2");
    assert!(handles[1].exists() && handles[2].exists());
    let list = util::stdout(&env.ok(&["snapshots"]));
    assert!(list.contains("[btrfs snapshot gone]"), "{list}");
    env.ok(&["forget", "--keep-last", "1"]);
    assert!(!handles[1].exists(), "forgotten with its record");
    assert!(handles[2].exists());
}

/// A stand-in `btrfs` first on PATH that runs the real one and then kills
/// pvsnap (its parent) with SIGKILL right after a read-only snapshot.
fn killing_btrfs(dir: &Path) -> String {
    let real = sh(&["sh", "-c", "command -v btrfs"]).unwrap();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("btrfs");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{} \"$@\"\nrc=$?\ncase \"$*\" in *'snapshot -r'*) kill -9 $PPID;; esac\nexit $rc\n",
            real.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn after_kill_9_the_next_run_removes_exactly_its_read_leftovers() {
    let Some(fs) = btrfs("after_kill_9_the_next_run_removes_exactly_its_read_leftovers") else {
        return;
    };
    let vol = fs.subvolume("vol");
    util::write_noise_files(&vol, 7, 64, 512 * 1024);
    let env = Env::new();
    env.ok(&["init", "--pack-size", "4"]);
    // Things that must stay: a kept restore point, a snapshot pvsnap did
    // not name, and a subvolume set aside by a rollback.
    env.ok(&["snapshot", s(&vol), "--native-only"]);
    let dir = fs.mnt.join(".pvsnap-snapshots/vol");
    sh(&[
        "btrfs",
        "subvolume",
        "snapshot",
        "-r",
        s(&vol),
        s(&dir.join("mine")),
    ])
    .unwrap();
    sh(&[
        "btrfs",
        "subvolume",
        "snapshot",
        "-r",
        s(&vol),
        s(&dir.join("pvsnap-before-rollback-20261204T120000Z-0123abcd")),
    ])
    .unwrap();
    let stays = fs.snapshots("vol");
    assert_eq!(stays.len(), 3, "{stays:?}");

    // Kill point 1: right after the native snapshot is made.
    let path = killing_btrfs(env.dir.path());
    let out = env
        .cmd()
        .env("PATH", &path)
        .args(["snapshot", s(&vol)])
        .output()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9),
        "{}",
        util::stderr(&out)
    );
    // Kill point 2: mid-read, once packs are being written.
    let mut child = env
        .cmd()
        .env("PVSNAP_CHECKPOINT_BYTES", "1000000")
        .args(["snapshot", s(&vol), "--source-snapshot", "required"])
        .spawn()
        .unwrap();
    let started = Instant::now();
    let packs = env.repo().join("data");
    let before = util::files_below(&packs).len();
    while util::files_below(&packs).len() == before && started.elapsed() < Duration::from_secs(60) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed mid-read, not finished"
    );
    let left: Vec<String> = fs
        .snapshots("vol")
        .into_iter()
        .filter(|n| !stays.contains(n))
        .collect();
    assert!(
        left.iter().all(|n| n.starts_with("pvsnap-read-")) && !left.is_empty(),
        "{left:?} ({status:?})"
    );
    // A leftover of another kind of pvsnap name: a tmp one.
    let tmp = "pvsnap-tmp-20261204T120000Z-89abcdef";
    sh(&[
        "btrfs",
        "subvolume",
        "snapshot",
        "-r",
        s(&vol),
        s(&dir.join(tmp)),
    ])
    .unwrap();

    let out = env.ok(&["snapshot", s(&vol)]);
    let err = util::stderr(&out);
    for l in left.iter().chain([&tmp.to_string()]) {
        assert!(
            err.contains(&format!(
                "removed snapshot {} left by an interrupted run",
                dir.join(l).display()
            )),
            "{l}: {err}"
        );
    }
    assert_eq!(fs.snapshots("vol"), stays, "exactly the leftovers went");
    env.ok(&["check"]);
}
