//! Entry points that feed untrusted bytes to every decoder of on-disk data,
//! shared by the proptest suite (`fuzz_tests.rs`) and the cargo-fuzz targets
//! in `fuzz/`. Each function takes arbitrary bytes and must return; a panic,
//! an abort or an absurd allocation is a bug in the decoder it drives.
//!
//! Inputs of the targets that read sealed objects start with one selector
//! byte: even means an unencrypted repository, odd an encrypted one whose
//! master key is [`MASTER`] (fixed, so that the committed seed corpus opens in
//! any process). The rest is the object's bytes. [`seeds`] gives valid inputs
//! of each target.

use std::sync::{Arc, OnceLock};

use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, DynBackend, ObjectKey};
use crate::repo::crypto::{Crypto, KdfParams, Keys};
use crate::repo::format::{ObjectKind, Reader};
use crate::repo::id::{Id, IndexId, KeyId, PackId, SnapshotId, TreeId};
use crate::repo::lock::LockInfo;
use crate::repo::{InitOptions, Repository};
use crate::store::blob::{self, BlobEntry, BlobKind};
use crate::store::index::{Index, IndexFile};
use crate::store::pack::{self, PackBuilder};
use crate::tree::{Extent, Node, NodeKind, Tree};

/// The master key of the encrypted fuzzing repository.
pub const MASTER: [u8; 32] = [7; 32];
/// Its password.
pub const PASSWORD: &[u8] = b"fuzz";
/// The id every fuzzed snapshot object is stored and loaded under.
pub const SNAPSHOT_ID: [u8; 32] = [0x5a; 32];
/// The object name every fuzzed policy is decoded under.
pub const POLICY_OBJECT: &str = "nightly@0123456789abcdef";
/// Key costs above these are skipped by [`key_slot`]: legitimate but slow,
/// and bounded by the decoder itself (see `crypto::MAX_KDF_*`).
const FUZZ_KDF_BUDGET: KdfParams = KdfParams {
    m_cost: 1024,
    t_cost: 2,
    p_cost: 2,
};

/// A decoder's entry point: any bytes in, no answer out.
pub type Driver = fn(&[u8]);

/// The targets, by name: the cargo-fuzz binaries are called the same.
pub const TARGETS: &[(&str, Driver)] = &[
    ("pack_trailer", pack_trailer),
    ("index_file", index_file),
    ("tree", tree),
    ("blob", blob),
    ("snapshot", snapshot),
    ("config", config),
    ("key_slot", key_slot),
    ("lock", lock),
    ("policy", policy),
];

fn kdf() -> KdfParams {
    KdfParams {
        m_cost: 8,
        t_cost: 1,
        p_cost: 1,
    }
}

/// A repository in memory, plain or encrypted under [`MASTER`]; built once.
fn repo(encrypted: bool) -> &'static Repository {
    static PLAIN: OnceLock<Repository> = OnceLock::new();
    static SEALED: OnceLock<Repository> = OnceLock::new();
    let cell = if encrypted { &SEALED } else { &PLAIN };
    cell.get_or_init(|| {
        let mem: DynBackend = Arc::new(MemoryBackend::new());
        let opts = InitOptions {
            password: encrypted.then(|| PASSWORD.to_vec()),
            kdf: kdf(),
            ..InitOptions::default()
        };
        Repository::init(mem.clone(), opts).expect("init a memory repository");
        if encrypted {
            // Replace the random master key by the fixed one.
            for (name, _) in mem.list(ObjectKind::Key).expect("list keys") {
                mem.delete(&ObjectKey::new(ObjectKind::Key, name))
                    .expect("delete key");
            }
            crate::repo::keys::write_slot(&mem, &MASTER, PASSWORD, kdf()).expect("write key slot");
        }
        let pw = || Ok(PASSWORD.to_vec());
        Repository::open(mem, Some(&pw)).expect("open the memory repository")
    })
}

fn crypto(encrypted: bool) -> Crypto {
    if encrypted {
        Crypto::Keyed(Box::new(Keys::from_master(&MASTER)))
    } else {
        Crypto::None
    }
}

