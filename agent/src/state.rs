//! What the agent serves: a snapshot of the trust bundle and every cached
//! workload SVID, published through a `watch` channel by the cache task
//! (its only writer). Workload API streams read snapshots and never block
//! the cache.

use std::collections::BTreeMap;
use std::sync::Arc;

use sigil_proto::{JwtKey, Selector, SpiffeId, TrustDomain};

/// One workload SVID with its private key and the entry it was issued for.
pub struct WorkloadSvid {
    pub entry_id: String,
    pub spiffe_id: SpiffeId,
    /// A workload gets this SVID only if it has all of these: the entry's
    /// selectors, plus those the SVID was issued under until it is re-issued.
    pub selectors: Vec<Selector>,
    pub hint: String,
    /// DER certificates: the leaf, then intermediates (never a root: the
    /// root is in the bundle only).
    pub cert_chain: Vec<Vec<u8>>,
    /// PKCS#8 DER of the SVID's key; generated on this agent, never sent.
    pub key_pkcs8: Vec<u8>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds: served until then (the certificate's notAfter, or the
    /// entry's `expires_at` if sooner).
    pub not_after: i64,
    pub federates_with: Vec<TrustDomain>,
    /// Unix seconds the entry was created: orders the snapshot.
    pub entry_created_at: i64,
}

impl std::fmt::Debug for WorkloadSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadSvid")
            .field("entry_id", &self.entry_id)
            .field("spiffe_id", &self.spiffe_id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Everything workloads can be served, at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub trust_domain: TrustDomain,
    /// DER CA certificates of the agent's own trust domain.
    pub bundle: Vec<Vec<u8>>,
    /// Federated trust domains' CA certificates (empty until federation).
    pub federated: BTreeMap<TrustDomain, Vec<Vec<u8>>>,
    /// Federated trust domains' JWT-SVID signing keys (same trust domains).
    pub federated_jwt: BTreeMap<TrustDomain, Vec<JwtKey>>,
    /// JWT-SVID signing keys of the agent's own trust domain.
    pub jwt_authorities: Vec<JwtKey>,
    /// `kid`s of tainted JWT keys: tokens they signed are not served.
    pub tainted_jwt_key_ids: Vec<String>,
    /// Cached SVIDs, oldest entry first (entry `created_at`, then entry
    /// id): the first one a workload matches is its default identity, and
    /// adding a newer entry never changes it.
    pub svids: Vec<Arc<WorkloadSvid>>,
}

impl Snapshot {
    /// An empty snapshot (before the first sync).
    pub fn empty(trust_domain: TrustDomain, bundle: Vec<Vec<u8>>) -> Snapshot {
        Snapshot {
            trust_domain,
            bundle,
            federated: BTreeMap::new(),
            federated_jwt: BTreeMap::new(),
            jwt_authorities: Vec::new(),
            tainted_jwt_key_ids: Vec::new(),
            svids: Vec::new(),
        }
    }

    /// The SVIDs a workload with `selectors` may have, unexpired at `now`,
    /// in order.
    pub fn svids_for(&self, selectors: &[Selector], now: i64) -> Vec<Arc<WorkloadSvid>> {
        self.svids
            .iter()
            .filter(|s| {
                s.not_after > now && sigil_proto::selector::is_subset(&s.selectors, selectors)
            })
            .cloned()
            .collect()
    }
}

/// The receiving end the Workload API reads.
pub type StateRx = tokio::sync::watch::Receiver<Arc<Snapshot>>;
