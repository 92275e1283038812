//! The SPIFFE bundle as a JWK Set (SPIFFE Trust Domain and Bundle spec §4,
//! DESIGN §3 "Bundle endpoint"): `x509-svid` keys carry exactly one DER CA
//! certificate in `x5c` and no `kid`, `jwt-svid` keys carry a `kid`, and the
//! set has `spiffe_sequence` and `spiffe_refresh_hint`. Decoding is bounded
//! because bundles come from other trust domains. Only document-level faults
//! refuse a document; a key the spec says to ignore, or one that fails
//! validation, is left out of the bundle and reported (see [`decode`]). Also
//! here: the PEM and DER certificate-list codecs used for bundle files.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::spiffe_id::TrustDomain;

/// Largest bundle document [`decode`] reads, in bytes.
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;
/// Most keys a bundle document may hold.
pub const MAX_BUNDLE_KEYS: usize = 1024;
/// Smallest and largest RSA modulus accepted, in bits (what ring verifies).
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

const USE_X509: &str = "x509-svid";
const USE_JWT: &str = "jwt-svid";

/// A trust domain's bundle: its X.509 authorities (DER CA certificates) and
/// JWT authorities, with the publisher's sequence number and refresh hint.
///
/// A bundle may be empty (no authority of either kind): the trust domain
/// published no keys (it revoked them) or none Sigil can use (every key was
/// skipped, see [`Decoded::skipped`]). An empty bundle is valid, not an
/// error, and it means that every SVID of that trust domain MUST be treated
/// as invalid (Trust Domain and Bundle §4.1.3): callers replace the roots
/// they hold with it rather than keep older ones. An empty
/// `x509_authorities` alone means the trust domain has no X.509-SVID
/// authority (X509-SVID §6.2), and likewise for `jwt_authorities`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeBundle {
    pub trust_domain: TrustDomain,
    /// DER CA certificates.
    pub x509_authorities: Vec<Vec<u8>>,
    pub jwt_authorities: Vec<JwtKey>,
    pub sequence: Option<u64>,
    /// Seconds.
    pub refresh_hint: Option<u64>,
}

impl SpiffeBundle {
    /// True when the bundle holds no authority at all: every SVID of its
    /// trust domain is then invalid (Trust Domain and Bundle §4.1.3).
    pub fn is_empty(&self) -> bool {
        self.x509_authorities.is_empty() && self.jwt_authorities.is_empty()
    }
}

/// A JWT-SVID signing key as published in a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtKey {
    pub kid: String,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
}

/// Why one JWK was skipped by [`decode`] (or one authority refused by
/// [`encode`]). [`KeyRule::clause`] names the spec clause it falls under.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRule {
    #[error("a JWK must be a JSON object")]
    NotAnObject,
    #[error("the JWK has no \"use\" member")]
    MissingUse,
    #[error("\"use\" {value} is not a known use (\"x509-svid\" or \"jwt-svid\")")]
    UnknownUse {
        /// The member's value as JSON text.
        value: String,
    },
    #[error("malformed JWK member: {reason}")]
    MalformedMember { reason: String },
    #[error("required member {member:?} is missing or empty")]
    MissingMember { member: &'static str },
    #[error("an x509-svid key has no certificate: \"x5c\" is missing or empty")]
    X5cMissing,
    #[error("\"x5c\" holds {ignored} value(s) after the first; only the first is used")]
    X5cExtra { ignored: usize },
    #[error("member {member:?} is not valid {encoding}: {reason}")]
    BadBase64 {
        member: &'static str,
        encoding: &'static str,
        reason: String,
    },
    #[error("the x5c entry is not a DER X.509 certificate: {reason}")]
    BadCertificate { reason: String },
    #[error("the JWK key parameters do not match the public key of the certificate in \"x5c\"")]
    KeyMismatch,
    #[error("jwt-svid key has a \"kid\" already used by another jwt-svid key: {kid:?}")]
    DuplicateKid { kid: String },
    #[error("EC curve {crv:?} is not supported (P-256 or P-384)")]
    UnsupportedCurve { crv: String },
    #[error("key type {kty:?} is not a known key type (EC or RSA)")]
    UnknownKeyType { kty: String },
    #[error("public key algorithm {oid} is not supported (EC P-256, EC P-384 or RSA)")]
    UnsupportedAlgorithm { oid: String },
    #[error("EC {member:?} must be {expected} bytes for {crv}, found {found}")]
    CoordinateLength {
        member: &'static str,
        crv: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("EC public key must be an uncompressed point (0x04 || x || y) of {expected} bytes")]
    NotUncompressedPoint { expected: usize },
    #[error("RSA modulus is {bits} bits; it must be between 2048 and 8192 bits")]
    RsaModulusSize { bits: usize },
    #[error("RSA exponent must be a non-zero integer of at most 8 bytes")]
    RsaExponent,
    #[error("the SubjectPublicKeyInfo is malformed: {reason}")]
    BadSpki { reason: String },
}

impl KeyRule {
    /// The spec clause under which a key breaking this rule is ignored (or,
    /// for [`KeyRule::X5cExtra`], its extra certificates are).
    pub fn clause(&self) -> &'static str {
        match self {
            KeyRule::X5cMissing | KeyRule::X5cExtra { .. } => "X509-SVID §6.2",
            KeyRule::MissingUse | KeyRule::UnknownUse { .. } => "Trust Domain and Bundle §4.2.2",
            KeyRule::UnknownKeyType { .. } | KeyRule::MissingMember { member: "kty" } => {
                "Trust Domain and Bundle §4.2.1"
            }
            // Every other rule is a key failing validation: the bundle is
            // effectively without it.
            _ => "Trust Domain and Bundle §4.1.3",
        }
    }
}

/// What [`decode`] made of a bundle document: the usable bundle and a report
/// of every key (or part of a key) left out of it, in document order. The
/// decoder does no I/O; callers log `skipped`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// May be empty; see [`SpiffeBundle`] for what an empty bundle means.
    pub bundle: SpiffeBundle,
    pub skipped: Vec<Skipped>,
}

/// One key of a bundle document that [`decode`] left out, by its index in
/// `keys` and the rule it broke. For [`KeyRule::X5cExtra`] only the `x5c`
/// values after the first are left out: the key itself is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub index: usize,
    pub rule: KeyRule,
}

impl Skipped {
    /// The spec clause the key is ignored under.
    pub fn clause(&self) -> &'static str {
        self.rule.clause()
    }

    /// True when the whole key was left out of the bundle.
    pub fn key_dropped(&self) -> bool {
        !matches!(self.rule, KeyRule::X5cExtra { .. })
    }
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.key_dropped() {
            "skipped"
        } else {
            "kept with its first certificate"
        };
        write!(
            f,
            "bundle key {} {what} ({}): {}",
            self.index,
            self.clause(),
            self.rule
        )
    }
}

