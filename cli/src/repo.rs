//! Finding, creating and opening the repository named on the command line.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use pvsnap_engine::backend::cached::CacheOptions;
use pvsnap_engine::backend::local::{LocalBackend, Modes};
use pvsnap_engine::backend::s3::{S3Auth, S3Backend, S3Location};
use pvsnap_engine::backend::{Cached, DryRun, DynBackend};
use pvsnap_engine::repo::lock::LockGuard;
use pvsnap_engine::{Error, Repository};

use crate::Cli;

/// Where the repository is, and whether the user named it.
pub struct Location {
    /// The folder; for a bucket, its `s3:` form (which no folder check
    /// finds on disk, so the folder checks below pass it by).
    pub path: PathBuf,
    /// Set when the repository is on S3 (`s3:http[s]://HOST/BUCKET[/PREFIX]`).
    pub s3: Option<S3Location>,
    pub explicit: bool,
}

pub fn location(cli: &Cli) -> Result<Location> {
    match &cli.repo {
        Some(p) => location_of(p),
        None => Ok(Location {
            path: default_repo()?,
            s3: None,
            explicit: false,
        }),
    }
}

/// A repository named on the command line (`--repo`, `copy --to`): a
/// folder, or a bucket in the `s3:` form.
pub fn location_of(p: &Path) -> Result<Location> {
    if let Some(s) = p.to_str().filter(|s| S3Location::is_s3(s)) {
        let s3 = S3Location::parse(s)
            .map_err(|e| anyhow!("{e}; a folder whose name starts with `s3:` is named ./s3:…"))?;
        return Ok(Location {
            path: PathBuf::from(s3.display()),
            s3: Some(s3),
            explicit: true,
        });
    }
    Ok(Location {
        path: p.to_path_buf(),
        s3: None,
        explicit: true,
    })
}

/// `/var/lib/pvsnap/repo` for root; `$XDG_DATA_HOME/pvsnap/repo` or
/// `~/.local/share/pvsnap/repo` otherwise.
pub fn default_repo() -> Result<PathBuf> {
    if pvsnap_engine::fsmeta::is_root() {
        return Ok(PathBuf::from("/var/lib/pvsnap/repo"));
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("pvsnap/repo"));
    }
    let home = std::env::var_os("HOME").context(
        "neither --repo, PVSNAP_REPO, XDG_DATA_HOME nor HOME is set; name a repository with --repo",
    )?;
    Ok(PathBuf::from(home).join(".local/share/pvsnap/repo"))
}

/// Refuses a repository path that cannot be a repository folder: a file,
/// or a path through a file.
pub fn check_location(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => bail!(
            "{}: this is a file, not a folder; a repository is a folder. Give --repo (or PVSNAP_REPO) the folder `pvsnap init` created, or a new path to create one there",
            path.display()
        ),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => bail!(
            "{}: part of this path is a file, not a folder; a repository is a folder. Give --repo (or PVSNAP_REPO) the folder `pvsnap init` created, or a new path to create one there",
            path.display()
        ),
        _ => Ok(()),
    }
}

/// The folders every repository has, whatever it holds.
const LAYOUT: [&str; 3] = ["data", "index", "snapshots"];

/// When `path` has a repository's folders but no config object: what to
/// say instead of advising `init`, which would refuse the folder (and whose
/// new config could not read the data anyway).
pub fn config_missing(path: &Path) -> Option<anyhow::Error> {
    if path.join("config").exists() || !LAYOUT.iter().all(|d| path.join(d).is_dir()) {
        return None;
    }
    Some(anyhow!(
        "{}/config is missing: this folder holds a pvsnap repository (data, index, snapshots), but without its config object nothing in it can be read. Put back config from a copy of this repository (a backup or a replica of the folder); do not run `pvsnap init` here, a new config cannot read the data. If the repository never held a snapshot, remove the folder and run `pvsnap init` again",
        path.display()
    ))
}

/// The backend of a location: the folder, or the bucket with the
/// credentials of the environment and `--connections` requests at a time.
pub fn backend(cli: &Cli, loc: &Location) -> Result<DynBackend> {
    Ok(match &loc.s3 {
        Some(s3) => Arc::new(s3_backend(cli, s3)?),
        None => Arc::new(LocalBackend::new(&loc.path)),
    })
}

