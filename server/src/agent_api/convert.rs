//! Domain types to the agent API's protobuf messages (and CSR parsing).

use rcgen::{CertificateSigningRequestParams, PublicKey};
use rustls_pki_types::CertificateSigningRequestDer;
use sigil_proto::agent_api as pb;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;

use crate::entry::Entry;
use crate::store::BundleRecord;

/// Largest CSR accepted, in bytes.
pub const MAX_CSR_BYTES: usize = 8 * 1024;

pub fn entry_to_pb(e: &Entry) -> pb::Entry {
    pb::Entry {
        id: e.id.clone(),
        spiffe_id: e.spec.spiffe_id.to_string(),
        parent_id: e.spec.parent_id.to_string(),
        selectors: e
            .spec
            .selectors
            .iter()
            .map(|s| pb::Selector {
                r#type: s.ty().to_string(),
                value: s.value().to_string(),
            })
            .collect(),
        x509_svid_ttl_seconds: i64::try_from(e.spec.x509_svid_ttl).unwrap_or(i64::MAX),
        jwt_svid_ttl_seconds: i64::try_from(e.spec.jwt_svid_ttl).unwrap_or(i64::MAX),
        dns_names: e.spec.dns_names.clone(),
        federates_with: e
            .spec
            .federates_with
            .iter()
            .map(ToString::to_string)
            .collect(),
        hint: e.spec.hint.clone(),
        admin: e.spec.admin,
        downstream: e.spec.downstream,
        expires_at: e.spec.expires_at.unwrap_or(0),
        revision: e.revision,
        // Admin API only: 0 is not encoded, so the agent API's wire is
        // what it was before the shared `sigil.types.v1.Entry`.
        created_at: 0,
    }
}

pub fn bundle_to_pb(b: &BundleRecord, refresh_hint_secs: i64) -> pb::Bundle {
    pb::Bundle {
        trust_domain: b.trust_domain.to_string(),
        x509_authorities: b.x509_authorities.clone(),
        sequence: b.sequence,
        refresh_hint_seconds: refresh_hint_secs,
        tainted_key_ids: b.tainted_key_ids.clone(),
    }
}

/// Parses a PKCS#10 CSR, checks its signature (proof of possession) and its
/// key type (EC P-256, P-384 or Ed25519), and returns its public key. Names
/// and extensions in the CSR are never used.
pub fn csr_public_key(der: &[u8]) -> Result<PublicKey, String> {
    if der.is_empty() {
        return Err("CSR is empty".into());
    }
    if der.len() > MAX_CSR_BYTES {
        return Err(format!(
            "CSR is {} bytes, more than the limit of {MAX_CSR_BYTES}",
            der.len()
        ));
    }
    // Name an unsupported key type before the signature check, which cannot
    // verify such keys and would only say "invalid signature".
    if let Ok((_, req)) = X509CertificationRequest::from_der(der) {
        let alg = &req.certification_request_info.subject_pki.algorithm;
        let curve = alg.parameters.as_ref().and_then(|p| p.as_oid().ok());
        let supported = (alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
            && curve
                .as_ref()
                .is_some_and(|c| *c == OID_EC_P256 || *c == OID_NIST_EC_P384))
            || alg.algorithm == OID_SIG_ED25519;
        if !supported {
            let found = match curve {
                Some(c) => format!("{} with parameters {c}", alg.algorithm),
                None => alg.algorithm.to_string(),
            };
            return Err(format!(
                "CSR key must be EC P-256, EC P-384 or Ed25519 (found key algorithm {found})"
            ));
        }
    }
    let params =
        CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
            .map_err(|e| format!("invalid CSR: {e}"))?;
    let alg = params.public_key.algorithm();
    if alg != &rcgen::PKCS_ECDSA_P256_SHA256
        && alg != &rcgen::PKCS_ECDSA_P384_SHA384
        && alg != &rcgen::PKCS_ED25519
    {
        return Err("CSR key must be EC P-256, EC P-384 or Ed25519".into());
    }
    Ok(params.public_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_checks() {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let pk = csr_public_key(csr.der()).unwrap();
        assert_eq!(rcgen::PublicKeyData::der_bytes(&pk), key.public_key_raw());
        assert!(csr_public_key(b"").unwrap_err().contains("empty"));
        assert!(
            csr_public_key(b"garbage")
                .unwrap_err()
                .contains("invalid CSR")
        );
        let mut bad = csr.der().to_vec();
        let n = bad.len();
        bad[n - 3] ^= 0x55; // corrupt the signature
        assert!(csr_public_key(&bad).is_err());
        assert!(
            csr_public_key(&vec![0u8; MAX_CSR_BYTES + 1])
                .unwrap_err()
                .contains("limit")
        );
    }
}