/// Why a bundle or certificate list could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("bundle document is {len} bytes, more than the limit of {MAX_BUNDLE_BYTES}")]
    TooLarge { len: usize },
    #[error("bundle document is not a valid JWK Set: {reason}")]
    Json { reason: String },
    #[error("bundle document has no \"keys\" member (required by the SPIFFE bundle format)")]
    MissingKeys,
    #[error("bundle document has {count} keys, more than the limit of {MAX_BUNDLE_KEYS}")]
    TooManyKeys { count: usize },
    #[error("X.509 authority {index} cannot be encoded: {rule}")]
    EncodeX509Authority { index: usize, rule: KeyRule },
    #[error("JWT authority {index} cannot be encoded: {rule}")]
    EncodeJwtAuthority { index: usize, rule: KeyRule },
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

/// Encodes `bundle` as the JWK Set served by the bundle endpoint.
pub fn encode(bundle: &SpiffeBundle) -> Result<String, JwksError> {
    let mut keys = Vec::with_capacity(bundle.x509_authorities.len() + bundle.jwt_authorities.len());
    for (index, der) in bundle.x509_authorities.iter().enumerate() {
        let err = |rule| JwksError::EncodeX509Authority { index, rule };
        let spki = cert_spki(der).map_err(err)?;
        let params = KeyParams::from_spki(&spki).map_err(err)?;
        keys.push(OutJwk::new(
            &params,
            USE_X509,
            None,
            Some(vec![STANDARD.encode(der)]),
        ));
    }
    let mut kids = HashSet::new();
    for (index, key) in bundle.jwt_authorities.iter().enumerate() {
        let err = |rule| JwksError::EncodeJwtAuthority { index, rule };
        if key.kid.is_empty() {
            return Err(err(KeyRule::MissingMember { member: "kid" }));
        }
        if !kids.insert(key.kid.as_str()) {
            return Err(err(KeyRule::DuplicateKid {
                kid: key.kid.clone(),
            }));
        }
        let params = KeyParams::from_spki(&key.spki_der).map_err(err)?;
        keys.push(OutJwk::new(&params, USE_JWT, Some(&key.kid), None));
    }
    let doc = OutJwks {
        keys,
        spiffe_sequence: bundle.sequence,
        spiffe_refresh_hint: bundle.refresh_hint,
    };
    serde_json::to_string(&doc).map_err(|e| JwksError::Json {
        reason: e.to_string(),
    })
}

/// Decodes a JWK Set published for `td`.
///
/// Refuses the whole document only for document-level faults: larger than
/// [`MAX_BUNDLE_BYTES`], not a JSON object, no `keys` array, or more than
/// [`MAX_BUNDLE_KEYS`] keys. Every key the spec says to ignore (missing or
/// unknown `use`, unknown `kty`, an `x509-svid` key with a missing or empty
/// `x5c`) and every key failing validation (bad encoding, a certificate that
/// does not parse or does not match the key parameters, unsupported
/// parameters, a `jwt-svid` key without `kid`, a `kid` already used, where
/// the first key keeps it) is left out and reported in [`Decoded::skipped`];
/// of an `x5c` with several values only the first is used (X509-SVID §6.2),
/// also reported. The remaining keys keep their document order. A document
/// whose keys are all skipped yields an empty bundle, which is valid.
pub fn decode(td: &TrustDomain, json: &[u8]) -> Result<Decoded, JwksError> {
    if json.len() > MAX_BUNDLE_BYTES {
        return Err(JwksError::TooLarge { len: json.len() });
    }
    let doc: InJwks = serde_json::from_slice(json).map_err(|e| JwksError::Json {
        reason: e.to_string(),
    })?;
    let keys = doc.keys.ok_or(JwksError::MissingKeys)?;
    if keys.len() > MAX_BUNDLE_KEYS {
        return Err(JwksError::TooManyKeys { count: keys.len() });
    }

    let mut bundle = SpiffeBundle {
        trust_domain: td.clone(),
        x509_authorities: Vec::new(),
        jwt_authorities: Vec::new(),
        sequence: doc.spiffe_sequence,
        refresh_hint: doc.spiffe_refresh_hint,
    };
    let mut skipped = Vec::new();
    let mut kids = HashSet::new();
    for (index, value) in keys.into_iter().enumerate() {
        let mut skip = |rule| skipped.push(Skipped { index, rule });
        match decode_key(value) {
            Ok(Key::X509 { der, ignored }) => {
                if ignored > 0 {
                    skip(KeyRule::X5cExtra { ignored });
                }
                bundle.x509_authorities.push(der);
            }
            Ok(Key::Jwt(key)) => {
                if kids.contains(&key.kid) {
                    skip(KeyRule::DuplicateKid { kid: key.kid });
                } else {
                    kids.insert(key.kid.clone());
                    bundle.jwt_authorities.push(key);
                }
            }
            Err(rule) => skip(rule),
        }
    }
    Ok(Decoded { bundle, skipped })
}

/// One usable key of a bundle document.
enum Key {
    /// An X.509 authority and how many `x5c` values after its first were
    /// ignored.
    X509 {
        der: Vec<u8>,
        ignored: usize,
    },
    Jwt(JwtKey),
}

/// Decodes one element of `keys`, or names the rule it breaks. The checks
/// run in the order the spec reads: `use`, then `kty`, then the `x5c` an
/// `x509-svid` key must carry, then the key itself.
fn decode_key(value: serde_json::Value) -> Result<Key, KeyRule> {
    let Some(obj) = value.as_object() else {
        return Err(KeyRule::NotAnObject);
    };
    let is_x509 = match obj.get("use") {
        None | Some(serde_json::Value::Null) => return Err(KeyRule::MissingUse),
        Some(serde_json::Value::String(u)) if u == USE_X509 => true,
        Some(serde_json::Value::String(u)) if u == USE_JWT => false,
        Some(other) => {
            return Err(KeyRule::UnknownUse {
                value: other.to_string(),
            });
        }
    };
    let jwk: InJwk = serde_json::from_value(value).map_err(|e| KeyRule::MalformedMember {
        reason: e.to_string(),
    })?;
    match jwk.kty.as_deref().unwrap_or_default() {
        "" => return Err(KeyRule::MissingMember { member: "kty" }),
        "EC" | "RSA" => {}
        other => {
            return Err(KeyRule::UnknownKeyType {
                kty: other.to_string(),
            });
        }
    }
    if is_x509 {
        let x5c = jwk.x5c.as_deref().unwrap_or_default();
        let Some((first, rest)) = x5c.split_first() else {
            return Err(KeyRule::X5cMissing);
        };
        // Values after the first are ignored unread, whatever their type.
        let Some(first) = first.as_str() else {
            return Err(KeyRule::MalformedMember {
                reason: "the first \"x5c\" value is not a string".to_string(),
            });
        };
        let params = KeyParams::from_jwk(&jwk)?;
        let der = x509_authority(first, &params)?;
        Ok(Key::X509 {
            der,
            ignored: rest.len(),
        })
    } else {
        let kid = jwk.kid.as_deref().unwrap_or_default();
        if kid.is_empty() {
            return Err(KeyRule::MissingMember { member: "kid" });
        }
        let params = KeyParams::from_jwk(&jwk)?;
        Ok(Key::Jwt(JwtKey {
            kid: kid.to_string(),
            spki_der: params.to_spki(),
        }))
    }
}

