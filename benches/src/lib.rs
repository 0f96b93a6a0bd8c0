//! Benchmarks of pvsnap. The criterion micro-benchmarks are in `benches/`,
//! the side-by-side comparison with other tools in `compare/`, and
//! `index_memory` measures the in-memory index at ten million chunks.

/// Deterministic bytes that compress about as well as database pages
/// (a quarter random, the rest repeated structure).
pub fn mixed_data(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut i = 0u64;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if i.is_multiple_of(4) {
            out.extend_from_slice(&x.to_le_bytes());
        } else {
            out.extend_from_slice(&(i / 64).to_le_bytes());
        }
        i += 1;
    }
    out.truncate(len);
    out
}
