//! Binding a daemon's Unix socket (the admin socket, the Workload API
//! socket) safely, without ever touching the process-wide umask:
//!
//! - missing parent directories are created with the caller's directory
//!   mode; an existing parent is left as it is, but refused when it is
//!   world-writable without the sticky bit (anyone could swap the socket);
//! - a path that exists and is not a socket (a file, a symlink, a
//!   directory) is refused and left untouched; a socket is replaced only if
//!   nothing answers on it (a stale one left by a daemon that died), and
//!   refused while a daemon accepts connections on it;
//! - the socket is bound inside a fresh private directory (mode 0700) next
//!   to the target, given its final mode there, and only then hard-linked
//!   to its path. Nobody else can reach it before it has its mode (so no
//!   early connection slips in under a loose umask), and the link, unlike a
//!   rename, fails rather than replace whatever appeared at the path in the
//!   meantime. The private directory is removed before returning.
//!
//! The caller chooses the mode: the admin socket is 0600, the Workload API
//! socket 0666 (every workload must reach it; who it is comes from the
//! kernel's peer credentials, not from access to the file).

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::UnixListener;

/// How a daemon's socket is bound.
#[derive(Debug, Clone, Copy)]
pub struct SocketSpec {
    /// The socket file's mode.
    pub mode: u32,
    /// The mode of parent directories created because they were missing.
    pub dir_mode: u32,
    /// What the socket is, for errors ("the admin socket").
    pub what: &'static str,
    /// Who serves it, for errors ("server", "agent").
    pub daemon: &'static str,
}

/// Numbers this process's private bind directories.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Binds the socket at `path` as `spec` says (see the module docs).
pub fn bind(path: &Path, spec: &SocketSpec) -> io::Result<UnixListener> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_dirs(&parent, spec.dir_mode)?;
    check_dir(&parent, spec.what)?;
    remove_stale(path, spec.daemon)?;
    let private = parent.join(format!(
        ".sock.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| annotate(e, format!("creating {}", private.display())))?;
    let bound = bind_private(&private.join("s"), path, spec);
    // The socket lives on at `path` (a hard link); its private name goes.
    let _ = std::fs::remove_file(private.join("s"));
    let _ = std::fs::remove_dir(&private);
    bound
}

fn bind_private(tmp: &Path, path: &Path, spec: &SocketSpec) -> io::Result<UnixListener> {
    let cannot =
        |e: io::Error| annotate(e, format!("cannot bind {} {}", spec.what, path.display()));
    let listener = UnixListener::bind(tmp).map_err(cannot)?;
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(spec.mode)).map_err(cannot)?;
    std::fs::hard_link(tmp, path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "cannot bind {} {}: something else created it meanwhile; refusing to \
                     replace it",
                    spec.what,
                    path.display()
                ),
            )
        } else {
            cannot(e)
        }
    })?;
    Ok(listener)
}

fn annotate(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The file identity (device, inode) of the socket at `path`, so a daemon
/// removes only its own socket when it stops.
pub fn socket_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_socket())
        .map(|m| (m.dev(), m.ino()))
}

/// Creates the missing directories leading to `dir`, each with `mode` (set
/// explicitly: the umask must not narrow it). Existing ones are not touched.
fn create_dirs(dir: &Path, mode: u32) -> io::Result<()> {
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
        match std::fs::DirBuilder::new().mode(mode).create(d) {
            Ok(()) => std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))?,
            // Someone else created it in the meantime: theirs, not ours to chmod.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(annotate(
                    e,
                    format!("cannot create the socket directory {}", d.display()),
                ));
            }
        }
    }
    Ok(())
}

/// Refuses a socket directory anyone may rename or delete files in.
fn check_dir(dir: &Path, what: &str) -> io::Result<()> {
    let meta = std::fs::metadata(dir)
        .map_err(|e| annotate(e, format!("socket directory {}", dir.display())))?;
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
                 any user could replace {what}; use a directory that is not world-writable (or \
                 has the sticky bit)",
                dir.display(),
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Removes a stale socket at `path`; refuses a live socket or a non-socket.
fn remove_stale(path: &Path, daemon: &str) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{} is in use by a running {daemon} (it accepts connections); stop it \
                         first",
                        path.display()
                    ),
                )),
                // Nobody listens: a socket left behind by a daemon that died.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!(
                        "{} exists and cannot be checked for a running {daemon} ({e}); refusing \
                         to replace it",
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
        Err(e) => Err(annotate(e, path.display().to_string())),
    }
}

#[cfg(test)]
mod tests;
