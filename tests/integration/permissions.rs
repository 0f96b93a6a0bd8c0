//! Repository files are 0600 and folders 0700 whatever the umask (0640/0750
//! with `init --group-access`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::util::Env;

/// `pvsnap --repo <repo> ARGS` run under `umask`, required to succeed.
fn ok_under(env: &Env, umask: &str, args: &[&str]) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_pvsnap"))
        .arg("--repo")
        .arg(env.repo())
        .args(args)
        .env_remove("PVSNAP_PASSWORD")
        .env_remove("PVSNAP_REPO")
        .env_remove("PVSNAP_PASSWORD_FILE")
        .output()
        .expect("run pvsnap under sh");
    assert!(
        out.status.success(),
        "umask {umask}: pvsnap {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every path under `root` (itself included) whose mode is not the one
/// required, with its mode.
fn wrong_modes(root: &Path, file: u32, dir: u32) -> Vec<String> {
    let mut bad = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    let mut seen = 0;
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        seen += 1;
        if meta.is_dir() {
            if mode != dir {
                bad.push(format!("{} {mode:o}", p.display()));
            }
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if mode != file {
            bad.push(format!("{} {mode:o}", p.display()));
        }
    }
    assert!(
        seen > 260,
        "walked only {seen} paths under {}",
        root.display()
    );
    bad
}

/// Every kind of write, under `umask`, into a repository created with
/// `init_extra`; then every mode is checked.
fn every_write_under(umask: &str, init_extra: &[&str], file: u32, dir: u32) {
    let env = Env::new();
    let pw = env.path("pw");
    let pw2 = env.path("pw2");
    std::fs::write(&pw, "secret\n").unwrap();
    std::fs::write(&pw2, "other\n").unwrap();
    let pw = pw.to_str().unwrap();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/f"), crate::util::noise(1, 200_000)).unwrap();
    let src = src.to_str().unwrap();

    let mut init = vec!["--password-file", pw, "init", "--encryption"];
    init.extend_from_slice(init_extra);
    ok_under(&env, umask, &init);
    ok_under(&env, umask, &["--password-file", pw, "snapshot", src]);
    std::fs::write(env.path("src/g"), crate::util::noise(2, 100_000)).unwrap();
    ok_under(&env, umask, &["--password-file", pw, "snapshot", src]);
    ok_under(
        &env,
        umask,
        &[
            "--password-file",
            pw,
            "key",
            "add",
            "--new-password-file",
            pw2.to_str().unwrap(),
        ],
    );
    ok_under(
        &env,
        umask,
        &[
            "--password-file",
            pw,
            "policy",
            "set",
            "p",
            "--keep-last",
            "1",
        ],
    );
    ok_under(
        &env,
        umask,
        &[
            "--password-file",
            pw,
            "forget",
            "--keep-last",
            "1",
            "--prune",
            "--max-unused",
            "0",
        ],
    );
    ok_under(&env, umask, &["--password-file", pw, "repair", "index"]);
    let bad = wrong_modes(&env.repo(), file, dir);
    assert!(
        bad.is_empty(),
        "umask {umask}, init {init_extra:?}: want files {file:o} and folders {dir:o}; wrong: {bad:#?}"
    );
}

#[test]
fn repository_is_private_under_any_umask() {
    every_write_under("000", &[], 0o600, 0o700);
    every_write_under("022", &[], 0o600, 0o700);
}

#[test]
fn group_access_is_kept_by_later_writers_under_any_umask() {
    every_write_under("000", &["--group-access"], 0o640, 0o750);
    // A umask that takes the group's bits does not take them from the repository.
    every_write_under("077", &["--group-access"], 0o640, 0o750);
}
