//! Public keys as both JWK members and DER SubjectPublicKeyInfo describe
//! them ([`KeyParams`]): the EC curves and RSA sizes a bundle key may use,
//! and the small DER writer that turns JWK members back into an SPKI.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use serde::Deserialize;

use super::skipped::KeyRule;
use crate::pem::parse_cert;

/// Smallest and largest RSA modulus accepted, in bits (what ring verifies).
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

/// The DER SubjectPublicKeyInfo of a certificate that must parse in full.
pub(super) fn cert_spki(der: &[u8]) -> Result<Vec<u8>, KeyRule> {
    let cert = parse_cert(der).map_err(|reason| KeyRule::BadCertificate { reason })?;
    Ok(cert.public_key().raw.to_vec())
}

/// The curves a bundle key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
}

impl Curve {
    pub(super) fn name(self) -> &'static str {
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
pub(crate) enum KeyParams {
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
    pub(crate) fn from_spki(spki_der: &[u8]) -> Result<Self, KeyRule> {
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
    pub(super) fn from_jwk(jwk: &InJwk) -> Result<Self, KeyRule> {
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
    pub(crate) fn to_spki(&self) -> Vec<u8> {
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
pub(crate) fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
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
pub(super) fn der_uint(magnitude: &[u8]) -> Vec<u8> {
    let m = strip_leading_zeros(magnitude);
    let mut content = Vec::with_capacity(m.len() + 1);
    if m.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(m);
    der_tlv(0x02, &content)
}

/// The members of one JWK a key is read from.
#[derive(Deserialize)]
pub(super) struct InJwk {
    pub(super) kty: Option<String>,
    pub(super) kid: Option<String>,
    pub(super) crv: Option<String>,
    pub(super) x: Option<String>,
    pub(super) y: Option<String>,
    pub(super) n: Option<String>,
    pub(super) e: Option<String>,
    /// Only the first value is read (X509-SVID §6.2).
    pub(super) x5c: Option<Vec<serde_json::Value>>,
}
