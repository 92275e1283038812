//! OIDC discovery against the real server (issue 15 item 4): over HTTPS
//! with a test web certificate, the provider configuration names the
//! configured issuer and `jwks_uri` = issuer + `/keys`; `/keys` holds
//! exactly the JWT keys of the published bundle (`kid`, `alg`, `use:
//! "sig"`), both as `application/json` cached no longer than the refresh
//! hint; other paths 404, other methods 405. Without `jwt_issuer` the
//! server refuses to start; without TLS files it serves plain HTTP and
//! warns.

use std::time::Duration;

use sigil_tests::oidc::{Tls, max_age, request};
use sigil_tests::{ServerOptions, TestServer, free_addr, run_limited, sigil_server, text};

const ISSUER: &str = "https://oidc.example.org";

/// A server with OIDC discovery on a free port; HTTPS with a test web
/// certificate for `localhost` when `https` (returns its CA).
fn start(
    https: bool,
) -> (
    TestServer,
    std::net::SocketAddr,
    Option<Tls>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut extra = format!("jwt_issuer = \"{ISSUER}\"\n[oidc_discovery]\naddress = \"{addr}\"\n");
    let mut tls = None;
    if https {
        let (ca, cert, key) = sigil_proto::test_pki::web_server_cert("localhost");
        let (c, k) = (dir.path().join("oidc.pem"), dir.path().join("oidc_key.pem"));
        std::fs::write(&c, sigil_proto::pem::to_pem(&[cert])).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        extra.push_str(&format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            c.display(),
            k.display()
        ));
        tls = Some(Tls {
            roots: vec![ca],
            server_name: "localhost".into(),
        });
    }
    let s = TestServer::start(ServerOptions {
        extra,
        ..Default::default()
    })
    .unwrap();
    (s, addr, tls, dir)
}

/// The `jwt-svid` keys of `bundle show --format jwks`: (kid, key members).
fn bundle_jwt_keys(s: &TestServer) -> Vec<(String, serde_json::Value)> {
    let jwks: serde_json::Value =
        serde_json::from_str(&s.cli_ok(&["bundle", "show", "--format", "jwks"])).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "jwt-svid")
        .map(|k| (k["kid"].as_str().unwrap().to_string(), k.clone()))
        .collect()
}

#[test]
fn item1_oidc_discovery_over_https_serves_the_issuer_and_the_jwt_keys() {
    let (s, addr, tls, _dir) = start(true);
    let tls = tls.unwrap();
    let doc = request(addr, Some(&tls), "GET", "/.well-known/openid-configuration").unwrap();
    assert_eq!(doc.status, 200, "{doc:?}");
    assert_eq!(
        doc.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let age = max_age(&doc.headers["cache-control"]).expect("max-age");
    assert!(age <= 120, "max-age {age} > the 2m refresh hint");
    let d = doc.json();
    assert_eq!(d["issuer"], ISSUER);
    assert_eq!(d["jwks_uri"], format!("{ISSUER}/keys"));
    assert_eq!(
        d["response_types_supported"],
        serde_json::json!(["id_token"])
    );
    assert_eq!(d["subject_types_supported"], serde_json::json!(["public"]));
    assert_eq!(
        d["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256"])
    );

    let keys = request(addr, Some(&tls), "GET", "/keys").unwrap();
    assert_eq!(keys.status, 200, "{keys:?}");
    assert_eq!(
        keys.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert!(max_age(&keys.headers["cache-control"]).is_some_and(|a| a <= 120));
    let published = bundle_jwt_keys(&s);
    assert!(!published.is_empty(), "the bundle publishes no JWT key");
    let served = keys.json()["keys"].as_array().unwrap().clone();
    assert_eq!(
        served.len(),
        published.len(),
        "only the JWT keys: {served:?}"
    );
    for (k, (kid, b)) in served.iter().zip(&published) {
        assert_eq!(k["kid"].as_str(), Some(kid.as_str()));
        assert_eq!(
            (k["use"].as_str(), k["alg"].as_str()),
            (Some("sig"), Some("ES256"))
        );
        for m in ["kty", "crv", "x", "y"] {
            assert_eq!(k[m], b[m], "{m} of {kid}");
        }
        assert!(k.get("x5c").is_none(), "{k}");
    }

    assert_eq!(
        request(addr, Some(&tls), "GET", "/nope").unwrap().status,
        404
    );
    assert_eq!(request(addr, Some(&tls), "GET", "/").unwrap().status, 404);
    assert_eq!(
        request(addr, Some(&tls), "POST", "/keys").unwrap().status,
        405
    );
    assert_eq!(
        request(
            addr,
            Some(&tls),
            "DELETE",
            "/.well-known/openid-configuration"
        )
        .unwrap()
        .status,
        405
    );
    // HTTPS only: a plain request on the TLS port gets no document.
    assert!(request(addr, None, "GET", "/keys").map_or(true, |r| r.status != 200));
}

#[test]
fn item1_oidc_discovery_without_tls_files_serves_plain_http_and_warns() {
    let (s, addr, _, _dir) = start(false);
    let r = request(addr, None, "GET", "/.well-known/openid-configuration").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["issuer"], ISSUER);
    let log = s.log_text();
    assert!(log.contains("OIDC discovery serves plain HTTP"), "{log}");
    let out = sigil_server(&["validate", "--config", s.config.to_str().unwrap()], &[]);
    assert!(
        text(&out.stdout).contains("plain HTTP") || text(&out.stderr).contains("plain HTTP"),
        "validate shows the warning: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn item1_oidc_discovery_without_jwt_issuer_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nbind_address = \"{}\"\n\
             [oidc_discovery]\naddress = \"{}\"\n",
            dir.path().join("data").display(),
            free_addr(),
            free_addr()
        ),
    )
    .unwrap();
    let (out, killed) = run_limited(
        std::process::Command::new(sigil_tests::bin("sigil-server"))
            .args(["run", "--config"])
            .arg(&config),
        Duration::from_secs(30),
    );
    assert!(!killed, "the server started without jwt_issuer");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("jwt_issuer") && err.contains("[oidc_discovery]"),
        "{err}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing written before the refusal"
    );
    let out = sigil_server(&["validate", "--config", config.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("jwt_issuer"),
        "{}",
        text(&out.stderr)
    );
}
