//! Database freeze presets (`--freeze postgres|mysql|mongodb`): hold a
//! database still while a native snapshot is made.
//!
//! Each preset keeps ONE client session open from freeze to thaw: the
//! database's own client (`psql`, `mysql`, `mongosh`) runs as a child with
//! its stdin kept open; pvsnap writes one statement at a time and reads the
//! client's output up to a marker it prints after each, so it knows when the
//! lock is held. When the client dies (pvsnap killed, the child killed) the
//! server ends the session and with it the lock or the backup (PostgreSQL,
//! MySQL). MongoDB's `fsyncLock` is the exception: it outlives the session,
//! so a killed pvsnap leaves it locked until `db.fsyncUnlock()`.
//!
//! Credentials never reach a command line: the clients read `PGPASSWORD` /
//! `PGPASSFILE`, `MYSQL_PWD` or an option file (`--defaults-extra-file`),
//! and mongosh reads its URI from `MONGODB_URI` inside the session script.
//!
//! The recipes ([`Preset::client_argv`], [`Preset::freeze_script`]) are
//! plain data so that claims can run the same session in the pod over exec.

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::{Freezer, Frozen, KeptFile};

/// How long a preset waits for its lock by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a marker line starts with; the rest is a counter.
const MARKER: &str = "__pvsnap_mark_";

/// The preset names `--freeze` takes.
pub const PRESETS: [&str; 3] = ["postgres", "mysql", "mongodb"];

/// The databases pvsnap knows how to freeze.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Postgres,
    Mysql,
    Mongodb,
}

