//! The JWT-SVID cache: tokens are minted on demand, when a workload asks,
//! through a [`JwtMinter`] (the server's `MintJwtSvid`), and kept keyed by
//! (SPIFFE ID, sorted audience set). A cached token is served until half its
//! life has passed, then re-minted; if the server cannot be reached then, the
//! old token is served while it is still valid, and never past its `exp`.
//! Tokens signed by a tainted JWT key, and tokens of a SPIFFE ID no entry of
//! the agent names any more, are dropped ([`JwtCache::prune`], run on every
//! snapshot; the Workload API also serves a SPIFFE ID only to a caller that
//! has it in the current snapshot, so a removed entry stops its tokens at
//! once). At most `max` tokens are kept: expired ones go first, then the
//! ones expiring soonest. Time comes from a [`Clock`].

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use sigil_proto::clock::Clock;
use sigil_proto::{JwtKey, SpiffeId};
use tracing::{debug, warn};

use crate::state::Snapshot;

/// Default bound of the cache, in tokens (SPIRE's `jwt_svid_cache_size`).
pub const DEFAULT_JWT_CACHE_SIZE: usize = 1_000;

/// A token as the minter returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedJwt {
    /// Compact JWS.
    pub token: String,
    /// Unix seconds (`iat`, `exp`).
    pub issued_at: i64,
    pub expires_at: i64,
}

/// Why no token was minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// The server says the entry does not authorize this agent (any more).
    #[error("the server refused the entry: {0}")]
    Unauthorized(String),
    /// Anything else: the server unreachable, the call refused, a bad answer.
    #[error("JWT-SVID minting failed: {0}")]
    Failed(String),
}

/// The future a [`JwtMinter`] returns.
pub type MintFuture<'a> = Pin<Box<dyn Future<Output = Result<MintedJwt, MintError>> + Send + 'a>>;

/// Mints one JWT-SVID for an entry of this agent.
pub trait JwtMinter: Send + Sync + 'static {
    fn mint_jwt_svid<'a>(&'a self, entry_id: &'a str, audience: &'a [String]) -> MintFuture<'a>;
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    spiffe_id: SpiffeId,
    /// Sorted, without duplicates.
    audience: Vec<String>,
}

struct Cached {
    token: String,
    kid: String,
    issued_at: i64,
    expires_at: i64,
}

impl Cached {
    /// Half of the token's life has passed: time to re-mint.
    fn refresh_due(&self, now: i64) -> bool {
        now >= self.issued_at + (self.expires_at - self.issued_at) / 2
    }
}

/// The JWT-SVID cache (shared by every Workload API call).
pub struct JwtCache {
    minter: Arc<dyn JwtMinter>,
    clock: Arc<dyn Clock>,
    max: usize,
    tokens: Mutex<HashMap<Key, Cached>>,
}

impl JwtCache {
    pub fn new(minter: Arc<dyn JwtMinter>, clock: Arc<dyn Clock>, max: usize) -> JwtCache {
        JwtCache {
            minter,
            clock,
            max: max.max(1),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Cached>> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tokens held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A token for `spiffe_id` and `audience`, minted for `entry_id` if no
    /// cached one is fresh. `tainted`: `kid`s whose tokens are never served.
    pub async fn fetch(
        &self,
        entry_id: &str,
        spiffe_id: &SpiffeId,
        audience: &[String],
        tainted: &[String],
    ) -> Result<String, MintError> {
        let audience: Vec<String> = audience
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let key = Key {
            spiffe_id: spiffe_id.clone(),
            audience,
        };
        let now = self.clock.now_unix();
        let stale = {
            let mut tokens = self.lock();
            match tokens.get(&key) {
                Some(c) if c.expires_at <= now || tainted.contains(&c.kid) => {
                    tokens.remove(&key);
                    None
                }
                Some(c) if !c.refresh_due(now) => return Ok(c.token.clone()),
                Some(c) => Some(c.token.clone()),
                None => None,
            }
        };
        match self.minter.mint_jwt_svid(entry_id, &key.audience).await {
            Ok(m) => {
                let kid = sigil_proto::jwt::Token::parse(&m.token)
                    .ok()
                    .and_then(|t| t.header.kid)
                    .unwrap_or_default();
                debug!(entry_id, spiffe_id = %spiffe_id, kid, expires_at = m.expires_at, "JWT-SVID minted");
                let now = self.clock.now_unix();
                if m.expires_at > now {
                    self.insert(
                        key,
                        Cached {
                            token: m.token.clone(),
                            kid,
                            issued_at: m.issued_at.min(now),
                            expires_at: m.expires_at,
                        },
                        now,
                    );
                }
                Ok(m.token)
            }
            Err(MintError::Failed(e)) => match stale {
                Some(token) => {
                    warn!(entry_id, spiffe_id = %spiffe_id, error = %e, "re-minting a JWT-SVID failed; serving the cached token until its exp");
                    Ok(token)
                }
                None => Err(MintError::Failed(e)),
            },
            Err(e) => {
                // The entry no longer authorizes this agent.
                self.lock().remove(&key);
                Err(e)
            }
        }
    }

    fn insert(&self, key: Key, c: Cached, now: i64) {
        let mut tokens = self.lock();
        tokens.insert(key, c);
        if tokens.len() > self.max {
            tokens.retain(|_, c| c.expires_at > now);
        }
        while tokens.len() > self.max {
            let Some(soonest) = tokens
                .iter()
                .min_by_key(|(_, c)| c.expires_at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            tokens.remove(&soonest);
        }
    }

    /// Drops the tokens `snapshot` no longer allows: those of a SPIFFE ID
    /// no served SVID names, those signed by a tainted key, expired ones.
    pub fn prune(&self, snapshot: &Snapshot) {
        let now = self.clock.now_unix();
        let ids: BTreeSet<&SpiffeId> = snapshot.svids.iter().map(|s| &s.spiffe_id).collect();
        let mut tokens = self.lock();
        let before = tokens.len();
        tokens.retain(|k, c| {
            ids.contains(&k.spiffe_id)
                && c.expires_at > now
                && !snapshot.tainted_jwt_key_ids.contains(&c.kid)
        });
        if tokens.len() != before {
            debug!(
                dropped = before - tokens.len(),
                "JWT-SVIDs dropped from the cache"
            );
        }
    }

    /// Prunes on every new snapshot until the sender is gone.
    pub async fn follow(self: Arc<Self>, mut state: crate::state::StateRx) {
        loop {
            let snap = state.borrow_and_update().clone();
            self.prune(&snap);
            if state.changed().await.is_err() {
                return;
            }
        }
    }
}

/// The JWT keys a bundle can publish: each with a `kid` not seen before
/// and a key a JWK Set can carry; the others are left out with a warning.
pub fn usable_jwt_keys(keys: Vec<JwtKey>) -> Vec<JwtKey> {
    let mut seen = BTreeSet::new();
    keys.into_iter()
        .filter(|k| {
            if let Err(rule) = k.check() {
                warn!(kid = %k.kid, error = %rule, "JWT authority from the server not usable; left out");
                return false;
            }
            if !seen.insert(k.kid.clone()) {
                warn!(kid = %k.kid, "JWT authority with a kid already seen; left out");
                return false;
            }
            true
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