pub fn s3_backend(cli: &Cli, s3: &S3Location) -> Result<S3Backend> {
    let connections = cli
        .connections
        .map_or(pvsnap_engine::backend::s3::DEFAULT_CONNECTIONS, usize::from);
    S3Backend::new(s3.clone(), S3Auth::from_env(), connections).map_err(|e| anyhow!(e))
}

/// A remote repository's backend behind the local cache
/// (`$XDG_CACHE_HOME/pvsnap/<repository id>`), unless `--no-cache`. A
/// local folder is read directly: a cache on the same machine saves nothing.
/// `cache` is where the cache lives (`None`: no home folder to put it in).
pub fn with_cache(
    cli: &Cli,
    be: DynBackend,
    local: bool,
    cache: Option<CacheOptions>,
) -> DynBackend {
    if local || cli.no_cache {
        return be;
    }
    match cache {
        Some(opts) => Cached::wrap(be, &opts),
        None => {
            tracing::warn!(
                "no local cache for {}: neither XDG_CACHE_HOME nor HOME is set",
                be.location()
            );
            be
        }
    }
}

/// `10M`, `512k`, `1.5G`, `2MiB`, `800000`: a number of bytes, at least 1
/// (K, M, G, T are KiB, MiB, GiB, TiB).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let body = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (num, mult) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 1u64 << 10),
        Some('m') => (&body[..body.len() - 1], 1 << 20),
        Some('g') => (&body[..body.len() - 1], 1 << 30),
        Some('t') => (&body[..body.len() - 1], 1 << 40),
        _ => (body, 1),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v * mult as f64 >= 1.0 && v * (mult as f64) < 1e18 => {
            Some((v * mult as f64) as u64)
        }
        _ => None,
    }
}

/// `--cache-size`: `512M`, `2G`; at least 1 MiB.
pub fn parse_cache_size(s: &str) -> Result<u64, String> {
    match parse_bytes(s) {
        Some(n) if n >= 1 << 20 => Ok(n),
        _ => Err(format!(
            "`{s}` is not a cache size such as 512M or 2G (K, M, G = KiB, MiB, GiB) of at least 1M; --no-cache reads without a cache"
        )),
    }
}

/// Where the local cache of a remote repository lives and how large it may
/// grow: `$XDG_CACHE_HOME/pvsnap`, `--cache-size` (default 1 GiB).
pub fn cache_options(cli: &Cli) -> Option<CacheOptions> {
    CacheOptions::default_options().map(|o| CacheOptions {
        limit: cli.cache_size.unwrap_or(o.limit),
        ..o
    })
}

/// The password from `--password-file`, `PVSNAP_PASSWORD` or a terminal prompt.
pub fn password(cli: &Cli, confirm: bool) -> pvsnap_engine::Result<Vec<u8>> {
    password_from(
        cli.password_file.as_deref(),
        "PVSNAP_PASSWORD",
        "repository password: ",
        confirm,
    )
}

/// A password from a file, else the variable `env`, else a prompt on a
/// terminal: how every repository's password is given (`--password-file`
/// and `PVSNAP_PASSWORD` for `--repo`, `--to-password-file` and
/// `PVSNAP_TO_PASSWORD` for `copy --to`).
pub fn password_from(
    file: Option<&Path>,
    env: &str,
    prompt: &str,
    confirm: bool,
) -> pvsnap_engine::Result<Vec<u8>> {
    // Copies read on the way are wiped; the engine wipes the one returned.
    if let Some(f) = file {
        let s = zeroize::Zeroizing::new(std::fs::read(f).map_err(|e| {
            Error::Invalid(format!("{}: cannot read password file: {e}", f.display()))
        })?);
        let trimmed = s.strip_suffix(b"\n").unwrap_or(&s);
        return Ok(trimmed.strip_suffix(b"\r").unwrap_or(trimmed).to_vec());
    }
    if let Some(p) = std::env::var_os(env) {
        return Ok(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec());
    }
    if !std::io::stdin().is_terminal() {
        return Err(pvsnap_engine::error::CryptoError::PasswordRequired.into());
    }
    let p = zeroize::Zeroizing::new(
        rpassword::prompt_password(prompt)
            .map_err(|e| Error::Invalid(format!("cannot read the password: {e}")))?,
    );
    if confirm {
        let again = zeroize::Zeroizing::new(
            rpassword::prompt_password("again: ")
                .map_err(|e| Error::Invalid(format!("cannot read the password: {e}")))?,
        );
        if *again != *p {
            return Err(Error::Invalid("the two passwords differ".into()));
        }
    }
    Ok(p.as_bytes().to_vec())
}