impl Preset {
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Postgres => "postgres",
            Preset::Mysql => "mysql",
            Preset::Mongodb => "mongodb",
        }
    }

    /// The client tool the session runs.
    pub fn client(self) -> &'static str {
        match self {
            Preset::Postgres => "psql",
            Preset::Mysql => "mysql",
            Preset::Mongodb => "mongosh",
        }
    }

    /// The client's arguments after an optional connection file (which
    /// only MySQL takes as an argument: `--defaults-extra-file=FILE` must
    /// come first). No credential is ever among them.
    pub fn client_argv(self, conn_file: Option<&std::path::Path>) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![self.client().into()];
        match self {
            Preset::Postgres => {
                // No ~/.psqlrc, never a password prompt on the terminal (it
                // would wait for nobody), unaligned rows without headers,
                // stop at the first error (the session then ends and so
                // does the backup).
                argv.extend(
                    ["-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"].map(Into::into),
                );
            }
            Preset::Mysql => {
                if let Some(f) = conn_file {
                    let mut a = OsString::from("--defaults-extra-file=");
                    a.push(f);
                    argv.push(a);
                }
                // Batch rows without column names, flushed after each
                // statement so the marker arrives when it is printed.
                argv.extend(["--batch", "--skip-column-names", "--unbuffered"].map(Into::into));
            }
            Preset::Mongodb => {
                argv.extend(["--nodb", "--quiet"].map(Into::into));
            }
        }
        argv
    }

    /// The line that makes the client print `marker`.
    pub fn marker_statement(self, marker: &str) -> String {
        match self {
            Preset::Postgres => format!("\\echo {marker}"),
            Preset::Mysql => format!("SELECT '{marker}';"),
            Preset::Mongodb => format!("print('{marker}')"),
        }
    }

    /// The statements that freeze, in order (PostgreSQL: for a server of
    /// `server_version_num`; others ignore it).
    pub fn freeze_script(self, server_version_num: u32) -> Vec<String> {
        match self {
            Preset::Postgres if server_version_num >= 150000 => vec![
                "CHECKPOINT;".into(),
                "SELECT pg_backup_start('pvsnap', true);".into(),
            ],
            Preset::Postgres => vec![
                "CHECKPOINT;".into(),
                // Non-exclusive (third argument false): tied to this session.
                "SELECT pg_start_backup('pvsnap', true, false);".into(),
            ],
            Preset::Mysql => vec!["FLUSH TABLES WITH READ LOCK;".into()],
            Preset::Mongodb => vec![
                // The URI comes from the environment, never from argv.
                "db = connect(process.env.MONGODB_URI || 'mongodb://localhost:27017/admin');"
                    .into(),
                "db.fsyncLock();".into(),
            ],
        }
    }

    /// The statements that thaw. PostgreSQL's return the backup label and
    /// tablespace map hex-encoded, one per line (hex: no line breaks).
    pub fn thaw_script(self, server_version_num: u32) -> Vec<String> {
        match self {
            Preset::Postgres => {
                let stop = if server_version_num >= 150000 {
                    "pg_backup_stop(false)"
                } else {
                    "pg_stop_backup(false, false)"
                };
                vec![format!(
                    "SELECT encode(convert_to(labelfile, 'UTF8'), 'hex'), \
                     encode(convert_to(coalesce(spcmapfile, ''), 'UTF8'), 'hex') FROM {stop};"
                )]
            }
            Preset::Mysql => vec!["UNLOCK TABLES;".into()],
            Preset::Mongodb => vec!["db.fsyncUnlock();".into()],
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Preset> {
        match s {
            "postgres" | "postgresql" => Ok(Preset::Postgres),
            "mysql" | "mariadb" => Ok(Preset::Mysql),
            "mongodb" | "mongo" => Ok(Preset::Mongodb),
            _ => Err(Error::Refused {
                what: format!("--freeze {s}"),
                detail: "unknown freeze preset; use postgres, mysql or mongodb".into(),
            }),
        }
    }
}

/// How a preset connects and how long it waits.
#[derive(Debug, Clone)]
pub struct Options {
    /// The client to run instead of the preset's (a path; tests, or a
    /// client outside `PATH`).
    pub program: Option<OsString>,
    /// Extra environment for the client only (`PGHOST`, `PGPASSWORD`, …).
    pub env: Vec<(OsString, OsString)>,
    /// `--freeze-conn FILE`: MySQL takes it as `--defaults-extra-file`;
    /// PostgreSQL and MongoDB read it as `KEY=VALUE` lines added to the
    /// client's environment (`PGHOST=…`, `PGPASSWORD=…`, `MONGODB_URI=…`).
    pub conn_file: Option<PathBuf>,
    /// How long to wait for the lock (and for the thaw) before giving up.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            program: None,
            env: Vec::new(),
            conn_file: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The freezer for `--freeze NAME`.
pub fn preset(name: &str, options: Options) -> Result<Box<dyn Freezer>> {
    let preset: Preset = name.parse()?;
    Ok(Box::new(HostFreezer::new(preset, options)?))
}

/// A preset run on this host.
pub struct HostFreezer {
    preset: Preset,
    options: Options,
    /// Environment from the connection file (not for MySQL).
    file_env: Vec<(String, String)>,
}

impl HostFreezer {
    pub fn new(preset: Preset, options: Options) -> Result<HostFreezer> {
        let file_env = match (&options.conn_file, preset) {
            (Some(f), Preset::Postgres | Preset::Mongodb) => read_env_file(f)?,
            (Some(f), Preset::Mysql) => {
                // Checked here so the error names the file, not the client.
                std::fs::metadata(f).map_err(|source| Error::Io {
                    path: f.clone(),
                    source,
                })?;
                Vec::new()
            }
            (None, _) => Vec::new(),
        };
        Ok(HostFreezer {
            preset,
            options,
            file_env,
        })
    }

    /// The connection's value of `key`: the connection file, then the
    /// options' environment, then pvsnap's own.
    fn setting(&self, key: &str) -> Option<String> {
        self.file_env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| {
                self.options
                    .env
                    .iter()
                    .rev()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.to_string_lossy().into_owned())
            })
            .or_else(|| std::env::var(key).ok())
    }

    /// Which database this is, for messages: never the password.
    fn target(&self) -> String {
        let s = |k: &str| self.setting(k);
        match self.preset {
            Preset::Postgres => format!(
                "PostgreSQL database {} on {}:{}",
                s("PGDATABASE")
                    .or_else(|| s("PGUSER"))
                    .unwrap_or_else(|| "(default)".into()),
                s("PGHOST").unwrap_or_else(|| "(local socket)".into()),
                s("PGPORT").unwrap_or_else(|| "5432".into()),
            ),
            Preset::Mysql => {
                let file = |k| {
                    self.options
                        .conn_file
                        .as_deref()
                        .and_then(|f| option_file_value(f, k))
                };
                let mut t = format!(
                    "MySQL server on {}:{}",
                    file("host")
                        .or_else(|| s("MYSQL_HOST"))
                        .unwrap_or_else(|| "localhost".into()),
                    file("port")
                        .or_else(|| s("MYSQL_TCP_PORT"))
                        .unwrap_or_else(|| "3306".into()),
                );
                if let Some(f) = &self.options.conn_file {
                    t.push_str(&format!(" (options from {})", f.display()));
                }
                t
            }
            Preset::Mongodb => format!(
                "MongoDB at {}",
                s("MONGODB_URI")
                    .map(|u| redact_uri(&u))
                    .unwrap_or_else(|| "mongodb://localhost:27017".into())
            ),
        }
    }

    /// Secret values that must never appear in a message.
    fn secrets(&self) -> Vec<String> {
        ["PGPASSWORD", "MYSQL_PWD", "MONGODB_URI"]
            .iter()
            .filter_map(|k| self.setting(k))
            .filter(|v| v.len() >= 3)
            .collect()
    }

    fn spawn(&self) -> Result<Session> {
        let argv = self.preset.client_argv(self.options.conn_file.as_deref());
        let program = self
            .options
            .program
            .clone()
            .unwrap_or_else(|| argv[0].clone());
        let mut cmd = Command::new(&program);
        cmd.args(&argv[1..])
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.options.env {
            cmd.env(k, v);
        }
        for (k, v) in &self.file_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|source| Error::ToolMissing {
            tool: program.to_string_lossy().into_owned(),
            source,
        })?;
        Ok(Session::new(
            self.preset,
            self.target(),
            self.secrets(),
            Box::new(LocalClient::new(child)),
            self.options.timeout,
        ))
    }
}

