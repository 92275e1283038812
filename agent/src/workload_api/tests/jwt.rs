//! The JWT methods on a real Workload API socket, with a fake minter and a
//! `ManualClock`: FetchJWTSVID (identities, `spiffe_id`, entry removal,
//! tainted keys), FetchJWTBundles (JWK Sets, updates) and ValidateJWTSVID
//! (claims as a `Struct`, each refusal of issue 15 as `InvalidArgument`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sigil_proto::jwt::test_sign::TestJwtKey;

use super::*;
use crate::cache::JwtCache;
use crate::cache::jwt::tests::{FakeMinter, Mode};

const T0: u64 = 1_800_000_000;
const NOW: i64 = T0 as i64;
const WEB: &str = "spiffe://example.org/web";
const API: &str = "spiffe://example.org/api";

struct JwtHarness {
    h: Harness,
    clock: Arc<ManualClock>,
    minter: Arc<FakeMinter>,
    cache: Arc<JwtCache>,
    snap: Snapshot,
}

impl JwtHarness {
    /// The caller has `ids` (in that order); the minter signs with `key`,
    /// which is the bundle's one JWT authority.
    async fn start(ids: &[&str], key: TestJwtKey) -> JwtHarness {
        let ca = TestCa::new("example.org");
        let clock = Arc::new(ManualClock::at_unix(T0));
        let mut snap = snapshot(&ca, Vec::new());
        snap.jwt_authorities = vec![key.jwt_key()];
        let uid = format!("unix:uid:{}", my_uid());
        snap.svids = ids
            .iter()
            .map(|id| ca.svid(id, &[&uid], NOW + 3600))
            .collect();
        let minter = FakeMinter::new(clock.clone(), key, 300);
        let cache = Arc::new(JwtCache::new(minter.clone(), clock.clone(), 100));
        let h = Harness::start_full(
            snap.clone(),
            &[&uid],
            WorkloadApiLimits {
                refresh_interval: Duration::from_millis(50),
                ..Default::default()
            },
            Some(clock.clone()),
            Some(cache.clone()),
        )
        .await;
        JwtHarness {
            h,
            clock,
            minter,
            cache,
            snap,
        }
    }

    fn publish(&self) {
        self.h.state.send_replace(Arc::new(self.snap.clone()));
    }

    async fn fetch(&self, audience: &[&str], spiffe_id: &str) -> Result<Vec<pb::Jwtsvid>, Status> {
        let r = pb::JwtsvidRequest {
            audience: audience.iter().map(|s| s.to_string()).collect(),
            spiffe_id: spiffe_id.into(),
        };
        let mut c = self.h.client().await;
        Ok(c.fetch_jwtsvid(req(r, Header::Good))
            .await?
            .into_inner()
            .svids)
    }

    async fn validate(
        &self,
        audience: &str,
        svid: &str,
    ) -> Result<pb::ValidateJwtsvidResponse, Status> {
        let r = pb::ValidateJwtsvidRequest {
            audience: audience.into(),
            svid: svid.into(),
        };
        let mut c = self.h.client().await;
        Ok(c.validate_jwtsvid(req(r, Header::Good)).await?.into_inner())
    }

    /// A token signed by the bundle's key with `claims`.
    fn sign(&self, claims: &Value) -> String {
        self.minter.key.lock().unwrap().sign(claims)
    }
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn kid_of(token: &str) -> String {
    sigil_proto::jwt::Token::parse(token)
        .unwrap()
        .header
        .kid
        .unwrap()
}

#[tokio::test]
async fn fetch_jwt_svid_serves_every_identity_of_the_caller_default_first() {
    let j = JwtHarness::start(&[WEB, API], TestJwtKey::es256("k1")).await;
    let svids = j.fetch(&["db", "cache"], "").await.unwrap();
    let ids: Vec<&str> = svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(ids, [WEB, API]);
    for s in &svids {
        let c = claims_of(&s.svid);
        assert_eq!(c["sub"], json!(s.spiffe_id));
        assert_eq!(c["aud"], json!(["cache", "db"]));
        assert_eq!(s.hint, format!("hint {}", s.spiffe_id));
        // Each validates through the same socket.
        let v = j.validate("db", &s.svid).await.unwrap();
        assert_eq!(v.spiffe_id, s.spiffe_id);
    }
    // Cached: asked again, nothing is minted.
    assert_eq!(j.minter.calls(), 2);
    j.fetch(&["cache", "db"], "").await.unwrap();
    assert_eq!(j.minter.calls(), 2);
    // Only the one asked for.
    let svids = j.fetch(&["db"], API).await.unwrap();
    assert_eq!(svids.len(), 1);
    assert_eq!(svids[0].spiffe_id, API);
}

#[tokio::test]
async fn fetch_jwt_svid_refuses_a_spiffe_id_that_is_not_the_callers() {
    let j = JwtHarness::start(&[WEB], TestJwtKey::es256("k1")).await;
    let e = j.fetch(&["db"], API).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains(API), "{e:?}");
    let e = j.fetch(&[], "").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(j.minter.calls(), 0);
    // A caller with no identity at all.
    let j = JwtHarness::start(&[], TestJwtKey::es256("k1")).await;
    let e = j.fetch(&["db"], "").await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::PermissionDenied, NO_IDENTITY)
    );
    // The server unreachable and nothing cached.
    let j = JwtHarness::start(&[WEB], TestJwtKey::es256("k1")).await;
    j.minter.set(Mode::Fail);
    let e = j.fetch(&["db"], "").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
}

