//! The SVID cache: the one task that owns the agent's view of its entries and
//! their SVIDs. It applies sync events, decides with [`crate::rotation`] which
//! SVIDs to (re)issue, generates a fresh key for each (never sent anywhere),
//! sends the CSRs in batches to its [`SvidSigner`], and publishes a
//! [`Snapshot`] for the Workload API whenever what workloads can see changes.
//! While the server is unreachable it keeps serving what it has and retries
//! with backoff. A changed entry limits at once what its old SVID is served
//! to (`served.rs`); an entry past its `expires_at` is dropped without
//! waiting for the server. The server refusing one entry backs off that entry
//! alone (and drops its SVID if it is no longer authorized); the server
//! refusing a whole batch for its rate limit halves the batch.
//!
//! It sees only domain values ([`AuthorizedEntry`], [`TrustBundle`]): the
//! wire types stop at `sync.rs` and `server_client.rs`. Time and the jitter
//! draws come from a [`Clock`], so its decisions are unit-tested with a
//! `ManualClock` (`tests.rs`).

mod federated;
mod input;
pub(crate) mod jwt;
mod served;
mod signer;
#[cfg(test)]
mod tests;

pub use input::{AuthorizedEntry, ForeignBundle, SyncEvent, TrustBundle};
pub use jwt::{
    DEFAULT_JWT_CACHE_SIZE, JwtCache, JwtMinter, MintError, MintFuture, MintedJwt, usable_jwt_keys,
};
pub use signer::{CsrRequest, SignError, SignOutcome, SignResult, SvidSigner};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_proto::TrustDomain;
use sigil_proto::clock::Clock;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::rotation::{self, Issued, Reason};
use crate::state::{Snapshot, WorkloadSvid};

/// Most CSRs per SignSvids call (the server accepts at least this many).
pub const BATCH: usize = sigil_proto::CSR_BATCH;
/// gRPC codes of a per-entry refusal that mean the entry no longer
/// authorizes this agent: its SVID is dropped at once.
const PERMISSION_DENIED: i32 = 7;
const NOT_FOUND: i32 = 5;
/// How often due renewals are looked for without any event.
const TICK: Duration = Duration::from_secs(1);

struct Cached {
    /// The SVID as issued (with the selectors of the entry it was issued for).
    issued_svid: Arc<WorkloadSvid>,
    /// What workloads are served of it for the entry as it is now
    /// (`served::view`); `None`: nothing.
    served: Option<Arc<WorkloadSvid>>,
    issued: Issued,
    /// Key identifier of the CA certificate this chain hangs from.
    anchor_key_id: Option<Vec<u8>>,
    /// Key identifier of the CA that signed the leaf.
    signer_key_id: Option<Vec<u8>>,
}

/// The subject key identifiers of the bundle's CA certificates.
pub(crate) fn bundle_key_ids(bundle: &[Vec<u8>]) -> HashSet<Vec<u8>> {
    bundle
        .iter()
        .filter_map(|der| {
            let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
            c.extensions()
                .iter()
                .find_map(|ext| match ext.parsed_extension() {
                    x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                        Some(k.0.to_vec())
                    }
                    _ => None,
                })
        })
        .collect()
}

/// The authority key identifier of the top certificate of a chain: the key
/// of the bundle CA it must chain to.
fn anchor_key_id(chain: &[Vec<u8>]) -> Option<Vec<u8>> {
    aki(chain.last()?)
}

/// The authority key identifier of a certificate.
pub(crate) fn aki(der: &[u8]) -> Option<Vec<u8>> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    c.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
}

