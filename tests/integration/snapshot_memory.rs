//! A first snapshot's memory does not grow with the blobs it adds (issue
//! #23): the peak RSS of `pvsnap snapshot` of 30k and of 150k files, each
//! its own blob, sampled from `/proc/<pid>/status` (VmHWM) until the child
//! exits. Packs of 1 MiB and an index checkpoint every 4 MiB of packs
//! (about 7,000 blobs) keep what is bounded by design (pack buffers, one
//! checkpoint's blob lists) small, so what the run holds per new blob
//! shows. The bound is on the difference
//! between the two runs, so it holds for debug and release builds.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::restore_memory::vm_hwm;
use crate::util::{self, Env};

/// How much more the 150k-file snapshot may use than the 30k one. Holding
/// each new blob three times cost about 110 bytes a blob more here (13 MiB
/// for 120k blobs, release build). Now a few bytes a blob: 2-4 MiB.
const MAX_GROWTH_KIB: u64 = 8 * 1024;

/// `n` files of 600 bytes of noise each (a 1 MiB pack holds about 1,700),
/// in folders of 1,000: both runs fill many packs, so pack buffers and
/// checkpoints are at their steady state in both.
fn tree(root: &Path, n: usize) {
    for i in 0..n {
        let dir = root.join(format!("d{:04}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(dir.join(format!("f{i:07}")), util::noise(i as u64, 600)).unwrap();
    }
}

/// Snapshots `n` new files into a new repository; returns the peak RSS in
/// KiB and the data blobs the snapshot added.
fn snapshot_peak(n: usize) -> (u64, u64) {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    tree(&src, n);
    let mut child = env
        .cmd()
        .env("PVSNAP_CHECKPOINT_BYTES", (4u64 << 20).to_string())
        .args(["snapshot", src.to_str().unwrap(), "--json", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pvsnap snapshot");
    let mut peak = 0;
    loop {
        if let Some(kib) = vm_hwm(child.id()) {
            peak = peak.max(kib);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "snapshot of {n} files failed: {}",
        util::stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let blobs = v[0]["summary"]["data_blobs_added"].as_u64().unwrap();
    (peak, blobs)
}

#[test]
fn first_snapshot_memory_does_not_grow_with_new_blobs() {
    let (small, small_blobs) = snapshot_peak(30_000);
    let (big, big_blobs) = snapshot_peak(150_000);
    assert_eq!((small_blobs, big_blobs), (30_000, 150_000));
    eprintln!("snapshot peak RSS: 30k new blobs {small} KiB, 150k new blobs {big} KiB");
    assert!(
        big.saturating_sub(small) <= MAX_GROWTH_KIB,
        "a snapshot adding 150k blobs peaked at {big} KiB, one adding 30k at {small} KiB: {} KiB more (bound {MAX_GROWTH_KIB} KiB); snapshot memory grows with the blobs it adds",
        big - small
    );
}