impl Freezer for HostFreezer {
    fn name(&self) -> &str {
        self.preset.as_str()
    }

    fn freeze(&self) -> Result<Box<dyn Frozen>> {
        hold(self.spawn()?)
    }
}

/// Freezes through an open client `session` (on this host or in a pod) and
/// returns the guard that holds the session until the thaw.
pub fn hold(mut session: Session) -> Result<Box<dyn Frozen>> {
    let timeout = session.timeout;
    let deadline = Instant::now() + timeout;
    let version = match session.preset {
        Preset::Postgres => {
            let out = session.run("SHOW server_version_num;", deadline)?;
            parse_version(&out).ok_or_else(|| {
                session.fail(format!(
                    "`SHOW server_version_num` answered {:?}, not a version number",
                    out.join("\n")
                ))
            })?
        }
        _ => 0,
    };
    if session.preset == Preset::Mysql {
        // The server gives up too, so a lock request never outlives
        // the timeout even if this process is stopped mid-wait.
        let secs = timeout.as_secs().max(1);
        session.run(
            &format!("SET SESSION lock_wait_timeout = {secs};"),
            deadline,
        )?;
    }
    // The last statement holds the database; those before it prepare.
    let mut held_since = Instant::now();
    let script = session.preset.freeze_script(version);
    for (i, statement) in script.iter().enumerate() {
        if i + 1 == script.len() {
            held_since = Instant::now();
        }
        session.run(statement, deadline)?;
    }
    Ok(Box::new(HeldSession {
        session: Some(session),
        version,
        timeout,
        held_since,
    }))
}

/// A database frozen by a preset; its client session holds the lock.
struct HeldSession {
    session: Option<Session>,
    version: u32,
    timeout: Duration,
    held_since: Instant,
}

impl Frozen for HeldSession {
    fn held_since(&self) -> Option<Instant> {
        Some(self.held_since)
    }

    fn thaw(self: Box<Self>) -> Result<()> {
        self.thaw_keeping().map(drop)
    }

    fn thaw_keeping(mut self: Box<Self>) -> Result<Vec<KeptFile>> {
        let mut session = self.session.take().expect("thawed once");
        let deadline = Instant::now() + self.timeout;
        let mut last = Vec::new();
        for statement in session.preset.thaw_script(self.version) {
            last = session.run(&statement, deadline)?;
        }
        let kept = match session.preset {
            Preset::Postgres => {
                let row = last.last().cloned().unwrap_or_default();
                let (label, map) = row.split_once('|').unwrap_or((row.as_str(), ""));
                let label = unhex(label).ok_or_else(|| {
                    session.fail(format!("the backup label came back as {row:?}, not hex"))
                })?;
                let map = unhex(map).unwrap_or_default();
                let mut kept = vec![KeptFile {
                    name: "backup_label".into(),
                    contents: label,
                }];
                if !map.is_empty() {
                    kept.push(KeptFile {
                        name: "tablespace_map".into(),
                        contents: map,
                    });
                }
                kept
            }
            _ => Vec::new(),
        };
        session.close();
        Ok(kept)
    }
}

