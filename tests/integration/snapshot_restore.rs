//! Snapshot and restore through the binary: fidelity, incrementality,
//! deduplication, compression, encryption, damage and error reporting.
//! A few tests need root (to switch users, to mount); without it they fail,
//! unless PVSNAP_SKIP_ROOT_TESTS=1 says to skip them.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::util::{self, Env};

/// A folder holding every kind of entry pvsnap must round-trip.
fn build_everything(root: &Path) {
    fs::create_dir_all(root.join("nested/deeper/deepest")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("small.txt"), b"hello pvsnap\n").unwrap();
    fs::write(root.join("empty-file"), b"").unwrap();
    fs::write(
        root.join("nested/deeper/deepest/big.bin"),
        util::noise(1, 5 * 1024 * 1024 + 17),
    )
    .unwrap();
    fs::write(
        root.join("nested/text.log"),
        "line of log text\n".repeat(50_000),
    )
    .unwrap();
    std::os::unix::fs::symlink("small.txt", root.join("link-to-small")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
    fs::write(root.join("hard-a"), b"shared by two names").unwrap();
    fs::hard_link(root.join("hard-a"), root.join("nested/hard-b")).unwrap();
    util::mknod(&root.join("fifo"), libc::S_IFIFO, 0);
    let setuid = root.join("setuid-bin");
    fs::write(&setuid, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&setuid, fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir(root.join("sticky")).unwrap();
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    let odd = root.join(OsStr::from_bytes(b"not-utf8-\xff\xfe"));
    fs::write(&odd, b"odd name").unwrap();
    xattr::set(root.join("small.txt"), "user.pvsnap.test", b"xattr value").unwrap();
    // A sparse file: 64 MiB with two small data islands.
    let sparse = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(root.join("sparse.img"))
        .unwrap();
    sparse.set_len(64 * 1024 * 1024).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"island one", 4096).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &util::noise(2, 8192), 40 * 1024 * 1024)
        .unwrap();
    drop(sparse);
    if util::is_root() {
        util::mknod(&root.join("chardev"), libc::S_IFCHR, libc::makedev(1, 3));
        util::mknod(&root.join("blockdev"), libc::S_IFBLK, libc::makedev(7, 200));
        std::os::unix::fs::lchown(root.join("small.txt"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("dangling"), Some(4321), Some(8765)).unwrap();
        if Command::new("setfacl")
            .arg("-m")
            .arg("u:1234:rw")
            .arg(root.join("nested/text.log"))
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                xattr::get(root.join("nested/text.log"), "system.posix_acl_access")
                    .unwrap()
                    .is_some()
            );
        }
    }
    util::set_mtime(&root.join("small.txt"), 1_600_000_000, 123_456_789);
    util::set_mtime(&root.join("dangling"), 1_500_000_000, 987_654_321);
    util::set_mtime(&root.join("nested/deeper"), 1_400_000_000, 5);
}

#[test]
fn every_kind_of_entry_round_trips_bit_exact() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    build_everything(&src);
    let snap = env.snapshot(&src, &[]);
    assert_eq!(snap["errors"].as_array().unwrap().len(), 0, "{snap}");
    let target = env.path("restored");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let (a, b) = (util::manifest(&src), util::manifest(&target));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
    // Hardlinks come back as hardlinks.
    let (ma, mb) = (
        fs::metadata(target.join("hard-a")).unwrap(),
        fs::metadata(target.join("nested/hard-b")).unwrap(),
    );
    assert_eq!(ma.ino(), mb.ino());
    // Holes are not written: the restored sparse file allocates far less than its size.
    let sparse = fs::metadata(target.join("sparse.img")).unwrap();
    assert_eq!(sparse.len(), 64 * 1024 * 1024);
    assert!(
        sparse.blocks() * 512 < 1024 * 1024,
        "restored sparse file allocates {} bytes",
        sparse.blocks() * 512
    );
}

