//! Restore memory does not grow with the number of files (issue #23): the
//! peak RSS of `pvsnap restore` of 10k and of 50k small files, sampled from
//! `/proc/<pid>/status` (VmHWM) until the child exits. The bound is on the
//! difference between the two, so it holds for debug and release builds.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::util::Env;

/// Files per folder, as in the scale harness's trees (`benches/compare`).
const PER_DIR: usize = 1000;

/// How much more the 50k-file restore may use than the 10k one. Holding
/// the plan whole cost about 850 bytes a file: 40k files more, some 32 MiB.
const MAX_GROWTH_KIB: u64 = 8 * 1024;

/// `n` small files in folders of [`PER_DIR`]; their contents repeat (97
/// kinds), so the repository's index stays the same size and only what the
/// restore holds per file can grow.
pub(crate) fn tree(root: &Path, n: usize) {
    for i in 0..n {
        let dir = root.join(format!("d{:04}", i / PER_DIR));
        if i % PER_DIR == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let body = format!("file kind {}\n", i % 97).repeat(1 + i % 97 % 7);
        std::fs::write(dir.join(format!("f{i:07}.txt")), body).unwrap();
    }
}

/// VmHWM of process `pid` in KiB, if it is still there to ask.
pub(crate) fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Snapshots `n` files and restores them into a new folder; returns the
/// restore's peak RSS in KiB.
fn restore_peak(n: usize) -> u64 {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    tree(&src, n);
    env.snapshot(&src, &[]);
    let target = env.path("restored");
    let mut child = env
        .cmd()
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pvsnap restore");
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = vm_hwm(child.id()) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "restore of {n} files failed: {err}");
    let restored = walk_count(&target);
    assert_eq!(restored, n, "restore of {n} files made {restored}");
    peak
}

fn walk_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk_count(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn restore_memory_does_not_grow_with_files() {
    let small = restore_peak(10_000);
    let big = restore_peak(50_000);
    eprintln!("restore peak RSS: 10k files {small} KiB, 50k files {big} KiB");
    assert!(
        big.saturating_sub(small) <= MAX_GROWTH_KIB,
        "restore of 50k files peaked at {big} KiB, 10k at {small} KiB: {} KiB more (bound {MAX_GROWTH_KIB} KiB); restore memory grows with the number of files",
        big - small
    );
}
