//! Whether a fetched bundle document replaces the stored bundle of a
//! foreign trust domain: a pure function of the document, the trust
//! domain and the `spiffe_sequence` last accepted ([`judge`]). A refusal
//! keeps the last good bundle; its [`Refusal::reason`] labels the failure
//! metric.

use sigil_proto::TrustDomain;
use sigil_proto::bundle::{self, SpiffeBundle};

/// Why a fetched document was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a SPIFFE bundle JWK Set (why).
    Parse(String),
    /// A bundle of another trust domain (its X.509 authority names it).
    TrustDomain(String),
    /// `spiffe_sequence` older than the one last accepted, or equal to it
    /// with other keys.
    Sequence { fetched: u64, stored: u64 },
}

impl Refusal {
    /// The `reason` label of `sigil_server_federation_refresh_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Parse(_) => "parse",
            Refusal::TrustDomain(_) => "trust_domain",
            Refusal::Sequence { .. } => "sequence",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Parse(e) => write!(f, "the document is not a SPIFFE bundle: {e}"),
            Refusal::TrustDomain(e) => write!(f, "{e}"),
            Refusal::Sequence { fetched, stored } => write!(
                f,
                "spiffe_sequence {fetched} is older than the accepted {stored} (or equal with \
                 other keys): an older or replayed bundle"
            ),
        }
    }
}

/// The last bundle accepted from an endpoint, as [`judge`] compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Its `spiffe_sequence`.
    pub sequence: u64,
    /// Its content, as the document gave it.
    pub bundle: SpiffeBundle,
}

/// The bundle to apply, or why not. `last` is the last bundle accepted from
/// this endpoint with a `spiffe_sequence` (none: nothing to compare with,
/// as for a document without a sequence). A newer sequence is accepted; the
/// same sequence with the same content too (nothing changed: the poll
/// succeeded); an older one, or the same one with other content, is
/// refused. An empty `keys` set is a valid bundle (every key revoked) and
/// is accepted.
pub fn judge(
    td: &TrustDomain,
    last: Option<&Accepted>,
    body: &[u8],
) -> Result<SpiffeBundle, Refusal> {
    let decoded = bundle::decode(td, body).map_err(|e| Refusal::Parse(e.to_string()))?;
    let b = decoded.bundle;
    check_authorities(td, &b.x509_authorities).map_err(Refusal::TrustDomain)?;
    if let (Some(fetched), Some(last)) = (b.sequence, last) {
        let stored = last.sequence;
        let same = b.x509_authorities == last.bundle.x509_authorities
            && b.jwt_authorities == last.bundle.jwt_authorities;
        if fetched < stored || (fetched == stored && !same) {
            return Err(Refusal::Sequence { fetched, stored });
        }
    }
    Ok(b)
}

pub use sigil_proto::bundle::endpoint_url::check_authorities;

#[cfg(test)]
mod tests;
