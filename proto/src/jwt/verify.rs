//! The `alg` allow-list and signature verification with ring: ECDSA on
//! P-256/P-384 (fixed-length `r||s`, as JWS writes it), RSASSA-PKCS1-v1_5
//! and RSASSA-PSS with SHA-256/384/512. The key's type and curve must be the
//! ones the `alg` names: an ES256 token never verifies with an RSA or P-384
//! key, and no HMAC `alg` is ever accepted (so a public key can never be
//! used as a shared secret).

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

/// Checks `sig` over `input` with the key `kid` (DER SubjectPublicKeyInfo).
pub(super) fn verify(
    alg: Alg,
    kid: &str,
    spki_der: &[u8],
    input: &[u8],
    sig: &[u8],
) -> Result<(), JwtError> {
    let params = KeyParams::from_spki(spki_der).map_err(|rule| JwtError::BadKey {
        kid: kid.to_string(),
        reason: rule.to_string(),
    })?;
    let mismatch = |key_type| JwtError::KeyAlgMismatch {
        alg: alg.name(),
        kid: kid.to_string(),
        key_type,
    };
    let bad = || JwtError::BadSignature {
        kid: kid.to_string(),
        alg: alg.name(),
    };
    match &params {
        KeyParams::Ec { curve, x, y } => {
            let verifier: &'static signature::EcdsaVerificationAlgorithm = match (alg, curve) {
                (Alg::Es256, Curve::P256) => &signature::ECDSA_P256_SHA256_FIXED,
                (Alg::Es384, Curve::P384) => &signature::ECDSA_P384_SHA384_FIXED,
                (_, Curve::P256) => return Err(mismatch("EC P-256")),
                (_, Curve::P384) => return Err(mismatch("EC P-384")),
            };
            let point = [&[0x04][..], x, y].concat();
            UnparsedPublicKey::new(verifier, point)
                .verify(input, sig)
                .map_err(|_| bad())
        }
        KeyParams::Rsa { n, e } => {
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
