//! Trees of unusual shape: a folder 1,000 levels deep and a folder of
//! 20,000 entries. Every command that walks a snapshot's trees (snapshot,
//! restore, a partial restore of the deepest file, ls, find, diff, check)
//! handles them whole, without running out of stack or path.

use std::path::{Path, PathBuf};

use crate::util::{Env, manifest, stderr, stdout};

const DEPTH: usize = 1000;
const WIDE: usize = 20_000;

/// `src/d/d/…/d/leaf` ([`DEPTH`] folders) and `src/wide/` with [`WIDE`]
/// small files; returns the deepest folder.
fn shapes(src: &Path) -> PathBuf {
    let mut deep = src.to_path_buf();
    for _ in 0..DEPTH {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("leaf"), b"at the bottom\n").unwrap();
    let wide = src.join("wide");
    std::fs::create_dir(&wide).unwrap();
    for i in 0..WIDE {
        std::fs::write(wide.join(format!("f{i:05}")), i.to_string()).unwrap();
    }
    deep
}

#[test]
fn a_thousand_deep_folder_and_a_folder_of_twenty_thousand_files() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    shapes(&src);
    let snap = env.snapshot(&src, &[]);
    assert_eq!(snap["summary"]["total_files"], WIDE as u64 + 1, "{snap}");

    // A whole restore, and one of only the deepest file.
    let out = env.path("out");
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_eq!(manifest(&src), manifest(&out));
    let deep_rel = format!("{}leaf", "d/".repeat(DEPTH));
    let only = env.path("only");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        only.to_str().unwrap(),
        "--include",
        &format!("/{deep_rel}"),
    ]);
    assert_eq!(
        std::fs::read(only.join(&deep_rel)).unwrap(),
        b"at the bottom\n"
    );
    assert!(!only.join("wide").exists(), "only the included file");

    // Listing and finding reach the bottom and every wide entry.
    let ls = stdout(&env.ok(&["ls", "latest"]));
    assert!(
        ls.lines().any(|l| l.ends_with(&format!("/{deep_rel}"))),
        "ls reaches the bottom"
    );
    assert_eq!(ls.lines().filter(|l| l.contains("/wide/f")).count(), WIDE);
    let found = env.ok(&["find", "leaf"]);
    assert!(stdout(&found).contains(&deep_rel), "{}", stderr(&found));

    // A change at the bottom is what diff reports, and check is clean.
    let mut deep = src.clone();
    for _ in 0..DEPTH {
        deep.push("d");
    }
    std::fs::write(deep.join("leaf"), b"changed at the bottom\n").unwrap();
    env.snapshot(&src, &[]);
    let ids: serde_json::Value =
        serde_json::from_slice(&env.ok(&["snapshots", "--json"]).stdout).unwrap();
    let ids: Vec<&str> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let diff = stdout(&env.ok(&["diff", ids[0], ids[1]]));
    assert!(diff.contains(&deep_rel), "{diff}");
    assert_eq!(
        diff.lines().filter(|l| l.contains("/wide/")).count(),
        0,
        "{diff}"
    );
    env.ok(&["check", "--read-data"]);
}
