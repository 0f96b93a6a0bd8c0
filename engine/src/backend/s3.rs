//! Repositories on S3-compatible object storage (`s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]`).
//!
//! Requests are signed with `rusty-s3` (SigV4, no I/O of its own) and sent
//! with `ureq`, a blocking HTTP client: the engine's threads call the backend
//! directly and no async runtime is needed. At most `connections` requests
//! run at a time; each is retried with backoff on timeouts, connection
//! errors, 5xx and throttling (429, 503 SlowDown).
//!
//! The put contract does not use conditional writes (`If-None-Match`),
//! which some servers ignore or do not apply atomically: `put` asks first
//! (HEAD, then GET to compare) and writes only a missing object. Two writers
//! racing on one name both write; for objects named by their content both
//! write the same bytes, so the race is harmless (see ARCHITECTURE.md).

use std::io::Read;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use rusty_s3::{Bucket, Method, UrlStyle};

use super::{Backend, Leftover, ObjectKey, check_range};
use crate::error::BackendError;
use crate::repo::format::ObjectKind;

/// The most pack puts in flight at once, whatever `--connections` allows:
/// each holds a whole pack in memory.
const MAX_PARALLEL_PUTS: usize = 4;

/// Requests at a time when `--connections` is not given.
pub const DEFAULT_CONNECTIONS: usize = 8;
/// Attempts per request before a fault is reported.
const ATTEMPTS: u32 = 6;
/// Validity of a signature; requests are signed just before they are sent.
const SIGNATURE_TTL: u64 = 3600;

/// Where a repository on S3 is: endpoint, bucket and key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// `http://host:port` or `https://host`.
    pub endpoint: String,
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

impl S3Location {
    /// Whether `repo` is meant as an S3 location rather than a folder.
    pub fn is_s3(repo: &str) -> bool {
        repo.starts_with("s3:")
    }

    /// Parses `s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]`.
    pub fn parse(repo: &str) -> Result<S3Location, String> {
        let usage = "the form is s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX], for example s3:https://s3.example.com/backups/cluster1";
        let rest = repo
            .strip_prefix("s3:")
            .ok_or_else(|| format!("{repo}: not an S3 location; {usage}"))?;
        let (scheme, rest) = rest
            .split_once("://")
            .filter(|(s, _)| *s == "http" || *s == "https")
            .ok_or_else(|| {
                format!("{repo}: the endpoint must start with http:// or https://; {usage}")
            })?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() || host.contains(['@', '?', '#']) {
            return Err(format!("{repo}: no valid host; {usage}"));
        }
        let path = path.trim_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(format!("{repo}: no bucket named; {usage}"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
            return Err(format!(
                "{repo}: the prefix may not hold `.`, `..` or empty parts; {usage}"
            ));
        }
        Ok(S3Location {
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// The `s3:` form, as the user writes it.
    pub fn display(&self) -> String {
        match self.prefix.is_empty() {
            true => format!("s3:{}/{}", self.endpoint, self.bucket),
            false => format!("s3:{}/{}/{}", self.endpoint, self.bucket, self.prefix),
        }
    }
}

/// Credentials and region, from the environment or an AWS profile.
#[derive(Clone, Default)]
pub struct S3Auth {
    /// `None`: requests go unsigned (a public bucket).
    pub credentials: Option<(String, String, Option<String>)>,
    pub region: String,
}

impl std::fmt::Debug for S3Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Auth")
            .field("credentials", &self.credentials.as_ref().map(|c| &c.0))
            .field("region", &self.region)
            .finish()
    }
}

impl S3Auth {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`;
    /// else the profile `AWS_PROFILE` (default `default`) of
    /// `AWS_SHARED_CREDENTIALS_FILE` (`~/.aws/credentials`). The region from
    /// `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile in `AWS_CONFIG_FILE`
    /// (`~/.aws/config`), else `us-east-1`.
    pub fn from_env() -> S3Auth {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let home = var("HOME").unwrap_or_default();
        let creds_file = var("AWS_SHARED_CREDENTIALS_FILE")
            .unwrap_or_else(|| format!("{home}/.aws/credentials"));
        let config_file = var("AWS_CONFIG_FILE").unwrap_or_else(|| format!("{home}/.aws/config"));
        let credentials = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(k), Some(s)) => Some((k, s, var("AWS_SESSION_TOKEN"))),
            _ => {
                let p = ini_section(&creds_file, &profile);
                let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                match (get("aws_access_key_id"), get("aws_secret_access_key")) {
                    (Some(k), Some(s)) => Some((k, s, get("aws_session_token"))),
                    _ => None,
                }
            }
        };
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| {
                let section = match profile.as_str() {
                    "default" => "default".to_string(),
                    p => format!("profile {p}"),
                };
                ini_section(&config_file, &section)
                    .into_iter()
                    .find(|(n, _)| n == "region")
                    .map(|(_, v)| v)
            })
            .unwrap_or_else(|| "us-east-1".into());
        S3Auth {
            credentials,
            region,
        }
    }
}

/// The `key = value` pairs of one `[section]` of an INI file; none when the
/// file or the section is missing.
fn ini_section(path: &str, section: &str) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
        } else if inside && let Some((k, v)) = line.split_once('=') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// A counting gate: at most `n` holders at a time.
