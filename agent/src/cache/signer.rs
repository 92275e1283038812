//! The cache's one way to get SVIDs signed: a [`SvidSigner`] takes a batch of
//! (entry id, CSR) pairs and answers per entry. The agent's implementation is
//! the server's `SignSvids` call (`server_client.rs`); tests sign with an
//! in-process CA.

use std::future::Future;

/// One CSR to sign, for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrRequest {
    pub entry_id: String,
    /// DER PKCS#10; only its key is used by the signer.
    pub csr: Vec<u8>,
}

/// The answer for one entry of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignResult {
    pub entry_id: String,
    pub outcome: SignOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignOutcome {
    /// DER certificates, leaf first.
    Signed(Vec<Vec<u8>>),
    /// The signer refused this entry (a gRPC status code and its message).
    Refused { code: i32, message: String },
    /// The answer named the entry but carried no result.
    Empty,
}

/// Why a whole call failed: nothing of the batch was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    /// The server refused the call for its signing rate limit (gRPC
    /// `ResourceExhausted`): a smaller batch, later, may pass.
    RateLimited(String),
    /// Anything else (server unreachable, the call refused).
    Failed(String),
}

impl std::fmt::Display for SignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignError::RateLimited(m) | SignError::Failed(m) => f.write_str(m),
        }
    }
}

/// Signs batches of at most [`sigil_proto::CSR_BATCH`] CSRs.
pub trait SvidSigner: Send + Sync + 'static {
    /// Signs `batch`. `Err` is a failure of the whole call (server
    /// unreachable, refused the call): nothing was signed.
    fn sign_svids(
        &self,
        batch: Vec<CsrRequest>,
    ) -> impl Future<Output = Result<Vec<SignResult>, SignError>> + Send;
}
