//! Node attestation, agent half: what the agent sends to prove which node it
//! runs on. Each attestor produces the first payload of the server's
//! AttestNode exchange and answers the server's challenges, if it has any.
//! One implementation per file; the wire contract both halves share is
//! [`sigil_proto::attestation`]. Secrets (join tokens, private keys) never
//! appear in errors or `Debug` output.

pub mod join_token;
pub mod x509pop;

use std::path::PathBuf;

use sigil_proto::attestation::{ChannelBinding, JOIN_TOKEN_MAX_LEN, X509POP_CHALLENGE_LEN};

pub use join_token::JoinTokenClient;
pub use x509pop::X509PopClient;

/// Why an attestor could not be set up or could not answer. Messages name
/// the file and the rule; they never contain a token or key material.
#[derive(Debug, thiserror::Error)]
pub enum AttestorError {
    #[error("{attestor} has no challenges")]
    NoChallenges { attestor: &'static str },
    #[error(
        "the join token must be 1 to {JOIN_TOKEN_MAX_LEN} characters of [A-Za-z0-9_-]; \
         the one given ({len} bytes) is not"
    )]
    MalformedJoinToken { len: usize },
    #[error("cannot read {}: {reason}", .path.display())]
    Read { path: PathBuf, reason: String },
    #[error("x509pop certificate file {}: {reason}", .path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("x509pop key file {}: {reason}", .path.display())]
    Key { path: PathBuf, reason: String },
    #[error(
        "x509pop private key {} does not match the public key of the leaf certificate in {} \
         (the first certificate of the file)",
        .key_path.display(),
        .cert_path.display()
    )]
    KeyMismatch {
        cert_path: PathBuf,
        key_path: PathBuf,
    },
    #[error("x509pop challenge is {len} bytes, expected {X509POP_CHALLENGE_LEN}")]
    BadChallenge { len: usize },
    #[error("signing the x509pop challenge failed")]
    Sign,
}

/// An agent-side node attestor.
pub trait NodeAttestorClient: Send + Sync {
    /// The attestor's name on the wire ("join_token", "x509pop").
    fn name(&self) -> &'static str;
    /// The first message of attestation.
    fn payload(&self) -> Result<Vec<u8>, AttestorError>;
    /// The answer to the server's challenge `challenge`, received on the
    /// TLS connection whose channel binding is `channel` (answers that prove
    /// possession of a key are bound to it, so they cannot be relayed).
    fn answer(&self, challenge: &[u8], channel: &ChannelBinding) -> Result<Vec<u8>, AttestorError>;
}