/// The SVID cache. `S` signs CSRs (the server, or a test CA); the clock
/// says what time it is and draws the jitter.
pub struct Cache<S> {
    td: TrustDomain,
    signer: Arc<S>,
    clock: Arc<dyn Clock>,
    out: watch::Sender<Arc<Snapshot>>,
    entries: HashMap<String, AuthorizedEntry>,
    svids: HashMap<String, Cached>,
    bundle: Vec<Vec<u8>>,
    bundle_ids: HashSet<Vec<u8>>,
    tainted: HashSet<Vec<u8>>,
    /// Foreign trust domains' bundles (federation).
    federated: federated::Federated,
    /// JWT-SVID signing keys and tainted `kid`s, published for the
    /// Workload API (tokens are minted on demand: `jwt.rs`).
    jwt_authorities: Vec<sigil_proto::JwtKey>,
    tainted_jwt_key_ids: Vec<String>,
    synced: bool,
    ready: watch::Sender<bool>,
    /// No signing before this moment (backing off after a failure).
    retry_at: Option<SystemTime>,
    attempt: u32,
    /// Entries the server refused, each backing off on its own.
    refused: HashMap<String, Refusal>,
    /// Most CSRs per call: [`BATCH`], halved on each rate-limit refusal of a
    /// whole call, doubled back after a pass that signed everything.
    batch_limit: usize,
}

/// An entry the server refused to sign, waiting before it is tried again.
struct Refusal {
    /// The entry revision refused: a new revision is tried at once.
    revision: u64,
    /// Refusals of this revision so far.
    attempts: u32,
    retry_at: SystemTime,
}

impl<S: SvidSigner> Cache<S> {
    pub fn new(
        td: TrustDomain,
        signer: Arc<S>,
        clock: Arc<dyn Clock>,
        bundle: Vec<Vec<u8>>,
        out: watch::Sender<Arc<Snapshot>>,
        ready: watch::Sender<bool>,
    ) -> Cache<S> {
        let bundle_ids = bundle_key_ids(&bundle);
        Cache {
            td,
            signer,
            clock,
            out,
            entries: HashMap::new(),
            svids: HashMap::new(),
            bundle,
            bundle_ids,
            tainted: HashSet::new(),
            federated: Default::default(),
            jwt_authorities: Vec::new(),
            tainted_jwt_key_ids: Vec::new(),
            synced: false,
            ready,
            retry_at: None,
            attempt: 0,
            refused: HashMap::new(),
            batch_limit: BATCH,
        }
    }

    /// Starts with the JWT keys stored by an earlier run (issue 15), until
    /// the first sync replaces them.
    pub fn with_jwt_keys(mut self, keys: Vec<sigil_proto::JwtKey>, tainted: Vec<String>) -> Self {
        self.jwt_authorities = keys;
        self.tainted_jwt_key_ids = tainted;
        self
    }

    fn apply(&mut self, ev: SyncEvent) {
        match ev {
            SyncEvent::Full(list) => {
                self.entries = list.into_iter().map(|e| (e.id.clone(), e)).collect();
                self.synced = true;
                // A fresh view: retry failed signings now.
                self.retry_at = None;
                self.settle_all();
            }
            SyncEvent::Upsert(e) => {
                let id = e.id.clone();
                self.entries.insert(id.clone(), e);
                self.retry_at = None;
                self.settle(&id);
            }
            SyncEvent::Delete(id) => {
                self.entries.remove(&id);
                self.settle(&id);
            }
            SyncEvent::Federated(f) => self.federated.set(&self.td, f),
            SyncEvent::FederatedRemoved(td) => self.federated.remove(&td),
            SyncEvent::FederatedSet(kept) => self.federated.retain(&kept),
            SyncEvent::Bundle(TrustBundle {
                x509_authorities: authorities,
                tainted_key_ids: tainted,
                jwt_authorities,
                tainted_jwt_key_ids,
                ..
            }) => {
                self.jwt_authorities = jwt_authorities;
                self.tainted_jwt_key_ids = tainted_jwt_key_ids;
                // An empty bundle is a real state (SPIFFE Trust Domain and
                // Bundle §4.1.3): every SVID of the trust domain is then
                // invalid, so workloads are served the empty bundle and
                // validate nothing against it. (The agent's own link to the
                // server keeps the last usable roots: see `run.rs`.)
                if authorities != self.bundle {
                    if authorities.is_empty() {
                        tracing::error!(
                            trust_domain = %self.td,
                            "the server published an empty trust bundle: every SVID of the trust \
                             domain is invalid until it publishes CAs again; workloads get the \
                             empty bundle"
                        );
                    }
                    self.bundle_ids = bundle_key_ids(&authorities);
                    self.bundle = authorities;
                    self.retry_at = None;
                }
                let tainted: HashSet<Vec<u8>> = tainted.into_iter().collect();
                if tainted != self.tainted {
                    self.tainted = tainted;
                    self.retry_at = None;
                }
            }
        }
    }

