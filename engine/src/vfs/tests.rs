use std::os::unix::fs::MetadataExt;
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::backup::BackupOptions;
use crate::repo::id::{ChunkId, Id};
use crate::testutil::{self, half_compressible};
use crate::tree::Extent;

fn chunk(n: u8) -> Option<ChunkId> {
    Some(ChunkId(Id([n; 32])))
}

/// The extent holding `offset` by walking the list: what the binary search must agree with.
fn linear(extents: &[Extent], offset: u64) -> Option<usize> {
    let mut pos = 0;
    for (i, e) in extents.iter().enumerate() {
        if offset < pos + e.len {
            return Some(i);
        }
        pos += e.len;
    }
    None
}

/// Data 0..10, a hole 10..15, an empty extent, data 15..22.
fn sample_extents() -> Vec<Extent> {
    vec![
        Extent {
            chunk: chunk(1),
            len: 10,
        },
        Extent {
            chunk: None,
            len: 5,
        },
        Extent {
            chunk: chunk(2),
            len: 0,
        },
        Extent {
            chunk: chunk(3),
            len: 7,
        },
    ]
}

#[test]
fn extent_search_finds_chunks_holes_and_skips_empty_extents() {
    let map = FileMap::new(sample_extents());
    assert_eq!(map.extent_at(0), Some(0));
    assert_eq!(map.extent_at(9), Some(0));
    assert_eq!(map.extent_at(10), Some(1), "the hole");
    assert_eq!(map.extent_at(14), Some(1));
    assert_eq!(map.extent_at(15), Some(3), "the empty extent is skipped");
    assert_eq!(map.extent_at(21), Some(3));
    assert_eq!(map.extent_at(22), None, "past the content");
    assert_eq!(map.stored_len(), 17);
    assert_eq!(FileMap::new(vec![]).extent_at(0), None);
}

#[test]
fn seek_finds_data_and_holes() {
    // data 0..10, hole 10..15, data 15..22, then zeros past the content up to 30.
    let map = FileMap::new(sample_extents());
    let data = |off| map.seek(off, true, 30);
    let hole = |off| map.seek(off, false, 30);
    assert_eq!(
        (data(0), data(9), data(10), data(14), data(21), data(22)),
        (Some(0), Some(9), Some(15), Some(15), Some(21), None)
    );
    assert_eq!(
        (hole(0), hole(12), hole(15), hole(22), hole(29), hole(30)),
        (Some(10), Some(12), Some(22), Some(22), Some(29), None)
    );
    // Content longer than the recorded size is cut at the size.
    assert_eq!(map.seek(15, true, 12), None);
    assert_eq!(
        map.seek(0, false, 8),
        Some(8),
        "the end of the file is a hole"
    );
}

proptest! {
    #[test]
    fn extent_search_agrees_with_a_linear_scan(lens in proptest::collection::vec((0u64..20, any::<bool>()), 0..30)) {
        let extents: Vec<Extent> = lens.iter().map(|&(len, hole)| Extent { chunk: if hole { None } else { chunk(1) }, len }).collect();
        let map = FileMap::new(extents.clone());
        let total: u64 = lens.iter().map(|l| l.0).sum();
        for off in 0..total + 3 {
            prop_assert_eq!(map.extent_at(off), linear(&extents, off), "offset {}", off);
        }
    }
}

/// A repository in memory with small chunks, so that small files have many.
fn repo() -> IndexedRepository {
    testutil::indexed_repo(1024, 4096, 16384)
}

/// A snapshot of `dir` recorded at `millis` after the epoch.
fn backup(repo: &mut IndexedRepository, dir: &Path, millis: i64) -> Snapshot {
    let opts = BackupOptions {
        time: Some(jiff::Timestamp::from_millisecond(millis).unwrap()),
        ..BackupOptions::default()
    };
    testutil::backup_indexed(repo, dir, &opts)
}

