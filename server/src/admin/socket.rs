//! The admin socket: created with mode 0600 (never replacing a live server's
//! socket or a non-socket file), and a per-call check of the caller's uid
//! from the socket's peer credentials against the server's uid and the
//! configured allow-list. No credentials, no access.

use std::io;
use std::path::Path;

use sigil_proto::daemon::socket::{self, SocketSpec};
use tokio::net::UnixListener;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};
use tracing::warn;

/// How the admin socket is bound: owner-only, in owner-only directories.
const ADMIN_SOCKET: SocketSpec = SocketSpec {
    mode: 0o600,
    dir_mode: 0o700,
    what: "the admin socket",
    daemon: "server",
};

/// Binds the admin socket at `path` with mode 0600 (see
/// [`sigil_proto::daemon::socket`]: never a live server's socket nor a
/// non-socket file, and no umask change).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    socket::bind(path, &ADMIN_SOCKET)
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
        use std::os::unix::fs::PermissionsExt;
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
