//! An upstream CA that Sigil's CA chains to. With one configured, Sigil's
//! signing certificate is an intermediate minted by the upstream CA and the
//! upstream roots are the trust anchors of the bundle.

pub mod disk;

use rcgen::{CertificateParams, KeyPair};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path}: {message}")]
    Invalid {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error("minting the intermediate CA failed: {0}")]
    Mint(String),
}

/// A CA above Sigil's.
pub trait UpstreamAuthority: Send + Sync + 'static {
    /// Signs Sigil's CA certificate (`params`, over `key`'s public key).
    /// Returns DER: the new CA certificate first, then the upstream
    /// intermediates a verifier needs to reach an anchor (never the anchors).
    fn mint_ca(
        &self,
        params: &CertificateParams,
        key: &KeyPair,
    ) -> Result<Vec<Vec<u8>>, UpstreamError>;
    /// The upstream trust anchors (DER), published as the bundle.
    fn trust_anchors(&self) -> Vec<Vec<u8>>;
    /// Unix seconds: the upstream signing certificate's expiry; a minted CA
    /// never outlives it.
    fn not_after(&self) -> i64;
}
