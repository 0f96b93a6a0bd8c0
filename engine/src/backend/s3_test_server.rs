//! Real S3 servers for tests: moto's server on a free port, `s3s-fs` (which
//! verifies SigV4 signatures; moto checks none), and a counting, fault
//! injecting proxy in front of either. Used by the engine's tests and by the integration
//! tests of the `pvsnap` binary; not part of pvsnap's function.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A server this process started; it ends with this process.
pub struct TestServer {
    _child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Where s3s-fs keeps its buckets (one folder each); `None` for moto.
    root: Option<std::path::PathBuf>,
}

/// The access key and secret key s3s-fs takes; every other signature is
/// refused with 403.
pub const VERIFYING_KEY: (&str, &str) = ("pvsnaptest", "secret");

static SERVER: OnceLock<Option<TestServer>> = OnceLock::new();
static VERIFYING: OnceLock<Option<TestServer>> = OnceLock::new();
static BUCKETS: AtomicUsize = AtomicUsize::new(0);

/// The free port the system gives to a new listener.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl TestServer {
    /// The server of this test process, started on first use. `None` (after
    /// a loud message) when `moto_server` is not installed and
    /// `PVSNAP_REQUIRE_S3` is not `1`; with it set, a missing server fails
    /// the test. `scripts/test` installs moto and sets it.
    pub fn get() -> Option<&'static TestServer> {
        SERVER.get_or_init(Self::start).as_ref()
    }

    /// The s3s-fs server of this test process, which verifies signatures
    /// (credentials [`VERIFYING_KEY`]), started on first use; `None` or a
    /// failure as for [`TestServer::get`] when `s3s-fs` is not installed
    /// (`cargo install s3s-fs@0.14.1 --features binary --locked`).
    pub fn verifying() -> Option<&'static TestServer> {
        VERIFYING.get_or_init(Self::start_verifying).as_ref()
    }

    /// Whether `program` runs; when not, a loud skip, or a failure under
    /// `PVSNAP_REQUIRE_S3=1`.
    fn installed(program: &str, install: &str) -> bool {
        let installed = Command::new(program)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            if std::env::var("PVSNAP_REQUIRE_S3").as_deref() == Ok("1") {
                panic!("{program} is not installed; `{install}` (scripts/test does)");
            }
            eprintln!(
                "\n*** SKIPPING S3 TESTS ON {program}: it is not installed; `{install}` or run scripts/test ***\n"
            );
        }
        installed
    }

    fn start() -> Option<TestServer> {
        if !Self::installed("moto_server", "pip install 'moto[server]'") {
            return None;
        }
        let port = free_port();
        Some(Self::run(
            &format!("moto_server -H 127.0.0.1 -p {port}"),
            port,
            None,
        ))
    }

    fn start_verifying() -> Option<TestServer> {
        if !Self::installed(
            "s3s-fs",
            "cargo install s3s-fs@0.14.1 --features binary --locked",
        ) {
            return None;
        }
        let port = free_port();
        // Removed by the shell of `run` when the server ends.
        let root = std::env::temp_dir().join(format!("pvsnap-s3s-fs-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("a folder for s3s-fs");
        let (key, secret) = VERIFYING_KEY;
        let command = format!(
            "s3s-fs --host 127.0.0.1 --port {port} --access-key {key} --secret-key {secret} '{}'",
            root.display()
        );
        Some(Self::run(&command, port, Some(root)))
    }

    /// Runs `command` (a server listening on `port`) until this process ends.
    fn run(command: &str, port: u16, root: Option<std::path::PathBuf>) -> TestServer {
        // The shell ends the server when this process is gone, however it
        // ends, and removes the server's folder.
        let cleanup = match &root {
            Some(r) => format!("; sleep 1; rm -rf '{}'", r.display()),
            None => String::new(),
        };
        let script = format!(
            "{command} >/dev/null 2>&1 & m=$!; while kill -0 {} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 1; done; kill $m 2>/dev/null{cleanup}",
            std::process::id()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "`{command}` did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        TestServer {
            _child: child,
            endpoint: format!("http://127.0.0.1:{port}"),
            root,
        }
    }

    /// Creates a new, empty bucket and returns its name.
    pub fn new_bucket(&self) -> String {
        let name = format!(
            "t{}-{}",
            std::process::id(),
            BUCKETS.fetch_add(1, Ordering::Relaxed)
        );
        if let Some(root) = &self.root {
            // s3s-fs: a bucket is a folder of its root.
            std::fs::create_dir(root.join(&name)).expect("create a bucket");
            return name;
        }
        let r = ureq::put(format!("{}/{name}", self.endpoint))
            .send_empty()
            .expect("create a bucket");
        assert!(
            r.status().is_success(),
            "create bucket {name}: {}",
            r.status()
        );
        name
    }

    /// Stores `data` at `key` of `bucket` directly, past pvsnap and any
    /// proxy (moto takes unsigned requests): what another client left there.
    pub fn put_raw(&self, bucket: &str, key: &str, data: &[u8]) {
        let r = ureq::put(format!("{}/{bucket}/{key}", self.endpoint))
            .send(data)
            .expect("put an object");
        assert!(r.status().is_success(), "put {key}: {}", r.status());
    }

    /// Starts a multipart upload of `key` and never completes it, as a
    /// client killed in the middle leaves it (moto takes unsigned requests).
    pub fn start_upload(&self, bucket: &str, key: &str) {
        let r = ureq::post(format!("{}/{bucket}/{key}?uploads", self.endpoint))
            .send_empty()
            .expect("start an upload");
        assert!(r.status().is_success(), "upload {key}: {}", r.status());
    }

    /// The keys of the incomplete multipart uploads of `bucket`.
    pub fn uploads(&self, bucket: &str) -> Vec<String> {
        let mut r = ureq::get(format!("{}/{bucket}?uploads", self.endpoint))
            .call()
            .expect("list uploads");
        let text = r.body_mut().read_to_string().expect("a listing");
        text.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }

    /// The keys of `bucket` under `prefix`, read directly (up to 1000).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut r = ureq::get(format!("{}/{bucket}", self.endpoint))
            .query("list-type", "2")
            .query("prefix", prefix)
            .call()
            .expect("list a bucket");
        let text = r.body_mut().read_to_string().expect("a listing");
        text.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }
}