#[test]
fn holes_are_not_stored() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    let f = fs::File::create(src.join("huge-sparse")).unwrap();
    f.set_len(1 << 28).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"data", 1 << 27).unwrap();
    let snap = env.snapshot(&src, &[]);
    assert!(
        snap["summary"]["bytes_read"].as_u64().unwrap() < 1 << 20,
        "{}",
        snap["summary"]
    );
    assert!(snap["summary"]["bytes_added"].as_u64().unwrap() < 1 << 20);
    let out = env.ok(&["dump", "latest", "/huge-sparse"]);
    assert_eq!(out.stdout.len(), 1 << 28);
    assert_eq!(&out.stdout[(1 << 27)..(1 << 27) + 4], b"data");
    assert!(out.stdout[..1 << 27].iter().all(|&b| b == 0));
}

#[test]
fn sockets_are_skipped_with_a_note_and_do_not_fail_the_snapshot() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("file"), b"x").unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    let snap = env.snapshot(&src, &[]);
    let errors = snap["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["kind"], "skipped");
    assert!(errors[0]["path"].as_str().unwrap().ends_with("/sock"));
}

#[test]
fn unchanged_resnapshot_reads_nothing_and_changed_files_are_read() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    build_everything(&src);
    // Files written within a timestamp tick of a snapshot's start are read
    // again by the next one (they could have changed unseen in that tick):
    // let the tick pass.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let first = env.snapshot(&src, &[]);
    assert!(first["summary"]["bytes_read"].as_u64().unwrap() > 5 * 1024 * 1024);
    let second = env.snapshot(&src, &[]);
    let s = &second["summary"];
    assert_eq!(s["bytes_read"], 0, "{s}");
    assert_eq!(s["files_new"], 0);
    assert_eq!(s["files_changed"], 0);
    assert_eq!(s["files_unmodified"], first["summary"]["files_new"]);
    assert_eq!(s["data_blobs_added"], 0);
    assert_eq!(s["tree_blobs_added"], 0, "an unchanged tree is stored once");
    assert_eq!(second["parent"], first["id"]);

    fs::write(src.join("small.txt"), b"changed content").unwrap();
    fs::write(src.join("brand-new"), b"new file").unwrap();
    let third = env.snapshot(&src, &[]);
    let s = &third["summary"];
    assert_eq!(s["files_changed"], 1, "{s}");
    assert_eq!(s["files_new"], 1);
    assert_eq!(s["bytes_read"], 15 + 8);
    let diff = env.ok(&[
        "diff",
        second["id"].as_str().unwrap(),
        third["id"].as_str().unwrap(),
    ]);
    let diff = String::from_utf8(diff.stdout).unwrap();
    assert!(diff.contains("M  /small.txt"), "{diff}");
    assert!(diff.contains("+  /brand-new"), "{diff}");
}

#[test]
fn identical_content_in_two_sources_is_stored_once() {
    let env = Env::new();
    env.init();
    let data = util::noise(7, 8 * 1024 * 1024);
    for dir in ["one", "two"] {
        fs::create_dir(env.path(dir)).unwrap();
        fs::write(env.path(dir).join("payload"), &data).unwrap();
    }
    let a = env.snapshot(&env.path("one"), &[]);
    let b = env.snapshot(&env.path("two"), &[]);
    assert!(a["summary"]["bytes_added"].as_u64().unwrap() >= 8 * 1024 * 1024);
    assert!(
        b["summary"]["bytes_added"].as_u64().unwrap() < 64 * 1024,
        "{}",
        b["summary"]
    );
    assert_eq!(b["summary"]["data_blobs_added"], 0);
    assert!(b["parent"].is_null(), "another source has its own timeline");
}

/// The same, in one run: the first source's packs are named by checkpoints
/// (every pack, here), whose blob lists the run drops; the second source
/// still finds every blob, read back from those index files.
#[test]
fn identical_content_in_two_sources_of_one_run_is_stored_once() {
    let env = Env::new();
    env.init();
    let data = util::noise(8, 8 * 1024 * 1024);
    for dir in ["one", "two"] {
        fs::create_dir(env.path(dir)).unwrap();
        fs::write(env.path(dir).join("payload"), &data).unwrap();
    }
    let (one, two) = (env.path("one"), env.path("two"));
    let out = env
        .cmd()
        .env("PVSNAP_CHECKPOINT_BYTES", "1")
        .args([
            "snapshot",
            one.to_str().unwrap(),
            two.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v[0]["summary"]["data_blobs_added"].as_u64().unwrap() > 1);
    assert_eq!(
        v[1]["summary"]["data_blobs_added"], 0,
        "{}",
        v[1]["summary"]
    );
    let check = env.ok(&["check", "--read-data"]);
    assert!(check.status.success());
}

#[test]
fn compressible_data_shrinks() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(
        src.join("log"),
        "2026-11-21 INFO request served in 3ms\n".repeat(200_000),
    )
    .unwrap();
    env.snapshot(&src, &[]);
    let stats: serde_json::Value =
        serde_json::from_slice(&env.ok(&["stats", "--json"]).stdout).unwrap();
    assert!(
        stats["compression_ratio"].as_f64().unwrap() > 10.0,
        "{stats}"
    );
    assert!(stats["stored_size"].as_u64().unwrap() < stats["raw_size"].as_u64().unwrap() / 10);
}

