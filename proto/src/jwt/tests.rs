//! Tests of JWT-SVID validation: every accepted algorithm, and every
//! refusal of issue 15's list (alg none, HS256 with the public key as
//! secret, unknown kid, wrong audience, expired, missing exp, tampered
//! payload, a trust domain with no bundle, oversized) plus the header and
//! claim rules.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::test_sign::TestJwtKey;
use super::*;
use crate::bundle::SpiffeBundle;
use crate::spiffe_id::TrustDomain;

const NOW: i64 = 1_800_000_000;

fn bundle(td: &str, keys: &[&TestJwtKey]) -> SpiffeBundle {
    SpiffeBundle {
        trust_domain: TrustDomain::parse(td).unwrap(),
        x509_authorities: Vec::new(),
        jwt_authorities: keys.iter().map(|k| k.jwt_key()).collect(),
        sequence: None,
        refresh_hint: None,
    }
}

fn claims() -> Value {
    json!({
        "sub": "spiffe://example.org/web",
        "aud": ["db", "cache"],
        "exp": NOW + 300,
        "iat": NOW,
    })
}

fn check(key: &TestJwtKey, token: &str) -> Result<Validated, JwtError> {
    validate(token, "db", &[bundle("example.org", &[key])], NOW)
}

#[test]
fn accepts_every_allowed_algorithm_and_returns_sub_and_claims() {
    let ec = TestJwtKey::es256("k256");
    let v = check(&ec, &ec.sign(&claims())).unwrap();
    assert_eq!(v.spiffe_id.as_str(), "spiffe://example.org/web");
    assert_eq!(v.claims["exp"], json!(NOW + 300));
    assert_eq!(v.claims["aud"], json!(["db", "cache"]));
    assert_eq!(v.kid, "k256");

    let ec384 = TestJwtKey::es384("k384");
    check(&ec384, &ec384.sign(&claims())).unwrap();

    let rsa = TestJwtKey::rsa("krsa");
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        let t = rsa.sign_with(&json!({"alg": alg, "kid": "krsa"}), &claims());
        check(&rsa, &t).unwrap_or_else(|e| panic!("{alg}: {e}"));
    }
    // typ JOSE, and a single-string aud.
    let t = ec.sign_with(
        &json!({"alg": "ES256", "kid": "k256", "typ": "JOSE"}),
        &json!({"sub": "spiffe://example.org/web", "aud": "db", "exp": NOW + 1}),
    );
    check(&ec, &t).unwrap();
}

#[test]
fn refuses_alg_none() {
    let k = TestJwtKey::es256("k");
    let h = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": "k"}).to_string());
    let p = URL_SAFE_NO_PAD.encode(claims().to_string());
    let e = check(&k, &format!("{h}.{p}.")).unwrap_err();
    assert_eq!(e, JwtError::AlgNone);
    assert!(e.to_string().contains("\"none\""), "{e}");
}

#[test]
fn refuses_hs256_signed_with_the_public_key_as_secret() {
    for k in [TestJwtKey::es256("k"), TestJwtKey::rsa("k")] {
        let h =
            URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": "k", "typ": "JWT"}).to_string());
        let p = URL_SAFE_NO_PAD.encode(claims().to_string());
        let input = format!("{h}.{p}");
        let secret = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k.spki_der());
        let tag = ring::hmac::sign(&secret, input.as_bytes());
        let t = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        let e = check(&k, &t).unwrap_err();
        assert_eq!(
            e,
            JwtError::AlgHmac {
                alg: "HS256".into()
            }
        );
    }
}

