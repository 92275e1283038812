//! RSA JWT keys end to end (issue 15, `jwt_key_type = "rsa-2048"`): a real
//! server signing JWT-SVIDs with an RSA key and a real agent. A token
//! fetched through the Workload API by the unmodified Rust `spiffe` crate
//! has `alg: RS256`, is validated by the agent, and verifies locally in the
//! crate against the fetched JWT bundle; PyJWT (an independent JOSE
//! library) verifies it with only the keys from OIDC discovery's `/keys`,
//! which name the key `RS256` and the discovery document lists `RS256`.
//! Without the Python stack the PyJWT part skips outside CI and fails in CI
//! ([`sigil_tests::interop::available`]).

use std::time::{Duration, Instant};

use serde_json::Value;
use sigil_tests::interop::{self, run_json};
use sigil_tests::oidc::request;
use sigil_tests::{ServerOptions, TestAgent, TestServer, free_addr};
use spiffe::{JwtSvid, WorkloadApiClient};

const ISSUER: &str = "https://oidc.example.org";
const ID: &str = "spiffe://example.org/jwt-rsa";

#[tokio::test(flavor = "multi_thread")]
async fn i15_rsa_2048_jwt_svid_is_rs256_and_verified_by_spiffe_crate_agent_and_pyjwt() {
    let oidc = free_addr();
    let s = TestServer::start(ServerOptions {
        extra: format!(
            "jwt_key_type = \"rsa-2048\"\njwt_issuer = \"{ISSUER}\"\n\
             [oidc_discovery]\naddress = \"{oidc}\"\n"
        ),
        ..Default::default()
    })
    .unwrap();
    let a = TestAgent::start(&s).unwrap();
    s.register_uid(&a, ID);

    // The Rust `spiffe` crate fetches (retried until the entry arrives).
    let client = WorkloadApiClient::connect_to(a.endpoint()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let svid = loop {
        match client.fetch_jwt_svid(["aud-rsa"], None).await {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("no JWT-SVID in 30s: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    };
    let token = svid.token().to_string();
    let jwt = sigil_tests::jwt_check::decode(&token).unwrap();
    assert_eq!(jwt.header["alg"], "RS256", "header {}", jwt.header);
    assert_eq!(jwt.header["typ"], "JWT", "header {}", jwt.header);
    assert_eq!(jwt.claims["sub"], ID);
    assert_eq!(jwt.claims["iss"], ISSUER);
    let kid = jwt.header["kid"].as_str().unwrap().to_string();

    // The agent validates it; refuses it for another audience.
    let validated = client.validate_jwt_token("aud-rsa", &token).await.unwrap();
    assert_eq!(validated.spiffe_id().to_string(), ID);
    assert!(client.validate_jwt_token("other", &token).await.is_err());

    // The crate verifies it locally against the RSA key of the JWT bundle.
    let bundles = client.fetch_jwt_bundles().await.unwrap();
    let local = JwtSvid::parse_and_validate(&token, &bundles, &["aud-rsa"]).unwrap();
    assert_eq!(local.spiffe_id().to_string(), ID);
    assert_eq!(local.key_id(), kid);
    let (signed, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{}", "A".repeat(342));
    assert!(JwtSvid::parse_and_validate(&forged, &bundles, &["aud-rsa"]).is_err());

    // OIDC discovery: RS256 listed, the key an RSA key with alg RS256.
    let conf = request(oidc, None, "GET", "/.well-known/openid-configuration").unwrap();
    let keys = request(oidc, None, "GET", "/keys").unwrap();
    assert_eq!((conf.status, keys.status), (200, 200));
    let conf_doc: Value = serde_json::from_str(&conf.body).unwrap();
    let algs = &conf_doc["id_token_signing_alg_values_supported"];
    assert!(
        algs.as_array().unwrap().iter().any(|a| a == "RS256"),
        "discovery algorithms {algs}"
    );
    let keys_doc: Value = serde_json::from_str(&keys.body).unwrap();
    let jwk = keys_doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not in /keys {keys_doc}"))
        .clone();
    assert_eq!(
        (jwk["kty"].as_str(), jwk["alg"].as_str()),
        (Some("RSA"), Some("RS256"))
    );

    // PyJWT with only what OIDC discovery serves.
    let Some(py) = interop::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (cf, kf) = (dir.path().join("conf.json"), dir.path().join("keys.json"));
    std::fs::write(&cf, &conf.body).unwrap();
    std::fs::write(&kf, &keys.body).unwrap();
    let r = run_json(&mut py.script(
        "pyjwt_oidc.py",
        &[
            cf.to_str().unwrap(),
            kf.to_str().unwrap(),
            &token,
            "aud-rsa",
        ],
    ));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["key_alg"], "RS256", "{r}");
    assert_eq!(r["claims"]["sub"], ID, "{r}");
    assert_eq!(r["claims"]["iss"], ISSUER, "{r}");
    assert_eq!(r["wrong_issuer_refused"], "InvalidIssuerError", "{r}");
}
