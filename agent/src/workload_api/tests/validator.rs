//! `ValidateJWTSVID`'s validator with its verified-token cache: a cached
//! token is answered only while the current snapshot and caller would
//! accept it too (its key still published under its `kid`, its trust
//! domain still the caller's, `exp`, `nbf` and `aud`), and the cache stays
//! within its bound.

use serde_json::json;
use sigil_proto::jwt::JwtError;
use sigil_proto::jwt::test_sign::TestJwtKey;

use super::*;
use crate::workload_api::validator::JwtValidator;

const NOW: i64 = 1_800_000_000;
const WEB: &str = "spiffe://example.org/web";

fn token(key: &TestJwtKey, sub: &str, aud: &str, exp: i64) -> pb::ValidateJwtsvidRequest {
    pb::ValidateJwtsvidRequest {
        audience: aud.into(),
        svid: key.sign(&json!({"sub": sub, "aud": [aud, "other"], "exp": exp, "iat": NOW})),
    }
}

fn snap_with(keys: &[&TestJwtKey]) -> Arc<Snapshot> {
    let ca = TestCa::new("example.org");
    let mut s = snapshot(&ca, Vec::new());
    s.jwt_authorities = keys.iter().map(|k| k.jwt_key()).collect();
    Arc::new(s)
}

fn refusal(r: Result<pb::ValidateJwtsvidResponse, CallError>) -> JwtError {
    match r {
        Err(CallError::InvalidToken(e)) => e,
        other => panic!("expected a refused token, got {other:?}"),
    }
}

#[test]
fn i15_1_cached_token_is_refused_once_its_key_is_removed_or_replaced() {
    let k1 = TestJwtKey::es256("k1");
    let k2 = TestJwtKey::es256("k2");
    let v = JwtValidator::new(16);
    let req = token(&k1, WEB, "db", NOW + 300);
    let snap = snap_with(&[&k1, &k2]);
    for _ in 0..2 {
        let ok = v.validate(&snap, &[], &req, NOW).unwrap();
        assert_eq!(ok.spiffe_id, WEB);
        assert_eq!(
            ok.claims.unwrap().fields["sub"].kind,
            Some(prost_types::value::Kind::StringValue(WEB.into()))
        );
    }
    assert_eq!(v.cached(), 1);
    // k1 removed from the bundle (a new snapshot): refused although cached.
    let without = snap_with(&[&k2]);
    assert!(matches!(
        refusal(v.validate(&without, &[], &req, NOW)),
        JwtError::UnknownKid { kid, .. } if kid == "k1"
    ));
    // Another key published under the same kid: the cached verification
    // was by the old key, so the signature is checked again and fails.
    let impostor = TestJwtKey::es256("k1");
    let replaced = snap_with(&[&impostor, &k2]);
    assert!(matches!(
        refusal(v.validate(&replaced, &[], &req, NOW)),
        JwtError::BadSignature { kid, .. } if kid == "k1"
    ));
    // A tainted kid is still published: cached and uncached agree.
    let mut tainted = (*snap).clone();
    tainted.tainted_jwt_key_ids = vec!["k1".into()];
    let tainted = Arc::new(tainted);
    let fresh = JwtValidator::new(16);
    assert_eq!(
        v.validate(&tainted, &[], &req, NOW).is_ok(),
        fresh.validate(&tainted, &[], &req, NOW).is_ok()
    );
}

#[test]
fn i15_1_cached_token_is_checked_again_for_exp_nbf_and_audience() {
    let k1 = TestJwtKey::es256("k1");
    let snap = snap_with(&[&k1]);
    let v = JwtValidator::new(16);
    let req = token(&k1, WEB, "db", NOW + 300);
    v.validate(&snap, &[], &req, NOW).unwrap();
    assert!(matches!(
        refusal(v.validate(&snap, &[], &req, NOW + 300)),
        JwtError::Expired { .. }
    ));
    let other_aud = pb::ValidateJwtsvidRequest {
        audience: "billing".into(),
        svid: req.svid.clone(),
    };
    assert!(matches!(
        refusal(v.validate(&snap, &[], &other_aud, NOW)),
        JwtError::AudienceMismatch { audience, .. } if audience == "billing"
    ));
    // Its other audience is fine.
    let second = pb::ValidateJwtsvidRequest {
        audience: "other".into(),
        svid: req.svid.clone(),
    };
    v.validate(&snap, &[], &second, NOW).unwrap();
    // nbf: valid from NOW + 10 only.
    let nbf = pb::ValidateJwtsvidRequest {
        audience: "db".into(),
        svid: k1.sign(&json!({"sub": WEB, "aud": "db", "exp": NOW + 300, "nbf": NOW + 10})),
    };
    v.validate(&snap, &[], &nbf, NOW + 10).unwrap();
    assert!(matches!(
        refusal(v.validate(&snap, &[], &nbf, NOW + 9)),
        JwtError::NotYetValid { .. }
    ));
}

#[test]
fn i15_1_cached_foreign_token_needs_the_callers_federation() {
    let own = TestJwtKey::es256("own");
    let foreign = TestJwtKey::es256("f1");
    let ca = TestCa::new("example.org");
    let other_td = TrustDomain::parse("b.test").unwrap();
    let uid = format!("unix:uid:{}", my_uid());
    let b = ca.svid(WEB, &[&uid], NOW + 3600);
    let svid = WorkloadSvid {
        entry_id: b.entry_id.clone(),
        spiffe_id: b.spiffe_id.clone(),
        selectors: b.selectors.clone(),
        hint: b.hint.clone(),
        cert_chain: b.cert_chain.clone(),
        key_pkcs8: b.key_pkcs8.clone(),
        not_before: b.not_before,
        not_after: b.not_after,
        federates_with: vec![other_td.clone()],
        entry_created_at: 0,
    };
    let mut s = snapshot(&ca, vec![Arc::new(svid)]);
    s.jwt_authorities = vec![own.jwt_key()];
    s.federated.insert(other_td.clone(), Vec::new());
    s.federated_jwt
        .insert(other_td.clone(), vec![foreign.jwt_key()]);
    let s = Arc::new(s);
    let v = JwtValidator::new(16);
    let req = token(&foreign, "spiffe://b.test/svc", "db", NOW + 300);
    // The federating caller: valid, and cached.
    v.validate(&s, &[sel(&uid)], &req, NOW).unwrap();
    assert_eq!(v.cached(), 1);
    // A caller without that entry may not validate b.test tokens.
    assert!(matches!(
        refusal(v.validate(&s, &[sel("unix:uid:1")], &req, NOW)),
        JwtError::NoBundle { trust_domain, .. } if trust_domain == "b.test"
    ));
}

#[test]
fn i15_1_verified_token_cache_is_bounded() {
    let k1 = TestJwtKey::es256("k1");
    let snap = snap_with(&[&k1]);
    let v = JwtValidator::new(3);
    for i in 0..10 {
        let req = token(&k1, WEB, &format!("aud-{i}"), NOW + 300);
        v.validate(&snap, &[], &req, NOW).unwrap();
        assert!(v.cached() <= 3, "{} cached", v.cached());
    }
}
