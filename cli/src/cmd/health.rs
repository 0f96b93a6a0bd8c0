//! `metrics` and `status`: the health model of `pvsnap_ops::health`,
//! rendered for Prometheus and for people and monitoring checks.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use pvsnap_ops::health::{self, Health, Problem, Severity, Thresholds};

use crate::{Cli, exit, output};

#[derive(Args)]
pub struct MetricsArgs {
    /// Write to this file atomically (for node_exporter's textfile collector; name it *.prom)
    #[arg(long, value_name = "PATH")]
    pub textfile: Option<PathBuf>,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Print JSON
    #[arg(long, conflicts_with = "nagios")]
    pub json: bool,
    /// A source whose newest snapshot is older than this is unhealthy
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = crate::cmd::maintenance::parse_duration)]
    pub max_age: Duration,
    /// A last check older than this (or none) is a warning; 0 turns the warning off
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = crate::cmd::maintenance::parse_duration)]
    pub check_max_age: Duration,
    /// Redraw every few seconds until Ctrl-C
    #[arg(long, conflicts_with_all = ["json", "nagios"])]
    pub watch: bool,
    /// Seconds between redraws with --watch
    #[arg(long, value_name = "SECONDS", default_value_t = 5, requires = "watch")]
    pub interval: u64,
    /// One line and the Nagios exit code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
    #[arg(long)]
    pub nagios: bool,
}

/// Opens the repository and gathers its health.
fn gather(cli: &Cli) -> Result<Health> {
    let loc = crate::repo::location(cli)?;
    let repo = crate::repo::open(cli, false, false)?.load_index()?;
    let local = loc.s3.is_none().then_some(loc.path.as_path());
    Ok(health::gather(&repo, local)?)
}

pub fn metrics(cli: &Cli, a: &MetricsArgs) -> Result<u8> {
    let h = gather(cli)?;
    for u in &h.unreadable {
        eprintln!(
            "pvsnap: warning: snapshot object {} cannot be read: {} (pvsnap_unreadable_snapshots counts it)",
            health::snapshot_object(&u.id),
            u.error
        );
    }
    let text = health::render_metrics(&h);
    match &a.textfile {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
        Some(path) => write_atomically(path, text.as_bytes())?,
    }
    Ok(exit::OK)
}

/// Writes `path` so that a reader sees the old content or the new, never a
/// part: a temporary file beside it, fsync, rename, fsync of the folder.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("--textfile {}: name a file, not a folder", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        // Readable by node_exporter, which runs as another user.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow!(e)
    })
    .with_context(|| {
        format!(
            "cannot write --textfile {} (through {}); check that the folder exists and is writable",
            path.display(),
            tmp.display()
        )
    })
}

fn thresholds(a: &StatusArgs) -> Result<Thresholds> {
    Ok(Thresholds {
        max_age: jiff::SignedDuration::try_from(a.max_age)?,
        check_max_age: (!a.check_max_age.is_zero())
            .then(|| jiff::SignedDuration::try_from(a.check_max_age))
            .transpose()?,
        ..Thresholds::default()
    })
}

pub fn status(cli: &Cli, a: &StatusArgs) -> Result<u8> {
    let t = thresholds(a)?;
    if a.nagios {
        return Ok(nagios(cli, &t));
    }
    if a.watch {
        return watch(cli, a, &t);
    }
    let h = gather(cli)?;
    let problems = health::assess(&h, &t);
    let verdict = health::verdict(&problems);
    if a.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            status: Severity,
            problems: &'a [Problem],
            #[serde(flatten)]
            health: &'a Health,
        }
        output::json(&Out {
            status: verdict,
            problems: &problems,
            health: &h,
        })?;
    } else {
        print!("{}", render(&h, &problems, verdict));
    }
    Ok(exit_code(verdict))
}

/// `status`'s exit code: 0 healthy, 1 a warning or a critical problem, 4
/// a snapshot object cannot be read.
fn exit_code(v: Severity) -> u8 {
    match v {
        Severity::Ok => exit::OK,
        Severity::Warning | Severity::Critical => exit::ERROR,
        Severity::Unknown => exit::DAMAGED,
    }
}

