//! A repository written by pvsnap format version 1 is committed under
//! `tests/fixtures/repo-v1`. These tests fail when a change makes that
//! repository unreadable or changes how the same content is chunked and named,
//! which would be a format change needing a new version in FORMAT.md.
//!
//! To write the fixture again (only together with a format version bump):
//! `PVSNAP_WRITE_FIXTURE=1 cargo test -p pvsnap --test integration write_fixture -- --ignored`

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{self, Env};

const FIXTURE_SNAPSHOT: &str = "latest";

fn fixture_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/repo-v1")
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
fn the_committed_v1_repository_still_restores() {
    let env = Env::new();
    copy_dir(&fixture_repo(), &env.repo());
    let ls = env.ok(&["ls", FIXTURE_SNAPSHOT]);
    assert_eq!(String::from_utf8(ls.stdout).unwrap(), EXPECTED_LS);
    let target = env.path("out");
    env.ok(&[
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
    assert_eq!(content(&expected), content(&target));
}

#[test]
fn the_same_content_still_gets_the_same_chunk_ids() {
    let env = Env::new();
    copy_dir(&fixture_repo(), &env.repo());
    let src = env.path("src");
    fixture_source(&src);
    let snap = env.snapshot(&src, &[]);
    assert_eq!(
        snap["summary"]["data_blobs_added"], 0,
        "chunking or content ids changed: {}",
        snap["summary"]
    );
}

#[test]
#[ignore = "writes the committed fixture; run only with a format version bump"]
fn write_fixture() {
    if std::env::var_os("PVSNAP_WRITE_FIXTURE").is_none() {
        return;
    }
    let repo = fixture_repo();
    let _ = fs::remove_dir_all(&repo);
    let env = Env::new();
    let src = env.path("src");
    fixture_source(&src);
    let pv = env!("CARGO_BIN_EXE_pvsnap");
    let run = |args: &[&str]| {
        let st = Command::new(pv)
            .arg("--repo")
            .arg(&repo)
            .args(args)
            .status()
            .unwrap();
        assert!(st.success());
    };
    run(&["init"]);
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
