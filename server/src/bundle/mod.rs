//! The trust bundle as the outside world sees it: the SPIFFE bundle JWK Set
//! served by the bundle endpoint ([`endpoint`]) and `bundle show --format
//! jwks`. Federation (fetching other trust domains' bundles) lands here too.

pub mod endpoint;

use std::time::Duration;

use sigil_proto::bundle::{self as jwks, JwtKey, SpiffeBundle};

use crate::store::BundleRecord;

/// Encodes a stored bundle as a SPIFFE bundle JWK Set.
pub fn bundle_jwks(b: &BundleRecord, refresh_hint: Duration) -> Result<String, String> {
    let sb = SpiffeBundle {
        trust_domain: b.trust_domain.clone(),
        x509_authorities: b.x509_authorities.clone(),
        jwt_authorities: b
            .jwt_authorities
            .iter()
            .map(|k| JwtKey {
                kid: k.kid.clone(),
                spki_der: k.public_key.clone(),
            })
            .collect(),
        sequence: Some(b.sequence),
        refresh_hint: Some(refresh_hint.as_secs()),
    };
    jwks::encode(&sb).map_err(|e| e.to_string())
}
