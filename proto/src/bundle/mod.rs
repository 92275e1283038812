//! The SPIFFE bundle (SPIFFE Trust Domain and Bundle spec, DESIGN §3
//! "Bundle endpoint"): a trust domain's X.509 and JWT authorities with the
//! publisher's sequence number and refresh hint, and its JWK Set codec
//! ([`encode`], [`decode`]). Decoding is bounded because bundles come from
//! other trust domains; only document-level faults refuse a document, and a
//! key the spec says to ignore, or one that fails validation, is left out of
//! the bundle and reported ([`Decoded::skipped`]). The PEM and DER
//! certificate-list codecs for bundle files are in [`crate::pem`].

use crate::spiffe_id::TrustDomain;

mod jwks;
mod key_params;
mod skipped;

pub use jwks::{decode, encode};
pub use skipped::{Decoded, KeyRule, Skipped};

/// Largest bundle document [`decode`] reads, in bytes.
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;
/// Most keys a bundle document may hold.
pub const MAX_BUNDLE_KEYS: usize = 1024;

/// A trust domain's bundle: its X.509 authorities (DER CA certificates) and
/// JWT authorities, with the publisher's sequence number and refresh hint.
///
/// A bundle may be empty (no authority of either kind): the trust domain
/// published no keys (it revoked them) or none Sigil can use (every key was
/// skipped, see [`Decoded::skipped`]). An empty bundle is valid, not an
/// error, and it means that every SVID of that trust domain MUST be treated
/// as invalid (Trust Domain and Bundle §4.1.3): callers replace the roots
/// they hold with it rather than keep older ones. An empty
/// `x509_authorities` alone means the trust domain has no X.509-SVID
/// authority (X509-SVID §6.2), and likewise for `jwt_authorities`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeBundle {
    pub trust_domain: TrustDomain,
    /// DER CA certificates.
    pub x509_authorities: Vec<Vec<u8>>,
    pub jwt_authorities: Vec<JwtKey>,
    pub sequence: Option<u64>,
    /// Seconds.
    pub refresh_hint: Option<u64>,
}

impl SpiffeBundle {
    /// True when the bundle holds no authority at all: every SVID of its
    /// trust domain is then invalid (Trust Domain and Bundle §4.1.3).
    pub fn is_empty(&self) -> bool {
        self.x509_authorities.is_empty() && self.jwt_authorities.is_empty()
    }
}

/// A JWT-SVID signing key as published in a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtKey {
    pub kid: String,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
}

/// Why a bundle document could not be encoded or decoded (certificate
/// lists fail with [`crate::pem::PemError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("bundle document is {len} bytes, more than the limit of {MAX_BUNDLE_BYTES}")]
    TooLarge { len: usize },
    #[error("bundle document is not a valid JWK Set: {reason}")]
    Json { reason: String },
    #[error("bundle document has no \"keys\" member (required by the SPIFFE bundle format)")]
    MissingKeys,
    #[error("bundle document has {count} keys, more than the limit of {MAX_BUNDLE_KEYS}")]
    TooManyKeys { count: usize },
    #[error("X.509 authority {index} cannot be encoded: {rule}")]
    EncodeX509Authority { index: usize, rule: KeyRule },
    #[error("JWT authority {index} cannot be encoded: {rule}")]
    EncodeJwtAuthority { index: usize, rule: KeyRule },
}

#[cfg(test)]
mod tests;
