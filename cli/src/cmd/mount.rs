//! `pvsnap mount MOUNTPOINT [--snapshot SNAP] [--daemon]`
//!
//! Serves the repository read-only through FUSE until SIGINT, SIGTERM or
//! SIGHUP (then it unmounts) or until someone unmounts it (`fusermount3 -u`,
//! `umount`). A shared repository lock is held the whole time, so `forget` and
//! `prune` wait; snapshots may still be taken and show up in the mount.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pvsnap_engine::vfs::{Vfs, VfsOptions};
use pvsnap_fuse::{MountOptions, Unmounted};

use crate::Cli;

/// The layout, for `pvsnap mount --help`.
const LAYOUT: &str = "\
Layout of the mount (times in the local time zone):
  snapshots/<YYYY-MM-DDTHH:MM:SS>_<id>/   every snapshot
  sources/<source>/<YYYY-MM-DDTHH:MM:SS>/ one timeline per source, and
  sources/<source>/latest                 a symlink to its newest snapshot
  ids/<id>                                a symlink to ../snapshots/<time>_<id>
A path source is named by its path with `/` as `_` (and `_`, `%` as `%5F`,
`%25`): /var/lib/my_app is `_var_lib_my%5Fapp`. A PVC is `<namespace>/<pvc>`.
A second snapshot of a source in the same second gets `_<id>` appended.
With --snapshot, the root is that snapshot's tree.";

#[derive(clap::Args)]
#[command(after_long_help = LAYOUT)]
pub struct Args {
    /// Empty folder to mount on
    pub mountpoint: PathBuf,
    /// Show only this snapshot, at the root: an id, a unique prefix, `latest` or `latest:SOURCE`
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Go to the background once mounted
    #[arg(long)]
    pub daemon: bool,
    /// Let other users in too (the captured owners and modes still apply)
    #[arg(long)]
    pub allow_other: bool,
}

pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    let mountpoint = check_mountpoint(&a.mountpoint)?;
    if !Path::new("/dev/fuse").exists() {
        bail!(
            "/dev/fuse does not exist: load the FUSE module (`modprobe fuse`); in a container, pass the device (`--device /dev/fuse`)"
        );
    }
    // Before any thread starts, so that every thread inherits the mask and
    // the signals reach only the waiter below.
    let signals = Signals::block()?;
    let daemon = match a.daemon {
        true => match daemon::fork()? {
            daemon::Fork::Parent(code) => return Ok(code),
            daemon::Fork::Child(ready) => Some(ready),
        },
        false => None,
    };
    let location = crate::repo::location(cli)?.path;
    let repo = crate::repo::open(cli, false, false)?;
    let (repo, _lock) = super::locked(repo, false, "mount")?;
    let snapshot = a
        .snapshot
        .as_deref()
        .map(|s| repo.resolve_snapshot(s))
        .transpose()?;
    if let Some(s) = &snapshot {
        super::refuse_native_only(s, "mount")?;
    }
    let what = match &snapshot {
        Some(s) => format!("snapshot {}", s.short_id()),
        None => "repository".to_string(),
    };
    let vfs_opts = VfsOptions {
        snapshot,
        ..VfsOptions::default()
    };
    let vfs = Arc::new(Vfs::new(repo, vfs_opts)?);
    let opts = MountOptions {
        allow_other: a.allow_other,
        fs_name: format!("pvsnap:{}", location.display()).replace([',', ' '], "_"),
        ..MountOptions::default()
    };
    let mount = pvsnap_fuse::mount(vfs, &mountpoint, &opts)
        .with_context(|| format!("{}: cannot mount", mountpoint.display()))?;
    if !cli.quiet {
        eprintln!(
            "mounted {what} on {mp}; unmount with Ctrl-C or `fusermount3 -u {mp}`",
            mp = mountpoint.display()
        );
    }
    if let Some(ready) = daemon {
        ready.detach()?;
    }
    let signal = signals.waiter();
    loop {
        match signal.recv_timeout(Duration::from_millis(200)) {
            Ok(sig) => {
                tracing::info!("signal {sig}: unmounting {}", mountpoint.display());
                if mount.unmount()? == Unmounted::Lazy {
                    eprintln!(
                        "pvsnap: {} was in use; it is detached and disappears when its last user leaves",
                        mountpoint.display()
                    );
                    return Ok(crate::exit::OK);
                }
                break;
            }
            Err(RecvTimeoutError::Timeout) if mount.is_finished() => {
                mount.join()?;
                break;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => bail!("the signal waiter stopped"),
        }
    }
    if !cli.quiet {
        eprintln!("unmounted {}", mountpoint.display());
    }
    Ok(crate::exit::OK)
}

