//! Deciding whether the pid in `pid_file_name` may be signalled. The helper
//! usually runs as root, so a pid file is only believed when nobody but the
//! consumer could have written it, and the pid in it is only signalled while
//! it still names the process that wrote the file:
//!
//! - the file is opened with `O_NOFOLLOW` (a symlink is refused) and must
//!   be a regular file owned by root, by the helper's own user or by
//!   `consumer_user`, and not writable by group or others;
//! - the pid must be above 1 (never init, never a process group);
//! - the process must run (real uid) as root, the helper's user or
//!   `consumer_user`;
//! - the process must not have started after the pid file was last written
//!   (allowing [`START_SLACK`] for the kernel's clock-tick rounding). A
//!   consumer writes its pid file after it starts, so a later start means the
//!   consumer is gone and its pid was reused by an unrelated process.
//!
//! The start time comes from `/proc/<pid>/stat` (clock ticks since boot,
//! `CLOCK_BOOTTIME`) and is put on the wall clock with the current offset
//! between `CLOCK_REALTIME` and `CLOCK_BOOTTIME`. A wall-clock step forward
//! of more than [`START_SLACK`] after the consumer started makes the check
//! refuse (restart the consumer, or `touch` its pid file, to re-assert it).
//! The check and the `kill(2)` are two steps: a process that exits and has
//! its pid reused in between (microseconds) is not caught.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::OFlag;

/// How much later than the pid file's mtime the process may appear to
/// have started: `/proc` start times are whole clock ticks (10 ms), and the
/// boot-to-wall-clock offset is read now, not when the process started.
pub const START_SLACK: Duration = Duration::from_secs(1);

/// Pid files are short; more than this is not a pid file.
const MAX_PID_FILE: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("cannot read pid_file_name {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "pid_file_name {path} is a symbolic link; the helper does not follow links to find the \
         process it signals (point pid_file_name at the file itself)"
    )]
    Symlink { path: PathBuf },
    #[error("pid_file_name {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error(
        "pid_file_name {path} is owned by uid {uid} (mode {mode:04o}); only {allowed} may own \
         the file whose pid the helper signals (set consumer_user to the consumer's user)"
    )]
    Owner {
        path: PathBuf,
        uid: u32,
        mode: u32,
        allowed: String,
    },
    #[error(
        "pid_file_name {path} (owner uid {uid}, mode {mode:04o}) is writable by group or \
         others; anyone who can write it could choose the process the helper signals"
    )]
    Writable { path: PathBuf, uid: u32, mode: u32 },
    #[error(
        "pid_file_name {path}: {content:?} is not a process id (an integer above 1: the helper \
         never signals init or a process group)"
    )]
    BadPid { path: PathBuf, content: String },
    #[error("pid {pid} from {path} is not a running process: {error}")]
    NoProcess {
        pid: i32,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "pid {pid} from {path} runs as uid {uid}, not as {allowed}; the helper signals only the \
         consumer (set consumer_user to the consumer's user)"
    )]
    ProcessOwner {
        pid: i32,
        path: PathBuf,
        uid: u32,
        allowed: String,
    },
    #[error(
        "pid {pid} from {path} started {later:?} after the pid file was last written: the \
         process that wrote it is gone and the pid now names another process, which is not \
         signalled (restart the consumer so it rewrites its pid file)"
    )]
    Stale {
        pid: i32,
        path: PathBuf,
        later: Duration,
    },
}

/// Who may own the pid file and the process it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owners {
    /// The helper's effective uid.
    pub helper: u32,
    /// `consumer_user`, if set.
    pub consumer: Option<u32>,
}

impl Owners {
    /// Root, the helper's own user and `consumer` (if any).
    pub fn new(consumer: Option<u32>) -> Owners {
        Owners {
            helper: nix::unistd::geteuid().as_raw(),
            consumer,
        }
    }

    fn allows(&self, uid: u32) -> bool {
        uid == 0 || uid == self.helper || self.consumer == Some(uid)
    }

