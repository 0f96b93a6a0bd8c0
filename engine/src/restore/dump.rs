//! `pvsnap dump`: one file's content as a stream.

use std::io::Write;

use crate::error::{Error, Result};
use crate::repo::IndexedRepository;
use crate::tree::{Node, NodeKind};

/// Writes one file's content to `out` (holes as zeros).
pub fn dump(repo: &IndexedRepository, node: &Node, out: &mut dyn Write) -> Result<u64> {
    let NodeKind::File { content } = &node.kind else {
        return Err(Error::Invalid(format!(
            "{}: is a {}, not a file; use `pvsnap ls` or `pvsnap restore`",
            node.name_lossy(),
            node.kind.name()
        )));
    };
    // Lengths past what a file can hold are damage, not a stream of zeros
    // that never ends.
    let total = content
        .iter()
        .try_fold(0u64, |t, e| t.checked_add(e.len))
        .filter(|t| *t <= i64::MAX as u64);
    if total.is_none() {
        return Err(Error::Invalid(format!(
            "{}: its extents add up to more than a file can hold; the snapshot is damaged or crafted, run `pvsnap check`",
            node.name_lossy()
        )));
    }
    let zeros = vec![0u8; 1024 * 1024];
    let mut n = 0;
    let io = |e: std::io::Error| Error::io("standard output", "write", e);
    for e in content {
        match e.chunk {
            Some(c) => {
                let data = repo.read_chunk(&c)?;
                if data.len() as u64 != e.len {
                    return Err(Error::Invalid(format!(
                        "{}: chunk {} holds {} bytes where the file's extent says {}; run `pvsnap check`",
                        node.name_lossy(),
                        c.short(),
                        data.len(),
                        e.len
                    )));
                }
                out.write_all(&data).map_err(io)?
            }
            None => {
                let mut left = e.len;
                while left > 0 {
                    let k = left.min(zeros.len() as u64) as usize;
                    out.write_all(&zeros[..k]).map_err(io)?;
                    left -= k as u64;
                }
            }
        }
        n += e.len;
    }
    Ok(n)
}