/// The certificate an `x509-svid` JWK carries first in `x5c`, checked
/// against its key parameters.
fn x509_authority(b64: &str, params: &KeyParams) -> Result<Vec<u8>, KeyRule> {
    let der = STANDARD.decode(b64).map_err(|e| KeyRule::BadBase64 {
        member: "x5c",
        encoding: "base64",
        reason: e.to_string(),
    })?;
    let spki = cert_spki(&der)?;
    if KeyParams::from_spki(&spki)? != *params {
        return Err(KeyRule::KeyMismatch);
    }
    Ok(der)
}

/// The DER SubjectPublicKeyInfo of a certificate that must parse in full.
fn cert_spki(der: &[u8]) -> Result<Vec<u8>, KeyRule> {
    let cert = parse_cert(der).map_err(|reason| KeyRule::BadCertificate { reason })?;
    Ok(cert.public_key().raw.to_vec())
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, String> {
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
pub fn from_pem(text: &[u8]) -> Result<Vec<Vec<u8>>, JwksError> {
    // The PEM reader skips blocks it does not want; refuse them instead, so
    // that a key or CSR given as a bundle is reported rather than ignored.
    for line in text.split(|b| *b == b'\n' || *b == b'\r') {
        let line = line.trim_ascii_end();
        if let Some(rest) = line.strip_prefix(b"-----BEGIN ") {
            let Some(label) = rest.strip_suffix(b"-----") else {
                return Err(JwksError::Pem {
                    reason: format!("malformed BEGIN line {:?}", String::from_utf8_lossy(line)),
                });
            };
            if label != b"CERTIFICATE" {
                return Err(JwksError::NotCertificateBlock {
                    label: String::from_utf8_lossy(label).into_owned(),
                });
            }
        }
    }
    let mut certs = Vec::new();
    for (index, item) in CertificateDer::pem_slice_iter(text).enumerate() {
        let der = item.map_err(|e| JwksError::Pem {
            reason: e.to_string(),
        })?;
        parse_cert(&der).map_err(|reason| JwksError::BadCertificate { index, reason })?;
        certs.push(der.to_vec());
    }
    if certs.is_empty() {
        return Err(JwksError::NoCertificate);
    }
    Ok(certs)
}

/// Reads a certificate list given either as PEM CERTIFICATE blocks or as
/// one or more concatenated DER certificates (the Workload API's bundle
/// format). Anything else is refused.
pub fn certs_from_pem_or_der(bytes: &[u8]) -> Result<Vec<Vec<u8>>, JwksError> {
    // Every DER certificate starts with a SEQUENCE tag.
    if bytes.first() == Some(&0x30) {
        let mut certs = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let after = match X509Certificate::from_der(rest) {
                Ok((after, _)) => after,
                Err(e) => {
                    return Err(JwksError::NotPemOrDer {
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
    Err(JwksError::NotPemOrDer {
        reason: "expected \"-----BEGIN CERTIFICATE-----\" or DER data (starting with 0x30)"
            .to_string(),
    })
}

/// The curves a bundle key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }

    /// Bytes per coordinate.
    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    /// DER content octets of the curve's OID.
    fn oid(self) -> &'static [u8] {
        match self {
            Curve::P256 => &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            Curve::P384 => &[0x2b, 0x81, 0x04, 0x00, 0x22],
        }
    }
}

/// DER content octets of id-ecPublicKey and rsaEncryption.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// A public key in the form both JWK and SPKI describe. RSA integers are
/// big-endian without leading zero bytes, so equal keys compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyParams {
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

impl KeyParams {
    fn from_spki(spki_der: &[u8]) -> Result<Self, KeyRule> {
        let bad = |reason: String| KeyRule::BadSpki { reason };
        let spki = match SubjectPublicKeyInfo::from_der(spki_der) {
            Ok(([], spki)) => spki,
            Ok((rest, _)) => return Err(bad(format!("{} trailing bytes", rest.len()))),
            Err(e) => return Err(bad(e.to_string())),
        };
        let alg = &spki.algorithm.algorithm;
        if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve_oid = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or_else(|| bad("EC key without a named curve".to_string()))?;
            let curve = if curve_oid == OID_EC_P256 {
                Curve::P256
            } else if curve_oid == OID_NIST_EC_P384 {
                Curve::P384
            } else {
                return Err(KeyRule::UnsupportedCurve {
                    crv: curve_oid.to_id_string(),
                });
            };
            let len = curve.coordinate_len();
            match &*spki.subject_public_key.data {
                [0x04, xy @ ..] if xy.len() == 2 * len => {
                    let (x, y) = xy.split_at(len);
                    Ok(KeyParams::Ec {
                        curve,
                        x: x.to_vec(),
                        y: y.to_vec(),
                    })
                }
                _ => Err(KeyRule::NotUncompressedPoint {
                    expected: 1 + 2 * len,
                }),
            }
        } else if *alg == OID_PKCS1_RSAENCRYPTION {
            match spki.parsed() {
                Ok(PublicKey::RSA(rsa)) => Self::rsa(rsa.modulus, rsa.exponent),
                Ok(_) => Err(bad("rsaEncryption key that is not an RSA key".to_string())),
                Err(e) => Err(bad(e.to_string())),
            }
        } else {
            Err(KeyRule::UnsupportedAlgorithm {
                oid: alg.to_id_string(),
            })
        }
    }

    /// Key parameters of a JWK whose `kty` is EC or RSA.
    fn from_jwk(jwk: &InJwk) -> Result<Self, KeyRule> {
        let kty = jwk.kty.as_deref().unwrap_or_default();
        match kty {
            "EC" => {
                let crv = required(&jwk.crv, "crv")?;
                let curve = match crv {
                    "P-256" => Curve::P256,
                    "P-384" => Curve::P384,
                    other => {
                        return Err(KeyRule::UnsupportedCurve {
                            crv: other.to_string(),
                        });
                    }
                };
                let coordinate = |member: &'static str, value: &Option<String>| {
                    let bytes = b64url(member, required(value, member)?)?;
                    if bytes.len() != curve.coordinate_len() {
                        return Err(KeyRule::CoordinateLength {
                            member,
                            crv: curve.name(),
                            expected: curve.coordinate_len(),
                            found: bytes.len(),
                        });
                    }
                    Ok(bytes)
                };
                Ok(KeyParams::Ec {
                    curve,
                    x: coordinate("x", &jwk.x)?,
                    y: coordinate("y", &jwk.y)?,
                })
            }
            "RSA" => {
                let n = b64url("n", required(&jwk.n, "n")?)?;
                let e = b64url("e", required(&jwk.e, "e")?)?;
                Self::rsa(&n, &e)
            }
            "" => Err(KeyRule::MissingMember { member: "kty" }),
            other => Err(KeyRule::UnknownKeyType {
                kty: other.to_string(),
            }),
        }
    }

    fn rsa(n: &[u8], e: &[u8]) -> Result<Self, KeyRule> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        let bits = match n.first() {
            Some(first) => n.len() * 8 - first.leading_zeros() as usize,
            None => 0,
        };
        if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
            return Err(KeyRule::RsaModulusSize { bits });
        }
        if e.is_empty() || e.len() > 8 {
            return Err(KeyRule::RsaExponent);
        }
        Ok(KeyParams::Rsa {
            n: n.to_vec(),
            e: e.to_vec(),
        })
    }

    /// The DER SubjectPublicKeyInfo for these parameters.
    fn to_spki(&self) -> Vec<u8> {
        let (alg_id, key_bits) = match self {
            KeyParams::Ec { curve, x, y } => {
                let alg_id = der_tlv(
                    0x30,
                    &[der_tlv(0x06, OID_EC_PUBLIC_KEY), der_tlv(0x06, curve.oid())].concat(),
                );
                (alg_id, [&[0x04][..], x, y].concat())
            }
            KeyParams::Rsa { n, e } => {
                let alg_id = der_tlv(
                    0x30,
                    &[der_tlv(0x06, OID_RSA_ENCRYPTION), der_tlv(0x05, &[])].concat(),
                );
                (alg_id, der_tlv(0x30, &[der_uint(n), der_uint(e)].concat()))
            }
        };
        // BIT STRING with zero unused bits.
        let bit_string = der_tlv(0x03, &[&[0x00][..], &key_bits].concat());
        der_tlv(0x30, &[alg_id, bit_string].concat())
    }
}

fn required<'a>(value: &'a Option<String>, member: &'static str) -> Result<&'a str, KeyRule> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(KeyRule::MissingMember { member }),
    }
}