struct Gate {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Gate {
    fn enter(&self) -> GatePass<'_> {
        let mut free = self.free.lock().expect("gate");
        while *free == 0 {
            free = self.cv.wait(free).expect("gate");
        }
        *free -= 1;
        GatePass(self)
    }
}

struct GatePass<'a>(&'a Gate);

impl Drop for GatePass<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().expect("gate") += 1;
        self.0.cv.notify_one();
    }
}

/// One answer from the server.
struct Reply {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// The `<Code>` of an S3 error body.
    fn code(&self) -> String {
        xml_values(&String::from_utf8_lossy(&self.body), "Code")
            .into_iter()
            .next()
            .unwrap_or_default()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A backend on an S3 bucket.
pub struct S3Backend {
    location: S3Location,
    bucket: Bucket,
    auth: S3Auth,
    agent: ureq::Agent,
    /// The most requests at a time (`--connections`).
    connections: usize,
    gate: Gate,
    /// Set once the bucket answered a listing: a 404 of HEAD then means a
    /// missing object without asking again.
    bucket_seen: std::sync::atomic::AtomicBool,
    /// The server's clock minus this machine's, in milliseconds, from the
    /// `Date` of the last answer that had one; `i64::MIN` before any.
    clock_offset_ms: std::sync::atomic::AtomicI64,
}

/// The certificates of `AWS_CA_BUNDLE` (PEM), which replace the built-in
/// roots as they do for the AWS tools: a server with a private CA.
fn ca_bundle(path: &std::path::Path) -> Result<ureq::tls::RootCerts, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("AWS_CA_BUNDLE {}: cannot read it: {e}", path.display()))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!(
            "AWS_CA_BUNDLE {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----); point it at the CA file of the S3 server, or unset it to trust the built-in roots",
            path.display()
        ));
    }
    tracing::debug!(
        "{} certificate(s) from AWS_CA_BUNDLE {}",
        certs.len(),
        path.display()
    );
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

