//! `pvsnap repo probe`: what the object storage behind a repository does.

use anyhow::{Result, bail};
use pvsnap_engine::backend::s3::{ConditionalPut, Probe};

use crate::Cli;

#[derive(clap::Subcommand)]
pub enum RepoCommand {
    /// Try what the storage server does: conditional writes (8 writers racing
    /// on one key), listing right after writes, multipart upload listing, its
    /// clock. Probe objects go under pvsnap-probe-… and are removed again
    Probe(ProbeArgs),
}

#[derive(clap::Args)]
pub struct ProbeArgs {
    /// Print the findings as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, c: &RepoCommand) -> Result<u8> {
    let RepoCommand::Probe(a) = c;
    let loc = crate::repo::location(cli)?;
    let Some(s3) = &loc.s3 else {
        bail!(
            "{}: a folder; `pvsnap repo probe` tries object storage (--repo s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]). A folder needs no probe: objects are written under a temporary name and linked into place",
            loc.path.display()
        );
    };
    let p = crate::repo::s3_backend(cli, s3)?.probe()?;
    if a.json {
        crate::output::json(&json(&s3.display(), &p))?;
    } else {
        print!("{}", text(&s3.display(), &p));
    }
    Ok(crate::exit::OK)
}

/// The findings as `repo probe --json` prints them.
pub fn json(location: &str, p: &Probe) -> serde_json::Value {
    serde_json::json!({
        "location": location,
        "conditional_put": p.conditional_put.name(),
        "racers": p.racers,
        "racers_told_ok": p.racers_told_ok,
        "list_after_write": p.list_after_write,
        "multipart_listing": p.multipart_listing,
        "clock_offset_s": p.clock_offset.map(|d| d.as_secs_f64()),
        "needs_conditional_put": false,
    })
}

/// The findings in words, one line each, then what they mean for pvsnap.
pub fn text(location: &str, p: &Probe) -> String {
    let cond = match p.conditional_put {
        ConditionalPut::Honoured => format!(
            "honoured: of {} writers racing on one key, 1 was told 200 and its bytes were kept",
            p.racers
        ),
        ConditionalPut::NotAtomic => format!(
            "not atomic: a lone second writer is refused (412), but {} of {} racing writers were told 200",
            p.racers_told_ok, p.racers
        ),
        ConditionalPut::Ignored => "ignored: a second writer replaced the object".to_string(),
    };
    let clock = match p.clock_offset.map(|d| d.as_secs_f64()) {
        None => "not told (no Date header)".to_string(),
        Some(s) if s.abs() < 2.0 => "agrees with this machine's (within 2 s)".to_string(),
        Some(s) if s > 0.0 => format!("{s:.0} s ahead of this machine's"),
        Some(s) => format!("{:.0} s behind this machine's", -s),
    };
    let mut out = format!(
        "probed {location}\n\
         conditional put (If-None-Match): {cond}\n\
         listing right after writes:      {}\n\
         multipart upload listing:        {}\n\
         server clock:                    {clock}\n",
        match p.list_after_write {
            true => "consistent",
            false => "NOT consistent",
        },
        match p.multipart_listing {
            true => "supported (prune aborts leftover uploads)",
            false => "not supported (nothing to abort: pvsnap writes single PUTs)",
        },
    );
    out.push_str(
        "pvsnap does not depend on conditional writes: backups are safe whatever the server does with them\n",
    );
    if !p.list_after_write {
        out.push_str("WARNING: locks need a listing that shows what was just written; on this server let only one host write at a time, and never run prune beside a snapshot\n");
    }
    if p.clock_offset.is_some_and(|d| d.as_secs().abs() >= 60) {
        out.push_str("note: ages (prune's grace, stale locks) are taken on the server's clock, so the difference does no harm; fix this machine's clock (NTP) all the same\n");
    }
    out
}