#[test]
fn encrypted_repository_needs_the_password_and_holds_no_plaintext() {
    let env = Env::new();
    let pw = env.path("pw");
    fs::write(&pw, "correct horse\n").unwrap();
    let pwf = pw.to_str().unwrap();
    env.ok(&["--password-file", pwf, "init", "--encryption"]);
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    let marker = "PLAINTEXT-MARKER-0123456789 ".repeat(4000);
    fs::write(src.join("secret-file-name.txt"), &marker).unwrap();
    let out = env.ok(&[
        "--password-file",
        pwf,
        "snapshot",
        src.to_str().unwrap(),
        "--json",
    ]);
    let snap: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!snap[0]["id"].as_str().unwrap().is_empty());

    // Nothing stored reveals the content or the file name.
    for entry in util::files_below(&env.repo()) {
        let bytes = fs::read(&entry).unwrap();
        for needle in [&b"PLAINTEXT-MARKER"[..], b"secret-file-name"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} contains plaintext",
                entry.display()
            );
        }
    }
    // Wrong password: exit 12 and a message naming the problem.
    fs::write(&pw, "wrong\n").unwrap();
    let bad = env.run(&["--password-file", pwf, "snapshots"]);
    assert_eq!(bad.status.code(), Some(12));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("wrong password"));
    // No password at all, not on a terminal: a clear refusal.
    let none = env.run(&["snapshots"]);
    assert_ne!(none.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("encrypted"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
    // The right password via the environment restores the content.
    let target = env.path("out");
    let ok = env
        .cmd()
        .env("PVSNAP_PASSWORD", "correct horse")
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        fs::read_to_string(target.join("secret-file-name.txt")).unwrap(),
        marker
    );
}

#[test]
fn a_corrupted_pack_is_reported_not_silently_restored() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("victim"), util::noise(3, 3 * 1024 * 1024)).unwrap();
    env.snapshot(&src, &[]);
    let packs = util::files_below(&env.repo().join("data"));
    assert_eq!(packs.len(), 2, "one data pack and one tree pack");
    // Flip a byte in the middle of the data pack (the big one).
    let data_pack = packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(data_pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(data_pack, bytes).unwrap();
    let target = env.path("out");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("victim"), "names the damaged file: {err}");
    let dump = env.run(&["dump", "latest", "/victim"]);
    assert!(
        !dump.status.success(),
        "dump must not print damaged content"
    );
}

#[test]
fn restore_never_writes_through_a_symlink_in_the_target() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), b"payload").unwrap();
    fs::write(src.join("g"), b"file g").unwrap();
    env.snapshot(&src, &[]);
    let outside = env.path("outside");
    fs::create_dir(&outside).unwrap();
    let target = env.path("target");
    fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("d")).unwrap();
    std::os::unix::fs::symlink(outside.join("g-victim"), target.join("g")).unwrap();
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing was written outside the target"
    );
    assert!(fs::symlink_metadata(target.join("d")).unwrap().is_dir());
    assert_eq!(fs::read(target.join("d/f")).unwrap(), b"payload");
    assert_eq!(fs::read(target.join("g")).unwrap(), b"file g");
}

