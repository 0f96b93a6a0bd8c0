//! Which piece of restore work each worker takes next.
//!
//! The data phase is cut into [`Unit`]s: a run of blobs that sit next to each
//! other in one pack (read with one range request) and that decode to at most
//! [`UNIT_BYTES`] of file content. Units are ordered by the first file
//! position they fill, so each big file is written front to back.
//!
//! Writes into one file are serialized by the kernel (the inode lock of a
//! buffered write), while writes into two different files proceed side by
//! side. So a worker picking its next unit prefers, among the next
//! [`WINDOW`] units in order, the first one whose files no other worker is
//! writing; only when there is none does it take the next unit in order. With
//! units of bounded size, the last unit of a restore is small, and no worker
//! waits long for the others at the end.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::repo::id::{ChunkId, PackId};
use crate::store::blob::BlobEntry;

/// Most file content a unit writes (more only when one chunk is larger).
pub(super) const UNIT_BYTES: u64 = 8 * 1024 * 1024;
/// Most places (file, offset) a unit writes to. Small files make a unit
/// of [`UNIT_BYTES`] thousands of files long: a worker given the last such
/// unit of a restore (or of a batch, see `restore::flush`) would write them
/// alone while the others wait.
pub(super) const UNIT_WRITES: usize = 256;
/// How many candidates (units, or runs of units of one busy file) a worker
/// looks at for one that touches no busy file.
pub(super) const WINDOW: usize = 32;
/// A gap between blobs up to this size is read through rather than split.
const GAP: u64 = 1024 * 1024;
/// The largest range read in one request.
const MAX_SPAN: u64 = 64 * 1024 * 1024;

pub(super) struct Unit {
    pub pack: PackId,
    /// Blobs sorted by offset, read with one range request.
    pub blobs: Vec<(BlobEntry, ChunkId)>,
    /// Files it writes, sorted, without repeats.
    pub files: Vec<usize>,
    /// First (file, offset) it fills; the order of units.
    first: (usize, u64),
}

/// Cuts each pack's blobs into units and orders them. `targets` gives every
/// (file index, offset) a chunk goes to.
pub(super) fn units(
    by_pack: HashMap<PackId, Vec<(BlobEntry, ChunkId)>>,
    targets: &HashMap<ChunkId, Vec<(usize, u64)>>,
) -> Vec<Unit> {
    let mut out = Vec::new();
    for (pack, mut blobs) in by_pack {
        blobs.sort_by_key(|(e, _)| e.offset);
        let mut start = 0;
        let mut bytes = 0u64;
        let mut places = 0usize;
        for i in 0..blobs.len() {
            let cur = &blobs[i].0;
            let to = targets[&blobs[i].1].len();
            let writes = cur.raw_len as u64 * to as u64;
            if i > start {
                let prev = &blobs[i - 1].0;
                let prev_end = prev.offset as u64 + prev.stored_len as u64;
                let span = cur.offset as u64 + cur.stored_len as u64 - blobs[start].0.offset as u64;
                if cur.offset as u64 > prev_end + GAP
                    || span > MAX_SPAN
                    || bytes + writes > UNIT_BYTES
                    || places + to > UNIT_WRITES
                {
                    out.push(unit(pack, blobs[start..i].to_vec(), targets));
                    start = i;
                    bytes = 0;
                    places = 0;
                }
            }
            bytes += writes;
            places += to;
        }
        if start < blobs.len() {
            out.push(unit(pack, blobs[start..].to_vec(), targets));
        }
    }
    out.sort_by_key(|u| (u.first, u.pack));
    out
}

fn unit(
    pack: PackId,
    blobs: Vec<(BlobEntry, ChunkId)>,
    targets: &HashMap<ChunkId, Vec<(usize, u64)>>,
) -> Unit {
    let all = blobs.iter().flat_map(|(_, c)| targets[c].iter().copied());
    let first = all.clone().min().unwrap_or((usize::MAX, 0));
    let mut files: Vec<usize> = all.map(|(fi, _)| fi).collect();
    files.sort_unstable();
    files.dedup();
    Unit {
        pack,
        blobs,
        files,
        first,
    }
}

