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
    #[error("spiffe_id {0:?} is not one of the caller's identities")]
    NotCallersId(String),
    #[error("the server refused to mint a JWT-SVID for this identity")]
    MintRefused(String),
    #[error("a JWT-SVID could not be minted (the server is unreachable or failed); retry later")]
    MintFailed(String),
    #[error("a JWT bundle could not be encoded: {0}")]
    BadBundle(#[source] sigil_proto::JwksError),
    #[error("invalid JWT-SVID: {0}")]
    InvalidToken(#[source] sigil_proto::jwt::JwtError),
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
        CallError::NotCallersId(id) => {
            info!(pid, uid, method, spiffe_id = %id, "Workload API caller asked for a SPIFFE ID it does not have");
            Status::permission_denied(e.to_string())
        }
        CallError::MintRefused(m) => {
            warn!(pid, uid, method, error = %m, "the server refused to mint a JWT-SVID");
            Status::permission_denied(NO_IDENTITY)
        }
        CallError::MintFailed(m) => {
            warn!(pid, uid, method, error = %m, "JWT-SVID minting failed");
            Status::unavailable(e.to_string())
        }
        CallError::BadBundle(source) => {
            warn!(pid, uid, method, error = %source, "JWT bundle not encodable");
            Status::unavailable(e.to_string())
        }
        CallError::InvalidToken(source) => {
            debug!(pid, uid, method, error = %source, "JWT-SVID refused");
            Status::invalid_argument(e.to_string())
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