#[test]
fn refuses_algorithms_off_the_list_and_keys_of_another_type() {
    let ec = TestJwtKey::es256("k");
    let t = ec.sign_with(&json!({"alg": "ES512", "kid": "k"}), &claims());
    assert!(matches!(check(&ec, &t), Err(JwtError::AlgNotAllowed { alg }) if alg == "ES512"));
    let t = ec.sign_with(&json!({"kid": "k"}), &claims());
    assert_eq!(check(&ec, &t).unwrap_err(), JwtError::MissingAlg);
    // ES384 named, P-256 key.
    let t = ec.sign_with(&json!({"alg": "ES384", "kid": "k"}), &claims());
    assert!(matches!(
        check(&ec, &t),
        Err(JwtError::KeyAlgMismatch {
            alg: "ES384",
            key_type: "EC P-256",
            ..
        })
    ));
    // RS256 named, EC key; ES256 named, RSA key.
    let t = ec.sign_with(&json!({"alg": "RS256", "kid": "k"}), &claims());
    assert!(matches!(
        check(&ec, &t),
        Err(JwtError::KeyAlgMismatch { alg: "RS256", .. })
    ));
    let rsa = TestJwtKey::rsa("k");
    let t = rsa.sign_with(&json!({"alg": "ES256", "kid": "k"}), &claims());
    assert!(matches!(
        check(&rsa, &t),
        Err(JwtError::KeyAlgMismatch {
            alg: "ES256",
            key_type: "RSA",
            ..
        })
    ));
}

#[test]
fn refuses_missing_and_unknown_kid() {
    let k = TestJwtKey::es256("k");
    let t = k.sign_with(&json!({"alg": "ES256"}), &claims());
    assert_eq!(check(&k, &t).unwrap_err(), JwtError::MissingKid);
    let t = k.sign_with(&json!({"alg": "ES256", "kid": ""}), &claims());
    assert_eq!(check(&k, &t).unwrap_err(), JwtError::MissingKid);
    let other = TestJwtKey::es256("other");
    let e = check(&k, &other.sign(&claims())).unwrap_err();
    assert_eq!(
        e,
        JwtError::UnknownKid {
            kid: "other".into(),
            trust_domain: "example.org".into()
        }
    );
    assert!(e.to_string().contains("\"other\""), "{e}");
}

#[test]
fn refuses_wrong_audience() {
    let k = TestJwtKey::es256("k");
    let e = validate(
        &k.sign(&claims()),
        "billing",
        &[bundle("example.org", &[&k])],
        NOW,
    )
    .unwrap_err();
    assert!(matches!(&e, JwtError::AudienceMismatch { audience, .. } if audience == "billing"));
    assert!(e.to_string().contains("billing"), "{e}");
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(check(&k, &k.sign(&c)).unwrap_err(), JwtError::MissingAud);
    c["aud"] = json!(7);
    assert!(matches!(
        check(&k, &k.sign(&c)),
        Err(JwtError::ClaimType { claim: "aud", .. })
    ));
}

#[test]
fn refuses_expired_and_missing_exp() {
    let k = TestJwtKey::es256("k");
    let mut c = claims();
    c["exp"] = json!(NOW);
    assert_eq!(
        check(&k, &k.sign(&c)).unwrap_err(),
        JwtError::Expired { exp: NOW, now: NOW }
    );
    c["exp"] = json!(NOW - 100);
    assert!(matches!(
        check(&k, &k.sign(&c)),
        Err(JwtError::Expired { .. })
    ));
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(check(&k, &k.sign(&c)).unwrap_err(), JwtError::MissingExp);
    c["exp"] = json!("tomorrow");
    assert!(matches!(
        check(&k, &k.sign(&c)),
        Err(JwtError::ClaimType { claim: "exp", .. })
    ));
    let mut c = claims();
    c["nbf"] = json!(NOW + 10);
    assert_eq!(
        check(&k, &k.sign(&c)).unwrap_err(),
        JwtError::NotYetValid {
            nbf: NOW + 10,
            now: NOW
        }
    );
}