impl S3Backend {
    /// A backend for `location`; `connections` is the most requests at a
    /// time (at least 1). No request is sent yet.
    pub fn new(
        location: S3Location,
        auth: S3Auth,
        connections: usize,
    ) -> Result<S3Backend, String> {
        let endpoint = url::Url::parse(&location.endpoint)
            .map_err(|e| format!("{}: bad endpoint: {e}", location.display()))?;
        let bucket = Bucket::new(
            endpoint,
            UrlStyle::Path,
            location.bucket.clone(),
            auth.region.clone(),
        )
        .map_err(|e| format!("{}: {e}", location.display()))?;
        let connections = connections.max(1);
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(bundle) = std::env::var_os("AWS_CA_BUNDLE").filter(|b| !b.is_empty()) {
            tls = tls.root_certs(ca_bundle(std::path::Path::new(&bundle))?);
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .max_idle_connections_per_host(connections)
            .max_idle_connections(connections)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .timeout_per_write(Some(Duration::from_secs(60)))
            .user_agent(concat!("pvsnap/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(S3Backend {
            location,
            bucket,
            auth,
            agent,
            connections,
            gate: Gate {
                free: Mutex::new(connections),
                cv: Condvar::new(),
            },
            bucket_seen: Default::default(),
            clock_offset_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
        })
    }

    /// The full object key of a repository-relative path.
    fn full_key(&self, rel: &str) -> String {
        match self.location.prefix.is_empty() {
            true => rel.to_string(),
            false => format!("{}/{rel}", self.location.prefix),
        }
    }

    /// The repository-relative path of a full object key.
    fn rel_key<'a>(&self, full: &'a str) -> Option<&'a str> {
        match self.location.prefix.is_empty() {
            true => Some(full),
            false => full
                .strip_prefix(self.location.prefix.as_str())
                .and_then(|r| r.strip_prefix('/')),
        }
    }

    fn signed_url(&self, method: Method, object: Option<&str>, query: &[(&str, &str)]) -> String {
        let url = match object {
            Some(o) => self.bucket.object_url(o),
            None => self.bucket.base_url().clone(),
        };
        match &self.auth.credentials {
            Some((key, secret, token)) => rusty_s3::signing::sign(
                &Timestamp::now(),
                method,
                url,
                key,
                secret,
                token.as_deref(),
                &self.auth.region,
                SIGNATURE_TTL,
                query.iter().copied(),
                std::iter::empty(),
            )
            .to_string(),
            None => {
                let mut url = url;
                if !query.is_empty() {
                    url.query_pairs_mut().extend_pairs(query.iter().copied());
                }
                url.to_string()
            }
        }
    }

    /// Sends one request about the object at the repository path `path`.
    fn send_object(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> Result<Reply, BackendError> {
        self.send(method, Some(&self.full_key(path)), &[], headers, body, path)
    }

    /// Sends one request, with retries; `what` names the object for messages.
    fn send(
        &self,
        method: Method,
        object: Option<&str>,
        query: &[(&str, &str)],
        headers: &[(&str, String)],
        body: Option<&[u8]>,
        what: &str,
    ) -> Result<Reply, BackendError> {
        let _pass = self.gate.enter();
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let ms = (100u64 << (attempt - 1)).min(3000);
                std::thread::sleep(Duration::from_millis(
                    ms + rand::random::<u64>() % (ms / 2 + 1),
                ));
            }
            let url = self.signed_url(method, object, query);
            match self.attempt(method, &url, headers, body) {
                // 501 Not Implemented is an answer, not a passing fault.
                Ok(r) if (r.status >= 500 && r.status != 501) || r.status == 429 => {
                    last = format!("HTTP {} {}", r.status, r.code());
                    tracing::debug!("{what}: {last}; retrying");
                }
                Ok(r) => return Ok(r),
                Err(e) => {
                    last = describe(&e);
                    tracing::debug!("{what}: {last}; retrying");
                }
            }
        }
        Err(self.remote(
            what,
            format!(
                "the endpoint {} (bucket {}) failed {ATTEMPTS} attempts, the last with: {last}. Check that the server is running and reachable at that address (the endpoint in --repo or PVSNAP_REPO), then run the command again; what this run stored before is kept and reused",
                self.location.endpoint, self.location.bucket
            ),
        ))
    }

    fn attempt(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> Result<Reply, ureq::Error> {
        let m = match method {
            Method::Head => ureq::http::Method::HEAD,
            Method::Get => ureq::http::Method::GET,
            Method::Post => ureq::http::Method::POST,
            Method::Put => ureq::http::Method::PUT,
            Method::Delete => ureq::http::Method::DELETE,
        };
        let mut req = ureq::http::Request::builder().method(m).uri(url);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let resp = match body {
            Some(b) => self.agent.run(req.body(b)?)?,
            None => self.agent.run(req.body(())?)?,
        };
        let (parts, b) = resp.into_parts();
        self.note_clock(&parts.headers);
        let mut out = Vec::new();
        if method != Method::Head {
            b.into_reader().read_to_end(&mut out)?;
        }
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: out,
        })
    }

    /// Keeps the server's clock offset from an answer's `Date` (whole
    /// seconds: the offset is off by up to a second).
    fn note_clock(&self, headers: &ureq::http::HeaderMap) {
        let date = headers
            .get("date")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| jiff::fmt::rfc2822::parse(t).ok());
        if let Some(d) = date {
            let offset = d.timestamp().duration_since(Timestamp::now());
            self.clock_offset_ms.store(
                offset
                    .as_millis()
                    .clamp(i64::MIN as i128 + 1, i64::MAX as i128) as i64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// The server's clock minus this machine's, from the last answer; one
    /// listing request asks the server when no answer told it yet. `None`
    /// when the server sends no `Date`.
    pub fn clock_offset(&self) -> Result<Option<jiff::SignedDuration>, BackendError> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.clock_offset_ms.load(Relaxed) == i64::MIN {
            self.check_bucket("")?;
            if self.clock_offset_ms.load(Relaxed) == i64::MIN {
                self.is_empty()?;
            }
        }
        Ok(match self.clock_offset_ms.load(Relaxed) {
            i64::MIN => None,
            ms => Some(jiff::SignedDuration::from_millis(ms)),
        })
    }

    fn remote(&self, what: &str, message: String) -> BackendError {
        BackendError::Remote {
            key: format!("{}/{what}", self.location.display()),
            message,
        }
    }

    /// The error for an answer no caller expects: access refused, no such
    /// bucket, anything else.
    fn unexpected(&self, what: &str, op: &str, r: &Reply) -> BackendError {
        let code = r.code();
        let (endpoint, bucket) = (&self.location.endpoint, &self.location.bucket);
        let message = match (r.status, code.as_str()) {
            (404, "NoSuchBucket") => format!(
                "bucket {bucket} does not exist at {endpoint}. Create it first (for example `aws --endpoint-url {endpoint} s3 mb s3://{bucket}`) or correct the bucket in --repo (or PVSNAP_REPO)"
            ),
            (401 | 403, _) => format!(
                "{endpoint} refused access to bucket {bucket} ({} {code}): the credentials are wrong or lack permission. Check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the profile in AWS_PROFILE), and AWS_REGION, for this endpoint",
                r.status
            ),
            // A HEAD answer has no body: no code, no message.
            (400, "") => format!(
                "{op} at {endpoint} (bucket {bucket}) answered HTTP 400 with no detail; the request was refused as malformed, often for the bucket name: S3 bucket names are 3 to 63 lowercase letters, digits, dots and hyphens"
            ),
            _ => format!(
                "{op} at {endpoint} (bucket {bucket}) answered HTTP {} {code}: {}",
                r.status,
                redact(
                    xml_values(&String::from_utf8_lossy(&r.body), "Message")
                        .first()
                        .map(String::as_str)
                        .unwrap_or("")
                )
            ),
        };
        self.remote(what, message)
    }

    fn head(&self, key: &ObjectKey) -> Result<Option<Reply>, BackendError> {
        let path = key.path();
        let r = self.send_object(Method::Head, &path, &[], None)?;
        match r.status {
            _ if r.ok() => Ok(Some(r)),
            // HEAD answers carry no body: tell a missing bucket from a
            // missing object by asking for the bucket.
            404 => {
                self.check_bucket(&path)?;
                Ok(None)
            }
            _ => Err(self.unexpected(&path, "HEAD", &r)),
        }
    }

    /// Fails with the clear error when the bucket is missing or refused.
    fn check_bucket(&self, what: &str) -> Result<(), BackendError> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.bucket_seen.load(Relaxed) {
            return Ok(());
        }
        let r = self.send(
            Method::Get,
            None,
            &[("list-type", "2"), ("max-keys", "1")],
            &[],
            None,
            what,
        )?;
        match r.ok() {
            true => {
                self.bucket_seen.store(true, Relaxed);
                Ok(())
            }
            false => Err(self.unexpected(what, "LIST", &r)),
        }
    }

    fn get_inner(&self, key: &ObjectKey, range: Option<(u64, u64)>) -> Result<Reply, BackendError> {
        let path = key.path();
        let headers: Vec<(&str, String)> = match range {
            Some((o, l)) => vec![("range", format!("bytes={o}-{}", o + l - 1))],
            None => vec![],
        };
        let r = self.send_object(Method::Get, &path, &headers, None)?;
        match (r.status, r.code().as_str()) {
            _ if r.ok() || r.status == 416 => Ok(r),
            (404, "NoSuchKey") => Err(BackendError::NotFound { key: path }),
            _ => Err(self.unexpected(&path, "GET", &r)),
        }
    }

    /// Every (relative key, size) under a relative prefix.
    fn list_prefix(&self, rel_prefix: &str) -> Result<Vec<(String, u64)>, BackendError> {
        let prefix = self.full_key(rel_prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // In sorted order, as signed (see `uploads`).
            let mut q: Vec<(&str, &str)> = Vec::new();
            if let Some(t) = &token {
                q.push(("continuation-token", t));
            }
            q.push(("list-type", "2"));
            // No empty `prefix=` (see `uploads`).
            if !prefix.is_empty() {
                q.push(("prefix", &prefix));
            }
            let r = self.send(Method::Get, None, &q, &[], None, rel_prefix)?;
            if !r.ok() {
                return Err(self.unexpected(rel_prefix, "LIST", &r));
            }
            let text = String::from_utf8_lossy(&r.body);
            let page = rusty_s3::actions::ListObjectsV2::parse_response(&text).map_err(|e| {
                self.remote(
                    rel_prefix,
                    format!("the server's listing is not valid: {e}"),
                )
            })?;
            for c in page.contents {
                if let Some(rel) = self.rel_key(&c.key) {
                    out.push((rel.to_string(), c.size.unwrap_or(0)));
                }
            }
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// Whether anything at all is stored under the repository's prefix.
    pub fn is_empty(&self) -> Result<bool, BackendError> {
        let prefix = match self.location.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", self.location.prefix),
        };
        let r = self.send(
            Method::Get,
            None,
            &[("list-type", "2"), ("max-keys", "1"), ("prefix", &prefix)],
            &[],
            None,
            "",
        )?;
        if !r.ok() {
            return Err(self.unexpected("", "LIST", &r));
        }
        Ok(xml_values(&String::from_utf8_lossy(&r.body), "Key").is_empty())
    }

    /// Whether all that is stored under the repository's prefix is lock
    /// objects (`locks/…`): an `init` holding its lock sees only locks.
    pub fn holds_only_locks(&self) -> Result<bool, BackendError> {
        Ok(self
            .list_prefix("")?
            .iter()
            .all(|(rel, _)| rel.starts_with("locks/")))
    }

    /// Multipart uploads never completed, as (relative key, upload id, started).
    fn uploads(&self) -> Result<Vec<Upload>, BackendError> {
        Ok(self.uploads_if_listed()?.unwrap_or_default())
    }

    /// [`S3Backend::uploads`]; `None` when the server cannot list them.
    fn uploads_if_listed(&self) -> Result<Option<Vec<Upload>>, BackendError> {
        let prefix = match self.location.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", self.location.prefix),
        };
        // An empty `prefix=` is left out: not every server signs an empty
        // value the way it is sent. The parameters go in sorted order, as
        // they are signed: s3s-fs computes the signature of the query in the
        // order sent and refuses `uploads&prefix=…` (403).
        let mut query = vec![];
        if !prefix.is_empty() {
            query.push(("prefix", prefix.as_str()));
        }
        query.push(("uploads", ""));
        let r = self.send(Method::Get, None, &query, &[], None, "")?;
        if r.status == 501 {
            // The server has no multipart listing (s3s-fs): pvsnap writes
            // every object with one PUT, so there is nothing of its own to
            // find there.
            tracing::debug!(
                "{}: the server cannot list multipart uploads",
                self.location.display()
            );
            return Ok(None);
        }
        if !r.ok() {
            return Err(self.unexpected("", "LIST uploads", &r));
        }
        let text = String::from_utf8_lossy(&r.body);
        Ok(Some(
            xml_blocks(&text, "Upload")
                .into_iter()
                .filter_map(|u| {
                    let key = xml_values(u, "Key").into_iter().next()?;
                    let id = xml_values(u, "UploadId").into_iter().next()?;
                    let started = xml_values(u, "Initiated")
                        .first()
                        .and_then(|t| t.parse::<Timestamp>().ok());
                    Some((self.rel_key(&key)?.to_string(), id, started))
                })
                .collect(),
        ))
    }

    /// Tries what the server does and reports it; see [`Probe`]. Its
    /// objects live under `pvsnap-probe-<random>/` beside the repository's
    /// folders and are removed again, whatever happens.
    pub fn probe(&self) -> Result<Probe, BackendError> {
        let dir = format!("pvsnap-probe-{:016x}", rand::random::<u64>());
        let result = self.probe_in(&dir);
        let mut left = 0;
        for (rel, _) in self.list_prefix(&format!("{dir}/")).unwrap_or_default() {
            if self.send_object(Method::Delete, &rel, &[], None).is_err() {
                left += 1;
            }
        }
        if left > 0 {
            tracing::warn!(
                "{left} probe object(s) under {}/{dir}/ could not be removed; remove them by hand",
                self.location.display()
            );
        }
        result
    }

    fn probe_in(&self, dir: &str) -> Result<Probe, BackendError> {
        let if_none_match = [("if-none-match", "*".to_string())];
        // One writer after another: the second must be refused.
        let lone = format!("{dir}/lone");
        let put = |key: &str, headers: &[(&str, String)], body: &[u8]| {
            let r = self.send_object(Method::Put, key, headers, Some(body))?;
            match r.status {
                200..=299 => Ok(true),
                // 409: AWS's answer to a conditional write racing another.
                409 | 412 => Ok(false),
                _ => Err(self.unexpected(key, "PUT", &r)),
            }
        };
        put(&lone, &if_none_match, b"first")?;
        let lone_refused = !put(&lone, &if_none_match, b"second")?;
        // Writers at once on one key, each with its own bytes; past the
        // request gate, so that they really race.
        let race = format!("{dir}/race");
        let url = self.signed_url(Method::Put, Some(&self.full_key(&race)), &[]);
        let barrier = std::sync::Barrier::new(PROBE_RACERS);
        let bodies: Vec<Vec<u8>> = (0..PROBE_RACERS)
            .map(|i| vec![b'a' + i as u8; 1 << 20])
            .collect();
        let answers: Vec<Result<Reply, ureq::Error>> = std::thread::scope(|s| {
            let racers: Vec<_> = bodies
                .iter()
                .map(|body| {
                    let (url, barrier, h) = (&url, &barrier, &if_none_match);
                    s.spawn(move || {
                        barrier.wait();
                        self.attempt(Method::Put, url, h, Some(body))
                    })
                })
                .collect();
            racers
                .into_iter()
                .map(|t| t.join().expect("a probe writer"))
                .collect()
        });
        let mut told_ok = Vec::new();
        for (i, a) in answers.into_iter().enumerate() {
            match a {
                Ok(r) if r.ok() => told_ok.push(i),
                Ok(r) if r.status == 409 || r.status == 412 => {}
                Ok(r) => return Err(self.unexpected(&race, "PUT", &r)),
                // A server that refuses early may close the connection while
                // the body is still being sent (a broken pipe): that writer
                // was not told its write was stored, as for a refusal. Had
                // its bytes been stored anyway, the GET below finds them and
                // the verdict is "not atomic", never "honoured".
                Err(e) => tracing::debug!(
                    "probe: racing PUT {i} got no answer ({}); counted as not stored",
                    describe(&e)
                ),
            }
        }
        let r = self.send_object(Method::Get, &race, &[], None)?;
        if !r.ok() {
            return Err(self.unexpected(&race, "GET", &r));
        }
        let winner_kept = told_ok.len() == 1 && r.body == bodies[told_ok[0]];
        let conditional_put = match (lone_refused, winner_kept) {
            (false, _) => ConditionalPut::Ignored,
            (true, true) => ConditionalPut::Honoured,
            (true, false) => ConditionalPut::NotAtomic,
        };
        // A listing right after writes shows them, and not after deletes.
        let names: Vec<String> = (0..3).map(|i| format!("{dir}/list/{i}")).collect();
        for n in &names {
            put(n, &[], b"listed")?;
        }
        let listed = self.list_prefix(&format!("{dir}/list/"))?.len();
        for n in &names {
            self.send_object(Method::Delete, n, &[], None)?;
        }
        let after_delete = self.list_prefix(&format!("{dir}/list/"))?.len();
        Ok(Probe {
            conditional_put,
            racers: PROBE_RACERS,
            racers_told_ok: told_ok.len(),
            list_after_write: listed == names.len() && after_delete == 0,
            multipart_listing: self.uploads_if_listed()?.is_some(),
            clock_offset: self.clock_offset()?,
        })
    }
}

