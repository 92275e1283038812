//! The SVID cache: the one task that owns the agent's view of its entries and
//! their SVIDs. It applies sync events, decides with [`crate::rotation`] which
//! SVIDs to (re)issue, generates a fresh key for each (never sent anywhere),
//! sends the CSRs in batches, and publishes a [`Snapshot`] for the Workload
//! API whenever what workloads can see changes. While the server is
//! unreachable it keeps serving what it has and retries with backoff.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sigil_proto::agent_api as pb;
use sigil_proto::{Selector, SpiffeId, TrustDomain};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::rotation::{self, Issued, Reason};
use crate::server_client::ServerClient;
use crate::state::{Snapshot, WorkloadSvid};

/// Most CSRs per SignSvids call (the server accepts at least this many).
pub const BATCH: usize = sigil_proto::CSR_BATCH;
/// How often due renewals are looked for without any event.
const TICK: Duration = Duration::from_secs(1);

/// What the sync stream reports.
#[derive(Debug)]
pub enum SyncEvent {
    /// The complete authorized set; entries not in it are gone.
    Full(Vec<pb::Entry>),
    Upsert(pb::Entry),
    Delete(String),
    /// The own trust domain's CA certificates, and the key ids of tainted
    /// CAs.
    Bundle {
        authorities: Vec<Vec<u8>>,
        tainted: Vec<Vec<u8>>,
    },
}

/// An entry as the cache needs it.
#[derive(Debug, Clone)]
struct EntryInfo {
    spiffe_id: SpiffeId,
    selectors: Vec<Selector>,
    hint: String,
    revision: u64,
    federates_with: Vec<TrustDomain>,
}

