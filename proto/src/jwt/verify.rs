//! The `alg` allow-list and signature verification with ring: ECDSA on
//! P-256/P-384 (fixed-length `r||s`, as JWS writes it), RSASSA-PKCS1-v1_5
//! and RSASSA-PSS with SHA-256/384/512. The key's type and curve must be the
//! ones the `alg` names: an ES256 token never verifies with an RSA or P-384
//! key, and no HMAC `alg` is ever accepted (so a public key can never be
//! used as a shared secret). A key is parsed once into a [`VerifyKey`] and
//! then verifies any number of tokens.

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};

use super::error::JwtError;
use crate::bundle::key_params::{Curve, KeyParams};

/// A JWS algorithm a JWT-SVID may be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Es256,
    Es384,
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
}

impl Alg {
    /// The allowed `alg` named `alg`, or which rule it breaks.
    pub fn parse(alg: &str) -> Result<Alg, JwtError> {
        Ok(match alg {
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            a if a.eq_ignore_ascii_case("none") => return Err(JwtError::AlgNone),
            a if a.len() >= 2 && a[..2].eq_ignore_ascii_case("HS") => {
                return Err(JwtError::AlgHmac { alg: a.to_string() });
            }
            a => return Err(JwtError::AlgNotAllowed { alg: a.to_string() }),
        })
    }

    /// The JWS name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
        }
    }
}

/// A bundle's JWT key parsed once, ready to verify signatures: the SPKI is
/// taken apart when the key is prepared, not on every token. A key that
/// does not parse is kept with the reason, and every token naming it is
/// refused with that reason ([`JwtError::BadKey`]), as before preparation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyKey {
    kid: String,
    spki_der: Vec<u8>,
    parsed: Result<Parsed, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Parsed {
    /// The curve and the uncompressed point `04 || x || y`.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

impl VerifyKey {
    /// `kid` with the DER SubjectPublicKeyInfo `spki_der`, parsed now.
    pub fn new(kid: &str, spki_der: &[u8]) -> VerifyKey {
        let parsed = match KeyParams::from_spki(spki_der) {
            Ok(KeyParams::Ec { curve, x, y }) => Ok(Parsed::Ec {
                curve,
                point: [&[0x04][..], &x, &y].concat(),
            }),
            Ok(KeyParams::Rsa { n, e }) => Ok(Parsed::Rsa { n, e }),
            Err(rule) => Err(rule.to_string()),
        };
        VerifyKey {
            kid: kid.to_string(),
            spki_der: spki_der.to_vec(),
            parsed,
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The DER SubjectPublicKeyInfo the key was prepared from.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Checks `sig` over `input` with this key under `alg`.
    pub fn verify(&self, alg: Alg, input: &[u8], sig: &[u8]) -> Result<(), JwtError> {
        let kid = &self.kid;
        let parsed = self.parsed.as_ref().map_err(|reason| JwtError::BadKey {
            kid: kid.clone(),
            reason: reason.clone(),
        })?;
        let mismatch = |key_type| JwtError::KeyAlgMismatch {
            alg: alg.name(),
            kid: kid.clone(),
            key_type,
        };
        let bad = || JwtError::BadSignature {
            kid: kid.clone(),
            alg: alg.name(),
        };
        match parsed {
            Parsed::Ec { curve, point } => {
                let verifier: &'static signature::EcdsaVerificationAlgorithm = match (alg, curve) {
                    (Alg::Es256, Curve::P256) => &signature::ECDSA_P256_SHA256_FIXED,
                    (Alg::Es384, Curve::P384) => &signature::ECDSA_P384_SHA384_FIXED,
                    (_, Curve::P256) => return Err(mismatch("EC P-256")),
                    (_, Curve::P384) => return Err(mismatch("EC P-384")),
                };
                UnparsedPublicKey::new(verifier, point)
                    .verify(input, sig)
                    .map_err(|_| bad())
            }
            Parsed::Rsa { n, e } => {
                let params: &'static signature::RsaParameters = match alg {
                    Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Alg::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Alg::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Alg::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
                    Alg::Es256 | Alg::Es384 => return Err(mismatch("RSA")),
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, input, sig)
                    .map_err(|_| bad())
            }
        }
    }
}
