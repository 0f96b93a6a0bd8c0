//! Progress at a terminal (issue #19, item 7): totals known in advance,
//! counters that reach them, and nothing drawn when standard error is not
//! a terminal.

use std::path::Path;

use crate::util::{Env, in_pty, stderr, write_noise_files};

/// 200 files of 256 KiB: 50.0 MiB.
const FILES: usize = 200;
const SIZE: usize = 256 * 1024;
const TOTAL: &str = "50.0 MiB";

/// The progress lines `label` drew, in order, without escape codes.
fn frames(shown: &str, label: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut chars = shown.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, then a final letter.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(c);
    }
    plain
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| l.starts_with(&format!("{label} ")))
        // Not the command's own output ("snapshot 1a2b3c4d of …").
        .filter(|l| l.contains("] ") || l.contains('…'))
        .map(String::from)
        .collect()
}

/// `12.5 MiB` in bytes.
fn size(text: &str) -> f64 {
    let (n, unit) = text.trim().split_once(' ').expect("a size");
    let n: f64 = n.parse().expect("a number");
    let power = ["B", "KiB", "MiB", "GiB", "TiB"]
        .iter()
        .position(|u| *u == unit)
        .unwrap_or_else(|| panic!("unit of {text:?}"));
    n * 1024f64.powi(power as i32)
}

/// (done, total) of a frame with a bar: `label [===>  ] done / total · …`.
fn amounts(frame: &str) -> Option<(String, String)> {
    let after = frame.split_once("] ")?.1;
    let amounts = after.split(" · ").next()?;
    let amounts = amounts.rsplit_once(": ").map_or(amounts, |x| x.1);
    let (done, total) = amounts.split_once(" / ")?;
    Some((done.to_string(), total.to_string()))
}

fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    for d in 0..4 {
        let dir = src.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        write_noise_files(&dir, d as u64 * 1000, FILES / 4, SIZE);
    }
    src
}

fn in_terminal(env: &Env, args: &[&str]) -> String {
    let mut cmd = env.cmd();
    cmd.args(args).env("NO_COLOR", "1");
    let (status, shown) = in_pty(cmd, &[]);
    assert!(status.success(), "pvsnap {args:?}: {shown}");
    shown
}

#[test]
fn the_snapshot_bar_knows_its_total_before_the_data_is_read() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    // A second name of a file and a hole count as their sizes, in the
    // total and in what is done: 50 MiB + 256 KiB + (14 MiB - 256 KiB).
    std::fs::hard_link(src.join("d0/f00"), src.join("link")).unwrap();
    let sparse = std::fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len((14 << 20) - SIZE as u64).unwrap();
    drop(sparse);
    let shown = in_terminal(&env, &["snapshot", src.to_str().unwrap()]);
    let frames = frames(&shown, "snapshot");
    let (total, files) = ("64.0 MiB", FILES + 2);
    assert!(!frames.is_empty(), "a bar at a terminal: {shown:?}");
    let mut last_done = 0.0;
    let mut with_total = 0;
    for f in &frames {
        assert!(
            !f.contains("ETA 0s"),
            "no ETA of 0s while work remains: {f}"
        );
        match amounts(f) {
            Some((done, seen)) => {
                with_total += 1;
                // The total is the tree's size from the first frame that
                // has one: it never grows along with what is done.
                assert_eq!(seen, total, "{f}\nall frames: {frames:#?}");
                assert!(size(&done) <= size(&seen), "{f}");
                assert!(size(&done) >= last_done, "done never goes back: {f}");
                last_done = size(&done);
            }
            None => assert!(
                f.contains("scanning…") && !f.contains("ETA"),
                "without a total: scanning, no ETA: {f}"
            ),
        }
    }
    assert!(with_total > 0, "{frames:#?}");
    let last = frames.last().unwrap();
    assert!(
        last.contains(&format!("{total} / {total}"))
            && last.contains(&format!("{files}/{files} files")),
        "the last frame shows everything done: {last}"
    );
}

#[test]
fn the_restore_counts_files_and_bytes_up_to_the_plan() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    // A hole is not data to write: the byte total is what is stored.
    let sparse = std::fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    drop(sparse);
    env.snapshot(&src, &[]);
    let target = env.path("target");
    let shown = in_terminal(
        &env,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    let frames = frames(&shown, "restore");
    let last = frames.last().unwrap_or_else(|| panic!("a bar: {shown:?}"));
    let files = FILES + 1;
    assert!(
        last.contains(&format!("{TOTAL} / {TOTAL}"))
            && last.contains(&format!("{files}/{files} files")),
        "the counters end at the plan's totals: {last}\n{frames:#?}"
    );
    for f in &frames {
        match amounts(f) {
            Some((done, total)) => {
                assert_eq!(total, TOTAL, "the plan's total from the start: {f}");
                assert!(size(&done) <= size(&total), "{f}");
            }
            None => assert!(f.contains("planning…") && !f.contains("ETA"), "{f}"),
        }
    }
}

