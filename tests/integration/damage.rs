//! Damage must not stop everything: a truncated snapshot object, a damaged
//! index file in an encrypted repository and a truncated pack, each followed
//! by the commands a user runs next.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::util::{self, Env};
use crate::util::{code, stderr, stdout};

/// `n` files of `size` bytes in `dir`, their content chosen by `seed`.
fn write_files(dir: &Path, seed: u64, n: usize, size: usize) {
    util::write_noise_files(dir, seed * 100, n, size);
}

fn same_tree(a: &Path, b: &Path) {
    let names = |d: &Path| -> Vec<PathBuf> {
        util::files_below(d)
            .into_iter()
            .map(|p| p.strip_prefix(d).unwrap().to_path_buf())
            .collect()
    };
    assert_eq!(names(a), names(b));
    for rel in names(a) {
        assert!(
            std::fs::read(a.join(&rel)).unwrap() == std::fs::read(b.join(&rel)).unwrap(),
            "{} differs",
            rel.display()
        );
    }
}

#[test]
fn an_unreadable_snapshot_object_is_skipped_named_and_removable() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write_files(&src, 1, 3, 50_000);
    let first = env.snapshot(&src, &[]);
    std::fs::write(src.join("more"), util::noise(9, 20_000)).unwrap();
    let second = env.snapshot(&src, &[]);
    let id = second["id"].as_str().unwrap().to_string();
    let obj = env.repo().join("snapshots").join(&id);
    let f = std::fs::File::options().write(true).open(&obj).unwrap();
    f.set_len(400.min(f.metadata().unwrap().len() / 2)).unwrap();
    drop(f);

    // snapshot: a warning naming it and the way out; its parent is the first.
    let out = code(&env, &["snapshot", src.to_str().unwrap(), "--json"], 0);
    let err = stderr(&out);
    assert!(
        err.contains(&id) && err.contains(&format!("pvsnap forget {id}")),
        "{err}"
    );
    let third: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(third[0]["parent"], first["id"], "{third}");

    // check names it with the command that removes it.
    let out = code(&env, &["check"], 4);
    assert!(
        stdout(&out).contains(&format!("pvsnap forget {id}")),
        "{}",
        stdout(&out)
    );

    // prune refuses and says why and what to do.
    let out = code(&env, &["prune", "--grace", "0"], 1);
    assert!(
        stderr(&out).contains(&format!("pvsnap forget {id}")),
        "{}",
        stderr(&out)
    );
    // repair snapshots and a policy run, and leave it alone.
    code(&env, &["repair", "snapshots"], 0);
    let out = code(&env, &["forget", "--keep-last", "5"], 0);
    assert!(stdout(&out).contains(&id[..8]), "{}", stdout(&out));
    assert!(obj.exists());

    // forget by a prefix of its name removes it; then everything runs.
    code(&env, &["forget", &id[..12]], 0);
    assert!(!obj.exists());
    code(&env, &["prune", "--grace", "0"], 0);
    code(&env, &["check", "--read-data"], 0);
    let target = env.path("restored");
    code(
        &env,
        &["restore", "latest", "--target", target.to_str().unwrap()],
        0,
    );
    same_tree(&src, &target);
}