#[test]
fn include_exclude_and_subpath_restore() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("keep/sub")).unwrap();
    fs::create_dir_all(src.join("drop")).unwrap();
    fs::write(src.join("keep/a.txt"), b"a").unwrap();
    fs::write(src.join("keep/sub/b.log"), b"b").unwrap();
    fs::write(src.join("drop/c.txt"), b"c").unwrap();
    env.snapshot(&src, &["--exclude", "*.tmp"]);
    let t1 = env.path("t1");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        t1.to_str().unwrap(),
        "--include",
        "keep",
    ]);
    assert!(t1.join("keep/sub/b.log").exists());
    assert!(!t1.join("drop").exists());
    let t2 = env.path("t2");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        t2.to_str().unwrap(),
        "--exclude",
        "*.log",
    ]);
    assert!(t2.join("keep/a.txt").exists() && t2.join("drop/c.txt").exists());
    assert!(!t2.join("keep/sub/b.log").exists());
    let t3 = env.path("t3");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        t3.to_str().unwrap(),
        "--path",
        "/keep",
    ]);
    assert_eq!(fs::read(t3.join("a.txt")).unwrap(), b"a");
    assert!(t3.join("sub/b.log").exists());
}

#[test]
fn excludes_tags_labels_time_and_dry_run() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::write(src.join("cache/big"), b"cached").unwrap();
    fs::write(src.join("data.db"), b"db").unwrap();
    fs::write(src.join("x.tmp"), b"tmp").unwrap();
    let dry = env.snapshot(&src, &["--dry-run"]);
    assert!(dry["summary"]["bytes_read"].as_u64().unwrap() > 0);
    let listed: serde_json::Value =
        serde_json::from_slice(&env.ok(&["snapshots", "--json"]).stdout).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        0,
        "a dry run stores nothing"
    );

    let snap = env.snapshot(
        &src,
        &[
            "--exclude",
            "/cache",
            "--exclude",
            "*.tmp",
            "--tag",
            "nightly",
            "--label",
            "app=db",
            "--time",
            "2026-01-02T03:04:05Z",
        ],
    );
    assert_eq!(snap["time"], "2026-01-02T03:04:05Z");
    let ls = String::from_utf8(env.ok(&["ls", "latest"]).stdout).unwrap();
    assert_eq!(ls.lines().collect::<Vec<_>>(), vec!["/data.db"]);
    let listed: serde_json::Value =
        serde_json::from_slice(&env.ok(&["snapshots", "--json"]).stdout).unwrap();
    let s = &listed[0];
    assert_eq!(s["tags"][0], "nightly");
    assert_eq!(s["labels"]["app"], "db");
    assert_eq!(s["short_id"].as_str().unwrap().len(), 8);
    for field in [
        "files_new",
        "files_changed",
        "files_unmodified",
        "bytes_read",
        "bytes_added",
        "duration_s",
    ] {
        assert!(s["summary"][field].is_number(), "summary.{field} in {s}");
    }
}

