//! Guards that must not be bypassed: empty tags and durations, impossible
//! time offsets, a damaged config or key slot, a failed init.

use crate::util::stderr;
use crate::util::{self, Env};

/// Runs a command that must fail; returns its stderr.
fn refused(env: &Env, args: &[&str]) -> String {
    let out = env.run(args);
    assert!(
        !out.status.success(),
        "pvsnap {args:?} must fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr(&out)
}

fn snapshot_count(env: &Env) -> usize {
    std::fs::read_dir(env.repo().join("snapshots"))
        .unwrap()
        .count()
}

/// A repository with two snapshots of one folder.
fn two_snapshots() -> Env {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), util::noise(3, 10_000)).unwrap();
    env.snapshot(&src, &["--tag", "a"]);
    std::fs::write(src.join("g"), util::noise(4, 10_000)).unwrap();
    env.snapshot(&src, &[]);
    env
}

#[test]
fn an_empty_keep_tag_keeps_nothing_and_is_refused() {
    let env = two_snapshots();
    for args in [
        vec!["forget", "--keep-tag", ""],
        vec!["forget", "--keep-tag", " ", "--prune"],
        vec!["policy", "set", "p", "--keep-tag", ""],
    ] {
        let err = refused(&env, &args);
        assert!(err.contains("empty --keep-tag"), "{args:?}: {err}");
    }
    assert_eq!(snapshot_count(&env), 2, "nothing was forgotten");
    env.ok(&["forget", "--keep-tag", "a"]);
    assert_eq!(snapshot_count(&env), 1);
}

#[test]
fn empty_or_garbage_durations_are_refused() {
    let env = two_snapshots();
    // A pack no index names, fresh: an empty --grace used to read as 0 and
    // delete it.
    let young = env.repo().join("data/ab").join("ab".repeat(32));
    std::fs::write(&young, b"a pack a snapshot is still writing").unwrap();
    for grace in ["", " ", "24", "1x", "-1h", "h"] {
        let err = refused(&env, &["prune", &format!("--grace={grace}")]);
        assert!(err.contains("invalid duration"), "--grace {grace:?}: {err}");
        assert!(young.exists(), "--grace {grace:?} deleted a young pack");
    }
    let err = refused(&env, &["forget", "--keep-within", "", "--prune"]);
    assert!(err.contains("it is empty"), "{err}");
    let err = refused(
        &env,
        &[
            "restore",
            "latest",
            "--to-pvc",
            "ns/c",
            "--wait-timeout",
            "",
        ],
    );
    assert!(err.contains("invalid duration"), "{err}");
    // The forms each reader took before are still taken.
    env.ok(&["prune", "--grace", "1d12h"]);
    env.ok(&["prune", "--grace", "1.5h"]);
    assert!(young.exists());
    env.ok(&["prune", "--grace", "0"]);
    assert!(!young.exists(), "--grace 0 still means no grace");
}

#[test]
fn a_time_offset_beyond_a_day_is_refused() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let src = src.to_str().unwrap();
    for bad in [
        "2026-11-21T10:00:00+25:00",
        "2026-11-21T10:00:00-24:30",
        "2026-02-30T10:00:00Z",
        "2026-11-21 10:00",
    ] {
        let err = refused(&env, &["snapshot", src, "--time", bad]);
        assert!(err.contains(bad), "--time {bad}: {err}");
    }
    assert_eq!(snapshot_count(&env), 0);
    env.ok(&["snapshot", src, "--time", "2026-11-21T10:00:00+24:00"]);
}

#[test]
fn config_version_zero_is_damage_not_a_newer_pvsnap() {
    let env = Env::new();
    env.init();
    let config = env.repo().join("config");
    let good = std::fs::read(&config).unwrap();
    // A version 1 config object (header, then JSON), as old repositories have.
    let (_, body) = pvsnap_engine::repo::format::decode_checked(
        &good,
        pvsnap_engine::repo::format::ObjectKind::Config,
        &|| "config".into(),
    )
    .expect("a config object");
    let mut json: serde_json::Value = serde_json::from_slice(body).expect("config JSON");
    json.as_object_mut().unwrap().remove("checksum");
    for (version, want, not) in [(0, "damaged", "upgrade"), (7, "upgrade", "damaged")] {
        json["version"] = version.into();
        let mut bytes = b"PVSN\x01\x01\x00\x00".to_vec();
        bytes.extend_from_slice(&serde_json::to_vec(&json).unwrap());
        std::fs::write(&config, bytes).unwrap();
        let err = refused(&env, &["snapshots"]);
        assert!(err.contains(want), "version {version}: {err}");
        assert!(!err.contains(not), "version {version}: {err}");
    }
}

#[test]
fn a_damaged_key_slot_is_not_a_wrong_password() {
    let env = Env::new();
    let (pw1, pw2, pw3) = (env.path("pw1"), env.path("pw2"), env.path("pw3"));
    std::fs::write(&pw1, "first\n").unwrap();
    std::fs::write(&pw2, "second\n").unwrap();
    std::fs::write(&pw3, "third\n").unwrap();
    let (p1, p2, p3) = (
        pw1.to_str().unwrap(),
        pw2.to_str().unwrap(),
        pw3.to_str().unwrap(),
    );
    env.ok(&["--password-file", p1, "init", "--encryption"]);
    let first: Vec<String> = std::fs::read_dir(env.repo().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    env.add_key(p1, p2);
    let second = std::fs::read_dir(env.repo().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| !first.contains(n))
        .expect("the added slot");
    let slot = env.repo().join("keys").join(&second);
    let len = std::fs::metadata(&slot).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&slot)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    for pw in [p2, p3] {
        let out = env.run(&["--password-file", pw, "snapshots"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(12), "{err}");
        assert!(err.contains(&second[..8]), "names the damaged slot: {err}");
        assert!(
            err.contains("damaged") && err.contains("pvsnap key list"),
            "{err}"
        );
        assert!(!err.contains("wrong password"), "{err}");
    }
    let out = env.ok(&["--password-file", p1, "key", "list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains(&second[..8]) && list.contains("damaged"),
        "{list}"
    );
    env.ok(&["--password-file", p1, "key", "remove", &second[..8]]);
    let out = env.run(&["--password-file", p3, "snapshots"]);
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
}

#[test]
fn a_failed_init_leaves_nothing_behind() {
    let env = Env::new();
    for bad in [
        vec!["init", "--chunker", "0,0,0"],
        vec!["init", "--compression-level", "99"],
    ] {
        let err = refused(&env, &bad);
        assert!(err.contains("out of range"), "{bad:?}: {err}");
        assert!(
            !env.repo().exists(),
            "{bad:?} created {}",
            env.repo().display()
        );
    }
    // An existing empty folder stays empty.
    std::fs::create_dir(env.repo()).unwrap();
    refused(&env, &["init", "--chunker", "0,0,0"]);
    assert_eq!(std::fs::read_dir(env.repo()).unwrap().count(), 0);
    env.ok(&["init", "--chunker", "64,256,1024"]);
    assert!(env.repo().join("config").exists());
    // A second init refuses and removes nothing.
    let err = refused(&env, &["init", "--chunker", "0,0,0"]);
    assert!(err.contains("out of range"), "{err}");
    let err = refused(&env, &["init"]);
    assert!(err.contains("already exists"), "{err}");
    assert!(env.repo().join("config").exists());
    env.ok(&["snapshots"]);
}
