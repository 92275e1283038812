//! Why a Workload API call is refused or a stream ends, and the one place
//! that becomes a `Status`: a safe message out, the detail (pid, uid) in the
//! log.

use super::*;

/// Why a call is refused or a stream ends. Mapped to `Status` in `refuse`.
#[derive(Debug, thiserror::Error)]
pub(super) enum CallError {
    #[error("security header missing from request")]
    HeaderMissing,
    #[error("security header workload.spiffe.io must be sent exactly once")]
    HeaderRepeated,
    #[error("security header workload.spiffe.io must have the value \"true\"")]
    HeaderValue,
    #[error("the calling process could not be identified (no peer credentials or pid)")]
    NoPeerCred,
    #[error("too many open Workload API streams; retry later")]
    TooManyStreams,
    #[error("too many open Workload API streams from this process (limit {0}); retry later")]
    TooManyWorkloadStreams(usize),
    #[error("too many open Workload API streams from this uid (limit {0}); retry later")]
    TooManyUidStreams(usize),
    #[error("workload attestation failed")]
    Attestation(#[source] WorkloadAttestError),
    #[error("workload attestation did not complete")]
    AttestationTask(#[source] tokio::task::JoinError),
    #[error("no identity issued")]
    NoIdentity,
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("JWT-SVIDs are not supported yet")]
    JwtUnsupported,
    #[error("WIT-SVIDs are not issued by Sigil")]
    WitUnsupported,
    #[error("the agent is shutting down")]
    ShuttingDown,
}

/// The one place errors become statuses: a safe message out, the detail
/// (with pid and uid) in the log.
pub(super) fn refuse(method: &'static str, cred: Option<&PeerCred>, e: CallError) -> Status {
    let status = refuse_status(method, cred, e);
    metrics::workload_call(method, status.code());
    status
}

pub(super) fn refuse_status(method: &'static str, cred: Option<&PeerCred>, e: CallError) -> Status {
    let pid = cred.map_or(-1, |c| i64::from(c.pid));
    let uid = cred.map_or(-1, |c| i64::from(c.uid));
    match &e {
        CallError::HeaderMissing | CallError::HeaderRepeated | CallError::HeaderValue => {
            debug!(method, error = %e, "Workload API call refused: security header");
            Status::invalid_argument(e.to_string())
        }
        CallError::BadRequest(_) => {
            debug!(pid, uid, method, error = %e, "Workload API call refused: bad request");
            Status::invalid_argument(e.to_string())
        }
        CallError::NoPeerCred => {
            warn!(
                method,
                "Workload API call refused: caller has no peer credentials"
            );
            Status::permission_denied(e.to_string())
        }
        CallError::TooManyStreams => {
            warn!(
                pid,
                uid, method, "Workload API call refused: stream limit reached"
            );
            // Load shedding: standard clients back off and retry.
            Status::unavailable(e.to_string())
        }
        CallError::TooManyWorkloadStreams(limit) => {
            warn!(
                pid,
                uid, method, limit, "Workload API call refused: per-workload stream limit reached"
            );
            Status::unavailable(e.to_string())
        }
        CallError::TooManyUidStreams(limit) => {
            warn!(
                pid,
                uid, method, limit, "Workload API call refused: per-uid stream limit reached"
            );
            Status::unavailable(e.to_string())
        }
        CallError::Attestation(source) => {
            warn!(pid, uid, method, error = %source, "Workload API call refused: attestation failed");
            Status::permission_denied(e.to_string())
        }
        CallError::AttestationTask(source) => {
            warn!(pid, uid, method, error = %source, "Workload API call refused: attestation task failed");
            Status::unavailable(e.to_string())
        }
        CallError::NoIdentity => {
            info!(pid, uid, method, "Workload API caller matches no entry");
            Status::permission_denied(NO_IDENTITY)
        }
        CallError::JwtUnsupported => {
            debug!(pid, uid, method, "Workload API JWT method called");
            Status::unimplemented(JWT_UNSUPPORTED)
        }
        CallError::WitUnsupported => {
            debug!(pid, uid, method, "Workload API WIT method called");
            Status::unimplemented(WIT_UNSUPPORTED)
        }
        CallError::ShuttingDown => {
            debug!(pid, uid, method, "Workload API stream ended: shutting down");
            Status::unavailable(e.to_string())
        }
    }
}
