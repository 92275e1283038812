//! Tests of the JWT-SVID cache with a fake minter and a `ManualClock`:
//! reuse until half life, re-mint after, serving a still-valid token while
//! the server is down but never past `exp`, tainted keys, pruning on a
//! snapshot, the bound.

use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use sigil_proto::clock::ManualClock;
use sigil_proto::jwt::test_sign::TestJwtKey;

use super::*;
use crate::state::WorkloadSvid;

/// What the fake minter does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Sign,
    Fail,
    Refuse,
}

/// Signs tokens with a test key for entries `entry-<SPIFFE ID>`, `ttl`
/// seconds long, counting its calls.
pub(crate) struct FakeMinter {
    pub(crate) key: StdMutex<TestJwtKey>,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) ttl: i64,
    pub(crate) calls: AtomicUsize,
    pub(crate) mode: StdMutex<Mode>,
}

impl FakeMinter {
    pub(crate) fn new(clock: Arc<ManualClock>, key: TestJwtKey, ttl: i64) -> Arc<FakeMinter> {
        Arc::new(FakeMinter {
            key: StdMutex::new(key),
            clock,
            ttl,
            calls: AtomicUsize::new(0),
            mode: StdMutex::new(Mode::Sign),
        })
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub(crate) fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

impl JwtMinter for FakeMinter {
    fn mint_jwt_svid<'a>(&'a self, entry_id: &'a str, audience: &'a [String]) -> MintFuture<'a> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match *self.mode.lock().unwrap() {
                Mode::Fail => return Err(MintError::Failed("server unreachable".into())),
                Mode::Refuse => return Err(MintError::Unauthorized("not your entry".into())),
                Mode::Sign => {}
            }
            let sub = entry_id.strip_prefix("entry-").unwrap();
            let iat = self.clock.now_unix();
            let token = self.key.lock().unwrap().sign(&json!({
                "sub": sub, "aud": audience, "iat": iat, "exp": iat + self.ttl,
            }));
            Ok(MintedJwt {
                token,
                issued_at: iat,
                expires_at: iat + self.ttl,
            })
        })
    }
}

const T0: u64 = 1_800_000_000;
const WEB: &str = "spiffe://example.org/web";

fn setup(max: usize) -> (Arc<ManualClock>, Arc<FakeMinter>, JwtCache) {
    let clock = Arc::new(ManualClock::at_unix(T0));
    let minter = FakeMinter::new(clock.clone(), TestJwtKey::es256("k1"), 300);
    let cache = JwtCache::new(minter.clone(), clock.clone(), max);
    (clock, minter, cache)
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn aud(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

async fn fetch(cache: &JwtCache, spiffe_id: &str, audience: &[&str]) -> Result<String, MintError> {
    cache
        .fetch(
            &format!("entry-{spiffe_id}"),
            &id(spiffe_id),
            &aud(audience),
            &[],
        )
        .await
}

pub(crate) fn svid_named(spiffe_id: &str) -> Arc<WorkloadSvid> {
    Arc::new(WorkloadSvid {
        entry_id: format!("entry-{spiffe_id}"),
        spiffe_id: id(spiffe_id),
        selectors: Vec::new(),
        hint: String::new(),
        cert_chain: Vec::new(),
        key_pkcs8: Vec::new(),
        not_before: 0,
        not_after: i64::MAX,
        federates_with: Vec::new(),
        entry_created_at: 0,
    })
}

#[tokio::test]
async fn jwt_cache_reuses_a_token_until_half_life_then_remints() {
    let (clock, minter, cache) = setup(10);
    let a = fetch(&cache, WEB, &["db", "cache"]).await.unwrap();
    // Same audience set in another order and with a duplicate: cached.
    let b = fetch(&cache, WEB, &["cache", "db", "db"]).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(minter.calls(), 1);
    // Another audience set is another token.
    fetch(&cache, WEB, &["db"]).await.unwrap();
    assert_eq!(minter.calls(), 2);
    clock.advance(Duration::from_secs(149));
    assert_eq!(fetch(&cache, WEB, &["db", "cache"]).await.unwrap(), a);
    assert_eq!(minter.calls(), 2);
    // Half of the 300 s life: re-minted.
    clock.advance(Duration::from_secs(1));
    let c = fetch(&cache, WEB, &["db", "cache"]).await.unwrap();
    assert_ne!(c, a);
    assert_eq!(minter.calls(), 3);
}

#[tokio::test]
async fn jwt_cache_never_serves_a_token_past_its_exp() {
    let (clock, minter, cache) = setup(10);
    let a = fetch(&cache, WEB, &["db"]).await.unwrap();
    minter.set(Mode::Fail);
    // Past half life, server down: the old token, still valid, is served.
    clock.advance(Duration::from_secs(200));
    assert_eq!(fetch(&cache, WEB, &["db"]).await.unwrap(), a);
    // At its exp: never.
    clock.advance(Duration::from_secs(100));
    let e = fetch(&cache, WEB, &["db"]).await.unwrap_err();
    assert!(matches!(e, MintError::Failed(_)), "{e:?}");
    assert!(cache.is_empty());
}

#[tokio::test]
async fn jwt_cache_drops_tokens_of_a_tainted_key_and_remints() {
    let (_clock, minter, cache) = setup(10);
    let a = fetch(&cache, WEB, &["db"]).await.unwrap();
    *minter.key.lock().unwrap() = TestJwtKey::es256("k2");
    let b = cache
        .fetch(
            &format!("entry-{WEB}"),
            &id(WEB),
            &aud(&["db"]),
            &["k1".into()],
        )
        .await
        .unwrap();
    assert_ne!(a, b);
    let kid = sigil_proto::jwt::Token::parse(&b).unwrap().header.kid;
    assert_eq!(kid.as_deref(), Some("k2"));
    assert_eq!(minter.calls(), 2);
}

#[tokio::test]
async fn jwt_cache_prune_drops_removed_identities_and_tainted_keys() {
    let (_clock, minter, cache) = setup(10);
    fetch(&cache, WEB, &["db"]).await.unwrap();
    fetch(&cache, "spiffe://example.org/api", &["db"])
        .await
        .unwrap();
    assert_eq!(cache.len(), 2);
    let td = sigil_proto::TrustDomain::parse("example.org").unwrap();
    let mut snap = Snapshot::empty(td, Vec::new());
    snap.svids = vec![svid_named(WEB)];
    cache.prune(&snap);
    assert_eq!(cache.len(), 1);
    snap.tainted_jwt_key_ids = vec!["k1".into()];
    cache.prune(&snap);
    assert!(cache.is_empty());
    // A refusal of the entry drops what is cached for it.
    snap.tainted_jwt_key_ids.clear();
    fetch(&cache, WEB, &["db"]).await.unwrap();
    minter.set(Mode::Refuse);
    assert!(matches!(
        fetch(&cache, WEB, &["x"]).await,
        Err(MintError::Unauthorized(_))
    ));
}

#[tokio::test]
async fn jwt_cache_is_bounded() {
    let (clock, _minter, cache) = setup(2);
    fetch(&cache, WEB, &["a"]).await.unwrap();
    clock.advance(Duration::from_secs(1));
    fetch(&cache, WEB, &["b"]).await.unwrap();
    clock.advance(Duration::from_secs(1));
    fetch(&cache, WEB, &["c"]).await.unwrap();
    assert_eq!(cache.len(), 2);
}
