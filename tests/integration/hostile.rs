//! Hostile input at the command line: a restore target that is a symlink
//! or a file, one damaged tree blob, a snapshot whose root tries to leave
//! the target, and an index whose ranges lie. The engine's corpus of crafted
//! repositories is `hostile_tests` in the engine; these drive the binary.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use pvsnap_engine::Repository;
use pvsnap_engine::backend::ObjectKey;
use pvsnap_engine::backend::local::LocalBackend;
use pvsnap_engine::repo::format::ObjectKind;
use pvsnap_engine::repo::id::{Id, SnapshotId};
use pvsnap_engine::tree::NodeKind;

use crate::util::stderr;
use crate::util::{self, Env};

/// The panic exit code of a Rust binary: never acceptable.
const PANIC: i32 = 101;

fn open(env: &Env) -> Repository {
    Repository::open(Arc::new(LocalBackend::new(env.repo())), None).expect("open repository")
}

/// A source of `dirs` folders holding `per` files each.
fn source(env: &Env, dirs: usize, per: usize) -> std::path::PathBuf {
    let src = env.path("src");
    for d in 0..dirs {
        let dir = src.join(format!("d{d:02}"));
        fs::create_dir_all(dir.join("deeper")).unwrap();
        for f in 0..per {
            fs::write(
                dir.join(format!("f{f}")),
                util::noise((d * 100 + f) as u64, 700),
            )
            .unwrap();
        }
        fs::write(dir.join("deeper/x"), format!("deeper {d}")).unwrap();
    }
    fs::write(src.join("top"), b"top file").unwrap();
    src
}

fn tree_of(dir: &Path) -> Vec<String> {
    util::manifest(dir)
}