    fn describe(&self) -> String {
        let mut uids = vec![0, self.helper];
        uids.extend(self.consumer);
        uids.sort_unstable();
        uids.dedup();
        let list: Vec<String> = uids.iter().map(|u| format!("uid {u}")).collect();
        format!(
            "{} (root, the helper's user, consumer_user)",
            list.join(" or ")
        )
    }
}

/// Reads and checks `path` and the process it names; returns the pid that
/// may be signalled.
pub fn vetted_pid(path: &Path, owners: Owners) -> Result<i32, PidFileError> {
    let read_err = |error| PidFileError::Read {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        // A FIFO planted as the pid file must not block the helper.
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) {
                PidFileError::Symlink {
                    path: path.to_path_buf(),
                }
            } else {
                read_err(e)
            }
        })?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.file_type().is_file() {
        return Err(PidFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let (uid, mode) = (meta.uid(), meta.mode() & 0o7777);
    if !owners.allows(uid) {
        return Err(PidFileError::Owner {
            path: path.to_path_buf(),
            uid,
            mode,
            allowed: owners.describe(),
        });
    }
    if mode & 0o022 != 0 {
        return Err(PidFileError::Writable {
            path: path.to_path_buf(),
            uid,
            mode,
        });
    }
    let mut text = String::new();
    file.take(MAX_PID_FILE)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    let pid = parse_pid(&text).ok_or_else(|| PidFileError::BadPid {
        path: path.to_path_buf(),
        content: text.trim().chars().take(32).collect(),
    })?;
    let process = Process::read(pid).map_err(|error| PidFileError::NoProcess {
        pid,
        path: path.to_path_buf(),
        error,
    })?;
    if !owners.allows(process.uid) {
        return Err(PidFileError::ProcessOwner {
            pid,
            path: path.to_path_buf(),
            uid: process.uid,
            allowed: owners.describe(),
        });
    }
    let written = meta.modified().map_err(read_err)?;
    if let Ok(later) = process.started.duration_since(written)
        && later > START_SLACK
    {
        return Err(PidFileError::Stale {
            pid,
            path: path.to_path_buf(),
            later,
        });
    }
    Ok(pid)
}

/// One integer above 1, surrounding whitespace allowed.
pub fn parse_pid(text: &str) -> Option<i32> {
    text.trim().parse::<i32>().ok().filter(|p| *p > 1)
}

/// What `/proc` says about a process.
struct Process {
    /// Real uid.
    uid: u32,
    /// Start, on the wall clock.
    started: SystemTime,
}

fn bad_proc(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

impl Process {
    fn read(pid: i32) -> std::io::Result<Process> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        // Fields after the command name (which may hold spaces and ')'):
        // state is field 3, starttime field 22.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| bad_proc("/proc/<pid>/stat without a command name"))?;
        let ticks: u64 = rest
            .split_whitespace()
            .nth(19)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad_proc("/proc/<pid>/stat without a start time"))?;
        let uid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad_proc("/proc/<pid>/status without a Uid line"))?;
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|h| u64::try_from(h).ok())
            .filter(|h| *h > 0)
            .unwrap_or(100);
        let since_boot = Duration::from_secs(ticks / hz)
            + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz);
        Ok(Process {
            uid,
            started: boot_time()? + since_boot,
        })
    }
}

/// The wall-clock time of boot: `CLOCK_REALTIME - CLOCK_BOOTTIME`, now.
fn boot_time() -> std::io::Result<SystemTime> {
    use nix::time::{ClockId, clock_gettime};
    let real = clock_gettime(ClockId::CLOCK_REALTIME)?;
    let boot = clock_gettime(ClockId::CLOCK_BOOTTIME)?;
    let to = |t: nix::sys::time::TimeSpec| {
        Duration::new(
            u64::try_from(t.tv_sec()).unwrap_or(0),
            u32::try_from(t.tv_nsec()).unwrap_or(0),
        )
    };
    Ok(SystemTime::UNIX_EPOCH + to(real).saturating_sub(to(boot)))
}
