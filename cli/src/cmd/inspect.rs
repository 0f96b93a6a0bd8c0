//! Read-only commands: `snapshots`, `ls`, `dump`, `diff`, `stats`.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use anyhow::Result;
use pvsnap_engine::repo::format::ObjectKind;
use pvsnap_engine::snapshot::Snapshot;
use pvsnap_engine::store::blob::BlobKind;
use pvsnap_engine::tree::NodeKind;
use pvsnap_engine::tree::walk;
use serde::Serialize;

use crate::{Cli, output};

#[derive(clap::Args)]
pub struct SnapshotsArgs {
    /// Only snapshots of this source (a path, relative ones from the current folder, or pvc/NS/NAME)
    #[arg(long)]
    pub source: Option<String>,
    /// Only snapshots of this Kubernetes claim (same as --source pvc/NS/NAME)
    #[arg(long, value_name = "NS/NAME", conflicts_with = "source")]
    pub pvc: Option<String>,
    /// Only snapshots carrying this tag
    #[arg(long)]
    pub tag: Option<String>,
    /// List the snapshots in groups: of one source, one host, or one set of tags
    #[arg(long, value_enum, value_name = "KEY")]
    pub group_by: Option<GroupBy>,
    /// Only the N newest snapshots (of each group with --group-by)
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// Print JSON (with --group-by: one object per group, `snapshots` inside)
    #[arg(long)]
    pub json: bool,
    /// List the trash instead: snapshots `forget` removed, when, and when prune expires them
    #[arg(long, conflicts_with_all = ["group_by", "last"])]
    pub deleted: bool,
    /// With --deleted: the grace period prune will be given, for the expiry shown
    #[arg(long, value_name = "DURATION", default_value = "7d", requires = "deleted", value_parser = super::maintenance::parse_duration)]
    pub keep_deleted: std::time::Duration,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum GroupBy {
    Source,
    Host,
    Tags,
}

impl GroupBy {
    fn name(self) -> &'static str {
        match self {
            GroupBy::Source => "source",
            GroupBy::Host => "host",
            GroupBy::Tags => "tags",
        }
    }

    /// The group of `s`, as JSON (tags: the sorted list).
    fn key(self, s: &Snapshot) -> serde_json::Value {
        match self {
            GroupBy::Source => s.source.key().into(),
            GroupBy::Host => s.hostname.clone().into(),
            GroupBy::Tags => {
                let mut t = s.tags.clone();
                t.sort();
                t.dedup();
                t.into()
            }
        }
    }
}

/// `snaps` (oldest first) in groups, each oldest first, groups in the order
/// of their keys; with `last`, only the newest `last` of each group.
fn grouped(
    snaps: Vec<Snapshot>,
    by: Option<GroupBy>,
    last: Option<usize>,
) -> Vec<(serde_json::Value, Vec<Snapshot>)> {
    let mut groups: Vec<(serde_json::Value, Vec<Snapshot>)> = Vec::new();
    for s in snaps {
        let key = by.map_or(serde_json::Value::Null, |b| b.key(&s));
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(s),
            None => groups.push((key, vec![s])),
        }
    }
    groups.sort_by_key(|(k, _)| k.to_string());
    if let Some(n) = last {
        for (_, g) in &mut groups {
            let drop = g.len().saturating_sub(n);
            g.drain(..drop);
        }
    }
    groups
}

