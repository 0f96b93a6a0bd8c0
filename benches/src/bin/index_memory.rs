//! Builds an in-memory index of N chunks (default ten million) from synthetic
//! index files and reports its heap bytes per chunk and the process's
//! resident memory. `cargo run --release -p pvsnap-benches --bin index_memory [N]`

use pvsnap_engine::repo::id::{Id, IndexId, PackId};
use pvsnap_engine::store::blob::{BlobEntry, BlobKind};
use pvsnap_engine::store::index::{Index, IndexFile};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let per_pack = 16; // 16 MiB packs of 1 MiB chunks
    let before = rss_kib();
    let mut files = Vec::new();
    let mut made = 0usize;
    let mut file = IndexFile::default();
    while made < n {
        let pack = PackId(Id(*blake3::hash(&made.to_le_bytes()).as_bytes()));
        let entries: Vec<BlobEntry> = (0..per_pack.min(n - made))
            .map(|k| {
                let i = made + k;
                BlobEntry {
                    kind: BlobKind::Data,
                    flags: 1,
                    id: Id(*blake3::hash(&(i as u64).to_be_bytes()).as_bytes()),
                    offset: (k as u32) * 700_000 + 8,
                    stored_len: 700_000,
                    raw_len: 1 << 20,
                }
            })
            .collect();
        made += entries.len();
        file.packs.push((pack, entries));
        if file.packs.len() == 4096 {
            files.push((IndexId(Id::random()), std::mem::take(&mut file)));
        }
    }
    files.push((IndexId(Id::random()), file));
    let started = std::time::Instant::now();
    let index = Index::from_files(&files);
    let build = started.elapsed();
    drop(files);
    let heap = index.heap_bytes();
    let lookups = 1_000_000;
    let started = std::time::Instant::now();
    let mut hits = 0;
    for i in 0..lookups {
        let id = Id(*blake3::hash(&((i * 7919) % n as u64).to_be_bytes()).as_bytes());
        hits += index.get(&id).is_some() as usize;
    }
    let lookup = started.elapsed();
    assert_eq!(hits, lookups as usize);
    println!("chunks:              {}", index.len());
    println!("bytes per entry:     {}", Index::bytes_per_blob());
    println!(
        "index heap bytes:    {} ({:.1} per chunk)",
        heap,
        heap as f64 / index.len() as f64
    );
    println!(
        "process RSS growth:  {} KiB ({:.1} bytes per chunk)",
        rss_kib().saturating_sub(before),
        (rss_kib().saturating_sub(before) * 1024) as f64 / index.len() as f64
    );
    println!("build time:          {:.2} s", build.as_secs_f64());
    println!(
        "lookup:              {:.0} ns each",
        lookup.as_nanos() as f64 / lookups as f64
    );
}
