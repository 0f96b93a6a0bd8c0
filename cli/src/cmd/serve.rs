//! `pvsnap serve`: one long-running process per node. With `--schedule`
//! it runs the schedule's jobs (`pvsnap_ops::schedule`) as child `pvsnap`
//! processes; with `--listen` it answers `/healthz` and `/metrics` over a
//! small synchronous HTTP/1.1 server; with `--notify` (or a job's
//! `notify`) it queues a JSON event per finished job in an outbox folder
//! and delivers it with retries (`notify.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use jiff::Timestamp;
use pvsnap_ops::schedule::{self, Event, JobState, Schedule};

use crate::Cli;
use crate::cmd::notify::{self, Outbox};

#[derive(clap::Args)]
pub struct Args {
    /// Serve /healthz and /metrics on this address, e.g. :9934 or 127.0.0.1:9934
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Run the jobs of this schedule file (TOML; see README "Running it for real")
    #[arg(long, value_name = "FILE")]
    pub schedule: Option<PathBuf>,
    /// Where the scheduler keeps its state (default: /var/lib/pvsnap/serve/state.json as root,
    /// else ~/.local/share/pvsnap/serve/state.json); the notification outbox is the folder `outbox` next to it
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// POST a JSON event here when a job fails (jobs may name their own `notify`)
    #[arg(long, value_name = "URL")]
    pub notify: Option<String>,
    /// How long a running job may take to stop after SIGTERM before serve exits anyway
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = crate::cmd::maintenance::parse_duration)]
    pub stop_timeout: Duration,
    /// Only read the schedule, print each job's next start and command, and exit
    #[arg(long, requires = "schedule")]
    pub check: bool,
}

/// What the scheduler loop shares with the HTTP server.
#[derive(Default)]
struct Status {
    /// Whether a schedule runs at all (else /healthz is about the server).
    scheduling: bool,
    /// The last turn of the scheduler loop; `None` once it ended.
    heartbeat: Option<Instant>,
    jobs: Vec<String>,
    states: BTreeMap<String, JobState>,
    running: BTreeSet<String>,
}

/// The state `/healthz` and `/metrics` read.
#[derive(Clone, Default)]
pub struct Context {
    status: Arc<Mutex<Status>>,
    /// How to run `pvsnap metrics` on the repository: the executable and
    /// the global options. Each scrape runs it as a child, like a job, so
    /// a repository that cannot be read never takes serve down.
    repository: Option<(PathBuf, Vec<String>)>,
}

/// The loop is alive if it turned within this time (it turns every 0.5 s).
const STALE: Duration = Duration::from_secs(10);

impl Context {
    fn healthy(&self) -> bool {
        let s = self.status.lock().expect("status");
        !s.scheduling || s.heartbeat.is_some_and(|t| t.elapsed() < STALE)
    }
}

