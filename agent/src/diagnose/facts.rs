//! What `diagnose` reads from one certificate: the names and key ids that
//! link a chain (subject, issuer, subject and authority key identifiers),
//! the URI SANs, cA, keyUsage and extKeyUsage, validity and serial. Pure
//! parsing; the verdicts are [`super::judge`]'s.

use serde::Serialize;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

/// The facts of one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertFacts {
    pub subject: String,
    pub issuer: String,
    /// Lowercase hex.
    pub serial: String,
    /// subjectKeyIdentifier, lowercase hex (`None` when absent).
    pub subject_key_id: Option<String>,
    /// authorityKeyIdentifier's keyIdentifier, lowercase hex.
    pub authority_key_id: Option<String>,
    pub uri_sans: Vec<String>,
    /// basicConstraints cA.
    pub is_ca: bool,
    /// keyUsage bits by name; `None` when there is no keyUsage extension.
    pub key_usage: Option<Vec<&'static str>>,
    /// extKeyUsage purposes by name; `None` when there is no extension.
    pub ext_key_usage: Option<Vec<&'static str>>,
    pub not_before: i64,
    pub not_after: i64,
    /// Subject equals issuer.
    pub self_issued: bool,
}

impl CertFacts {
    /// Parses a DER certificate; the error says why it is not one.
    pub fn parse(der: &[u8]) -> Result<CertFacts, String> {
        let (_, c) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        let mut f = CertFacts {
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
            serial: hex::encode(c.raw_serial()),
            subject_key_id: None,
            authority_key_id: None,
            uri_sans: Vec::new(),
            is_ca: false,
            key_usage: None,
            ext_key_usage: None,
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
            self_issued: c.subject() == c.issuer(),
        };
        for ext in c.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => {
                    f.subject_key_id = Some(hex::encode(k.0));
                }
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    f.authority_key_id = a.key_identifier.as_ref().map(|k| hex::encode(k.0));
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    f.uri_sans
                        .extend(san.general_names.iter().filter_map(|n| match n {
                            GeneralName::URI(u) => Some(u.to_string()),
                            _ => None,
                        }));
                }
                ParsedExtension::BasicConstraints(bc) => f.is_ca = bc.ca,
                ParsedExtension::KeyUsage(ku) => {
                    let bits = [
                        (ku.digital_signature(), "digitalSignature"),
                        (ku.non_repudiation(), "nonRepudiation"),
                        (ku.key_encipherment(), "keyEncipherment"),
                        (ku.data_encipherment(), "dataEncipherment"),
                        (ku.key_agreement(), "keyAgreement"),
                        (ku.key_cert_sign(), "keyCertSign"),
                        (ku.crl_sign(), "cRLSign"),
                    ];
                    f.key_usage = Some(bits.iter().filter(|b| b.0).map(|b| b.1).collect());
                }
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    let purposes = [
                        (eku.any, "anyExtendedKeyUsage"),
                        (eku.server_auth, "serverAuth"),
                        (eku.client_auth, "clientAuth"),
                        (eku.code_signing, "codeSigning"),
                        (eku.email_protection, "emailProtection"),
                        (eku.time_stamping, "timeStamping"),
                        (eku.ocsp_signing, "OCSPSigning"),
                    ];
                    f.ext_key_usage = Some(purposes.iter().filter(|p| p.0).map(|p| p.1).collect());
                }
                _ => {}
            }
        }
        Ok(f)
    }

    /// True when this certificate names `ca` as its issuer: by key id when
    /// both carry one, else by name.
    pub fn issued_by(&self, ca: &CertFacts) -> bool {
        match (&self.authority_key_id, &ca.subject_key_id) {
            (Some(aki), Some(ski)) => aki == ski && self.issuer == ca.subject,
            _ => self.issuer == ca.subject,
        }
    }

    /// The CA as the evidence names it: subject and key id.
    pub fn ca_label(&self) -> String {
        format!(
            "{} (key id {})",
            self.subject,
            self.subject_key_id.as_deref().unwrap_or("none")
        )
    }

    /// The issuer as the evidence names it: name and authority key id.
    pub fn issuer_label(&self) -> String {
        format!(
            "{} (key id {})",
            self.issuer,
            self.authority_key_id.as_deref().unwrap_or("none")
        )
    }
}
