//! `ValidateJWTSVID` through the real agent refuses every bad token of
//! issue 15's list, each with `InvalidArgument` and a message naming the
//! rule: `alg: none`, HS256 signed with the public key as the secret, an
//! unknown `kid`, a wrong audience, an expired token, no `exp`, a tampered
//! payload, a token of a trust domain with no bundle, an oversized token.
//! The bad tokens are built here: the ones that need a valid signature are
//! signed with the server's own active JWT key, read from its key
//! directory (the test owns it), so only the rule under test is broken.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sigil_proto::workload::ValidateJwtsvidRequest;
use sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use sigil_tests::jwt_check::{assemble, decode};
use sigil_tests::{ServerOptions, TestAgent, TestServer, workload_channel};

const ID: &str = "spiffe://example.org/jwt-refusals";

/// The server's JWT signing key whose public point is that of `jwk`,
/// found among the PKCS#8 files of its key directory.
fn server_jwt_key(keys_dir: &Path, jwk: &Value) -> EcdsaKeyPair {
    let point = [
        vec![4u8],
        URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap(),
        URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap(),
    ]
    .concat();
    let rng = ring::rand::SystemRandom::new();
    for e in std::fs::read_dir(keys_dir).unwrap() {
        let der = std::fs::read(e.unwrap().path()).unwrap();
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            && k.public_key().as_ref() == point.as_slice()
        {
            return k;
        }
    }
    panic!("no key in {} matches {jwk}", keys_dir.display());
}

fn es256(key: &EcdsaKeyPair, header: &Value, claims: &Value) -> String {
    let unsigned = assemble(header, claims, b"");
    let signing_input = unsigned.trim_end_matches('.');
    let sig = key
        .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
        .unwrap();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fn hex_bytes(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn validate(
    c: &mut SpiffeWorkloadApiClient<tonic::transport::Channel>,
    token: &str,
    audience: &str,
) -> Result<String, tonic::Status> {
    let mut req = tonic::Request::new(ValidateJwtsvidRequest {
        audience: audience.into(),
        svid: token.into(),
    });
    req.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    let r = tokio::time::timeout(Duration::from_secs(10), c.validate_jwtsvid(req))
        .await
        .expect("answer in time")?;
    Ok(r.into_inner().spiffe_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn item3_validate_jwtsvid_refuses_each_bad_token_with_a_clear_status() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    s.register_uid(&a, ID);
    // A genuine token and the key that signed it.
    let minted = s.cli_json(&["jwt", "mint", "--spiffe-id", ID, "--audience", "svc"]);
    let good = minted["token"].as_str().unwrap().to_string();
    let kid = minted["kid"].as_str().unwrap().to_string();
    let jwks: Value =
        serde_json::from_str(&s.cli_ok(&["bundle", "show", "--format", "jwks"])).unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap()
        .clone();
    let key = server_jwt_key(&s.data_dir.join("keys"), &jwk);

    let mut c = SpiffeWorkloadApiClient::new(workload_channel(&a.socket).await.unwrap());
    // The agent has the key once the genuine token validates (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match validate(&mut c, &good, "svc").await {
            Ok(id) => {
                assert_eq!(id, ID);
                break;
            }
            Err(e) if std::time::Instant::now() > deadline => panic!("never valid: {e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }

    let header = json!({"alg": "ES256", "kid": kid, "typ": "JWT"});
    let claims = decode(&good).unwrap().claims;
    let with = |patch: Value| {
        let mut c = claims.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    // Control: a token signed here with the server's key is accepted, so each
    // refusal below is for the one rule it breaks.
    let control = es256(&key, &header, &with(json!({"exp": now() + 120})));
    assert_eq!(validate(&mut c, &control, "svc").await.unwrap(), ID);

    // The classic confusion attack: the server's public key (PEM
    // SubjectPublicKeyInfo, as a relying party would have it) as HMAC secret.
    let spki_pem = {
        let prefix = hex_bytes("3059301306072a8648ce3d020106082a8648ce3d030107034200");
        let spki = [prefix, key.public_key().as_ref().to_vec()].concat();
        pem::encode(&pem::Pem::new("PUBLIC KEY", spki))
    };
    let hs256 = {
        let h = json!({"alg": "HS256", "kid": kid, "typ": "JWT"});
        let unsigned = assemble(&h, &claims, b"");
        let input = unsigned.trim_end_matches('.').to_string();
        let mac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, spki_pem.as_bytes());
        let tag = ring::hmac::sign(&mac_key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    };
    let foreign_key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        EcdsaKeyPair::generate_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &ring::rand::SystemRandom::new(),
        )
        .unwrap()
        .as_ref(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let tampered = {
        let parts: Vec<&str> = good.split('.').collect();
        let mut c = claims.clone();
        c["sub"] = json!("spiffe://example.org/admin");
        format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(c.to_string()),
            parts[2]
        )
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "alg none",
            assemble(
                &json!({"alg": "none", "kid": kid, "typ": "JWT"}),
                &claims,
                b"",
            ),
            "svc",
            "alg \"none\" is refused",
        ),
        ("HS256 with the public key as secret", hs256, "svc", "HMAC"),
        (
            "unknown kid",
            es256(
                &foreign_key,
                &json!({"alg": "ES256", "kid": "not-a-sigil-kid", "typ": "JWT"}),
                &claims,
            ),
            "svc",
            "kid \"not-a-sigil-kid\" is not a JWT authority",
        ),
        (
            "wrong audience",
            good.clone(),
            "other",
            "does not contain the audience",
        ),
        (
            "expired",
            es256(
                &key,
                &header,
                &with(json!({"iat": now() - 600, "exp": now() - 300})),
            ),
            "svc",
            "expired",
        ),
        (
            "missing exp",
            es256(&key, &header, &with(json!({"exp": null}))),
            "svc",
            "no \"exp\"",
        ),
        (
            "tampered payload",
            tampered,
            "svc",
            "signature does not verify",
        ),
        (
            "trust domain without a bundle",
            es256(&key, &header, &with(json!({"sub": "spiffe://other.org/x"}))),
            "svc",
            "no bundle for trust domain other.org",
        ),
        (
            "oversized",
            es256(&key, &header, &with(json!({"pad": "x".repeat(20 * 1024)}))),
            "svc",
            "more than the limit",
        ),
    ];
    let mut failures = Vec::new();
    for (what, token, audience, needle) in cases {
        match validate(&mut c, &token, audience).await {
            Ok(id) => failures.push(format!("{what}: accepted as {id}")),
            Err(st)
                if st.code() != tonic::Code::InvalidArgument || !st.message().contains(needle) =>
            {
                failures.push(format!(
                    "{what}: {:?} {:?} (wanted InvalidArgument with {needle:?})",
                    st.code(),
                    st.message()
                ))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // The genuine token still validates: nothing above poisoned the agent.
    assert_eq!(validate(&mut c, &good, "svc").await.unwrap(), ID);
}
