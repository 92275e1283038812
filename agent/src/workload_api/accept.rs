//! Attestation at accept (issue 14, item 2): the kernel fixes a connection's
//! peer credentials at `connect()`, but the caller chooses when to call. So
//! the moment a Workload API connection is accepted, the agent records who
//! is at the other end — the peer credentials, the process's
//! [`ProcessMark`] (start time, executable and its device/inode) and, where
//! the kernel has `SO_PEERPIDFD` (Linux 6.5 and later), a pidfd of that
//! process — and carries it with the connection. Each call is then attested
//! against that record (`admit`): it is refused if the process has exited
//! (the pidfd is readable), if the pid now names another process (start
//! time), or if the process runs another program than at accept. A child
//! that inherited the connection can therefore never be served as its
//! parent's new program, nor as a process that took over the pid.
//!
//! The same record counts the connection against its uid's cap
//! (`max_per_uid`): connections over it are closed at once.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use sigil_proto::unix_h2::{AuthorityFront, Tag};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::Stream;
use tokio_stream::wrappers::UnixListenerStream;

use super::admission::{CountSlot, Counts};
use crate::workload_attestor::{PeerCred, ProcessMark, WorkloadAttestError, WorkloadAttestor};

/// Who connected, as recorded when the connection was accepted. Put in
/// every request's extensions by tonic (the connection's [`Tag`]).
#[derive(Clone)]
pub struct AcceptedPeer {
    /// The kernel's credentials (`SO_PEERCRED`); `None` without a pid.
    pub(super) cred: Option<PeerCred>,
    /// The process as it was at accept, or why it could not be read.
    pub(super) mark: Arc<Result<ProcessMark, WorkloadAttestError>>,
    /// A pidfd of the connecting process (`SO_PEERPIDFD`), when the kernel
    /// gives one.
    pidfd: Option<Arc<OwnedFd>>,
    /// The connection's slot under its uid's cap: given back once the
    /// connection and every request that saw this record are gone.
    _slot: Option<Arc<CountSlot<u32>>>,
}

impl AcceptedPeer {
    /// Whether the process that connected has exited, as its pidfd says;
    /// without a pidfd the start time in the mark is the only check.
    pub(super) fn exited(&self) -> bool {
        let Some(fd) = &self.pidfd else {
            return false;
        };
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => false,
            Ok(_) => fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP)),
            // Fail closed: a pidfd that cannot be polled proves nothing.
            Err(_) => true,
        }
    }
}

/// Records the peer of a just-accepted `stream` (blocking: procfs reads).
fn record(stream: &UnixStream, attestor: &dyn WorkloadAttestor) -> AcceptedPeer {
    let cred = stream.peer_cred().ok().and_then(|c| match c.pid() {
        // 0: the peer lives in a pid namespace we cannot see into.
        Some(pid) if pid > 0 => Some(PeerCred {
            pid,
            uid: c.uid(),
            gid: c.gid(),
        }),
        _ => None,
    });
    // ENOPROTOOPT before Linux 6.5: no pidfd, the start time decides.
    let pidfd = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerPidfd)
        .ok()
        .map(Arc::new);
    let mark = match &cred {
        Some(cred) => attestor.mark(cred),
        None => Err(WorkloadAttestError::Unavailable {
            pid: 0,
            reason: "no process id for the peer".into(),
        }),
    };
    AcceptedPeer {
        cred,
        mark: Arc::new(mark),
        pidfd,
        _slot: None,
    }
}

/// The accepted connections of `listener`, each recorded at accept and put
/// behind the HTTP/2 authority front. A connection over its uid's cap is
/// closed at once (its client sees `Unavailable`).
pub(super) fn incoming(
    listener: UnixListener,
    attestor: Arc<dyn WorkloadAttestor>,
    per_uid: Counts<u32>,
    max_per_uid: usize,
) -> impl Stream<Item = io::Result<AuthorityFront<UnixStream, Tag<AcceptedPeer>>>> {
    use tokio_stream::StreamExt;
    UnixListenerStream::new(listener)
        .then(move |accepted| {
            let attestor = attestor.clone();
            let per_uid = per_uid.clone();
            async move {
                let stream = accepted?;
                let (stream, mut peer) = tokio::task::spawn_blocking(move || {
                    let peer = record(&stream, attestor.as_ref());
                    (stream, peer)
                })
                .await
                .map_err(io::Error::other)?;
                peer._slot = match peer.cred {
                    Some(cred) => match CountSlot::take(&per_uid, cred.uid, max_per_uid) {
                        Some(slot) => Some(Arc::new(slot)),
                        None => {
                            tracing::warn!(
                                pid = cred.pid,
                                uid = cred.uid,
                                limit = max_per_uid,
                                "Workload API connection closed: per-uid connection limit reached"
                            );
                            return Ok(None);
                        }
                    },
                    None => None,
                };
                Ok(Some(AuthorityFront::tagged(stream, Tag(peer))))
            }
        })
        .filter_map(|r: io::Result<Option<_>>| r.transpose())
}
