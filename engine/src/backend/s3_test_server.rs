//! A real S3 server for tests: moto's server on a free port, and a counting
//! proxy in front of it. Used by the engine's tests and by the integration
//! tests of the `pvsnap` binary; not part of pvsnap's function.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A moto server this process started; it ends with this process.
pub struct TestServer {
    _child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

static SERVER: OnceLock<Option<TestServer>> = OnceLock::new();
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

    fn start() -> Option<TestServer> {
        let installed = Command::new("moto_server")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            if std::env::var("PVSNAP_REQUIRE_S3").as_deref() == Ok("1") {
                panic!(
                    "moto_server is not installed; `pip install 'moto[server]'` (scripts/test does)"
                );
            }
            eprintln!(
                "\n*** SKIPPING S3 TESTS: moto_server is not installed; `pip install 'moto[server]'` or run scripts/test ***\n"
            );
            return None;
        }
        let port = free_port();
        // The shell ends moto when this process is gone, however it ends.
        let script = format!(
            "moto_server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; while kill -0 {} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 1; done; kill $m 2>/dev/null",
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
                "moto_server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(TestServer {
            _child: child,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Creates a new, empty bucket and returns its name.
    pub fn new_bucket(&self) -> String {
        let name = format!(
            "t{}-{}",
            std::process::id(),
            BUCKETS.fetch_add(1, Ordering::Relaxed)
        );
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
}

/// A TCP proxy in front of a server that counts requests by their first
/// line, and optionally refuses connections whose first request is not
/// signed with a given access key (moto checks no signatures).
pub struct Proxy {
    pub endpoint: String,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
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
        let s = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, s, key) = (upstream.clone(), s.clone(), required_key.clone());
                std::thread::spawn(move || serve(client, &upstream, &s, key.as_deref()));
            }
        });
        Proxy { endpoint, seen }
    }

    /// The request lines seen so far (`PUT /bucket/data/ab/… HTTP/1.1`).
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
}

fn serve(
    mut client: TcpStream,
    upstream: &str,
    seen: &std::sync::Mutex<Vec<String>>,
    key: Option<&str>,
) {
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    let mut first = true;
    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut s2, &mut c2);
        let _ = c2.shutdown(std::net::Shutdown::Write);
    });
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
        // The last piece is not a whole line yet: it is kept for the next read.
        for line in &lines[..lines.len() - 1] {
            if ["GET /", "PUT /", "HEAD /", "DELETE /", "POST /"]
                .iter()
                .any(|m| line.starts_with(m))
                && line.ends_with("HTTP/1.1")
            {
                seen.lock().expect("seen").push(line.to_string());
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