#[tokio::test]
async fn item3_entry_removed_stops_its_tokens_at_once() {
    let mut j = JwtHarness::start(&[WEB, API], TestJwtKey::es256("k1")).await;
    j.fetch(&["db"], WEB).await.unwrap();
    assert_eq!(j.minter.calls(), 1);
    // The entry of WEB is removed: the next snapshot has no SVID for it.
    j.snap.svids.retain(|s| s.spiffe_id.as_str() != WEB);
    j.publish();
    let e = j.fetch(&["db"], WEB).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let svids = j.fetch(&["db"], "").await.unwrap();
    assert_eq!(svids.len(), 1);
    assert_eq!(svids[0].spiffe_id, API);
    // The cached token itself is dropped on the snapshot.
    j.cache.prune(&j.snap);
    assert_eq!(j.cache.len(), 1);
}

#[tokio::test]
async fn item3_tainted_jwt_key_makes_the_agent_remint() {
    let mut j = JwtHarness::start(&[WEB], TestJwtKey::es256("k1")).await;
    let first = j.fetch(&["db"], "").await.unwrap().remove(0).svid;
    assert_eq!(kid_of(&first), "k1");
    // The server rotates to k2 and taints k1.
    let k2 = TestJwtKey::es256("k2");
    j.snap.jwt_authorities.push(k2.jwt_key());
    j.snap.tainted_jwt_key_ids = vec!["k1".into()];
    *j.minter.key.lock().unwrap() = k2;
    j.publish();
    let second = j.fetch(&["db"], "").await.unwrap().remove(0).svid;
    assert_eq!(kid_of(&second), "k2");
    assert_eq!(j.minter.calls(), 2);
    j.validate("db", &second).await.unwrap();
}

#[tokio::test]
async fn fetch_jwt_bundles_streams_jwks_with_kid_and_use_and_sends_changes() {
    let mut j = JwtHarness::start(&[WEB], TestJwtKey::es256("k1")).await;
    let mut c = j.h.client().await;
    let mut s = c
        .fetch_jwt_bundles(req(pb::JwtBundlesRequest {}, Header::Good))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut s).await.unwrap().unwrap();
    let jwks: Value = serde_json::from_slice(&first.bundles["spiffe://example.org"]).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], "k1");
    assert_eq!(keys[0]["use"], "jwt-svid");
    assert_eq!(keys[0]["kty"], "EC");
    // The same keys again: nothing sent. A new key: a new message.
    j.publish();
    j.snap.jwt_authorities.push(TestJwtKey::rsa("k2").jwt_key());
    j.publish();
    let second = next(&mut s).await.unwrap().unwrap();
    let jwks: Value = serde_json::from_slice(&second.bundles["spiffe://example.org"]).unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["k1", "k2"]);
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["use"] == "jwt-svid")
    );
}

#[tokio::test]
async fn validate_jwt_svid_returns_sub_and_every_claim_as_a_struct() {
    let j = JwtHarness::start(&[WEB], TestJwtKey::es256("k1")).await;
    let t = j.sign(&json!({
        "sub": WEB, "aud": ["db"], "exp": NOW + 60, "iat": NOW,
        "extra": {"n": 1, "l": [true, null, "s"]},
    }));
    let v = j.validate("db", &t).await.unwrap();
    assert_eq!(v.spiffe_id, WEB);
    let claims = v.claims.unwrap();
    use prost_types::value::Kind;
    assert_eq!(
        claims.fields["exp"].kind,
        Some(Kind::NumberValue((NOW + 60) as f64))
    );
    assert_eq!(
        claims.fields["sub"].kind,
        Some(Kind::StringValue(WEB.into()))
    );
    let Some(Kind::StructValue(extra)) = &claims.fields["extra"].kind else {
        panic!("extra: {:?}", claims.fields["extra"]);
    };
    assert_eq!(extra.fields["n"].kind, Some(Kind::NumberValue(1.0)));
    let Some(Kind::ListValue(l)) = &extra.fields["l"].kind else {
        panic!("l");
    };
    assert_eq!(l.values.len(), 3);
    // The clock is the service's: past exp, refused.
    j.clock.advance(Duration::from_secs(60));
    let e = j.validate("db", &t).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("expired"), "{e:?}");
}