/// Opens the repository, or creates it if it is the default one and
/// `create_default` is set (first `pvsnap snapshot` on a machine).
pub fn open(cli: &Cli, create_default: bool, dry_run: bool) -> Result<Repository> {
    let loc = location(cli)?;
    let be = with_cache(
        cli,
        backend(cli, &loc)?,
        loc.s3.is_none(),
        cache_options(cli),
    );
    let be: DynBackend = if dry_run {
        Arc::new(DryRun::new(be))
    } else {
        be
    };
    check_location(&loc.path)?;
    let pw = || password(cli, false);
    match Repository::open(be.clone(), Some(&pw)) {
        Ok(r) => {
            tracing::info!(
                "opened repository {} at {} (encryption: {})",
                r.config().id.short(),
                loc.path.display(),
                r.config().encryption
            );
            if !dry_run {
                crate::audit::opened(&r);
            }
            Ok(r)
        }
        Err(Error::NotARepository(_)) if create_default && !loc.explicit && !dry_run => {
            create(
                &loc.path,
                pvsnap_engine::InitOptions::default(),
                Modes::PRIVATE,
            )?;
            // As `init` without --encryption: unencrypted, and a password
            // given for it is named, never silently dropped.
            if let Some(given) = crate::cmd::init::password_given(cli) {
                eprintln!(
                    "pvsnap: created an UNENCRYPTED repository at {}: {given} is set, but a repository created by a first snapshot is not encrypted and the password is not used. To encrypt, remove {} and run `pvsnap init --encryption` before the first snapshot",
                    loc.path.display(),
                    loc.path.display()
                );
            } else if !cli.quiet {
                eprintln!("pvsnap: created repository at {}", loc.path.display());
            }
            let r = Repository::open(be, Some(&pw))?;
            crate::audit::opened(&r);
            Ok(r)
        }
        Err(Error::NotARepository(_)) if config_missing(&loc.path).is_some() => {
            Err(config_missing(&loc.path).expect("checked"))
        }
        Err(Error::NotARepository(p)) if !loc.explicit => {
            bail!(
                "no repository at {p} (the default); take a first snapshot with `pvsnap snapshot DIR`, or create one with `pvsnap init`"
            )
        }
        Err(Error::NotARepository(p)) => {
            bail!("{p}: not a pvsnap repository; create it with `pvsnap --repo {p} init`")
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates the repository at `loc`: a folder (see [`create`]) or a bucket
/// or prefix, which must hold nothing yet.
pub fn create_at(
    cli: &Cli,
    loc: &Location,
    opts: pvsnap_engine::InitOptions,
    modes: Modes,
) -> Result<Repository> {
    let Some(s3) = &loc.s3 else {
        return create(&loc.path, opts, modes);
    };
    opts.validate()?;
    let s3be = Arc::new(s3_backend(cli, s3)?);
    let be: DynBackend = s3be.clone();
    let config = pvsnap_engine::backend::ObjectKey::config();
    let not_empty = || {
        anyhow!(
            "{}: this bucket or prefix is not empty and holds no repository; choose an empty bucket or a new prefix (s3:…/BUCKET/PREFIX)",
            s3.display()
        )
    };
    if be.exists(&config)? {
        return Err(Error::AlreadyInitialized(s3.display()).into());
    }
    // Two `init`s at once on one prefix: each takes an exclusive lock
    // first, and at most one of them holds it (both may back off: then
    // each tries again after a random pause). Only the one that holds it
    // looks whether the prefix is empty (but for locks): the other's key
    // slot, written under its lock, is no foreign object.
    let host = pvsnap_engine::repo::hostname_public();
    let mut tries = 0;
    let _guard = loop {
        match LockGuard::acquire(be.clone(), true, "init", &host) {
            Ok(g) => break g,
            Err(Error::Locked { .. }) if tries < 4 && !be.exists(&config)? => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100 + rand_millis(900)));
            }
            Err(Error::Locked { .. }) if be.exists(&config)? => {
                return Err(Error::AlreadyInitialized(s3.display()).into());
            }
            Err(Error::Locked { .. }) if !s3be.holds_only_locks()? => return Err(not_empty()),
            Err(Error::Locked { holder, .. }) => bail!(
                "{}: another `pvsnap init` is creating a repository here at this moment ({holder}); when it is done, `pvsnap --repo {} snapshots` shows it. Run init again only if that one failed",
                s3.display(),
                s3.display()
            ),
            Err(e) => return Err(e.into()),
        }
    };
    if be.exists(&config)? {
        return Err(Error::AlreadyInitialized(s3.display()).into());
    }
    if !s3be.holds_only_locks()? {
        return Err(not_empty());
    }
    let made = Repository::init(be.clone(), opts);
    if made.is_err() {
        // The prefix was empty: the key slot written before the config
        // failed is ours to remove, so that a retry finds it empty again.
        let kind = pvsnap_engine::repo::format::ObjectKind::Key;
        for (name, _) in be.list(kind).unwrap_or_default() {
            let _ = be.delete(&pvsnap_engine::backend::ObjectKey::new(kind, name));
        }
    }
    Ok(made?)
}

