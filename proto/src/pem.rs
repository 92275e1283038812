//! PEM and DER certificate lists, the forms bundle and SVID files take on
//! disk and the Workload API's concatenated-DER bundles: [`to_pem`],
//! [`from_pem`] and [`certs_from_pem_or_der`]. Every certificate read is
//! checked to be one whole DER X.509 certificate.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// Why a certificate list could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    #[error("no certificate found: expected \"-----BEGIN CERTIFICATE-----\" PEM blocks")]
    NoCertificate,
    #[error("PEM block {label:?} is not a certificate: only CERTIFICATE blocks are accepted")]
    NotCertificateBlock { label: String },
    #[error("malformed PEM: {reason}")]
    Pem { reason: String },
    #[error("certificate {index} is not a valid DER X.509 certificate: {reason}")]
    BadCertificate { index: usize, reason: String },
    #[error("not a PEM or DER certificate: {reason}")]
    NotPemOrDer { reason: String },
}

/// A certificate that must parse in full, with nothing after it.
pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(format!("{} unexpected bytes follow it", rest.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes `certs` as PEM CERTIFICATE blocks (64-column base64).
pub fn to_pem(certs: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for der in certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = STANDARD.encode(der);
        // Base64 output is ASCII, so splitting at any byte offset is safe.
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// Reads PEM CERTIFICATE blocks. Text outside blocks is allowed (RFC 7468);
/// any other kind of block, a malformed block, a block that is not an X.509
/// certificate, or no certificate at all is an error.
pub fn from_pem(text: &[u8]) -> Result<Vec<Vec<u8>>, PemError> {
    // The PEM reader skips blocks it does not want; refuse them instead, so
    // that a key or CSR given as a bundle is reported rather than ignored.
    for line in text.split(|b| *b == b'\n' || *b == b'\r') {
        let line = line.trim_ascii_end();
        if let Some(rest) = line.strip_prefix(b"-----BEGIN ") {
            let Some(label) = rest.strip_suffix(b"-----") else {
                return Err(PemError::Pem {
                    reason: format!("malformed BEGIN line {:?}", String::from_utf8_lossy(line)),
                });
            };
            if label != b"CERTIFICATE" {
                return Err(PemError::NotCertificateBlock {
                    label: String::from_utf8_lossy(label).into_owned(),
                });
            }
        }
    }
    let mut certs = Vec::new();
    for (index, item) in CertificateDer::pem_slice_iter(text).enumerate() {
        let der = item.map_err(|e| PemError::Pem {
            reason: e.to_string(),
        })?;
        parse_cert(&der).map_err(|reason| PemError::BadCertificate { index, reason })?;
        certs.push(der.to_vec());
    }
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(certs)
}

/// Reads a certificate list given either as PEM CERTIFICATE blocks or as
/// one or more concatenated DER certificates (the Workload API's bundle
/// format). Anything else is refused.
pub fn certs_from_pem_or_der(bytes: &[u8]) -> Result<Vec<Vec<u8>>, PemError> {
    // Every DER certificate starts with a SEQUENCE tag.
    if bytes.first() == Some(&0x30) {
        let mut certs = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let after = match X509Certificate::from_der(rest) {
                Ok((after, _)) => after,
                Err(e) => {
                    return Err(PemError::NotPemOrDer {
                        reason: format!("DER certificate {} does not parse: {e}", certs.len()),
                    });
                }
            };
            let (der, _) = rest.split_at(rest.len() - after.len());
            certs.push(der.to_vec());
            rest = after;
        }
        return Ok(certs);
    }
    if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return from_pem(bytes);
    }
    Err(PemError::NotPemOrDer {
        reason: "expected \"-----BEGIN CERTIFICATE-----\" or DER data (starting with 0x30)"
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::KeyPair;

    use crate::test_pki::{TestCa, p384_ca};

    #[test]
    fn pem_round_trip() {
        let certs = vec![TestCa::new("example.org").der, p384_ca("example.org")];
        let pem = to_pem(&certs);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(pem.matches("-----END CERTIFICATE-----").count(), 2);
        assert_eq!(from_pem(pem.as_bytes()).unwrap(), certs);
        // Explanatory text around blocks and CRLF line ends are fine.
        let decorated = format!("subject=CN=x\r\n{}", pem.replace('\n', "\r\n"));
        assert_eq!(from_pem(decorated.as_bytes()).unwrap(), certs);
        assert_eq!(certs_from_pem_or_der(pem.as_bytes()).unwrap(), certs);
    }

    #[test]
    fn pem_refuses_what_is_not_a_certificate() {
        assert_eq!(from_pem(b""), Err(PemError::NoCertificate));
        assert_eq!(from_pem(b"just some text\n"), Err(PemError::NoCertificate));
        let key = KeyPair::generate().unwrap().serialize_pem();
        let cert = to_pem(&[TestCa::new("example.org").der]);
        assert_eq!(
            from_pem(format!("{cert}{key}").as_bytes()),
            Err(PemError::NotCertificateBlock {
                label: "PRIVATE KEY".into()
            })
        );
        assert_eq!(
            from_pem(b"-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n"),
            Err(PemError::NotCertificateBlock {
                label: "FOO".into()
            })
        );
        assert!(matches!(
            from_pem(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
            Err(PemError::Pem { .. })
        ));
        assert!(matches!(
            from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n"),
            Err(PemError::Pem { .. })
        ));
        assert!(matches!(
            from_pem(b"-----BEGIN CERTIFICATE----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(PemError::Pem { .. })
        ));
        let not_x509 = to_pem(&[b"hello world".to_vec()]);
        assert!(matches!(
            from_pem(not_x509.as_bytes()),
            Err(PemError::BadCertificate { index: 0, .. })
        ));
    }

    #[test]
    fn pem_or_der() {
        let certs = vec![TestCa::new("example.org").der, p384_ca("example.org")];
        let der = certs.concat();
        assert_eq!(certs_from_pem_or_der(&der).unwrap(), certs);
        assert_eq!(
            certs_from_pem_or_der(&certs[1]).unwrap(),
            vec![certs[1].clone()]
        );

        let mut trailing = der.clone();
        trailing.extend_from_slice(b"xyz");
        assert!(matches!(
            certs_from_pem_or_der(&trailing),
            Err(PemError::NotPemOrDer { .. })
        ));
        for garbage in [
            &b"hello"[..],
            b"",
            b"\x30\x03\x02\x01\x01",
            b"{\"keys\":[]}",
        ] {
            let err = certs_from_pem_or_der(garbage).unwrap_err();
            assert!(matches!(err, PemError::NotPemOrDer { .. }), "{garbage:?}");
            assert!(err.to_string().starts_with("not a PEM or DER certificate"));
        }
    }
}