/// Writers racing on one key in [`S3Backend::probe`].
pub const PROBE_RACERS: usize = 8;

/// What a server does with `If-None-Match: *` (create only if absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionalPut {
    /// One of the racing writers is told 200 and its bytes are stored;
    /// every other one, and a lone later writer, gets 412.
    Honoured,
    /// A lone later writer gets 412, but racing writers are not kept
    /// apart: several are told 200, or the stored bytes are not the one
    /// writer's that was told so.
    NotAtomic,
    /// A later writer replaces the object.
    Ignored,
}

impl ConditionalPut {
    /// `honoured`, `not_atomic`, `ignored` (the JSON of `repo probe`).
    pub fn name(self) -> &'static str {
        match self {
            ConditionalPut::Honoured => "honoured",
            ConditionalPut::NotAtomic => "not_atomic",
            ConditionalPut::Ignored => "ignored",
        }
    }
}

/// What [`S3Backend::probe`] found.
#[derive(Debug, Clone)]
pub struct Probe {
    pub conditional_put: ConditionalPut,
    pub racers: usize,
    /// Racing writers told their write succeeded.
    pub racers_told_ok: usize,
    /// A listing right after PUTs showed them, and right after DELETEs did
    /// not: what the lock protocol needs.
    pub list_after_write: bool,
    /// The server lists incomplete multipart uploads (else 501).
    pub multipart_listing: bool,
    /// The server's clock minus this machine's (whole seconds of `Date`).
    pub clock_offset: Option<jiff::SignedDuration>,
}

