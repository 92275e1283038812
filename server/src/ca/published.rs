//! What the trust bundle holds for the CA journal: which X.509 authorities
//! (self-signed CAs, or the upstream's anchors), which key ids are tainted,
//! and whether a signer is already published (Trust Domain and Bundle §4.1:
//! a new key is published before it is used).

use super::X509Ca;
use crate::store::{BundleRecord, CaSlot};

/// The subjectKeyIdentifier of a slot's CA certificate.
pub(crate) fn slot_ski(slot: &CaSlot) -> Option<Vec<u8>> {
    let der = slot.cert_chain.first()?;
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

/// Whether `signer` may sign under `bundle`: a self-signed CA must be one of
/// the bundle's authorities; under an upstream CA the bundle holds the
/// upstream's anchors, which rotation does not change.
pub(crate) fn is_published(bundle: &BundleRecord, upstream: bool, signer: &X509Ca) -> bool {
    upstream
        || signer
            .chain()
            .first()
            .is_some_and(|c| bundle.x509_authorities.contains(c))
}
