//! The verdict on a presented certificate chain, as pure functions: the
//! facts of each certificate ([`super::facts`]), the bundle and allow-list
//! it is checked against, and the check time go in; one [`Diagnosis`] (or
//! none: the peer would be accepted) and the evidence come out. The chain
//! itself is checked by the same SPIFFE verifier every Sigil TLS endpoint
//! uses (`sigil_proto::tls::verify`); the rules before it name the cause
//! a plain "handshake failed" hides, in a fixed order: unparsable, CA as
//! leaf, URI SANs, validity (with the skew), trust domain, key usage, then
//! the chain (untrusted CA or a missing intermediate), then the allow-list.

use std::collections::BTreeSet;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, Error as TlsError};
use serde::Serialize;
pub use sigil_proto::tls::verdict::rfc3339;
use sigil_proto::tls::verdict::{Diagnosis, PeerVerdict, Verdict};
use sigil_proto::tls::{Authorizer, SpiffeClientVerifier, SpiffeServerVerifier, TrustRoots};
use sigil_proto::{SpiffeId, TrustDomain};

use super::facts::CertFacts;

/// What the peer's certificate is used as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A TLS client's certificate (needs clientAuth).
    Client,
    /// A TLS server's certificate (needs serverAuth).
    Server,
}

/// What a chain is checked against.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// DER CA certificates (the own bundle and any federated ones).
    pub roots: Vec<Vec<u8>>,
    /// The trust domains those roots are for (from their URI SANs, the
    /// Workload API, or `--trust-domain`); empty: not checked.
    pub domains: BTreeSet<TrustDomain>,
    /// Intermediates known to chain to the roots (this workload's own
    /// chain): an issuer found among them but not sent is a missing
    /// intermediate.
    pub known_intermediates: Vec<Vec<u8>>,
}

/// A verdict and its evidence.
#[derive(Debug, Clone)]
pub struct Finding {
    /// `None`: the chain would be accepted.
    pub diagnosis: Option<Diagnosis>,
    /// The leaf's SPIFFE ID, when it has exactly one valid one.
    pub spiffe_id: Option<SpiffeId>,
    /// The presented chain, leaf first (unparsable ones left out).
    pub chain: Vec<CertFacts>,
    /// The bundle's CAs.
    pub bundle: Vec<CertFacts>,
}

fn peer(v: PeerVerdict, detail: String) -> Option<Diagnosis> {
    Some(Diagnosis::new(Verdict::Peer(v), detail))
}

