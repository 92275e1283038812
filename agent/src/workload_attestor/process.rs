//! The PID-reuse bracket: the process start time (`/proc/<pid>/stat`, field
//! 22) and the executable link are read before any attestor runs and again
//! after the last one. A different start time is
//! [`WorkloadAttestError::PidReused`]; a different executable (the process
//! ran `execve` meanwhile) or a process gone is
//! [`WorkloadAttestError::Unavailable`]. This brackets the reads of every
//! attestor; it cannot see a reuse that happened between the connection and
//! the first read.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::{WorkloadAttestError, read_error, unavailable};

/// What is re-read after attesting to detect PID reuse and `execve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProcessMark {
    pub(super) start_time: u64,
    pub(super) exe: OsString,
}

impl ProcessMark {
    /// Reads the mark of the process whose procfs directory is `dir`.
    pub(super) fn read(dir: &Path, pid: i32) -> Result<Self, WorkloadAttestError> {
        let start_time = read_start_time(dir, pid)?;
        let exe = read_exe_link(dir, pid)?;
        Ok(ProcessMark { start_time, exe })
    }

    /// Checks that `dir` still holds the process this mark was read from.
    pub(super) fn check_unchanged(&self, dir: &Path, pid: i32) -> Result<(), WorkloadAttestError> {
        // The start time is read last so that every read of the attestors
        // falls between the two start-time reads.
        let exe_after = read_exe_link(dir, pid)?;
        let start_after = read_start_time(dir, pid)?;
        if start_after != self.start_time {
            return Err(WorkloadAttestError::PidReused { pid });
        }
        if exe_after != self.exe {
            return Err(unavailable(
                pid,
                "the process started another program while it was being attested",
            ));
        }
        Ok(())
    }
}

fn read_exe_link(dir: &Path, pid: i32) -> Result<OsString, WorkloadAttestError> {
    let link = dir.join("exe");
    fs::read_link(&link)
        .map(PathBuf::into_os_string)
        .map_err(|e| read_error(pid, &link, &e))
}

fn read_start_time(dir: &Path, pid: i32) -> Result<u64, WorkloadAttestError> {
    let path = dir.join("stat");
    let stat = fs::read(&path).map_err(|e| read_error(pid, &path, &e))?;
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
