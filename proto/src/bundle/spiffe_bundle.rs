//! The SPIFFE bundle itself: a trust domain's X.509 authorities and JWT
//! authorities, with the publisher's sequence number and refresh hint, in
//! the form every Sigil process holds it (no encoding).

use crate::spiffe_id::TrustDomain;

/// A trust domain's bundle: its X.509 authorities (DER CA certificates) and
/// JWT authorities, with the publisher's sequence number and refresh hint.
///
/// A bundle may be empty (no authority of either kind): the trust domain
/// published no keys (it revoked them) or none Sigil can use (every key was
/// skipped, see [`Decoded::skipped`](super::Decoded::skipped)). An empty
/// bundle is valid, not an error, and it means that every SVID of that trust
/// domain MUST be treated as invalid (Trust Domain and Bundle §4.1.3):
/// callers replace the roots they hold with it rather than keep older ones.
/// An empty
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

impl JwtKey {
    /// Whether a JWK Set can publish this key: a non-empty `kid` and a key
    /// of a supported type (EC P-256/P-384, RSA 2048–8192 bits), or the
    /// rule it breaks.
    pub fn check(&self) -> Result<(), super::KeyRule> {
        if self.kid.is_empty() {
            return Err(super::KeyRule::MissingMember { member: "kid" });
        }
        super::key_params::KeyParams::from_spki(&self.spki_der).map(drop)
    }
}
