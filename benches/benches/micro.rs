//! Engine micro-benchmarks: chunker, blake3, zstd per blob, pack writing,
//! index lookup, tree encode/decode. `cargo bench -p pvsnap-benches`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pvsnap_benches::mixed_data;
use pvsnap_engine::repo::crypto::{Crypto, Keys};
use pvsnap_engine::repo::id::{ChunkId, Id, IndexId, PackId, TreeId};
use pvsnap_engine::store::blob::{self, BlobEntry, BlobKind};
use pvsnap_engine::store::index::{Index, IndexFile};
use pvsnap_engine::store::pack::PackBuilder;
use pvsnap_engine::tree::{Extent, Node, NodeKind, Tree};

const MIB: usize = 1 << 20;

fn chunker(c: &mut Criterion) {
    let data = mixed_data(64 * MIB, 1);
    let mut g = c.benchmark_group("chunker");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("fastcdc_1MiB_avg", |b| {
        b.iter(|| {
            fastcdc::v2020::FastCDC::with_level_and_seed(
                &data,
                256 << 10,
                1 << 20,
                4 << 20,
                fastcdc::v2020::Normalization::Level1,
                42,
            )
            .count()
        })
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let data = mixed_data(MIB, 2);
    let keyed = Crypto::Keyed(Box::new(Keys::from_master(&[1; 32])));
    let mut g = c.benchmark_group("content_id");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("blake3_1MiB", |b| b.iter(|| Crypto::None.content_id(&data)));
    g.bench_function("blake3_keyed_1MiB", |b| b.iter(|| keyed.content_id(&data)));
    g.finish();
}

fn compression(c: &mut Criterion) {
    let data = mixed_data(MIB, 3);
    let id = Crypto::None.content_id(&data);
    let mut g = c.benchmark_group("blob_encode");
    g.throughput(Throughput::Bytes(data.len() as u64));
    for level in [1, 3, 6] {
        g.bench_with_input(BenchmarkId::new("zstd", level), &level, |b, &l| {
            b.iter(|| blob::encode(&Crypto::None, l, BlobKind::Data, &id, &data))
        });
    }
    let keyed = Crypto::Keyed(Box::new(Keys::from_master(&[1; 32])));
    g.bench_function("zstd3_sealed", |b| {
        b.iter(|| blob::encode(&keyed, 3, BlobKind::Data, &id, &data))
    });
    let (stored, flags) = blob::encode(&Crypto::None, 3, BlobKind::Data, &id, &data);
    let entry = BlobEntry {
        kind: BlobKind::Data,
        flags,
        id,
        offset: 8,
        stored_len: stored.len() as u32,
        raw_len: data.len() as u32,
    };
    g.bench_function("decode_verify", |b| {
        b.iter(|| blob::decode(&Crypto::None, &PackId::default(), &entry, &stored).unwrap())
    });
    g.finish();
}

fn packs(c: &mut Criterion) {
    let blobs: Vec<Vec<u8>> = (0..16).map(|i| mixed_data(MIB, i)).collect();
    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Bytes(16 * MIB as u64));
    g.sample_size(20);
    g.bench_function("build_16x1MiB", |b| {
        b.iter(|| {
            let mut p = PackBuilder::new(false, 17 * MIB);
            for d in &blobs {
                let e = BlobEntry {
                    kind: BlobKind::Data,
                    flags: 0,
                    id: Id(*blake3::hash(&d[..64]).as_bytes()),
                    offset: 0,
                    stored_len: 0,
                    raw_len: d.len() as u32,
                };
                p.add(e, d);
            }
            p.finish(&Crypto::None).id
        })
    });
    g.finish();
}

fn index_lookup(c: &mut Criterion) {
    let n = 1_000_000u64;
    let entries: Vec<BlobEntry> = (0..n)
        .map(|i| BlobEntry {
            kind: BlobKind::Data,
            flags: 0,
            id: Id(*blake3::hash(&i.to_le_bytes()).as_bytes()),
            offset: 0,
            stored_len: 1,
            raw_len: 1,
        })
        .collect();
    let file = IndexFile {
        supersedes: vec![],
        packs: vec![(PackId::default(), entries)],
    };
    let index = Index::from_files(&[(IndexId::default(), file)]);
    let probe = Id(*blake3::hash(&777u64.to_le_bytes()).as_bytes());
    let miss = Id([0xab; 32]);
    let mut g = c.benchmark_group("index_1M");
    g.bench_function("lookup_hit", |b| b.iter(|| index.get(&probe)));
    g.bench_function("lookup_miss", |b| b.iter(|| index.contains(&miss)));
    g.finish();
}

fn trees(c: &mut Criterion) {
    let nodes: Vec<Node> = (0..1000u64)
        .map(|i| Node {
            name: format!("file-{i:05}.dat").into_bytes(),
            kind: NodeKind::File {
                content: vec![Extent {
                    chunk: Some(ChunkId(Id(*blake3::hash(&i.to_le_bytes()).as_bytes()))),
                    len: 4096 + i,
                }],
            },
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            user: Some("app".into()),
            group: Some("app".into()),
            size: 4096 + i,
            mtime_ns: 1_700_000_000_000_000_000 + i as i64,
            ctime_ns: 1_700_000_000_000_000_000 + i as i64,
            inode: 100_000 + i,
            device: 2049,
            links: 1,
            xattrs: vec![],
        })
        .collect();
    let tree = Tree { nodes };
    let bytes = tree.encode();
    let mut g = c.benchmark_group("tree_1000_entries");
    g.bench_function("encode", |b| b.iter(|| tree.encode()));
    g.bench_function("decode", |b| {
        b.iter(|| Tree::decode(&bytes, &TreeId::default()).unwrap())
    });
    g.finish();
}

criterion_group!(
    benches,
    chunker,
    hashing,
    compression,
    packs,
    index_lookup,
    trees
);
criterion_main!(benches);