/// Splits the selector byte off.
fn select(data: &[u8]) -> Option<(bool, &[u8])> {
    data.split_first().map(|(s, rest)| (s & 1 == 1, rest))
}

/// A pack's tail: `pack::read_trailer` over a pack holding `data`, and
/// `pack::decode_trailer` over `data` as a trailer's plaintext.
pub fn pack_trailer(data: &[u8]) {
    let Some((encrypted, bytes)) = select(data) else {
        return;
    };
    let _ = pack::decode_trailer(bytes, "fuzz");
    let mem = MemoryBackend::new();
    let id = PackId(Id(*blake3::hash(bytes).as_bytes()));
    let key = ObjectKey::new(ObjectKind::Pack, id.to_hex());
    mem.put(&key, bytes).expect("memory put");
    let _ = pack::read_trailer(&mem, &crypto(encrypted), &id, bytes.len() as u64);
}

/// An index file, then the in-memory index built from it.
pub fn index_file(data: &[u8]) {
    let Some((encrypted, bytes)) = select(data) else {
        return;
    };
    if let Ok(f) = IndexFile::decode(bytes, &crypto(encrypted), "fuzz") {
        let probe = f.packs.first().and_then(|(_, e)| e.first()).map(|e| e.id);
        let idx = Index::from_files(&[(IndexId::default(), f)]);
        if let Some(id) = probe {
            assert!(idx.contains(&id), "a listed blob is found");
        }
    }
}

/// A tree blob's plaintext.
pub fn tree(data: &[u8]) {
    if let Ok(t) = Tree::decode(data, &TreeId::default()) {
        // What decodes re-encodes to the same bytes: one encoding per tree.
        let again = t.encode();
        assert_eq!(Tree::decode(&again, &TreeId::default()).ok(), Some(t));
    }
}

/// A blob's stored bytes: selector, a 46-byte entry, then the stored bytes.
pub fn blob(data: &[u8]) {
    let Some((encrypted, rest)) = select(data) else {
        return;
    };
    if rest.len() < BlobEntry::ENCODED_LEN {
        return;
    }
    let (head, stored) = rest.split_at(BlobEntry::ENCODED_LEN);
    let Ok(entry) = BlobEntry::decode(&mut Reader::new(head, "fuzz entry")) else {
        return;
    };
    let c = crypto(encrypted);
    let pack = PackId::default();
    let whole = blob::decode(&c, &pack, &entry, stored).ok();
    let mut in_place = stored.to_vec();
    let mut out = Vec::new();
    let by_place = blob::decode_in_place(&c, &pack, &entry, &mut in_place, &mut out)
        .ok()
        .map(|content| match content {
            blob::Content::Stored(r) => in_place[r].to_vec(),
            blob::Content::Out(r) => out[r].to_vec(),
        });
    assert_eq!(whole, by_place, "both decoders agree");
}

/// A snapshot object, decoded alone and loaded as the repository loads it.
pub fn snapshot(data: &[u8]) {
    let Some((encrypted, bytes)) = select(data) else {
        return;
    };
    let id = SnapshotId(Id(SNAPSHOT_ID));
    let _ = crate::snapshot::decode_snapshot(bytes, &crypto(encrypted), &id);
    let repo = repo(encrypted);
    let key = ObjectKey::new(ObjectKind::Snapshot, id.to_hex());
    let backend = repo.backend();
    let _ = backend.delete(&key);
    backend.put(&key, bytes).expect("memory put");
    let _ = repo.load_snapshot(&id);
    let _ = repo.snapshots_lenient();
    let _ = backend.delete(&key);
}

/// The config object, decoded alone and opened with the key slot of the
/// encrypted repository.
pub fn config(data: &[u8]) {
    let _ = crate::repo::Config::decode(data, "fuzz");
    let mem: DynBackend = Arc::new(MemoryBackend::new());
    let template = repo(true).backend();
    for (name, _) in template.list(ObjectKind::Key).expect("list keys") {
        let key = ObjectKey::new(ObjectKind::Key, name);
        mem.put(&key, &template.get(&key).expect("key slot"))
            .expect("memory put");
    }
    mem.put(&ObjectKey::config(), data).expect("memory put");
    let pw = || Ok(PASSWORD.to_vec());
    let _ = Repository::open(mem, Some(&pw));
}

