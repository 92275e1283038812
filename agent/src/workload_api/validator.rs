//! `ValidateJWTSVID`'s validator (issue 15): the JWT keys of the current
//! snapshot prepared once ([`JwtKeyRing`], rebuilt when the snapshot
//! changes) instead of parsing a bundle key per call, and a bounded cache
//! of verified tokens. The cache is keyed by the SHA-256 of the token and
//! holds what its verification found (trust domain, key, `exp`, `nbf`,
//! `aud`, claims). A hit is answered without verifying the signature again
//! only if every check that does not depend on the signature passes again
//! against the CURRENT snapshot and caller: the token's trust domain is
//! still one the caller may validate against, its `kid` still names the
//! very key that verified it, `exp` is still in the future and `nbf` not,
//! and `aud` contains the audience asked for. Otherwise the call takes the
//! full path, so a hit never accepts what a miss would refuse, and every
//! refusal is the full path's. Only valid tokens are cached.

use std::sync::Mutex;

use sigil_proto::jwt::{JwtKeyRing, VerifyKey, validate_with};

use super::*;

/// Verified tokens kept by default (each a few hundred bytes of claims):
/// `limits.workload_api_jwt_validation_cache`.
pub const DEFAULT_JWT_VALIDATION_CACHE: usize = 4096;

/// A token that verified: what a hit re-checks and answers with.
struct Verified {
    td: TrustDomain,
    key: Arc<VerifyKey>,
    exp: i64,
    nbf: Option<i64>,
    aud: Vec<String>,
    spiffe_id: String,
    claims: prost_types::Struct,
}

pub(super) struct JwtValidator {
    /// The snapshot the ring was prepared from, and the ring.
    prepared: Mutex<Option<(Arc<Snapshot>, Arc<JwtKeyRing>)>>,
    verified: Mutex<HashMap<[u8; 32], Arc<Verified>>>,
    max: usize,
}

impl JwtValidator {
    pub(super) fn new(max: usize) -> JwtValidator {
        JwtValidator {
            prepared: Mutex::new(None),
            verified: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// The JWT keys of `snapshot` (own trust domain and every federated
    /// one), prepared once per snapshot.
    fn ring(&self, snapshot: &Arc<Snapshot>) -> Arc<JwtKeyRing> {
        let mut p = self
            .prepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((s, ring)) = p.as_ref()
            && Arc::ptr_eq(s, snapshot)
        {
            return ring.clone();
        }
        let mut ring = JwtKeyRing::default();
        ring.insert(&snapshot.trust_domain, &snapshot.jwt_authorities);
        for td in snapshot.federated.keys() {
            let keys = snapshot
                .federated_jwt
                .get(td)
                .map_or(&[][..], Vec::as_slice);
            ring.insert(td, keys);
        }
        let ring = Arc::new(ring);
        *p = Some((snapshot.clone(), ring.clone()));
        ring
    }

    /// Validates `req.svid` for `req.audience` against the bundles a caller
    /// with `selectors` may see (those of [`super::jwt::jwt_bundles_for`]).
    pub(super) fn validate(
        &self,
        snapshot: &Arc<Snapshot>,
        selectors: &[Selector],
        req: &pb::ValidateJwtsvidRequest,
        now: i64,
    ) -> Result<pb::ValidateJwtsvidResponse, CallError> {
        let ring = self.ring(snapshot);
        // May the caller validate against `td`: the own trust domain, or
        // one its SVIDs federate with.
        let allowed = |td: &TrustDomain| {
            *td == snapshot.trust_domain || {
                let matched = snapshot.svids_for(selectors, now);
                super::x509::federated_tds(snapshot, &matched).contains(td)
            }
        };
        let hash = token_hash(&req.svid);
        let hit = self.lock().get(&hash).cloned();
        if let Some(v) = hit
            && v.exp > now
            && v.nbf.is_none_or(|nbf| nbf <= now)
            && v.aud.contains(&req.audience)
            && allowed(&v.td)
            && ring
                .get(&v.td)
                .and_then(|set| set.get(v.key.kid()))
                .is_some_and(|k| Arc::ptr_eq(k, &v.key) || k.spki_der() == v.key.spki_der())
        {
            return Ok(pb::ValidateJwtsvidResponse {
                spiffe_id: v.spiffe_id.clone(),
                claims: Some(v.claims.clone()),
            });
        }
        let keys = |td: &TrustDomain| if allowed(td) { ring.get(td) } else { None };
        let v =
            validate_with(&req.svid, &req.audience, keys, now).map_err(CallError::InvalidToken)?;
        let verified = Arc::new(Verified {
            td: v.spiffe_id.trust_domain(),
            key: v.key,
            exp: v.exp,
            nbf: v.nbf,
            aud: v.aud,
            spiffe_id: v.spiffe_id.as_str().to_string(),
            claims: to_struct(v.claims),
        });
        let resp = pb::ValidateJwtsvidResponse {
            spiffe_id: verified.spiffe_id.clone(),
            claims: Some(verified.claims.clone()),
        };
        if self.max == 0 {
            return Ok(resp);
        }
        let mut cache = self.lock();
        if cache.len() >= self.max && !cache.contains_key(&hash) {
            cache.retain(|_, v| v.exp > now);
            if cache.len() >= self.max
                && let Some(k) = cache.keys().next().copied()
            {
                cache.remove(&k);
            }
        }
        cache.insert(hash, verified);
        Ok(resp)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<Verified>>> {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tokens cached (tests).
    #[cfg(test)]
    pub(super) fn cached(&self) -> usize {
        self.lock().len()
    }
}

impl WorkloadApiService {
    /// Remembers at most `n` verified JWT-SVIDs (0: none;
    /// [`DEFAULT_JWT_VALIDATION_CACHE`] unless set).
    pub fn with_jwt_validation_cache(mut self, n: usize) -> WorkloadApiService {
        self.validator = Arc::new(JwtValidator::new(n));
        self
    }
}

fn token_hash(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