/// An incomplete multipart upload: relative key, upload id, when started.
type Upload = (String, String, Option<Timestamp>);

const UPLOAD_MARK: &str = "?uploadId=";

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.display()
    }

    /// Up to 4 packs in flight (64 MiB of 16 MiB packs), within
    /// `--connections`: a put waits mostly on the network.
    fn parallel_puts(&self) -> usize {
        self.connections.min(MAX_PARALLEL_PUTS)
    }

    /// As many reads as `--connections`: restore keeps them all busy.
    fn parallel_gets(&self) -> usize {
        self.connections
    }

    fn put(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        if let Some(r) = self.head(key)? {
            let size = r
                .header("content-length")
                .and_then(|l| l.parse::<u64>().ok());
            if size.is_some_and(|s| s != data.len() as u64) {
                return Err(BackendError::Conflict { key: key.path() });
            }
            return match self.get(key)? == data {
                true => Ok(()),
                false => Err(BackendError::Conflict { key: key.path() }),
            };
        }
        self.replace_damaged(key, data)
    }

    fn replace_damaged(&self, key: &ObjectKey, data: &[u8]) -> Result<(), BackendError> {
        // A PUT replaces an object whole: readers see the old or the new one.
        let path = key.path();
        let r = self.send_object(Method::Put, &path, &[], Some(data))?;
        match r.ok() {
            true => Ok(()),
            false => Err(self.unexpected(&path, "PUT", &r)),
        }
    }

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
        Ok(self.get_inner(key, None)?.body)
    }

    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        if len > 0 {
            let r = self.get_inner(key, Some((offset, len)))?;
            match r.status {
                206 if r.body.len() as u64 == len => return Ok(r.body),
                // A server that ignores ranges sends the whole object.
                200 => {
                    check_range(key, offset, len, r.body.len() as u64)?;
                    return Ok(r.body[offset as usize..(offset + len) as usize].to_vec());
                }
                _ => {}
            }
        }
        let size = self
            .head(key)?
            .and_then(|r| r.header("content-length").and_then(|l| l.parse().ok()))
            .ok_or_else(|| BackendError::NotFound { key: key.path() })?;
        check_range(key, offset, len, size)?;
        match len {
            0 => Ok(Vec::new()),
            _ => Err(self.remote(
                &key.path(),
                format!("the server returned a wrong range {offset}+{len}; run the command again"),
            )),
        }
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>, BackendError> {
        let rel_prefix = match kind {
            ObjectKind::Config => "config".to_string(),
            ObjectKind::Pack => "data/".to_string(),
            k => format!("{}/", k.name()),
        };
        Ok(self
            .list_prefix(&rel_prefix)?
            .into_iter()
            .filter_map(|(rel, size)| {
                let name = rel.rsplit('/').next()?.to_string();
                (ObjectKey::new(kind, name.clone()).path() == rel).then_some((name, size))
            })
            .collect())
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        let path = key.path();
        let r = self.send_object(Method::Delete, &path, &[], None)?;
        match r.ok() || r.code() == "NoSuchKey" {
            true => Ok(()),
            false => Err(self.unexpected(&path, "DELETE", &r)),
        }
    }

    fn modified(&self, key: &ObjectKey) -> Result<Option<Timestamp>, BackendError> {
        let r = self
            .head(key)?
            .ok_or_else(|| BackendError::NotFound { key: key.path() })?;
        // The server's clock, not this machine's.
        Ok(r.header("last-modified")
            .and_then(|t| jiff::fmt::rfc2822::parse(t).ok())
            .map(|z| z.timestamp()))
    }

    fn exists(&self, key: &ObjectKey) -> Result<bool, BackendError> {
        Ok(self.head(key)?.is_some())
    }

    fn now(&self) -> Result<Timestamp, BackendError> {
        let offset = self.clock_offset()?.unwrap_or_default();
        Ok(Timestamp::now()
            .saturating_add(offset)
            .unwrap_or(Timestamp::now()))
    }

    fn leftovers(&self) -> Result<Vec<Leftover>, BackendError> {
        Ok(self
            .uploads()?
            .into_iter()
            .map(|(key, id, started)| Leftover {
                path: format!("{key}{UPLOAD_MARK}{id}"),
                size: 0,
                modified: started,
            })
            .collect())
    }

    fn remove_leftover(&self, leftover: &Leftover) -> Result<(), BackendError> {
        let Some((key, id)) = leftover.path.split_once(UPLOAD_MARK) else {
            return Err(BackendError::NotALeftover {
                path: leftover.path.clone(),
            });
        };
        let r = self.send(
            Method::Delete,
            Some(&self.full_key(key)),
            &[("uploadId", id)],
            &[],
            None,
            key,
        )?;
        match r.ok() || r.code() == "NoSuchUpload" {
            true => Ok(()),
            false => Err(self.unexpected(key, "abort upload", &r)),
        }
    }
}

