//! The discovery router on a bundle with JWT keys: paths, methods, headers,
//! and that each answer reflects the bundle published at that moment.

use super::*;
use axum::body::Body;
use axum::http::{Method, Request};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData};
use serde_json::Value;
use sigil_proto::TrustDomain;
use tower::ServiceExt;

use crate::store::JwtAuthority;

fn bundle(kids: &[&str]) -> Arc<BundleRecord> {
    Arc::new(BundleRecord {
        trust_domain: TrustDomain::parse("example.org").unwrap(),
        x509_authorities: vec![sigil_proto::test_pki::TestCa::new("example.org").der],
        jwt_authorities: kids
            .iter()
            .map(|k| JwtAuthority {
                kid: (*k).into(),
                public_key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                    .unwrap()
                    .subject_public_key_info(),
                expires_at: 100,
            })
            .collect(),
        tainted_key_ids: vec![],
        tainted_jwt_key_ids: vec![],
        sequence: 1,
    })
}

async fn call(
    app: &Router,
    method: Method,
    path: &str,
) -> (StatusCode, Option<String>, Option<String>, Vec<u8>) {
    let resp = app
        .clone()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let h = |n| {
        resp.headers()
            .get(n)
            .map(|v: &HeaderValue| v.to_str().unwrap().to_string())
    };
    let (ct, cc) = (h(header::CONTENT_TYPE), h(header::CACHE_CONTROL));
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, ct, cc, body.to_vec())
}

#[tokio::test]
async fn item1_documents_are_json_cached_for_the_refresh_hint_and_follow_the_bundle() {
    let (tx, rx) = watch::channel(bundle(&["k1"]));
    let app = router("https://oidc.example.org", rx, Duration::from_secs(90));
    let (status, ct, cc, body) = call(&app, Method::GET, "/.well-known/openid-configuration").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct.as_deref(), Some("application/json"));
    assert_eq!(cc.as_deref(), Some("public, max-age=90"));
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["jwks_uri"], "https://oidc.example.org/keys");

    let (status, ct, cc, body) = call(&app, Method::GET, "/keys").await;
    assert_eq!(
        (status, ct.as_deref(), cc.as_deref()),
        (
            StatusCode::OK,
            Some("application/json"),
            Some("public, max-age=90")
        )
    );
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["keys"].as_array().unwrap().len(), 1);
    assert_eq!(doc["keys"][0]["kid"], "k1");

    // A key published for rotation is served at the next request.
    tx.send(bundle(&["k1", "k2"])).unwrap();
    let (_, _, _, body) = call(&app, Method::GET, "/keys").await;
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let kids: Vec<&str> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["k1", "k2"]);
}

#[tokio::test]
async fn item1_unknown_paths_are_404_and_other_methods_405() {
    let (_tx, rx) = watch::channel(bundle(&["k1"]));
    let app = router("https://oidc.example.org", rx, Duration::from_secs(60));
    for path in ["/", "/keys/x", "/.well-known/jwks.json", "/bundle"] {
        assert_eq!(
            call(&app, Method::GET, path).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    for m in [Method::POST, Method::PUT, Method::DELETE] {
        for path in ["/keys", "/.well-known/openid-configuration"] {
            assert_eq!(
                call(&app, m.clone(), path).await.0,
                StatusCode::METHOD_NOT_ALLOWED,
                "{m} {path}"
            );
        }
    }
}

#[tokio::test]
async fn item1_an_issuer_with_a_path_is_served_under_that_path_too() {
    let (_tx, rx) = watch::channel(bundle(&["k1"]));
    let app = router("https://example.org/tenant", rx, Duration::from_secs(60));
    for path in [
        "/tenant/keys",
        "/tenant/.well-known/openid-configuration",
        "/keys",
    ] {
        assert_eq!(
            call(&app, Method::GET, path).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
}
