//! The agent API's errors and their one mapping to gRPC: [`ApiError`] says
//! what went wrong; `From<ApiError> for Status` (and [`item_error`] for one
//! item of a SignSvids batch) chooses the code and a message that is safe to
//! send. Refusals carry their own caller-facing text; internal failures
//! send a fixed text and put the full error chain in the log (each
//! variant's text includes its source's, so its `Display` is the chain).

use sigil_proto::agent_api as pb;
use tonic::{Code, Status};
use tracing::error;

use crate::ca::issuer::IssueError;
use crate::node_attestor::AttestError;
use crate::store::StoreError;

/// What callers see instead of an internal error's text.
const INTERNAL: &str = "internal error; see the server log";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No usable client credentials (`Unauthenticated`).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this (`PermissionDenied`).
    #[error("{0}")]
    Refused(String),
    /// The request is malformed (`InvalidArgument`).
    #[error("{0}")]
    Invalid(String),
    /// A rate or size limit (`ResourceExhausted`).
    #[error("{0}")]
    Exhausted(&'static str),
    /// The caller was too slow (`DeadlineExceeded`).
    #[error("{0}")]
    Timeout(&'static str),
    /// A concurrent change won; the caller may retry (`Aborted`).
    #[error("{0}")]
    Aborted(String),
    /// The caller went away (`Cancelled`).
    #[error("{0}")]
    Cancelled(&'static str),
    /// Try again later (`Unavailable`); the source is logged.
    #[error("{message}: {source}")]
    Unavailable {
        message: &'static str,
        source: StoreError,
    },
    #[error(transparent)]
    Attest(#[from] AttestError),
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// The store failed while `doing` something (`Internal`; `Unavailable`
    /// when it is unreachable: the agent retries).
    #[error("{doing}: {source}")]
    Store {
        doing: &'static str,
        source: StoreError,
    },
    /// Any other server-side failure (`Internal`).
    #[error("{0}")]
    Internal(String),
    /// A status from the inbound stream (tonic's), passed on as it is.
    #[error("inbound stream: {0}")]
    Inbound(Status),
}

impl ApiError {
    /// A store failure while `doing` something.
    pub fn store(doing: &'static str) -> impl FnOnce(StoreError) -> ApiError {
        move |source| ApiError::Store { doing, source }
    }

    /// A failed blocking task (panicked or cancelled).
    pub fn task(e: tokio::task::JoinError) -> ApiError {
        ApiError::Internal(format!("blocking task: {e}"))
    }

    pub fn code(&self) -> Code {
        match self {
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::Refused(_) => Code::PermissionDenied,
            ApiError::Invalid(_) => Code::InvalidArgument,
            ApiError::Exhausted(_) => Code::ResourceExhausted,
            ApiError::Timeout(_) => Code::DeadlineExceeded,
            ApiError::Cancelled(_) => Code::Cancelled,
            ApiError::Aborted(_) => Code::Aborted,
            ApiError::Unavailable { .. }
            | ApiError::Store {
                source: StoreError::Unreachable(_),
                ..
            } => Code::Unavailable,
            ApiError::Attest(AttestError::Invalid(_)) => Code::InvalidArgument,
            ApiError::Attest(AttestError::Refused(_)) => Code::PermissionDenied,
            ApiError::Issue(IssueError::BadCsr(_) | IssueError::BadRequest(_)) => {
                Code::InvalidArgument
            }
            ApiError::Issue(IssueError::NotAuthorized { .. }) => Code::PermissionDenied,
            ApiError::Inbound(s) => s.code(),
            ApiError::Attest(AttestError::Internal(_))
            | ApiError::Issue(IssueError::Ca(_))
            | ApiError::Store { .. }
            | ApiError::Internal(_) => Code::Internal,
        }
    }

    /// The text the caller gets: the error's own for refusals and bad
    /// requests, a fixed one for everything the server got wrong.
    fn safe_message(&self) -> String {
        match self {
            ApiError::Unavailable { message, .. } => (*message).to_string(),
            // Names the cause, not the database's address.
            ApiError::Store {
                doing,
                source: StoreError::Unreachable(_),
            } => format!("{doing}: store unreachable; retry later"),
            ApiError::Inbound(s) => s.message().to_string(),
            _ if self.code() == Code::Internal => INTERNAL.to_string(),
            _ => self.to_string(),
        }
    }

    /// Logs what the caller will not see: the full chain of a failure.
    fn log(&self) {
        if matches!(self.code(), Code::Internal | Code::Unavailable) {
            error!(code = ?self.code(), error = %self, "agent API call failed");
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        if let ApiError::Inbound(s) = e {
            return s;
        }
        e.log();
        Status::new(e.code(), e.safe_message())
    }
}

/// One refused or failed item of a SignSvids batch. A failed signing says
/// so without detail (the detail is logged).
pub fn item_error(e: &ApiError) -> pb::ItemError {
    let message = match e {
        // The Issuer logged it, with the entry it was for.
        ApiError::Issue(IssueError::Ca(_)) => "signing failed; see the server log".to_string(),
        other => {
            other.log();
            other.safe_message()
        }
    };
    pb::ItemError {
        code: e.code() as i32,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CaError;

    #[test]
    fn internal_text_never_reaches_the_caller() {
        let secret = "disk /var/lib/sigil/store: permission denied";
        for e in [
            ApiError::Store {
                doing: "storing the agent",
                source: StoreError::Io(secret.into()),
            },
            ApiError::Internal(secret.into()),
            ApiError::Attest(AttestError::Internal(secret.into())),
            ApiError::Issue(IssueError::Ca(CaError::Sign(secret.into()))),
        ] {
            let s = Status::from(e);
            assert_eq!(s.code(), Code::Internal);
            assert_eq!(s.message(), INTERNAL);
        }
        let item = item_error(&ApiError::Issue(IssueError::Ca(CaError::Sign(
            secret.into(),
        ))));
        assert_eq!(item.code, Code::Internal as i32);
        assert!(!item.message.contains(secret));
    }

    #[test]
    fn refusals_keep_their_code_and_text() {
        let s = Status::from(ApiError::Issue(IssueError::NotAuthorized {
            entry_id: "e1".into(),
        }));
        assert_eq!(s.code(), Code::PermissionDenied);
        assert_eq!(s.message(), "entry e1 is not authorized for this agent");
        let s = Status::from(ApiError::Attest(AttestError::Invalid("bad".into())));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "invalid attestation payload: bad");
        let s = Status::from(ApiError::Inbound(Status::cancelled("gone")));
        assert_eq!((s.code(), s.message()), (Code::Cancelled, "gone"));
    }
}
