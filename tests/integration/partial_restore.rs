//! Partial restore, the first thing people do after a mistake: `--include`,
//! `--exclude` and `--path` at every depth, with globs with and without `/`,
//! into an empty target and into one that already holds an older copy.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::util::{self, Env};

/// A volume three and four folders deep, like a homelab's PostgreSQL,
/// uploads and git volumes side by side.
const FILES: &[(&str, &str)] = &[
    ("top.png", "t"),
    ("pgdata/PG_VERSION", "16\n"),
    ("pgdata/base/1/123", "rows"),
    ("pgdata/base/1/123_fsm", "map"),
    ("uploads/c.png", "c"),
    ("uploads/avatars/a.png", "a"),
    ("uploads/avatars/2024/b.png", "b"),
    ("uploads/avatars/2024/notes.txt", "n"),
    ("git/repo/.git/HEAD", "ref: refs/heads/main\n"),
    ("git/repo/README.md", "# repo"),
];

fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("volume");
    for (rel, content) in FILES {
        let p = src.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    src
}

/// Every regular file below `root`, relative, with its content; none when
/// `root` does not exist.
fn files(root: &Path) -> BTreeSet<(String, String)> {
    if !root.exists() {
        return BTreeSet::new();
    }
    util::files_below(root)
        .into_iter()
        .map(|p| (util::relative(root, &p), fs::read_to_string(&p).unwrap()))
        .collect()
}

/// The files of [`FILES`] whose path satisfies `keep`, re-rooted below `under`.
fn expected(under: &str, keep: &[&str]) -> BTreeSet<(String, String)> {
    FILES
        .iter()
        .filter(|(rel, _)| keep.contains(rel))
        .map(|(rel, c)| {
            let rel = rel
                .strip_prefix(under)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(rel);
            (rel.to_string(), c.to_string())
        })
        .collect()
}

struct Case {
    args: &'static [&'static str],
    /// `--path` folder the expected paths are relative to ("" for the root).
    under: &'static str,
    want: &'static [&'static str],
}

const CASES: &[Case] = &[
    // A glob without `/` matches a name at any depth.
    Case {
        args: &["--include", "*.png"],
        under: "",
        want: &[
            "top.png",
            "uploads/c.png",
            "uploads/avatars/a.png",
            "uploads/avatars/2024/b.png",
        ],
    },
    // A bare file name, two, three and four folders deep.
    Case {
        args: &["--include", "PG_VERSION"],
        under: "",
        want: &["pgdata/PG_VERSION"],
    },
    Case {
        args: &["--include", "b.png"],
        under: "",
        want: &["uploads/avatars/2024/b.png"],
    },
    Case {
        args: &["--include", "HEAD"],
        under: "",
        want: &["git/repo/.git/HEAD"],
    },
    // A glob with `/` is anchored at the snapshot's root.
    Case {
        args: &["--include", "uploads/avatars/*"],
        under: "",
        want: &[
            "uploads/avatars/a.png",
            "uploads/avatars/2024/b.png",
            "uploads/avatars/2024/notes.txt",
        ],
    },
    Case {
        args: &["--include", "/uploads/c.png"],
        under: "",
        want: &["uploads/c.png"],
    },
    Case {
        args: &["--include", "pgdata/**/123"],
        under: "",
        want: &["pgdata/base/1/123"],
    },
    // A folder brings everything below it.
    Case {
        args: &["--include", "uploads/avatars"],
        under: "",
        want: &[
            "uploads/avatars/a.png",
            "uploads/avatars/2024/b.png",
            "uploads/avatars/2024/notes.txt",
        ],
    },
    Case {
        args: &["--include", ".git"],
        under: "",
        want: &["git/repo/.git/HEAD"],
    },
    // Several includes add up; an exclude wins over an include.
    Case {
        args: &["--include", "PG_VERSION", "--include", "README.md"],
        under: "",
        want: &["pgdata/PG_VERSION", "git/repo/README.md"],
    },
    Case {
        args: &["--include", "uploads", "--exclude", "*.png"],
        under: "",
        want: &["uploads/avatars/2024/notes.txt"],
    },
    Case {
        args: &["--exclude", "pgdata", "--exclude", "git"],
        under: "",
        want: &[
            "top.png",
            "uploads/c.png",
            "uploads/avatars/a.png",
            "uploads/avatars/2024/b.png",
            "uploads/avatars/2024/notes.txt",
        ],
    },
    // --path: what lands in the target is relative to the path, and the
    // globs apply below it.
    Case {
        args: &["--path", "uploads", "--include", "*.png"],
        under: "uploads",
        want: &[
            "uploads/c.png",
            "uploads/avatars/a.png",
            "uploads/avatars/2024/b.png",
        ],
    },
    Case {
        args: &["--path", "/uploads/avatars", "--include", "b.png"],
        under: "uploads/avatars",
        want: &["uploads/avatars/2024/b.png"],
    },
    Case {
        args: &["--path", "pgdata/base/1"],
        under: "pgdata/base/1",
        want: &["pgdata/base/1/123", "pgdata/base/1/123_fsm"],
    },
];

#[test]
fn partial_restores_at_every_depth_into_an_empty_and_an_older_target() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    env.snapshot(&src, &[]);
    let mut failures = vec![];
    for (i, case) in CASES.iter().enumerate() {
        let want = expected(case.under, case.want);
        for older in [false, true] {
            let target = env.path(&format!("t{i}-{older}"));
            if older {
                // An older copy: the wanted files changed or gone.
                for (rel, _) in &want {
                    let p = target.join(rel);
                    fs::create_dir_all(p.parent().unwrap()).unwrap();
                    if rel.len() % 2 == 0 {
                        fs::write(&p, "older content").unwrap();
                    }
                }
            }
            let mut args = vec!["restore", "latest", "--target", target.to_str().unwrap()];
            args.extend_from_slice(case.args);
            let out = env.run(&args);
            let got: BTreeSet<_> = files(&target)
                .into_iter()
                .filter(|(_, c)| c != "older content")
                .collect();
            if !out.status.success() || got != want {
                failures.push(format!(
                    "{:?} (older copy: {older}): exit {:?}\n  want {want:?}\n  got  {got:?}\n  {}",
                    case.args,
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            // Nothing of the older copy stays changed.
            assert!(
                !files(&target).iter().any(|(_, c)| c == "older content"),
                "{:?}: an older file was not restored",
                case.args
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
