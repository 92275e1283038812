//! Telling the consumer that new files are in place: run a command (waited
//! for, at most `cmd_timeout`, then killed) or signal the process whose pid
//! is in a pid file. The helper calls [`reload`] once per published update
//! and awaits it, so two reload commands never run at once. Failures are
//! reported to the caller, which logs them: the files are in place anyway.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::config::ReloadConfig;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot start reload command {cmd:?}: {error}")]
    Spawn { cmd: String, error: std::io::Error },
    #[error("waiting for reload command {cmd:?}: {error}")]
    Wait { cmd: String, error: std::io::Error },
    #[error("reload command {cmd:?} did not finish within {timeout:?} and was killed")]
    Timeout { cmd: String, timeout: Duration },
    #[error("reload command {cmd:?} failed: {status}")]
    Failed {
        cmd: String,
        status: std::process::ExitStatus,
    },
    #[error("cannot read pid_file_name {path}: {error}")]
    PidFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("pid_file_name {path}: {content:?} is not a process id (a positive integer)")]
    BadPid { path: PathBuf, content: String },
    #[error("cannot send {signal} to pid {pid} (from {path}): {error}")]
    Signal {
        signal: Signal,
        pid: i32,
        path: PathBuf,
        error: nix::Error,
    },
}

/// What a successful reload did, for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    Nothing,
    Command { code: Option<i32> },
    Signalled { pid: i32, signal: Signal },
}

/// Reads a pid file: one positive integer, surrounding whitespace allowed.
pub fn read_pid(path: &Path) -> Result<i32, ReloadError> {
    let text = std::fs::read_to_string(path).map_err(|error| ReloadError::PidFile {
        path: path.to_path_buf(),
        error,
    })?;
    text.trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ReloadError::BadPid {
            path: path.to_path_buf(),
            content: text.trim().chars().take(32).collect(),
        })
}

/// Runs the configured reload once.
pub async fn reload(cfg: &ReloadConfig) -> Result<Reloaded, ReloadError> {
    match cfg {
        ReloadConfig::None => Ok(Reloaded::Nothing),
        ReloadConfig::Signal { signal, pid_file } => {
            let pid = read_pid(pid_file)?;
            nix::sys::signal::kill(Pid::from_raw(pid), *signal).map_err(|error| {
                ReloadError::Signal {
                    signal: *signal,
                    pid,
                    path: pid_file.clone(),
                    error,
                }
            })?;
            Ok(Reloaded::Signalled {
                pid,
                signal: *signal,
            })
        }
        ReloadConfig::Command { cmd, args, timeout } => {
            let mut child = tokio::process::Command::new(cmd)
                .args(args)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|error| ReloadError::Spawn {
                    cmd: cmd.clone(),
                    error,
                })?;
            match tokio::time::timeout(*timeout, child.wait()).await {
                Ok(Ok(status)) if status.success() => Ok(Reloaded::Command {
                    code: status.code(),
                }),
                Ok(Ok(status)) => Err(ReloadError::Failed {
                    cmd: cmd.clone(),
                    status,
                }),
                Ok(Err(error)) => Err(ReloadError::Wait {
                    cmd: cmd.clone(),
                    error,
                }),
                Err(_) => {
                    // Kill and reap, so no second command ever overlaps it.
                    let _ = child.kill().await;
                    Err(ReloadError::Timeout {
                        cmd: cmd.clone(),
                        timeout: *timeout,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn command_outcomes() {
        let cmd = |args: &[&str], secs| ReloadConfig::Command {
            cmd: "/bin/sh".into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(secs),
        };
        assert_eq!(
            reload(&cmd(&["-c", "exit 0"], 5)).await.unwrap(),
            Reloaded::Command { code: Some(0) }
        );
        let e = reload(&cmd(&["-c", "exit 3"], 5)).await.unwrap_err();
        assert!(e.to_string().contains("exit status: 3"), "{e}");
        let t = std::time::Instant::now();
        let e = reload(&cmd(&["-c", "sleep 30"], 1)).await.unwrap_err();
        assert!(matches!(e, ReloadError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
        let e = reload(&ReloadConfig::Command {
            cmd: "/nonexistent/reload".into(),
            args: vec![],
            timeout: Duration::from_secs(1),
        })
        .await
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/reload"), "{e}");
    }

    #[test]
    fn pid_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pid");
        std::fs::write(&p, "1234\n").unwrap();
        assert_eq!(read_pid(&p).unwrap(), 1234);
        std::fs::write(&p, "nginx").unwrap();
        assert!(read_pid(&p).unwrap_err().to_string().contains("\"nginx\""));
        std::fs::write(&p, "-1").unwrap();
        assert!(read_pid(&p).is_err());
    }
}