    /// Makes the SVID and refusal of entry `id` agree with the entry: drops
    /// them if it is gone, re-tries it at once if its revision changed since
    /// a refusal, and recomputes what its SVID is served as.
    fn settle(&mut self, id: &str) {
        let Some(entry) = self.entries.get(id) else {
            self.svids.remove(id);
            self.refused.remove(id);
            return;
        };
        if self
            .refused
            .get(id)
            .is_some_and(|r| r.revision != entry.revision)
        {
            self.refused.remove(id);
        }
        if let Some(c) = self.svids.get_mut(id) {
            c.served = served::view(&c.issued_svid, c.served.as_ref(), entry);
            if c.served.is_none() {
                info!(entry_id = %id, spiffe_id = %entry.spiffe_id, "entry now names another SPIFFE ID; its old SVID is no longer served");
            }
        }
    }

    /// [`Self::settle`] for every entry (after a full set).
    fn settle_all(&mut self) {
        let entries = &self.entries;
        self.refused
            .retain(|id, r| entries.get(id).is_some_and(|e| e.revision == r.revision));
        self.svids.retain(|id, c| {
            let Some(entry) = entries.get(id) else {
                return false;
            };
            c.served = served::view(&c.issued_svid, c.served.as_ref(), entry);
            true
        });
    }

    /// Drops the entries whose `expires_at` has come (the server's Deleted
    /// may never arrive: it was offline, or the stream was).
    fn expire(&mut self, now: i64) {
        let expired: Vec<String> = self
            .entries
            .values()
            .filter(|e| e.expires_at.is_some_and(|t| t <= now))
            .map(|e| e.id.clone())
            .collect();
        for id in expired {
            if let Some(e) = self.entries.remove(&id) {
                info!(entry_id = %id, spiffe_id = %e.spiffe_id, expires_at = e.expires_at, "entry expired; its SVID is no longer served");
            }
            self.settle(&id);
        }
    }

    /// Entries whose SVID must be issued now (those refused by the server
    /// only once their own wait is over).
    fn due(&self, now: i64) -> Vec<(String, Reason)> {
        let at = self.clock.now();
        let mut due: Vec<(String, Reason)> = self
            .entries
            .iter()
            .filter(|(id, _)| self.refused.get(*id).is_none_or(|r| r.retry_at <= at))
            .filter_map(|(id, e)| {
                let cached = self.svids.get(id);
                let chains = cached.is_some_and(|c| {
                    c.anchor_key_id
                        .as_ref()
                        .is_none_or(|k| self.bundle_ids.is_empty() || self.bundle_ids.contains(k))
                });
                let tainted = cached
                    .and_then(|c| c.signer_key_id.as_ref())
                    .is_some_and(|k| self.tainted.contains(k));
                rotation::decide(cached.map(|c| &c.issued), e.revision, chains, tainted, now)
                    .map(|r| (id.clone(), r))
            })
            .collect();
        due.sort_by(|a, b| a.0.cmp(&b.0));
        due
    }

