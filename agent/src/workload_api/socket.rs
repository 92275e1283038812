//! The Workload API socket: its directory (created 0755 when missing, refused
//! when anyone could replace the socket in it), stale-socket replacement
//! (never a live agent's socket, never a non-socket file) and the socket's
//! own mode, 0666: workloads of every uid must be able to connect, because
//! who they are comes from the kernel's peer credentials, not from access to
//! the file.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Mode of the socket file: anyone may connect.
pub const SOCKET_MODE: u32 = 0o666;
/// Mode of a socket directory the agent creates.
pub const DIR_MODE: u32 = 0o755;

/// Binds the Workload API socket at `path` (mode 0666).
///
/// Missing parent directories are created with mode 0755; an existing one is
/// left as it is, but refused if it is world-writable without the sticky bit
/// (anyone could then swap the socket for their own). A stale socket (one
/// nobody listens on) is replaced; a live one, a symlink or any other file is
/// refused and left untouched.
pub fn bind_workload_socket(path: &Path) -> io::Result<UnixListener> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_dirs(&parent)?;
    check_dir(&parent)?;
    remove_stale(path)?;
    // No umask juggling: the socket is bound with at most the process's
    // default mode and then widened to 0666, so nobody can connect in the
    // meantime who could not afterwards. (umask is process-wide; loosening
    // it here could loosen files other threads create at the same moment.)
    let listener = UnixListener::bind(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot bind the Workload API socket {}: {e}",
                path.display()
            ),
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
    Ok(listener)
}

/// The file identity (device, inode) of the socket at `path`, so the server
/// removes only its own socket when it stops.
pub(crate) fn socket_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_socket())
        .map(|m| (m.dev(), m.ino()))
}

/// Creates the missing directories leading to `dir`, each with mode 0755
/// (set explicitly: the umask must not make the socket unreachable).
/// Existing directories are not touched.
fn create_dirs(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || std::fs::symlink_metadata(d).is_ok() {
            break;
        }
        missing.push(d);
        cur = d.parent();
    }
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(DIR_MODE).create(d) {
            Ok(()) => std::fs::set_permissions(d, std::fs::Permissions::from_mode(DIR_MODE))?,
            // Someone else created it in the meantime: theirs, not ours to chmod.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot create the socket directory {}: {e}", d.display()),
                ));
            }
        }
    }
    Ok(())
}

/// Refuses a socket directory anyone may rename or delete files in.
fn check_dir(dir: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| {
        io::Error::new(e.kind(), format!("socket directory {}: {e}", dir.display()))
    })?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("socket directory {} is not a directory", dir.display()),
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "socket directory {} (mode {:04o}) is world-writable without the sticky bit, so \
                 any user could replace the Workload API socket; use a directory that is not \
                 world-writable (or has the sticky bit)",
                dir.display(),
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Removes a stale socket at `path`; refuses a live socket or a non-socket.
fn remove_stale(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{} is in use by a running agent (it accepts connections); stop it first",
                        path.display()
                    ),
                )),
                // Nobody listens: a socket left behind by an agent that died.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!(
                        "{} exists and cannot be checked for a running agent ({e}); refusing to \
                         replace it",
                        path.display()
                    ),
                )),
            }
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[tokio::test]
    async fn workload_api_socket_is_world_connectable_in_a_new_0755_directory() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("run/sigil/agent.sock");
        let _l = bind_workload_socket(&sock).unwrap();
        assert!(
            std::fs::symlink_metadata(&sock)
                .unwrap()
                .file_type()
                .is_socket()
        );
        assert_eq!(mode(&sock), 0o666);
        assert_eq!(mode(&dir.path().join("run/sigil")), 0o755);
        assert_eq!(mode(&dir.path().join("run")), 0o755);
    }

    #[tokio::test]
    async fn workload_api_socket_leaves_an_existing_directory_mode_alone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
        let _l = bind_workload_socket(&d.join("agent.sock")).unwrap();
        assert_eq!(mode(&d), 0o750);
    }

    #[tokio::test]
    async fn workload_api_socket_stale_replaced_live_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        // A stale socket: bound, then its listener gone.
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        assert!(
            std::fs::symlink_metadata(&sock)
                .unwrap()
                .file_type()
                .is_socket()
        );
        let live = bind_workload_socket(&sock).unwrap();
        assert_eq!(mode(&sock), 0o666);

        let e = bind_workload_socket(&sock).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("in use"), "{e}");
        // The live socket is still there and still accepts.
        std::os::unix::net::UnixStream::connect(&sock).unwrap();
        drop(live);
    }

    #[tokio::test]
    async fn workload_api_socket_refuses_a_regular_file_and_leaves_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.sock");
        std::fs::write(&p, "keep me").unwrap();
        let e = bind_workload_socket(&p).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "keep me");
    }

    #[tokio::test]
    async fn workload_api_socket_refuses_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "x").unwrap();
        let link = dir.path().join("agent.sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = bind_workload_socket(&link).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "x");
    }

    #[tokio::test]
    async fn workload_api_socket_refuses_a_world_writable_directory_without_sticky_bit() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("open");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = bind_workload_socket(&d.join("agent.sock"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("world-writable without the sticky bit"), "{e}");
        assert!(e.contains(&d.display().to_string()), "{e}");
        assert!(!d.join("agent.sock").exists());

        // With the sticky bit (like /tmp) it is accepted.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let _l = bind_workload_socket(&d.join("agent.sock")).unwrap();
        assert_eq!(mode(&d), 0o1777);
    }
}
