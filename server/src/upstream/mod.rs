//! An upstream CA that Sigil's CA chains to. With one configured, Sigil's
//! signing certificate is an intermediate minted by the upstream CA and the
//! upstream roots are the trust anchors of the bundle.

pub mod chain;
pub mod disk;

use std::time::Duration;

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

/// A warning when the upstream signing certificate ends before `ca_ttl`
/// from `now` (unix seconds): every CA Sigil mints is cut short to it.
pub fn expiry_warning(up: &dyn UpstreamAuthority, now: i64, ca_ttl: Duration) -> Option<String> {
    let ttl = i64::try_from(ca_ttl.as_secs()).unwrap_or(i64::MAX);
    let left = up.not_after().saturating_sub(now);
    (left < ttl).then(|| {
        format!(
            "the upstream CA certificate expires in {} (at unix {}), before ca_ttl ({}) from now: \
             Sigil's CAs are cut short to its expiry; renew the upstream certificate",
            sigil_proto::format_duration(Duration::from_secs(u64::try_from(left).unwrap_or(0))),
            up.not_after(),
            sigil_proto::format_duration(ca_ttl)
        )
    })
}
