//! What a new user meets first: passwords at `init`, logs read from cron
//! and journald, and errors that say what to do next (issue #19, items 3,
//! 8 and 10).

use crate::util::{Env, in_pty};
use crate::util::{stderr, stdout};

/// A folder with a file, and a subfolder `cache` with another.
fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("cache")).unwrap();
    std::fs::write(src.join("a.txt"), b"a").unwrap();
    std::fs::write(src.join("cache/blob"), b"b").unwrap();
    src
}

// Item 3: passwords at init.

#[test]
fn an_empty_password_creates_no_repository() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["init", "--encryption"])
        .env("PVSNAP_PASSWORD", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the password is empty"),
        "{}",
        stderr(&out)
    );
    assert!(!env.repo().exists(), "nothing is created");

    // Enter twice at the prompt.
    let mut cmd = env.cmd();
    cmd.args(["init", "--encryption"]);
    let (status, shown) = in_pty(cmd, &[("repository password: ", "\n"), ("again: ", "\n")]);
    assert_eq!(status.code(), Some(1), "{shown}");
    assert!(shown.contains("the password is empty"), "{shown}");
    assert!(!env.repo().exists(), "nothing is created");
}

#[test]
fn an_encrypted_init_warns_about_the_password_and_names_key_add() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["init", "--encryption"])
        .env("PVSNAP_PASSWORD", "secret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cannot be read, and nobody can recover it"),
        "{err}"
    );
    let add = format!("pvsnap --repo {} key add", env.repo().display());
    assert!(err.contains(&add), "{err}");
    // The command it names works.
    let out = env
        .cmd()
        .args(["key", "add"])
        .env("PVSNAP_PASSWORD", "secret")
        .env("PVSNAP_NEW_PASSWORD", "second")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_password_without_encryption_is_said_to_be_unused() {
    let env = Env::new();
    let out = env
        .cmd()
        .arg("init")
        .env("PVSNAP_PASSWORD", "secret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("PVSNAP_PASSWORD is set, but --encryption was not given")
            && err.contains("NOT encrypted")
            && err.contains("init --encryption"),
        "{err}"
    );
    // Without a password there is nothing to warn about.
    let plain = Env::new();
    let out = plain.ok(&["init"]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

// Item 8: logs fit for cron and journald.

/// A repository with an unreadable index file, so that `pvsnap stats`
/// logs a warning.
fn repo_with_a_warning() -> Env {
    let env = Env::new();
    env.init();
    std::fs::write(env.repo().join("index").join("cd".repeat(32)), b"junk").unwrap();
    env
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let env = repo_with_a_warning();
    // Redirected, as under cron or systemd: plain text.
    let out = env.run(&["stats"]);
    let err = stderr(&out);
    assert!(err.contains("WARN") && err.contains("unreadable"), "{err}");
    assert!(!err.contains('\x1b'), "no escape codes in a file: {err:?}");
    // At a terminal: coloured.
    let mut cmd = env.cmd();
    cmd.arg("stats").env_remove("NO_COLOR");
    let (_, shown) = in_pty(cmd, &[]);
    assert!(shown.contains("unreadable"), "{shown}");
    assert!(shown.contains("\x1b["), "colour at a terminal: {shown:?}");
    // At a terminal with NO_COLOR: plain.
    let mut cmd = env.cmd();
    cmd.arg("stats").env("NO_COLOR", "1");
    let (_, shown) = in_pty(cmd, &[]);
    assert!(shown.contains("unreadable"), "{shown}");
    assert!(!shown.contains('\x1b'), "NO_COLOR: {shown:?}");
}

#[test]
fn a_failed_pre_hook_is_said_once_in_words() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    let out = env.run(&["snapshot", src.to_str().unwrap(), "--pre-hook", "false"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.matches("exited with code 1").count(), 1, "{err}");
    assert!(
        err.contains(
            "skipped, no snapshot taken: host pre hook `false` failed: exited with code 1"
        ),
        "{err}"
    );
    assert!(!err.contains("Some("), "{err}");
    assert!(!err.contains("WARN"), "{err}");
    // -v adds what happened, in words.
    let out = env.run(&[
        "-v",
        "snapshot",
        src.to_str().unwrap(),
        "--pre-hook",
        "false",
    ]);
    let err = stderr(&out);
    assert!(err.contains("host hook failed"), "{err}");
    assert!(!err.contains("Some("), "{err}");
}

#[test]
fn an_error_does_not_repeat_its_cause() {
    let env = Env::new();
    env.init();
    // The snapshots folder replaced by a file: listing it fails, and the
    // system's reason is given once (it was `list failed: Not a directory
    // (os error 20): Not a directory (os error 20)`).
    let snapshots = env.repo().join("snapshots");
    std::fs::remove_dir(&snapshots).unwrap();
    std::fs::write(&snapshots, b"").unwrap();
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("snapshots: list failed: Not a directory"),
        "{err}"
    );
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
}

#[test]
fn verbose_flags_add_detail() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    let quiet = stderr(&env.ok(&["snapshot", src.to_str().unwrap()]));
    assert!(!quiet.contains("reading"), "{quiet}");
    std::fs::write(src.join("b.txt"), b"b").unwrap();
    let v = stderr(&env.ok(&["-v", "snapshot", src.to_str().unwrap()]));
    assert!(v.contains("files unchanged since snapshot"), "{v}");
    assert!(v.contains("opened repository"), "{v}");
    assert!(!v.contains("new, reading"), "{v}");
    std::fs::write(src.join("c.txt"), b"c").unwrap();
    let vv = stderr(&env.ok(&["-vv", "snapshot", src.to_str().unwrap()]));
    assert!(vv.contains("c.txt: new, reading"), "{vv}");
}