/// A key slot of the encrypted repository.
pub fn key_slot(data: &[u8]) {
    if over_budget(data) {
        return;
    }
    let mem: DynBackend = Arc::new(MemoryBackend::new());
    let template = repo(true).backend();
    mem.put(
        &ObjectKey::config(),
        &template.get(&ObjectKey::config()).expect("config"),
    )
    .expect("memory put");
    let id = KeyId(Id([0x4b; 32]));
    mem.put(&ObjectKey::new(ObjectKind::Key, id.to_hex()), data)
        .expect("memory put");
    let pw = || Ok(PASSWORD.to_vec());
    let _ = Repository::open(mem, Some(&pw));
}

/// Whether a key slot asks for more key-derivation work than a fuzzing run
/// can afford per input (the decoder's own bounds are tested elsewhere).
fn over_budget(data: &[u8]) -> bool {
    let Some(json) = data.get(crate::repo::format::HEADER_LEN..) else {
        return false;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return false;
    };
    let p = &v["params"];
    let over = |field: &str, max: u32| p[field].as_u64().is_some_and(|x| x > max as u64);
    over("m_cost", FUZZ_KDF_BUDGET.m_cost)
        || over("t_cost", FUZZ_KDF_BUDGET.t_cost)
        || over("p_cost", FUZZ_KDF_BUDGET.p_cost)
}

/// A lock object, and the judgement of whether it is stale.
pub fn lock(data: &[u8]) {
    if let Ok(l) = LockInfo::decode(data) {
        let _ = l.is_stale(jiff::Timestamp::now(), "fuzz-host");
        let _ = l.describe();
    }
}

/// A retention policy object.
pub fn policy(data: &[u8]) {
    let Some((encrypted, bytes)) = select(data) else {
        return;
    };
    let _ = crate::repo::policy::decode(repo(encrypted), POLICY_OBJECT, bytes);
}

/// Valid inputs of target `name`: a few encoded objects of each form.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    let both = |f: &dyn Fn(bool) -> Vec<u8>| -> Vec<Vec<u8>> {
        [false, true]
            .into_iter()
            .map(|e| {
                let mut v = vec![e as u8];
                v.extend(f(e));
                v
            })
            .collect()
    };
    match name {
        "pack_trailer" => both(&|e| sample_pack(e).bytes),
        "index_file" => both(&|e| {
            let p = sample_pack(e);
            let f = IndexFile {
                supersedes: vec![IndexId(Id([3; 32]))],
                packs: vec![(p.id, p.entries)],
            };
            f.encode(&crypto(e)).1
        }),
        "tree" => vec![sample_tree().encode(), Tree::default().encode()],
        "blob" => both(&|e| {
            let c = crypto(e);
            let raw = b"hello hello hello hello hello hello hello".repeat(20);
            let id = c.content_id(&raw);
            let (stored, flags) = blob::encode(&c, 3, BlobKind::Data, &id, &raw);
            let entry = BlobEntry {
                kind: BlobKind::Data,
                flags,
                id,
                offset: 8,
                stored_len: stored.len() as u32,
                raw_len: raw.len() as u32,
            };
            let mut v = Vec::new();
            entry.encode_into(&mut v);
            v.extend(stored);
            v
        }),
        "snapshot" => both(&|e| repo(e).encode_snapshot(&sample_snapshot())),
        "config" => vec![
            repo(false)
                .backend()
                .get(&ObjectKey::config())
                .expect("config"),
            repo(true)
                .backend()
                .get(&ObjectKey::config())
                .expect("config"),
        ],
        "key_slot" => {
            let b = repo(true).backend();
            b.list(ObjectKind::Key)
                .expect("list keys")
                .into_iter()
                .map(|(n, _)| b.get(&ObjectKey::new(ObjectKind::Key, n)).expect("key"))
                .collect()
        }
        "lock" => vec![
            LockInfo {
                exclusive: true,
                hostname: "node-1".into(),
                pid: 4242,
                operation: "prune".into(),
                time: "2026-11-21T09:25:34Z".parse().expect("time"),
            }
            .encode(),
        ],
        "policy" => both(&|e| {
            let p = crate::repo::policy::NamedPolicy {
                name: "nightly".into(),
                time: "2026-11-21T09:25:34Z".parse().expect("time"),
                group_by: Default::default(),
                keep: crate::maintenance::retention::default_policy(),
                builtin: false,
            };
            encode_policy(repo(e), &p)
        }),
        _ => Vec::new(),
    }
}