/// The text of `/metrics` (Prometheus text format): the scheduler's own
/// series, then the repository's (`pvsnap metrics`, run as a child) and
/// whether it could be read.
pub fn metrics_text(ctx: &Context) -> Result<String> {
    use std::fmt::Write as _;
    let s = ctx.status.lock().expect("status");
    let mut out = String::new();
    let label = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    out.push_str("# HELP pvsnap_schedule_runs_total Scheduled runs that ended, by outcome.\n");
    out.push_str("# TYPE pvsnap_schedule_runs_total counter\n");
    for job in &s.jobs {
        let st = s.states.get(job).cloned().unwrap_or_default();
        let j = label(job);
        writeln!(
            out,
            "pvsnap_schedule_runs_total{{job=\"{j}\",outcome=\"success\"}} {}",
            st.runs - st.failures.min(st.runs)
        )?;
        writeln!(
            out,
            "pvsnap_schedule_runs_total{{job=\"{j}\",outcome=\"failure\"}} {}",
            st.failures
        )?;
    }
    out.push_str("# HELP pvsnap_schedule_missed_total Scheduled slots not run (the previous run had not ended, or serve was down).\n");
    out.push_str("# TYPE pvsnap_schedule_missed_total counter\n");
    for job in &s.jobs {
        let st = s.states.get(job).cloned().unwrap_or_default();
        writeln!(
            out,
            "pvsnap_schedule_missed_total{{job=\"{}\"}} {}",
            label(job),
            st.missed
        )?;
    }
    out.push_str("# HELP pvsnap_schedule_running Whether the job runs now (1) or not (0).\n");
    out.push_str("# TYPE pvsnap_schedule_running gauge\n");
    for job in &s.jobs {
        writeln!(
            out,
            "pvsnap_schedule_running{{job=\"{}\"}} {}",
            label(job),
            u8::from(s.running.contains(job))
        )?;
    }
    drop(s);
    if let Some((program, global)) = &ctx.repository {
        let run = std::process::Command::new(program)
            .args(global)
            .arg("metrics")
            .stdin(std::process::Stdio::null())
            .output();
        let readable = match &run {
            Ok(o) if o.status.success() => {
                out.push_str(&String::from_utf8_lossy(&o.stdout));
                true
            }
            Ok(o) => {
                eprintln!(
                    "pvsnap serve: /metrics: the repository could not be read: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                false
            }
            Err(e) => {
                eprintln!("pvsnap serve: /metrics: `pvsnap metrics` did not start: {e}");
                false
            }
        };
        out.push_str("# HELP pvsnap_repository_readable Whether serve could read the repository's health at this scrape (1) or not (0).\n");
        out.push_str("# TYPE pvsnap_repository_readable gauge\n");
        writeln!(out, "pvsnap_repository_readable {}", u8::from(readable))?;
    }
    Ok(out)
}

/// This node's name: `PVSNAP_NODE` (the DaemonSet sets it from the
/// downward API), else the host name snapshots record.
fn node_name() -> String {
    std::env::var("PVSNAP_NODE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(pvsnap_engine::repo::hostname_public)
}

pub fn run(cli: &Cli, args: &Args) -> Result<u8> {
    if args.listen.is_none() && args.schedule.is_none() {
        bail!(
            "serve needs --schedule FILE (run jobs), --listen ADDR (health and metrics), or both"
        );
    }
    if let Some(url) = &args.notify {
        notify::check_url(url).context("--notify")?;
    }
    let schedule = match &args.schedule {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("schedule {}", path.display()))?;
            let s =
                Schedule::parse(&text, &crate::cmd::maintenance::parse_duration).map_err(|e| {
                    anyhow::anyhow!(
                        "schedule {}: {e}; see README \"Running it for real\" for the format",
                        path.display()
                    )
                })?;
            Some(Schedule {
                node: node_name(),
                ..s
            })
        }
        None => None,
    };
    if args.check
        && let Some(sch) = &schedule
    {
        let now = Timestamp::now();
        for j in &sch.jobs {
            let next = j
                .cron
                .next_after(now, &sch.time_zone)
                .map(|slot| schedule::start_time(j, &sch.node, slot).to_string())
                .unwrap_or_else(|| "never".into());
            println!("job {}: next {next}: pvsnap {}", j.name, j.args.join(" "));
        }
        return Ok(crate::exit::OK);
    }
    let state_file = match &args.state {
        Some(p) => p.clone(),
        None => default_state()?,
    };
    if let Some(dir) = state_file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("state folder {}", dir.display()))?;
    }
    let ctx = Context {
        repository: Some((
            std::env::current_exe().context("finding the pvsnap executable")?,
            global_args(cli),
        )),
        ..Context::default()
    };
    {
        let mut s = ctx.status.lock().expect("status");
        s.scheduling = schedule.is_some();
        s.heartbeat = Some(Instant::now());
        if let Some(sch) = &schedule {
            s.jobs = sch.jobs.iter().map(|j| j.name.clone()).collect();
            s.states = schedule::load_state(&state_file).map_err(anyhow::Error::msg)?;
        }
    }
    let stop = crate::interrupt::clean_stop(STOPPING);
    if let Some(addr) = &args.listen {
        let listener = bind(addr)?;
        eprintln!(
            "pvsnap serve: listening on http://{}",
            listener.local_addr()?
        );
        let ctx = ctx.clone();
        std::thread::spawn(move || serve_http(listener, &ctx));
    }
    let outbox = Outbox::new(outbox_dir(&state_file));
    // Notifications a previous run left undelivered go out even when this
    // run notifies nothing new.
    let pending = outbox.pending();
    if pending > 0 {
        eprintln!(
            "pvsnap serve: {pending} notification(s) left from a previous run in {}: delivering",
            outbox.dir().display()
        );
    }
    let any_notify = pending > 0
        || args.notify.is_some()
        || schedule
            .iter()
            .flat_map(|s| &s.jobs)
            .any(|j| j.notify.is_some());
    if any_notify {
        std::fs::create_dir_all(outbox.dir())
            .with_context(|| format!("notification outbox {}", outbox.dir().display()))?;
        let (outbox, stop) = (outbox.clone(), stop.clone());
        std::thread::spawn(move || outbox.deliver_until(&stop));
    }
    match &schedule {
        Some(sch) => run_schedule(cli, args, sch, &state_file, &ctx, &outbox, &stop)?,
        None => {
            while !stop.requested() {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    eprintln!("pvsnap serve: stopped");
    Ok(crate::exit::OK)
}

const STOPPING: &[u8] = b"\npvsnap serve: stopping: no new jobs; asking the running ones to stop (send the signal again to stop at once)\n";

fn run_schedule(
    cli: &Cli,
    args: &Args,
    sch: &Schedule,
    state_file: &Path,
    ctx: &Context,
    outbox: &Outbox,
    stop: &pvsnap_engine::stop::Stop,
) -> Result<()> {
    let tails = Arc::new(Mutex::new(BTreeMap::new()));
    let mut runner = schedule::run::ProcessRunner {
        program: std::env::current_exe().context("finding the pvsnap executable")?,
        global: global_args(cli),
        tails: tails.clone(),
        terminate,
        kill: kill_group,
    };
    let host = sch.node.clone();
    let jobs: BTreeMap<&str, &schedule::Job> =
        sch.jobs.iter().map(|j| (j.name.as_str(), j)).collect();
    let mut started: BTreeMap<String, Timestamp> = BTreeMap::new();
    let mut on_event = |e: &Event, states: &BTreeMap<String, JobState>| {
        let mut s = ctx.status.lock().expect("status");
        s.states = states.clone();
        match e {
            Event::Started { job, slot } => {
                eprintln!("pvsnap serve: job {job} started (slot {slot})");
                s.running.insert(job.clone());
                started.insert(job.clone(), Timestamp::now());
            }
            Event::Finished { job, outcome } => {
                s.running.remove(job);
                let Some(j) = jobs.get(job.as_str()) else {
                    return;
                };
                if outcome.killed {
                    eprintln!(
                        "pvsnap serve: job {job} still ran {} after SIGTERM (--stop-timeout): killed (SIGKILL to its process group); recorded as failed",
                        crate::progress::duration(args.stop_timeout)
                    );
                    record_killed(cli, j, args.stop_timeout);
                } else {
                    let code = outcome
                        .code
                        .map_or_else(|| "killed by a signal".into(), |c| format!("exit code {c}"));
                    eprintln!("pvsnap serve: job {job} ended: {code}");
                }
                let failed = outcome.code != Some(0);
                let url = j.notify.as_ref().or(args.notify.as_ref());
                if let Some(url) = url
                    && (failed || j.notify_always)
                {
                    let tail = tails.lock().expect("tails").remove(job).unwrap_or_default();
                    let event = notify::JobEvent {
                        version: 1,
                        event: if failed {
                            "job_failed"
                        } else {
                            "job_succeeded"
                        },
                        job: job.clone(),
                        args: j.args.clone(),
                        started: started.remove(job).unwrap_or_else(Timestamp::now),
                        finished: Timestamp::now(),
                        exit_code: outcome.code,
                        stderr_tail: String::from_utf8_lossy(&tail).into_owned(),
                        host: host.clone(),
                    };
                    if let Err(e) = outbox.enqueue(url, &event) {
                        eprintln!("pvsnap serve: job {job}: cannot queue its notification: {e}");
                    }
                }
            }
            Event::Missed { job, slot, why } => {
                eprintln!("pvsnap serve: job {job}: slot {slot} not run: {why}");
            }
        }
    };
    let alive = || {
        ctx.status.lock().expect("status").heartbeat = Some(Instant::now());
    };
    let result = schedule::run::run(
        sch,
        state_file,
        &mut runner,
        stop,
        args.stop_timeout,
        &mut on_event,
        &alive,
    );
    ctx.status.lock().expect("status").heartbeat = None;
    result.map_err(anyhow::Error::msg)
}

/// SIGKILL to the process group a job leads (`ProcessRunner` starts each
/// job as the leader of its own group).
fn kill_group(pid: u32) {
    // SAFETY: kill(2) with the negated pid of a child this process started
    // with its own process group and has not reaped yet.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}

/// Writes the audit entry a killed job could not write itself: the
/// operation its command line records (one entry per source for a
/// snapshot, as `snapshot` writes them), `interrupted`, with the reason.
/// A failure is said on stderr, never fatal: serve is stopping.
fn record_killed(cli: &Cli, job: &schedule::Job, timeout: Duration) {
    use clap::Parser as _;
    use pvsnap_engine::repo::audit::{self, Entry, Outcome};
    let line = std::iter::once("pvsnap".to_string())
        .chain(global_args(cli))
        .chain(job.args.iter().cloned());
    let Ok(parsed) = Cli::try_parse_from(line) else {
        eprintln!(
            "pvsnap serve: job {}: its arguments do not parse; no audit entry written",
            job.name
        );
        return;
    };
    let Some(operation) = crate::audit::operation(&parsed.command) else {
        return; // a command that records nothing
    };
    let sources: Vec<Option<String>> = match &parsed.command {
        crate::Command::Snapshot(a) if !a.paths.is_empty() => a
            .paths
            .iter()
            .map(|p| {
                let s = p.to_string_lossy();
                Some(if s.starts_with("pvc/") {
                    s.into_owned()
                } else {
                    std::fs::canonicalize(p)
                        .map(|c| c.to_string_lossy().into_owned())
                        .unwrap_or_else(|_| absolute(p))
                })
            })
            .collect(),
        _ => vec![None],
    };
    let repo = match crate::repo::open(&parsed, false, false) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "pvsnap serve: job {}: cannot open the repository to record the kill in the audit trail: {e:#}",
                job.name
            );
            return;
        }
    };
    for source in sources {
        let mut e = Entry::new(&operation, Outcome::Failed);
        e.source = source;
        e.args = job.args.clone();
        e.error = Some(format!(
            "killed by pvsnap serve: job {} still ran {} after SIGTERM (--stop-timeout)",
            job.name,
            crate::progress::duration(timeout)
        ));
        if let Err(err) = audit::record(&repo, e) {
            eprintln!(
                "pvsnap serve: job {}: could not record the kill in the audit trail: {err}",
                job.name
            );
        }
    }
}