/// Hands out units to workers; see the module documentation.
pub(super) struct Scheduler<'a> {
    units: &'a [Unit],
    /// For a unit that writes one file: the first unit after it that does not
    /// write only that same file. Otherwise the unit after it.
    run_end: Vec<usize>,
    state: Mutex<State>,
}

struct State {
    /// `open[i] == i` while unit `i` is not taken; a taken unit points further
    /// on (path-halved in [`State::open_from`]), so the search steps over any
    /// number of taken units in near-constant time. `open[len]` is the end.
    open: Vec<usize>,
    /// Workers writing each file now; a file nobody writes has no entry.
    busy: HashMap<usize, u32>,
}

impl<'a> Scheduler<'a> {
    pub fn new(units: &'a [Unit]) -> Self {
        let mut run_end: Vec<usize> = (1..=units.len()).collect();
        for i in (0..units.len().saturating_sub(1)).rev() {
            if units[i].files.len() == 1 && units[i + 1].files == units[i].files {
                run_end[i] = run_end[i + 1];
            }
        }
        Scheduler {
            units,
            run_end,
            state: Mutex::new(State {
                open: (0..=units.len()).collect(),
                busy: HashMap::new(),
            }),
        }
    }

    /// The next unit for a worker, or `None` when all are taken. The caller
    /// calls [`Scheduler::done`] with it when its writes are finished.
    pub fn next(&self) -> Option<usize> {
        let mut s = self.state.lock().expect("scheduler");
        let first = s.open_from(0);
        if first == self.units.len() {
            return None;
        }
        let (mut i, mut looked, mut free) = (first, 0, None);
        while i < self.units.len() && looked < WINDOW {
            looked += 1;
            let files = &self.units[i].files;
            if files.iter().all(|f| !s.busy.contains_key(f)) {
                free = Some(i);
                break;
            }
            // Every unit up to `run_end` writes this same busy file.
            i = s.open_from(self.run_end[i]);
        }
        let pick = free.unwrap_or(first);
        s.open[pick] = pick + 1;
        for f in &self.units[pick].files {
            *s.busy.entry(*f).or_default() += 1;
        }
        Some(pick)
    }

    pub fn done(&self, unit: usize) {
        let mut s = self.state.lock().expect("scheduler");
        for f in &self.units[unit].files {
            if let Some(n) = s.busy.get_mut(f) {
                *n -= 1;
                if *n == 0 {
                    s.busy.remove(f);
                }
            }
        }
    }
}

