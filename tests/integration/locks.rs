//! Damaged, foreign and future locks through the binary.

use std::path::Path;

use crate::util::Env;
use crate::util::stderr;

/// Exit code of a command refused because of a conflicting lock.
const LOCKED: i32 = 11;

fn lock_names(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo.join("locks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A version 1 lock object.
fn lock_bytes(host: &str, pid: u32, exclusive: bool, operation: &str, time: &str) -> Vec<u8> {
    let mut v = b"PVSN\x06\x01\x00\x00".to_vec();
    v.extend_from_slice(
        serde_json::json!({
            "exclusive": exclusive, "hostname": host, "pid": pid,
            "operation": operation, "time": time,
        })
        .to_string()
        .as_bytes(),
    );
    v
}

#[test]
fn an_empty_lock_blocks_nothing_and_unlock_removes_it() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"hello").unwrap();
    let empty = "cd".repeat(32);
    std::fs::write(env.repo().join("locks").join(&empty), b"").unwrap();
    std::fs::write(env.repo().join("locks").join("ab".repeat(32)), b"garbage").unwrap();

    for args in [
        vec!["check"],
        vec!["snapshot", src.to_str().unwrap()],
        vec!["forget", "--keep-last", "1", "--prune"],
    ] {
        let out = env.ok(&args);
        let err = stderr(&out);
        assert!(
            err.contains(&format!("locks/{empty}")) && err.contains("unreadable"),
            "{args:?} names the damaged lock: {err}"
        );
        assert!(err.contains("pvsnap unlock"), "{args:?}: {err}");
    }
    assert_eq!(
        lock_names(&env.repo()).len(),
        2,
        "only the two damaged objects are left"
    );
    let out = env.ok(&["unlock"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 lock(s) removed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr(&out).contains("unreadable"), "{}", stderr(&out));
    assert!(lock_names(&env.repo()).is_empty());

    // --remove-all gets past an unreadable lock as well.
    std::fs::write(env.repo().join("locks").join(&empty), b"").unwrap();
    env.ok(&["unlock", "--remove-all"]);
    assert!(lock_names(&env.repo()).is_empty());
}

#[test]
fn a_lock_of_another_host_says_who_and_how_to_remove_it() {
    let env = Env::new();
    env.init();
    let now = jiff::Timestamp::now();
    let name = "ef".repeat(32);
    std::fs::write(
        env.repo().join("locks").join(&name),
        lock_bytes(
            "cronjob-pod-x7",
            77,
            false,
            "snapshot",
            &(now - jiff::SignedDuration::from_mins(3)).to_string(),
        ),
    )
    .unwrap();
    for args in [vec!["prune"], vec!["forget", "--keep-last", "1"]] {
        let out = env.run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(LOCKED), "{args:?}: {err}");
        for want in [
            "host cronjob-pod-x7",
            "pid 77",
            "`snapshot`",
            "3m ",
            " ago",
            "unlock --remove-all",
            "make sure",
            "turns stale at",
            &format!("unlock {}", &name[..8]),
        ] {
            assert!(err.contains(want), "{args:?}: `{want}` missing in {err}");
        }
        assert_eq!(
            lock_names(&env.repo()),
            vec![name.clone()],
            "{args:?} left no lock of its own"
        );
    }
    // Plain unlock keeps a live lock and says how to remove it.
    let out = env.ok(&["unlock"]);
    assert!(stderr(&out).contains("kept"), "{}", stderr(&out));
    assert_eq!(lock_names(&env.repo()), vec![name.clone()]);
    env.ok(&["unlock", &name[..8]]);
    assert!(lock_names(&env.repo()).is_empty());
    env.ok(&["prune"]);
}

#[test]
fn a_lock_from_the_future_is_reported_and_removable() {
    let env = Env::new();
    env.init();
    let name = "0f".repeat(32);
    let tomorrow = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    std::fs::write(
        env.repo().join("locks").join(&name),
        lock_bytes("skewed", 5, true, "prune", &tomorrow.to_string()),
    )
    .unwrap();
    let out = env.ok(&["check"]);
    assert!(
        stderr(&out).contains("in the future") && stderr(&out).contains("host skewed"),
        "{}",
        stderr(&out)
    );
    let out = env.ok(&["unlock"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 lock(s) removed"),
        "{}",
        stderr(&out)
    );
    assert!(lock_names(&env.repo()).is_empty());
}

#[test]
fn unlock_needs_no_password_and_no_repository_is_not_one() {
    let env = Env::new();
    let pw = env.path("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    env.ok(&[
        "--password-file",
        pw.to_str().unwrap(),
        "init",
        "--encryption",
    ]);
    std::fs::write(env.repo().join("locks").join("cd".repeat(32)), b"").unwrap();
    // No password in the environment, none on a terminal.
    let out = env.ok(&["unlock"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 lock(s) removed"),
        "{}",
        stderr(&out)
    );
    let elsewhere = Env::new();
    std::fs::create_dir_all(elsewhere.repo()).unwrap();
    let out = elsewhere.run(&["unlock", "--remove-all"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a pvsnap repository"),
        "{}",
        stderr(&out)
    );
}
