//! `pvsnap drill`: a restore into a scratch folder, every file read back and
//! compared, a command run on the copy, the recovery time reported, the
//! copy removed; and each way a drill must fail.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::{self, Env, stderr, stdout};

fn source(env: &Env) -> PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("db/base/1")).unwrap();
    fs::write(src.join("db/PG_VERSION"), b"15\n").unwrap();
    fs::write(src.join("db/base/1/1259"), util::noise(1, 900_000)).unwrap();
    fs::write(src.join("top.txt"), b"hello").unwrap();
    std::os::unix::fs::symlink("db/PG_VERSION", src.join("version")).unwrap();
    src
}

fn drilled(env: &Env, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["drill", "--json"];
    all.extend_from_slice(args);
    let out = env.run(&all);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}\n{}", stdout(&out), stderr(&out)));
    (out.status.code().unwrap(), report, stderr(&out))
}

#[test]
fn a_drill_restores_checks_every_file_reports_the_recovery_time_and_cleans_up() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    env.snapshot(&src, &[]);
    let (code, r, err) = drilled(&env, &["latest"]);
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["files_verified"], 3, "{r}");
    assert_eq!(r["bytes"], 900_000 + 3 + 5, "{r}");
    assert!(r["rto_seconds"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["problems"].as_array().unwrap().is_empty(), "{r}");
    let target = Path::new(r["target"].as_str().unwrap());
    assert!(
        !target.exists(),
        "the copy is removed: {}",
        target.display()
    );

    // The same for people: a short report, exit 0.
    let out = env.ok(&["drill", "--source", src.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(text.contains(": passed"), "{text}");
    assert!(text.contains("every file matches the snapshot"), "{text}");
    assert!(text.contains("(recovery time)"), "{text}");

    // Both drills are in the audit trail, with their snapshot.
    let audit: Value =
        serde_json::from_slice(&env.ok(&["audit", "--operation", "drill", "--json"]).stdout)
            .unwrap();
    let drills = audit.as_array().unwrap();
    assert_eq!(drills.len(), 2, "{audit}");
    assert!(
        drills
            .iter()
            .all(|e| e["operation"] == "drill" && e["outcome"] == "ok"),
        "{audit}"
    );
    assert!(
        audit.to_string().contains(r["snapshot"].as_str().unwrap()),
        "{audit}"
    );
}

#[test]
fn the_verify_command_runs_on_the_copy_and_its_failure_fails_the_drill() {
    let env = Env::new();
    env.init();
    env.snapshot(&source(&env), &[]);
    let (code, r, _) = drilled(
        &env,
        &[
            "latest",
            "--verify-cmd",
            "test \"$(cat db/PG_VERSION)\" = 15 && test -d \"$PVSNAP_DRILL_DIR/db/base\" && echo checked $PVSNAP_SOURCE",
        ],
    );
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["verify_cmd"]["exit_code"], 0, "{r}");
    assert!(
        r["verify_cmd"]["output"]
            .as_str()
            .unwrap()
            .contains("checked /"),
        "{r}"
    );

    let (code, r, _) = drilled(
        &env,
        &["latest", "--verify-cmd", "echo no database here; exit 3"],
    );
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["ok"], false);
    assert_eq!(r["verify_cmd"]["exit_code"], 3, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("exited with 3"),
        "{r}"
    );
    assert!(!Path::new(r["target"].as_str().unwrap()).exists());

    // A command that hangs is stopped at its timeout, with what it started.
    let started = std::time::Instant::now();
    let (code, r, _) = drilled(
        &env,
        &[
            "latest",
            "--verify-cmd",
            "sleep 60 & sleep 60",
            "--verify-timeout",
            "1s",
        ],
    );
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["verify_cmd"]["exit_code"], Value::Null, "{r}");
    assert!(started.elapsed().as_secs() < 30, "the timeout held");
}

#[test]
fn a_damaged_repository_fails_the_drill_naming_the_file() {
    let env = Env::new();
    env.init();
    env.snapshot(&source(&env), &[]);
    // Damage the largest pack (the large file's chunks) in its middle; the
    // tree packs are small and stay whole.
    let pack = util::files_below(&env.repo().join("data"))
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut b = fs::read(&pack).unwrap();
    let mid = b.len() / 3;
    b[mid] ^= 0xff;
    fs::set_permissions(&pack, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    fs::write(&pack, b).unwrap();
    let (code, r, err) = drilled(&env, &["latest"]);
    assert_eq!(code, 1, "{r} {err}");
    assert_eq!(r["ok"], false, "{r}");
    let problems = r["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p[0].as_str().unwrap().ends_with("db/base/1/1259")),
        "{r}"
    );
    assert!(!Path::new(r["target"].as_str().unwrap()).exists());
}

#[test]
fn a_drill_refuses_an_empty_snapshot_and_a_target_that_holds_something() {
    let env = Env::new();
    env.init();
    let empty = env.path("empty");
    fs::create_dir_all(empty.join("only/folders")).unwrap();
    env.snapshot(&empty, &[]);
    let out = env.run(&["drill", "latest"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("holds no files"), "{}", stderr(&out));

    let src = source(&env);
    env.snapshot(&src, &[]);
    let spec = format!("latest:{}", src.display());
    let busy = env.path("busy");
    fs::create_dir_all(&busy).unwrap();
    fs::write(busy.join("precious"), b"keep me").unwrap();
    let out = env.run(&["drill", &spec, "--target", busy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(fs::read(busy.join("precious")).unwrap(), b"keep me");

    // An empty folder given is used, then emptied; --keep keeps the copy.
    let given = env.path("given");
    fs::create_dir_all(&given).unwrap();
    let (code, r, _) = drilled(&env, &[&spec, "--target", given.to_str().unwrap()]);
    assert_eq!(code, 0, "{r}");
    assert!(given.is_dir() && fs::read_dir(&given).unwrap().next().is_none());
    let (code, r, _) = drilled(
        &env,
        &[&spec, "--target", given.to_str().unwrap(), "--keep"],
    );
    assert_eq!(code, 0, "{r}");
    assert_eq!(fs::read(given.join("top.txt")).unwrap(), b"hello");

    let out = env.run(&["drill"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("name the snapshot to drill"),
        "{}",
        stderr(&out)
    );
}