/// Faults the proxy injects, switched on and off by a test while pvsnap runs.
#[derive(Default)]
struct Faults {
    /// Once this many requests were seen, every later one has its
    /// connection closed unanswered: a server killed or gone.
    cut_after: Option<usize>,
    /// The next this many requests have their connection closed unanswered
    /// (a reset: the request's unread bytes make it an RST).
    drops: usize,
    /// Until then, every request is answered `503 SlowDown`.
    slow_until: Option<Instant>,
    /// Seconds added to the `Date` and `Last-Modified` of every answer: a
    /// server whose clock is off.
    clock_shift: i64,
    /// Requests answered 503 so far, and connections dropped.
    slowed: usize,
    dropped: usize,
}

/// A TCP proxy in front of a server that counts requests by their first
/// line, optionally refuses connections whose first request is not signed
/// with a given access key (moto checks no signatures), and injects faults:
/// see [`Proxy::cut_after`], [`Proxy::drop_next`], [`Proxy::slow_down_for`],
/// [`Proxy::shift_clock`].
pub struct Proxy {
    pub endpoint: String,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
    faults: Arc<std::sync::Mutex<Faults>>,
}

impl Proxy {
    /// Starts a proxy to `upstream` (`http://host:port`); with
    /// `required_key`, a connection whose first request does not carry it
    /// gets 403 InvalidAccessKeyId.
    pub fn start(upstream: &str, required_key: Option<String>) -> Proxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("an http endpoint")
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let faults = Arc::new(std::sync::Mutex::new(Faults::default()));
        let (s, f) = (seen.clone(), faults.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, s, f, key) =
                    (upstream.clone(), s.clone(), f.clone(), required_key.clone());
                std::thread::spawn(move || serve(client, &upstream, &s, &f, key.as_deref()));
            }
        });
        Proxy {
            endpoint,
            seen,
            faults,
        }
    }

    /// The request lines seen so far (`PUT /bucket/data/ab/… HTTP/1.1`),
    /// answered or not.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().expect("seen").clone()
    }

    /// How many requests were `method` on keys containing `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|l| l.starts_with(&format!("{method} ")) && l.contains(part))
            .count()
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().expect("faults")
    }

    /// From `n` more requests on, every request goes unanswered (its
    /// connection closed), as when the server is killed.
    pub fn cut_after(&self, n: usize) {
        let seen = self.requests().len();
        self.faults().cut_after = Some(seen + n);
    }

    /// The server is back: no more cut, drops or 503s.
    pub fn heal(&self) {
        let mut f = self.faults();
        f.cut_after = None;
        f.drops = 0;
        f.slow_until = None;
    }

    /// The next `n` requests have their connection closed unanswered.
    pub fn drop_next(&self, n: usize) {
        self.faults().drops = n;
    }

    /// Every request for `d` from now is answered `503 SlowDown`.
    pub fn slow_down_for(&self, d: Duration) {
        self.faults().slow_until = Some(Instant::now() + d);
    }

    /// Answers carry a `Date` and `Last-Modified` `secs` later than the
    /// server's (earlier when negative).
    pub fn shift_clock(&self, secs: i64) {
        self.faults().clock_shift = secs;
    }

    /// Requests answered 503 so far.
    pub fn slowed(&self) -> usize {
        self.faults().slowed
    }

    /// Connections closed unanswered so far (cut or dropped).
    pub fn dropped(&self) -> usize {
        self.faults().dropped
    }
}