/// A transport error in words, with no signed URL in them.
fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => redact(&io.to_string()),
        ureq::Error::ConnectionFailed => "connection refused or failed".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        e => redact(&e.to_string()),
    }
}

/// `text` with the query of every URL that carries a signature or
/// credential cut off: a presigned URL is a password for an hour.
fn redact(text: &str) -> String {
    text.split(' ')
        .map(|word| match word.split_once('?') {
            Some((url, query)) if query.to_ascii_lowercase().contains("x-amz-") => {
                format!("{url}?…")
            }
            _ => word.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The blocks `<tag>…</tag>` of an XML text, inner text only.
fn xml_blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

/// The unescaped text of every `<tag>…</tag>` of an XML text.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    xml_blocks(xml, tag)
        .into_iter()
        .map(|v| {
            v.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed CA certificate, as a private S3 server's would be.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBiDCCAS+gAwIBAgIUEd7Y5MXdrHA8+N/Rw/LKcIo6oIMwCgYIKoZIzj0EAwIw\nGTEXMBUGA1UEAwwOcHZzbmFwLXRlc3QtY2EwIBcNMjYxMjA0MTEyODIxWhgPMjEy\nNjExMTAxMTI4MjFaMBkxFzAVBgNVBAMMDnB2c25hcC10ZXN0LWNhMFkwEwYHKoZI\nzj0CAQYIKoZIzj0DAQcDQgAE8yVUUJ5Z1xJym85eNZd6ZoizWxiJyv0zPJpmsBV5\nRUrxhT8kEDM9yGcJ2ncnswDuexDmLu16CyrIVMbvsWNAb6NTMFEwHQYDVR0OBBYE\nFLyxdXQBdamy1J85KppzaVS5z2qSMB8GA1UdIwQYMBaAFLyxdXQBdamy1J85Kppz\naVS5z2qSMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgGLAPjDSW\n61arK0smkFJjkaHq9q6XDXU10tFfXgNFGX4CIAG1tMPIsL5x2vFOR7L0oQQV22l1\nQrB5cgCGI6Y8XEh+\n-----END CERTIFICATE-----";

    #[test]
    fn a_ca_bundle_is_read_or_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, format!("a comment\n{TEST_CA}")).unwrap();
        match ca_bundle(&good).unwrap() {
            ureq::tls::RootCerts::Specific(certs) => assert_eq!(certs.len(), 1),
            other => panic!("not the bundle's certificates: {other:?}"),
        }
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here").unwrap();
        let err = ca_bundle(&empty).unwrap_err();
        assert!(
            err.contains("AWS_CA_BUNDLE") && err.contains("empty.pem"),
            "{err}"
        );
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let err = ca_bundle(&dir.path().join("missing.pem")).unwrap_err();
        assert!(err.contains("cannot read it"), "{err}");
    }

    #[test]
    fn locations_parse_and_bad_ones_are_named() {
        let l = S3Location::parse("s3:http://127.0.0.1:9000/bucket/a/b/").unwrap();
        assert_eq!(l.endpoint, "http://127.0.0.1:9000");
        assert_eq!(l.bucket, "bucket");
        assert_eq!(l.prefix, "a/b");
        assert_eq!(l.display(), "s3:http://127.0.0.1:9000/bucket/a/b");
        let l = S3Location::parse("s3:https://s3.example.com/b").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("b", ""));
        for bad in [
            "s3:ftp://h/b",
            "s3:http://h",
            "s3:http://h/",
            "s3:http:///b",
            "s3:http://h/b/../c",
            "s3:http://user@h/b",
        ] {
            let e = S3Location::parse(bad).unwrap_err();
            assert!(e.contains(bad) && e.contains("s3:http[s]://"), "{e}");
        }
    }

    #[test]
    fn signed_urls_are_cut_from_messages() {
        let m = "bad uri http://h:9/b/k?X-Amz-Algorithm=AWS4&X-Amz-Signature=abc123 here; also http://h/x?a=1";
        let r = redact(m);
        assert_eq!(r, "bad uri http://h:9/b/k?… here; also http://h/x?a=1");
        assert!(!redact("u?x-amz-credential=K%2F").contains("credential"));
    }

    #[test]
    fn xml_values_are_unescaped() {
        let x = "<a><Key>x&amp;y</Key><Key>z</Key></a>";
        assert_eq!(xml_values(x, "Key"), ["x&y", "z"]);
        assert!(xml_values(x, "Nope").is_empty());
    }

    #[test]
    fn profiles_are_read_from_the_ini_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("credentials");
        std::fs::write(
            &f,
            "[default]\naws_access_key_id = A\n[other]\naws_access_key_id=B\naws_secret_access_key = S\n",
        )
        .unwrap();
        let s = ini_section(f.to_str().unwrap(), "other");
        assert_eq!(
            s,
            [
                ("aws_access_key_id".into(), "B".into()),
                ("aws_secret_access_key".into(), "S".into())
            ]
        );
        assert!(ini_section("/nonexistent", "default").is_empty());
    }
}

