//! The Issuer's JWT-SVID tests: a minted token's header and claims, its
//! signature verified with ring against the bundle's JWT key for every key
//! type, audience refusals, authorization and TTL choice.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, UnparsedPublicKey};
use sigil_proto::SpiffeId;
use sigil_proto::clock::{Clock, unix_seconds};
use x509_parser::prelude::FromDer;

use super::super::{IssueError, Issuer, IssuerSettings};
use super::JwtIssueSettings;
use crate::ca::manager::CaManager;
use crate::ca::testing::{self, TTL};
use crate::config::server_id;
use crate::entry::EntrySpec;
use crate::key_manager::KeyType;
use crate::key_manager::memory::MemoryKeyManager;
use crate::registry::Registry;
use crate::store::AttestedAgent;

const AGENT: &str = "spiffe://example.org/sigil/agent/join_token/n1";

struct Fixture {
    _dir: tempfile::TempDir,
    ca: Arc<CaManager>,
    registry: Arc<Registry>,
    issuer: Issuer,
    agent: AttestedAgent,
    now: i64,
}

fn fixture(key_type: KeyType, iss: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = testing::clock();
    let store = testing::store(dir.path());
    let ca = testing::start_with_jwt(
        store.clone(),
        Arc::new(MemoryKeyManager::default()),
        clock.clone(),
        None,
        key_type,
    );
    let registry = Registry::load(store, server_id(ca.trust_domain())).unwrap();
    let now = unix_seconds(clock.now());
    let issuer = Issuer::new(
        ca.clone(),
        clock,
        IssuerSettings {
            agent_svid_ttl: Duration::from_secs(3600),
            default_x509_svid_ttl: Duration::from_secs(600),
            max_x509_svid_ttl: TTL / 6,
        },
    )
    .with_jwt(JwtIssueSettings {
        default_ttl: Duration::from_secs(300),
        max_ttl: TTL / 6,
        issuer: iss.map(str::to_string),
    });
    let agent = AttestedAgent {
        spiffe_id: SpiffeId::parse(AGENT).unwrap(),
        attestor: "join_token".into(),
        selectors: vec![],
        serial: "01".into(),
        previous_serial: None,
        expires_at: now + 3600,
        ca_serial: None,
        banned: false,
        ban_rules: vec![],
        attested_at: now,
        updated_at: now,
    };
    Fixture {
        _dir: dir,
        ca,
        registry,
        issuer,
        agent,
        now,
    }
}

fn entry(f: &Fixture, spiffe_id: &str, parent: &str, jwt_ttl: u64) -> String {
    let spec = EntrySpec {
        spiffe_id: SpiffeId::parse(spiffe_id).unwrap(),
        parent_id: SpiffeId::parse(parent).unwrap(),
        selectors: vec![sigil_proto::Selector::parse("unix:uid:1000").unwrap()],
        x509_svid_ttl: 0,
        jwt_svid_ttl: jwt_ttl,
        dns_names: vec![],
        federates_with: vec![],
        hint: String::new(),
        admin: false,
        downstream: false,
        expires_at: None,
    };
    f.registry.create(spec, 0).unwrap().id
}

fn aud(a: &[&str]) -> Vec<String> {
    a.iter().map(ToString::to_string).collect()
}

/// Verifies `token` with ring against the bundle's key of its `kid`;
/// returns the header and the claims.
fn verify(ca: &CaManager, token: &str) -> (serde_json::Value, serde_json::Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "compact JWS: {token}");
    let json = |p: &str| -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
    };
    let (header, claims) = (json(parts[0]), json(parts[1]));
    let kid = header["kid"].as_str().expect("kid");
    let bundle = ca.bundle();
    let key = bundle
        .jwt_authorities
        .iter()
        .find(|a| a.kid == kid)
        .unwrap_or_else(|| panic!("kid {kid} is not in the bundle"));
    let (_, spki) =
        x509_parser::x509::SubjectPublicKeyInfo::from_der(&key.public_key).expect("SPKI");
    let alg: &dyn signature::VerificationAlgorithm = match header["alg"].as_str().unwrap() {
        "ES256" => &signature::ECDSA_P256_SHA256_FIXED,
        "ES384" => &signature::ECDSA_P384_SHA384_FIXED,
        "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
        other => panic!("unexpected alg {other}"),
    };
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let signed = format!("{}.{}", parts[0], parts[1]);
    UnparsedPublicKey::new(alg, spki.subject_public_key.data.as_ref())
        .verify(signed.as_bytes(), &sig)
        .expect("signature verifies with the bundle key");
    // A tampered payload does not verify: the check above can fail.
    let tampered = format!("{}.{}x", parts[0], parts[1]);
    assert!(
        UnparsedPublicKey::new(alg, spki.subject_public_key.data.as_ref())
            .verify(tampered.as_bytes(), &sig)
            .is_err()
    );
    (header, claims)
}

