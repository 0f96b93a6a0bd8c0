//! Repositories written by earlier pvsnap versions are committed under
//! `tests/fixtures/`: `repo-v1` (every object at version 1), `repo-v2`
//! (checked objects and index files at version 2) and `repo-v2-encrypted`
//! (the same, encrypted; password `fixture`). These tests fail when a change
//! makes one of them unreadable or changes how the same content is chunked
//! and named, which would be a format change needing a new version in
//! FORMAT.md.
//!
//! To write the newest fixtures (only together with a format version bump,
//! after adding their names to [`FIXTURES`]):
//! `PVSNAP_WRITE_FIXTURE=1 cargo test -p pvsnap --test integration write_fixture -- --ignored`

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{self, Env};

const FIXTURE_SNAPSHOT: &str = "latest";

/// Every committed fixture: (folder, password).
const FIXTURES: &[(&str, Option<&str>)] = &[
    ("repo-v1", None),
    ("repo-v2", None),
    ("repo-v2-encrypted", Some("fixture")),
];

/// The fixtures `write_fixture` writes: the current format's.
const NEWEST: &[(&str, Option<&str>)] =
    &[("repo-v2", None), ("repo-v2-encrypted", Some("fixture"))];

fn fixture_repo(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// A scratch copy of a fixture, with its password in the environment.
fn fixture_env(
    name: &str,
    password: Option<&str>,
) -> (Env, impl Fn(&[&str]) -> std::process::Output) {
    let env = Env::new();
    copy_dir(&fixture_repo(name), &env.repo());
    let repo = env.repo();
    let password = password.map(str::to_string);
    let run = move |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pvsnap"));
        c.arg("--repo")
            .arg(&repo)
            .args(args)
            .env_remove("PVSNAP_REPO");
        match &password {
            Some(p) => c.env("PVSNAP_PASSWORD", p),
            None => c.env_remove("PVSNAP_PASSWORD"),
        };
        let out = c.output().expect("run pvsnap");
        assert!(
            out.status.success(),
            "{name}: pvsnap {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    (env, run)
}

/// The deterministic content the fixture was made from.
fn fixture_source(root: &Path) {
    fs::create_dir_all(root.join("app/config")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    let mut text = String::new();
    for i in 0..400_000u32 {
        text.push_str(&format!(
            "record {i:08} value {}\n",
            i.wrapping_mul(2654435761) % 1000
        ));
    }
    fs::write(root.join("app/data.log"), &text).unwrap();
    fs::write(
        root.join("app/config/settings.toml"),
        b"[server]\nport = 5432\n",
    )
    .unwrap();
    fs::write(root.join("empty-file"), b"").unwrap();
    fs::write(
        root.join(OsStr::from_bytes(b"caf\xe9-latin1")),
        b"latin-1 name",
    )
    .unwrap();
    std::os::unix::fs::symlink("app/config/settings.toml", root.join("settings")).unwrap();
}

const EXPECTED_LS: &str = "/app
/app/config
/app/config/settings.toml
/app/data.log
/caf\u{FFFD}-latin1
/empty
/empty-file
/settings
";

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn every_committed_repository_still_restores() {
    for &(name, password) in FIXTURES {
        let (env, run) = fixture_env(name, password);
        let ls = run(&["ls", FIXTURE_SNAPSHOT]);
        assert_eq!(String::from_utf8(ls.stdout).unwrap(), EXPECTED_LS, "{name}");
        let target = env.path("out");
        run(&[
            "restore",
            FIXTURE_SNAPSHOT,
            "--target",
            target.to_str().unwrap(),
        ]);
        let expected = env.path("expected");
        fixture_source(&expected);
        let content = |root: &Path| -> Vec<String> {
            util::manifest(root)
                .into_iter()
                .map(|l| {
                    // Keep the path, type and content; the fixture's times and owners are its own.
                    let path = l.split(" mode=").next().unwrap().to_string();
                    let tail = l
                        .rsplit_once("nlink=")
                        .map(|x| x.1.split_once(' ').map(|y| y.1).unwrap_or(""))
                        .unwrap_or("")
                        .to_string();
                    format!("{path} {tail}")
                })
                .collect()
        };
        assert_eq!(content(&expected), content(&target), "{name}");
        run(&["check", "--read-data"]);
    }
}

#[test]
fn the_same_content_still_gets_the_same_chunk_ids() {
    for &(name, password) in FIXTURES {
        let (env, run) = fixture_env(name, password);
        let src = env.path("src");
        fixture_source(&src);
        let out = run(&["snapshot", src.to_str().unwrap(), "--json"]);
        let snap: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            snap[0]["summary"]["data_blobs_added"], 0,
            "{name}: chunking or content ids changed: {}",
            snap[0]["summary"]
        );
    }
}

#[test]
#[ignore = "writes the committed fixture; run only with a format version bump"]
fn write_fixture() {
    if std::env::var_os("PVSNAP_WRITE_FIXTURE").is_none() {
        return;
    }
    for &(name, password) in NEWEST {
        write_one(name, password);
    }
}

fn write_one(name: &str, password: Option<&str>) {
    let repo = fixture_repo(name);
    let _ = fs::remove_dir_all(&repo);
    let env = Env::new();
    let src = env.path("src");
    fixture_source(&src);
    let pv = env!("CARGO_BIN_EXE_pvsnap");
    let run = |args: &[&str]| {
        let mut c = Command::new(pv);
        c.arg("--repo").arg(&repo).args(args);
        if let Some(p) = password {
            c.env("PVSNAP_PASSWORD", p);
        }
        assert!(c.status().unwrap().success());
    };
    if password.is_some() {
        run(&["init", "--encryption"]);
    } else {
        run(&["init"]);
    }
    run(&[
        "snapshot",
        src.to_str().unwrap(),
        "--time",
        "2026-11-21T00:00:00Z",
        "--host",
        "fixture",
        "--tag",
        "fixture",
    ]);
    // Empty folders are not kept by git; the backend creates them on demand.
    for d in fs::read_dir(repo.join("data")).unwrap() {
        let d = d.unwrap().path();
        if fs::read_dir(&d).unwrap().next().is_none() {
            fs::remove_dir(&d).unwrap();
        }
    }
}
