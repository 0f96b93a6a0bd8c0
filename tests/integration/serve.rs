//! `pvsnap serve`: scheduled jobs run as child processes, /healthz and
//! /metrics answer, SIGTERM stops it cleanly, failures are notified.
//!
//! Cron has minutes as its finest field, so the jobs here are made due at
//! start through catch-up: the state file says their last run was two
//! hours ago, and the newest slot missed since (within the hour: the
//! default catch-up) is run at once. Jobs that must run exactly once are
//! hourly (`0 * * * *`), so that a minute turning during the test does not
//! start them again.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::Env;

/// serve, its standard error collected as it comes.
pub(crate) struct Serve {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Serve {
    pub(crate) fn start(env: &Env, args: &[&str]) -> Serve {
        let mut child = env
            .cmd()
            .arg("serve")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pvsnap serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                eprintln!("[serve] {line}");
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Serve { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until serve's standard error has `what`.
    fn wait_for(&self, what: &str, secs: u64) {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if self.stderr().contains(what) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("serve never said `{what}`:\n{}", self.stderr());
    }

    /// The address it listens on, from its `listening on` line.
    pub(crate) fn addr(&self) -> String {
        self.wait_for("listening on http://", 60);
        let s = self.stderr();
        let i = s.find("listening on http://").unwrap() + "listening on http://".len();
        s[i..].lines().next().unwrap().trim().to_string()
    }

    pub(crate) fn terminate(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(200));
                return (st, self.stderr());
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("serve did not stop after SIGTERM:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `GET path` → (status code, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).expect("connect to serve");
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut r = String::new();
    c.read_to_string(&mut r).unwrap();
    let code = r.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = r
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (code, body)
}

/// A state file whose jobs last ran two hours ago: with `0 * * * *` (or
/// any more frequent cron) the newest slot since is due at start.
fn state_due(path: &Path, jobs: &[&str]) {
    let then = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(7200);
    let mut m = serde_json::Map::new();
    for j in jobs {
        m.insert(
            j.to_string(),
            serde_json::json!({"last_slot": then.to_string(), "runs": 0, "failures": 0, "missed": 0, "last_outcome": null}),
        );
    }
    std::fs::write(path, serde_json::to_vec(&m).unwrap()).unwrap();
}

#[test]
fn serve_runs_a_due_job_answers_health_and_metrics_and_stops_on_sigterm() {
    let env = Env::new();
    env.init();
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"hello").unwrap();
    let schedule = env.path("schedule.toml");
    std::fs::write(
        &schedule,
        format!(
            "[[job]]\nname = \"snap\"\ncron = \"0 * * * *\"\nargs = [\"snapshot\", \"{}\", \"--tag\", \"served\"]\n",
            data.display()
        ),
    )
    .unwrap();
    let state = env.path("serve/state.json");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    state_due(&state, &["snap"]);
    let serve = Serve::start(
        &env,
        &[
            "--listen",
            "127.0.0.1:0",
            "--schedule",
            schedule.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ],
    );
    let addr = serve.addr();
    serve.wait_for("job snap ended: exit code 0", 120);
    let out = env.ok(&["snapshots", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert!(v[0]["tags"].to_string().contains("served"), "{v}");
    assert_eq!(get(&addr, "/healthz").0, 200);
    let (code, metrics) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    for want in [
        "# TYPE pvsnap_schedule_runs_total counter",
        "pvsnap_schedule_runs_total{job=\"snap\",outcome=\"success\"} 1",
        "pvsnap_schedule_runs_total{job=\"snap\",outcome=\"failure\"} 0",
        "pvsnap_schedule_missed_total{job=\"snap\"} ",
        "pvsnap_schedule_running{job=\"snap\"} 0",
        // The repository's own series, through `pvsnap metrics`.
        "pvsnap_snapshots{",
        "pvsnap_last_snapshot_timestamp_seconds{",
        "pvsnap_repository_readable 1",
    ] {
        assert!(metrics.contains(want), "no `{want}` in:\n{metrics}");
    }
    assert_eq!(get(&addr, "/nothing").0, 404);
    let (status, _) = serve.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM ends serve with 0");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["snap"]["runs"], 1, "{saved}");
    assert_eq!(saved["snap"]["last_outcome"]["code"], 0, "{saved}");
    assert!(
        TcpStream::connect(&addr).is_err(),
        "nothing listens after exit"
    );
}

#[test]
fn serve_refuses_bad_input_with_the_next_step() {
    let env = Env::new();
    let out = env.run(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(crate::util::stderr(&out).contains("--schedule FILE"));
    let schedule = env.path("s.toml");
    std::fs::write(
        &schedule,
        "[[job]]\nname = \"x\"\ncron = \"* * * * *\"\nargs = [\"check\"]\nnotify_on = \"sometimes\"\n",
    )
    .unwrap();
    let out = env.run(&["serve", "--schedule", schedule.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = crate::util::stderr(&out);
    assert!(err.contains("notify_on `sometimes`"), "{err}");
    let out = env.run(&["serve", "--listen", "127.0.0.1:0", "--notify", "ftp://x"]);
    assert!(crate::util::stderr(&out).contains("--notify"));
}

/// What a test receiver holds: the bodies it accepted, and how many
/// requests it saw.
type Received = (Arc<Mutex<Vec<String>>>, Arc<Mutex<usize>>);

/// A receiver that answers 500 to the first `fail` requests, then 200,
/// keeping the bodies it accepted.
fn receiver(fail: usize) -> (String, Received) {
    receiver_gated(move |n| n > fail)
}

/// A receiver that accepts the `n`th request (from 1) when `accept(n)`,
/// else answers 500.
fn receiver_gated(accept: impl Fn(usize) -> bool + Send + 'static) -> (String, Received) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(vec![]));
    let tries = Arc::new(Mutex::new(0usize));
    let (g, t) = (got.clone(), tries.clone());
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let n = {
                let mut t = t.lock().unwrap();
                *t += 1;
                *t
            };
            if !accept(n) {
                let _ = c.write_all(
                    b"HTTP/1.1 500 Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            } else {
                g.lock().unwrap().push(String::from_utf8(body).unwrap());
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        }
    });
    (url, (got, tries))
}

#[test]
fn a_failing_job_is_notified_through_a_receiver_that_fails_at_first() {
    let env = Env::new();
    env.init();
    let (url, (got, tries)) = receiver(2);
    let schedule = env.path("schedule.toml");
    std::fs::write(
        &schedule,
        format!(
            "[[job]]\nname = \"broken\"\ncron = \"0 * * * *\"\nargs = [\"snapshot\", \"{}\"]\n",
            env.path("no-such-folder").display()
        ),
    )
    .unwrap();
    let state = env.path("st/state.json");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    state_due(&state, &["broken"]);
    let serve = Serve::start(
        &env,
        &[
            "--schedule",
            schedule.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--notify",
            &url,
        ],
    );
    serve.wait_for("job broken ended: exit code", 120);
    let end = Instant::now() + Duration::from_secs(60);
    while got.lock().unwrap().is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, err) = serve.terminate();
    assert_eq!(status.code(), Some(0));
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one delivery after two refusals:\n{err}");
    assert_eq!(*tries.lock().unwrap(), 3);
    let v: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["event"], "job_failed");
    assert_eq!(v["job"], "broken");
    assert_eq!(v["args"][0], "snapshot");
    assert!(v["exit_code"].as_i64().unwrap() != 0, "{v}");
    assert!(
        v["stderr_tail"]
            .as_str()
            .unwrap()
            .contains("no-such-folder"),
        "the tail tells why: {v}"
    );
    assert!(v["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(v["started"].as_str().is_some() && v["finished"].as_str().is_some());
    let left: Vec<_> = std::fs::read_dir(env.path("st/outbox")).unwrap().collect();
    assert!(left.is_empty(), "the delivered event leaves the outbox");
}

#[test]
fn jobs_of_one_group_never_overlap() {
    let env = Env::new();
    env.init();
    let mut text = String::new();
    for name in ["one", "two"] {
        let d = env.path(name);
        std::fs::create_dir_all(&d).unwrap();
        crate::util::write_noise_files(&d, 1, 20, 200_000);
        text.push_str(&format!(
            "[[job]]\nname = \"{name}\"\ncron = \"* * * * *\"\ngroup = \"g\"\nargs = [\"snapshot\", \"{}\"]\n",
            d.display()
        ));
    }
    let schedule = env.path("schedule.toml");
    std::fs::write(&schedule, text).unwrap();
    let state = env.path("state.json");
    state_due(&state, &["one", "two"]);
    let serve = Serve::start(
        &env,
        &[
            "--schedule",
            schedule.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ],
    );
    serve.wait_for("job one ended", 120);
    serve.wait_for("job two ended", 120);
    let (status, err) = serve.terminate();
    assert_eq!(status.code(), Some(0));
    // The order of the scheduler's lines: a start, its end, the next start.
    // A minute that turns during the test adds runs (one more slot is
    // due), never an overlap.
    let marks: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(" started (slot") || l.contains(" ended: "))
        .collect();
    assert!(marks.len() >= 4 && marks.len().is_multiple_of(2), "{err}");
    for pair in marks.chunks(2) {
        assert!(
            pair[0].contains("started") && pair[1].contains("ended"),
            "a run started before the previous one ended: {err}"
        );
        let job = pair[0].split(" started").next().unwrap();
        assert!(pair[1].starts_with(&format!("{job} ended")), "{err}");
    }
    for job in ["job one", "job two"] {
        assert!(
            marks.iter().any(|m| m.contains(&format!("{job} started"))),
            "{err}"
        );
    }
    let out = env.ok(&["snapshots", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v.as_array().unwrap().len(),
        marks.len() / 2,
        "one snapshot a run"
    );
}

#[test]
fn a_job_that_outlives_the_stop_timeout_is_killed_and_recorded_as_failed() {
    let env = Env::new();
    env.init();
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"hello").unwrap();
    let marker = env.path("hook-started");
    // A pre hook that ignores SIGTERM and takes long: the job cannot end
    // within --stop-timeout. The pid of the job (the pvsnap child) is the
    // hook's parent.
    let hook = format!("trap '' TERM; echo $PPID > {}; sleep 30", marker.display());
    let schedule = env.path("schedule.toml");
    std::fs::write(
        &schedule,
        format!(
            "[[job]]\nname = \"stuck\"\ncron = \"0 * * * *\"\nargs = [\"snapshot\", \"{}\", \"--pre-hook\", {}]\n",
            data.display(),
            serde_json::to_string(&hook).unwrap()
        ),
    )
    .unwrap();
    let state = env.path("state.json");
    state_due(&state, &["stuck"]);
    let serve = Serve::start(
        &env,
        &[
            "--schedule",
            schedule.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--stop-timeout",
            "1s",
        ],
    );
    serve.wait_for("job stuck started", 120);
    let end = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&marker).map_or(true, |s| s.trim().is_empty()) {
        assert!(
            Instant::now() < end,
            "the hook never ran:\n{}",
            serve.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let job_pid: i32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let t = Instant::now();
    let (status, err) = serve.terminate();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "serve waited for the job: {:?}",
        t.elapsed()
    );
    assert!(
        err.contains("job stuck still ran 1s after SIGTERM (--stop-timeout): killed"),
        "{err}"
    );
    // The job's process is gone (kill(pid, 0) fails: no such process).
    // SAFETY: signal 0 only checks that the pid exists.
    let alive = unsafe { libc::kill(job_pid, 0) } == 0;
    assert!(!alive, "the job's process {job_pid} still runs");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["stuck"]["failures"], 1, "{saved}");
    assert_eq!(saved["stuck"]["last_outcome"]["killed"], true, "{saved}");
    let audit: Vec<serde_json::Value> = serde_json::from_slice(
        &env.ok(&["audit", "--json", "--operation", "snapshot"])
            .stdout,
    )
    .unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["outcome"], "failed");
    assert_eq!(
        audit[0]["source"],
        std::fs::canonicalize(&data).unwrap().to_str().unwrap()
    );
    assert!(
        audit[0]["error"]
            .as_str()
            .unwrap()
            .contains("killed by pvsnap serve"),
        "{audit:?}"
    );
}

#[test]
fn a_restarted_serve_delivers_what_the_last_one_left_in_the_outbox() {
    let env = Env::new();
    env.init();
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = open.clone();
    let (url, (got, tries)) =
        receiver_gated(move |_| gate.load(std::sync::atomic::Ordering::SeqCst));
    let schedule = env.path("schedule.toml");
    std::fs::write(
        &schedule,
        format!(
            "[[job]]\nname = \"broken\"\ncron = \"0 * * * *\"\nargs = [\"snapshot\", \"{}\"]\n",
            env.path("no-such-folder").display()
        ),
    )
    .unwrap();
    let state = env.path("st/state.json");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    state_due(&state, &["broken"]);
    let serve = Serve::start(
        &env,
        &[
            "--schedule",
            schedule.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--notify",
            &url,
        ],
    );
    serve.wait_for("job broken ended: exit code", 120);
    serve.wait_for("trying again in", 60);
    let (status, err) = serve.terminate();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(got.lock().unwrap().is_empty());
    let outbox = env.path("st/outbox");
    // One per failed run: a minute that turns during the test adds a run.
    let left = std::fs::read_dir(&outbox).unwrap().count();
    assert!(left >= 1, "{err}");
    let refused = *tries.lock().unwrap();
    assert!(refused >= 1);
    // The receiver works again; serve restarts with no schedule and no
    // --notify at all: what waits in the outbox still goes out.
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    let serve = Serve::start(
        &env,
        &[
            "--listen",
            "127.0.0.1:0",
            "--state",
            state.to_str().unwrap(),
        ],
    );
    serve.wait_for(
        &format!("{left} notification(s) left from a previous run"),
        60,
    );
    let end = Instant::now() + Duration::from_secs(60);
    while got.lock().unwrap().len() < left && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, err) = serve.terminate();
    assert_eq!(status.code(), Some(0), "{err}");
    let got = got.lock().unwrap().clone();
    assert_eq!(
        got.len(),
        left,
        "each delivered once after the restart:\n{err}"
    );
    for body in &got {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (v["event"].as_str(), v["job"].as_str()),
            (Some("job_failed"), Some("broken"))
        );
    }
    assert_eq!(
        std::fs::read_dir(&outbox).unwrap().count(),
        0,
        "the outbox is empty"
    );
}

/// The schedule README shows is one serve accepts, every job of it.
#[test]
fn the_readme_schedule_example_is_valid() {
    let env = Env::new();
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme
        .find("```toml\ntime_zone")
        .expect("README has the schedule example");
    let body = &readme[start + "```toml\n".len()..];
    let body = &body[..body.find("```").unwrap()];
    let jobs = body.matches("[[job]]").count();
    let file = env.path("schedule.toml");
    std::fs::write(&file, body).unwrap();
    let out = env.ok(&["serve", "--check", "--schedule", file.to_str().unwrap()]);
    let said = crate::util::stdout(&out) + &crate::util::stderr(&out);
    assert_eq!(said.matches("job ").count(), jobs, "{said}");
    assert!(
        said.contains("pvsnap drill --pvc"),
        "a weekly drill: {said}"
    );
}
