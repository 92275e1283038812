//! The SVID cache: the one task that owns the agent's view of its entries and
//! their SVIDs. It applies sync events, decides with [`crate::rotation`] which
//! SVIDs to (re)issue, generates a fresh key for each (never sent anywhere),
//! sends the CSRs in batches to its [`SvidSigner`], and publishes a
//! [`Snapshot`] for the Workload API whenever what workloads can see changes.
//! While the server is unreachable it keeps serving what it has and retries
//! with backoff.
//!
//! It sees only domain values ([`AuthorizedEntry`], [`TrustBundle`]): the
//! wire types stop at `sync.rs` and `server_client.rs`. Time and the jitter
//! draws come from a [`Clock`], so its decisions are unit-tested with a
//! `ManualClock` (`tests.rs`).

mod input;
mod signer;
#[cfg(test)]
mod tests;

pub use input::{AuthorizedEntry, SyncEvent, TrustBundle};
pub use signer::{CsrRequest, SignOutcome, SignResult, SvidSigner};

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
/// How often due renewals are looked for without any event.
const TICK: Duration = Duration::from_secs(1);

struct Cached {
    svid: Arc<WorkloadSvid>,
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
    synced: bool,
    ready: watch::Sender<bool>,
    /// No signing before this moment (backing off after a failure).
    retry_at: Option<SystemTime>,
    attempt: u32,
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
            synced: false,
            ready,
            retry_at: None,
            attempt: 0,
        }
    }

    fn apply(&mut self, ev: SyncEvent) {
        match ev {
            SyncEvent::Full(list) => {
                self.entries = list.into_iter().map(|e| (e.id.clone(), e)).collect();
                self.synced = true;
                // A fresh view: retry failed signings now.
                self.retry_at = None;
            }
            SyncEvent::Upsert(e) => {
                self.entries.insert(e.id.clone(), e);
                self.retry_at = None;
            }
            SyncEvent::Delete(id) => {
                self.entries.remove(&id);
            }
            SyncEvent::Bundle(TrustBundle {
                x509_authorities: authorities,
                tainted_key_ids: tainted,
                ..
            }) => {
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
        let entries = &self.entries;
        self.svids.retain(|id, _| entries.contains_key(id));
    }

    /// Entries whose SVID must be issued now.
    fn due(&self, now: i64) -> Vec<(String, Reason)> {
        let mut due: Vec<(String, Reason)> = self
            .entries
            .iter()
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

    async fn issue(&mut self, due: Vec<(String, Reason)>) -> Result<(), String> {
        let reasons: HashMap<String, Reason> = due.iter().cloned().collect();
        for chunk in due.chunks(BATCH) {
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
            let results = self.signer.sign_svids(batch).await?;
            let mut keys: HashMap<String, rcgen::KeyPair> =
                keyed.into_iter().map(|(id, k, _)| (id, k)).collect();
            let mut failed = 0;
            for r in results {
                let Some(entry) = self.entries.get(&r.entry_id).cloned() else {
                    continue;
                };
                match (r.outcome, keys.remove(&r.entry_id)) {
                    (SignOutcome::Signed(cert_chain), Some(key)) => {
                        let Some(leaf) = cert_chain.first() else {
                            continue;
                        };
                        let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
                            continue;
                        };
                        let not_before = cert.validity().not_before.timestamp();
                        let not_after = cert.validity().not_after.timestamp();
                        let cached = Cached {
                            anchor_key_id: anchor_key_id(&cert_chain),
                            signer_key_id: aki(leaf),
                            issued: Issued {
                                not_before,
                                issued_at: self.clock.now_unix(),
                                not_after,
                                entry_revision: entry.revision,
                                jitter_unit: self.clock.random_unit(),
                            },
                            svid: Arc::new(WorkloadSvid {
                                entry_id: r.entry_id.clone(),
                                spiffe_id: entry.spiffe_id.clone(),
                                selectors: entry.selectors.clone(),
                                hint: entry.hint.clone(),
                                cert_chain,
                                key_pkcs8: key.serialize_der(),
                                not_before,
                                not_after,
                                federates_with: entry.federates_with.clone(),
                            }),
                        };
                        let reason = reasons.get(&r.entry_id).map_or("missing", |r| r.name());
                        crate::metrics::rotation(reason);
                        debug!(entry_id = %r.entry_id, spiffe_id = %entry.spiffe_id, not_after, reason, "SVID issued");
                        self.svids.insert(r.entry_id, cached);
                    }
                    (SignOutcome::Refused { code, message }, _) => {
                        failed += 1;
                        warn!(entry_id = %r.entry_id, code, message = %message, "SVID signing refused");
                    }
                    _ => failed += 1,
                }
            }
            info!(requested = n, failed, "SVID batch signed");
            crate::metrics::svids_issued("ok", (n - failed) as u64);
            crate::metrics::svids_issued("error", failed as u64);
            if failed > 0 {
                return Err(format!("{failed} of {n} SVIDs not signed"));
            }
        }
        Ok(())
    }

    fn publish(&self) {
        let mut svids: Vec<Arc<WorkloadSvid>> =
            self.svids.values().map(|c| c.svid.clone()).collect();
        svids.sort_by(|a, b| {
            a.spiffe_id
                .cmp(&b.spiffe_id)
                .then_with(|| a.entry_id.cmp(&b.entry_id))
        });
        let snap = Snapshot {
            trust_domain: self.td.clone(),
            bundle: self.bundle.clone(),
            federated: Default::default(),
            svids,
        };
        self.out.send_if_modified(|cur| {
            let same = cur.bundle == snap.bundle
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
        let now = self.clock.now();
        let backing_off = self.retry_at.is_some_and(|t| now < t);
        let due = self.due(self.clock.now_unix());
        if !due.is_empty() && !backing_off {
            match self.issue(due).await {
                Ok(()) => {
                    self.attempt = 0;
                    self.retry_at = None;
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
