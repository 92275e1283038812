//! JWT-SVIDs through the agent's Workload API and CLI against a real
//! server and agent (issue 15 items 3 and 5): `api fetch jwt` and `api
//! validate jwt`, an entry removed stops its tokens at once (not at their
//! `exp`), and a tainted JWT key makes the agent re-mint with the new key.

use std::time::{Duration, Instant};

use serde_json::Value;
use sigil_tests::{ServerOptions, TestAgent, TestServer, sigil_agent, text};

const WEB: &str = "spiffe://example.org/jwt-web";
const API: &str = "spiffe://example.org/jwt-api";

/// `api fetch jwt` for `audience` (and `spiffe_id`, if given), once.
fn fetch_once(a: &TestAgent, audience: &[&str], spiffe_id: Option<&str>) -> std::process::Output {
    let sock = a.socket.display().to_string();
    let mut args = vec!["api", "fetch", "jwt", "--output", "json", "--timeout", "1s"];
    for aud in audience {
        args.extend(["--audience", aud]);
    }
    if let Some(id) = spiffe_id {
        args.extend(["--spiffe-id", id]);
    }
    args.extend(["--socket", &sock]);
    sigil_agent(&args, &[])
}

/// `api fetch jwt` until it succeeds (bounded); the tokens by SPIFFE ID.
fn fetch(a: &TestAgent, audience: &[&str], spiffe_id: Option<&str>) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = fetch_once(a, audience, spiffe_id);
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("not JSON: {e}: {}", text(&out.stdout)));
            return v["svids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["spiffe_id"].as_str().unwrap().to_string(),
                        s["svid"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "api fetch jwt never succeeded: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn validate(a: &TestAgent, audience: &str, token: &str) -> std::process::Output {
    let sock = a.socket.display().to_string();
    sigil_agent(
        &[
            "api",
            "validate",
            "jwt",
            "--output",
            "json",
            "--audience",
            audience,
            "--svid",
            token,
            "--socket",
            &sock,
        ],
        &[],
    )
}

fn token(t: &str) -> sigil_proto::jwt::Token {
    sigil_proto::jwt::Token::parse(t).unwrap()
}

#[test]
fn jwt_cli_fetch_and_validate_against_a_real_server_and_agent() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    s.register_uid(&a, WEB);
    let svids = fetch(&a, &["db", "vault"], None);
    assert_eq!(svids.len(), 1, "{svids:?}");
    let (id, jwt) = &svids[0];
    assert_eq!(id, WEB);
    let t = token(jwt);
    assert_eq!(t.header.typ.as_deref(), Some("JWT"));
    assert!(t.header.kid.as_deref().is_some_and(|k| !k.is_empty()));
    assert_eq!(t.claims["sub"], WEB);
    let mut aud: Vec<&str> = t.claims["aud"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    aud.sort();
    assert_eq!(aud, ["db", "vault"]);
    assert!(t.time_claim("exp").unwrap().unwrap() > t.time_claim("iat").unwrap().unwrap());

    // Valid for each of its audiences, with every claim.
    let out = validate(&a, "vault", jwt);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["spiffe_id"], WEB);
    assert_eq!(v["claims"]["sub"], WEB);
    assert_eq!(v["claims"]["exp"], t.claims["exp"]);
    // Another audience, a tampered token: refused with the reason.
    let out = validate(&a, "billing", jwt);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("InvalidArgument") || err.contains("invalid argument"),
        "{err}"
    );
    assert!(err.contains("billing"), "{err}");
    let mut parts: Vec<&str> = jwt.split('.').collect();
    let forged = base64_claims(&t.claims, "spiffe://example.org/admin");
    parts[1] = &forged;
    let out = validate(&a, "db", &parts.join("."));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("signature does not verify"),
        "{}",
        text(&out.stderr)
    );
    // Empty audience: refused by the Workload API.
    let out = fetch_once(&a, &[""], None);
    assert!(!out.status.success());
    // A SPIFFE ID that is not the caller's.
    let out = fetch_once(&a, &["db"], Some(API));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("PermissionDenied") || text(&out.stderr).contains("permission"),
        "{}",
        text(&out.stderr)
    );
}

fn base64_claims(claims: &serde_json::Map<String, Value>, sub: &str) -> String {
    use base64::Engine as _;
    let mut c = claims.clone();
    c.insert("sub".into(), sub.into());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Value::Object(c).to_string())
}

#[test]
fn item3_entry_removed_agent_stops_that_spiffe_ids_tokens_at_once() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    s.register_uid(&a, WEB);
    s.register_uid(&a, API);
    let deadline = Instant::now() + Duration::from_secs(30);
    let both = loop {
        let svids = fetch(&a, &["db"], None);
        if svids.len() == 2 || Instant::now() > deadline {
            break svids;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(both.len(), 2, "{both:?}");
    let web_token = both.iter().find(|(id, _)| id == WEB).unwrap().1.clone();
    let exp = token(&web_token).time_claim("exp").unwrap().unwrap();

    s.cli_ok(&["entry", "delete", "--spiffe-id", WEB]);
    let removed = Instant::now();
    // Refused once the deletion reaches the agent: seconds, not the
    // token's remaining life.
    loop {
        let out = fetch_once(&a, &["db"], Some(WEB));
        if !out.status.success() {
            let err = text(&out.stderr);
            assert!(
                err.contains("PermissionDenied") || err.contains("permission"),
                "{err}"
            );
            break;
        }
        assert!(
            removed.elapsed() < Duration::from_secs(20),
            "the agent still hands out {WEB}'s token after the entry was removed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        exp > now + 60,
        "the token was not about to expire anyway (exp {exp}, now {now})"
    );
    // The other identity is still served; the default list lacks the removed one.
    let svids = fetch(&a, &["db"], None);
    let ids: Vec<&str> = svids.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, [API]);
}

#[test]
fn item3_tainted_jwt_key_makes_the_agent_remint_with_the_new_key() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    s.register_uid(&a, WEB);
    let first = fetch(&a, &["db"], None).remove(0).1;
    let old_kid = token(&first).header.kid.unwrap();
    // Cached: the same token again.
    assert_eq!(fetch(&a, &["db"], None).remove(0).1, first);

    s.cli_ok(&["ca", "prepare", "--kind", "jwt"]);
    s.cli_ok(&["ca", "activate", "--kind", "jwt", "--force"]);
    s.cli_ok(&["ca", "taint", "--kind", "jwt", "old"]);
    let tainted = Instant::now();
    let second = loop {
        let t = fetch(&a, &["db"], None).remove(0).1;
        if token(&t).header.kid.as_deref() != Some(&old_kid) {
            break t;
        }
        assert!(
            tainted.elapsed() < Duration::from_secs(20),
            "the agent still serves the token of the tainted key {old_kid}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(second, first);
    let out = validate(&a, "db", &second);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