/// A pause of up to `max` milliseconds that differs between processes.
fn rand_millis(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    (nanos ^ (std::process::id() as u64).wrapping_mul(2_654_435_761)) % max
}

/// Opens the repository at `loc` that a command names besides `--repo`
/// (`copy --to`, `init --copy-chunker-params-from`), through `backend`;
/// `flag` names the option in messages.
pub fn open_other(
    loc: &Location,
    backend: DynBackend,
    password: PasswordSource<'_>,
    flag: &str,
) -> Result<Repository> {
    let path = loc.path.as_path();
    if loc.s3.is_none() {
        check_location(path)?;
    }
    let pw = || password_from(password.file, password.env, password.prompt, false);
    match Repository::open(backend, Some(&pw)) {
        Ok(r) => Ok(r),
        Err(Error::NotARepository(_)) if config_missing(path).is_some() => {
            Err(config_missing(path).expect("checked"))
        }
        Err(Error::NotARepository(p)) => bail!(
            "{flag} {p}: not a pvsnap repository; create it first with `pvsnap --repo {p} init` (add --copy-chunker-params-from with the other repository to deduplicate with it)"
        ),
        Err(Error::Crypto(pvsnap_engine::error::CryptoError::PasswordRequired)) => bail!(
            "{flag} {}: the repository is encrypted; give its password with {} or {}",
            path.display(),
            password.file_flag,
            password.env
        ),
        Err(e) => Err(anyhow::Error::from(e).context(format!("{flag} {}", path.display()))),
    }
}

/// Where the password of a repository named by another option comes from.
pub struct PasswordSource<'a> {
    pub file: Option<&'a Path>,
    pub file_flag: &'a str,
    pub env: &'a str,
    pub prompt: &'a str,
}

/// Creates the folder layout and the repository objects. The options are
/// checked before anything is created; when a later step fails, what this
/// call created is removed again (and only that), so a retry starts clean.
pub fn create(
    path: &std::path::Path,
    opts: pvsnap_engine::InitOptions,
    modes: Modes,
) -> Result<Repository> {
    opts.validate()?;
    check_location(path)?;
    if let Some(e) = config_missing(path) {
        return Err(e);
    }
    if path.exists() && std::fs::read_dir(path)?.next().is_some() && !path.join("config").exists() {
        bail!(
            "{}: folder is not empty and is not a repository; choose an empty or new folder",
            path.display()
        );
    }
    if path.join("config").exists() {
        return Err(Error::AlreadyInitialized(path.display().to_string()).into());
    }
    let created = Created::before(path);
    let local = LocalBackend::new(path).with_modes(modes);
    let result = local
        .create_layout()
        .with_context(|| format!("{}: cannot create the repository folders", path.display()))
        .and_then(|()| Ok(Repository::init(Arc::new(local), opts)?));
    if result.is_err() {
        created.undo();
    }
    result
}

