//! A foreign trust domain's bundle as an operator gives it (`bundle set`,
//! `--trust-domain-bundle`, `trust_domain_bundle` in `[[federation]]`):
//! PEM CA certificates, or a SPIFFE bundle JWK Set. Anything else is
//! refused with a message naming what it is not.

use sigil_proto::TrustDomain;

use super::accept::check_authorities;
pub use super::relationship::BundleFileFormat;
use crate::store::{BundleRecord, JwtAuthority};

/// The bundle of `td` in `bytes`; at least one X.509 authority, none of
/// another trust domain.
pub fn parse(
    td: &TrustDomain,
    bytes: &[u8],
    format: BundleFileFormat,
) -> Result<BundleRecord, String> {
    let (x509, jwt) = match format {
        BundleFileFormat::Pem => {
            let certs = sigil_proto::pem::certs_from_pem_or_der(bytes)
                .map_err(|e| format!("not a bundle (no PEM CA certificates): {e}"))?;
            for (i, der) in certs.iter().enumerate() {
                x509_parser::parse_x509_certificate(der)
                    .map_err(|e| format!("certificate {i} does not parse: {e}"))?;
            }
            (certs, Vec::new())
        }
        BundleFileFormat::Spiffe => {
            let b = sigil_proto::bundle::decode(td, bytes)
                .map_err(|e| format!("not a bundle (no SPIFFE bundle JWK Set): {e}"))?
                .bundle;
            let jwt = b
                .jwt_authorities
                .into_iter()
                .map(|k| JwtAuthority {
                    kid: k.kid,
                    public_key: k.spki_der,
                    expires_at: 0,
                })
                .collect();
            (b.x509_authorities, jwt)
        }
    };
    if x509.is_empty() {
        return Err(format!(
            "holds no X.509 CA certificate of {td}: not a bundle"
        ));
    }
    check_authorities(td, &x509)?;
    Ok(BundleRecord {
        trust_domain: td.clone(),
        x509_authorities: x509,
        jwt_authorities: jwt,
        tainted_key_ids: Vec::new(),
        sequence: 0,
    })
}
