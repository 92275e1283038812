//! The report of what [`decode`](super::decode) left out of a bundle
//! document: the rule each skipped key broke ([`KeyRule`]), the spec clause
//! that rule falls under, and the decoded bundle with that report
//! ([`Decoded`]).

use super::spiffe_bundle::SpiffeBundle;

/// Why one JWK was skipped by [`decode`] (or one authority refused by
/// [`encode`]). [`KeyRule::clause`] names the spec clause it falls under.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRule {
    #[error("a JWK must be a JSON object")]
    NotAnObject,
    #[error("the JWK has no \"use\" member")]
    MissingUse,
    #[error("\"use\" {value} is not a known use (\"x509-svid\" or \"jwt-svid\")")]
    UnknownUse {
        /// The member's value as JSON text.
        value: String,
    },
    #[error("malformed JWK member: {reason}")]
    MalformedMember { reason: String },
    #[error("required member {member:?} is missing or empty")]
    MissingMember { member: &'static str },
    #[error("an x509-svid key has no certificate: \"x5c\" is missing or empty")]
    X5cMissing,
    #[error("\"x5c\" holds {ignored} value(s) after the first; only the first is used")]
    X5cExtra { ignored: usize },
    #[error("member {member:?} is not valid {encoding}: {reason}")]
    BadBase64 {
        member: &'static str,
        encoding: &'static str,
        reason: String,
    },
    #[error("the x5c entry is not a DER X.509 certificate: {reason}")]
    BadCertificate { reason: String },
    #[error("the JWK key parameters do not match the public key of the certificate in \"x5c\"")]
    KeyMismatch,
    #[error("jwt-svid key has a \"kid\" already used by another jwt-svid key: {kid:?}")]
    DuplicateKid { kid: String },
    #[error("EC curve {crv:?} is not supported (P-256 or P-384)")]
    UnsupportedCurve { crv: String },
    #[error("key type {kty:?} is not a known key type (EC or RSA)")]
    UnknownKeyType { kty: String },
    #[error("public key algorithm {oid} is not supported (EC P-256, EC P-384 or RSA)")]
    UnsupportedAlgorithm { oid: String },
    #[error("EC {member:?} must be {expected} bytes for {crv}, found {found}")]
    CoordinateLength {
        member: &'static str,
        crv: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("EC public key must be an uncompressed point (0x04 || x || y) of {expected} bytes")]
    NotUncompressedPoint { expected: usize },
    #[error("RSA modulus is {bits} bits; it must be between 2048 and 8192 bits")]
    RsaModulusSize { bits: usize },
    #[error("RSA exponent must be a non-zero integer of at most 8 bytes")]
    RsaExponent,
    #[error("the SubjectPublicKeyInfo is malformed: {reason}")]
    BadSpki { reason: String },
}

impl KeyRule {
    /// The spec clause under which a key breaking this rule is ignored (or,
    /// for [`KeyRule::X5cExtra`], its extra certificates are).
    pub fn clause(&self) -> &'static str {
        match self {
            KeyRule::X5cMissing | KeyRule::X5cExtra { .. } => "X509-SVID §6.2",
            KeyRule::MissingUse | KeyRule::UnknownUse { .. } => "Trust Domain and Bundle §4.2.2",
            KeyRule::UnknownKeyType { .. } | KeyRule::MissingMember { member: "kty" } => {
                "Trust Domain and Bundle §4.2.1"
            }
            // Every other rule is a key failing validation: the bundle is
            // effectively without it.
            _ => "Trust Domain and Bundle §4.1.3",
        }
    }
}

/// What [`decode`] made of a bundle document: the usable bundle and a report
/// of every key (or part of a key) left out of it, in document order. The
/// decoder does no I/O; callers log `skipped`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// May be empty; see [`SpiffeBundle`] for what an empty bundle means.
    pub bundle: SpiffeBundle,
    pub skipped: Vec<Skipped>,
}

/// One key of a bundle document that [`decode`] left out, by its index in
/// `keys` and the rule it broke. For [`KeyRule::X5cExtra`] only the `x5c`
/// values after the first are left out: the key itself is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub index: usize,
    pub rule: KeyRule,
}

impl Skipped {
    /// The spec clause the key is ignored under.
    pub fn clause(&self) -> &'static str {
        self.rule.clause()
    }

    /// True when the whole key was left out of the bundle.
    pub fn key_dropped(&self) -> bool {
        !matches!(self.rule, KeyRule::X5cExtra { .. })
    }
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.key_dropped() {
            "skipped"
        } else {
            "kept with its first certificate"
        };
        write!(
            f,
            "bundle key {} {what} ({}): {}",
            self.index,
            self.clause(),
            self.rule
        )
    }
}