/// A policy's bytes under [`POLICY_OBJECT`] (the writer picks a random
/// revision, the decoder checks the name).
fn encode_policy(repo: &Repository, p: &crate::repo::policy::NamedPolicy) -> Vec<u8> {
    let json = serde_json::to_vec(p).expect("policy serializes");
    let mut bytes =
        crate::repo::format::Header::new(ObjectKind::Policy, repo.crypto().is_encrypted())
            .encode()
            .to_vec();
    let aad = format!("pvsnap policy {POLICY_OBJECT}");
    bytes.extend(repo.crypto().seal(aad.as_bytes(), json));
    bytes
}

fn sample_pack(encrypted: bool) -> pack::FinishedPack {
    let c = crypto(encrypted);
    let mut pb = PackBuilder::new(encrypted, 4096);
    for i in 0..3u8 {
        let raw = vec![i; 200 + i as usize];
        let id = c.content_id(&raw);
        let (stored, flags) = blob::encode(&c, 3, BlobKind::Data, &id, &raw);
        pb.add(
            BlobEntry {
                kind: BlobKind::Data,
                flags,
                id,
                offset: 0,
                stored_len: 0,
                raw_len: raw.len() as u32,
            },
            &stored,
        );
    }
    pb.finish(&c)
}

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        user: Some("app".into()),
        group: None,
        size: 5,
        mtime_ns: 1_700_000_000_000_000_000,
        ctime_ns: -1,
        inode: 7,
        device: 2049,
        links: 1,
        xattrs: vec![crate::tree::Xattr {
            name: b"user.k".to_vec(),
            value: b"v".to_vec(),
        }],
    }
}

fn sample_tree() -> Tree {
    let mut t = Tree {
        nodes: vec![
            node(
                b"a.txt",
                NodeKind::File {
                    content: vec![
                        Extent {
                            chunk: Some(crate::repo::id::ChunkId(Id([1; 32]))),
                            len: 5,
                        },
                        Extent {
                            chunk: None,
                            len: 4096,
                        },
                    ],
                },
            ),
            node(
                b"dir",
                NodeKind::Dir {
                    subtree: TreeId(Id([2; 32])),
                },
            ),
            node(
                b"link",
                NodeKind::Symlink {
                    target: b"a.txt".to_vec(),
                },
            ),
            node(b"fifo", NodeKind::Fifo),
            node(b"tty", NodeKind::CharDevice { rdev: 0x0501 }),
        ],
    };
    t.sort();
    t
}

fn sample_snapshot() -> crate::snapshot::Snapshot {
    crate::snapshot::Snapshot {
        id: SnapshotId(Id(SNAPSHOT_ID)),
        time: "2026-11-21T09:25:34Z".parse().expect("time"),
        hostname: "node-1".into(),
        source: crate::snapshot::Source::Path {
            path: "/srv/data".into(),
        },
        tags: vec!["nightly".into()],
        labels: Default::default(),
        parent: None,
        root: node(
            b"data",
            NodeKind::Dir {
                subtree: TreeId(Id([9; 32])),
            },
        ),
        tree: TreeId(Id([9; 32])),
        summary: Default::default(),
        errors: vec![],
        hooks: vec![],
        program_version: "0.1.0".into(),
        original: None,
        source_snapshot: None,
    }
}