/// What the proxy does with a request that has just begun.
enum Verdict {
    Pass,
    Drop,
    SlowDown,
}

fn verdict(faults: &std::sync::Mutex<Faults>, seen: usize) -> Verdict {
    let mut f = faults.lock().expect("faults");
    if f.cut_after.is_some_and(|n| seen > n) || f.drops > 0 {
        f.drops = f.drops.saturating_sub(1);
        f.dropped += 1;
        return Verdict::Drop;
    }
    if f.slow_until.is_some_and(|t| Instant::now() < t) {
        f.slowed += 1;
        return Verdict::SlowDown;
    }
    Verdict::Pass
}

/// Copies answers from the server to the client, moving the `Date` and
/// `Last-Modified` headers by the clock shift in force. Dates are of fixed
/// length, so no length changes. While the clock is shifted, the last bytes
/// of a read wait for the next one (a header may be split between reads),
/// or for a short pause of the server, after which they are sent as they are.
fn answer_copy(mut from: TcpStream, mut to: TcpStream, faults: Arc<std::sync::Mutex<Faults>>) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending = Vec::<u8>::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if !pending.is_empty() && to.write_all(&std::mem::take(&mut pending)).is_err() {
                    return;
                }
                continue;
            }
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        let shift = faults.lock().expect("faults").clock_shift;
        let keep = match shift {
            0 => 0,
            s => {
                shift_dates(&mut pending, s);
                unfinished_header(&pending)
            }
        };
        let out = pending.len().saturating_sub(keep);
        if to.write_all(&pending[..out]).is_err() {
            return;
        }
        pending.drain(..out);
    }
    let _ = to.write_all(&pending);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// How many bytes at the end of `bytes` may be the start of a date header
/// not yet whole (and so not yet moved).
fn unfinished_header(bytes: &[u8]) -> usize {
    const WHOLE: usize = "last-modified: ".len() + "Fri, 04 Dec 2026 12:00:00 GMT".len();
    if bytes.last() == Some(&b'\r') {
        return 1;
    }
    let Some(i) = bytes.windows(2).rposition(|w| w == b"\r\n") else {
        return 0;
    };
    let rest = &bytes[i + 2..];
    let whole_date = rest.len() >= "date: ".len() + 29 && rest[..6].eq_ignore_ascii_case(b"date: ");
    match rest.len() < WHOLE && !whole_date {
        true => bytes.len() - i,
        false => 0,
    }
}