/// A folder holding one file `f` with `content`, and a repository with a
/// snapshot of it recorded at `millis`.
fn one_file(content: &[u8], millis: i64) -> (tempfile::TempDir, IndexedRepository, Snapshot) {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), content).unwrap();
    let mut r = repo();
    let snap = backup(&mut r, src.path(), millis);
    (src, r, snap)
}

fn opts() -> VfsOptions {
    VfsOptions {
        time_zone: TimeZone::UTC,
        refresh_every: Duration::ZERO,
        cache_bytes: 64 * 1024,
        readahead_bytes: 32 * 1024,
        ..VfsOptions::default()
    }
}

fn names(vfs: &Vfs, ino: u64) -> Vec<String> {
    let mut out = Vec::new();
    vfs.readdir(ino, 0, &mut |e| {
        out.push(String::from_utf8_lossy(e.name).into_owned());
        false
    })
    .unwrap();
    out
}

/// Follows `path` from the root by lookups.
fn walk(vfs: &Vfs, path: &str) -> VfsResult<Attr> {
    let mut attr = vfs.getattr(ROOT)?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        attr = vfs.lookup(attr.ino, part.as_bytes())?;
    }
    Ok(attr)
}

fn read_all(vfs: &Vfs, ino: u64, size: u64, step: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut off = 0;
    loop {
        let got = vfs.read(ino, off, step).unwrap();
        if got.is_empty() {
            break;
        }
        out.extend_from_slice(&got);
        off += got.len() as u64;
    }
    assert_eq!(out.len() as u64, size);
    out
}

#[test]
fn a_snapshot_reads_back_at_any_offset_with_its_metadata() {
    let src = tempfile::tempdir().unwrap();
    let big = half_compressible(1, 300_000);
    std::fs::write(src.path().join("big"), &big).unwrap();
    std::fs::create_dir(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("sub/a"), b"hello").unwrap();
    std::fs::hard_link(src.path().join("sub/a"), src.path().join("a-link")).unwrap();
    std::os::unix::fs::symlink("sub/a", src.path().join("sym")).unwrap();
    // A file with a hole in the middle (a hole where the filesystem supports them).
    let sparse = std::fs::File::create(src.path().join("sparse")).unwrap();
    sparse.set_len(200_000).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &big[..5000], 150_000).unwrap();
    drop(sparse);
    let xattrs = xattr::set(src.path().join("big"), "user.note", b"v1").is_ok();

    let mut r = repo();
    let snap = backup(&mut r, src.path(), 1_000_000_000);
    let vfs = Vfs::new(r, opts()).unwrap();

    assert_eq!(
        names(&vfs, ROOT),
        [".", "..", "ids", "snapshots", "sources"]
    );
    let dir_name = format!("1970-01-12T13:46:40_{}", snap.id.short());
    assert_eq!(
        names(&vfs, walk(&vfs, "snapshots").unwrap().ino),
        [".", "..", dir_name.as_str()]
    );
    let root = walk(&vfs, &format!("snapshots/{dir_name}")).unwrap();
    assert_eq!(
        names(&vfs, root.ino),
        [".", "..", "a-link", "big", "sparse", "sub", "sym"]
    );

    let big_attr = vfs.lookup(root.ino, b"big").unwrap();
    let meta = std::fs::metadata(src.path().join("big")).unwrap();
    assert_eq!(
        (big_attr.kind, big_attr.size, big_attr.perm),
        (FileKind::File, big.len() as u64, meta.mode() & 0o7777)
    );
    assert_eq!(
        big_attr.mtime_ns,
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
    );
    assert_eq!(
        read_all(&vfs, big_attr.ino, big_attr.size, 65536),
        big,
        "sequential reads"
    );
    // Random reads, across chunk boundaries and past the end.
    let mut x = 7u64;
    for _ in 0..200 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (x >> 33) % (big.len() as u64 + 100);
        let len = ((x >> 13) % 40_000) as u32;
        let got = vfs.read(big_attr.ino, off, len).unwrap();
        let from = (off as usize).min(big.len());
        let to = (off as usize + len as usize).min(big.len());
        assert_eq!(&got[..], &big[from..to], "read {len} at {off}");
    }

    let sparse_attr = vfs.lookup(root.ino, b"sparse").unwrap();
    let mut want = vec![0u8; 200_000];
    want[150_000..155_000].copy_from_slice(&big[..5000]);
    assert_eq!(
        read_all(&vfs, sparse_attr.ino, 200_000, 30_000),
        want,
        "holes read as zeros"
    );

    let link = vfs.lookup(root.ino, b"a-link").unwrap();
    let sub = vfs.lookup(root.ino, b"sub").unwrap();
    let a = vfs.lookup(sub.ino, b"a").unwrap();
    assert_eq!(link.ino, a.ino, "hardlinks share an inode");
    assert_eq!(a.nlink, 2);
    assert_eq!(&vfs.read(a.ino, 0, 100).unwrap()[..], b"hello");

    let sym = vfs.lookup(root.ino, b"sym").unwrap();
    assert_eq!((sym.kind, sym.size), (FileKind::Symlink, 5));
    assert_eq!(vfs.readlink(sym.ino).unwrap(), b"sub/a");
    assert!(matches!(vfs.readlink(a.ino), Err(VfsError::NotSymlink(_))));
    assert!(matches!(
        vfs.lookup(root.ino, b"nope"),
        Err(VfsError::NotFound)
    ));
    assert!(matches!(vfs.lookup(a.ino, b"x"), Err(VfsError::NotDir(_))));
    assert!(matches!(vfs.read(sub.ino, 0, 1), Err(VfsError::IsDir(_))));

    if xattrs {
        assert_eq!(vfs.listxattr(big_attr.ino).unwrap(), b"user.note\0");
        assert_eq!(vfs.getxattr(big_attr.ino, b"user.note").unwrap(), b"v1");
    }
    assert!(matches!(
        vfs.getxattr(a.ino, b"user.none"),
        Err(VfsError::NoXattr)
    ));
}

