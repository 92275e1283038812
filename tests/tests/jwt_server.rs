//! Issue 15, server side, against a real `sigil-server`: an attested agent
//! mints a JWT-SVID for its own entry over the agent API (`MintJwtSvid`,
//! with its SVID as client certificate) and the token verifies against the
//! bundle endpoint's JWKS key of its `kid`; another agent's entry is
//! refused (PermissionDenied), an empty audience too (InvalidArgument);
//! `ca prepare --kind jwt` publishes the next key in the JWKS before it
//! signs, and after `ca activate --kind jwt` tokens carry that kid.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, UnparsedPublicKey};
use serde_json::Value;
use sigil_proto::agent_api as pb;
use sigil_proto::{TrustDomain, attestation, bundle};
use sigil_tests::agent_client::{AgentIdentity, attest, identity, key_and_csr};
use sigil_tests::bundle_endpoint::get_jwks;
use sigil_tests::{ServerOptions, TestServer};
use tonic::Code;
use x509_parser::prelude::FromDer;

async fn join(s: &TestServer) -> AgentIdentity {
    let t = s.cli_json(&["token", "generate"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut c = s.agent_client(None).await.unwrap();
    let (key, csr) = key_and_csr();
    let svid = attest(&mut c, attestation::JOIN_TOKEN, t.into_bytes(), csr)
        .await
        .unwrap();
    identity(&key, &svid)
}

fn entry(s: &TestServer, spiffe: &str, parent: &str) -> String {
    let v = s.cli_json(&[
        "entry",
        "create",
        "--spiffe-id",
        spiffe,
        "--parent-id",
        parent,
        "--selector",
        "unix:uid:1000",
    ]);
    v["entries"][0]["id"].as_str().unwrap().to_string()
}

async fn mint(
    s: &TestServer,
    who: &AgentIdentity,
    entry_id: &str,
    audience: &[&str],
) -> Result<pb::JwtSvid, tonic::Status> {
    let mut c = s.agent_client(Some(who)).await.unwrap();
    let r = c
        .mint_jwt_svid(pb::MintJwtSvidRequest {
            entry_id: entry_id.to_string(),
            audience: audience.iter().map(ToString::to_string).collect(),
        })
        .await?;
    Ok(r.into_inner().svid.expect("svid"))
}

/// The bundle endpoint's JWT keys: (kid, SPKI DER), after checking that
/// each is published as a `jwt-svid` key with a `kid`.
async fn jwt_keys(s: &TestServer) -> Vec<(String, Vec<u8>)> {
    let body = get_jwks(s).await.unwrap();
    let json: Value = serde_json::from_str(&body).unwrap();
    let jwt: Vec<&Value> = json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "jwt-svid")
        .collect();
    for k in &jwt {
        assert!(k["kid"].as_str().is_some_and(|kid| kid.len() >= 32), "{k}");
    }
    let td = TrustDomain::parse("example.org").unwrap();
    let decoded = bundle::decode(&td, body.as_bytes()).unwrap();
    assert_eq!(
        decoded.skipped,
        vec![],
        "every published key is usable: {body}"
    );
    assert_eq!(decoded.bundle.jwt_authorities.len(), jwt.len());
    decoded
        .bundle
        .jwt_authorities
        .into_iter()
        .map(|k| (k.kid, k.spki_der))
        .collect()
}

/// The bundle the agent API gives `who`.
async fn agent_bundle(s: &TestServer, who: &AgentIdentity) -> pb::Bundle {
    let mut c = s.agent_client(Some(who)).await.unwrap();
    let r = c.fetch_bundle(pb::FetchBundleRequest {}).await.unwrap();
    r.into_inner().bundle.expect("bundle")
}

fn json_part(p: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

/// Verifies the ES256 `token` against the key of its `kid` in `keys`;
/// returns the header and the claims.
fn verify(keys: &[(String, Vec<u8>)], token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "compact JWS: {token}");
    let (header, claims) = (json_part(parts[0]), json_part(parts[1]));
    assert_eq!(header["alg"], "ES256", "the default jwt_key_type");
    assert_eq!(header["typ"], "JWT");
    let kid = header["kid"].as_str().unwrap();
    let (_, spki) = keys
        .iter()
        .find(|(k, _)| k == kid)
        .unwrap_or_else(|| panic!("kid {kid} is not in the bundle endpoint's JWKS"));
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki).unwrap();
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let key = UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_FIXED,
        spki.subject_public_key.data.as_ref(),
    );
    key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .expect("the token verifies with the JWKS key");
    (header, claims)
}