// Item 10: errors with a way forward.

#[test]
fn a_repository_path_that_is_a_file_is_named_as_one() {
    let env = Env::new();
    std::fs::write(env.repo(), b"not a folder").unwrap();
    let repo = env.repo().display().to_string();
    for args in [&["snapshots"][..], &["init"], &["unlock"]] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{repo}: this is a file, not a folder")),
            "{args:?}: {err}"
        );
    }
    let below = env.path("repo/inner");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pvsnap"))
        .arg("--repo")
        .arg(&below)
        .arg("init")
        .env_remove("PVSNAP_REPO")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}: part of this path is a file", below.display())),
        "{err}"
    );
}

#[test]
fn a_missing_config_is_never_answered_with_init() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    env.ok(&["snapshot", src.to_str().unwrap()]);
    std::fs::remove_file(env.repo().join("config")).unwrap();
    for args in [&["snapshots"][..], &["init"], &["unlock"]] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("config is missing"), "{args:?}: {err}");
        assert!(err.contains("from a copy"), "{args:?}: {err}");
        assert!(!err.contains("create it with"), "{args:?}: {err}");
        assert!(!err.contains("create one with"), "{args:?}: {err}");
        assert!(!err.contains("not empty"), "{args:?}: {err}");
    }
}

#[test]
fn a_garbage_config_is_named_and_called_damaged() {
    let env = Env::new();
    env.init();
    std::fs::write(env.repo().join("config"), b"garbage, not a config").unwrap();
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let config = format!("{}/config", env.repo().display());
    assert!(
        err.contains(&format!(
            "{config}: the repository's config object is damaged"
        )),
        "{err}"
    );
    assert!(err.contains("from a copy"), "{err}");
}

#[test]
fn an_exclude_given_as_a_host_path_inside_the_source_excludes_it() {
    let env = Env::new();
    env.init();
    let src = std::fs::canonicalize(source(&env)).unwrap();
    let cache = src.join("cache");
    env.ok(&[
        "snapshot",
        src.to_str().unwrap(),
        "--exclude",
        cache.to_str().unwrap(),
    ]);
    let ls = stdout(&env.ok(&["ls", "latest"]));
    assert!(ls.lines().any(|l| l == "/a.txt"), "{ls}");
    assert!(!ls.contains("cache"), "{ls}");

    // A host path outside the source is said to exclude nothing.
    let elsewhere = env.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let out = env.ok(&[
        "snapshot",
        src.to_str().unwrap(),
        "--exclude",
        elsewhere.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "--exclude {} is not inside the source folder(s)",
            elsewhere.display()
        )),
        "{err}"
    );
    // The source folder itself is refused.
    let out = env.run(&[
        "snapshot",
        src.to_str().unwrap(),
        "--exclude",
        src.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("would exclude everything"),
        "{}",
        stderr(&out)
    );
}
