//! The X.509-SVID profile: the rules a leaf SVID and a CA signing
//! certificate must follow (SPIFFE X.509-SVID specification, DESIGN §5).
//! Every crate checks certificates it issues or receives with these
//! functions, and tests assert against the named rule that was broken.
//! Only the profile is checked here: signatures, chains and validity at a
//! given time belong to the TLS verifiers (`tls`).

use std::collections::HashSet;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension, X509Extension};
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_BASIC_CONSTRAINTS,
    OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE, OID_X509_EXT_NAME_CONSTRAINTS,
    OID_X509_EXT_SUBJECT_ALT_NAME, OID_X509_EXT_SUBJECT_KEY_IDENTIFIER, Oid,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Version;

use crate::spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};

/// The `role` of [`ProfileError`]s about leaf certificates.
pub const ROLE_LEAF: &str = "X.509-SVID leaf";
/// The `role` of [`ProfileError`]s about CA signing certificates.
pub const ROLE_SIGNING: &str = "signing certificate";

/// Why a certificate does not follow the X.509-SVID profile. Each message
/// names the certificate's role, the rule and what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("not a DER X.509 certificate: {reason}")]
    NotX509 { reason: String },
    #[error("{len} unexpected bytes follow the DER certificate")]
    TrailingData { len: usize },
    #[error("{role} must be an X.509 version 3 certificate, found version {version}")]
    NotV3 { role: &'static str, version: u32 },
    #[error("{role} carries extension {oid} more than once")]
    DuplicateExtension { role: &'static str, oid: String },
    #[error("{role} has a malformed {extension} extension: {reason}")]
    MalformedExtension {
        role: &'static str,
        extension: &'static str,
        reason: String,
    },
    #[error("{role} must have exactly one URI SAN, found {found}")]
    UriSanCount { role: &'static str, found: usize },
    #[error("{role} URI SAN {uri:?} is not a valid SPIFFE ID: {source}")]
    BadSpiffeId {
        role: &'static str,
        uri: String,
        source: SpiffeIdError,
    },
    #[error(
        "X.509-SVID leaf SPIFFE ID {id} has no path: a leaf must not carry the trust domain ID"
    )]
    LeafWithoutPath { id: String },
    #[error("{role} URI SAN {uri} must be the trust domain ID {expected} (no path)")]
    NotTrustDomainId {
        role: &'static str,
        uri: String,
        expected: String,
    },
    #[error("{role} must have a basicConstraints extension")]
    MissingBasicConstraints { role: &'static str },
    #[error("X.509-SVID leaf must have cA=false in basicConstraints, found cA=true")]
    LeafIsCa,
    #[error("signing certificate must have cA=true in basicConstraints, found cA=false")]
    SigningNotCa,
    #[error("{role} must have a keyUsage extension")]
    MissingKeyUsage { role: &'static str },
    #[error("{role} keyUsage extension must be marked critical")]
    KeyUsageNotCritical { role: &'static str },
    #[error("{role} keyUsage must include {usage}")]
    KeyUsageMissing {
        role: &'static str,
        usage: &'static str,
    },
    #[error("X.509-SVID leaf keyUsage must not include {usage}")]
    LeafKeyUsageForbidden { usage: &'static str },
    #[error("X.509-SVID leaf must have an extKeyUsage extension (serverAuth and clientAuth)")]
    MissingExtKeyUsage,
    #[error("X.509-SVID leaf extKeyUsage must include {purpose}")]
    ExtKeyUsageMissing { purpose: &'static str },
    #[error("{role} must have a subjectKeyIdentifier extension")]
    MissingSubjectKeyId { role: &'static str },
    #[error("X.509-SVID leaf must have an authorityKeyIdentifier extension")]
    MissingAuthorityKeyId,
    #[error("signing certificate must not carry a nameConstraints extension")]
    NameConstraints,
    #[error("{role} serial number must be positive, found negative serial 0x{serial_hex}")]
    NegativeSerial {
        role: &'static str,
        serial_hex: String,
    },
    #[error("{role} serial number must not be zero")]
    ZeroSerial { role: &'static str },
}

/// What a valid X.509-SVID leaf says, for callers that go on to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// The single URI SAN.
    pub spiffe_id: SpiffeId,
    /// DNS SANs, in certificate order.
    pub dns_names: Vec<String>,
    /// Lowercase hex of the serial, leading zero bytes removed.
    pub serial_hex: String,
    /// Start of validity, unix seconds.
    pub not_before: i64,
    /// End of validity, unix seconds.
    pub not_after: i64,
    /// The DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// The subjectKeyIdentifier.
    pub ski: Vec<u8>,
    /// The authorityKeyIdentifier's keyIdentifier, when the extension has one.
    pub aki: Option<Vec<u8>>,
}

/// What a valid CA signing certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaInfo {
    /// Lowercase hex of the serial, leading zero bytes removed.
    pub serial_hex: String,
    /// Start of validity, unix seconds.
    pub not_before: i64,
    /// End of validity, unix seconds.
    pub not_after: i64,
    /// The DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// The subjectKeyIdentifier.
    pub ski: Vec<u8>,
}

/// Checks that `der` is a well-formed X.509-SVID leaf: v3, exactly one URI
/// SAN holding a SPIFFE ID with a path (DNS SANs allowed), basicConstraints
/// with cA=false, a critical keyUsage with digitalSignature and without
/// keyCertSign/cRLSign, extKeyUsage with serverAuth and clientAuth, SKI and
/// AKI, and a positive serial.
pub fn check_leaf(der: &[u8]) -> Result<LeafInfo, ProfileError> {
    let cert = parse(der, ROLE_LEAF)?;
    let exts = Extensions::new(&cert, ROLE_LEAF)?;

    let spiffe_id = leaf_id(&exts)?;
    let dns_names = match exts.san()? {
        Some(names) => names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_string()),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };

    match exts.basic_constraints_ca()? {
        None => return Err(ProfileError::MissingBasicConstraints { role: ROLE_LEAF }),
        Some(true) => return Err(ProfileError::LeafIsCa),
        Some(false) => {}
    }

    let ku = exts.key_usage()?;
    if !ku.digital_signature() {
        return Err(ProfileError::KeyUsageMissing {
            role: ROLE_LEAF,
            usage: "digitalSignature",
        });
    }
    if ku.key_cert_sign() {
        return Err(ProfileError::LeafKeyUsageForbidden {
            usage: "keyCertSign",
        });
    }
    if ku.crl_sign() {
        return Err(ProfileError::LeafKeyUsageForbidden { usage: "cRLSign" });
    }

    let (server_auth, client_auth) = exts.ext_key_usage()?;
    if !server_auth {
        return Err(ProfileError::ExtKeyUsageMissing {
            purpose: "serverAuth",
        });
    }
    if !client_auth {
        return Err(ProfileError::ExtKeyUsageMissing {
            purpose: "clientAuth",
        });
    }

    let ski = exts.ski()?;
    let aki = match exts.get(&OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER) {
        None => return Err(ProfileError::MissingAuthorityKeyId),
        Some(ext) => match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            other => return Err(malformed(ROLE_LEAF, "authorityKeyIdentifier", other)),
        },
    };

    let serial_hex = serial_hex(&cert, ROLE_LEAF)?;
    Ok(LeafInfo {
        spiffe_id,
        dns_names,
        serial_hex,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        spki_der: cert.public_key().raw.to_vec(),
        ski,
        aki,
    })
}

/// Checks that `der` is a CA certificate allowed to sign SVIDs for `td`:
/// v3, cA=true, a critical keyUsage with keyCertSign, exactly one URI SAN
/// equal to `spiffe://<td>`, no nameConstraints, an SKI and a positive
/// serial.
pub fn check_signing_cert(der: &[u8], td: &TrustDomain) -> Result<CaInfo, ProfileError> {
    let cert = parse(der, ROLE_SIGNING)?;
    let exts = Extensions::new(&cert, ROLE_SIGNING)?;

    match exts.basic_constraints_ca()? {
        None => return Err(ProfileError::MissingBasicConstraints { role: ROLE_SIGNING }),
        Some(false) => return Err(ProfileError::SigningNotCa),
        Some(true) => {}
    }

    let ku = exts.key_usage()?;
    if !ku.key_cert_sign() {
        return Err(ProfileError::KeyUsageMissing {
            role: ROLE_SIGNING,
            usage: "keyCertSign",
        });
    }

    let uris = uri_sans(&exts)?;
    let [uri] = uris.as_slice() else {
        return Err(ProfileError::UriSanCount {
            role: ROLE_SIGNING,
            found: uris.len(),
        });
    };
    let expected = td.id();
    if *uri != expected.as_str() {
        return Err(ProfileError::NotTrustDomainId {
            role: ROLE_SIGNING,
            uri: (*uri).to_string(),
            expected: expected.to_string(),
        });
    }

    if exts.get(&OID_X509_EXT_NAME_CONSTRAINTS).is_some() {
        return Err(ProfileError::NameConstraints);
    }

    let ski = exts.ski()?;
    let serial_hex = serial_hex(&cert, ROLE_SIGNING)?;
    Ok(CaInfo {
        serial_hex,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        spki_der: cert.public_key().raw.to_vec(),
        ski,
    })
}

/// The checks a validator makes on a peer's leaf before trusting its
/// SPIFFE ID (SPIFFE X509-SVID §5.2, the same as go-spiffe's): not a CA
/// (basicConstraints cA=false or absent), keyUsage (when present) without
/// keyCertSign or cRLSign, and exactly one URI SAN holding a SPIFFE ID
/// with a path. Chain, signature and validity are the TLS verifier's.
/// Returns the SPIFFE ID.
pub fn check_peer_leaf(der: &[u8]) -> Result<SpiffeId, ProfileError> {
    let cert = parse(der, ROLE_LEAF)?;
    let exts = Extensions::new(&cert, ROLE_LEAF)?;
    if exts.basic_constraints_ca()? == Some(true) {
        return Err(ProfileError::LeafIsCa);
    }
    if let Some(ext) = exts.get(&OID_X509_EXT_KEY_USAGE) {
        let ParsedExtension::KeyUsage(ku) = ext.parsed_extension() else {
            return Err(malformed(ROLE_LEAF, "keyUsage", ext.parsed_extension()));
        };
        if ku.key_cert_sign() {
            return Err(ProfileError::LeafKeyUsageForbidden {
                usage: "keyCertSign",
            });
        }
        if ku.crl_sign() {
            return Err(ProfileError::LeafKeyUsageForbidden { usage: "cRLSign" });
        }
    }
    leaf_id(&exts)
}

/// The SPIFFE ID of an X.509-SVID leaf: its single URI SAN, which must be a
/// valid SPIFFE ID with a path. Nothing else about the certificate is
/// checked.
pub fn leaf_spiffe_id(der: &[u8]) -> Result<SpiffeId, ProfileError> {
    let cert = parse(der, ROLE_LEAF)?;
    let exts = Extensions::new(&cert, ROLE_LEAF)?;
    leaf_id(&exts)
}

fn leaf_id(exts: &Extensions<'_, '_>) -> Result<SpiffeId, ProfileError> {
    let uris = uri_sans(exts)?;
    let [uri] = uris.as_slice() else {
        return Err(ProfileError::UriSanCount {
            role: ROLE_LEAF,
            found: uris.len(),
        });
    };
    let id = SpiffeId::parse(uri).map_err(|source| ProfileError::BadSpiffeId {
        role: ROLE_LEAF,
        uri: (*uri).to_string(),
        source,
    })?;
    if id.is_trust_domain_id() {
        return Err(ProfileError::LeafWithoutPath { id: id.to_string() });
    }
    Ok(id)
}

fn parse<'a>(der: &'a [u8], role: &'static str) -> Result<X509Certificate<'a>, ProfileError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| ProfileError::NotX509 {
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(ProfileError::TrailingData { len: rest.len() });
    }
    if cert.version() != X509Version::V3 {
        return Err(ProfileError::NotV3 {
            role,
            version: cert.version().0 + 1,
        });
    }
    Ok(cert)
}

fn uri_sans<'a>(exts: &Extensions<'a, '_>) -> Result<Vec<&'a str>, ProfileError> {
    Ok(match exts.san()? {
        Some(names) => names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    })
}

fn malformed(
    role: &'static str,
    extension: &'static str,
    parsed: &ParsedExtension<'_>,
) -> ProfileError {
    let reason = match parsed.error() {
        Some(e) => e.to_string(),
        None => "unexpected content".to_string(),
    };
    ProfileError::MalformedExtension {
        role,
        extension,
        reason,
    }
}

/// Lowercase hex of the serial without leading zero bytes; refuses negative
/// and zero serials (RFC 5280 §4.1.2.2).
fn serial_hex(cert: &X509Certificate<'_>, role: &'static str) -> Result<String, ProfileError> {
    let raw = cert.tbs_certificate.raw_serial();
    if raw.first().is_some_and(|b| b & 0x80 != 0) {
        return Err(ProfileError::NegativeSerial {
            role,
            serial_hex: hex::encode(raw),
        });
    }
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let significant = &raw[start..];
    if significant.is_empty() {
        return Err(ProfileError::ZeroSerial { role });
    }
    Ok(hex::encode(significant))
}

/// A certificate's extensions, checked once for duplicates so that lookups
/// by OID are unambiguous.
struct Extensions<'a, 'c> {
    cert: &'c X509Certificate<'a>,
    role: &'static str,
}

impl<'a, 'c> Extensions<'a, 'c> {
    fn new(cert: &'c X509Certificate<'a>, role: &'static str) -> Result<Self, ProfileError> {
        let mut seen = HashSet::new();
        for ext in cert.extensions() {
            if !seen.insert(ext.oid.as_bytes()) {
                return Err(ProfileError::DuplicateExtension {
                    role,
                    oid: ext.oid.to_id_string(),
                });
            }
        }
        Ok(Self { cert, role })
    }

    fn get(&self, oid: &Oid<'_>) -> Option<&'c X509Extension<'a>> {
        self.cert.extensions().iter().find(|e| e.oid == *oid)
    }

    fn san(&self) -> Result<Option<&'c [GeneralName<'a>]>, ProfileError> {
        match self.get(&OID_X509_EXT_SUBJECT_ALT_NAME) {
            None => Ok(None),
            Some(ext) => match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => Ok(Some(&san.general_names)),
                other => Err(malformed(self.role, "subjectAltName", other)),
            },
        }
    }

    /// `None` when basicConstraints is absent, otherwise its cA flag.
    fn basic_constraints_ca(&self) -> Result<Option<bool>, ProfileError> {
        match self.get(&OID_X509_EXT_BASIC_CONSTRAINTS) {
            None => Ok(None),
            Some(ext) => match ext.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) => Ok(Some(bc.ca)),
                other => Err(malformed(self.role, "basicConstraints", other)),
            },
        }
    }

    /// The keyUsage extension, which must be present and critical.
    fn key_usage(&self) -> Result<&'c x509_parser::extensions::KeyUsage, ProfileError> {
        let role = self.role;
        let Some(ext) = self.get(&OID_X509_EXT_KEY_USAGE) else {
            return Err(ProfileError::MissingKeyUsage { role });
        };
        let ParsedExtension::KeyUsage(ku) = ext.parsed_extension() else {
            return Err(malformed(role, "keyUsage", ext.parsed_extension()));
        };
        if !ext.critical {
            return Err(ProfileError::KeyUsageNotCritical { role });
        }
        Ok(ku)
    }

    /// `(serverAuth, clientAuth)` from extKeyUsage, which must be present.
    fn ext_key_usage(&self) -> Result<(bool, bool), ProfileError> {
        let Some(ext) = self.get(&OID_X509_EXT_EXTENDED_KEY_USAGE) else {
            return Err(ProfileError::MissingExtKeyUsage);
        };
        match ext.parsed_extension() {
            ParsedExtension::ExtendedKeyUsage(eku) => Ok((eku.server_auth, eku.client_auth)),
            other => Err(malformed(self.role, "extKeyUsage", other)),
        }
    }

    fn ski(&self) -> Result<Vec<u8>, ProfileError> {
        let role = self.role;
        match self.get(&OID_X509_EXT_SUBJECT_KEY_IDENTIFIER) {
            None => Err(ProfileError::MissingSubjectKeyId { role }),
            Some(ext) => match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) if !k.0.is_empty() => Ok(k.0.to_vec()),
                ParsedExtension::SubjectKeyIdentifier(_) => Err(ProfileError::MalformedExtension {
                    role,
                    extension: "subjectKeyIdentifier",
                    reason: "the key identifier is empty".to_string(),
                }),
                other => Err(malformed(role, "subjectKeyIdentifier", other)),
            },
        }
    }
}

#[cfg(test)]
mod tests;