#[test]
fn a_target_that_is_a_symlink_or_a_file_is_refused_unless_following_is_asked() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"content").unwrap();
    env.snapshot(&src, &[]);
    let real = env.path("real");
    fs::create_dir(&real).unwrap();
    let link = env.path("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();

    let out = env.run(&["restore", "latest", "--target", link.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(PANIC));
    let err = stderr(&out);
    assert!(
        err.contains(link.to_str().unwrap()) && err.contains(real.to_str().unwrap()),
        "names the link and where it points: {err}"
    );
    assert!(err.contains("--follow-target"), "says how to go on: {err}");
    assert!(
        fs::read_dir(&real).unwrap().next().is_none(),
        "nothing restored"
    );

    let out = env.ok(&[
        "restore",
        "latest",
        "--target",
        link.to_str().unwrap(),
        "--follow-target",
    ]);
    assert!(
        stderr(&out).contains("is a symlink"),
        "says it followed: {}",
        stderr(&out)
    );
    assert_eq!(fs::read(real.join("f")).unwrap(), b"content");
    assert!(fs::symlink_metadata(&link).unwrap().is_symlink());

    let plain = env.path("plain-file");
    fs::write(&plain, b"not a folder").unwrap();
    let out = env.run(&["restore", "latest", "--target", plain.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(PANIC));
    assert!(stderr(&out).contains("not a folder"), "{}", stderr(&out));
    assert_eq!(fs::read(&plain).unwrap(), b"not a folder");
}

#[test]
fn one_damaged_tree_blob_costs_only_its_folder() {
    let env = Env::new();
    env.init();
    let src = source(&env, 12, 6);
    env.snapshot(&src, &[]);

    // Flip one byte inside the tree blob of folder d07.
    let repo = open(&env).load_index().unwrap();
    let snap = repo.resolve_snapshot("latest").unwrap();
    let NodeKind::Dir { subtree } = repo.find_node(&snap, "d07").unwrap().kind else {
        panic!("d07 is a folder");
    };
    let loc = repo.index().get(&subtree.0).expect("tree in the index");
    let pack = env
        .repo()
        .join(ObjectKey::new(ObjectKind::Pack, loc.pack.to_hex()).path());
    let mut bytes = fs::read(&pack).unwrap();
    bytes[loc.entry.offset as usize + loc.entry.stored_len as usize / 2] ^= 0x10;
    fs::write(&pack, bytes).unwrap();
    drop(repo);

    let target = env.path("out");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("d07") && err.contains("folder contents lost"),
        "names the lost folder and why: {err}"
    );
    // Every file not under d07 is back, byte for byte.
    let lost = |p: &String| p.starts_with("\"d07/");
    let want: Vec<String> = tree_of(&src).into_iter().filter(|p| !lost(p)).collect();
    let got: Vec<String> = tree_of(&target).into_iter().filter(|p| !lost(p)).collect();
    let files = |v: &[String]| v.iter().filter(|l| l.contains("blake3-ish")).count();
    assert_eq!(got, want);
    assert!(
        files(&got) >= 11 * 7,
        "the other folders' files: {}",
        files(&got)
    );
    assert!(target.join("d07").is_dir());

    // ls names the folder and lists the rest.
    let out = env.run(&["ls", "latest"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("/d07"), "{}", stderr(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("/d08/f5") && listing.contains("/top"),
        "{listing}"
    );
    // check names it too.
    let out = env.run(&["check"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("d07") || stderr(&out).contains("d07"));
}

#[test]
fn a_snapshot_root_that_leads_out_is_refused_at_the_command_line() {
    let env = Env::new();
    env.init();
    let src = source(&env, 2, 2);
    env.snapshot(&src, &[]);
    let sentinel = env.path("sentinel");
    fs::create_dir(&sentinel).unwrap();
    fs::write(sentinel.join("keep"), b"keep").unwrap();
    let before = tree_of(&sentinel);

    let repo = open(&env);
    let good = repo.resolve_snapshot("latest").unwrap();
    let mut crafted = vec![];
    for (name, kind) in [
        (&b"../sentinel"[..], good.root.kind.clone()),
        (b"/tmp", good.root.kind.clone()),
        (
            b"x",
            NodeKind::Symlink {
                target: b"../sentinel".to_vec(),
            },
        ),
    ] {
        let mut s = good.clone();
        s.id = SnapshotId(Id::random());
        s.root.name = name.to_vec();
        s.root.kind = kind;
        repo.save_snapshot(&s).unwrap();
        crafted.push(s.id.to_hex());
    }
    for id in &crafted {
        let target = env.path("target");
        let out = env.run(&["restore", id, "--target", target.to_str().unwrap()]);
        assert!(!out.status.success(), "restore of crafted {id} refused");
        assert_ne!(out.status.code(), Some(PANIC), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&id[..8]),
            "names the snapshot: {}",
            stderr(&out)
        );
        for cmd in [&["ls", id.as_str()][..], &["dump", id, "/top"], &["check"]] {
            let out = env.run(cmd);
            assert_ne!(out.status.code(), Some(PANIC), "{cmd:?}: {}", stderr(&out));
        }
        let _ = fs::remove_dir_all(&target);
    }
    assert_eq!(
        tree_of(&sentinel),
        before,
        "nothing outside the target changed"
    );
}

#[test]
fn an_index_whose_ranges_lie_is_damage_not_a_panic() {
    let env = Env::new();
    env.init();
    let src = source(&env, 3, 4);
    env.snapshot(&src, &[]);
    let repo = open(&env);
    // One index file with every data blob's range made wrong in a
    // different way, in place of the real ones.
    let mut files = repo.read_index_files().unwrap();
    let mut n = 0;
    for (_, f) in &mut files {
        for (_, entries) in &mut f.packs {
            for e in entries
                .iter_mut()
                .filter(|e| e.kind == pvsnap_engine::store::blob::BlobKind::Data)
            {
                match n % 3 {
                    0 => e.stored_len = u32::MAX - e.offset,
                    1 => e.offset = u32::MAX - 2,
                    _ => e.stored_len += 5000,
                }
                n += 1;
            }
        }
    }
    for (id, _) in repo.read_index_files().unwrap() {
        fs::remove_file(
            env.repo()
                .join(ObjectKey::new(ObjectKind::Index, id.to_hex()).path()),
        )
        .unwrap();
    }
    for (_, f) in &files {
        repo.write_index(f).unwrap();
    }
    assert!(n >= 12, "every file's chunk was touched ({n})");

    let target = env.path("out");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("damaged: "), "{}", stderr(&out));
    for cmd in [
        &["dump", "latest", "/d01/f2"][..],
        &["check"],
        &["check", "--read-data"],
        &["ls", "latest"],
    ] {
        let out = env.run(cmd);
        assert_ne!(out.status.code(), Some(PANIC), "{cmd:?}: {}", stderr(&out));
    }
    assert!(!env.run(&["dump", "latest", "/d01/f2"]).status.success());
    assert!(!env.run(&["check"]).status.success());
}
