//! Which packs `check --read-data` / `--read-data-subset` reads in full.

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::repo::id::PackId;

/// Which packs `check` reads in full.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ReadData {
    /// Structure only: index files, pack trailers, trees.
    #[default]
    None,
    All,
    /// A random sample of this percentage of the packs.
    Percent(f64),
    /// Part `n` of `k` (1-based): the packs whose id's first byte modulo `k`
    /// is `n - 1`, so `k` runs with n = 1..=k read every pack exactly once.
    Part {
        n: u32,
        k: u32,
    },
}

impl FromStr for ReadData {
    type Err = Error;
    /// `10%` or `n/k`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Invalid(format!(
                "read-data subset `{s}`: {why}; write a percentage such as `10%` or a part such as `1/5`"
            ))
        };
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad("not a number"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad("the percentage must be above 0 and at most 100"));
            }
            return Ok(ReadData::Percent(p));
        }
        let (n, k) = s
            .split_once('/')
            .ok_or_else(|| bad("neither a percentage nor a part"))?;
        let (n, k): (u32, u32) = (
            n.trim().parse().map_err(|_| bad("not a number"))?,
            k.trim().parse().map_err(|_| bad("not a number"))?,
        );
        if k == 0 || k > 256 || n == 0 || n > k {
            return Err(bad("need 1 <= n <= k <= 256"));
        }
        Ok(ReadData::Part { n, k })
    }
}

impl std::fmt::Display for ReadData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadData::None => f.write_str("none"),
            ReadData::All => f.write_str("all"),
            ReadData::Percent(p) => write!(f, "{p}%"),
            ReadData::Part { n, k } => write!(f, "{n}/{k}"),
        }
    }
}

impl ReadData {
    /// The packs to read among `packs` (sorted).
    pub(super) fn select(&self, packs: &[PackId]) -> Vec<PackId> {
        match *self {
            ReadData::None => vec![],
            ReadData::All => packs.to_vec(),
            ReadData::Part { n, k } => packs
                .iter()
                .copied()
                .filter(|p| p.0.0[0] as u32 % k == n - 1)
                .collect(),
            ReadData::Percent(pct) => {
                use rand::seq::SliceRandom;
                let want = ((packs.len() as f64 * pct / 100.0).ceil() as usize).min(packs.len());
                let mut v = packs.to_vec();
                v.shuffle(&mut rand::thread_rng());
                v.truncate(want);
                v.sort();
                v
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::Id;

    #[test]
    fn subsets_parse_and_parts_cover_every_pack_once() {
        assert_eq!("10%".parse::<ReadData>().unwrap(), ReadData::Percent(10.0));
        assert_eq!(
            "2/5".parse::<ReadData>().unwrap(),
            ReadData::Part { n: 2, k: 5 }
        );
        for bad in ["0%", "101%", "x%", "0/5", "6/5", "1/0", "1/300", "half"] {
            assert!(bad.parse::<ReadData>().is_err(), "{bad}");
        }
        let packs: Vec<PackId> = (0..=255u8).map(|b| PackId(Id([b; 32]))).collect();
        let mut seen: Vec<PackId> = (1..=5)
            .flat_map(|n| ReadData::Part { n, k: 5 }.select(&packs))
            .collect();
        seen.sort();
        assert_eq!(seen, packs);
        assert_eq!(ReadData::Percent(10.0).select(&packs).len(), 26);
        assert_eq!(ReadData::Percent(100.0).select(&packs), packs);
    }
}
