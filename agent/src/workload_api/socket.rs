//! The Workload API socket: its directory (created 0755 when missing, refused
//! when anyone could replace the socket in it), stale-socket replacement
//! (never a live agent's socket, never a non-socket file) and the socket's
//! own mode, 0666: workloads of every uid must be able to connect, because
//! who they are comes from the kernel's peer credentials, not from access to
//! the file. The mechanics are [`sigil_proto::daemon::socket`]'s; this file
//! holds the Workload API's policy.

use std::io;
use std::path::Path;

use sigil_proto::daemon::socket::{self, SocketSpec};
use tokio::net::UnixListener;

pub(crate) use sigil_proto::daemon::socket::socket_identity;

/// Mode of the socket file: anyone may connect.
pub const SOCKET_MODE: u32 = 0o666;
/// Mode of a socket directory the agent creates.
pub const DIR_MODE: u32 = 0o755;

const WORKLOAD_SOCKET: SocketSpec = SocketSpec {
    mode: SOCKET_MODE,
    dir_mode: DIR_MODE,
    what: "the Workload API socket",
    daemon: "agent",
};

/// Binds the Workload API socket at `path` (mode 0666).
///
/// Missing parent directories are created with mode 0755; an existing one is
/// left as it is, but refused if it is world-writable without the sticky bit
/// (anyone could then swap the socket for their own). A stale socket (one
/// nobody listens on) is replaced; a live one, a symlink or any other file is
/// refused and left untouched. The process umask is never changed.
pub fn bind_workload_socket(path: &Path) -> io::Result<UnixListener> {
    socket::bind(path, &WORKLOAD_SOCKET)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

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
    async fn workload_api_socket_live_refused_naming_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _live = bind_workload_socket(&sock).unwrap();
        let e = bind_workload_socket(&sock).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("in use by a running agent"), "{e}");
    }
}
