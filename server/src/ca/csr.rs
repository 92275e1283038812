//! CSR parsing for every signing path: a PKCS#10 CSR is only a proof of
//! possession of a public key; its names and extensions are never used.

use rcgen::{CertificateSigningRequestParams, PublicKey};
use rustls_pki_types::CertificateSigningRequestDer;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;

/// Largest CSR accepted, in bytes.
pub const MAX_CSR_BYTES: usize = 8 * 1024;

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
