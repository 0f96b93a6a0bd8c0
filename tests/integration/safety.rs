//! Reproductions of the data-safety defects found by hostile testing, kept
//! so that they cannot come back: each drives the binary as a user would.

use std::fs;
use std::path::Path;

use pvsnap_engine::repo::format::{ObjectKind, decode_checked, encode_checked};
use serde_json::Value;

use crate::util::{self, Env};

/// A snapshot that exits 0 after an ordinary `forget --prune` must restore.
/// Before index files had a random part, the second snapshot of `S` wrote an
/// index file byte-identical to one the prune's index superseded, so every
/// reader ignored it and the snapshot was unrestorable.
#[test]
fn a_snapshot_taken_after_forget_and_prune_restores() {
    let env = Env::new();
    let (s, s2) = (env.path("S"), env.path("S2"));
    fs::create_dir_all(&s).unwrap();
    fs::create_dir_all(&s2).unwrap();
    fs::write(s.join("d.bin"), util::noise(1, 3_000_000)).unwrap();
    fs::write(s2.join("e.bin"), util::noise(2, 3_000_000)).unwrap();
    env.init();
    let first = env.snapshot(&s, &[]);
    env.snapshot(&s2, &[]);
    env.ok(&["forget", first["id"].as_str().unwrap(), "--prune"]);
    let again = env.snapshot(&s, &[]);
    let out = env.run(&["check", "--read-data"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "check after forget --prune and a new snapshot: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let target = env.path("restored");
    env.ok(&[
        "restore",
        again["id"].as_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(util::manifest(&target), util::manifest(&s));
}

/// Rewrites the JSON of the (unencrypted) snapshot object `id` with `edit`,
/// and stores it with a valid checksum, as a crafted repository would.
fn craft_snapshot(env: &Env, id: &str, edit: impl FnOnce(&mut Value)) {
    let path = env.repo().join("snapshots").join(id);
    let bytes = fs::read(&path).unwrap();
    let (_, json) = decode_checked(&bytes, ObjectKind::Snapshot, &|| id.into()).unwrap();
    let mut v: Value = serde_json::from_slice(json).unwrap();
    edit(&mut v);
    let json = serde_json::to_vec(&v).unwrap();
    fs::write(&path, encode_checked(ObjectKind::Snapshot, false, &json)).unwrap();
}

fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.txt"), b"alpha").unwrap();
    fs::write(src.join("sub/b.txt"), b"beta").unwrap();
    src
}

/// One flipped byte of a snapshot object (here a digit of the root's mode)
/// is found by `check` and refused by `restore`, in an unencrypted
/// repository too; before, the wrong mode was restored with exit 0.
#[test]
fn a_flipped_byte_in_a_snapshot_object_is_found() {
    let env = Env::new();
    let src = source(&env);
    env.init();
    let id = env.snapshot(&src, &[])["id"].as_str().unwrap().to_string();
    let path = env.repo().join("snapshots").join(&id);
    let mut bytes = fs::read(&path).unwrap();
    let at = find(&bytes, b"\"mode\":").expect("root mode in the JSON") + 7;
    bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
    fs::write(&path, &bytes).unwrap();

    let out = env.run(&["check"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&id[..8]) && text.contains("checksum"),
        "{text}"
    );
    let target = env.path("t");
    let out = env.run(&["restore", &id, "--target", target.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!target.exists() || fs::read_dir(&target).unwrap().next().is_none());
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A crafted snapshot whose root would lead a restore outside its target
/// (a name with `..`, an absolute name, a symlink root, a root folder that
/// is not the snapshot's tree) is refused by every command that loads it,
/// and named by `check`; nothing outside the target is touched.
#[test]
fn crafted_snapshot_roots_are_refused() {
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit); 5] = [
        ("dot-dot name", |v| {
            v["root"]["name"] = serde_json::json!(b"../outside/x".to_vec())
        }),
        ("absolute name", |v| {
            v["root"]["name"] = serde_json::json!(b"/tmp/pvsnap-escape".to_vec())
        }),
        (
            "symlink root",
            |v| v["root"]["kind"] = serde_json::json!({"Symlink": {"target": b"/etc".to_vec()}}),
        ),
        ("file root", |v| {
            v["root"]["kind"] = serde_json::json!({"File": {"content": []}})
        }),
        ("root folder is another tree", |v| {
            v["root"]["kind"]["Dir"]["subtree"] = serde_json::json!("00".repeat(32))
        }),
    ];
    for (what, edit) in cases {
        let env = Env::new();
        let src = source(&env);
        env.init();
        let id = env.snapshot(&src, &[])["id"].as_str().unwrap().to_string();
        craft_snapshot(&env, &id, edit);
        let outside = env.path("outside");
        fs::create_dir_all(outside.join("keep")).unwrap();
        fs::write(outside.join("keep/file"), b"mine").unwrap();
        let before = util::manifest(&outside);
        let target = env.path("target");
        fs::create_dir_all(&target).unwrap();

        let out = env.run(&["restore", &id, "--target", target.to_str().unwrap()]);
        assert_ne!(out.status.code(), Some(0), "{what}: restore accepted it");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{what}: {err}");
        let out = env.run(&["check"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{what}: {text}");
        assert!(
            text.contains(&id[..8]) && text.contains("root"),
            "{what}: {text}"
        );
        let out = env.run(&["ls", &id]);
        assert_ne!(out.status.code(), Some(0), "{what}: ls accepted it");
        assert_eq!(util::manifest(&outside), before, "{what}: outside changed");
        assert!(fs::read_dir(&target).unwrap().next().is_none(), "{what}");
        assert!(!Path::new("/tmp/pvsnap-escape").exists(), "{what}");
    }
}