/// SIGTERM to a job's process.
fn terminate(pid: u32) {
    // SAFETY: kill(2) with a pid of a child this process started and has
    // not reaped yet, so the pid is not reused.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

/// The global options a job's child process gets: the same repository,
/// password file, cache and verbosity as serve's own.
fn global_args(cli: &Cli) -> Vec<String> {
    let mut g = vec![];
    if let Some(r) = &cli.repo {
        g.push("--repo".into());
        g.push(absolute(r));
    }
    if let Some(p) = &cli.password_file {
        g.push("--password-file".into());
        g.push(absolute(p));
    }
    if let Some(c) = cli.connections {
        g.extend(["--connections".into(), c.to_string()]);
    }
    if cli.no_cache {
        g.push("--no-cache".into());
    }
    if let Some(c) = cli.cache_size {
        g.extend(["--cache-size".into(), c.to_string()]);
    }
    if cli.quiet {
        g.push("--quiet".into());
    }
    for _ in 0..cli.verbose {
        g.push("-v".into());
    }
    g
}

/// A path as given, made absolute against the current folder (an `s3:`
/// location is kept as it is).
fn absolute(p: &Path) -> String {
    let s = p.to_string_lossy();
    if s.starts_with("s3:") || p.is_absolute() {
        return s.into_owned();
    }
    std::path::absolute(p)
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|_| s.into_owned())
}

