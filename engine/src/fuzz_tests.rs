//! The decoders of on-disk bytes, driven by proptest through the same entry
//! points as the cargo-fuzz targets (`crate::fuzzing`): arbitrary bytes, and
//! valid encodings with bytes flipped, cut off and inserted. Every input must
//! give `Ok` or `Err`: no panic, and no allocation above [`ALLOC_LIMIT`] (a
//! length field read from disk must not size a buffer by itself).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use crate::fuzzing::{self, TARGETS};

/// Largest single allocation a decoder may make on a small input.
const ALLOC_LIMIT: usize = 64 << 20;

/// Counts, on threads that ask for it, allocations above [`ALLOC_LIMIT`].
struct Watch;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
}
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if size > ALLOC_LIMIT && WATCHING.try_with(Cell::get).unwrap_or(false) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping touches only a const-initialised thread local and an atomic.
unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Watch = Watch;

/// Runs target `name` on `data` and fails if it panicked or allocated absurdly.
fn drive(name: &str, data: &[u8]) -> Result<(), TestCaseError> {
    let f = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .expect("known target");
    WATCHING.with(|w| w.set(true));
    let r = std::panic::catch_unwind(|| f(data));
    WATCHING.with(|w| w.set(false));
    prop_assert!(r.is_ok(), "target {name} panicked on {} bytes", data.len());
    let largest = LARGEST.swap(0, Ordering::Relaxed);
    prop_assert!(
        largest == 0,
        "target {name} allocated {largest} bytes at once on {} bytes of input",
        data.len()
    );
    Ok(())
}

/// One damage to a valid encoding.
#[derive(Debug, Clone)]
enum Damage {
    Flip { at: usize, mask: u8 },
    Cut { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    SetU32 { at: usize, value: u32 },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Damage::Flip { at, mask }),
        any::<usize>().prop_map(|at| Damage::Cut { at }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, bytes)| Damage::Insert { at, bytes }),
        // Length and count fields set to extremes.
        (
            any::<usize>(),
            prop_oneof![Just(u32::MAX), Just(1 << 31), Just(0), any::<u32>()]
        )
            .prop_map(|(at, value)| Damage::SetU32 { at, value }),
    ]
}

/// Applies `damages` to `seed`, keeping the selector byte (the first) of
/// targets that have one, so that both repository kinds are exercised.
fn apply(seed: &[u8], damages: &[Damage], keep_first: bool) -> Vec<u8> {
    let mut v = seed.to_vec();
    let lo = usize::from(keep_first && !v.is_empty());
    for d in damages {
        let span = v.len().saturating_sub(lo);
        if span == 0 {
            break;
        }
        match d {
            Damage::Flip { at, mask } => v[lo + at % span] ^= mask,
            Damage::Cut { at } => v.truncate(lo + at % span),
            Damage::Insert { at, bytes } => {
                let at = lo + at % span;
                v.splice(at..at, bytes.iter().copied());
            }
            Damage::SetU32 { at, value } => {
                if span >= 4 {
                    let at = lo + at % (span - 3);
                    v[at..at + 4].copy_from_slice(&value.to_le_bytes());
                }
            }
        }
    }
    v
}

/// Targets whose input starts with a selector byte.
fn has_selector(name: &str) -> bool {
    !matches!(name, "tree" | "config" | "key_slot" | "lock")
}

fn target_names() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(TARGETS.iter().map(|(n, _)| *n).collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(
        name in target_names(),
        data in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        drive(name, &data)?;
    }

    #[test]
    fn damaged_encodings_never_panic(
        name in target_names(),
        pick in any::<usize>(),
        damages in proptest::collection::vec(damage(), 1..4),
    ) {
        let seeds = fuzzing::seeds(name);
        let seed = &seeds[pick % seeds.len()];
        drive(name, &apply(seed, &damages, has_selector(name)))?;
    }
}

#[test]
fn every_target_has_seeds_that_decode() {
    use crate::backend::ObjectKey;
    for (name, f) in TARGETS {
        let seeds = fuzzing::seeds(name);
        assert!(!seeds.is_empty(), "{name} has no seed");
        for s in &seeds {
            drive(name, s).unwrap();
            f(s);
        }
    }
    // The seeds are valid objects, not only inputs that do not crash: spot
    // checks through the real readers.
    let plain = crate::repo::crypto::Crypto::None;
    let idx = &fuzzing::seeds("index_file")[0];
    crate::store::index::IndexFile::decode(&idx[1..], &plain, "seed").expect("index seed decodes");
    let tree = &fuzzing::seeds("tree")[0];
    crate::tree::Tree::decode(tree, &Default::default()).expect("tree seed decodes");
    let lock = &fuzzing::seeds("lock")[0];
    crate::repo::lock::LockInfo::decode(lock).expect("lock seed decodes");
    for seed in fuzzing::seeds("config") {
        let m: crate::backend::DynBackend =
            std::sync::Arc::new(crate::backend::memory::MemoryBackend::new());
        m.put(&ObjectKey::config(), &seed).unwrap();
        // Plain config opens without keys; the encrypted one needs its slot.
        if !String::from_utf8_lossy(&seed).contains("xchacha") {
            crate::repo::Repository::open(m, None).expect("config seed opens");
        }
    }
}

/// Writes the seed corpus of every cargo-fuzz target when
/// `PVSNAP_FUZZ_CORPUS` names a folder (see `fuzz/README.md`); always checks
/// that the corpus is small enough to commit.
#[test]
fn seed_corpus_is_small() {
    let mut total = 0;
    for (name, _) in TARGETS {
        for s in fuzzing::seeds(name) {
            total += s.len();
        }
    }
    assert!(total < 100 * 1024, "seed corpus of {total} bytes");
    if let Some(dir) = std::env::var_os("PVSNAP_FUZZ_CORPUS") {
        let dir = std::path::PathBuf::from(dir);
        for (name, _) in TARGETS {
            let d = dir.join(name);
            std::fs::create_dir_all(&d).unwrap();
            for (i, s) in fuzzing::seeds(name).iter().enumerate() {
                std::fs::write(d.join(format!("seed-{i}")), s).unwrap();
            }
        }
        eprintln!("wrote the seed corpus to {}", dir.display());
    }
}

#[test]
fn huge_length_fields_allocate_nothing_absurd() {
    use crate::repo::id::Id;
    use crate::store::blob::{BlobEntry, BlobKind};
    // A compressed blob claiming 4 GiB of content.
    let mut data = vec![0u8];
    BlobEntry {
        kind: BlobKind::Data,
        flags: 1,
        id: Id([1; 32]),
        offset: 8,
        stored_len: 16,
        raw_len: u32::MAX,
    }
    .encode_into(&mut data);
    data.extend(zstd::bulk::compress(&[0u8; 64], 3).unwrap());
    drive("blob", &data).unwrap();
    // A key slot asking Argon2 for 4 TiB is refused before any work.
    let slot = crate::repo::crypto::KeySlot {
        kdf: "argon2id".into(),
        params: crate::repo::crypto::KdfParams {
            m_cost: u32::MAX,
            t_cost: u32::MAX,
            p_cost: 1,
        },
        salt: vec![0; 32],
        sealed_master: vec![0; 72],
        created: String::new(),
        hostname: String::new(),
    };
    WATCHING.with(|w| w.set(true));
    let r = slot.open(b"pw");
    WATCHING.with(|w| w.set(false));
    assert!(r.is_err());
    assert!(format!("{}", r.unwrap_err()).contains("key slot"));
    assert_eq!(LARGEST.swap(0, Ordering::Relaxed), 0);
}