    /// Signs `due` in batches of at most `batch_limit`. A refusal of one
    /// entry backs off that entry alone; `Err` is a failure of a whole call
    /// (after a rate-limit refusal the batch limit is halved first).
    async fn issue(&mut self, due: Vec<(String, Reason)>) -> Result<(), String> {
        let reasons: HashMap<String, Reason> = due.iter().cloned().collect();
        for chunk in due.chunks(self.batch_limit.max(1)) {
            let ids: Vec<String> = chunk.iter().map(|(id, _)| id.clone()).collect();
            let n = ids.len();
            let keyed = tokio::task::spawn_blocking(move || {
                ids.into_iter()
                    .map(|id| crate::identity::key_and_csr().map(|(k, csr)| (id, k, csr)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            let batch = keyed
                .iter()
                .map(|(id, _, csr)| CsrRequest {
                    entry_id: id.clone(),
                    csr: csr.clone(),
                })
                .collect();
            let results = match self.signer.sign_svids(batch).await {
                Ok(r) => r,
                Err(SignError::RateLimited(m)) => {
                    self.batch_limit = (n / 2).max(1);
                    warn!(csrs = n, next_batch = self.batch_limit, error = %m, "the server refused an SVID batch for its rate limit; splitting it");
                    return Err(m);
                }
                Err(SignError::Failed(m)) => return Err(m),
            };
            let mut keys: HashMap<String, rcgen::KeyPair> =
                keyed.into_iter().map(|(id, k, _)| (id, k)).collect();
            let mut signed = 0usize;
            for r in results {
                let Some(key) = keys.remove(&r.entry_id) else {
                    continue;
                };
                match r.outcome {
                    SignOutcome::Signed(chain) => {
                        let reason = reasons.get(&r.entry_id).map_or("missing", |r| r.name());
                        if self.store(&r.entry_id, chain, &key, reason) {
                            signed += 1;
                        } else {
                            self.refuse(&r.entry_id, None, "unusable certificate chain");
                        }
                    }
                    SignOutcome::Refused { code, message } => {
                        self.refuse(&r.entry_id, Some(code), &message);
                    }
                    SignOutcome::Empty => self.refuse(&r.entry_id, None, "empty result"),
                }
            }
            // Asked for, but not in the answer.
            for id in keys.into_keys() {
                self.refuse(&id, None, "no result for the entry");
            }
            let failed = n - signed;
            info!(requested = n, failed, "SVID batch signed");
            crate::metrics::svids_issued("ok", signed as u64);
            crate::metrics::svids_issued("error", failed as u64);
        }
        Ok(())
    }

    /// Caches a signed chain for `entry_id` with its key; false (nothing
    /// kept) when the leaf does not parse or the entry is unknown.
    fn store(
        &mut self,
        entry_id: &str,
        cert_chain: Vec<Vec<u8>>,
        key: &rcgen::KeyPair,
        reason: &'static str,
    ) -> bool {
        let Some(entry) = self.entries.get(entry_id) else {
            return false;
        };
        let Some(Ok((_, cert))) = cert_chain
            .first()
            .map(|l| x509_parser::parse_x509_certificate(l))
        else {
            return false;
        };
        let not_before = cert.validity().not_before.timestamp();
        let not_after = cert.validity().not_after.timestamp();
        let issued_svid = Arc::new(WorkloadSvid {
            entry_id: entry_id.to_string(),
            spiffe_id: entry.spiffe_id.clone(),
            selectors: entry.selectors.clone(),
            hint: entry.hint.clone(),
            cert_chain: sigil_proto::svid_chain::leaf_and_intermediates(&cert_chain),
            key_pkcs8: key.serialize_der(),
            not_before,
            not_after,
            federates_with: entry.federates_with.clone(),
            entry_created_at: entry.created_at,
        });
        let cached = Cached {
            anchor_key_id: anchor_key_id(&cert_chain),
            signer_key_id: cert_chain.first().and_then(|l| aki(l)),
            issued: Issued {
                not_before,
                issued_at: self.clock.now_unix(),
                not_after,
                entry_revision: entry.revision,
                jitter_unit: self.clock.random_unit(),
            },
            served: served::view(&issued_svid, None, entry),
            issued_svid,
        };
        crate::metrics::rotation(reason);
        debug!(entry_id = %entry_id, spiffe_id = %entry.spiffe_id, not_after, reason, "SVID issued");
        self.refused.remove(entry_id);
        self.svids.insert(entry_id.to_string(), cached);
        true
    }

    /// The server did not sign `entry_id` (`code`: its gRPC code, if it
    /// gave one): that entry waits on its own, longer each time; if the
    /// refusal says the entry no longer authorizes this agent, its SVID is
    /// no longer served.
    fn refuse(&mut self, entry_id: &str, code: Option<i32>, message: &str) {
        let Some(revision) = self.entries.get(entry_id).map(|e| e.revision) else {
            return;
        };
        let attempts = self
            .refused
            .get(entry_id)
            .filter(|r| r.revision == revision)
            .map_or(0, |r| r.attempts);
        let wait = Duration::from_millis(rotation::refusal_backoff_ms(
            attempts,
            self.clock.random_unit(),
        ));
        let unauthorized = matches!(code, Some(PERMISSION_DENIED | NOT_FOUND));
        let dropped = unauthorized && self.svids.remove(entry_id).is_some();
        warn!(entry_id = %entry_id, code, message = %message, retry_in_ms = wait.as_millis() as u64, svid_dropped = dropped, "SVID signing refused for this entry; retrying it later");
        self.refused.insert(
            entry_id.to_string(),
            Refusal {
                revision,
                attempts: attempts.saturating_add(1),
                retry_at: self.clock.now() + wait,
            },
        );
    }

    fn publish(&self) {
        let mut svids: Vec<Arc<WorkloadSvid>> = self
            .svids
            .values()
            .filter_map(|c| c.served.clone())
            .collect();
        // The default SVID (the first a workload matches) is its oldest
        // entry's: stable while entries are added.
        svids.sort_by(|a, b| {
            a.entry_created_at
                .cmp(&b.entry_created_at)
                .then_with(|| a.entry_id.cmp(&b.entry_id))
        });
        let snap = Snapshot {
            trust_domain: self.td.clone(),
            bundle: self.bundle.clone(),
            federated: self.federated.x509(),
            federated_jwt: self.federated.jwt(),
            jwt_authorities: self.jwt_authorities.clone(),
            tainted_jwt_key_ids: self.tainted_jwt_key_ids.clone(),
            svids,
        };
        self.out.send_if_modified(|cur| {
            let same = cur.bundle == snap.bundle
                && cur.federated == snap.federated
                && cur.federated_jwt == snap.federated_jwt
                && cur.jwt_authorities == snap.jwt_authorities
                && cur.tainted_jwt_key_ids == snap.tainted_jwt_key_ids
                && cur.svids.len() == snap.svids.len()
                && cur
                    .svids
                    .iter()
                    .zip(&snap.svids)
                    .all(|(a, b)| Arc::ptr_eq(a, b));
            if !same {
                *cur = Arc::new(snap);
            }
            !same
        });
    }

    /// One pass after events were applied: signs what is due (unless
    /// backing off), publishes the snapshot, and reports readiness.
    async fn step(&mut self) {
        if !self.synced {
            return;
        }
        self.expire(self.clock.now_unix());
        let now = self.clock.now();
        let backing_off = self.retry_at.is_some_and(|t| now < t);
        let due = self.due(self.clock.now_unix());
        if !due.is_empty() && !backing_off {
            match self.issue(due).await {
                Ok(()) => {
                    self.attempt = 0;
                    self.retry_at = None;
                    self.batch_limit = self.batch_limit.saturating_mul(2).min(BATCH);
                }
                Err(e) => {
                    let wait = Duration::from_millis(rotation::backoff_ms(
                        self.attempt,
                        self.clock.random_unit(),
                    ));
                    warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "SVID issuance failed; serving cached SVIDs and retrying");
                    self.attempt = self.attempt.saturating_add(1);
                    self.retry_at = Some(self.clock.now() + wait);
                }
            }
        }
        self.publish();
        if !*self.ready.borrow() && self.due(self.clock.now_unix()).is_empty() {
            let _ = self.ready.send(true);
        }
    }

    /// Runs until the event channel closes.
    pub async fn run(mut self, mut events: mpsc::Receiver<SyncEvent>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => {
                        self.apply(ev);
                        // Take everything already queued before signing.
                        while let Ok(ev) = events.try_recv() {
                            self.apply(ev);
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => {}
            }
            self.step().await;
        }
    }
}