fn default_state() -> Result<PathBuf> {
    let repo = crate::repo::default_repo()?;
    Ok(repo
        .parent()
        .unwrap_or(Path::new("/"))
        .join("serve/state.json"))
}

/// The outbox folder: `outbox` next to the state file.
fn outbox_dir(state_file: &Path) -> PathBuf {
    state_file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("outbox")
}

/// Binds `ADDR`; `:PORT` means every interface.
fn bind(addr: &str) -> Result<TcpListener> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    };
    TcpListener::bind(&full).with_context(|| {
        format!("--listen {addr}: cannot listen there (give HOST:PORT or :PORT, and a port that is free)")
    })
}

/// At most this many requests are answered at once; more are closed.
const MAX_CLIENTS: usize = 32;

fn serve_http(listener: TcpListener, ctx: &Context) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let clients = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        if clients.load(Ordering::SeqCst) >= MAX_CLIENTS {
            continue;
        }
        clients.fetch_add(1, Ordering::SeqCst);
        let (ctx, clients) = (ctx.clone(), clients.clone());
        // One thread per request: a slow client never blocks the next.
        std::thread::spawn(move || {
            let _ = answer(conn, &ctx);
            clients.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Answers one request and closes the connection.
fn answer(conn: TcpStream, ctx: &Context) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?).take(16 * 1024);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Skip the headers.
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/healthz") => {
            if ctx.healthy() {
                ("200 OK", "text/plain", "ok\n".to_string())
            } else {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    "the scheduler loop is not running\n".to_string(),
                )
            }
        }
        ("GET" | "HEAD", "/metrics") => match metrics_text(ctx) {
            Ok(t) => ("200 OK", "text/plain; version=0.0.4", t),
            Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
        },
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain",
            "not found: pvsnap serve answers /healthz and /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET and HEAD\n".to_string(),
        ),
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        conn.write_all(body.as_bytes())?;
    }
    conn.flush()
}