#[test]
fn refuses_tampered_payload_and_signature() {
    let k = TestJwtKey::es256("k");
    let t = k.sign(&claims());
    let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
    let mut c = claims();
    c["sub"] = json!("spiffe://example.org/admin");
    parts[1] = URL_SAFE_NO_PAD.encode(c.to_string());
    let e = check(&k, &parts.join(".")).unwrap_err();
    assert_eq!(
        e,
        JwtError::BadSignature {
            kid: "k".into(),
            alg: "ES256"
        }
    );
    // A signature of the wrong length, and one from another key.
    let mut parts: Vec<&str> = t.split('.').collect();
    parts[2] = "AAAA";
    assert!(matches!(
        check(&k, &parts.join(".")),
        Err(JwtError::BadSignature { .. })
    ));
    let impostor = TestJwtKey::es256("k");
    assert!(matches!(
        check(&k, &impostor.sign(&claims())),
        Err(JwtError::BadSignature { .. })
    ));
}

#[test]
fn refuses_a_trust_domain_with_no_bundle() {
    let k = TestJwtKey::es256("k");
    let mut c = claims();
    c["sub"] = json!("spiffe://other.org/web");
    let e = check(&k, &k.sign(&c)).unwrap_err();
    assert_eq!(
        e,
        JwtError::NoBundle {
            trust_domain: "other.org".into(),
            sub: "spiffe://other.org/web".into()
        }
    );
    // The bundle of the token's own trust domain is the one used.
    let v = validate(
        &k.sign(&c),
        "db",
        &[bundle("example.org", &[]), bundle("other.org", &[&k])],
        NOW,
    )
    .unwrap();
    assert_eq!(v.spiffe_id.as_str(), "spiffe://other.org/web");
    // The same key under another trust domain does not vouch for this one.
    assert!(matches!(
        validate(
            &k.sign(&claims()),
            "db",
            &[bundle("other.org", &[&k]), bundle("example.org", &[])],
            NOW
        ),
        Err(JwtError::UnknownKid { .. })
    ));
}

#[test]
fn refuses_oversized_tokens_before_parsing() {
    let k = TestJwtKey::es256("k");
    let mut c = claims();
    c["pad"] = json!("x".repeat(MAX_TOKEN_BYTES));
    let t = k.sign(&c);
    assert_eq!(
        check(&k, &t).unwrap_err(),
        JwtError::TooLarge { len: t.len() }
    );
    // Just under the limit is parsed.
    let mut c = claims();
    c["pad"] = json!("x".repeat(MAX_TOKEN_BYTES / 2));
    check(&k, &k.sign(&c)).unwrap();
}

#[test]
fn refuses_bad_typ_crit_sub_and_malformed_tokens() {
    let k = TestJwtKey::es256("k");
    let t = k.sign_with(
        &json!({"alg": "ES256", "kid": "k", "typ": "at+jwt"}),
        &claims(),
    );
    assert!(matches!(check(&k, &t), Err(JwtError::BadTyp { typ }) if typ == "at+jwt"));
    let t = k.sign_with(
        &json!({"alg": "ES256", "kid": "k", "crit": ["b64"], "b64": false}),
        &claims(),
    );
    assert!(matches!(check(&k, &t), Err(JwtError::Critical { .. })));
    let mut c = claims();
    c["sub"] = json!("https://example.org/web");
    assert!(matches!(
        check(&k, &k.sign(&c)),
        Err(JwtError::BadSub { .. })
    ));
    c.as_object_mut().unwrap().remove("sub");
    assert_eq!(check(&k, &k.sign(&c)).unwrap_err(), JwtError::MissingSub);

    assert!(matches!(check(&k, "a.b"), Err(JwtError::Malformed { .. })));
    assert!(matches!(
        check(&k, "a.b.c.d"),
        Err(JwtError::Malformed { .. })
    ));
    assert!(matches!(
        check(&k, "!!.e30.AA"),
        Err(JwtError::BadBase64 { part: "header", .. })
    ));
    let arr = URL_SAFE_NO_PAD.encode("[]");
    assert!(matches!(
        check(&k, &format!("{arr}.{arr}.AA")),
        Err(JwtError::BadJson { part: "header", .. })
    ));
}
