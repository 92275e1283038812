//! Workload attestation: turns the peer credentials of a Workload API caller
//! (from `SO_PEERCRED` on the accepted Unix connection) into selectors. One
//! implementation per file; identity comes only from the kernel, never from
//! anything the caller sends.

pub mod container;
pub mod unix;

use sigil_proto::Selector;

/// The kernel's account of who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadAttestError {
    /// The process could not be examined (gone, permission, /proc missing).
    #[error("cannot attest pid {pid}: {reason}")]
    Unavailable { pid: i32, reason: String },
    /// The pid was reused by another process while it was being examined.
    #[error("pid {pid} changed while it was being attested (pid reuse); refusing")]
    PidReused { pid: i32 },
}

/// A workload attestor.
pub trait WorkloadAttestor: Send + Sync + 'static {
    /// The selectors of the process behind `cred`. Fails closed: any doubt
    /// about which process it is gives an error, not fewer selectors.
    fn attest(&self, cred: &PeerCred) -> Result<Vec<Selector>, WorkloadAttestError>;
}
