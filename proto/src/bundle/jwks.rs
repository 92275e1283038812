//! The JWK Set form of a SPIFFE bundle (Trust Domain and Bundle §4):
//! `x509-svid` keys carry exactly one DER CA certificate in `x5c` and no
//! `kid`, `jwt-svid` keys carry a `kid`, and the set has `spiffe_sequence`
//! and `spiffe_refresh_hint`. The JSON shapes read and written live here;
//! the key material itself is [`KeyParams`].

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use super::key_params::{InJwk, KeyParams, cert_spki};
use super::skipped::{Decoded, KeyRule, Skipped};
use super::spiffe_bundle::{JwtKey, SpiffeBundle};
use crate::spiffe_id::TrustDomain;

/// Largest bundle document [`decode`] reads, in bytes.
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;
/// Most keys a bundle document may hold.
pub const MAX_BUNDLE_KEYS: usize = 1024;

/// Why a bundle document could not be encoded or decoded (certificate
/// lists fail with [`crate::pem::PemError`]).
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
}

const USE_X509: &str = "x509-svid";
const USE_JWT: &str = "jwt-svid";

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

/// Whether a JWK Set can publish `key`: a non-empty `kid` and a key of a
/// supported type (EC P-256/P-384, RSA 2048–8192 bits), or the rule it
/// breaks.
pub fn check_jwt_key(key: &JwtKey) -> Result<(), KeyRule> {
    if key.kid.is_empty() {
        return Err(KeyRule::MissingMember { member: "kid" });
    }
    KeyParams::from_spki(&key.spki_der).map(drop)
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

#[derive(Deserialize)]
struct InJwks {
    keys: Option<Vec<serde_json::Value>>,
    spiffe_sequence: Option<u64>,
    spiffe_refresh_hint: Option<u64>,
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
