//! The process a Workload API connection came from, and the check that a
//! call still comes from it. [`ProcessMark`] is read when the connection is
//! accepted: the process start time (`/proc/<pid>/stat`, field 22), the
//! executable link and the executable's identity (device and inode of the
//! file behind `/proc/<pid>/exe`). Every call re-reads it after the last
//! attestor (the start time last of all) and is refused unless it equals
//! the mark taken at accept: a different start time is
//! [`WorkloadAttestError::PidReused`] (the connecting process exited and the
//! pid now names another), a different executable is
//! [`WorkloadAttestError::Changed`] (the process ran `execve`), a process
//! gone is [`WorkloadAttestError::Unavailable`]. So the selectors always
//! describe the program that ran when the connection was accepted.
//!
//! What no mark can see: an `execve` between the caller's `connect()` and
//! the agent's `accept()` (SO_PEERCRED names the pid, not the program). The
//! agent accepts at once, so that window is the accept queue's latency.

use std::ffi::OsString;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::path::{Path, PathBuf};

use super::{WorkloadAttestError, exe_file, read_error, read_procfs, unavailable};

/// What identifies a process over time: taken at accept, compared at every
/// call.
#[derive(Debug, Clone)]
pub struct ProcessMark {
    /// `starttime` of `/proc/<pid>/stat` (clock ticks since boot).
    pub start_time: u64,
    /// The `/proc/<pid>/exe` link.
    pub exe: OsString,
    /// Device of the executable file.
    pub exe_dev: u64,
    /// Inode of the executable file.
    pub exe_ino: u64,
    /// Whether the executable is on a local, kernel-backed filesystem
    /// (`exe_file::is_local_mount`): only then may calls be attested on an
    /// async worker (`attest_now`).
    pub exe_local: bool,
    /// A pidfd of the connecting process, when the kernel gave one
    /// (`SO_PEERPIDFD`, Linux 6.5 and later): it stands in for the start
    /// time at every call (see [`ProcessMark::check_unchanged`]).
    pub pidfd: Option<Arc<OwnedFd>>,
}

impl ProcessMark {
    /// Reads the mark of the process whose procfs directory is `dir`.
    pub(super) fn read(dir: &Path, pid: i32) -> Result<Self, WorkloadAttestError> {
        // Start time first and last: the exe reads fall between the two.
        let start_time = read_start_time(dir, pid)?;
        let (exe, exe_dev, exe_ino) = read_exe(dir, pid)?;
        let exe_local = exe_file::is_local_mount(dir);
        if read_start_time(dir, pid)? != start_time {
            return Err(WorkloadAttestError::PidReused { pid });
        }
        Ok(ProcessMark {
            start_time,
            exe,
            exe_dev,
            exe_ino,
            exe_local,
            pidfd: None,
        })
    }

    /// The mark with the connecting process's pidfd (`None`: the kernel
    /// gave none).
    pub fn with_pidfd(self, pidfd: Option<Arc<OwnedFd>>) -> Self {
        ProcessMark { pidfd, ..self }
    }

    /// Checks that `dir` still holds the process this mark was read from,
    /// running the program it ran then.
    pub(super) fn check_unchanged(&self, dir: &Path, pid: i32) -> Result<(), WorkloadAttestError> {
        // Checked last, so that every read before falls within the lifetime
        // of the process that connected. With its pidfd: a pid is not
        // reused before its process is reaped, and a pidfd is readable from
        // the process's exit on, so a pidfd not readable now proves that
        // the pid named that process through every read before (one poll
        // instead of rendering `/proc/<pid>/stat`). Without: the start time.
        let (exe, dev, ino) = read_exe(dir, pid)?;
        match &self.pidfd {
            Some(fd) if pidfd_exited(fd) => {
                return Err(WorkloadAttestError::Changed {
                    pid,
                    reason: "the process that connected has exited (pidfd)",
                });
            }
            Some(_) => {}
            None => {
                if read_start_time(dir, pid)? != self.start_time {
                    return Err(WorkloadAttestError::PidReused { pid });
                }
            }
        }
        if exe != self.exe || dev != self.exe_dev || ino != self.exe_ino {
            return Err(WorkloadAttestError::Changed {
                pid,
                reason: "its executable changed since it connected (execve)",
            });
        }
        Ok(())
    }
}

/// Whether the process behind `pidfd` has exited (its pidfd is readable).
/// Fails closed: a pidfd that cannot be polled counts as exited.
pub fn pidfd_exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => false,
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP)),
        Err(_) => true,
    }
}

/// The exe link and the (device, inode) of the file it leads to. Neither
/// waits on the executable's filesystem: procfs resolves the link, and the
/// device and inode (which never change for a file) come from memory
/// (`exe_file::stat_cached`).
fn read_exe(dir: &Path, pid: i32) -> Result<(OsString, u64, u64), WorkloadAttestError> {
    let link = dir.join("exe");
    let target = fs::read_link(&link)
        .map(PathBuf::into_os_string)
        .map_err(|e| read_error(pid, &link, &e))?;
    let stat = exe_file::stat_cached(&link).map_err(|e| read_error(pid, &link, &e))?;
    Ok((target, stat.version.dev, stat.version.ino))
}

fn read_start_time(dir: &Path, pid: i32) -> Result<u64, WorkloadAttestError> {
    let path = dir.join("stat");
    let stat = read_procfs(&path).map_err(|e| read_error(pid, &path, &e))?;
    start_time_from_stat(&stat)
        .ok_or_else(|| unavailable(pid, format!("{}: no start time", path.display())))
}

/// Field 22 (`starttime`) of a `/proc/<pid>/stat` line. Field 2 is the
/// command name in parentheses, which may itself hold spaces, ')' and bytes
/// that are not UTF-8, so counting starts after the last ')'.
pub(super) fn start_time_from_stat(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // After the ')' come fields 3 (state), 4, ...: field 22 is the 20th.
    rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}