/// Moves every complete `Date:` and `Last-Modified:` header in `bytes` by
/// `secs`.
fn shift_dates(bytes: &mut [u8], secs: i64) {
    const LEN: usize = "Fri, 04 Dec 2026 12:00:00 GMT".len();
    for name in ["\r\ndate: ", "\r\nlast-modified: "] {
        let mut from = 0;
        while let Some(i) = bytes[from..]
            .windows(name.len())
            .position(|w| w.eq_ignore_ascii_case(name.as_bytes()))
        {
            let at = from + i + name.len();
            from = at;
            let Some(value) = bytes.get(at..at + LEN) else {
                break;
            };
            let Some(t) = std::str::from_utf8(value)
                .ok()
                .and_then(|v| jiff::fmt::rfc2822::parse(v).ok())
            else {
                continue;
            };
            let moved = t.timestamp() + jiff::SignedDuration::from_secs(secs);
            let text = moved.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
            if text.len() == LEN {
                bytes[at..at + LEN].copy_from_slice(text.as_bytes());
            }
        }
    }
}

fn serve(
    mut client: TcpStream,
    upstream: &str,
    seen: &std::sync::Mutex<Vec<String>>,
    faults: &Arc<std::sync::Mutex<Faults>>,
    key: Option<&str>,
) {
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    let mut first = true;
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let f = faults.clone();
    std::thread::spawn(move || answer_copy(s2, c2, f));
    let mut buf = vec![0u8; 256 * 1024];
    let mut tail = Vec::<u8>::new();
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Request lines start with a method; a pack's bytes are random, so
        // the chance of a false match is nil.
        let mut window = std::mem::take(&mut tail);
        window.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&window);
        let lines: Vec<&str> = text.split("\r\n").collect();
        let mut began = None;
        // The last piece is not a whole line yet: it is kept for the next read.
        for line in &lines[..lines.len() - 1] {
            if ["GET /", "PUT /", "HEAD /", "DELETE /", "POST /"]
                .iter()
                .any(|m| line.starts_with(m))
                && line.ends_with("HTTP/1.1")
            {
                let mut s = seen.lock().expect("seen");
                s.push(line.to_string());
                began = Some(s.len());
            }
        }
        if let Some(count) = began {
            match verdict(faults, count) {
                Verdict::Pass => {}
                Verdict::Drop => {
                    let _ = server.shutdown(std::net::Shutdown::Both);
                    return;
                }
                Verdict::SlowDown => {
                    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                    let _ = write!(
                        client,
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = server.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
        }
        if first {
            first = false;
            if let Some(k) = key
                && !text.contains(&format!("X-Amz-Credential={k}%2F"))
            {
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>";
                let _ = write!(
                    client,
                    "HTTP/1.1 403 Forbidden\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = server.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
        let start = window
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
            .max(window.len().saturating_sub(4096));
        tail = window[start..].to_vec();
        if server.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = server.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_moved_and_a_split_header_waits() {
        let mut a = b"HTTP/1.1 200 OK\r\nDate: Fri, 04 Dec 2026 12:00:00 GMT\r\nLast-Modified: Fri, 04 Dec 2026 11:00:00 GMT\r\n\r\nbody".to_vec();
        shift_dates(&mut a, -3600);
        let text = String::from_utf8(a).unwrap();
        assert!(
            text.contains("Date: Fri, 04 Dec 2026 11:00:00 GMT"),
            "{text}"
        );
        assert!(
            text.contains("Last-Modified: Fri, 04 Dec 2026 10:00:00 GMT"),
            "{text}"
        );
        // The start of a header waits for its end; a whole one does not.
        assert_eq!(unfinished_header(b"x\r\nDate: Fri, 04"), 15);
        assert_eq!(unfinished_header(b"x\r"), 1);
        assert_eq!(
            unfinished_header(b"x\r\nDate: Fri, 04 Dec 2026 12:00:00 GMT"),
            0
        );
        assert_eq!(unfinished_header(&[7u8; 100]), 0);
    }
}