/// The mountpoint, resolved, once it is known to be an empty folder that is
/// not a mount point yet.
fn check_mountpoint(path: &Path) -> Result<PathBuf> {
    let p = path.display();
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("{p}: not a folder; mount on an empty folder"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{p}: no such folder; create it first (`mkdir -p {p}`)")
        }
        Err(e) => bail!("{p}: cannot use as a mountpoint: {e}"),
    }
    let abs = std::fs::canonicalize(path).with_context(|| format!("{p}: cannot resolve"))?;
    if pvsnap_fuse::is_mount_point(&abs).context("cannot read /proc/self/mountinfo")? {
        bail!(
            "{p}: already a mount point (busy); unmount it first (`fusermount3 -u {p}` or `umount {p}`)"
        );
    }
    if std::fs::read_dir(&abs)
        .with_context(|| format!("{p}: cannot list"))?
        .next()
        .is_some()
    {
        bail!("{p}: not empty; mount on an empty folder");
    }
    Ok(abs)
}

/// SIGINT, SIGTERM and SIGHUP, blocked in every thread and taken by one waiter.
struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    fn block() -> Result<Signals> {
        // SAFETY: sigset_t is plain data; the calls only write into `set`.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, s);
            }
            set
        };
        // SAFETY: set is initialised; the old mask is not asked for.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if r != 0 {
            bail!(
                "cannot block signals: {}",
                std::io::Error::from_raw_os_error(r)
            );
        }
        Ok(Signals { set })
    }

    /// A thread that reports each signal received.
    fn waiter(self) -> mpsc::Receiver<i32> {
        let (tx, rx) = mpsc::channel();
        let set = self.set;
        std::thread::Builder::new()
            .name("pvsnap-signals".into())
            .spawn(move || {
                loop {
                    let mut sig = 0;
                    // SAFETY: set is an initialised signal set, sig a valid out pointer.
                    if unsafe { libc::sigwait(&set, &mut sig) } == 0 && tx.send(sig).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the signal waiter");
        rx
    }
}

mod daemon {
    //! Going to the background: fork before any thread exists, and let the
    //! parent exit only once the child has mounted (or failed, with its code).

    use super::*;

    pub enum Fork {
        Parent(u8),
        Child(Ready),
    }

    /// The child's end of the readiness pipe.
    pub struct Ready {
        fd: OwnedFd,
    }

    pub fn fork() -> Result<Fork> {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            bail!("cannot create a pipe: {}", std::io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: no other thread exists yet (see the caller), so the child
        // may go on running Rust code.
        match unsafe { libc::fork() } {
            -1 => bail!("cannot fork: {}", std::io::Error::last_os_error()),
            0 => Ok(Fork::Child(Ready { fd: write })),
            pid => {
                drop(write);
                let mut byte = [0u8; 1];
                if std::fs::File::from(read).read(&mut byte).unwrap_or(0) == 1 {
                    return Ok(Fork::Parent(crate::exit::OK));
                }
                // The child failed before mounting and said why on stderr.
                let mut status = 0;
                // SAFETY: pid is our child; status is a valid out pointer.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status) as u8
                } else {
                    crate::exit::ERROR
                };
                Ok(Fork::Parent(code))
            }
        }
    }

    impl Ready {
        /// Leaves the terminal's session, points standard streams at
        /// /dev/null and lets the parent exit.
        pub fn detach(self) -> Result<()> {
            // SAFETY: setsid has no preconditions; it fails harmlessly if we lead a group.
            unsafe { libc::setsid() };
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .context("cannot open /dev/null")?;
            for fd in 0..=2 {
                // SAFETY: both descriptors are open; dup2 replaces fd atomically.
                unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
            }
            let f = std::fs::File::from(self.fd);
            std::io::Write::write_all(&mut &f, b"1").context("cannot tell the parent process")?;
            Ok(())
        }
    }
}
