//! `pvsnap restore SNAP --rollback | --clone-to PATH`, and `--target DIR`
//! of a native restore point: restores from the native snapshot a
//! repository snapshot keeps on the storage (the workflows are in
//! `pvsnap_ops::native`).

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use pvsnap_engine::snapshot::{Snapshot, Source};

use super::restore::Args;
use crate::{Cli, output};

pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    let repo = crate::repo::open(cli, false, false)?;
    let (repo, _lock) = super::locked(repo, false, "restore")?;
    let snap = repo.resolve_snapshot(&a.snapshot)?;
    super::restore::refuse_csi(
        &snap,
        if a.rollback {
            "--rollback"
        } else {
            "--clone-to"
        },
    )?;
    let Some(native) = snap.kept_native() else {
        bail!(
            "snapshot {} keeps no native snapshot (it was read from {}), so there is nothing to {}; restore it with --target DIR",
            snap.short_id(),
            match &snap.source_snapshot {
                Some(n) => format!("a {} snapshot removed after the read", n.kind),
                None => "the live folder".to_string(),
            },
            if a.rollback { "roll back to" } else { "clone" }
        );
    };
    if let Some(target) = &a.clone_to {
        let target = absolute(target)?;
        let made = pvsnap_ops::native::clone_to(&snap, &target).map_err(super::ops_error)?;
        return done(
            cli,
            a,
            &format!(
                "cloned the {} snapshot {} of snapshot {} to {}; the source's folder in it is {}",
                native.kind,
                native.name,
                snap.short_id(),
                target.display(),
                made.display()
            ),
            serde_json::json!({"snapshot": snap.id, "clone": target, "folder": made}),
        );
    }
    let live = match &snap.source {
        Source::Path { path } => PathBuf::from(path),
        Source::Pvc { .. } => bail!(
            "--rollback of claim {} is not built yet: it needs the claim's workloads scaled down like --to-pvc does; use `pvsnap restore {} --to-pvc {}` (a copy from the repository), or --clone-to PATH",
            snap.source.key(),
            snap.short_id(),
            snap.source.key().trim_start_matches("pvc/")
        ),
    };
    // The whole volume is swapped (btrfs: a subvolume's path), not only
    // the source folder in it.
    let volume = Path::new(&native.volume);
    let swapped = if volume.is_absolute() { volume } else { &live };
    let users = open_under(swapped);
    if !users.is_empty() {
        bail!(
            "{} is in use by {}; stop them first: a rollback swaps the volume under them",
            swapped.display(),
            users.join(", ")
        );
    }
    if !a.yes {
        bail!(
            "--rollback replaces the whole {} volume {} with the snapshot of {}: what was written since is set aside, not in use any more; stop what writes to it (containers hold it open through their mounts), then add --yes",
            native.kind,
            native.volume,
            output::local_time(snap.time)
        );
    }
    let aside = pvsnap_ops::native::rollback(&snap).map_err(super::ops_error)?;
    let kept = match &aside {
        Some(p) => format!(
            "; the content from before is kept at {} (remove it with `btrfs subvolume delete {}` when it is no longer needed)",
            p.display(),
            p.display()
        ),
        None => String::new(),
    };
    done(
        cli,
        a,
        &format!(
            "rolled {} back to snapshot {} ({} snapshot {}){kept}; restart what uses it",
            native.volume,
            snap.short_id(),
            native.kind,
            native.name
        ),
        serde_json::json!({"snapshot": snap.id, "rollback": native.volume, "set_aside": aside}),
    )
}

/// `restore SNAP --target DIR` of a native restore point.
pub fn copy_out(cli: &Cli, a: &Args, snap: &Snapshot, target: &Path) -> Result<u8> {
    if a.path.is_some() || !a.includes.is_empty() || !a.excludes.is_empty() || a.delete || a.dry_run
    {
        bail!(
            "snapshot {} is a native restore point, copied out whole: --path, --include, --exclude, --delete and --dry-run do not apply",
            snap.short_id()
        );
    }
    let started = std::time::Instant::now();
    pvsnap_ops::native::copy_out(snap, target).map_err(super::ops_error)?;
    let n = snap
        .source_snapshot
        .as_ref()
        .expect("a native restore point");
    done(
        cli,
        a,
        &format!(
            "restored native restore point {} into {}: copied out of the {} snapshot {} (cp -a) in {:.2}s",
            snap.short_id(),
            target.display(),
            n.kind,
            n.handle,
            started.elapsed().as_secs_f64()
        ),
        serde_json::json!({"snapshot": snap.id, "target": target, "native": n}),
    )
}

fn done(cli: &Cli, a: &Args, line: &str, json: serde_json::Value) -> Result<u8> {
    if a.json {
        output::json(&json)?;
    } else if !cli.quiet {
        println!("{line}");
    }
    Ok(crate::exit::OK)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_owned());
    }
    Ok(std::env::current_dir()
        .map_err(|e| anyhow!("cannot resolve {}: {e}", p.display()))?
        .join(p))
}

/// The processes (`pid (command)`) with a file, folder or working folder
/// under `dir`, from `/proc`.
fn open_under(dir: &Path) -> Vec<String> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let me = std::process::id().to_string();
    let mut out = vec![];
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let base = p.path();
        let mut links: Vec<PathBuf> = vec![base.join("cwd"), base.join("root")];
        if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
            links.extend(fds.flatten().map(|f| f.path()));
        }
        let hit = links
            .iter()
            .filter_map(|l| std::fs::read_link(l).ok())
            .any(|t| t.starts_with(dir));
        if hit {
            let comm = std::fs::read_to_string(base.join("comm")).unwrap_or_default();
            out.push(format!("{pid} ({})", comm.trim()));
        }
    }
    out
}
