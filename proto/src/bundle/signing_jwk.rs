//! A JWT signing key as a relying party outside SPIFFE reads it (OIDC
//! discovery's `jwks_uri`, RFC 7517 / 7518): a bare public JWK with `kid`,
//! `use: "sig"` and the JWS `alg` the key signs with — ES256 for P-256,
//! ES384 for P-384, RS256 for RSA (the algorithm Sigil's issuer uses for
//! that key type). The SPIFFE bundle's `jwt-svid` keys are [`super::encode`]'s.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::key_params::{Curve, KeyParams};
use super::skipped::KeyRule;

/// The JWS algorithm a key of this DER SubjectPublicKeyInfo signs with.
pub fn jws_alg(spki_der: &[u8]) -> Result<&'static str, KeyRule> {
    Ok(alg_of(&KeyParams::from_spki(spki_der)?))
}

fn alg_of(params: &KeyParams) -> &'static str {
    match params {
        KeyParams::Ec {
            curve: Curve::P256, ..
        } => "ES256",
        KeyParams::Ec {
            curve: Curve::P384, ..
        } => "ES384",
        KeyParams::Rsa { .. } => "RS256",
    }
}

/// The public JWK of signing key `kid` (DER SubjectPublicKeyInfo
/// `spki_der`): `kty`, `kid`, `use: "sig"`, `alg` and the key members.
pub fn signing_jwk(kid: &str, spki_der: &[u8]) -> Result<Value, KeyRule> {
    if kid.is_empty() {
        return Err(KeyRule::MissingMember { member: "kid" });
    }
    let params = KeyParams::from_spki(spki_der)?;
    let mut jwk = Map::new();
    let b64 = |b: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(b));
    match &params {
        KeyParams::Ec { curve, x, y } => {
            jwk.insert("kty".into(), json!("EC"));
            jwk.insert("crv".into(), json!(curve.name()));
            jwk.insert("x".into(), b64(x));
            jwk.insert("y".into(), b64(y));
        }
        KeyParams::Rsa { n, e } => {
            jwk.insert("kty".into(), json!("RSA"));
            jwk.insert("n".into(), b64(n));
            jwk.insert("e".into(), b64(e));
        }
    }
    jwk.insert("kid".into(), json!(kid));
    jwk.insert("use".into(), json!("sig"));
    jwk.insert("alg".into(), json!(alg_of(&params)));
    Ok(Value::Object(jwk))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PublicKeyData};

    #[test]
    fn ec_keys_carry_their_curve_alg_and_sig_use() {
        for (alg, crv, sig) in [
            ("ES256", "P-256", &PKCS_ECDSA_P256_SHA256),
            ("ES384", "P-384", &PKCS_ECDSA_P384_SHA384),
        ] {
            let k = KeyPair::generate_for(sig).unwrap();
            let spki = k.subject_public_key_info();
            let jwk = signing_jwk("k1", &spki).unwrap();
            assert_eq!(jwk["kty"], "EC");
            assert_eq!(jwk["crv"], crv);
            assert_eq!(jwk["alg"], alg);
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["kid"], "k1");
            let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
            let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
            assert_eq!([&[4u8][..], &x, &y].concat(), k.public_key_raw());
            assert_eq!(jws_alg(&spki).unwrap(), alg);
        }
    }

    #[test]
    fn rsa_keys_are_rs256_and_a_key_without_kid_is_refused() {
        let mut n = vec![0xC5u8; 256];
        n[255] = 1;
        let spki = KeyParams::Rsa {
            n: n.clone(),
            e: vec![1, 0, 1],
        }
        .to_spki();
        let jwk = signing_jwk("r", &spki).unwrap();
        assert_eq!(
            (jwk["kty"].as_str(), jwk["alg"].as_str()),
            (Some("RSA"), Some("RS256"))
        );
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(
            URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap(),
            n
        );
        assert_eq!(
            signing_jwk("", &spki).unwrap_err(),
            KeyRule::MissingMember { member: "kid" }
        );
        assert!(signing_jwk("x", b"not der").is_err());
    }
}
