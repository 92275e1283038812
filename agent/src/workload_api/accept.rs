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
//! Before that record is made, the connection takes a slot under the
//! global and its uid's connection caps (`connection`): connections over
//! either are closed at once, having cost nothing but the accept. Accept
//! errors (e.g. `EMFILE`) back off instead of spinning.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use std::time::Duration;

use sigil_proto::unix_h2::{AuthorityFront, Tag};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;

use super::admission::{CountSlot, Counts};
use super::connection::{ActiveCall, Activity, ConnectionLimits, IdleClose, Refusals};
use crate::workload_attestor::{
    PeerCred, ProcessMark, WorkloadAttestError, WorkloadAttestor, pidfd_exited,
};

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
    /// The connection's slots under the global and its uid's caps: given
    /// back once the connection and every request that saw this record
    /// are gone.
    _slots: Arc<ConnectionSlots>,
    /// The connection's calls in flight and open streams (idle timeout).
    activity: Arc<Activity>,
}

/// A connection's share of the global and the per-uid connection caps.
struct ConnectionSlots {
    _global: OwnedSemaphorePermit,
    _uid: Option<CountSlot<u32>>,
}

impl AcceptedPeer {
    /// Marks a call in flight on this connection until the guard drops: a
    /// connection with one is not idle.
    pub(super) fn active(&self) -> ActiveCall {
        self.activity.enter()
    }

    /// Whether the process that connected has exited, as its pidfd says;
    /// without a pidfd the start time in the mark is the only check.
    pub(super) fn exited(&self) -> bool {
        self.pidfd.as_deref().is_some_and(pidfd_exited)
    }
}

/// Records the peer of a just-accepted `stream` (blocking: procfs reads).
fn record(
    stream: &UnixStream,
    attestor: &dyn WorkloadAttestor,
    slots: ConnectionSlots,
) -> AcceptedPeer {
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
        Some(cred) => attestor.mark(cred).map(|m| m.with_pidfd(pidfd.clone())),
        None => Err(WorkloadAttestError::Unavailable {
            pid: 0,
            reason: "no process id for the peer".into(),
        }),
    };
    AcceptedPeer {
        cred,
        mark: Arc::new(mark),
        pidfd,
        _slots: Arc::new(slots),
        activity: Activity::new(),
    }
}

/// An accepted connection, ready for the HTTP/2 server.
pub(super) type Accepted = AuthorityFront<IdleClose<UnixStream>, Tag<AcceptedPeer>>;

/// The caps and the state they are counted in.
pub(super) struct Caps {
    pub(super) limits: ConnectionLimits,
    pub(super) global: Arc<Semaphore>,
    pub(super) per_uid: Counts<u32>,
    pub(super) refusals: Arc<Refusals>,
}

impl Caps {
    pub(super) fn new(limits: ConnectionLimits, per_uid: Counts<u32>) -> Caps {
        Caps {
            limits,
            global: Arc::new(Semaphore::new(
                limits.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            per_uid,
            refusals: Arc::default(),
        }
    }

    /// The slots of a connection from `uid` (`None`: the kernel gave no
    /// credentials; counted globally only), or `None` when over a cap
    /// (counted and logged).
    fn take(&self, uid: Option<u32>) -> Option<ConnectionSlots> {
        let refused = |reason, limit| {
            self.refusals
                .refused(uid.unwrap_or(u32::MAX), reason, limit);
            None
        };
        let uid_slot = match uid {
            Some(uid) => {
                match CountSlot::take(&self.per_uid, uid, self.limits.max_connections_per_uid) {
                    Some(s) => Some(s),
                    None => return refused("per_uid", self.limits.max_connections_per_uid),
                }
            }
            None => None,
        };
        let Ok(global) = self.global.clone().try_acquire_owned() else {
            return refused("global", self.limits.max_connections);
        };
        Some(ConnectionSlots {
            _global: global,
            _uid: uid_slot,
        })
    }
}

/// Longest pause after repeated accept errors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The accepted connections of `listener`, each within the connection caps,
/// recorded at accept, timed for the preface and idleness and put behind
/// the HTTP/2 authority front. A connection over a cap is closed at once
/// (its client sees a closed connection). Accepting stops when the stream
/// is dropped.
pub(super) fn incoming(
    listener: UnixListener,
    attestor: Arc<dyn WorkloadAttestor>,
    caps: Caps,
) -> impl Stream<Item = io::Result<Accepted>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut backoff = Duration::ZERO;
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let stream = match accepted {
                Ok((stream, _)) => {
                    backoff = Duration::ZERO;
                    stream
                }
                Err(e) => {
                    // EMFILE and the like: pause instead of spinning.
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                    tracing::warn!(error = %e, pause_ms = backoff.as_millis() as u64, "Workload API accept failed");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            // The uid is the kernel's (SO_PEERCRED), read before anything
            // else is spent on the connection.
            let uid = stream.peer_cred().ok().map(|c| c.uid());
            let Some(slots) = caps.take(uid) else {
                drop(stream);
                continue;
            };
            let attestor = attestor.clone();
            let tx = tx.clone();
            let limits = caps.limits;
            tokio::spawn(async move {
                let recorded = tokio::task::spawn_blocking(move || {
                    let peer = record(&stream, attestor.as_ref(), slots);
                    (stream, peer)
                })
                .await;
                let Ok((stream, peer)) = recorded else {
                    return;
                };
                let io = IdleClose::new(stream, peer.activity.clone(), limits, uid);
                let _ = tx.send(Ok(AuthorityFront::tagged(io, Tag(peer)))).await;
            });
        }
    });
    ReceiverStream::new(rx)
}
