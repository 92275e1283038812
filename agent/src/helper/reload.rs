//! Telling the consumer that new files are in place: run a command (in its
//! own process group, waited for at most `cmd_timeout`, then the whole
//! group is killed) or signal the process whose pid is in a pid file, once
//! [`pid_file`] has vetted the file and the process. The helper calls
//! [`reload`] once per published update and awaits it, so two reload
//! commands never run at once. Failures are reported to the caller, which
//! logs them: the files are in place anyway.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::config::ReloadConfig;
use super::pid_file::{Owners, PidFileError, vetted_pid};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot start reload command {cmd:?}: {error}")]
    Spawn { cmd: String, error: std::io::Error },
    #[error("waiting for reload command {cmd:?}: {error}")]
    Wait { cmd: String, error: std::io::Error },
    #[error(
        "reload command {cmd:?} did not finish within {timeout:?}; it and its process group \
         were killed"
    )]
    Timeout { cmd: String, timeout: Duration },
    #[error("reload command {cmd:?} failed: {status}")]
    Failed {
        cmd: String,
        status: std::process::ExitStatus,
    },
    #[error(transparent)]
    PidFile(#[from] PidFileError),
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

/// Runs the configured reload once.
pub async fn reload(cfg: &ReloadConfig) -> Result<Reloaded, ReloadError> {
    match cfg {
        ReloadConfig::None => Ok(Reloaded::Nothing),
        ReloadConfig::Signal {
            signal,
            pid_file,
            consumer_uid,
        } => {
            let pid = vetted_pid(pid_file, Owners::new(*consumer_uid))?;
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
                // Its own group, so a timeout kills what it started too.
                .process_group(0)
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
                    // The group first (its id is the child's pid, not
                    // reusable before the child is reaped), then kill and
                    // reap the child, so no second command ever overlaps it.
                    if let Some(id) = child.id().and_then(|id| i32::try_from(id).ok()) {
                        let _ = nix::sys::signal::killpg(Pid::from_raw(id), Signal::SIGKILL);
                    }
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
    use std::path::Path;

    use super::super::pid_file::parse_pid;
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
        assert_eq!(parse_pid("1234\n"), Some(1234));
        for bad in ["nginx", "-1", "0", "1", ""] {
            assert_eq!(parse_pid(bad), None, "{bad:?}");
        }
    }

    /// The signal the tests send: default action "terminate", so a victim
    /// that got it dies of it, and one that did not dies of our SIGKILL.
    const SIG: Signal = Signal::SIGUSR1;

    fn signal_cfg(pid_file: &Path, consumer_uid: Option<u32>) -> ReloadConfig {
        ReloadConfig::Signal {
            signal: SIG,
            pid_file: pid_file.to_path_buf(),
            consumer_uid,
        }
    }

    /// A process to (not) signal: `sleep 60`, as `uid` if given.
    fn victim(uid: Option<u32>) -> std::process::Child {
        let mut c = std::process::Command::new("sleep");
        c.arg("60").stdin(Stdio::null());
        if let Some(u) = uid {
            std::os::unix::process::CommandExt::uid(&mut c, u);
        }
        c.spawn().unwrap()
    }

    /// Kills the victim and says which signal ended it: a fatal signal sent
    /// earlier (the helper's) wins over our SIGKILL, since the kernel
    /// decides the exit status when the first fatal signal arrives.
    fn end(mut v: std::process::Child) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        let _ = nix::sys::signal::kill(Pid::from_raw(v.id() as i32), Signal::SIGKILL);
        v.wait().unwrap().signal().unwrap()
    }

    fn write_pid_file(path: &Path, pid: u32, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::remove_file(path);
        std::fs::write(path, format!("{pid}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Runs as root (the tests chown files and start processes as
    /// nobody): a pid file owned by another user, or one that names a
    /// process of another user, is not acted on; with `consumer_user` set
    /// to that user both are.
    #[tokio::test]
    async fn i21_3_pid_file_of_another_user_is_refused() {
        const NOBODY: u32 = 65534;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("consumer.pid");

        // The pid file belongs to another user; the process is ours.
        let v = victim(None);
        write_pid_file(&p, v.id(), 0o644);
        std::os::unix::fs::chown(&p, Some(NOBODY), None).unwrap();
        let e = reload(&signal_cfg(&p, None)).await.unwrap_err().to_string();
        assert_eq!(end(v), Signal::SIGKILL as i32, "signalled anyway: {e}");
        for part in [&p.display().to_string(), "owned by uid 65534", "mode 0644"] {
            assert!(e.contains(part), "{part}: {e}");
        }

        // Group- or world-writable, even when root owns it.
        let v = victim(None);
        write_pid_file(&p, v.id(), 0o666);
        let e = reload(&signal_cfg(&p, None)).await.unwrap_err().to_string();
        assert_eq!(end(v), Signal::SIGKILL as i32, "signalled anyway: {e}");
        assert!(e.contains("writable by group or others"), "{e}");
        assert!(e.contains("mode 0666"), "{e}");

        // Root's pid file naming another user's process.
        let v = victim(Some(NOBODY));
        write_pid_file(&p, v.id(), 0o644);
        let e = reload(&signal_cfg(&p, None)).await.unwrap_err().to_string();
        assert_eq!(end(v), Signal::SIGKILL as i32, "signalled anyway: {e}");
        assert!(e.contains("runs as uid 65534"), "{e}");

        // consumer_user = nobody: its own pid file and process are signalled.
        let v = victim(Some(NOBODY));
        write_pid_file(&p, v.id(), 0o644);
        std::os::unix::fs::chown(&p, Some(NOBODY), None).unwrap();
        let r = reload(&signal_cfg(&p, Some(NOBODY))).await;
        let pid = v.id() as i32;
        assert_eq!(end(v), SIG as i32, "{r:?}");
        assert_eq!(r.unwrap(), Reloaded::Signalled { pid, signal: SIG });
    }

    #[tokio::test]
    async fn i21_3_symlinked_pid_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.pid");
        let link = dir.path().join("consumer.pid");
        let v = victim(None);
        write_pid_file(&real, v.id(), 0o644);
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = reload(&signal_cfg(&link, None))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(end(v), Signal::SIGKILL as i32, "signalled anyway: {e}");
        assert!(e.contains("symbolic link"), "{e}");
        assert!(e.contains(&link.display().to_string()), "{e}");
        // pid 1 is never signalled, whatever the file says.
        write_pid_file(&real, 1, 0o644);
        let e = reload(&signal_cfg(&real, None))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"1\" is not a process id"), "{e}");
    }

    #[tokio::test]
    async fn i21_3_stale_pid_is_not_signalled() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("consumer.pid");
        // The consumer wrote its pid file after it started: signalled.
        let v = victim(None);
        write_pid_file(&p, v.id(), 0o644);
        let r = reload(&signal_cfg(&p, None)).await;
        assert_eq!(end(v), SIG as i32, "{r:?}");
        assert!(r.is_ok(), "{r:?}");
        // The file was written a minute before the process it now names
        // started (the consumer died, its pid was reused): not signalled.
        let v = victim(None);
        write_pid_file(&p, v.id(), 0o644);
        let minute_ago = std::time::SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(minute_ago)
            .unwrap();
        let e = reload(&signal_cfg(&p, None)).await.unwrap_err().to_string();
        assert_eq!(end(v), Signal::SIGKILL as i32, "signalled anyway: {e}");
        assert!(e.contains("after the pid file was last written"), "{e}");
    }

    /// Whether `pid` is gone or a zombie (killed, not yet reaped by init).
    fn dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(s) => s
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with(['Z', 'X'])),
        }
    }

    #[tokio::test]
    async fn i21_3_cmd_timeout_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_out = dir.path().join("grandchild.pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pid_out.display());
        let cfg = ReloadConfig::Command {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), script],
            timeout: Duration::from_secs(3),
        };
        let e = reload(&cfg).await.unwrap_err();
        assert!(matches!(e, ReloadError::Timeout { .. }), "{e}");
        let grandchild: i32 = std::fs::read_to_string(&pid_out)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !dead(grandchild) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let survived = !dead(grandchild);
        if survived {
            let _ = nix::sys::signal::kill(Pid::from_raw(grandchild), Signal::SIGKILL);
        }
        assert!(
            !survived,
            "the command's background child {grandchild} outlived the timeout"
        );
    }
}
