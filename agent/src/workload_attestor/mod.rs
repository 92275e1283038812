//! Workload attestation: turns the peer credentials of a Workload API caller
//! (from `SO_PEERCRED` on the accepted Unix connection) into selectors.
//! Identity comes only from the kernel, never from anything the caller sends.
//!
//! [`Attestors`] is what the Workload API uses: when a connection is
//! accepted it takes the caller's [`ProcessMark`] (start time, executable
//! and its identity), and at each call it composes every configured
//! [`Attestor`] (`unix`, `container` and `systemd` today, one per file; a
//! Kubernetes one later) and merges their selectors, all inside one bracket
//! ([`process`]): the process is re-read after the last attestor, and the
//! call is refused unless it still matches the mark taken at accept (its
//! pidfd, or without one its start time, looked at last). So no attestor can describe a process other than the
//! one that connected, nor a program it `exec`ed since.
//!
//! An attestation is made first without blocking ([`WorkloadAttestor::attest_now`]:
//! procfs reads and what is in memory — cached names and executable
//! hashes), on the Workload API's async worker; only when that is not
//! enough is it made again on a blocking thread. The two give the same
//! selectors; the hop to a blocking thread was most of a call's cost.

pub mod container;
mod exe_file;
mod process;
pub mod systemd;
#[cfg(test)]
mod tests;
pub mod unix;

use std::ffi::OsStr;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sigil_proto::Selector;

pub use process::{ProcessMark, pidfd_exited};

/// The kernel's account of who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkloadAttestError {
    /// The process could not be examined (gone, permission, /proc missing).
    #[error("cannot attest pid {pid}: {reason}")]
    Unavailable { pid: i32, reason: String },
    /// The pid was reused by another process while it was being examined.
    #[error(
        "pid {pid} now names another process than the one that connected (pid reuse); refusing"
    )]
    PidReused { pid: i32 },
    /// The process is the one that connected but is no longer what it was.
    #[error("pid {pid} is not what it was when it connected: {reason}; refusing")]
    Changed { pid: i32, reason: &'static str },
}

/// What attests a Workload API caller: [`Attestors`] in the agent, fakes in
/// the Workload API's tests.
pub trait WorkloadAttestor: Send + Sync + 'static {
    /// What identifies the process behind `cred` now: taken when its
    /// connection is accepted. Blocks (procfs reads).
    fn mark(&self, cred: &PeerCred) -> Result<ProcessMark, WorkloadAttestError>;

    /// The selectors of the process behind `cred`, which must still be the
    /// one `accepted` describes (same process, same executable). Fails
    /// closed: any doubt about which process it is gives an error, not
    /// fewer selectors. Blocks (file reads, user look-ups, hashing): call it
    /// from a blocking thread.
    fn attest(
        &self,
        cred: &PeerCred,
        accepted: &ProcessMark,
    ) -> Result<Vec<Selector>, WorkloadAttestError>;

    /// [`WorkloadAttestor::attest`] without blocking, from procfs and
    /// memory only, so it may run on an async worker; `None` when that is
    /// not enough (the caller then calls `attest` on a blocking thread).
    /// Gives exactly what `attest` would. By default always `None`.
    fn attest_now(&self, _cred: &PeerCred, _accepted: &ProcessMark) -> Now {
        None
    }
}

/// An attestation made without blocking: `None` when it could not be
/// finished that way (a name or a hash not in memory), and must be made
/// again on a blocking thread.
pub type Now = Option<Result<Vec<Selector>, WorkloadAttestError>>;

/// The process being attested, as the bracket saw it before any attestor
/// ran.
#[derive(Debug)]
pub struct Process<'a> {
    /// The kernel's credentials of the connection (authoritative for ids).
    pub cred: &'a PeerCred,
    /// `/proc/<pid>` (under the configured procfs root).
    pub dir: &'a Path,
    /// The executable as the kernel names it (`/proc/<pid>/exe`).
    pub exe: &'a OsStr,
    /// Whether the executable is on a local, kernel-backed filesystem (see
    /// [`ProcessMark::exe_local`]).
    pub exe_local: bool,
    /// `<dir>/cgroup`, read once per attestation by the first attestor
    /// that asks ([`Process::cgroup`]).
    cgroup: std::cell::OnceCell<io::Result<Vec<u8>>>,
}

impl Process<'_> {
    /// The contents of the caller's `cgroup` file, read on first use and
    /// shared by the attestors of this one attestation (every read falls
    /// inside the same PID-reuse bracket).
    pub fn cgroup(&self) -> Result<&[u8], &io::Error> {
        self.cgroup
            .get_or_init(|| read_procfs(&self.dir.join("cgroup")))
            .as_ref()
            .map(Vec::as_slice)
    }
}

/// One source of selectors. It runs inside the PID-reuse bracket, so it
/// needs no check of its own that the pid still names the caller.
pub trait Attestor: Send + Sync + 'static {
    /// Fails closed, like [`WorkloadAttestor::attest`]; data that is only
    /// optional is left out instead.
    fn attest(&self, process: &Process<'_>) -> Result<Vec<Selector>, WorkloadAttestError>;

    /// [`Attestor::attest`] without blocking (see [`Now`]). The default
    /// suits an attestor that only reads procfs: it calls `attest`.
    fn attest_now(&self, process: &Process<'_>) -> Now {
        Some(self.attest(process))
    }
}

