//! `sigil-server jwt mint` against the real server (issue 15 item 4): the
//! token is signed by a key of the published bundle (`bundle show --format
//! jwks` lists it as a `jwt-svid` key with its `kid`), carries `sub`, every
//! `aud`, `iat`/`exp` of the asked TTL (default 5m) and `iss` =
//! `jwt_issuer`; text output is the token alone. Bad input is refused with
//! a message naming it.

use sigil_tests::jwt_check::verify;
use sigil_tests::{ServerOptions, TestServer, text};

const ISSUER: &str = "https://oidc.example.org";

fn jwks(s: &TestServer) -> serde_json::Value {
    serde_json::from_str(&s.cli_ok(&["bundle", "show", "--format", "jwks"])).unwrap()
}

#[test]
fn item2_jwt_mint_signs_with_a_published_key_for_every_audience() {
    let s = TestServer::start(ServerOptions {
        extra: format!("jwt_issuer = \"{ISSUER}\"\n"),
        ..Default::default()
    })
    .unwrap();
    let bundle = jwks(&s);
    let jwt_keys: Vec<&serde_json::Value> = bundle["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "jwt-svid")
        .collect();
    assert!(
        !jwt_keys.is_empty(),
        "bundle show --format jwks has no JWT key: {bundle}"
    );
    for k in &jwt_keys {
        assert!(k["kid"].as_str().is_some_and(|kid| !kid.is_empty()), "{k}");
    }

    let r = s.cli_json(&[
        "jwt",
        "mint",
        "--spiffe-id",
        "spiffe://example.org/ci/job",
        "--audience",
        "sts.amazonaws.com",
        "--audience",
        "vault",
        "--ttl",
        "2m",
    ]);
    let token = r["token"].as_str().unwrap();
    let jwt = verify(token, &bundle).unwrap_or_else(|e| panic!("{e:#}: {r}"));
    assert_eq!(jwt.header["alg"], "ES256");
    assert_eq!(jwt.header["kid"], r["kid"]);
    assert_eq!(jwt.claims["sub"], "spiffe://example.org/ci/job");
    assert_eq!(r["spiffe_id"], "spiffe://example.org/ci/job");
    assert_eq!(
        jwt.claims["aud"],
        serde_json::json!(["sts.amazonaws.com", "vault"])
    );
    assert_eq!(jwt.claims["iss"], ISSUER);
    let (iat, exp) = (
        jwt.claims["iat"].as_i64().unwrap(),
        jwt.claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 120, "--ttl 2m");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((iat - now).abs() < 60, "iat {iat} is now ({now})");

    // Text output: the token alone; the default TTL is 5m.
    let out = s.cli_ok(&[
        "jwt",
        "mint",
        "--spiffe-id",
        "spiffe://example.org/x",
        "--audience",
        "a",
    ]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let jwt = verify(out.trim(), &bundle).unwrap();
    // One audience may be the bare string (RFC 7519 §4.1.3).
    assert!(
        jwt.claims["aud"] == serde_json::json!(["a"]) || jwt.claims["aud"] == "a",
        "{}",
        jwt.claims
    );
    assert_eq!(
        jwt.claims["exp"].as_i64().unwrap() - jwt.claims["iat"].as_i64().unwrap(),
        300
    );
    // The token is a credential: never in the server's log.
    assert!(!s.log_text().contains(token), "the token was logged");
}

#[test]
fn item2_jwt_mint_refuses_bad_input_naming_it() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    for (args, code, needle) in [
        (
            vec!["--spiffe-id", "spiffe://example.org/x"],
            2,
            "--audience",
        ),
        (
            vec!["--spiffe-id", "spiffe://example.org/x", "--audience", ""],
            2,
            "non-empty",
        ),
        (
            vec![
                "--spiffe-id",
                "spiffe://example.org/x",
                "--audience",
                "a",
                "--ttl",
                "5h",
            ],
            1,
            "5h",
        ),
        (
            vec![
                "--spiffe-id",
                "spiffe://example.org/x",
                "--audience",
                "a",
                "--ttl",
                "0s",
            ],
            2,
            "1s",
        ),
        (
            vec!["--spiffe-id", "spiffe://other.org/x", "--audience", "a"],
            1,
            "other.org",
        ),
        (
            vec![
                "--spiffe-id",
                "spiffe://example.org/a//b",
                "--audience",
                "a",
            ],
            2,
            "spiffe-id",
        ),
    ] {
        let mut a = vec!["jwt", "mint"];
        a.extend(&args);
        let out = s.cli(&a);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(text(&out.stdout).is_empty(), "{args:?}");
    }
}