#[test]
fn sources_and_ids_lead_to_the_snapshots_and_new_snapshots_appear() {
    let (src, r, first) = one_file(b"one", 100_100);
    let mut writer = r.repository().clone().load_index().unwrap();
    let vfs = Vfs::new(r, opts()).unwrap();

    let source =
        layout::path_source_name(&std::fs::canonicalize(src.path()).unwrap().to_string_lossy());
    let timeline = walk(&vfs, &format!("sources/{source}")).unwrap();
    assert_eq!(
        names(&vfs, timeline.ino),
        [".", "..", "1970-01-01T00:01:40", "latest"]
    );
    let latest = vfs.lookup(timeline.ino, b"latest").unwrap();
    assert_eq!(vfs.readlink(latest.ino).unwrap(), b"1970-01-01T00:01:40");
    let id = walk(&vfs, &format!("ids/{}", first.id.short())).unwrap();
    assert_eq!(
        vfs.readlink(id.ino).unwrap(),
        format!("../snapshots/1970-01-01T00:01:40_{}", first.id.short()).into_bytes()
    );
    let f = walk(&vfs, &format!("sources/{source}/1970-01-01T00:01:40/f")).unwrap();
    assert_eq!(&vfs.read(f.ino, 0, 10).unwrap()[..], b"one");

    // A snapshot taken while mounted, with content the old index does not know.
    std::fs::write(src.path().join("f"), b"two, longer").unwrap();
    // Same second, later: told apart by its id.
    let second = backup(&mut writer, src.path(), 100_900);
    assert_eq!(
        names(&vfs, timeline.ino),
        [
            ".",
            "..",
            "1970-01-01T00:01:40",
            &format!("1970-01-01T00:01:40_{}", second.id.short()),
            "latest"
        ],
        "the second snapshot in the same second is told apart by its id"
    );
    assert_eq!(
        vfs.readlink(latest.ino).unwrap(),
        format!("1970-01-01T00:01:40_{}", second.id.short()).into_bytes()
    );
    let f2 = walk(&vfs, &format!("sources/{source}/latest/f"));
    // `latest` is a symlink: lookups do not follow it.
    assert!(matches!(f2, Err(VfsError::NotDir(_))));
    let f2 = walk(
        &vfs,
        &format!(
            "sources/{source}/1970-01-01T00:01:40_{}/f",
            second.id.short()
        ),
    )
    .unwrap();
    assert_eq!(&vfs.read(f2.ino, 0, 100).unwrap()[..], b"two, longer");
    assert_eq!(vfs.snapshot_count(), 2);
}

