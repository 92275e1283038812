//! The admin socket: created with mode 0600 (never replacing a live server's
//! socket or a non-socket file), and a per-call check of the caller's uid
//! from the socket's peer credentials against the server's uid and the
//! configured allow-list. No credentials, no access.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;

use tokio::net::UnixListener;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};
use tracing::warn;

/// Binds the admin socket at `path` with mode 0600.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{} is in use by a running server; stop it first",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Nobody else may connect even for the instant before chmod.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Who may call: the server's own uid, and the allow-list.
pub fn uid_allowed(peer_uid: Option<u32>, server_uid: u32, allowed: &[u32]) -> bool {
    match peer_uid {
        Some(uid) => uid == server_uid || allowed.contains(&uid),
        None => false,
    }
}

/// A tonic interceptor refusing callers whose uid is not allowed.
pub fn uid_check(
    server_uid: u32,
    allowed: Vec<u32>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
    move |req: Request<()>| {
        let cred = req
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|i| i.peer_cred);
        let uid = cred.map(|c| c.uid());
        if uid_allowed(uid, server_uid, &allowed) {
            Ok(req)
        } else {
            warn!(
                uid = uid.map(i64::from).unwrap_or(-1),
                pid = cred.and_then(|c| c.pid()).unwrap_or(-1),
                "admin call refused: caller uid not allowed"
            );
            Err(Status::permission_denied(format!(
                "uid {} may not use the admin socket (allowed: the server's uid {server_uid} \
                 and admin_allowed_uids)",
                uid.map_or_else(|| "unknown".to_string(), |u| u.to_string())
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        assert!(uid_allowed(Some(5), 5, &[]));
        assert!(!uid_allowed(Some(6), 5, &[]));
        assert!(uid_allowed(Some(6), 5, &[6]));
        assert!(
            !uid_allowed(Some(0), 5, &[6]),
            "root is not implicitly allowed"
        );
        assert!(!uid_allowed(None, 5, &[5]), "no credentials, no access");
    }

    #[tokio::test]
    async fn bind_refuses_non_socket_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "keep me").unwrap();
        let e = bind(&p).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "keep me");

        let s = dir.path().join("sub/admin.sock");
        let l = bind(&s).unwrap();
        let mode = std::fs::metadata(&s).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A live socket is not replaced.
        let e = bind(&s).unwrap_err().to_string();
        assert!(e.contains("in use"), "{e}");
        drop(l);
        // A stale one is.
        bind(&s).unwrap();
    }
}