pub fn snapshots(cli: &Cli, a: &SnapshotsArgs) -> Result<u8> {
    let pvc = a
        .pvc
        .as_deref()
        .map(|c| crate::k8s::parse_claim(c).map(|c| crate::k8s::claim_key(&c)))
        .transpose()?;
    let source = pvc.or(a.source.as_deref().map(pvsnap_engine::repo::source_key));
    let repo = crate::repo::open(cli, false, false)?;
    if a.deleted {
        return deleted(&repo, a, source.as_deref());
    }
    let (all, bad) = repo.snapshots_lenient()?;
    for (id, e) in &bad {
        eprintln!(
            "pvsnap: snapshot {} is unreadable and not listed: {e}; run `pvsnap check`",
            id.short()
        );
    }
    let snaps: Vec<_> = all
        .into_iter()
        .filter(|s| {
            source
                .as_ref()
                .is_none_or(|src| pvsnap_engine::repo::same_source(&s.source.key(), src))
        })
        .filter(|s| a.tag.as_ref().is_none_or(|t| s.tags.contains(t)))
        .collect();
    let groups = grouped(snaps, a.group_by, a.last);
    if a.json {
        let list =
            |g: &[Snapshot]| -> Vec<_> { g.iter().map(super::snapshot::snapshot_json).collect() };
        match a.group_by {
            None => output::json(&list(groups.first().map_or(&[][..], |(_, g)| g)))?,
            Some(by) => {
                let v: Vec<_> = groups
                    .iter()
                    .map(|(k, g)| serde_json::json!({ by.name(): k, "snapshots": list(g) }))
                    .collect();
                output::json(&v)?;
            }
        }
        return Ok(crate::exit::OK);
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let (mut count, mut incomplete) = (0, 0);
    for (i, (key, g)) in groups.iter().enumerate() {
        if let Some(by) = a.group_by {
            let shown = match key {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(t) if t.is_empty() => "(no tags)".into(),
                serde_json::Value::Array(t) => t
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            if i > 0 {
                writeln!(out)?;
            }
            writeln!(out, "{} {shown}: {} snapshot(s)", by.name(), g.len())?;
        }
        incomplete += snapshot_table(&mut out, g)?;
        count += g.len();
    }
    writeln!(out, "{count} snapshot(s)")?;
    if incomplete > 0 {
        writeln!(
            out,
            "{incomplete} incomplete: paths that could not be read (or were lost and removed by `pvsnap repair snapshots`) are missing; `pvsnap snapshots --json` names them under `errors`"
        )?;
    }
    out.flush()?;
    Ok(crate::exit::OK)
}

/// `snapshots --deleted`: the trash, oldest removal first.
fn deleted(
    repo: &pvsnap_engine::repo::Repository,
    a: &SnapshotsArgs,
    source: Option<&str>,
) -> Result<u8> {
    let trash = repo.trash()?;
    for (e, err) in &trash.unreadable {
        eprintln!(
            "pvsnap: trash entry trash/{} is unreadable and not listed: {err}; run `pvsnap check`",
            e.name()
        );
    }
    let list: Vec<_> = trash
        .entries
        .iter()
        .filter(|t| {
            source.is_none_or(|src| pvsnap_engine::repo::same_source(&t.snapshot.source.key(), src))
        })
        .filter(|t| a.tag.as_ref().is_none_or(|g| t.snapshot.tags.contains(g)))
        .collect();
    if a.json {
        let v: Vec<_> = list
            .iter()
            .map(|t| {
                let mut v = super::snapshot::snapshot_json(&t.snapshot);
                v["deleted"] = t.entry.deleted.to_string().into();
                v["expires"] = t.entry.expires(a.keep_deleted).to_string().into();
                v
            })
            .collect();
        output::json(&v)?;
        return Ok(crate::exit::OK);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<10} {:<19} {:<19} {:<19} source",
        "id", "time", "deleted", "expires"
    )?;
    for t in &list {
        writeln!(
            out,
            "{:<10} {:<19} {:<19} {:<19} {}",
            t.snapshot.short_id(),
            output::local_time(t.snapshot.time),
            output::local_time(t.entry.deleted),
            output::local_time(t.entry.expires(a.keep_deleted)),
            t.snapshot.source.key()
        )?;
    }
    writeln!(
        out,
        "{} deleted snapshot(s); `pvsnap undelete ID` brings one back until prune expires it",
        list.len()
    )?;
    Ok(crate::exit::OK)
}

/// Which kept native snapshots are no longer on this host's storage. Only
/// records written on this host are judged (another host's storage is not
/// here to look at); a volume's snapshots are listed once.
#[derive(Default)]
struct Gone {
    host: Option<String>,
    /// (kind, volume) → its snapshots' handles, `None` when they cannot be
    /// listed (then nothing is said to be gone).
    listed: std::collections::HashMap<(String, String), Option<HashSet<String>>>,
}

impl Gone {
    fn is_gone(&mut self, s: &Snapshot, n: &pvsnap_engine::snapshot::SourceSnapshot) -> bool {
        let host = self
            .host
            .get_or_insert_with(pvsnap_engine::repo::hostname_public);
        if s.hostname != *host {
            return false;
        }
        if n.kind == "btrfs" {
            return !Path::new(&n.handle).exists();
        }
        let handles = self
            .listed
            .entry((n.kind.clone(), n.volume.clone()))
            .or_insert_with(|| {
                let (provider, _) = pvsnap_ops::native::recorded(n).ok()?;
                let handles = provider.handles_of(&n.volume).ok()??;
                Some(handles.into_iter().collect())
            });
        handles.as_ref().is_some_and(|h| !h.contains(&n.handle))
    }
}

/// Writes the table of `snaps`; returns how many are incomplete.
fn snapshot_table(out: &mut impl Write, snaps: &[Snapshot]) -> std::io::Result<usize> {
    writeln!(
        out,
        "{:<10} {:<19} {:<16} {:>8} {:>10}  {:<20} source",
        "id", "time", "host", "files", "size", "tags"
    )?;
    let mut incomplete = 0;
    let mut gone = Gone::default();
    for s in snaps {
        // An incomplete snapshot (exit code 3 when taken, or a repaired
        // copy) says so after its source.
        let missing = super::snapshot::missing_paths(s);
        let mut mark = if missing > 0 {
            incomplete += 1;
            format!("  [incomplete: {missing} path(s) missing]")
        } else {
            String::new()
        };
        match &s.source_snapshot {
            Some(n) if n.native_only => {
                mark.push_str(&format!("  [native {} restore point {}]", n.kind, n.name));
            }
            // One removed since (by --keep-native, or by hand) is said to
            // be gone, where this host can tell.
            Some(n) if n.kept && gone.is_gone(s, n) => {
                mark.push_str(&format!("  [{} snapshot gone]", n.kind));
            }
            Some(n) if n.kept => mark.push_str(&format!("  [+ {} snapshot kept]", n.kind)),
            _ => {}
        }
        writeln!(
            out,
            "{:<10} {:<19} {:<16} {:>8} {:>10}  {:<20} {}{mark}",
            s.short_id(),
            output::local_time(s.time),
            s.hostname,
            s.summary.total_files,
            output::bytes(s.summary.total_bytes),
            s.tags.join(","),
            s.source.key()
        )?;
    }
    Ok(incomplete)
}

#[derive(clap::Args)]
pub struct LsArgs {
    pub snapshot: String,
    /// Folder inside the snapshot to list (default: everything)
    pub path: Option<String>,
    /// Show type, mode, owner, size and time (sizes like 4.0 KiB, owners by name where this host knows the id)
    #[arg(long, short)]
    pub long: bool,
    /// With --long: owners as numbers and sizes in bytes
    #[arg(long, requires = "long")]
    pub numeric: bool,
    /// Print one JSON object per line
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct LsEntry<'a> {
    path: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: String,
}

pub fn ls(cli: &Cli, a: &LsArgs) -> Result<u8> {
    let repo = crate::repo::open(cli, false, false)?;
    let repo = repo.load_index()?;
    let snap = repo.resolve_snapshot(&a.snapshot)?;
    super::refuse_native_only(&snap, "ls")?;
    let start = a.path.clone().unwrap_or_default();
    let node = repo.find_node(&snap, &start)?;
    let mut out = std::io::stdout().lock();
    let names = pvsnap_engine::fsmeta::NameCache::default();
    let prefix = format!("/{}", start.trim_matches('/'));
    let mut print = |path: &str, n: &pvsnap_engine::tree::Node| -> pvsnap_engine::Result<()> {
        let io = |e| pvsnap_engine::Error::Io {
            path: "standard output".into(),
            source: e,
            action: "write",
        };
        let mtime = jiff::Timestamp::from_nanosecond(n.mtime_ns as i128)
            .map(output::local_time)
            .unwrap_or_default();
        if a.json {
            let e = LsEntry {
                path,
                kind: n.kind.name(),
                mode: n.mode,
                uid: n.uid,
                gid: n.gid,
                size: n.size,
                mtime,
            };
            writeln!(out, "{}", serde_json::to_string(&e).expect("serializes")).map_err(io)
        } else if a.long {
            let (user, group, size) = if a.numeric {
                (n.uid.to_string(), n.gid.to_string(), n.size.to_string())
            } else {
                (
                    names.user(n.uid).unwrap_or_else(|| n.uid.to_string()),
                    names.group(n.gid).unwrap_or_else(|| n.gid.to_string()),
                    output::bytes(n.size),
                )
            };
            writeln!(
                out,
                "{:<8} {:04o} {user:>8} {group:>8} {size:>12} {mtime} {path}",
                n.kind.name(),
                n.mode,
            )
            .map_err(io)
        } else {
            writeln!(out, "{path}").map_err(io)
        }
    };
    let lost = match &node.kind {
        NodeKind::Dir { subtree } => walk::walk_lenient(
            &repo,
            subtree,
            if start.trim_matches('/').is_empty() {
                ""
            } else {
                &prefix
            },
            &mut print,
        )?,
        _ => {
            print(&prefix, &node)?;
            vec![]
        }
    };
    if !lost.is_empty() {
        for (path, why) in &lost {
            eprintln!("pvsnap: damaged: {path}: {why}");
        }
        eprintln!(
            "pvsnap: {} folder(s) could not be listed; run `pvsnap check --read-data` (exit code 4)",
            lost.len()
        );
        return Ok(crate::exit::DAMAGED);
    }
    Ok(crate::exit::OK)
}

#[derive(clap::Args)]
pub struct DumpArgs {
    pub snapshot: String,
    /// Path of a file inside the snapshot
    pub path: String,
}

pub fn dump(cli: &Cli, a: &DumpArgs) -> Result<u8> {
    let repo = crate::repo::open(cli, false, false)?.load_index()?;
    let snap = repo.resolve_snapshot(&a.snapshot)?;
    super::refuse_native_only(&snap, "dump")?;
    let node = repo.find_node(&snap, &a.path)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(4 << 20, stdout.lock());
    pvsnap_engine::restore::dump(&repo, &node, &mut out)?;
    out.flush()?;
    Ok(crate::exit::OK)
}

#[derive(clap::Args)]
pub struct DiffArgs {
    pub from: String,
    pub to: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

pub fn diff(cli: &Cli, a: &DiffArgs) -> Result<u8> {
    let repo = crate::repo::open(cli, false, false)?.load_index()?;
    let (x, y) = repo.resolve_pair(&a.from, &a.to)?;
    super::refuse_native_only(&x, "diff")?;
    super::refuse_native_only(&y, "diff")?;
    if x.source.key() != y.source.key() && !cli.quiet {
        eprintln!(
            "pvsnap: comparing snapshots of two sources: {} ({}) and {} ({})",
            x.short_id(),
            x.source.key(),
            y.short_id(),
            y.source.key()
        );
    }
    let changes = walk::diff(&repo, &x.tree, &y.tree)?;
    if a.json {
        output::json(&changes)?;
    } else {
        let mut out = std::io::stdout().lock();
        for c in &changes {
            writeln!(out, "{}  {}", c.change, c.path)?;
        }
    }
    Ok(crate::exit::OK)
}

#[derive(clap::Args)]
pub struct StatsArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Stats {
    snapshot_count: usize,
    pack_count: usize,
    /// Bytes of all repository objects.
    stored_size: u64,
    /// Bytes of distinct chunks before compression.
    raw_size: u64,
    /// Bytes of file content over all snapshots.
    logical_size: u64,
    chunk_count: usize,
    tree_count: usize,
    /// logical_size / raw_size.
    dedup_ratio: f64,
    /// raw size / stored size of data blobs.
    compression_ratio: f64,
    index_memory_bytes: usize,
}

pub fn stats(cli: &Cli, a: &StatsArgs) -> Result<u8> {
    let repo = crate::repo::open(cli, false, false)?.load_index()?;
    let (snaps, bad) = repo.snapshots_lenient()?;
    pvsnap_engine::repo::warn_unreadable_snapshots(&bad);
    let mut stored_size = 0;
    let mut pack_count = 0;
    for kind in [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
    ] {
        let objs = repo.backend().list(kind)?;
        if kind == ObjectKind::Pack {
            pack_count = objs.len();
        }
        stored_size += objs.iter().map(|(_, s)| s).sum::<u64>();
    }
    let (mut raw, mut stored_data, mut chunks, mut trees) = (0u64, 0u64, 0usize, 0usize);
    // The index holds each blob once (a set of ten million ids cost 600 MiB).
    for loc in repo.index().iter() {
        match loc.entry.kind {
            BlobKind::Data => {
                raw += loc.entry.raw_len as u64;
                stored_data += loc.entry.stored_len as u64;
                chunks += 1;
            }
            BlobKind::Tree => trees += 1,
        }
    }
    let logical: u64 = snaps.iter().map(|s| s.summary.total_bytes).sum();
    let ratio = |a: u64, b: u64| {
        if b == 0 {
            0.0
        } else {
            (a as f64 / b as f64 * 100.0).round() / 100.0
        }
    };
    let st = Stats {
        snapshot_count: snaps.len(),
        pack_count,
        stored_size,
        raw_size: raw,
        logical_size: logical,
        chunk_count: chunks,
        tree_count: trees,
        dedup_ratio: ratio(logical, raw),
        compression_ratio: ratio(raw, stored_data),
        index_memory_bytes: repo.index().heap_bytes(),
    };
    if a.json {
        output::json(&st)?;
    } else {
        println!("snapshots:          {}", st.snapshot_count);
        println!(
            "stored size:        {} in {} packs",
            output::bytes(st.stored_size),
            st.pack_count
        );
        println!(
            "raw size:           {} in {} chunks",
            output::bytes(st.raw_size),
            st.chunk_count
        );
        println!("logical size:       {}", output::bytes(st.logical_size));
        println!("deduplication:      {:.2}x", st.dedup_ratio);
        println!("compression:        {:.2}x", st.compression_ratio);
        println!(
            "index in memory:    {}",
            output::bytes(st.index_memory_bytes as u64)
        );
    }
    Ok(crate::exit::OK)
}