/// Every refusal of issue 15's list, each `InvalidArgument` with its reason.
#[tokio::test]
async fn validate_jwt_svid_refuses_each_bad_token_with_its_reason() {
    let j = JwtHarness::start(&[WEB], TestJwtKey::es256("k1")).await;
    let good = json!({"sub": WEB, "aud": ["db"], "exp": NOW + 60});
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let payload = b64(&good);

    let none = format!("{}.{payload}.", b64(&json!({"alg": "none", "kid": "k1"})));
    let hs_input = format!("{}.{payload}", b64(&json!({"alg": "HS256", "kid": "k1"})));
    let spki = j.snap.jwt_authorities[0].spki_der.clone();
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &spki),
        hs_input.as_bytes(),
    );
    let hs256 = format!("{hs_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    let unknown_kid = TestJwtKey::es256("k9").sign(&good);
    let expired = j.sign(&json!({"sub": WEB, "aud": ["db"], "exp": NOW - 1}));
    let no_exp = j.sign(&json!({"sub": WEB, "aud": ["db"]}));
    let token = j.sign(&good);
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = b64(&json!({"sub": "spiffe://example.org/admin", "aud": ["db"], "exp": NOW + 60}));
    let tampered = parts.join(".");
    let foreign = j.sign(&json!({"sub": "spiffe://other.org/web", "aud": ["db"], "exp": NOW + 60}));
    let oversized =
        j.sign(&json!({"sub": WEB, "aud": ["db"], "exp": NOW + 60, "pad": "x".repeat(20_000)}));

    let cases: [(&str, &str, String); 9] = [
        ("alg none", "\"none\"", none),
        ("HS256 with the public key", "HMAC", hs256),
        ("unknown kid", "k9", unknown_kid),
        ("wrong audience", "billing", token.clone()),
        ("expired", "expired", expired),
        ("missing exp", "no \"exp\"", no_exp),
        ("tampered payload", "signature does not verify", tampered),
        ("no bundle for the trust domain", "other.org", foreign),
        ("oversized", "more than the limit", oversized),
    ];
    for (what, reason, t) in cases {
        let audience = if what == "wrong audience" {
            "billing"
        } else {
            "db"
        };
        let e = j.validate(audience, &t).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(e.message().contains(reason), "{what}: {e:?}");
    }
    j.validate("db", &token).await.unwrap();
}

/// The JWT bundles served to the harness's caller, by trust domain ID.
async fn jwt_bundles(j: &JwtHarness) -> (Vec<String>, HashMap<String, Vec<u8>>) {
    let mut c = j.h.client().await;
    let mut s = c
        .fetch_jwt_bundles(req(pb::JwtBundlesRequest {}, Header::Good))
        .await
        .unwrap()
        .into_inner();
    let m = next(&mut s).await.unwrap().unwrap();
    let mut tds: Vec<String> = m.bundles.keys().cloned().collect();
    tds.sort();
    (tds, m.bundles)
}

/// Issue 16 item 3: a caller whose SVID's entry federates with b.test
/// validates b.test's tokens and is served b.test's JWT bundle; a caller
/// whose entries do not federate with it gets neither.
#[tokio::test]
async fn i16_3_federated_jwt_bundles_validate_only_for_federating_callers() {
    let mut j = JwtHarness::start(&[WEB], TestJwtKey::es256("k1")).await;
    let b = TrustDomain::parse("b.test").unwrap();
    let foreign = TestJwtKey::es256("b1");
    j.snap.federated.insert(b.clone(), Vec::new());
    j.snap
        .federated_jwt
        .insert(b.clone(), vec![foreign.jwt_key()]);
    j.publish();
    let token = foreign.sign(&json!({
        "sub": "spiffe://b.test/server", "aud": ["db"], "exp": NOW + 60, "iat": NOW,
    }));
    let e = j.validate("db", &token).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(jwt_bundles(&j).await.0, ["spiffe://example.org"]);

    // The caller's entry now federates with b.test.
    let s = j.snap.svids[0].clone();
    j.snap.svids = vec![Arc::new(WorkloadSvid {
        entry_id: s.entry_id.clone(),
        spiffe_id: s.spiffe_id.clone(),
        selectors: s.selectors.clone(),
        hint: s.hint.clone(),
        cert_chain: s.cert_chain.clone(),
        key_pkcs8: s.key_pkcs8.clone(),
        not_before: s.not_before,
        not_after: s.not_after,
        federates_with: vec![b.clone()],
        entry_created_at: s.entry_created_at,
    })];
    j.publish();
    let v = j.validate("db", &token).await.unwrap();
    assert_eq!(v.spiffe_id, "spiffe://b.test/server");
    let (tds, all) = jwt_bundles(&j).await;
    assert_eq!(tds, ["spiffe://b.test", "spiffe://example.org"]);
    let jwks: Value = serde_json::from_slice(&all["spiffe://b.test"]).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], "b1");
}