fn nagios(cli: &Cli, t: &Thresholds) -> u8 {
    let one_line = |s: &str| s.replace(['\n', '\r'], " ").replace('|', "/");
    let (verdict, line) = match gather(cli) {
        Err(e) => (
            Severity::Unknown,
            format!("cannot read the repository: {}", output::error_text(&e)),
        ),
        Ok(h) => {
            let problems = health::assess(&h, t);
            let verdict = health::verdict(&problems);
            let line = if problems.is_empty() {
                format!(
                    "{} source(s), {} snapshot(s), all fresh",
                    h.sources.len(),
                    h.repository.snapshots
                )
            } else {
                problems
                    .iter()
                    .map(|p| p.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            (verdict, line)
        }
    };
    println!("PVSNAP {verdict} - {}", one_line(&line));
    verdict.nagios_code()
}

fn watch(cli: &Cli, a: &StatusArgs, t: &Thresholds) -> Result<u8> {
    let stop = crate::interrupt::clean_stop(b"\n");
    let clear = std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        let text = match gather(cli) {
            Ok(h) => {
                let problems = health::assess(&h, t);
                render(&h, &problems, health::verdict(&problems))
            }
            Err(e) => format!(
                "status: UNKNOWN\n  cannot read the repository: {}\n",
                output::error_text(&e)
            ),
        };
        {
            let mut out = std::io::stdout().lock();
            if clear {
                out.write_all(b"\x1b[H\x1b[2J")?;
            }
            writeln!(
                out,
                "{}  (every {} s; Ctrl-C ends)",
                output::local_time(jiff::Timestamp::now()),
                a.interval
            )?;
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
        let until = std::time::Instant::now() + Duration::from_secs(a.interval.max(1));
        while std::time::Instant::now() < until {
            if stop.requested() {
                return Ok(exit::OK);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A label a person reads on one line: control characters escaped.
fn shown(s: &str) -> String {
    if s.chars().any(char::is_control) {
        format!("{s:?}")
    } else {
        s.to_owned()
    }
}

fn ago(now: jiff::Timestamp, t: jiff::Timestamp) -> String {
    let d = now.duration_since(t);
    if d.is_negative() {
        format!("in {} (future)", health::age(-d))
    } else {
        format!("{} ago", health::age(d))
    }
}

fn render(h: &Health, problems: &[Problem], verdict: Severity) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let r = &h.repository;
    let _ = writeln!(o, "repository:  {}", r.location);
    let _ = writeln!(
        o,
        "size:        {} stored, {} raw, {} snapshot(s){}",
        output::bytes(r.stored_bytes),
        output::bytes(r.raw_bytes),
        r.snapshots,
        r.free_bytes
            .map(|f| format!(", {} free", output::bytes(f)))
            .unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "last check:  {}",
        match &r.last_check {
            None => "never".into(),
            Some(c) => format!("{}, {}", ago(h.time, c.time), c.outcome),
        }
    );
    let _ = writeln!(
        o,
        "last drill:  {}",
        match &r.last_drill {
            None => "never".into(),
            Some(d) => format!(
                "{}, {}{}{}",
                ago(h.time, d.run.time),
                if d.run.ok { "passed" } else { "FAILED" },
                d.source
                    .as_deref()
                    .map(|s| format!(", {}", shown(s)))
                    .unwrap_or_default(),
                d.rto_seconds
                    .map(|s| format!(", RTO {s:.2} s"))
                    .unwrap_or_default()
            ),
        }
    );
    if r.locks.is_empty() {
        let _ = writeln!(o, "locks:       none");
    }
    for l in &r.locks {
        let _ = match (&l.error, l.exclusive) {
            (Some(e), _) => writeln!(o, "lock:        {} unreadable: {e}", l.id),
            (None, x) => writeln!(
                o,
                "lock:        {} lock {} for {} on {} (pid {}), since {}",
                if x == Some(true) {
                    "exclusive"
                } else {
                    "shared"
                },
                l.id.get(..8).unwrap_or(&l.id),
                l.operation.as_deref().unwrap_or("?"),
                l.host.as_deref().unwrap_or("?"),
                l.pid.unwrap_or(0),
                l.time.map(output::local_time).unwrap_or_default()
            ),
        };
    }
    if !h.sources.is_empty() {
        let _ = writeln!(o);
        let rows: Vec<[String; 7]> = h
            .sources
            .iter()
            .map(|s| {
                let trend = match s.size_trend_bytes.as_slice() {
                    [] => "-".to_string(),
                    [one] => output::bytes(*one),
                    [.., a, b] => {
                        let sign = if b >= a { "+" } else { "-" };
                        format!(
                            "{} ({sign}{})",
                            output::bytes(*b),
                            output::bytes(b.abs_diff(*a))
                        )
                    }
                };
                [
                    shown(&s.source),
                    shown(&s.host),
                    s.last_snapshot
                        .as_ref()
                        .map_or("never".into(), |l| ago(h.time, l.time)),
                    s.last_run
                        .as_ref()
                        .map_or("-".into(), |r| r.outcome.clone()),
                    s.snapshots.to_string(),
                    trend,
                    s.native_usage.as_ref().map_or("-".into(), |u| {
                        format!("{:.0}% {}", u.ratio * 100.0, shown(&u.volume))
                    }),
                ]
            })
            .collect();
        let head = ["SOURCE", "HOST", "LAST", "RUN", "SNAPS", "SIZE", "NATIVE"];
        let mut w = head.map(str::len);
        for row in &rows {
            for (i, c) in row.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |o: &mut String, cells: &[&str]| {
            let text: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<width$}", width = w[i]))
                .collect();
            let _ = writeln!(o, "{}", text.join("  ").trim_end());
        };
        line(&mut o, &head);
        for row in &rows {
            line(&mut o, &row.each_ref().map(String::as_str));
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "status: {verdict}");
    for p in problems {
        let _ = writeln!(o, "  {}: {}", p.severity, p.message);
    }
    o
}