impl Drop for HeldSession {
    fn drop(&mut self) {
        // Not thawed (an error or a panic in between): ending the session
        // ends the lock (MySQL) or the backup (PostgreSQL). MongoDB's lock
        // outlives the session, so it gets its unlock first.
        if let Some(mut session) = self.session.take() {
            tracing::warn!("{}: thawing after an interruption", session.target);
            if session.preset == Preset::Mongodb {
                let deadline = Instant::now() + self.timeout;
                for statement in session.preset.thaw_script(self.version) {
                    if let Err(e) = session.run(&statement, deadline) {
                        tracing::warn!("{e}");
                    }
                }
            }
            session.close();
        }
    }
}

/// What a client session runs over: the client's stdin, its stdout read
/// as lines, and how it ended. A child process on this host
/// ([`LocalClient`]) or a process in a pod over an exec stream.
pub trait LineStream: Send {
    /// Writes `text` to the client's stdin (and flushes it).
    fn send(&mut self, text: &str) -> std::io::Result<()>;
    /// The next line the client printed on stdout, waiting until `deadline`.
    fn recv(&mut self, deadline: Instant) -> Recv;
    /// After the client ended: its exit status and what it said on stderr
    /// (empty when nothing), each for a message.
    fn ended(&mut self) -> (String, String);
    /// Ends the client now (a request that waits too long is withdrawn).
    fn kill(&mut self);
    /// Ends the client politely (end of its input), surely (`kill`) when
    /// it lingers past `grace`.
    fn close(&mut self, grace: Duration);
}

/// What [`LineStream::recv`] got.
pub enum Recv {
    Line(String),
    /// The client's stdout ended (it exited, or the stream closed).
    Ended,
    Timeout,
}

impl Recv {
    /// The next line a reader thread sent on `lines`, waiting until
    /// `deadline`; the sender gone is the client's end.
    pub fn from_channel(lines: &Receiver<String>, deadline: Instant) -> Recv {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => Recv::Line(line),
            Err(RecvTimeoutError::Disconnected) => Recv::Ended,
            Err(RecvTimeoutError::Timeout) => Recv::Timeout,
        }
    }
}

/// A client run as a child of this process.
pub struct LocalClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_done: Option<std::thread::JoinHandle<()>>,
}

