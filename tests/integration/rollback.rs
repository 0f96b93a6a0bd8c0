//! Rolling a plain folder back exactly: `restore --target DIR --delete`,
//! `--overwrite always|if-changed|never`, `--dry-run`, and an `--include`
//! that matches nothing.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{self, Env};

/// A repository holding one snapshot of a small volume; returns the
/// volume's folder and the snapshot's id.
fn setup(env: &Env) -> (PathBuf, String) {
    env.init();
    let src = env.path("volume");
    fs::create_dir_all(src.join("uploads/avatars")).unwrap();
    fs::write(src.join("uploads/avatars/a.png"), util::noise(1, 300_000)).unwrap();
    fs::write(src.join("PG_VERSION"), b"16\n").unwrap();
    fs::write(src.join("notes.txt"), b"notes").unwrap();
    let snap = env.snapshot(&src, &[]);
    (src, snap["id"].as_str().unwrap().to_string())
}

/// `restore SNAP --target DIR ARGS --json`, parsed.
fn restore(env: &Env, snap: &str, dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = restore_run(env, snap, dir, &all);
    assert!(
        out.status.success(),
        "restore {args:?}: {}",
        util::stderr(&out)
    );
    serde_json::from_slice(&out.stdout).expect("restore --json prints JSON")
}