#[test]
fn one_snapshot_at_the_root() {
    let (_src, r, snap) = one_file(b"x", 100_000);
    let vfs = Vfs::new(
        r,
        VfsOptions {
            snapshot: Some(snap),
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(names(&vfs, ROOT), [".", "..", "f"]);
    assert!(vfs.getattr(ROOT).unwrap().stable);
    // Listing from an offset continues after the entries already taken.
    let mut rest = Vec::new();
    vfs.readdir(ROOT, 2, &mut |e| {
        rest.push(e.name.to_vec());
        false
    })
    .unwrap();
    assert_eq!(rest, [b"f".to_vec()]);
}

/// A folder of `n` files `f0000`…, two of them hardlinked (`l1`, `l2`).
fn many_files(n: usize) -> (tempfile::TempDir, IndexedRepository, Snapshot) {
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("d")).unwrap();
    for i in 0..n {
        std::fs::write(src.path().join(format!("d/f{i:04}")), format!("file {i}")).unwrap();
    }
    std::fs::write(src.path().join("l1"), b"linked").unwrap();
    std::fs::hard_link(src.path().join("l1"), src.path().join("l2")).unwrap();
    let mut r = repo();
    let snap = backup(&mut r, src.path(), 1_000);
    (src, r, snap)
}

#[test]
fn forgotten_inodes_are_dropped_and_a_forgotten_folder_numbers_its_entries_anew() {
    let (_src, r, snap) = many_files(3);
    let vfs = Vfs::new(
        r,
        VfsOptions {
            snapshot: Some(snap),
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(vfs.inode_count(), 1);
    let d = vfs.lookup(ROOT, b"d").unwrap();
    let f = vfs.lookup(d.ino, b"f0001").unwrap();
    assert_eq!(vfs.lookup(d.ino, b"f0001").unwrap().ino, f.ino);
    assert_eq!(vfs.inode_count(), 3);
    vfs.forget(f.ino, 1);
    assert_eq!(vfs.inode_count(), 3, "one reference is left");
    vfs.forget(f.ino, 1);
    assert_eq!(vfs.inode_count(), 2, "the root and d");
    let again = vfs.lookup(d.ino, b"f0001").unwrap();
    assert_eq!(again.ino, f.ino, "an entry's number is where it is");
    assert_eq!(&vfs.read(again.ino, 0, 100).unwrap()[..], b"file 1");
    vfs.forget(again.ino, 1);
    vfs.forget(d.ino, 1);
    assert!(matches!(vfs.getattr(f.ino), Err(VfsError::UnknownInode(_))));
    // A folder looked up again numbers its entries anew: the kernel may
    // still know the old numbers, which must never name another entry.
    let d2 = vfs.lookup(ROOT, b"d").unwrap();
    let f2 = vfs.lookup(d2.ino, b"f0001").unwrap();
    assert!(f2.ino > f.ino, "old numbers are never given out again");
    assert_eq!(&vfs.read(f2.ino, 0, 100).unwrap()[..], b"file 1");
    vfs.forget(f2.ino, 1);
    vfs.forget(d2.ino, 1);
    vfs.forget(ROOT, 5);
    vfs.forget(12345, 1);
    assert_eq!(vfs.inode_count(), 1, "only the root is left, and it stays");
    assert!(vfs.getattr(ROOT).is_ok());

    // Hardlinks: one inode under two names, dropped with both names.
    let l1 = vfs.lookup(ROOT, b"l1").unwrap();
    let l2 = vfs.lookup(ROOT, b"l2").unwrap();
    assert_eq!(l1.ino, l2.ino);
    vfs.forget(l1.ino, 2);
    assert_eq!(vfs.inode_count(), 1);
    let l2b = vfs.lookup(ROOT, b"l2").unwrap();
    let l1b = vfs.lookup(ROOT, b"l1").unwrap();
    assert_eq!(l1b.ino, l2b.ino);
    assert_ne!(l1b.ino, l1.ino);
}

#[test]
fn a_listing_with_attributes_counts_only_the_entries_taken() {
    let (_src, r, snap) = many_files(10);
    let vfs = Vfs::new(
        r,
        VfsOptions {
            snapshot: Some(snap),
            ..opts()
        },
    )
    .unwrap();
    let d = vfs.lookup(ROOT, b"d").unwrap();
    let mut taken = vec![];
    // `.`, `..`, then the buffer is full at the fifth file.
    vfs.readdir_plus(d.ino, 0, &mut |e| {
        if e.name.starts_with(b"f") && taken.len() == 4 {
            return true;
        }
        if e.name.starts_with(b"f") {
            taken.push(e.attr.ino);
        }
        false
    })
    .unwrap();
    assert_eq!(taken.len(), 4);
    for ino in &taken {
        vfs.forget(*ino, 1);
    }
    vfs.forget(d.ino, 1);
    assert_eq!(
        vfs.inode_count(),
        1,
        "the entry that did not fit was never counted"
    );
}

#[test]
fn inodes_of_plain_listings_are_swept_so_the_table_stays_bounded() {
    let (_src, r, snap) = many_files(1000);
    let vfs = Vfs::new(
        r,
        VfsOptions {
            snapshot: Some(snap),
            idle_inodes: 100,
            ..opts()
        },
    )
    .unwrap();
    let d = vfs.lookup(ROOT, b"d").unwrap();
    let held = vfs.lookup(d.ino, b"f0500").unwrap();
    let mut seen = 0;
    let mut most = 0;
    vfs.readdir(d.ino, 0, &mut |_| {
        seen += 1;
        most = most.max(vfs.inode_count());
        false
    })
    .unwrap();
    assert_eq!(seen, 1002);
    assert!(most <= 2 * 100 + 3, "the table grew to {most}");
    // What the kernel holds is never swept.
    assert_eq!(vfs.getattr(held.ino).unwrap().ino, held.ino);
    assert_eq!(vfs.getattr(d.ino).unwrap().ino, d.ino);
}

/// After a walk through thousands of files the kernel forgets them: the
/// table gives back its room (and the process its freed memory), instead
/// of staying at the size of the largest walk.
#[test]
fn a_table_the_kernel_emptied_gives_back_its_room() {
    let (_src, r, snap) = many_files(6000);
    let vfs = Vfs::new(
        r,
        VfsOptions {
            snapshot: Some(snap),
            ..opts()
        },
    )
    .unwrap();
    let d = vfs.lookup(ROOT, b"d").unwrap();
    let inos: Vec<u64> = (0..6000)
        .map(|i| {
            vfs.lookup(d.ino, format!("f{i:04}").as_bytes())
                .unwrap()
                .ino
        })
        .collect();
    assert!(vfs.inode_capacity() >= 6000);
    for ino in inos {
        vfs.forget(ino, 1);
    }
    assert_eq!(vfs.inode_count(), 2, "the root and d");
    assert!(
        vfs.inode_capacity() < 1500,
        "room for {} inodes kept after they were forgotten",
        vfs.inode_capacity()
    );
    // Still usable: a new walk finds the files again.
    assert!(vfs.lookup(d.ino, b"f0042").is_ok());
}

/// A filesystem of `snap` alone, at the root.
fn at_root(r: IndexedRepository, snap: Snapshot, opts: VfsOptions) -> Vfs {
    let opts = VfsOptions {
        snapshot: Some(snap),
        ..opts
    };
    Vfs::new(r, opts).unwrap()
}

/// An inode is a reference to its entry, never the entry: three 1M-file
/// snapshots held by the kernel must fit in 256 MiB (issue #23).
#[test]
fn an_inode_is_a_reference_not_the_node() {
    // All the table keeps per held file: its number and the kernel's count.
    let per_inode = std::mem::size_of::<(u64, Held)>();
    assert!(
        per_inode <= 16,
        "a held inode takes {per_inode} bytes; its entry belongs in the tree cache"
    );
    // A folder's range: once per folder, not per entry.
    assert!(std::mem::size_of::<Range>() <= 64);
}

/// Attributes, content, links and extended attributes come from the tree
/// cache; after it was emptied they are read again and are the same.
#[test]
fn answers_after_the_caches_were_emptied_are_the_same() {
    let src = tempfile::tempdir().unwrap();
    let big = half_compressible(3, 100_000);
    std::fs::create_dir_all(src.path().join("a/b")).unwrap();
    std::fs::write(src.path().join("a/b/big"), &big).unwrap();
    std::fs::write(src.path().join("a/small"), b"small").unwrap();
    std::fs::hard_link(src.path().join("a/small"), src.path().join("small-link")).unwrap();
    std::os::unix::fs::symlink("a/b/big", src.path().join("sym")).unwrap();
    let xattrs = xattr::set(src.path().join("a/b/big"), "user.k", b"v").is_ok();
    let mut r = repo();
    let snap = backup(&mut r, src.path(), 5_000);
    let vfs = at_root(r, snap, opts());
    let a = walk(&vfs, "a").unwrap();
    let b = walk(&vfs, "a/b").unwrap();
    let f = walk(&vfs, "a/b/big").unwrap();
    let small = walk(&vfs, "a/small").unwrap();
    let link = walk(&vfs, "small-link").unwrap();
    let sym = walk(&vfs, "sym").unwrap();
    assert_eq!(small.ino, link.ino, "hardlinks share an inode");
    let before = [a, b, f, small, sym];
    let listed = names(&vfs, b.ino);
    vfs.drop_caches();
    let read_before = vfs.trees_read();
    for attr in before {
        assert_eq!(vfs.getattr(attr.ino).unwrap(), attr, "getattr after a miss");
        vfs.drop_caches();
    }
    assert!(
        vfs.trees_read() > read_before,
        "attributes came from trees read again"
    );
    assert_eq!(read_all(&vfs, f.ino, big.len() as u64, 7000), big);
    vfs.drop_caches();
    assert_eq!(&vfs.read(f.ino, 99_990, 100).unwrap()[..], &big[99_990..]);
    assert_eq!(vfs.seek(f.ino, 0, false).unwrap(), 100_000);
    vfs.drop_caches();
    assert_eq!(vfs.readlink(sym.ino).unwrap(), b"a/b/big");
    vfs.drop_caches();
    assert_eq!(names(&vfs, b.ino), listed);
    if xattrs {
        vfs.drop_caches();
        assert_eq!(vfs.getxattr(f.ino, b"user.k").unwrap(), b"v");
    }
    // The hardlink's first name goes (its folder forgotten): the file is
    // still what the kernel holds under its other name.
    vfs.forget(small.ino, 1);
    vfs.forget(a.ino, 100);
    assert!(
        vfs.getattr(b.ino).is_err(),
        "the numbers in a forgotten folder are stale"
    );
    vfs.drop_caches();
    assert_eq!(vfs.getattr(link.ino).unwrap(), small);
    assert_eq!(&vfs.read(link.ino, 0, 100).unwrap()[..], b"small");
}

/// A folder larger than the tree cache, listed in many calls while open,
/// is decoded once; a lookup in it finds its entry by binary search.
#[test]
fn an_open_folder_is_decoded_once_however_many_calls_list_it() {
    let (_src, r, snap) = many_files(3000);
    let tiny_cache = VfsOptions {
        tree_cache_bytes: 1,
        ..opts()
    };
    let vfs = at_root(r, snap, tiny_cache);
    let d = walk(&vfs, "d").unwrap();
    let fh = vfs.opendir(d.ino).unwrap();
    // Its own attributes come from the root folder's tree, read again now.
    vfs.getattr(d.ino).unwrap();
    let start = vfs.trees_read();
    let mut offset = 0;
    let mut seen = vec![];
    loop {
        let mut batch = 0;
        vfs.readdir_plus(d.ino, offset, &mut |e| {
            if batch == 100 {
                return true;
            }
            batch += 1;
            offset = e.next_offset;
            seen.push(e.name.to_vec());
            false
        })
        .unwrap();
        if batch == 0 {
            break;
        }
    }
    assert_eq!(seen.len(), 3002);
    assert_eq!(seen[2], b"f0000");
    assert_eq!(
        vfs.trees_read(),
        start,
        "the open folder's tree was not decoded again"
    );
    assert_eq!(
        vfs.lookup(d.ino, b"f2999").unwrap().size,
        "file 2999".len() as u64
    );
    assert_eq!(vfs.trees_read(), start);
    vfs.releasedir(fh);
    vfs.releasedir(fh);
    vfs.releasedir(999);
    vfs.drop_caches();
    assert_eq!(vfs.lookup(d.ino, b"f1234").unwrap().size, 9);
    assert_eq!(
        vfs.trees_read(),
        start + 2,
        "closed: read again when needed (the root's tree to find `d`, then d's)"
    );
    assert!(matches!(
        vfs.opendir(vfs.lookup(ROOT, b"l1").unwrap().ino),
        Err(VfsError::NotDir(_))
    ));
}

/// What FORMAT.md says of a tree blob's size: about 90 bytes of plaintext
/// per small file, and the mount keeps little more.
#[test]
fn a_tree_blob_takes_under_150_bytes_an_entry() {
    let (_src, r, snap) = many_files(2000);
    let root = r.read_tree(&snap.tree).unwrap();
    let NodeKind::Dir { subtree } = &root.find(b"d").unwrap().kind else {
        panic!("d is a folder")
    };
    let tree = r.read_tree(subtree).unwrap();
    let n = tree.nodes.len();
    let plain = tree.encode().len() / n;
    let packed = PackedTree::new(tree.encode(), subtree).unwrap().weight() / n;
    eprintln!("tree blob: {plain} bytes an entry encoded, {packed} as the mount keeps it");
    assert!(plain < 150, "{plain} bytes an entry");
    assert!(packed < plain + 16, "{packed} bytes an entry kept");
}

/// Four threads look up, list with attributes and forget in the same
/// folders at once, the tree cache too small to hold them: every answer is
/// right, and once each gave back what it took, only the root is held.
#[test]
fn concurrent_lookups_listings_and_forgets_leave_nothing_behind() {
    let (_src, r, snap) = many_files(300);
    let tiny_cache = VfsOptions {
        tree_cache_bytes: 1,
        idle_inodes: 50,
        ..opts()
    };
    let vfs = at_root(r, snap, tiny_cache);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let vfs = &vfs;
            s.spawn(move || {
                for round in 0..20u64 {
                    let d = vfs.lookup(ROOT, b"d").unwrap();
                    let mut taken = vec![];
                    vfs.readdir_plus(d.ino, 0, &mut |e| {
                        if e.name.starts_with(b"f") {
                            taken.push((e.attr.ino, e.name.to_vec()));
                        }
                        false
                    })
                    .unwrap();
                    assert_eq!(taken.len(), 300);
                    let i = ((t * 31 + round * 7) % 300) as usize;
                    let (ino, name) = &taken[i];
                    let want = format!("file {}", i);
                    assert_eq!(name, format!("f{i:04}").as_bytes());
                    assert_eq!(&vfs.read(*ino, 0, 100).unwrap()[..], want.as_bytes());
                    let l = vfs.lookup(ROOT, b"l2").unwrap();
                    assert_eq!(&vfs.read(l.ino, 0, 100).unwrap()[..], b"linked");
                    vfs.forget(l.ino, 1);
                    for (ino, _) in taken {
                        vfs.forget(ino, 1);
                    }
                    vfs.forget(d.ino, 1);
                }
            });
        }
    });
    assert_eq!(vfs.inode_count(), 1, "only the root is left");
    assert_eq!(walk(&vfs, "d/f0007").unwrap().size, 6);
}