fn b64url(member: &'static str, value: &str) -> Result<Vec<u8>, KeyRule> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|e| KeyRule::BadBase64 {
            member,
            encoding: "base64url without padding",
            reason: e.to_string(),
        })
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// A DER TLV with a definite length.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        // Short form: the length fits in seven bits.
        out.push(len as u8);
    } else {
        let len_bytes = len.to_be_bytes();
        let significant = strip_leading_zeros(&len_bytes);
        // Long form: at most size_of::<usize>() length octets.
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER for a non-negative big-endian magnitude.
fn der_uint(magnitude: &[u8]) -> Vec<u8> {
    let m = strip_leading_zeros(magnitude);
    let mut content = Vec::with_capacity(m.len() + 1);
    if m.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(m);
    der_tlv(0x02, &content)
}

#[derive(Deserialize)]
struct InJwks {
    keys: Option<Vec<serde_json::Value>>,
    spiffe_sequence: Option<u64>,
    spiffe_refresh_hint: Option<u64>,
}

#[derive(Deserialize)]
struct InJwk {
    kty: Option<String>,
    kid: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    /// Only the first value is read (X509-SVID §6.2).
    x5c: Option<Vec<serde_json::Value>>,
}

#[derive(Serialize)]
struct OutJwks {
    keys: Vec<OutJwk>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spiffe_sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spiffe_refresh_hint: Option<u64>,
}

#[derive(Serialize)]
struct OutJwk {
    kty: &'static str,
    #[serde(rename = "use")]
    use_: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x5c: Option<Vec<String>>,
}

impl OutJwk {
    fn new(
        params: &KeyParams,
        use_: &'static str,
        kid: Option<&str>,
        x5c: Option<Vec<String>>,
    ) -> Self {
        let mut jwk = OutJwk {
            kty: "EC",
            use_,
            kid: kid.map(str::to_string),
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
            x5c,
        };
        match params {
            KeyParams::Ec { curve, x, y } => {
                jwk.crv = Some(curve.name());
                jwk.x = Some(URL_SAFE_NO_PAD.encode(x));
                jwk.y = Some(URL_SAFE_NO_PAD.encode(y));
            }
            KeyParams::Rsa { n, e } => {
                jwk.kty = "RSA";
                jwk.n = Some(URL_SAFE_NO_PAD.encode(n));
                jwk.e = Some(URL_SAFE_NO_PAD.encode(e));
            }
        }
        jwk
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{KeyPair, PKCS_ECDSA_P384_SHA384, PublicKeyData};
    use serde_json::{Value, json};

    use super::*;
    use crate::svid_profile::test_pki::{TestCa, ca_params};

    fn td() -> TrustDomain {
        TrustDomain::parse("example.org").unwrap()
    }

    /// An RSA SPKI with a 2048-bit modulus: ring cannot generate RSA keys,
    /// and the codec only needs well-formed integers.
    fn rsa_spki() -> Vec<u8> {
        let mut n = vec![0u8; 256];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut n).unwrap();
        n[0] |= 0x80;
        KeyParams::Rsa {
            n,
            e: vec![1, 0, 1],
        }
        .to_spki()
    }

    fn p384_ca() -> Vec<u8> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        ca_params("example.org")
            .self_signed(&key)
            .unwrap()
            .der()
            .to_vec()
    }

    fn sample() -> SpiffeBundle {
        let ec_jwt = KeyPair::generate().unwrap();
        SpiffeBundle {
            trust_domain: td(),
            x509_authorities: vec![TestCa::new("example.org").der, p384_ca()],
            jwt_authorities: vec![
                JwtKey {
                    kid: "ec-key".into(),
                    spki_der: ec_jwt.subject_public_key_info(),
                },
                JwtKey {
                    kid: "rsa-key".into(),
                    spki_der: rsa_spki(),
                },
            ],
            sequence: Some(7),
            refresh_hint: Some(300),
        }
    }

    fn decode_value(v: &Value) -> Result<Decoded, JwksError> {
        decode(&td(), v.to_string().as_bytes())
    }

    fn encoded_keys(b: &SpiffeBundle) -> Vec<Value> {
        let v: Value = serde_json::from_str(&encode(b).unwrap()).unwrap();
        v["keys"].as_array().unwrap().clone()
    }

    /// Decodes `keys` in a document with the sample's sequence and refresh
    /// hint; the document itself must be accepted.
    fn decode_keys(keys: &[Value]) -> Decoded {
        decode_value(&json!({
            "keys": keys,
            "spiffe_sequence": 7,
            "spiffe_refresh_hint": 300
        }))
        .unwrap()
    }

    /// `b` without the authority its encoding puts at key `index`.
    fn without(b: &SpiffeBundle, index: usize) -> SpiffeBundle {
        let mut b = b.clone();
        let n = b.x509_authorities.len();
        if index < n {
            b.x509_authorities.remove(index);
        } else {
            b.jwt_authorities.remove(index - n);
        }
        b
    }

    /// Decodes `keys` (the encoding of `bundle`, with key `index` spoiled)
    /// and checks that exactly that key was skipped and every other key
    /// kept; returns the rule it was skipped for.
    fn skipped_rule(bundle: &SpiffeBundle, keys: &[Value], index: usize) -> KeyRule {
        let d = decode_keys(keys);
        assert_eq!(d.bundle, without(bundle, index), "{:?}", d.skipped);
        assert_eq!(d.skipped.len(), 1, "{:?}", d.skipped);
        assert_eq!(d.skipped[0].index, index);
        assert!(d.skipped[0].key_dropped());
        d.skipped[0].rule.clone()
    }

    #[test]
    fn round_trip() {
        let bundle = sample();
        let text = encode(&bundle).unwrap();
        let back = decode(&td(), text.as_bytes()).unwrap();
        assert_eq!(back.bundle, bundle);
        assert_eq!(back.skipped, vec![]);
    }

    #[test]
    fn encoded_shape_follows_the_spec() {
        let bundle = sample();
        let v: Value = serde_json::from_str(&encode(&bundle).unwrap()).unwrap();
        assert_eq!(v["spiffe_sequence"], json!(7));
        assert_eq!(v["spiffe_refresh_hint"], json!(300));
        let keys = v["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 4);

        let ca = &keys[0];
        assert_eq!(ca["use"], "x509-svid");
        assert_eq!(ca["kty"], "EC");
        assert_eq!(ca["crv"], "P-256");
        assert!(ca.get("kid").is_none(), "x509-svid keys carry no kid: {ca}");
        let x5c = ca["x5c"].as_array().unwrap();
        assert_eq!(x5c.len(), 1);
        assert_eq!(
            x5c[0].as_str().unwrap(),
            STANDARD.encode(&bundle.x509_authorities[0])
        );
        // x and y are the certificate key's coordinates, base64url unpadded.
        let cert = parse_cert(&bundle.x509_authorities[0]).unwrap();
        let point = cert.public_key().subject_public_key.data.to_vec();
        let x = URL_SAFE_NO_PAD.decode(ca["x"].as_str().unwrap()).unwrap();
        let y = URL_SAFE_NO_PAD.decode(ca["y"].as_str().unwrap()).unwrap();
        assert_eq!([&[4u8][..], &x, &y].concat(), point);
        assert!(!ca["x"].as_str().unwrap().contains(['=', '+', '/']));

        assert_eq!(keys[1]["crv"], "P-384");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(keys[1]["x"].as_str().unwrap())
                .unwrap()
                .len(),
            48
        );

        assert_eq!(keys[2]["use"], "jwt-svid");
        assert_eq!(keys[2]["kid"], "ec-key");
        assert!(keys[2].get("x5c").is_none());
        assert_eq!(keys[3]["kty"], "RSA");
        assert_eq!(keys[3]["e"], "AQAB");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(keys[3]["n"].as_str().unwrap())
                .unwrap()
                .len(),
            256
        );
    }

    #[test]
    fn optional_members_are_omitted() {
        let mut bundle = sample();
        bundle.sequence = None;
        bundle.refresh_hint = None;
        let v: Value = serde_json::from_str(&encode(&bundle).unwrap()).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.keys().collect::<Vec<_>>(), vec!["keys"]);
        let back = decode_value(&v).unwrap();
        assert_eq!(back.bundle, bundle);
        assert_eq!(back.skipped, vec![]);
    }

    #[test]
    fn spki_encoding_matches_real_keys() {
        for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &PKCS_ECDSA_P384_SHA384] {
            let key = KeyPair::generate_for(alg).unwrap();
            let spki = key.subject_public_key_info();
            let params = KeyParams::from_spki(&spki).unwrap();
            assert_eq!(params.to_spki(), spki);
        }
        let rsa = rsa_spki();
        let parsed = SubjectPublicKeyInfo::from_der(&rsa).unwrap().1;
        assert_eq!(parsed.algorithm.algorithm, OID_PKCS1_RSAENCRYPTION);
        assert_eq!(KeyParams::from_spki(&rsa).unwrap().to_spki(), rsa);
        // Long-form DER lengths.
        assert_eq!(der_tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(der_tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(der_uint(&[0x00, 0x80]), vec![0x02, 0x02, 0x00, 0x80]);
    }

    /// One bundle decoding vector: a document built from the sample's
    /// encoded keys, the sample authorities it must keep (by index, in
    /// order) and the keys it must report.
    struct Vector {
        /// Starts with the clause every reported key falls under.
        name: &'static str,
        keys: Vec<Value>,
        x509: Vec<usize>,
        jwt: Vec<usize>,
        skipped: Vec<Skipped>,
    }

    fn skip(index: usize, rule: KeyRule) -> Skipped {
        Skipped { index, rule }
    }

    #[test]
    fn bundle_decoding_vectors() {
        let bundle = sample();
        let keys = encoded_keys(&bundle);
        let ca = |i: usize| json!(STANDARD.encode(&bundle.x509_authorities[i]));
        let with = |i: usize, member: &str, value: Value| {
            let mut k = keys[i].clone();
            k[member] = value;
            k
        };
        let without_member = |i: usize, member: &str| {
            let mut k = keys[i].clone();
            k.as_object_mut().unwrap().remove(member);
            k
        };
        // A well-formed EC key of an unknown use.
        let sig_use = with(2, "use", json!("sig"));
        let okp = json!({
            "kty": "OKP", "crv": "Ed25519", "use": "jwt-svid", "kid": "okp", "x": "AA"
        });
        // The first CA's certificate with another P-256 key's parameters.
        let other = encoded_keys(&SpiffeBundle {
            x509_authorities: vec![TestCa::new("example.org").der],
            jwt_authorities: vec![],
            ..bundle.clone()
        });
        let mut mismatched = keys[0].clone();
        mismatched["x"] = other[0]["x"].clone();
        mismatched["y"] = other[0]["y"].clone();

        let vectors = vec![
            Vector {
                name: "X509-SVID §6.2: an x509-svid key without x5c is ignored",
                keys: vec![
                    without_member(0, "x5c"),
                    keys[1].clone(),
                    keys[2].clone(),
                    keys[3].clone(),
                ],
                x509: vec![1],
                jwt: vec![0, 1],
                skipped: vec![skip(0, KeyRule::X5cMissing)],
            },
            Vector {
                name: "X509-SVID §6.2: an x509-svid key with an empty x5c is ignored",
                keys: vec![
                    keys[0].clone(),
                    with(1, "x5c", json!([])),
                    keys[2].clone(),
                    keys[3].clone(),
                ],
                x509: vec![0],
                jwt: vec![0, 1],
                skipped: vec![skip(1, KeyRule::X5cMissing)],
            },
            Vector {
                name: "X509-SVID §6.2: x5c values after the first are ignored, the first is used",
                keys: vec![
                    with(0, "x5c", json!([ca(0), ca(1)])),
                    // Ignored values are not even read.
                    with(1, "x5c", json!([ca(1), "%%%", 42])),
                    keys[2].clone(),
                    keys[3].clone(),
                ],
                x509: vec![0, 1],
                jwt: vec![0, 1],
                skipped: vec![
                    skip(0, KeyRule::X5cExtra { ignored: 1 }),
                    skip(1, KeyRule::X5cExtra { ignored: 2 }),
                ],
            },
            Vector {
                name: "Trust Domain and Bundle §4.2.2: a key of unknown use is ignored",
                keys: vec![
                    keys[0].clone(),
                    sig_use.clone(),
                    // Use values are case sensitive.
                    with(1, "use", json!("X509-SVID")),
                    with(3, "use", json!(7)),
                    keys[1].clone(),
                    keys[2].clone(),
                    keys[3].clone(),
                ],
                x509: vec![0, 1],
                jwt: vec![0, 1],
                skipped: vec![
                    skip(
                        1,
                        KeyRule::UnknownUse {
                            value: "\"sig\"".into(),
                        },
                    ),
                    skip(
                        2,
                        KeyRule::UnknownUse {
                            value: "\"X509-SVID\"".into(),
                        },
                    ),
                    skip(3, KeyRule::UnknownUse { value: "7".into() }),
                ],
            },
            Vector {
                name: "Trust Domain and Bundle §4.2.2: a key without use is ignored",
                keys: vec![
                    keys[0].clone(),
                    keys[1].clone(),
                    without_member(2, "use"),
                    with(3, "use", Value::Null),
                ],
                x509: vec![0, 1],
                jwt: vec![],
                skipped: vec![skip(2, KeyRule::MissingUse), skip(3, KeyRule::MissingUse)],
            },
            Vector {
                name: "Trust Domain and Bundle §4.2.1: a key of unknown kty is ignored",
                keys: vec![
                    keys[0].clone(),
                    okp,
                    with(1, "kty", json!("oct")),
                    without_member(3, "kty"),
                    keys[1].clone(),
                    keys[2].clone(),
                    keys[3].clone(),
                ],
                x509: vec![0, 1],
                jwt: vec![0, 1],
                skipped: vec![
                    skip(1, KeyRule::UnknownKeyType { kty: "OKP".into() }),
                    skip(2, KeyRule::UnknownKeyType { kty: "oct".into() }),
                    skip(3, KeyRule::MissingMember { member: "kty" }),
                ],
            },
            Vector {
                name: "Trust Domain and Bundle §4.1.3: a bad key between two good ones is \
                       skipped, both good ones kept in order",
                keys: vec![keys[1].clone(), mismatched.clone(), keys[0].clone()],
                x509: vec![1, 0],
                jwt: vec![],
                skipped: vec![skip(1, KeyRule::KeyMismatch)],
            },
            Vector {
                name: "Trust Domain and Bundle §4.1.3: a jwt-svid key without kid is skipped",
                keys: vec![
                    without_member(2, "kid"),
                    with(3, "kid", json!("")),
                    keys[2].clone(),
                ],
                x509: vec![],
                jwt: vec![0],
                skipped: vec![
                    skip(0, KeyRule::MissingMember { member: "kid" }),
                    skip(1, KeyRule::MissingMember { member: "kid" }),
                ],
            },
            Vector {
                name: "Trust Domain and Bundle §4.1.3: a duplicate kid is skipped, the first \
                       key keeps it",
                keys: vec![
                    keys[2].clone(),
                    with(3, "kid", json!("ec-key")),
                    keys[3].clone(),
                ],
                x509: vec![],
                jwt: vec![0, 1],
                skipped: vec![skip(
                    1,
                    KeyRule::DuplicateKid {
                        kid: "ec-key".into(),
                    },
                )],
            },
            Vector {
                name: "Trust Domain and Bundle §4.1.3: a document whose keys all fail \
                       validation is an empty bundle",
                keys: vec![
                    mismatched,
                    json!("a string"),
                    with(3, "e", json!("AA")),
                    with(2, "crv", json!("P-521")),
                ],
                x509: vec![],
                jwt: vec![],
                skipped: vec![
                    skip(0, KeyRule::KeyMismatch),
                    skip(1, KeyRule::NotAnObject),
                    skip(2, KeyRule::RsaExponent),
                    skip(
                        3,
                        KeyRule::UnsupportedCurve {
                            crv: "P-521".into(),
                        },
                    ),
                ],
            },
            Vector {
                name: "Trust Domain and Bundle §4.1.3: an empty keys array is an empty bundle",
                keys: vec![],
                x509: vec![],
                jwt: vec![],
                skipped: vec![],
            },
            Vector {
                name: "Trust Domain and Bundle §4.2.2: a document whose only key has an \
                       unknown use is an empty bundle (§4.1.3)",
                keys: vec![sig_use],
                x509: vec![],
                jwt: vec![],
                skipped: vec![skip(
                    0,
                    KeyRule::UnknownUse {
                        value: "\"sig\"".into(),
                    },
                )],
            },
        ];
        for v in vectors {
            let d = decode_keys(&v.keys);
            let want = SpiffeBundle {
                x509_authorities: v
                    .x509
                    .iter()
                    .map(|&i| bundle.x509_authorities[i].clone())
                    .collect(),
                jwt_authorities: v
                    .jwt
                    .iter()
                    .map(|&i| bundle.jwt_authorities[i].clone())
                    .collect(),
                ..bundle.clone()
            };
            assert_eq!(d.bundle, want, "{}", v.name);
            assert_eq!(d.bundle.is_empty(), v.x509.is_empty() && v.jwt.is_empty());
            assert_eq!(d.skipped, v.skipped, "{}", v.name);
            for s in &d.skipped {
                assert!(
                    v.name.starts_with(s.clause()),
                    "{}: key {} falls under {}",
                    v.name,
                    s.index,
                    s.clause()
                );
            }
        }
    }

    #[test]
    fn skip_reports_name_the_key_the_clause_and_the_rule() {
        let cases = [
            (
                skip(0, KeyRule::X5cMissing),
                "bundle key 0 skipped (X509-SVID §6.2): an x509-svid key has no certificate: \
                 \"x5c\" is missing or empty",
            ),
            (
                skip(3, KeyRule::X5cExtra { ignored: 2 }),
                "bundle key 3 kept with its first certificate (X509-SVID §6.2): \"x5c\" holds \
                 2 value(s) after the first; only the first is used",
            ),
            (
                skip(1, KeyRule::MissingUse),
                "bundle key 1 skipped (Trust Domain and Bundle §4.2.2): the JWK has no \"use\" \
                 member",
            ),
            (
                skip(
                    2,
                    KeyRule::UnknownUse {
                        value: "\"sig\"".into(),
                    },
                ),
                "bundle key 2 skipped (Trust Domain and Bundle §4.2.2): \"use\" \"sig\" is not \
                 a known use (\"x509-svid\" or \"jwt-svid\")",
            ),
            (
                skip(4, KeyRule::UnknownKeyType { kty: "OKP".into() }),
                "bundle key 4 skipped (Trust Domain and Bundle §4.2.1): key type \"OKP\" is not \
                 a known key type (EC or RSA)",
            ),
            (
                skip(5, KeyRule::DuplicateKid { kid: "k".into() }),
                "bundle key 5 skipped (Trust Domain and Bundle §4.1.3): jwt-svid key has a \
                 \"kid\" already used by another jwt-svid key: \"k\"",
            ),
        ];
        for (s, text) in cases {
            assert_eq!(s.to_string(), text);
        }
        assert!(!skip(0, KeyRule::X5cExtra { ignored: 1 }).key_dropped());
        assert!(skip(0, KeyRule::KeyMismatch).key_dropped());
    }

    #[test]
    fn x5c_key_must_match_key_params() {
        let bundle = sample();
        let mut keys = encoded_keys(&bundle);
        // Key parameters of another P-256 key next to the first CA's cert.
        let other = encoded_keys(&SpiffeBundle {
            x509_authorities: vec![TestCa::new("example.org").der],
            jwt_authorities: vec![],
            ..bundle.clone()
        });
        keys[0]["x"] = other[0]["x"].clone();
        keys[0]["y"] = other[0]["y"].clone();
        assert_eq!(skipped_rule(&bundle, &keys, 0), KeyRule::KeyMismatch);
        // Claiming the P-384 CA is P-256.
        let mut keys = encoded_keys(&bundle);
        keys[1]["crv"] = json!("P-256");
        assert!(matches!(
            skipped_rule(&bundle, &keys, 1),
            KeyRule::CoordinateLength { member: "x", .. }
        ));
        // The certificate of the other x509-svid key.
        let mut keys = encoded_keys(&bundle);
        keys[0]["x5c"] = keys[1]["x5c"].clone();
        assert!(matches!(
            skipped_rule(&bundle, &keys, 0),
            KeyRule::KeyMismatch
        ));
    }

    #[test]
    fn jwt_keys_need_a_unique_kid() {
        let bundle = sample();
        let mut keys = encoded_keys(&bundle);
        keys[2].as_object_mut().unwrap().remove("kid");
        assert_eq!(
            skipped_rule(&bundle, &keys, 2),
            KeyRule::MissingMember { member: "kid" }
        );
        let mut keys = encoded_keys(&bundle);
        keys[3]["kid"] = json!("");
        assert_eq!(
            skipped_rule(&bundle, &keys, 3),
            KeyRule::MissingMember { member: "kid" }
        );
        let mut keys = encoded_keys(&bundle);
        keys[3]["kid"] = json!("ec-key");
        assert_eq!(
            skipped_rule(&bundle, &keys, 3),
            KeyRule::DuplicateKid {
                kid: "ec-key".into()
            }
        );
        // Only a kept key holds its kid: when the first key with a kid is
        // skipped, the next one with it is kept.
        let mut keys = encoded_keys(&bundle);
        keys[2]["crv"] = json!("P-521");
        keys[3]["kid"] = json!("ec-key");
        let d = decode_keys(&keys);
        assert_eq!(
            d.bundle.jwt_authorities,
            vec![JwtKey {
                kid: "ec-key".into(),
                spki_der: bundle.jwt_authorities[1].spki_der.clone(),
            }]
        );
        assert_eq!(
            d.skipped,
            vec![skip(
                2,
                KeyRule::UnsupportedCurve {
                    crv: "P-521".into()
                }
            )]
        );
        let mut dup = bundle.clone();
        dup.jwt_authorities[1].kid = "ec-key".into();
        assert!(matches!(
            encode(&dup),
            Err(JwksError::EncodeJwtAuthority {
                index: 1,
                rule: KeyRule::DuplicateKid { .. }
            })
        ));
    }

    #[test]
    fn bad_base64_is_skipped() {
        let bundle = sample();
        let mut keys = encoded_keys(&bundle);
        keys[2]["x"] = json!("not*base64");
        assert!(matches!(
            skipped_rule(&bundle, &keys, 2),
            KeyRule::BadBase64 { member: "x", .. }
        ));
        // Padded base64url is not the JWK encoding.
        let mut keys = encoded_keys(&bundle);
        keys[3]["e"] = json!("AQAB==");
        assert!(matches!(
            skipped_rule(&bundle, &keys, 3),
            KeyRule::BadBase64 { member: "e", .. }
        ));
        let mut keys = encoded_keys(&bundle);
        keys[0]["x5c"] = json!(["%%%"]);
        assert!(matches!(
            skipped_rule(&bundle, &keys, 0),
            KeyRule::BadBase64 { member: "x5c", .. }
        ));
        let mut keys = encoded_keys(&bundle);
        keys[0]["x5c"] = json!([STANDARD.encode(b"not a certificate")]);
        assert!(matches!(
            skipped_rule(&bundle, &keys, 0),
            KeyRule::BadCertificate { .. }
        ));
        // An empty first value is a value: not a certificate.
        let mut keys = encoded_keys(&bundle);
        keys[1]["x5c"] = json!([""]);
        assert!(matches!(
            skipped_rule(&bundle, &keys, 1),
            KeyRule::BadCertificate { .. }
        ));
    }

    #[test]
    fn bad_key_params_are_skipped() {
        let bundle = sample();
        let cases: Vec<(usize, &str, Value, KeyRule)> = vec![
            (
                2,
                "crv",
                json!("P-521"),
                KeyRule::UnsupportedCurve {
                    crv: "P-521".into(),
                },
            ),
            (
                2,
                "y",
                json!(URL_SAFE_NO_PAD.encode([1u8; 31])),
                KeyRule::CoordinateLength {
                    member: "y",
                    crv: "P-256",
                    expected: 32,
                    found: 31,
                },
            ),
            (
                3,
                "n",
                json!(URL_SAFE_NO_PAD.encode([0xffu8; 128])),
                KeyRule::RsaModulusSize { bits: 1024 },
            ),
            (3, "e", json!("AA"), KeyRule::RsaExponent),
            (
                2,
                "kty",
                json!(""),
                KeyRule::MissingMember { member: "kty" },
            ),
            (2, "x", Value::Null, KeyRule::MissingMember { member: "x" }),
            (
                1,
                "crv",
                Value::Null,
                KeyRule::MissingMember { member: "crv" },
            ),
        ];
        for (index, member, value, rule) in cases {
            let mut keys = encoded_keys(&bundle);
            keys[index][member] = value;
            assert_eq!(skipped_rule(&bundle, &keys, index), rule, "{member}");
        }
        for (index, member, value) in [
            (0, "x5c", json!("not an array")),
            (1, "x5c", json!([42, "ignored"])),
            (2, "kid", json!(42)),
            (3, "n", json!(["AQAB"])),
        ] {
            let mut keys = encoded_keys(&bundle);
            keys[index][member] = value;
            assert!(
                matches!(
                    skipped_rule(&bundle, &keys, index),
                    KeyRule::MalformedMember { .. }
                ),
                "{member}"
            );
        }
        let mut keys = encoded_keys(&bundle);
        keys.insert(1, json!("a string"));
        let d = decode_keys(&keys);
        assert_eq!(d.bundle, bundle);
        assert_eq!(d.skipped, vec![skip(1, KeyRule::NotAnObject)]);
    }

    #[test]
    fn unknown_members_are_ignored() {
        let bundle = sample();
        let mut keys = encoded_keys(&bundle);
        keys[0]["alg"] = json!("ES256");
        keys[2]["x5c"] = json!(["whatever"]);
        let doc = json!({
            "keys": keys,
            "spiffe_sequence": 7,
            "spiffe_refresh_hint": 300,
            "other": true
        });
        let back = decode_value(&doc).unwrap();
        assert_eq!(back.bundle, bundle);
        assert_eq!(back.skipped, vec![]);
    }

    #[test]
    fn document_level_errors() {
        assert!(matches!(
            decode(&td(), b"{not json"),
            Err(JwksError::Json { .. })
        ));
        assert!(matches!(decode(&td(), b""), Err(JwksError::Json { .. })));
        assert!(matches!(
            decode(&td(), b"[1,2]"),
            Err(JwksError::Json { .. })
        ));
        assert!(matches!(
            decode(&td(), br#"{"keys":{}}"#),
            Err(JwksError::Json { .. })
        ));
        assert!(matches!(
            decode(&td(), br#"{"keys":[],"spiffe_sequence":-1}"#),
            Err(JwksError::Json { .. })
        ));
        assert_eq!(
            decode(&td(), br#"{"spiffe_sequence":1}"#),
            Err(JwksError::MissingKeys)
        );
        assert_eq!(
            decode(&td(), br#"{"keys":null}"#),
            Err(JwksError::MissingKeys)
        );
        let empty = decode(&td(), br#"{"keys":[]}"#).unwrap();
        assert!(empty.bundle.is_empty());
        assert_eq!(empty.bundle.trust_domain, td());
        assert_eq!(empty.skipped, vec![]);

        let mut big = br#"{"keys":[],"pad":""#.to_vec();
        big.resize(MAX_BUNDLE_BYTES + 1, b'a');
        assert_eq!(
            decode(&td(), &big),
            Err(JwksError::TooLarge {
                len: MAX_BUNDLE_BYTES + 1
            })
        );
        // Over the key limit even when every key would be skipped.
        let many = json!({ "keys": vec![json!({}); MAX_BUNDLE_KEYS + 1] });
        assert_eq!(
            decode_value(&many),
            Err(JwksError::TooManyKeys {
                count: MAX_BUNDLE_KEYS + 1
            })
        );
        let at_limit = json!({ "keys": vec![json!({}); MAX_BUNDLE_KEYS] });
        let d = decode_value(&at_limit).unwrap();
        assert!(d.bundle.is_empty());
        assert_eq!(d.skipped.len(), MAX_BUNDLE_KEYS);
        assert_eq!(
            d.skipped[MAX_BUNDLE_KEYS - 1],
            skip(MAX_BUNDLE_KEYS - 1, KeyRule::MissingUse)
        );
        // Deep nesting hits the JSON parser's recursion limit, not the stack.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            decode(&td(), deep.as_bytes()),
            Err(JwksError::Json { .. })
        ));
        assert_eq!(
            JwksError::MissingKeys.to_string(),
            "bundle document has no \"keys\" member (required by the SPIFFE bundle format)"
        );
    }

    #[test]
    fn encode_refuses_unusable_authorities() {
        let mut bundle = sample();
        bundle.x509_authorities.push(b"garbage".to_vec());
        assert!(matches!(
            encode(&bundle),
            Err(JwksError::EncodeX509Authority {
                index: 2,
                rule: KeyRule::BadCertificate { .. }
            })
        ));
        let mut bundle = sample();
        bundle.jwt_authorities[0].kid.clear();
        assert!(matches!(
            encode(&bundle),
            Err(JwksError::EncodeJwtAuthority {
                index: 0,
                rule: KeyRule::MissingMember { member: "kid" }
            })
        ));
        let mut bundle = sample();
        bundle.jwt_authorities[1].spki_der = vec![0x30, 0x00];
        assert!(matches!(
            encode(&bundle),
            Err(JwksError::EncodeJwtAuthority {
                index: 1,
                rule: KeyRule::BadSpki { .. }
            })
        ));
    }

    #[test]
    fn pem_round_trip() {
        let certs = vec![TestCa::new("example.org").der, p384_ca()];
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
        assert_eq!(from_pem(b""), Err(JwksError::NoCertificate));
        assert_eq!(from_pem(b"just some text\n"), Err(JwksError::NoCertificate));
        let key = KeyPair::generate().unwrap().serialize_pem();
        let cert = to_pem(&[TestCa::new("example.org").der]);
        assert_eq!(
            from_pem(format!("{cert}{key}").as_bytes()),
            Err(JwksError::NotCertificateBlock {
                label: "PRIVATE KEY".into()
            })
        );
        assert_eq!(
            from_pem(b"-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n"),
            Err(JwksError::NotCertificateBlock {
                label: "FOO".into()
            })
        );
        assert!(matches!(
            from_pem(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
            Err(JwksError::Pem { .. })
        ));
        assert!(matches!(
            from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n"),
            Err(JwksError::Pem { .. })
        ));
        assert!(matches!(
            from_pem(b"-----BEGIN CERTIFICATE----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(JwksError::Pem { .. })
        ));
        let not_x509 = to_pem(&[b"hello world".to_vec()]);
        assert!(matches!(
            from_pem(not_x509.as_bytes()),
            Err(JwksError::BadCertificate { index: 0, .. })
        ));
    }

    #[test]
    fn pem_or_der() {
        let certs = vec![TestCa::new("example.org").der, p384_ca()];
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
            Err(JwksError::NotPemOrDer { .. })
        ));
        for garbage in [
            &b"hello"[..],
            b"",
            b"\x30\x03\x02\x01\x01",
            b"{\"keys\":[]}",
        ] {
            let err = certs_from_pem_or_der(garbage).unwrap_err();
            assert!(matches!(err, JwksError::NotPemOrDer { .. }), "{garbage:?}");
            assert!(err.to_string().starts_with("not a PEM or DER certificate"));
        }
    }
}
