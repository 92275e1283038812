//! One JWT signing key, ready to sign JWT-SVIDs (JWT-SVID spec §2–3): a
//! compact JWS whose header carries `alg`, `kid` and `typ: "JWT"`, and whose
//! claims are `sub` (the SPIFFE ID), `aud`, `exp`, `iat` and, when
//! configured, `iss`. ES256 (P-256), ES384 (P-384) and RS256 (RSA) keys,
//! signed with ring. The key is parsed once and reused for every token.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{KeyPair, PublicKeyData};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair};
use sigil_proto::SpiffeId;

use super::{CaError, unix};
use crate::store::SlotId;

/// The JWS algorithm of a JWT key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlg {
    Es256,
    Es384,
    Rs256,
}

impl JwtAlg {
    /// The JWS `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            JwtAlg::Es256 => "ES256",
            JwtAlg::Es384 => "ES384",
            JwtAlg::Rs256 => "RS256",
        }
    }
}

enum SigningKey {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A freshly signed JWT-SVID.
#[derive(Debug, Clone)]
pub struct SignedJwt {
    /// Compact JWS.
    pub token: String,
    pub spiffe_id: SpiffeId,
    /// The `kid` of the key that signed it.
    pub kid: String,
    /// Unix seconds: the `iat` and `exp` claims.
    pub issued_at: i64,
    pub expires_at: i64,
}

/// One JWT signing key with its `kid`.
pub struct JwtSigner {
    slot: SlotId,
    kid: String,
    alg: JwtAlg,
    key: SigningKey,
    public_key: Vec<u8>,
    not_after: i64,
    rng: SystemRandom,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner")
            .field("slot", &self.slot)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// Builds a signer from a key the key manager holds (EC P-256, EC P-384
    /// or RSA PKCS#8).
    pub fn new(slot: SlotId, kid: &str, key: &KeyPair, not_after: i64) -> Result<Self, CaError> {
        let rng = SystemRandom::new();
        let der = key.serialized_der();
        let bad = |e: &dyn std::fmt::Display| CaError::Sign(format!("JWT key {kid}: {e}"));
        let (alg, key_impl) = if key.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 {
            let k =
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
                    .map_err(|e| bad(&e))?;
            (JwtAlg::Es256, SigningKey::Ec(k))
        } else if key.algorithm() == &rcgen::PKCS_ECDSA_P384_SHA384 {
            let k =
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, der, &rng)
                    .map_err(|e| bad(&e))?;
            (JwtAlg::Es384, SigningKey::Ec(k))
        } else if key.algorithm() == &rcgen::PKCS_RSA_SHA256 {
            (
                JwtAlg::Rs256,
                SigningKey::Rsa(RsaKeyPair::from_pkcs8(der).map_err(|e| bad(&e))?),
            )
        } else {
            return Err(bad(&"not an EC P-256, EC P-384 or RSA key"));
        };
        Ok(JwtSigner {
            slot,
            kid: kid.to_string(),
            alg,
            key: key_impl,
            public_key: key.subject_public_key_info(),
            not_after,
            rng,
        })
    }

    pub fn slot(&self) -> SlotId {
        self.slot
    }
    pub fn kid(&self) -> &str {
        &self.kid
    }
    pub fn alg(&self) -> JwtAlg {
        self.alg
    }
    /// SubjectPublicKeyInfo DER.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// Signs a JWT-SVID for `sub`. The caller checked the audience and
    /// chose the TTL; an expired key signs nothing.
    pub fn sign(
        &self,
        sub: &SpiffeId,
        audience: &[String],
        issuer: Option<&str>,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<SignedJwt, CaError> {
        let iat = unix(now);
        if iat >= self.not_after {
            return Err(CaError::Expired {
                not_after: self.not_after,
            });
        }
        let exp = iat.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let header = serde_json::json!({ "alg": self.alg.name(), "kid": self.kid, "typ": "JWT" });
        // One audience is a string, several an array (RFC 7519 §4.1.3;
        // what go-jose and so SPIRE emit).
        let aud = match audience {
            [one] => serde_json::json!(one),
            many => serde_json::json!(many),
        };
        let mut claims = serde_json::json!({
            "sub": sub.to_string(),
            "aud": aud,
            "exp": exp,
            "iat": iat,
        });
        if let Some(iss) = issuer {
            claims["iss"] = serde_json::json!(iss);
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.sign_bytes(input.as_bytes())?;
        Ok(SignedJwt {
            token: format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)),
            spiffe_id: sub.clone(),
            kid: self.kid.clone(),
            issued_at: iat,
            expires_at: exp,
        })
    }

    fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, CaError> {
        let fail = |_| CaError::Sign(format!("JWT key {}: signing failed", self.kid));
        match &self.key {
            SigningKey::Ec(k) => Ok(k.sign(&self.rng, msg).map_err(fail)?.as_ref().to_vec()),
            SigningKey::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &self.rng, msg, &mut sig)
                    .map_err(fail)?;
                Ok(sig)
            }
        }
    }
}