impl LocalClient {
    /// Takes over `child`, spawned with piped stdin, stdout and stderr.
    pub fn new(mut child: Child) -> LocalClient {
        let stdin = child.stdin.take();
        let (tx, lines) = channel();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("piped");
        let err_buf = Arc::clone(&stderr);
        let stderr_done = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut b = err_buf.lock().unwrap_or_else(|e| e.into_inner());
                if b.len() < 16 * 1024 {
                    b.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        LocalClient {
            child,
            stdin,
            lines,
            stderr,
            stderr_done: Some(stderr_done),
        }
    }
}

impl LineStream for LocalClient {
    fn send(&mut self, text: &str) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(text.as_bytes())
                .and_then(|()| stdin.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn recv(&mut self, deadline: Instant) -> Recv {
        Recv::from_channel(&self.lines, deadline)
    }

    fn ended(&mut self) -> (String, String) {
        let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
        if let Some(t) = self.stderr_done.take() {
            let _ = t.join();
        }
        let said = self
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .trim()
            .to_owned();
        (status, said)
    }

    fn kill(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn close(&mut self, grace: Duration) {
        self.stdin = None;
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

impl Drop for LocalClient {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// One client session of a preset and what it printed.
pub struct Session {
    preset: Preset,
    target: String,
    secrets: Vec<String>,
    stream: Box<dyn LineStream>,
    count: u32,
    /// The freeze timeout: for each step, and for messages.
    timeout: Duration,
}

impl Session {
    /// A session of `preset` over `stream`. `target` names the database in
    /// messages; `secrets` are never shown in them.
    pub fn new(
        preset: Preset,
        target: String,
        secrets: Vec<String>,
        stream: Box<dyn LineStream>,
        timeout: Duration,
    ) -> Session {
        Session {
            preset,
            target,
            secrets,
            stream,
            count: 0,
            timeout,
        }
    }

    /// Sends `statement` and a marker; returns the lines printed before the
    /// marker. Errors when the client ends first or the deadline passes.
    fn run(&mut self, statement: &str, deadline: Instant) -> Result<Vec<String>> {
        self.count += 1;
        let marker = format!("{MARKER}{}", self.count);
        let text = format!("{statement}\n{}\n", self.preset.marker_statement(&marker));
        if self.stream.send(&text).is_err() {
            return Err(self.ended(statement));
        }
        let mut out = Vec::new();
        loop {
            match self.stream.recv(deadline) {
                Recv::Line(line) if line.trim() == marker => return Ok(out),
                Recv::Line(line) => out.push(line),
                Recv::Ended => return Err(self.ended(statement)),
                Recv::Timeout => {
                    // Ending the session withdraws the waiting request.
                    self.stream.kill();
                    return Err(self.fail(format!(
                        "`{statement}` did not finish within the freeze timeout ({}s); \
                         another session holds a lock it waits for (a long query, \
                         LOCK TABLES, a running backup): find it, or raise the timeout",
                        self.timeout.as_secs_f64()
                    )));
                }
            }
        }
    }

    /// The error for a client that ended while `statement` ran.
    fn ended(&mut self, statement: &str) -> Error {
        let (status, said) = self.stream.ended();
        let said = if said.is_empty() {
            "it printed nothing on stderr".to_owned()
        } else {
            said
        };
        self.fail(format!(
            "`{}` ended ({status}) at `{statement}`: {said}",
            self.preset.client()
        ))
    }

    fn fail(&self, detail: String) -> Error {
        let mut detail = detail;
        for s in &self.secrets {
            detail = detail.replace(s.as_str(), "***");
        }
        Error::Freeze {
            database: self.target.clone(),
            detail,
        }
    }

    fn close(&mut self) {
        self.stream.close(Duration::from_secs(5));
    }
}

fn parse_version(lines: &[String]) -> Option<u32> {
    lines.iter().find_map(|l| l.trim().parse().ok())
}

fn unhex(s: &str) -> Option<String> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// `mongodb://user:secret@host/db` → `mongodb://user:***@host/db`.
fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return "(a URI that is not mongodb://…)".into();
    };
    match rest.split_once('@') {
        Some((cred, host)) => {
            let user = cred.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => uri.to_owned(),
    }
}

/// `key=value` from a MySQL option file's `[client]` (or `[mysql]`,
/// `[client-mariadb]`) group, for messages only.
fn option_file_value(path: &std::path::Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut in_client = false;
    let mut found = None;
    for line in text.lines().map(str::trim) {
        if let Some(group) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_client = matches!(
                group.trim(),
                "client" | "mysql" | "client-mariadb" | "mariadb-client"
            );
        } else if in_client
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            found = Some(v.trim().trim_matches('"').to_owned());
        }
    }
    found
}

/// `KEY=VALUE` lines; blank lines and `#` comments skipped.
fn read_env_file(path: &std::path::Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut env = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !k.contains(char::is_whitespace) => {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                    .unwrap_or(v);
                env.push((k.trim().to_owned(), v.to_owned()));
            }
            // The line is not echoed: it may hold a password.
            _ => {
                return Err(Error::Refused {
                    what: path.display().to_string(),
                    detail: format!(
                        "line {} is not KEY=VALUE; write one setting a line, e.g. PGHOST=db.local",
                        n + 1
                    ),
                });
            }
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in psql: answers each statement's marker, taking `slow`
    /// for a CHECKPOINT, and records when each statement arrived.
    struct SlowCheckpoint {
        slow: Duration,
        pending: std::collections::VecDeque<String>,
        sent: Arc<Mutex<Vec<(String, Instant)>>>,
    }

    impl LineStream for SlowCheckpoint {
        fn send(&mut self, text: &str) -> std::io::Result<()> {
            let mut lines = text.lines();
            let statement = lines.next().unwrap_or_default().to_owned();
            self.sent
                .lock()
                .unwrap()
                .push((statement.clone(), Instant::now()));
            if statement == "CHECKPOINT;" {
                std::thread::sleep(self.slow);
            }
            if statement.starts_with("SHOW server_version_num") {
                self.pending.push_back("150004".into());
            }
            for l in lines {
                if let Some(m) = l.strip_prefix("\\echo ") {
                    self.pending.push_back(m.to_owned());
                }
            }
            Ok(())
        }
        fn recv(&mut self, _deadline: Instant) -> Recv {
            self.pending.pop_front().map_or(Recv::Ended, Recv::Line)
        }
        fn ended(&mut self) -> (String, String) {
            ("exit status 0".into(), String::new())
        }
        fn kill(&mut self) {}
        fn close(&mut self, _grace: Duration) {}
    }

    #[test]
    fn the_freeze_window_starts_at_the_statement_that_holds() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let stream = SlowCheckpoint {
            slow: Duration::from_millis(300),
            pending: Default::default(),
            sent: sent.clone(),
        };
        let called = Instant::now();
        let session = Session::new(
            Preset::Postgres,
            "PostgreSQL".into(),
            vec![],
            Box::new(stream),
            Duration::from_secs(5),
        );
        let frozen = hold(session).unwrap();
        let since = frozen.held_since().expect("a preset says when it held");
        let sent = sent.lock().unwrap().clone();
        let start = sent
            .iter()
            .find(|(s, _)| s.contains("pg_backup_start"))
            .expect("pg_backup_start sent")
            .1;
        // Not from the call (connect, version, CHECKPOINT prepare only),
        // but from just before pg_backup_start was sent.
        assert!(since >= called + Duration::from_millis(300), "{sent:?}");
        assert!(since <= start, "{sent:?}");
        let _ = frozen.thaw();
    }

    #[test]
    fn presets_parse_and_refuse_unknown_names() {
        assert_eq!("postgres".parse::<Preset>().unwrap(), Preset::Postgres);
        assert_eq!("mariadb".parse::<Preset>().unwrap(), Preset::Mysql);
        let e = "oracle".parse::<Preset>().unwrap_err().to_string();
        assert!(
            e.contains("--freeze oracle") && e.contains("postgres, mysql or mongodb"),
            "{e}"
        );
    }

    #[test]
    fn postgres_picks_the_functions_of_its_version() {
        let v15 = Preset::Postgres.freeze_script(150004).join(" ");
        assert!(v15.contains("pg_backup_start('pvsnap', true)"), "{v15}");
        let v14 = Preset::Postgres.freeze_script(140010).join(" ");
        assert!(
            v14.contains("pg_start_backup('pvsnap', true, false)"),
            "{v14}"
        );
        assert!(Preset::Postgres.thaw_script(150000)[0].contains("pg_backup_stop(false)"));
        assert!(Preset::Postgres.thaw_script(90600)[0].contains("pg_stop_backup(false, false)"));
    }

    #[test]
    fn no_credential_on_a_command_line() {
        let f = std::path::Path::new("/etc/pvsnap/my.cnf");
        let argv = Preset::Mysql.client_argv(Some(f));
        assert_eq!(argv[1], "--defaults-extra-file=/etc/pvsnap/my.cnf");
        for p in [Preset::Postgres, Preset::Mysql, Preset::Mongodb] {
            let all = p.client_argv(None);
            assert!(
                !all.iter().any(|a| a.to_string_lossy().contains("pass")),
                "{all:?}"
            );
        }
        assert!(Preset::Mongodb.freeze_script(0)[0].contains("process.env.MONGODB_URI"));
        assert!(
            Preset::Postgres.client_argv(None).contains(&"-w".into()),
            "no prompt"
        );
    }

    #[test]
    fn hex_and_redaction() {
        assert_eq!(unhex("6869").as_deref(), Some("hi"));
        assert_eq!(unhex("").as_deref(), Some(""));
        assert_eq!(unhex("6"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é1"), None);
        assert_eq!(
            redact_uri("mongodb://app:s3cret@db:27017/admin"),
            "mongodb://app:***@db:27017/admin"
        );
    }

    #[test]
    fn env_file_lines() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("conn");
        std::fs::write(
            &f,
            "# c\n\nPGHOST=db\nexport PGPASSWORD='a b'\nPGPORT=\"5433\"\n",
        )
        .unwrap();
        let env = read_env_file(&f).unwrap();
        assert_eq!(env[1], ("PGPASSWORD".into(), "a b".into()));
        assert_eq!(env[2], ("PGPORT".into(), "5433".into()));
        std::fs::write(&f, "PGHOST=db\nhunter2\n").unwrap();
        let e = read_env_file(&f).unwrap_err().to_string();
        assert!(e.contains("line 2") && !e.contains("hunter2"), "{e}");
    }
}
