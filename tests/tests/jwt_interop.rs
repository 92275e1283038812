//! JWT-SVID interop with unmodified client stacks against the real server
//! and agent (issue 15, "What must be shown"):
//! - the Rust `spiffe` crate (0.19, features `jwt-source` and
//!   `jwt-verify-rust-crypto`): `WorkloadApiClient` and `JwtSource` fetch a
//!   JWT-SVID, the agent validates it, and `JwtSvid::parse_and_validate`
//!   verifies it locally against the fetched JWT bundle;
//! - py-spiffe (pinned in `tests/interop/python/requirements.txt`): the same
//!   with `WorkloadApiClient` and `JwtSvid.parse_and_validate`;
//! - PyJWT (pinned, with `cryptography`): verifies a token with only the
//!   keys from OIDC discovery's `/keys` and the discovery document's issuer
//!   and algorithms.
//!
//! Without the Python stack these skip outside CI and fail in CI
//! ([`sigil_tests::interop::available`]).

use std::time::{Duration, Instant};

use serde_json::Value;
use sigil_tests::interop::{self, run_json};
use sigil_tests::oidc::request;
use sigil_tests::{ServerOptions, TestAgent, TestServer, free_addr};
use spiffe::{JwtSvid, WorkloadApiClient};

const ISSUER: &str = "https://oidc.example.org";
const ID: &str = "spiffe://example.org/jwt-interop";

/// A server with `jwt_issuer` and plain-HTTP OIDC discovery, an agent, and
/// `ID` registered for this test's uid.
fn setup() -> (TestServer, TestAgent, std::net::SocketAddr) {
    let oidc = free_addr();
    let s = TestServer::start(ServerOptions {
        extra: format!("jwt_issuer = \"{ISSUER}\"\n[oidc_discovery]\naddress = \"{oidc}\"\n"),
        ..Default::default()
    })
    .unwrap();
    let a = TestAgent::start(&s).unwrap();
    s.register_uid(&a, ID);
    (s, a, oidc)
}

/// Runs `f` until it answers `Some` (the entry may not have synced yet).
fn until<T>(limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(t) => return t,
            Err(e) if Instant::now() > deadline => panic!("no success in {limit:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

#[test]
fn item3_py_spiffe_fetches_validates_and_verifies_and_pyjwt_verifies_with_oidc_keys() {
    let Some(py) = interop::python() else { return };
    let (s, a, oidc) = setup();
    let ep = a.endpoint();
    let v: Value = until(Duration::from_secs(30), || {
        let v = run_json(&mut py.script("jwt_svid_interop.py", &[&ep, "aud-py"]));
        if v["ok"] == true {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    assert_eq!(v["versions"]["spiffe"], "0.3.2", "{v}");
    assert_eq!(v["spiffe_id"], ID, "{v}");
    assert_eq!(v["validated_id"], ID, "the agent validated it: {v}");
    assert_eq!(
        v["local_id"], ID,
        "verified locally against the JWT bundle: {v}"
    );
    assert_eq!(v["local_audience"], serde_json::json!(["aud-py"]));
    assert!(v["wrong_audience_refused"].is_string(), "{v}");
    assert!(v["tampered_refused"].is_string(), "{v}");
    let kids = v["bundle_kids"].as_array().unwrap();
    assert!(!kids.is_empty(), "{v}");
    let token = v["token"].as_str().unwrap();
    let kid = sigil_tests::jwt_check::decode(token).unwrap().header["kid"].clone();
    assert!(
        kids.contains(&kid),
        "the signing kid {kid} is in py-spiffe's JWT bundle {kids:?}"
    );

    // PyJWT with only what OIDC discovery serves.
    let dir = tempfile::tempdir().unwrap();
    let conf = request(oidc, None, "GET", "/.well-known/openid-configuration").unwrap();
    let keys = request(oidc, None, "GET", "/keys").unwrap();
    assert_eq!((conf.status, keys.status), (200, 200));
    let (cf, kf) = (dir.path().join("conf.json"), dir.path().join("keys.json"));
    std::fs::write(&cf, &conf.body).unwrap();
    std::fs::write(&kf, &keys.body).unwrap();
    let r = run_json(&mut py.script(
        "pyjwt_oidc.py",
        &[cf.to_str().unwrap(), kf.to_str().unwrap(), token, "aud-py"],
    ));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["pyjwt"], "2.15.1", "{r}");
    assert_eq!(r["claims"]["sub"], ID, "{r}");
    assert_eq!(r["claims"]["iss"], ISSUER, "{r}");
    assert_eq!(r["wrong_issuer_refused"], "InvalidIssuerError", "{r}");
    drop(s);
}

#[tokio::test(flavor = "multi_thread")]
async fn item3_rust_spiffe_crate_fetches_validates_and_verifies_locally() {
    let (_s, a, _) = setup();
    let client = WorkloadApiClient::connect_to(a.endpoint()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let svid = loop {
        match client.fetch_jwt_svid(["aud-rs"], None).await {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("no JWT-SVID in 30s: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    };
    assert_eq!(svid.spiffe_id().to_string(), ID);
    assert_eq!(svid.audience(), ["aud-rs".to_string()]);
    let token = svid.token().to_string();
    let validated = client.validate_jwt_token("aud-rs", &token).await.unwrap();
    assert_eq!(validated.spiffe_id().to_string(), ID);
    assert!(
        client.validate_jwt_token("other", &token).await.is_err(),
        "wrong audience"
    );

    let bundles = client.fetch_jwt_bundles().await.unwrap();
    let local = JwtSvid::parse_and_validate(&token, &bundles, &["aud-rs"]).unwrap();
    assert_eq!(local.spiffe_id().to_string(), ID);
    assert_eq!(local.key_id(), svid.key_id());
    assert!(JwtSvid::parse_and_validate(&token, &bundles, &["other"]).is_err());
    let (signed, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{}", "A".repeat(86));
    assert!(JwtSvid::parse_and_validate(&forged, &bundles, &["aud-rs"]).is_err());

    // JwtSource: the crate's long-lived source, its bundles kept current.
    let source = spiffe::JwtSource::builder()
        .endpoint(a.endpoint())
        .build()
        .await
        .unwrap();
    let svid = source
        .fetch_jwt_svid(["aud-src-a", "aud-src-b"])
        .await
        .unwrap();
    assert_eq!(svid.spiffe_id().to_string(), ID);
    let set = source.bundle_set().unwrap();
    let local = JwtSvid::parse_and_validate(svid.token(), &*set, &["aud-src-b"]).unwrap();
    assert_eq!(local.spiffe_id().to_string(), ID);
    source.shutdown().await;
}