/// Every configured attestor, run in order inside one PID-reuse bracket;
/// the selectors are their concatenation.
pub struct Attestors {
    proc_root: PathBuf,
    attestors: Vec<Arc<dyn Attestor>>,
}

impl Attestors {
    /// `attestors` over the procfs mounted at `proc_root` (`/proc`; a fake
    /// tree in tests).
    pub fn new(proc_root: impl Into<PathBuf>, attestors: Vec<Arc<dyn Attestor>>) -> Self {
        Attestors {
            proc_root: proc_root.into(),
            attestors,
        }
    }

    /// The agent's attestors: `unix`, `container` then `systemd`, on
    /// `/proc`.
    pub fn standard(unix: unix::UnixAttestorConfig) -> Self {
        Attestors::new(
            "/proc",
            vec![
                Arc::new(unix::UnixAttestor::new(unix)),
                Arc::new(container::ContainerAttestor),
                Arc::new(systemd::SystemdAttestor::detect(Path::new("/proc"))),
            ],
        )
    }

    /// Runs every attestor, then checks that the process is still the one
    /// `before` describes.
    fn attest_marked(
        &self,
        cred: &PeerCred,
        dir: &Path,
        before: &ProcessMark,
    ) -> Result<Vec<Selector>, WorkloadAttestError> {
        self.attest_in_bracket(cred, dir, before, true)
            .unwrap_or_else(|| Err(unavailable(cred.pid, "attestation could not finish")))
    }

    /// [`Attestors::attest_marked`] with `attest`, or with `attest_now`
    /// unless `may_block` (then `None` when an attestor answers `None`).
    fn attest_in_bracket(
        &self,
        cred: &PeerCred,
        dir: &Path,
        before: &ProcessMark,
        may_block: bool,
    ) -> Now {
        let process = Process {
            cred,
            dir,
            exe: &before.exe,
            exe_local: before.exe_local,
            cgroup: std::cell::OnceCell::new(),
        };
        let mut selectors = Vec::new();
        for attestor in &self.attestors {
            let found = if may_block {
                attestor.attest(&process)
            } else {
                attestor.attest_now(&process)?
            };
            match found {
                Ok(s) => selectors.extend(s),
                Err(e) => return Some(Err(e)),
            }
        }
        Some(before.check_unchanged(dir, cred.pid).map(|()| selectors))
    }
}

impl Attestors {
    /// `/proc/<pid>` of the caller; SO_PEERCRED gives pid 0 for a peer
    /// outside our pid namespace.
    fn proc_dir(&self, cred: &PeerCred) -> Result<PathBuf, WorkloadAttestError> {
        if cred.pid <= 0 {
            return Err(unavailable(cred.pid, "no process id for the peer"));
        }
        Ok(self.proc_root.join(cred.pid.to_string()))
    }
}

impl WorkloadAttestor for Attestors {
    fn mark(&self, cred: &PeerCred) -> Result<ProcessMark, WorkloadAttestError> {
        ProcessMark::read(&self.proc_dir(cred)?, cred.pid)
    }

    fn attest(
        &self,
        cred: &PeerCred,
        accepted: &ProcessMark,
    ) -> Result<Vec<Selector>, WorkloadAttestError> {
        // One check, after the attestors: the start time it reads last
        // equal to the one at accept means the pid named that same process
        // through every read of the attestors, and its exe is compared
        // there too. A second check before the attestors proved nothing
        // more (the exe it saw could change before the attestors ran).
        let dir = self.proc_dir(cred)?;
        self.attest_marked(cred, &dir, accepted)
    }

    fn attest_now(&self, cred: &PeerCred, accepted: &ProcessMark) -> Now {
        // An executable on a filesystem that may keep a look-up waiting
        // (FUSE, NFS, ...) is looked at on a blocking thread only.
        if !accepted.exe_local {
            return None;
        }
        match self.proc_dir(cred) {
            Ok(dir) => self.attest_in_bracket(cred, &dir, accepted, false),
            Err(e) => Some(Err(e)),
        }
    }
}

pub(crate) fn unavailable(pid: i32, reason: impl Into<String>) -> WorkloadAttestError {
    WorkloadAttestError::Unavailable {
        pid,
        reason: reason.into(),
    }
}

/// The whole of a procfs file. `fs::read` first asks the file's size,
/// which procfs reports as 0, then grows its buffer by probing: this opens
/// and reads into one 4 KiB buffer instead (grown only for a longer file),
/// which is what a `stat`, `status`, `cgroup` or `mountinfo` file needs.
pub(crate) fn read_procfs(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = Vec::with_capacity(4096);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(4096);
        }
        let start = buf.len();
        buf.resize(buf.capacity(), 0);
        match file.read(&mut buf[start..]) {
            Ok(0) => {
                buf.truncate(start);
                return Ok(buf);
            }
            Ok(n) => buf.truncate(start + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(start),
            Err(e) => return Err(e),
        }
    }
}

pub(crate) fn read_error(pid: i32, path: &Path, error: &io::Error) -> WorkloadAttestError {
    unavailable(pid, format!("{}: {error}", path.display()))
}