#[test]
fn i15_2_minted_token_verifies_with_ring_for_each_key_type() {
    for (key_type, alg) in [
        (KeyType::EcP256, "ES256"),
        (KeyType::EcP384, "ES384"),
        (KeyType::Rsa2048, "RS256"),
        (KeyType::Rsa4096, "RS256"),
    ] {
        let f = fixture(key_type, None);
        let id = entry(&f, "spiffe://example.org/web", AGENT, 0);
        let t = f
            .issuer
            .sign_workload_jwt(&f.registry, &f.agent, &id, &aud(&["vault"]))
            .unwrap();
        let (header, claims) = verify(&f.ca, &t.token);
        assert_eq!(header["alg"], alg, "{key_type:?}");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], f.ca.jwt_active().kid());
        assert_eq!(header.as_object().unwrap().len(), 3, "{header}");
        assert_eq!(claims["sub"], "spiffe://example.org/web");
        assert_eq!(claims["aud"], "vault");
        assert_eq!(claims["iat"], f.now);
        assert_eq!(claims["exp"], f.now + 300, "the default TTL");
        assert!(claims.get("iss").is_none(), "no iss unless configured");
        assert_eq!((t.issued_at, t.expires_at), (f.now, f.now + 300));
        assert!(f.ca.jwt_active().kid().len() >= 32, "128-bit kid");
    }
}

#[test]
fn i15_2_every_audience_iss_and_entry_ttl_are_in_the_claims() {
    let f = fixture(KeyType::EcP256, Some("https://oidc.example.org"));
    let id = entry(&f, "spiffe://example.org/db", AGENT, 120);
    let t = f
        .issuer
        .sign_workload_jwt(&f.registry, &f.agent, &id, &aud(&["a", "b"]))
        .unwrap();
    let (_, claims) = verify(&f.ca, &t.token);
    assert_eq!(claims["aud"], serde_json::json!(["a", "b"]));
    assert_eq!(claims["iss"], "https://oidc.example.org");
    assert_eq!(claims["exp"], f.now + 120, "the entry's jwt_svid_ttl");
    // An entry TTL above ca_ttl / 6 (stored before ca_ttl was lowered) is
    // capped at it.
    let long = entry(&f, "spiffe://example.org/long", AGENT, 10 * TTL.as_secs());
    let t = f
        .issuer
        .sign_workload_jwt(&f.registry, &f.agent, &long, &aud(&["a"]))
        .unwrap();
    assert_eq!(t.expires_at - t.issued_at, (TTL / 6).as_secs() as i64);
}

#[test]
fn i15_2_empty_or_blank_audience_and_foreign_entries_are_refused() {
    let f = fixture(KeyType::EcP256, None);
    let id = entry(&f, "spiffe://example.org/web", AGENT, 0);
    for bad in [aud(&[]), aud(&[""]), aud(&["ok", "  "])] {
        let e = f
            .issuer
            .sign_workload_jwt(&f.registry, &f.agent, &id, &bad)
            .unwrap_err();
        assert!(
            matches!(&e, IssueError::BadRequest(m) if m.contains("audience")),
            "{bad:?}: {e}"
        );
    }
    let other = entry(
        &f,
        "spiffe://example.org/theirs",
        "spiffe://example.org/sigil/agent/join_token/n2",
        0,
    );
    let e = f
        .issuer
        .sign_workload_jwt(&f.registry, &f.agent, &other, &aud(&["a"]))
        .unwrap_err();
    assert!(matches!(e, IssueError::NotAuthorized { .. }), "{e}");
}

#[test]
fn i15_2_minted_ttl_is_checked() {
    let f = fixture(KeyType::EcP256, None);
    let id = SpiffeId::parse("spiffe://example.org/op").unwrap();
    let t = f.issuer.mint_jwt(&id, &aud(&["x"]), None).unwrap();
    verify(&f.ca, &t.token);
    assert_eq!(t.expires_at - t.issued_at, 300);
    let e = f
        .issuer
        .mint_jwt(&id, &aud(&["x"]), Some(TTL / 6 + Duration::from_secs(1)))
        .unwrap_err();
    assert!(e.to_string().contains("ca_ttl / 6"), "{e}");
    let _ = f.issuer.clock().now();
}