#[cfg(test)]
mod server_tests {
    use super::super::s3_test_server::{Proxy, TestServer};
    use super::*;

    fn backend(endpoint: &str, bucket: &str, prefix: &str) -> S3Backend {
        let auth = S3Auth {
            credentials: Some(("pvsnaptest".into(), "secret".into(), None)),
            region: "us-east-1".into(),
        };
        let loc = S3Location {
            endpoint: endpoint.into(),
            bucket: bucket.into(),
            prefix: prefix.into(),
        };
        S3Backend::new(loc, auth, 4).unwrap()
    }

    #[test]
    fn s3_backend_keeps_the_contract() {
        let Some(server) = TestServer::get() else {
            return;
        };
        let bucket = server.new_bucket();
        super::super::contract_tests::run(&backend(&server.endpoint, &bucket, ""));
        // Under a prefix, and beside another repository's objects.
        let b = backend(&server.endpoint, &bucket, "a/b");
        super::super::contract_tests::run(&b);
        // The contract leaves the config behind; a prefix beside it is empty.
        assert!(!b.is_empty().unwrap());
        assert!(
            backend(&server.endpoint, &bucket, "a/bc")
                .is_empty()
                .unwrap()
        );
    }

    /// The contract on s3s-fs, which verifies every signature.
    #[test]
    fn s3_backend_keeps_the_contract_on_a_server_that_verifies_signatures() {
        let Some(server) = TestServer::verifying() else {
            return;
        };
        let bucket = server.new_bucket();
        super::super::contract_tests::run(&backend(&server.endpoint, &bucket, "a/b"));
        assert!(
            backend(&server.endpoint, &bucket, "a/bc")
                .is_empty()
                .unwrap()
        );
    }