#[test]
fn a_damaged_index_file_of_an_encrypted_repository_blocks_only_what_it_describes() {
    let env = Env::new();
    let pwf = env.path("pw");
    std::fs::write(&pwf, "secret\n").unwrap();
    let run = |args: &[&str], want: i32| {
        let mut full = vec!["--password-file", pwf.to_str().unwrap()];
        full.extend_from_slice(args);
        code(&env, &full, want)
    };
    run(&["init", "--encryption"], 0);
    let (a, b) = (env.path("a"), env.path("b"));
    write_files(&a, 2, 4, 40_000);
    write_files(&b, 3, 4, 40_000);
    run(&["snapshot", a.to_str().unwrap()], 0);
    let before: BTreeSet<PathBuf> = util::files_below(&env.repo().join("index"))
        .into_iter()
        .collect();
    run(&["snapshot", b.to_str().unwrap()], 0);
    let victims: Vec<PathBuf> = util::files_below(&env.repo().join("index"))
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(victims.len(), 1);
    let name = victims[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut bytes = std::fs::read(&victims[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&victims[0], bytes).unwrap();

    // Restoring the other source works, with a warning naming the file.
    let ta = env.path("ta");
    let spec = format!("latest:{}", a.display());
    let out = run(&["restore", &spec, "--target", ta.to_str().unwrap()], 0);
    assert!(
        stderr(&out).contains(&name) && stderr(&out).contains("pvsnap repair index"),
        "{}",
        stderr(&out)
    );
    same_tree(&a, &ta);
    // So do ls and dump.
    let out = run(&["ls", &spec], 0);
    assert!(stdout(&out).contains("f03"), "{}", stdout(&out));
    let out = run(&["dump", &spec, "f01"], 0);
    assert!(out.stdout == std::fs::read(a.join("f01")).unwrap());

    let out = run(&["check"], 4);
    assert!(stdout(&out).contains(&name), "{}", stdout(&out));
    let out = run(&["prune", "--grace", "0"], 1);
    assert!(
        stderr(&out).contains(&name) && stderr(&out).contains("pvsnap repair index"),
        "{}",
        stderr(&out)
    );

    // A snapshot taken now stores again what it cannot find, and is whole.
    run(&["snapshot", b.to_str().unwrap()], 0);
    let tb = env.path("tb");
    let spec = format!("latest:{}", b.display());
    run(&["restore", &spec, "--target", tb.to_str().unwrap()], 0);
    same_tree(&b, &tb);

    run(&["repair", "index"], 0);
    run(&["check", "--read-data"], 0);
}

/// The whole sequence of a truncated pack: check names it, restore writes
/// the intact files and names the rest, repair index keeps what is whole,
/// the next snapshot is whole, and check is clean once the damaged snapshot
/// is repaired and forgotten.
#[test]
fn a_truncated_pack_is_named_salvaged_and_stored_again() {
    let env = Env::new();
    env.ok(&["init", "--chunker", "256,512,1024"]);
    let src = env.path("src");
    // Each file is one chunk: 16 files in one data pack.
    write_files(&src, 4, 16, 200_000);
    let first = env.snapshot(&src, &[]);
    let first_id = first["id"].as_str().unwrap().to_string();
    let pack = util::files_below(&env.repo().join("data"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let size = std::fs::metadata(&pack).unwrap().len();
    assert!(size > 16 * 190_000, "one pack holds the data");
    let pack_name = pack.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::File::options()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(size / 2)
        .unwrap();

    let out = code(&env, &["check"], 4);
    assert!(stdout(&out).contains(&pack_name), "{}", stdout(&out));

    // Restore: intact files written, the others named, exit 4.
    let t1 = env.path("t1");
    let out = code(
        &env,
        &["restore", &first_id, "--target", t1.to_str().unwrap()],
        4,
    );
    let damaged: BTreeSet<String> = stderr(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("pvsnap: damaged: "))
        .map(|l| {
            let path = l.split(": ").next().unwrap();
            Path::new(path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(
        (5..=11).contains(&damaged.len()),
        "about half the files are lost: {damaged:?}"
    );
    let mut intact = 0;
    for f in util::files_below(&src) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if !damaged.contains(&name) {
            let got = std::fs::read(t1.join(&name)).unwrap();
            assert!(got == std::fs::read(&f).unwrap(), "{name} not intact");
            intact += 1;
        }
    }
    assert!(intact >= 5, "the first half of the pack is restored");

    code(&env, &["repair", "index"], 0);
    // One lost file is gone from the source meanwhile; the rest is stored again.
    let gone = damaged.iter().next().unwrap().clone();
    std::fs::remove_file(src.join(&gone)).unwrap();
    let second = env.snapshot(&src, &[]);
    let t2 = env.path("t2");
    code(
        &env,
        &[
            "restore",
            second["id"].as_str().unwrap(),
            "--target",
            t2.to_str().unwrap(),
        ],
        0,
    );
    same_tree(&src, &t2);

    // Only the gone file is still damaged; repair and forget the original.
    let out = code(&env, &["check", "--read-data"], 4);
    let text = stdout(&out);
    assert!(text.contains(&gone) && text.contains(&first_id), "{text}");
    code(&env, &["repair", "snapshots"], 0);
    code(&env, &["forget", &first_id], 0);
    code(&env, &["check", "--read-data"], 0);
    // The forgotten snapshot leaves the trash at once.
    code(&env, &["prune", "--grace", "0", "--keep-deleted", "0"], 0);
    assert!(!pack.exists(), "prune removed the damaged pack");
    let out = code(&env, &["check", "--read-data"], 0);
    assert!(!stdout(&out).contains("warning"), "{}", stdout(&out));
}

/// What killed runs leave: temporary files that check reports and prune
/// removes once older than the grace period (all of them with `--grace 0`).
#[test]
fn leftovers_of_killed_runs_are_reported_by_check_and_removed_by_prune() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write_files(&src, 5, 2, 30_000);
    env.snapshot(&src, &[]);
    let old = env.repo().join("data/5e/.tmp-1a2b3c4d");
    let young = env.repo().join("index/.tmp-5e6f7a8b");
    std::fs::write(&old, vec![1u8; 300_000]).unwrap();
    std::fs::write(&young, vec![2u8; 1_000]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86400))
        .unwrap();

    let out = code(&env, &["check"], 0);
    let text = stdout(&out);
    assert!(
        text.contains("2 temporary file(s), 301000 bytes")
            && text.contains("pvsnap prune --grace 0"),
        "{text}"
    );
    let out = code(&env, &["prune", "--json"], 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["leftovers_removed"], 1, "{r}");
    assert_eq!(r["leftovers_kept"], 1, "{r}");
    assert!(!old.exists() && young.exists());
    code(&env, &["prune", "--grace", "0"], 0);
    assert!(!young.exists());
    let out = code(&env, &["check"], 0);
    assert!(!stdout(&out).contains("temporary"), "{}", stdout(&out));
}