fn entry_info(e: &pb::Entry) -> Option<EntryInfo> {
    let spiffe_id = SpiffeId::parse(&e.spiffe_id).ok()?;
    let selectors = e
        .selectors
        .iter()
        .map(|s| Selector::new(&s.r#type, &s.value))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let federates_with = e
        .federates_with
        .iter()
        .filter_map(|t| TrustDomain::parse(t).ok())
        .collect();
    Some(EntryInfo {
        spiffe_id,
        selectors,
        hint: e.hint.clone(),
        revision: e.revision,
        federates_with,
    })
}

struct Cached {
    svid: Arc<WorkloadSvid>,
    issued: Issued,
    /// Key identifier of the CA certificate this chain hangs from.
    anchor_key_id: Option<Vec<u8>>,
    /// Key identifier of the CA that signed the leaf.
    signer_key_id: Option<Vec<u8>>,
}

/// The subject key identifiers of the bundle's CA certificates.
fn bundle_key_ids(bundle: &[Vec<u8>]) -> HashSet<Vec<u8>> {
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
fn aki(der: &[u8]) -> Option<Vec<u8>> {
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

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn jitter_permille() -> i16 {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    (i32::from(u16::from_le_bytes(b)) % 2001 - 1000) as i16
}

fn random_unit() -> f64 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

pub struct Cache {
    td: TrustDomain,
    client: Arc<ServerClient>,
    out: watch::Sender<Arc<Snapshot>>,
    entries: HashMap<String, EntryInfo>,
    svids: HashMap<String, Cached>,
    bundle: Vec<Vec<u8>>,
    bundle_ids: HashSet<Vec<u8>>,
    tainted: HashSet<Vec<u8>>,
    synced: bool,
    ready: watch::Sender<bool>,
    retry_at: Option<Instant>,
    attempt: u32,
}

impl Cache {
    pub fn new(
        td: TrustDomain,
        client: Arc<ServerClient>,
        bundle: Vec<Vec<u8>>,
        out: watch::Sender<Arc<Snapshot>>,
        ready: watch::Sender<bool>,
    ) -> Cache {
        let bundle_ids = bundle_key_ids(&bundle);
        Cache {
            td,
            client,
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
                self.entries = list
                    .iter()
                    .filter_map(|e| entry_info(e).map(|i| (e.id.clone(), i)))
                    .collect();
                self.synced = true;
                // A fresh view: retry failed signings now.
                self.retry_at = None;
            }
            SyncEvent::Upsert(e) => {
                if let Some(i) = entry_info(&e) {
                    self.entries.insert(e.id.clone(), i);
                }
                self.retry_at = None;
            }
            SyncEvent::Delete(id) => {
                self.entries.remove(&id);
            }
            SyncEvent::Bundle {
                authorities,
                tainted,
            } => {
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
            let mut client = self.client.client().await.map_err(|e| format!("{e:#}"))?;
            let req = pb::SignSvidsRequest {
                requests: keyed
                    .iter()
                    .map(|(id, _, csr)| pb::SvidRequest {
                        entry_id: id.clone(),
                        csr: csr.clone(),
                    })
                    .collect(),
            };
            let resp = match client.sign_svids(req).await {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    self.client.reset().await;
                    return Err(format!("{}: {}", s.code(), s.message()));
                }
            };
            let mut keys: HashMap<String, rcgen::KeyPair> =
                keyed.into_iter().map(|(id, k, _)| (id, k)).collect();
            let mut failed = 0;
            for r in resp.results {
                let Some(entry) = self.entries.get(&r.entry_id).cloned() else {
                    continue;
                };
                match (r.result, keys.remove(&r.entry_id)) {
                    (Some(pb::svid_result::Result::Svid(s)), Some(key)) => {
                        let Some(leaf) = s.cert_chain.first() else {
                            continue;
                        };
                        let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
                            continue;
                        };
                        let not_before = cert.validity().not_before.timestamp();
                        let not_after = cert.validity().not_after.timestamp();
                        let cached = Cached {
                            anchor_key_id: anchor_key_id(&s.cert_chain),
                            signer_key_id: aki(leaf),
                            issued: Issued {
                                not_before,
                                issued_at: now_unix(),
                                not_after,
                                entry_revision: entry.revision,
                                jitter_permille: jitter_permille(),
                            },
                            svid: Arc::new(WorkloadSvid {
                                entry_id: r.entry_id.clone(),
                                spiffe_id: entry.spiffe_id.clone(),
                                selectors: entry.selectors.clone(),
                                hint: entry.hint.clone(),
                                cert_chain: s.cert_chain,
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
                    (Some(pb::svid_result::Result::Error(e)), _) => {
                        failed += 1;
                        warn!(entry_id = %r.entry_id, code = e.code, message = %e.message, "SVID signing refused");
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
            if !self.synced {
                continue;
            }
            let backing_off = self.retry_at.is_some_and(|t| Instant::now() < t);
            let due = self.due(now_unix());
            if !due.is_empty() && !backing_off {
                match self.issue(due).await {
                    Ok(()) => {
                        self.attempt = 0;
                        self.retry_at = None;
                    }
                    Err(e) => {
                        let wait = Duration::from_millis(rotation::backoff_ms(
                            self.attempt,
                            random_unit(),
                        ));
                        warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "SVID issuance failed; serving cached SVIDs and retrying");
                        self.attempt = self.attempt.saturating_add(1);
                        self.retry_at = Some(Instant::now() + wait);
                    }
                }
            }
            self.publish();
            if !*self.ready.borrow() && self.due(now_unix()).is_empty() {
                let _ = self.ready.send(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::AgentIdentity;

    /// A cache whose server is never called (the client connects lazily).
    fn cache(bundle: Vec<Vec<u8>>) -> (Cache, watch::Receiver<Arc<Snapshot>>) {
        let td = TrustDomain::parse("example.org").unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://example.org/sigil/agent/test/1"
                .try_into()
                .unwrap(),
        )];
        let leaf = p.signed_by(&key, &issuer).unwrap().der().to_vec();
        let ident = AgentIdentity::from_parts(vec![leaf], key.serialize_der()).unwrap();
        let roots = sigil_proto::TrustRoots::new(bundle.clone()).unwrap();
        let client = Arc::new(ServerClient::new(
            "127.0.0.1:1".into(),
            td.clone(),
            roots,
            watch::channel(Arc::new(ident)).1,
        ));
        let (out, rx) = watch::channel(Arc::new(Snapshot::empty(td.clone(), bundle.clone())));
        let (ready, _) = watch::channel(false);
        (Cache::new(td, client, bundle, out, ready), rx)
    }

    fn ca_der() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn an_empty_bundle_from_the_server_is_served_to_workloads() {
        let first = ca_der();
        let (mut c, rx) = cache(vec![first.clone()]);
        // A new bundle replaces the old one.
        let second = ca_der();
        c.apply(SyncEvent::Bundle {
            authorities: vec![first.clone(), second.clone()],
            tainted: vec![],
        });
        c.publish();
        assert_eq!(rx.borrow().bundle, vec![first, second]);
        // An empty one is not ignored: the trust domain has no valid SVID.
        c.apply(SyncEvent::Bundle {
            authorities: vec![],
            tainted: vec![],
        });
        c.publish();
        assert!(rx.borrow().bundle.is_empty());
    }
}
