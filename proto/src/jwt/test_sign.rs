//! Test signers (tests and the `test-pki` feature only): JWT-SVID keys of
//! every supported type and a signer that writes any header and claims,
//! including the malformed ones validation must refuse.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

use crate::bundle::JwtKey;
use crate::bundle::key_params::{Curve, KeyParams, der_tlv};

/// A fixed RSA-2048 key (PKCS#1 DER): ring cannot generate RSA keys.
const RSA_2048_DER: &[u8] = include_bytes!("test_rsa2048.der");

enum Pair {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A JWT signing key with its `kid`.
pub struct TestJwtKey {
    pub kid: String,
    pair: Pair,
    spki_der: Vec<u8>,
}

impl TestJwtKey {
    /// A new P-256 key (ES256).
    pub fn es256(kid: &str) -> TestJwtKey {
        Self::ec(
            kid,
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            Curve::P256,
        )
    }

    /// A new P-384 key (ES384).
    pub fn es384(kid: &str) -> TestJwtKey {
        Self::ec(
            kid,
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            Curve::P384,
        )
    }

    fn ec(kid: &str, alg: &'static signature::EcdsaSigningAlgorithm, curve: Curve) -> TestJwtKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("test key");
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("test key");
        let point = pair.public_key().as_ref();
        let (x, y) = point[1..].split_at((point.len() - 1) / 2);
        let spki_der = KeyParams::Ec {
            curve,
            x: x.to_vec(),
            y: y.to_vec(),
        }
        .to_spki();
        TestJwtKey {
            kid: kid.to_string(),
            pair: Pair::Ec(pair),
            spki_der,
        }
    }

    /// The fixed RSA-2048 key (RS256/384/512, PS256/384/512).
    pub fn rsa(kid: &str) -> TestJwtKey {
        let pair = RsaKeyPair::from_der(RSA_2048_DER).expect("test key");
        const RSA_ALG_ID: &[u8] = &[
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
            0x00,
        ];
        let bits = der_tlv(0x03, &[&[0x00][..], pair.public().as_ref()].concat());
        let spki_der = der_tlv(0x30, &[RSA_ALG_ID, &bits].concat());
        TestJwtKey {
            kid: kid.to_string(),
            pair: Pair::Rsa(pair),
            spki_der,
        }
    }

    /// The key as a bundle publishes it.
    pub fn jwt_key(&self) -> JwtKey {
        JwtKey {
            kid: self.kid.clone(),
            spki_der: self.spki_der.clone(),
        }
    }

    /// The JWS `alg` this key signs with by default.
    pub fn alg(&self) -> &'static str {
        match &self.pair {
            Pair::Ec(p) if p.public_key().as_ref().len() == 65 => "ES256",
            Pair::Ec(_) => "ES384",
            Pair::Rsa(_) => "RS256",
        }
    }

    /// A token with the usual header (`alg`, `kid`, `typ: JWT`) and `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg(), "kid": self.kid, "typ": "JWT"});
        self.sign_with(&header, claims)
    }

    /// A token with exactly `header` and `claims`, signed by this key with
    /// the algorithm `header.alg` names (RSA: RS*/PS*; EC: its own). An
    /// `alg` the key cannot sign with is signed with the key's default.
    pub fn sign_with(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.sign_bytes(header["alg"].as_str().unwrap_or(""), input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// A signature over `input`.
    pub fn sign_bytes(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Ec(p) => p.sign(&rng, input).expect("signing").as_ref().to_vec(),
            Pair::Rsa(p) => {
                let enc: &'static dyn signature::RsaEncoding = match alg {
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0; p.public().modulus_len()];
                p.sign(enc, &rng, input, &mut sig).expect("signing");
                sig
            }
        }
    }

    /// The DER SubjectPublicKeyInfo (what an HS256 attack uses as secret).
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}
