//! Notifications of `pvsnap serve`: each finished job's event is written
//! as one file into an outbox folder, then POSTed by a thread of its own
//! and removed once the receiver answers 2xx. A failing receiver is tried
//! again with a growing delay (1 s, 2 s, 4 s … at most an hour), so it
//! never fails or delays a job, and what is queued survives a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The event, version 1 (the JSON a receiver gets).
#[derive(Debug, Clone, Serialize)]
pub struct JobEvent {
    pub version: u32,
    /// `job_failed` or `job_succeeded`.
    pub event: &'static str,
    pub job: String,
    pub args: Vec<String>,
    pub started: Timestamp,
    pub finished: Timestamp,
    /// `null` when the job was killed by a signal.
    pub exit_code: Option<i32>,
    /// The last 4 KiB of the job's standard error.
    pub stderr_tail: String,
    pub host: String,
}

/// One queued delivery, as stored in the outbox.
#[derive(Serialize, Deserialize)]
struct Pending {
    url: String,
    attempts: u32,
    /// Unix seconds; not before then.
    next_attempt: i64,
    event: serde_json::Value,
}

/// After this many failed attempts (about four days at the hourly cap) a
/// notification is dropped with a warning.
const MAX_ATTEMPTS: u32 = 100;

/// Refuses what is not an http(s) URL.
pub fn check_url(url: &str) -> Result<()> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("`{url}` is not an http:// or https:// URL");
    }
    Ok(())
}

#[derive(Clone)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn new(dir: PathBuf) -> Outbox {
        Outbox { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues `event` for `url` (atomically: a temporary file renamed).
    pub fn enqueue(&self, url: &str, event: &JobEvent) -> Result<()> {
        let p = Pending {
            url: url.to_string(),
            attempts: 0,
            next_attempt: 0,
            event: serde_json::to_value(event)?,
        };
        let name = format!(
            "{:020}-{}.json",
            Timestamp::now().as_nanosecond(),
            sanitize(&event.job)
        );
        write_atomic(&self.dir.join(name), &p)
    }

    /// How many notifications wait in the outbox (0 when it does not exist).
    pub fn pending(&self) -> usize {
        std::fs::read_dir(&self.dir).map_or(0, |d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
    }

    /// Delivers what is due, every half second, until `stop`.
    pub fn deliver_until(&self, stop: &pvsnap_engine::stop::Stop) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(15)))
            .user_agent(concat!("pvsnap/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        while !stop.requested() {
            if let Err(e) = self.deliver_due(&agent) {
                eprintln!("pvsnap serve: notification outbox: {e:#}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn deliver_due(&self, agent: &ureq::Agent) -> Result<()> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .with_context(|| self.dir.display().to_string())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        let now = Timestamp::now().as_second();
        for path in names {
            let mut p: Pending = match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice(&b)?))
            {
                Ok(p) => p,
                Err(e) => {
                    // Not ours, or torn: set aside, never retried in a loop.
                    eprintln!(
                        "pvsnap serve: {}: not a notification ({e}); renamed to .bad",
                        path.display()
                    );
                    let _ = std::fs::rename(&path, path.with_extension("bad"));
                    continue;
                }
            };
            if p.next_attempt > now {
                continue;
            }
            let body = serde_json::to_vec(&p.event)?;
            let result = agent
                .post(&p.url)
                .header("content-type", "application/json")
                .send(&body[..]);
            let why = match result {
                Ok(r) if r.status().is_success() => {
                    std::fs::remove_file(&path)?;
                    continue;
                }
                Ok(r) => format!("answered {}", r.status()),
                Err(e) => e.to_string(),
            };
            p.attempts += 1;
            if p.attempts >= MAX_ATTEMPTS {
                eprintln!(
                    "pvsnap serve: notification {} to {}: {why}; dropped after {} attempts",
                    path.display(),
                    p.url,
                    p.attempts
                );
                std::fs::remove_file(&path)?;
                continue;
            }
            let delay = 1i64 << p.attempts.saturating_sub(1).min(12);
            p.next_attempt = now + delay.min(3600);
            eprintln!(
                "pvsnap serve: notification to {}: {why}; trying again in {}s",
                p.url,
                delay.min(3600)
            );
            write_atomic(&path, &p)?;
        }
        Ok(())
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

fn write_atomic(path: &Path, p: &Pending) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| tmp.display().to_string())?;
    f.write_all(&serde_json::to_vec_pretty(p)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| path.display().to_string())?;
    Ok(())
}