#[tokio::test(flavor = "multi_thread")]
async fn i15_3_agent_mints_its_entrys_jwt_svid_that_verifies_against_the_bundle_endpoint() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = join(&s).await;
    let b = join(&s).await;
    let mine = entry(&s, "spiffe://example.org/web", &a.id);
    let theirs = entry(&s, "spiffe://example.org/db", &b.id);

    let t = mint(&s, &a, &mine, &["vault", "aws"]).await.unwrap();
    assert_eq!(t.spiffe_id, "spiffe://example.org/web");
    let keys = jwt_keys(&s).await;
    assert_eq!(keys.len(), 1, "one JWT key at start: {keys:?}");
    let (_, claims) = verify(&keys, &t.token);
    assert_eq!(claims["sub"], "spiffe://example.org/web");
    assert_eq!(claims["aud"], serde_json::json!(["vault", "aws"]));
    assert_eq!(claims["iat"], t.issued_at);
    assert_eq!(claims["exp"], t.expires_at);
    assert_eq!(t.expires_at - t.issued_at, 300, "default_jwt_svid_ttl 5m");

    // Another agent's entry: refused, as for X.509 signing.
    let e = mint(&s, &a, &theirs, &["vault"]).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.message().contains(&theirs), "{e}");
    // No audience, or an empty one: refused with the rule.
    for bad in [&[][..], &[""][..]] {
        let e = mint(&s, &a, &mine, bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e}");
        assert!(e.message().contains("audience"), "{e}");
    }

    // The agent's bundle carries the JWT keys too.
    let pb_bundle = agent_bundle(&s, &a).await;
    assert_eq!(pb_bundle.jwt_authorities.len(), 1);
    assert_eq!(pb_bundle.jwt_authorities[0].key_id, keys[0].0);
    assert!(pb_bundle.jwt_authorities[0].expires_at > t.expires_at);

    // `ca prepare --kind jwt`: the next key is in the JWKS before it signs.
    let first = keys[0].0.clone();
    let st = s.cli_json(&["ca", "prepare", "--kind", "jwt"]);
    assert_eq!(st["kind"], "jwt", "{st}");
    let prepared = st["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["state"] == "prepared")
        .unwrap_or_else(|| panic!("no prepared JWT key: {st}"));
    let next = prepared["kid"].as_str().unwrap().to_string();
    assert_eq!(prepared["in_bundle"], true, "{st}");
    let keys = jwt_keys(&s).await;
    let kids: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        kids.contains(&next.as_str()) && kids.contains(&first.as_str()),
        "{kids:?}"
    );
    let t = mint(&s, &a, &mine, &["vault"]).await.unwrap();
    let (header, claims) = verify(&keys, &t.token);
    assert_eq!(
        header["kid"],
        first.as_str(),
        "the prepared key does not sign"
    );
    assert_eq!(claims["aud"], "vault");

    // Activated (forced: published for less than 2 x the refresh hint),
    // it signs, and the old key stays published for its tokens.
    s.cli_json(&["ca", "activate", "--kind", "jwt", "--force"]);
    let t2 = mint(&s, &a, &mine, &["vault"]).await.unwrap();
    let keys = jwt_keys(&s).await;
    let (header, _) = verify(&keys, &t2.token);
    assert_eq!(header["kid"], next.as_str());
    verify(&keys, &t.token);

    // Taint the old key: its kid is announced to agents.
    s.cli_json(&[
        "ca",
        "taint",
        "--kind",
        "jwt",
        "--slot",
        old_slot(&s, &first).as_str(),
    ]);
    let pb_bundle = agent_bundle(&s, &a).await;
    assert_eq!(pb_bundle.tainted_jwt_key_ids, vec![first.clone()]);
    // The X.509 side is untouched by all of it.
    let x509 = s.cli_json(&["ca", "show"]);
    assert_eq!(x509["kind"], "x509");
    assert!(
        x509["slots"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["kid"].is_null()),
        "{x509}"
    );
}

/// The slot ("a" or "b") of the JWT key `kid`.
fn old_slot(s: &TestServer, kid: &str) -> String {
    let st = s.cli_json(&["ca", "show", "--kind", "jwt"]);
    st["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["kid"] == kid)
        .unwrap_or_else(|| panic!("kid {kid} not in {st}"))["slot"]
        .as_str()
        .unwrap()
        .to_string()
}