/// `restore SNAP --target DIR ARGS`, whatever its exit code.
fn restore_run(env: &Env, snap: &str, dir: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["restore", snap, "--target", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    env.run(&all)
}

/// The folder after a user's mistakes: a changed file, extra files and an
/// extra folder.
fn spoil(dir: &Path) {
    fs::write(dir.join("PG_VERSION"), b"17\n").unwrap();
    fs::write(dir.join("extra.txt"), b"x").unwrap();
    fs::create_dir_all(dir.join("uploads/new/deeper")).unwrap();
    fs::write(dir.join("uploads/new/deeper/b.png"), b"b").unwrap();
}

#[test]
fn delete_makes_a_plain_folder_exactly_the_snapshot_writing_only_what_differs() {
    let env = Env::new();
    let (src, snap) = setup(&env);
    let dir = env.path("restored");
    restore(&env, &snap, &dir, &[]);
    spoil(&dir);

    // Without --delete the extras stay (and the changed file is fixed).
    let v = restore(&env, &snap, &dir, &[]);
    assert_eq!(v["deleted"], 0, "{v}");
    assert!(dir.join("extra.txt").exists());
    assert_eq!(fs::read(dir.join("PG_VERSION")).unwrap(), b"16\n");

    spoil(&dir);
    let v = restore(&env, &snap, &dir, &["--delete"]);
    assert_eq!(v["deleted"], 2, "extra.txt and uploads/new: {v}");
    assert_eq!(v["bytes_written"], 3, "only PG_VERSION: {v}");
    assert_eq!(util::manifest(&dir), util::manifest(&src));

    // The human summary says what was kept and deleted.
    spoil(&dir);
    let out = env.ok(&[
        "restore",
        &snap,
        "--target",
        dir.to_str().unwrap(),
        "--delete",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 extra entries deleted"), "{text}");
    assert_eq!(util::manifest(&dir), util::manifest(&src));
}

#[test]
fn delete_with_a_selection_deletes_only_inside_it() {
    let env = Env::new();
    let (_src, snap) = setup(&env);
    let dir = env.path("restored");
    restore(&env, &snap, &dir, &[]);
    spoil(&dir);
    let v = restore(&env, &snap, &dir, &["--delete", "--include", "uploads"]);
    assert_eq!(v["deleted"], 1, "uploads/new only: {v}");
    assert!(!dir.join("uploads/new").exists());
    assert!(dir.join("extra.txt").exists(), "outside the selection");
    assert_eq!(fs::read(dir.join("PG_VERSION")).unwrap(), b"17\n");

    // --path: the target is that folder.
    let sub = env.path("avatars");
    restore(&env, &snap, &sub, &["--path", "uploads/avatars"]);
    fs::write(sub.join("stray"), b"s").unwrap();
    let v = restore(
        &env,
        &snap,
        &sub,
        &["--path", "uploads/avatars", "--delete"],
    );
    assert_eq!(v["deleted"], 1, "{v}");
    assert!(!sub.join("stray").exists() && sub.join("a.png").exists());
}

#[test]
fn delete_never_follows_a_symlink_out_of_the_target() {
    let env = Env::new();
    let (src, snap) = setup(&env);
    let outside = env.path("outside");
    fs::create_dir_all(outside.join("keep")).unwrap();
    fs::write(outside.join("keep/precious"), b"mine").unwrap();
    let dir = env.path("restored");
    restore(&env, &snap, &dir, &[]);
    std::os::unix::fs::symlink(&outside, dir.join("escape")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("uploads/escape")).unwrap();
    let v = restore(&env, &snap, &dir, &["--delete"]);
    assert_eq!(v["deleted"], 2, "{v}");
    assert_eq!(fs::read(outside.join("keep/precious")).unwrap(), b"mine");
    assert_eq!(util::manifest(&dir), util::manifest(&src));
}

#[test]
fn overwrite_never_keeps_and_always_rewrites() {
    let env = Env::new();
    let (_src, snap) = setup(&env);
    let dir = env.path("restored");
    let first = restore(&env, &snap, &dir, &[]);
    fs::write(dir.join("PG_VERSION"), b"17\n").unwrap();
    fs::remove_file(dir.join("notes.txt")).unwrap();

    let out = env.ok(&[
        "restore",
        &snap,
        "--target",
        dir.to_str().unwrap(),
        "--overwrite",
        "never",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2 existing entries kept as they were: --overwrite never"),
        "{text}"
    );
    assert_eq!(fs::read(dir.join("PG_VERSION")).unwrap(), b"17\n", "kept");
    assert_eq!(
        fs::read(dir.join("notes.txt")).unwrap(),
        b"notes",
        "was missing"
    );

    // if-changed (the default) writes only PG_VERSION; always writes it all.
    let v = restore(&env, &snap, &dir, &[]);
    assert_eq!(v["bytes_written"], 3, "{v}");
    let v = restore(&env, &snap, &dir, &["--overwrite", "always"]);
    assert_eq!(v["bytes_written"], first["bytes_written"], "{v}");

    let out = restore_run(&env, &snap, &dir, &["--delete", "--overwrite", "never"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--delete") && err.contains("--overwrite never"),
        "{err}"
    );
    let out = env.run(&["restore", &snap, "--to-pvc", "ns/data", "--delete"]);
    assert_eq!(out.status.code(), Some(2), "refused by the parser");
}

#[test]
fn dry_run_lists_what_would_change_and_changes_nothing() {
    let env = Env::new();
    let (_src, snap) = setup(&env);
    let dir = env.path("restored");
    restore(&env, &snap, &dir, &[]);
    spoil(&dir);
    let before = util::manifest(&dir);
    let d = dir.display().to_string();

    let out = env.ok(&["restore", &snap, "--target", &d, "--delete", "--dry-run"]);
    assert_eq!(util::manifest(&dir), before, "nothing changed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("write   {d}/PG_VERSION (3 B)")),
        "{text}"
    );
    assert!(text.contains(&format!("delete  {d}/extra.txt")), "{text}");
    assert!(text.contains(&format!("delete  {d}/uploads/new")), "{text}");
    assert!(
        text.contains("would write 1 entries (3 B), delete 2; nothing was changed"),
        "{text}"
    );

    let v = restore(&env, &snap, &dir, &["--delete", "--dry-run"]);
    assert_eq!(util::manifest(&dir), before, "nothing changed");
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["bytes_to_write"], 3);
    assert_eq!(v["preview"]["delete"].as_array().unwrap().len(), 2, "{v}");

    // Into a folder that does not exist: everything, and it is not made.
    let none = env.path("none");
    let v = restore(&env, &snap, &none, &["--dry-run"]);
    assert!(!none.exists());
    assert_eq!(v["preview"]["write"].as_array().unwrap().len(), 3, "{v}");
}

#[test]
fn an_include_that_matches_nothing_is_an_error_naming_it() {
    let env = Env::new();
    let (_src, snap) = setup(&env);
    let dir = env.path("restored");
    let out = restore_run(&env, &snap, &dir, &["--include", "*.jpg"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--include '*.jpg' matches nothing"), "{err}");
    assert!(err.contains(&format!("pvsnap ls {}", &snap[..8])), "{err}");
    assert!(fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none()));

    // One pattern matching, another not: still refused, naming the other.
    let out = restore_run(
        &env,
        &snap,
        &dir,
        &["--include", "uploads", "--include", "PG_VERSIONS"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--include 'PG_VERSIONS' matches nothing"),
        "{err}"
    );
    assert!(!dir.join("uploads").exists(), "nothing was restored");
    // A pattern matching only inside another's selection counts.
    restore(
        &env,
        &snap,
        &dir,
        &["--include", "uploads", "--include", "a.png"],
    );
}
