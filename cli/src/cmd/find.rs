//! `pvsnap find PATTERN`: which snapshots hold a path matching a glob.

use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use pvsnap_engine::tree::filter::Excludes;
use pvsnap_engine::tree::{NodeKind, walk};
use serde::Serialize;

use crate::{Cli, output};

#[derive(clap::Args)]
pub struct Args {
    /// Glob for a name (`*.sql`), or with a `/` for a path from the snapshot's root (`db/*.sql`): the rules of `restore --include`
    pub pattern: String,
    /// Only snapshots of this source (a path, relative ones from the current folder, or pvc/NS/NAME)
    #[arg(long)]
    pub source: Option<String>,
    /// Print JSON: one object per snapshot, newest first, its matches inside
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Match {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mtime: String,
}

#[derive(Serialize)]
struct Found {
    #[serde(skip)]
    short: String,
    snapshot: String,
    time: String,
    source: String,
    matches: Vec<Match>,
}

pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    let pattern = Excludes::new(std::slice::from_ref(&a.pattern))?;
    let want = a.source.as_deref().map(pvsnap_engine::repo::source_key);
    let repo = crate::repo::open(cli, false, false)?.load_index()?;
    let (snaps, bad) = repo.snapshots_lenient()?;
    pvsnap_engine::repo::warn_unreadable_snapshots(&bad);
    let searched: Vec<_> = snaps
        .iter()
        .rev()
        .filter(|s| {
            want.as_ref()
                .is_none_or(|w| pvsnap_engine::repo::same_source(&s.source.key(), w))
        })
        .collect();
    let mut found = Vec::new();
    let mut damaged = 0;
    for s in &searched {
        let mut matches = Vec::new();
        let lost = walk::walk_lenient(&repo, &s.tree, "", &mut |path, n| {
            let rel = path.trim_start_matches('/');
            let name = Path::new(rel).file_name().unwrap_or_default();
            if pattern.matches(Path::new(rel), name) {
                matches.push(Match {
                    path: path.to_string(),
                    kind: n.kind.name(),
                    size: if matches!(n.kind, NodeKind::Dir { .. }) {
                        0
                    } else {
                        n.size
                    },
                    mtime: jiff::Timestamp::from_nanosecond(n.mtime_ns as i128)
                        .map(output::local_time)
                        .unwrap_or_default(),
                });
            }
            Ok(())
        })?;
        for (path, why) in &lost {
            eprintln!(
                "pvsnap: snapshot {}: not searched below {path}: {why}",
                s.short_id()
            );
        }
        damaged += lost.len();
        if !matches.is_empty() {
            found.push(Found {
                short: s.short_id(),
                snapshot: s.id.to_hex(),
                time: output::local_time(s.time),
                source: s.source.key(),
                matches,
            });
        }
    }
    if found.is_empty() {
        let scope = match &want {
            Some(w) => format!(" of {w}"),
            None => String::new(),
        };
        bail!(
            "no snapshot{scope} holds a path matching `{}` ({} snapshot(s) searched{}); `pvsnap ls SNAPSHOT` lists what a snapshot holds",
            a.pattern,
            searched.len(),
            if damaged > 0 {
                ", some folders unreadable"
            } else {
                ""
            }
        );
    }
    if a.json {
        output::json(&found)?;
        return Ok(crate::exit::OK);
    }
    let mut out = std::io::stdout().lock();
    for f in &found {
        writeln!(out, "snapshot {} {} {}", f.short, f.time, f.source)?;
        for m in &f.matches {
            writeln!(
                out,
                "  {:<8} {:>10} {} {}",
                m.kind,
                output::bytes(m.size),
                m.mtime,
                m.path
            )?;
        }
    }
    Ok(crate::exit::OK)
}