#[test]
fn snapshot_names_resolve_by_prefix_latest_and_source() {
    let env = Env::new();
    env.init();
    for d in ["a", "b"] {
        fs::create_dir(env.path(d)).unwrap();
        fs::write(env.path(d).join("f"), d).unwrap();
    }
    let a = env.snapshot(&env.path("a"), &["--time", "2026-01-01T00:00:00Z"]);
    env.snapshot(&env.path("b"), &["--time", "2026-01-02T00:00:00Z"]);
    let src_a = fs::canonicalize(env.path("a")).unwrap();
    let out = env.ok(&["dump", &format!("latest:{}", src_a.display()), "/f"]);
    assert_eq!(out.stdout, b"a");
    // With two sources, `latest` alone names neither (see latest_source.rs).
    let both = env.run(&["dump", "latest", "/f"]);
    assert!(String::from_utf8_lossy(&both.stderr).contains("`latest` is ambiguous"));
    let prefix = &a["id"].as_str().unwrap()[..10];
    assert_eq!(env.ok(&["dump", prefix, "/f"]).stdout, b"a");
    let missing = env.run(&["dump", "ffffffffff", "/f"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no snapshot matches"));
}

#[test]
fn clear_errors_for_bad_input() {
    let env = Env::new();
    // Not a repository.
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a pvsnap repository"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.init();
    // Missing path.
    let out = env.run(&["snapshot", "/nonexistent/pvsnap/path"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pvsnap/path"));
    // Bad --time.
    let out = env.run(&["snapshot", "/tmp", "--time", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
    // A repository from a newer pvsnap.
    let cfg = env.repo().join("config");
    let text = fs::read(&cfg).unwrap();
    let (_, json) = pvsnap_engine::repo::format::decode_checked(
        &text,
        pvsnap_engine::repo::format::ObjectKind::Config,
        &|| "config".into(),
    )
    .unwrap();
    let newer = String::from_utf8_lossy(json).replace("\"version\": 1", "\"version\": 2");
    assert_ne!(newer.as_bytes(), json);
    fs::write(
        &cfg,
        pvsnap_engine::repo::format::encode_checked(
            pvsnap_engine::repo::format::ObjectKind::Config,
            false,
            newer.as_bytes(),
        ),
    )
    .unwrap();
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("upgrade pvsnap"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether a test that needs root (`for_what`) can run; panics when it
/// cannot and nobody asked to skip it (the rule of the mount tests).
fn root_or_skip(test: &str, for_what: &str) -> bool {
    if util::is_root() {
        return true;
    }
    if std::env::var("PVSNAP_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("SKIPPED: {test}: needs root {for_what} (PVSNAP_SKIP_ROOT_TESTS=1)");
        return false;
    }
    panic!("{test}: needs root {for_what}; run as root, or set PVSNAP_SKIP_ROOT_TESTS=1 to skip");
}

/// A scratch folder an unprivileged user may write to; `None` when the test
/// is skipped (see [`root_or_skip`]), since switching users needs root.
pub(crate) fn env_for_nobody(test: &str) -> Option<Env> {
    if !root_or_skip(test, "to switch to an unprivileged user") {
        return None;
    }
    let env = Env::new();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    Some(env)
}

/// Runs pvsnap as an unprivileged user (root is needed to switch).
pub(crate) fn as_nobody(args: &[&str], extra_env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        env!("CARGO_BIN_EXE_pvsnap"),
    ]);
    c.args(args);
    c.env_remove("PVSNAP_REPO").env_remove("PVSNAP_PASSWORD");
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.output().expect("setpriv")
}

#[test]
fn unreadable_files_are_recorded_and_exit_3() {
    let Some(env) = env_for_nobody("unreadable_files_are_recorded_and_exit_3") else {
        return;
    };
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(src.join("readable"), b"ok").unwrap();
    fs::write(src.join("secret"), b"no").unwrap();
    fs::set_permissions(src.join("readable"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    let repo = env.repo();
    let out = as_nobody(&["--repo", repo.to_str().unwrap(), "init"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_nobody(
        &[
            "--repo",
            repo.to_str().unwrap(),
            "snapshot",
            src.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = v[0]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["kind"], "unreadable");
    assert!(errors[0]["path"].as_str().unwrap().ends_with("/secret"));
    assert_eq!(
        v[0]["summary"]["files_new"], 1,
        "the readable file is still saved"
    );
}

#[test]
fn the_default_repository_is_created_on_first_snapshot() {
    let Some(env) = env_for_nobody("the_default_repository_is_created_on_first_snapshot") else {
        return;
    };
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let xdg = env.path("xdg");
    let out = as_nobody(
        &["snapshot", src.to_str().unwrap()],
        &[("XDG_DATA_HOME", xdg.to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("created repository at"), "{err}");
    assert!(xdg.join("pvsnap/repo/config").exists());
    // The second run uses it silently.
    let out = as_nobody(
        &["snapshot", src.to_str().unwrap()],
        &[("XDG_DATA_HOME", xdg.to_str().unwrap())],
    );
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("created"));
}

#[test]
fn two_writers_at_once_share_one_repository() {
    let env = Env::new();
    env.init();
    let shared = util::noise(11, 6 * 1024 * 1024);
    for (i, d) in ["node-a", "node-b"].iter().enumerate() {
        let dir = env.path(d);
        fs::create_dir_all(dir.join("own")).unwrap();
        fs::write(dir.join("shared.bin"), &shared).unwrap();
        for k in 0..200 {
            fs::write(
                dir.join("own").join(format!("f{k}")),
                util::noise(100 + i as u64 * 1000 + k, 3000),
            )
            .unwrap();
        }
    }
    let children: Vec<_> = ["node-a", "node-b"]
        .iter()
        .map(|d| {
            env.cmd()
                .args([
                    "snapshot",
                    env.path(d).to_str().unwrap(),
                    "--json",
                    "--host",
                    d,
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let check = env.run(&["check", "--read-data"]);
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    for d in ["node-a", "node-b"] {
        let src = fs::canonicalize(env.path(d)).unwrap();
        let target = env.path(&format!("restored-{d}"));
        env.ok(&[
            "restore",
            &format!("latest:{}", src.display()),
            "--target",
            target.to_str().unwrap(),
        ]);
        assert_eq!(fs::read(target.join("shared.bin")).unwrap(), shared);
        assert_eq!(fs::read_dir(target.join("own")).unwrap().count(), 200);
    }
}

#[test]
fn a_file_changing_while_it_is_read_is_reported() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    let path = src.join("growing.log");
    fs::write(&path, util::noise(5, 256 * 1024 * 1024)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::io::Write::write_all(&mut f, b"appended line\n").unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    // The writer runs for the whole snapshot, which takes far longer than the
    // kernel's timestamp granularity, so the file's mtime moves during the read.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let snap = env.snapshot(&src, &[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let errors = snap["errors"].as_array().unwrap();
    assert!(errors.iter().any(|e| e["kind"] == "changed" && e["path"].as_str().unwrap().ends_with("growing.log")), "{errors:?}");
}

#[test]
fn a_damaged_snapshot_object_does_not_hide_the_others() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"one").unwrap();
    let first = env.snapshot(&src, &[]);
    fs::write(src.join("f"), b"two").unwrap();
    env.snapshot(&src, &[]);
    let obj = env
        .repo()
        .join("snapshots")
        .join(first["id"].as_str().unwrap());
    let mut bytes = fs::read(&obj).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    fs::write(&obj, bytes).unwrap();
    let out = env.run(&["snapshots", "--json"]);
    assert!(out.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&first["id"].as_str().unwrap()[..8]));
    assert_eq!(env.ok(&["dump", "latest", "/f"]).stdout, b"two");
}

#[test]
fn a_second_key_opens_the_repository_and_the_first_can_be_removed() {
    let env = Env::new();
    let (pw1, pw2) = (env.path("pw1"), env.path("pw2"));
    fs::write(&pw1, "first secret\n").unwrap();
    fs::write(&pw2, "second secret\n").unwrap();
    let (p1, p2) = (pw1.to_str().unwrap(), pw2.to_str().unwrap());
    env.ok(&["--password-file", p1, "init", "--encryption"]);
    env.add_key(p1, p2);
    let keys: serde_json::Value = serde_json::from_slice(
        &env.ok(&["--password-file", p2, "key", "list", "--json"])
            .stdout,
    )
    .unwrap();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let first = keys.iter().find(|k| k["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(&["--password-file", p2, "key", "remove", &first[..12]]);
    assert_eq!(
        env.run(&["--password-file", p1, "snapshots"]).status.code(),
        Some(12)
    );
    env.ok(&["--password-file", p2, "snapshots"]);
    let last = env.run(&[
        "--password-file",
        p2,
        "key",
        "remove",
        &keys.iter().find(|k| k["current"] == true).unwrap()["id"]
            .as_str()
            .unwrap()[..12],
    ]);
    assert!(!last.status.success(), "the key in use is never removed");
}

#[test]
fn one_file_system_keeps_mountpoints_but_not_their_content() {
    let test = "one_file_system_keeps_mountpoints_but_not_their_content";
    if !root_or_skip(test, "to mount a tmpfs") {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let mnt = src.join("mounted");
    fs::create_dir_all(&mnt).unwrap();
    fs::write(src.join("here"), b"same filesystem").unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "pvsnap-test"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    fs::write(mnt.join("elsewhere"), b"other filesystem").unwrap();

    env.snapshot(&src, &["--one-file-system"]);
    let ls = String::from_utf8(env.ok(&["ls", "latest"]).stdout).unwrap();
    assert_eq!(
        ls.lines().collect::<Vec<_>>(),
        vec!["/here", "/mounted"],
        "the mountpoint stays, empty"
    );
    env.snapshot(&src, &[]);
    let ls = String::from_utf8(env.ok(&["ls", "latest"]).stdout).unwrap();
    assert!(ls.contains("/mounted/elsewhere"), "{ls}");
}