impl State {
    /// The first unit at or after `i` that is not taken (`len` if none).
    fn open_from(&mut self, mut i: usize) -> usize {
        while self.open[i] != i {
            let next = self.open[self.open[i]];
            self.open[i] = next;
            i = next;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::Id;
    use crate::store::blob::BlobKind;

    fn entry(offset: u32, stored: u32, raw: u32) -> BlobEntry {
        BlobEntry {
            kind: BlobKind::Data,
            flags: 0,
            id: Id([0; 32]),
            offset,
            stored_len: stored,
            raw_len: raw,
        }
    }

    fn chunk(n: u8) -> ChunkId {
        ChunkId(Id([n; 32]))
    }

    const MIB: u32 = 1024 * 1024;

    /// One pack holding `per_file` chunks of 1 MiB for each of `files`
    /// files, file after file.
    type ByPack = HashMap<PackId, Vec<(BlobEntry, ChunkId)>>;
    type Targets = HashMap<ChunkId, Vec<(usize, u64)>>;

    fn layout(files: usize, per_file: usize) -> (ByPack, Targets) {
        let mut blobs = vec![];
        let mut targets = HashMap::new();
        let mut n = 0u8;
        for f in 0..files {
            for k in 0..per_file {
                let c = chunk(n);
                blobs.push((entry(n as u32 * 1000, 1000, MIB), c));
                targets.insert(c, vec![(f, k as u64 * MIB as u64)]);
                n += 1;
            }
        }
        let mut by_pack = HashMap::new();
        by_pack.insert(PackId(Id([7; 32])), blobs);
        (by_pack, targets)
    }

    #[test]
    fn units_are_bounded_and_in_file_order() {
        let (by_pack, targets) = layout(3, 20);
        let units = units(by_pack, &targets);
        let per_unit = (UNIT_BYTES / MIB as u64) as usize;
        assert!(units.iter().all(|u| u.blobs.len() <= per_unit));
        assert_eq!(units.iter().map(|u| u.blobs.len()).sum::<usize>(), 60);
        let firsts: Vec<_> = units.iter().map(|u| u.first).collect();
        let mut sorted = firsts.clone();
        sorted.sort();
        assert_eq!(firsts, sorted);
        assert_eq!(units[0].first, (0, 0));
    }

    #[test]
    fn a_gap_in_the_pack_starts_a_new_unit() {
        let mut by_pack = HashMap::new();
        let mut targets = HashMap::new();
        targets.insert(chunk(1), vec![(0, 0)]);
        targets.insert(chunk(2), vec![(0, 10)]);
        by_pack.insert(
            PackId(Id([1; 32])),
            vec![
                (entry(0, 10, 10), chunk(1)),
                (entry(3 * MIB, 10, 10), chunk(2)),
            ],
        );
        assert_eq!(units(by_pack, &targets).len(), 2);
    }

    #[test]
    fn a_worker_is_sent_to_a_file_nobody_is_writing() {
        let (by_pack, targets) = layout(2, 16);
        let units = units(by_pack, &targets);
        let s = Scheduler::new(&units);
        let a = s.next().unwrap();
        let b = s.next().unwrap();
        assert_eq!(units[a].files, vec![0]);
        assert_eq!(units[b].files, vec![1], "second worker skips the busy file");
        // Once the first worker is done, the next unit in order is free again.
        s.done(a);
        let c = s.next().unwrap();
        assert_eq!(units[c].files, vec![0]);
    }

    #[test]
    fn a_worker_looks_past_a_long_run_of_a_busy_file() {
        // File 0 is many more units than the window; file 1 is one unit.
        let n = WINDOW as u8 + 8;
        let mut blobs = vec![];
        let mut targets = HashMap::new();
        for k in 0..=n {
            let (file, at) = if k < n { (0, k as u64) } else { (1, 0) };
            blobs.push((entry(k as u32 * 1000, 1000, UNIT_BYTES as u32), chunk(k)));
            targets.insert(chunk(k), vec![(file, at * UNIT_BYTES)]);
        }
        let mut by_pack = HashMap::new();
        by_pack.insert(PackId(Id([3; 32])), blobs);
        let units = units(by_pack, &targets);
        assert_eq!(units.len(), n as usize + 1);
        let s = Scheduler::new(&units);
        let a = s.next().unwrap();
        let b = s.next().unwrap();
        assert_eq!(units[a].files, vec![0]);
        assert_eq!(
            units[b].files,
            vec![1],
            "second worker finds the other file"
        );
        // Nothing else is free now: the next unit in order is taken.
        let c = s.next().unwrap();
        assert_eq!(
            (units[c].files.clone(), units[c].first),
            (vec![0], (0, UNIT_BYTES))
        );
    }

    #[test]
    fn every_unit_is_handed_out_once_when_workers_jump_ahead() {
        // Three files of 40 one-MiB chunks; one worker keeps its unit while
        // the other takes and finishes many, out of order.
        let (by_pack, targets) = layout(3, 40);
        let units = units(by_pack, &targets);
        let s = Scheduler::new(&units);
        let mut got = vec![s.next().unwrap()];
        let held = got[0];
        while let Some(i) = s.next() {
            got.push(i);
            s.done(i);
        }
        s.done(held);
        // While file 0 is busy, the other files' ten units come first.
        let others = units.iter().filter(|u| u.files != vec![0]).count();
        assert_eq!(others, 10);
        assert!(got[1..=others].iter().all(|&i| units[i].files != vec![0]));
        got.sort();
        assert_eq!(got, (0..units.len()).collect::<Vec<_>>());
        assert!(s.state.lock().unwrap().busy.is_empty());
    }

    #[test]
    fn every_unit_is_handed_out_once_even_when_all_files_are_busy() {
        let (by_pack, targets) = layout(1, 40);
        let units = units(by_pack, &targets);
        let s = Scheduler::new(&units);
        let mut got = vec![];
        while let Some(i) = s.next() {
            got.push(i);
        }
        got.sort();
        assert_eq!(got, (0..units.len()).collect::<Vec<_>>());
        for i in got {
            s.done(i);
        }
        assert!(s.state.lock().unwrap().busy.is_empty());
    }
}