/// "1h 2m 3s" for a number of seconds.
pub fn span(secs: i64) -> String {
    let s = secs.unsigned_abs();
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

/// Judges `chain` (DER, leaf first) presented as `role`, against `trust`
/// and, when not empty, `allow`, at unix time `at`.
pub fn judge(chain: &[Vec<u8>], trust: &Trust, allow: &[SpiffeId], role: Role, at: i64) -> Finding {
    let facts: Vec<CertFacts> = chain
        .iter()
        .filter_map(|d| CertFacts::parse(d).ok())
        .collect();
    let bundle: Vec<CertFacts> = trust
        .roots
        .iter()
        .filter_map(|d| CertFacts::parse(d).ok())
        .collect();
    let mut finding = Finding {
        diagnosis: None,
        spiffe_id: None,
        chain: facts,
        bundle,
    };
    let Some(leaf_der) = chain.first() else {
        finding.diagnosis = peer(PeerVerdict::NotSvid, "no certificate was presented".into());
        return finding;
    };
    let leaf = match CertFacts::parse(leaf_der) {
        Ok(l) => l,
        Err(e) => {
            finding.diagnosis = peer(
                PeerVerdict::NotSvid,
                format!("the leaf is not an X.509 certificate: {e}"),
            );
            return finding;
        }
    };
    finding.diagnosis = leaf_rules(&leaf, trust, role, at)
        .or_else(|| chain_rules(chain, &leaf, &finding, trust, role, at))
        .or_else(|| allow_rule(&leaf, allow));
    finding.spiffe_id = single_id(&leaf).ok();
    finding
}

fn single_id(leaf: &CertFacts) -> Result<SpiffeId, String> {
    match leaf.uri_sans.as_slice() {
        [] => Err("the leaf has no URI SAN (no SPIFFE ID)".into()),
        [one] => match SpiffeId::parse(one) {
            Ok(id) if id.is_trust_domain_id() => Err(format!(
                "the leaf's URI SAN {one} is a trust domain ID, not a workload's SPIFFE ID"
            )),
            Ok(id) => Ok(id),
            Err(e) => Err(format!(
                "the leaf's URI SAN {one:?} is not a SPIFFE ID: {e}"
            )),
        },
        many => Err(format!(
            "the leaf has {} URI SANs ({}); an X.509-SVID has exactly one",
            many.len(),
            many.join(", ")
        )),
    }
}

/// The rules on the leaf alone, in order.
fn leaf_rules(leaf: &CertFacts, trust: &Trust, role: Role, at: i64) -> Option<Diagnosis> {
    if leaf.is_ca {
        return peer(
            PeerVerdict::CaAsLeaf,
            format!("the leaf {} is a CA certificate (cA=true)", leaf.subject),
        );
    }
    let id = match single_id(leaf) {
        Ok(id) => id,
        Err(e) => return peer(PeerVerdict::NotSvid, e),
    };
    if leaf.not_after < at {
        return peer(
            PeerVerdict::Expired,
            format!(
                "{id} (serial {}) expired at {}, {} before the check time {}",
                leaf.serial,
                rfc3339(leaf.not_after),
                span(at - leaf.not_after),
                rfc3339(at)
            ),
        );
    }
    if leaf.not_before > at {
        return peer(
            PeerVerdict::NotYetValid,
            format!(
                "{id} (serial {}) is valid from {}, {} after the check time {}: one of the \
                 clocks is off by at least that much",
                leaf.serial,
                rfc3339(leaf.not_before),
                span(leaf.not_before - at),
                rfc3339(at)
            ),
        );
    }
    if !trust.domains.is_empty() && !trust.domains.contains(&id.trust_domain()) {
        let tds: Vec<&str> = trust.domains.iter().map(TrustDomain::as_str).collect();
        return peer(
            PeerVerdict::WrongTrustDomain,
            format!(
                "{id} is in trust domain {}, but the bundle is for {}",
                id.trust_domain().as_str(),
                tds.join(", ")
            ),
        );
    }
    key_usage_rule(leaf, &id, role)
}

fn key_usage_rule(leaf: &CertFacts, id: &SpiffeId, role: Role) -> Option<Diagnosis> {
    if let Some(ku) = &leaf.key_usage {
        let bad: Vec<&str> = ku
            .iter()
            .copied()
            .filter(|u| matches!(*u, "keyCertSign" | "cRLSign"))
            .collect();
        if !ku.contains(&"digitalSignature") || !bad.is_empty() {
            return peer(
                PeerVerdict::WrongKeyUsage,
                format!(
                    "{id}'s keyUsage is [{}]: a leaf needs digitalSignature and must not have \
                     keyCertSign or cRLSign",
                    ku.join(", ")
                ),
            );
        }
    }
    let (need, what) = match role {
        Role::Client => ("clientAuth", "a TLS client"),
        Role::Server => ("serverAuth", "a TLS server"),
    };
    if let Some(eku) = &leaf.ext_key_usage
        && !eku.contains(&need)
        && !eku.contains(&"anyExtendedKeyUsage")
    {
        return peer(
            PeerVerdict::WrongKeyUsage,
            format!(
                "{id}'s extKeyUsage is [{}]: {need} is needed to act as {what}",
                eku.join(", ")
            ),
        );
    }
    None
}

/// The chain, checked by the SPIFFE verifier of every Sigil endpoint.
fn chain_rules(
    chain: &[Vec<u8>],
    leaf: &CertFacts,
    finding: &Finding,
    trust: &Trust,
    role: Role,
    at: i64,
) -> Option<Diagnosis> {
    let err = match verify(chain, trust, role, at) {
        Ok(()) => return None,
        Err(e) => e,
    };
    match err {
        VerifyError::Bundle(e) => peer(PeerVerdict::UntrustedCa, format!("no usable bundle: {e}")),
        VerifyError::Tls(TlsError::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => Some(unknown_issuer(leaf, finding, trust)),
        VerifyError::Tls(TlsError::InvalidCertificate(CertificateError::InvalidPurpose)) => peer(
            PeerVerdict::WrongKeyUsage,
            "a certificate of the chain lacks the extKeyUsage for this role".into(),
        ),
        VerifyError::Tls(TlsError::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => peer(
            PeerVerdict::Expired,
            format!("a CA of the chain has expired at {}", rfc3339(at)),
        ),
        VerifyError::Tls(TlsError::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        )) => peer(
            PeerVerdict::NotYetValid,
            format!("a CA of the chain is not valid yet at {}", rfc3339(at)),
        ),
        VerifyError::Tls(other) => peer(
            PeerVerdict::Invalid,
            format!("the SPIFFE verifier refuses the chain: {other}"),
        ),
    }
}

/// Untrusted CA or missing intermediate: which CA signed the topmost
/// presented certificate, and which CAs the bundle holds.
fn unknown_issuer(leaf: &CertFacts, finding: &Finding, trust: &Trust) -> Diagnosis {
    let presented = &finding.chain;
    let top = presented.last().unwrap_or(leaf);
    let bundle: Vec<String> = finding.bundle.iter().map(CertFacts::ca_label).collect();
    let bundle = bundle.join("; ");
    // A gap: a presented certificate whose issuer is not the next one,
    // while a later one is signed by a bundle CA.
    let gap = presented.windows(2).position(|w| !w[0].issued_by(&w[1]));
    let later_trusted = gap.is_some_and(|i| {
        presented[i + 1..]
            .iter()
            .any(|c| finding.bundle.iter().any(|ca| c.issued_by(ca)))
    });
    if let (Some(i), true) = (gap, later_trusted) {
        let c = &presented[i];
        return Diagnosis::new(
            Verdict::Peer(PeerVerdict::ChainIncomplete),
            format!(
                "certificate {} of the chain ({}) is issued by {}, which the peer did not send \
                 (the next one is {})",
                i + 1,
                c.subject,
                c.issuer_label(),
                presented[i + 1].subject
            ),
        );
    }
    let known = trust
        .known_intermediates
        .iter()
        .filter_map(|d| CertFacts::parse(d).ok())
        .find(|ca| top.issued_by(ca));
    if let Some(ca) = known {
        return Diagnosis::new(
            Verdict::Peer(PeerVerdict::ChainIncomplete),
            format!(
                "{} is issued by the intermediate {}, which chains to the bundle but was not \
                 sent",
                top.subject,
                ca.ca_label()
            ),
        );
    }
    let same_name = finding.bundle.iter().any(|ca| ca.subject == top.issuer);
    let why = if same_name {
        "a CA of that name is in the bundle, but with another key (re-keyed or impostor)"
    } else {
        "not in the bundle"
    };
    Diagnosis::new(
        Verdict::Peer(PeerVerdict::UntrustedCa),
        format!(
            "{} is signed by {}: {why}; the bundle holds {bundle}",
            top.subject,
            top.issuer_label()
        ),
    )
}

fn allow_rule(leaf: &CertFacts, allow: &[SpiffeId]) -> Option<Diagnosis> {
    let id = single_id(leaf).ok()?;
    if allow.is_empty() || allow.contains(&id) {
        return None;
    }
    let list: Vec<&str> = allow.iter().map(SpiffeId::as_str).collect();
    peer(
        PeerVerdict::NotAllowed,
        format!("{id} is not in the allow-list ({})", list.join(", ")),
    )
}

enum VerifyError {
    Bundle(String),
    Tls(TlsError),
}

fn verify(chain: &[Vec<u8>], trust: &Trust, role: Role, at: i64) -> Result<(), VerifyError> {
    let roots =
        TrustRoots::new(trust.roots.clone()).map_err(|e| VerifyError::Bundle(e.to_string()))?;
    let any: Authorizer = Arc::new(|_: &SpiffeId| true);
    let certs: Vec<CertificateDer<'static>> =
        chain.iter().cloned().map(CertificateDer::from).collect();
    let Some((leaf, intermediates)) = certs.split_first() else {
        return Ok(());
    };
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(at).unwrap_or(0),
    ));
    let r = match role {
        Role::Client => SpiffeClientVerifier::new(roots, any)
            .verify_client_cert(leaf, intermediates, now)
            .map(|_| ()),
        Role::Server => SpiffeServerVerifier::new(roots, any)
            .verify_server_cert(
                leaf,
                intermediates,
                &ServerName::from(std::net::IpAddr::from([127, 0, 0, 1])),
                &[],
                now,
            )
            .map(|_| ()),
    };
    r.map_err(VerifyError::Tls)
}
