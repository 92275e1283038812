//! The admin API's errors and their one mapping to gRPC: [`AdminError`]
//! says what went wrong; `From<AdminError> for Status` (and [`item_error`]
//! for one item of a batch) chooses the code and the message. Refusals and
//! store problems the operator can act on keep their text (the admin socket
//! is local and admin-only); internal failures send a fixed text and put the
//! full error chain in the log (each variant's text includes its
//! source's, so its `Display` is the chain).

use sigil_proto::admin_api as pb;
use tonic::{Code, Status};
use tracing::error;

use crate::ca::CaError;
use crate::ca::issuer::IssueError;
use crate::ca::manager::CaOpError;
use crate::store::StoreError;

/// What callers see instead of an internal error's text.
const INTERNAL: &str = "internal error; see the server log";

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request is malformed (`InvalidArgument`).
    #[error("{0}")]
    Invalid(String),
    /// It would duplicate something that exists (`AlreadyExists`).
    #[error("{0}")]
    AlreadyExists(String),
    /// Not done because another part of the batch was refused (`Aborted`).
    #[error("{0}")]
    Aborted(String),
    /// Cannot be done in the current state (`FailedPrecondition`).
    #[error("{0}")]
    Precondition(String),
    /// The server cannot serve now (`Unavailable`).
    #[error("{0}")]
    Unavailable(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Issue(#[from] IssueError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<CaOpError> for AdminError {
    fn from(e: CaOpError) -> AdminError {
        match e {
            CaOpError::Refused(m) => AdminError::Precondition(m),
            CaOpError::Ca(e) => AdminError::Ca(e),
        }
    }
}

impl AdminError {
    /// A failed blocking task (panicked or cancelled).
    pub fn task(e: tokio::task::JoinError) -> AdminError {
        AdminError::Internal(format!("blocking task: {e}"))
    }

    pub fn code(&self) -> Code {
        match self {
            AdminError::Invalid(_)
            | AdminError::Issue(IssueError::BadCsr(_) | IssueError::BadRequest(_)) => {
                Code::InvalidArgument
            }
            AdminError::AlreadyExists(_) | AdminError::Store(StoreError::AlreadyExists { .. }) => {
                Code::AlreadyExists
            }
            AdminError::Aborted(_)
            | AdminError::Store(StoreError::Conflict { .. } | StoreError::Changed { .. }) => {
                Code::Aborted
            }
            AdminError::Precondition(_) => Code::FailedPrecondition,
            AdminError::Issue(IssueError::NotAuthorized { .. }) => Code::PermissionDenied,
            AdminError::Unavailable(_)
            | AdminError::Store(StoreError::Io(_) | StoreError::Unreachable(_)) => {
                Code::Unavailable
            }
            AdminError::Store(StoreError::NotFound { .. }) => Code::NotFound,
            AdminError::Store(_)
            | AdminError::Ca(_)
            | AdminError::Issue(IssueError::Ca(_))
            | AdminError::Internal(_) => Code::Internal,
        }
    }

    /// The text the caller gets.
    fn safe_message(&self) -> String {
        match self {
            AdminError::Store(StoreError::NotFound { what, key }) => {
                format!("{what} {key} not found")
            }
            AdminError::Store(StoreError::AlreadyExists { what, key }) => {
                format!("{what} already exists: {key}")
            }
            AdminError::Store(StoreError::Conflict { .. } | StoreError::Changed { .. }) => {
                "changed concurrently; retry".into()
            }
            // Disk full, read-only, I/O errors: the operator must see the
            // cause (the admin socket is local and admin-only; no secret is
            // in it).
            AdminError::Store(StoreError::Io(m)) => {
                format!("the store could not complete the call: {m}")
            }
            // A shared database down: nothing was written; retry later.
            AdminError::Store(e @ StoreError::Unreachable(_)) => e.to_string(),
            _ if self.code() == Code::Internal => INTERNAL.into(),
            other => other.to_string(),
        }
    }

    /// Logs what the caller does not see in full.
    fn log(&self) {
        match self {
            AdminError::Store(StoreError::Io(m)) => {
                error!(error = %m, "admin call failed: store I/O");
            }
            AdminError::Store(StoreError::Unreachable(m)) => {
                error!(error = %m, "admin call failed: store unreachable");
            }
            _ if self.code() == Code::Internal => {
                error!(error = %self, "admin call failed");
            }
            _ => {}
        }
    }
}

impl From<AdminError> for Status {
    fn from(e: AdminError) -> Status {
        e.log();
        Status::new(e.code(), e.safe_message())
    }
}

/// One refused or failed item of a batch; `index` prefixes the message
/// ("entry 3: ...") when the error's own text does not name the item.
pub fn item_error(e: &AdminError, index: Option<usize>) -> pb::ItemError {
    e.log();
    let message = match index {
        Some(i) => format!("entry {i}: {}", e.safe_message()),
        None => e.safe_message(),
    };
    pb::ItemError {
        code: e.code() as i32,
        message,
    }
}

/// An `InvalidArgument` status with `m`.
pub fn invalid(m: String) -> Status {
    AdminError::Invalid(m).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let s = Status::from(AdminError::Store(StoreError::NotFound {
            what: "entry",
            key: "e1".into(),
        }));
        assert_eq!(
            (s.code(), s.message()),
            (Code::NotFound, "entry e1 not found")
        );
        let s = Status::from(AdminError::Ca(CaError::Sign("secret detail".into())));
        assert_eq!((s.code(), s.message()), (Code::Internal, INTERNAL));
        let s = Status::from(AdminError::from(CaOpError::Refused("no".into())));
        assert_eq!((s.code(), s.message()), (Code::FailedPrecondition, "no"));
        let item = item_error(&AdminError::Invalid("bad".into()), Some(2));
        assert_eq!(item.message, "entry 2: bad");
    }
}