/// What creating a repository at a path will have created: the topmost
/// folder that did not exist, or (for an existing empty folder) its entries.
struct Created {
    root: PathBuf,
    top_new: Option<PathBuf>,
}

impl Created {
    fn before(root: &std::path::Path) -> Created {
        let top_new = root
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
            .last()
            .map(PathBuf::from);
        Created {
            root: root.to_path_buf(),
            top_new,
        }
    }

    /// Removes what was created; the root was empty before, so all it holds
    /// now is ours.
    fn undo(&self) {
        let gone = match &self.top_new {
            Some(top) => std::fs::remove_dir_all(top),
            None => std::fs::read_dir(&self.root).and_then(|mut rd| {
                rd.try_for_each(|e| {
                    let p = e?.path();
                    if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    }
                })
            }),
        };
        if let Err(e) = gone {
            eprintln!(
                "pvsnap: could not remove the partly created repository at {}: {e}; remove it before retrying",
                self.root.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_repositories_are_cached_unless_no_cache_and_local_ones_never() {
        use clap::Parser;
        let repo = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let be: DynBackend = Arc::new(LocalBackend::new(repo.path()));
        LocalBackend::new(repo.path()).create_layout().unwrap();
        Repository::init(be.clone(), pvsnap_engine::InitOptions::default()).unwrap();
        let opts = || {
            Some(CacheOptions {
                root: cache.path().to_path_buf(),
                limit: 1 << 20,
            })
        };
        let cached = |args: &[&str], local: bool| {
            let cli = Cli::try_parse_from(args).unwrap();
            let wrapped = with_cache(&cli, be.clone(), local, opts());
            !Arc::ptr_eq(&wrapped, &be)
        };
        assert!(cached(&["pvsnap", "snapshots"], false));
        assert!(!cached(&["pvsnap", "snapshots", "--no-cache"], false));
        assert!(!cached(&["pvsnap", "--no-cache", "snapshots"], false));
        assert!(!cached(&["pvsnap", "snapshots"], true));
        // One folder per repository id.
        let id = Repository::open(be.clone(), None)
            .unwrap()
            .config()
            .id
            .to_hex();
        assert!(cache.path().join(id).is_dir());
    }

    #[test]
    fn cache_size_sets_the_limit_and_bad_sizes_are_named() {
        use clap::Parser;
        let limit = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            cache_options(&cli).map(|o| o.limit)
        };
        if CacheOptions::default_options().is_none() {
            eprintln!("*** no HOME or XDG_CACHE_HOME: cache_options is not tried ***");
        } else {
            assert_eq!(limit(&["pvsnap", "snapshots"]), Some(1 << 30));
            assert_eq!(
                limit(&["pvsnap", "--cache-size", "2G", "snapshots"]),
                Some(2 << 30)
            );
            assert_eq!(
                limit(&["pvsnap", "snapshots", "--cache-size", "512MiB"]),
                Some(512 << 20)
            );
        }
        for bad in ["0", "10k", "lots", ""] {
            let e = Cli::try_parse_from(["pvsnap", "--cache-size", bad, "snapshots"])
                .err()
                .unwrap()
                .to_string();
            assert!(
                e.contains("not a cache size") && e.contains("--no-cache"),
                "{e}"
            );
        }
    }

    #[test]
    fn undo_removes_only_what_creating_made() {
        let dir = tempfile::tempdir().unwrap();
        let keep = dir.path().join("keep");
        std::fs::write(&keep, b"x").unwrap();
        // New folders, two levels deep.
        let root = dir.path().join("a/b/repo");
        let created = Created::before(&root);
        std::fs::create_dir_all(root.join("data/00")).unwrap();
        created.undo();
        assert!(!dir.path().join("a").exists());
        assert!(keep.exists());
        // An existing empty folder stays, emptied.
        let root = dir.path().join("empty");
        std::fs::create_dir(&root).unwrap();
        let created = Created::before(&root);
        std::fs::create_dir_all(root.join("data/00")).unwrap();
        std::fs::write(root.join("config"), b"c").unwrap();
        created.undo();
        assert!(root.is_dir());
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
        assert!(keep.exists());
    }
}