#[test]
fn check_read_data_shows_the_packs_it_reads() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    env.snapshot(&src, &[]);
    let shown = in_terminal(&env, &["check", "--read-data"]);
    let frames = frames(&shown, "check");
    let reading: Vec<&String> = frames
        .iter()
        .filter(|f| f.contains("reading packs: "))
        .collect();
    assert!(!reading.is_empty(), "the data step is shown: {frames:#?}");
    let packs_bytes: u64 = walk_size(&env.repo().join("data"));
    for f in reading {
        let (done, total) = amounts(f).unwrap();
        // Every pack is read: the total is the size of the data folder.
        assert_eq!(total, pvsnap_size(packs_bytes), "{f}");
        assert!(size(&done) <= size(&total), "{f}");
    }
    assert!(
        frames
            .iter()
            .any(|f| f.contains("checking snapshot trees: 1 snapshots / 1 snapshots")),
        "{frames:#?}"
    );
}

#[test]
fn nothing_is_drawn_when_stderr_is_not_a_terminal_or_with_quiet_or_json() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    let src = src.to_str().unwrap();
    let out = env.ok(&["snapshot", src]);
    assert!(
        !stderr(&out).contains('\x1b') && !stderr(&out).contains("ETA"),
        "{}",
        stderr(&out)
    );
    let out = env.ok(&["check", "--read-data"]);
    assert!(
        !stderr(&out).contains('\x1b') && !stderr(&out).contains("packs:"),
        "{}",
        stderr(&out)
    );
    // At a terminal, but --quiet or --json: no bar, and JSON stays JSON.
    let shown = in_terminal(&env, &["--quiet", "snapshot", src]);
    assert!(frames(&shown, "snapshot").is_empty(), "{shown:?}");
    let shown = in_terminal(&env, &["check", "--read-data", "--json"]);
    assert!(frames(&shown, "check").is_empty(), "{shown:?}");
    let json = shown.trim().replace("\r\n", "\n");
    serde_json::from_str::<serde_json::Value>(&json).unwrap_or_else(|e| panic!("{e}: {json:?}"));
    let target = env.path("target");
    let shown = in_terminal(
        &env,
        &[
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(
        frames(&shown, "restore").is_empty() && !shown.contains('\x1b'),
        "{shown:?}"
    );
}

/// The bytes of the files below `dir`.
fn walk_size(dir: &Path) -> u64 {
    crate::util::files_below(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// `n` as pvsnap writes sizes.
fn pvsnap_size(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    let units = ["B", "KiB", "MiB", "GiB"];
    while v >= 1024.0 && unit < 3 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", units[unit])
}

#[test]
fn forget_prune_shows_the_packs_it_deletes() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    env.snapshot(&src, &[]);
    // The second snapshot shares nothing with the first.
    std::fs::remove_dir_all(&src).unwrap();
    write_noise_files(&src, 99_000, 4, SIZE);
    env.snapshot(&src, &[]);
    let shown = in_terminal(
        &env,
        &[
            "forget",
            "--keep-last",
            "1",
            "--prune",
            "--keep-deleted",
            "0",
        ],
    );
    let frames = frames(&shown, "prune");
    let deleting: Vec<&String> = frames
        .iter()
        .filter(|f| f.contains("deleting packs: "))
        .collect();
    let last = deleting.last().unwrap_or_else(|| panic!("{frames:#?}"));
    let (done, total) = amounts(last).unwrap();
    assert_eq!(done, total, "every pack deleted: {last}");
    assert!(total.ends_with(" packs") && total != "0 packs", "{last}");
}

#[test]
fn repair_index_shows_the_trailers_it_reads() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    env.snapshot(&src, &[]);
    let packs = crate::util::files_below(&env.repo().join("data")).len();
    let shown = in_terminal(&env, &["repair", "index"]);
    let frames = frames(&shown, "repair");
    let want = format!("reading pack trailers: {packs} packs / {packs} packs");
    assert!(
        frames.iter().any(|f| f.contains(&want)),
        "{want}: {frames:#?}"
    );
}