    #[test]
    fn the_probe_reports_what_each_server_does_and_leaves_nothing() {
        let Some(server) = TestServer::get() else {
            return;
        };
        let bucket = server.new_bucket();
        // moto applies If-None-Match atomically and lists uploads.
        let b = backend(&server.endpoint, &bucket, "p");
        let p = b.probe().unwrap();
        assert_eq!(p.conditional_put, ConditionalPut::Honoured, "{p:?}");
        assert_eq!(p.racers_told_ok, 1, "{p:?}");
        assert!(p.list_after_write && p.multipart_listing, "{p:?}");
        assert!(p.clock_offset.unwrap().abs() < jiff::SignedDuration::from_secs(5));
        assert!(b.is_empty().unwrap(), "the probe removed its objects");
        // A server an hour behind, through the proxy.
        let gate = Proxy::start(&server.endpoint, None);
        gate.shift_clock(-3600);
        let p = backend(&gate.endpoint, &bucket, "p").probe().unwrap();
        let off = p.clock_offset.unwrap().as_secs();
        assert!((-3605..=-3595).contains(&off), "{p:?}");
        assert!(b.is_empty().unwrap());
        // s3s-fs refuses a lone second writer but does not keep racers
        // apart (when they overlap), and cannot list uploads.
        if let Some(v) = TestServer::verifying() {
            let bucket = v.new_bucket();
            let b = backend(&v.endpoint, &bucket, "");
            let p = b.probe().unwrap();
            eprintln!("s3s-fs: {p:?}");
            assert_ne!(p.conditional_put, ConditionalPut::Ignored, "{p:?}");
            assert!(p.list_after_write && !p.multipart_listing, "{p:?}");
            assert!(b.is_empty().unwrap());
        }
    }

    #[test]
    fn modified_is_the_servers_clock_and_leftovers_are_aborted_uploads() {
        let Some(server) = TestServer::get() else {
            return;
        };
        let bucket = server.new_bucket();
        let b = backend(&server.endpoint, &bucket, "p");
        let k = ObjectKey::new(ObjectKind::Index, "ab".repeat(32));
        b.put(&k, b"x").unwrap();
        let t = b.modified(&k).unwrap().expect("Last-Modified");
        assert!(Timestamp::now().duration_since(t).abs() < jiff::SignedDuration::from_secs(120));
        // An upload started and never completed, as a killed client leaves it.
        let url = b.signed_url(
            Method::Post,
            Some("p/data/ab/unfinished"),
            &[("uploads", "")],
        );
        let r = b.attempt(Method::Post, &url, &[], Some(b"")).unwrap();
        assert!(r.ok(), "{}", String::from_utf8_lossy(&r.body));
        let left = b.leftovers().unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].path.starts_with("data/ab/unfinished?uploadId="));
        assert!(left[0].modified.is_some());
        b.remove_leftover(&left[0]).unwrap();
        b.remove_leftover(&left[0]).unwrap();
        assert!(b.leftovers().unwrap().is_empty());
        assert_eq!(b.get(&k).unwrap(), b"x");
    }

    #[test]
    fn faults_name_the_endpoint_the_bucket_and_the_next_step() {
        let Some(server) = TestServer::get() else {
            return;
        };
        let k = ObjectKey::config();
        let missing = backend(&server.endpoint, "no-such-bucket-here", "");
        let e = missing.get(&k).unwrap_err().to_string();
        assert!(
            e.contains("no-such-bucket-here") && e.contains("s3 mb"),
            "{e}"
        );
        let e = missing.put(&k, b"c").unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        let bucket = server.new_bucket();
        let gate = Proxy::start(&server.endpoint, Some("someoneelse".into()));
        let e = backend(&gate.endpoint, &bucket, "")
            .get(&k)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("refused access") && e.contains("AWS_ACCESS_KEY_ID"),
            "{e}"
        );
        let down = format!(
            "http://127.0.0.1:{}",
            super::super::s3_test_server::free_port()
        );
        let started = std::time::Instant::now();
        let e = backend(&down, &bucket, "").get(&k).unwrap_err().to_string();
        assert!(
            e.contains(&down) && e.contains(&bucket) && e.contains("attempts"),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}
