//! Unit tests of the cache's decisions, driven by a [`ManualClock`] and an
//! in-process signer: a real rcgen CA that signs the cache's CSRs (it can be
//! rotated, refuse an entry, or be "down" like an unreachable server). Each
//! test steps the cache by hand instead of running its task, so nothing
//! sleeps.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use sigil_proto::clock::ManualClock;
use sigil_proto::{Selector, SpiffeId};

use super::*;

const START: u64 = 1_000_000;

/// A CA that signs CSRs, as the server would.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    der: Vec<u8>,
    ski: Vec<u8>,
}

fn test_ca() -> Arc<TestCa> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let der = p.self_signed(&key).unwrap().der().to_vec();
    let ski = ski(&der);
    Arc::new(TestCa {
        issuer: rcgen::Issuer::new(p, key),
        der,
        ski,
    })
}

fn ski(der: &[u8]) -> Vec<u8> {
    let ids = bundle_key_ids(&[der.to_vec()]);
    assert_eq!(ids.len(), 1, "a CA certificate with a subject key id");
    ids.into_iter().next().unwrap()
}

/// Signs with the current CA for `ttl` seconds from the clock's now.
struct CaSigner {
    clock: Arc<ManualClock>,
    ca: Mutex<Arc<TestCa>>,
    ttl: Mutex<HashMap<String, i64>>,
    /// Entries refused, with the gRPC code of the refusal.
    refuse: Mutex<HashMap<String, i32>>,
    down: AtomicBool,
    /// Calls made (whether they succeeded or not).
    calls: AtomicUsize,
    /// The entry ids of every call, in order, with the clock's reading.
    batches: Mutex<Vec<(SystemTime, Vec<String>)>>,
    /// Calls with more CSRs than this are refused as over the rate limit
    /// (`ResourceExhausted`), like a server whose burst is below the batch.
    max_batch: Mutex<Option<usize>>,
}

impl CaSigner {
    fn ca(&self) -> Arc<TestCa> {
        self.ca.lock().unwrap().clone()
    }
    fn rotate(&self) -> Arc<TestCa> {
        let next = test_ca();
        *self.ca.lock().unwrap() = next.clone();
        next
    }
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn refuse(&self, entry_id: &str, code: i32) {
        self.refuse.lock().unwrap().insert(entry_id.into(), code);
    }
    /// How many calls asked for `entry_id`.
    fn attempts(&self, entry_id: &str) -> usize {
        let batches = self.batches.lock().unwrap();
        batches
            .iter()
            .filter(|(_, ids)| ids.iter().any(|id| id == entry_id))
            .count()
    }
    fn batch_sizes(&self) -> Vec<usize> {
        let batches = self.batches.lock().unwrap();
        batches.iter().map(|(_, ids)| ids.len()).collect()
    }
    fn ttl(&self, entry_id: &str) -> i64 {
        self.ttl
            .lock()
            .unwrap()
            .get(entry_id)
            .copied()
            .unwrap_or(100)
    }
}

impl SvidSigner for CaSigner {
    async fn sign_svids(&self, batch: Vec<CsrRequest>) -> Result<Vec<SignResult>, SignError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let ids = batch.iter().map(|r| r.entry_id.clone()).collect();
        self.batches.lock().unwrap().push((self.clock.now(), ids));
        if self.down.load(Ordering::SeqCst) {
            return Err(SignError::Failed("Unavailable: the server is down".into()));
        }
        if self
            .max_batch
            .lock()
            .unwrap()
            .is_some_and(|m| batch.len() > m)
        {
            return Err(SignError::RateLimited(
                "ResourceExhausted: signing rate limit exceeded for this agent; retry later".into(),
            ));
        }
        let ca = self.ca();
        let now = time::OffsetDateTime::from_unix_timestamp(self.clock.now_unix()).unwrap();
        Ok(batch
            .into_iter()
            .map(|r| {
                if let Some(&code) = self.refuse.lock().unwrap().get(&r.entry_id) {
                    return SignResult {
                        entry_id: r.entry_id,
                        outcome: SignOutcome::Refused {
                            code,
                            message: "not authorized".into(),
                        },
                    };
                }
                let der = rustls_pki_types::CertificateSigningRequestDer::from(r.csr);
                let mut csr = rcgen::CertificateSigningRequestParams::from_der(&der).unwrap();
                csr.params.not_before = now;
                csr.params.not_after = now + time::Duration::seconds(self.ttl(&r.entry_id));
                csr.params.use_authority_key_identifier_extension = true;
                let leaf = csr.signed_by(&ca.issuer).unwrap().der().to_vec();
                SignResult {
                    entry_id: r.entry_id,
                    outcome: SignOutcome::Signed(vec![leaf]),
                }
            })
            .collect())
    }
}

struct Harness {
    clock: Arc<ManualClock>,
    signer: Arc<CaSigner>,
    cache: Cache<CaSigner>,
    rx: watch::Receiver<Arc<Snapshot>>,
    ready: watch::Receiver<bool>,
}

fn harness() -> Harness {
    let clock = Arc::new(ManualClock::at_unix(START));
    let ca = test_ca();
    let bundle = vec![ca.der.clone()];
    let signer = Arc::new(CaSigner {
        clock: clock.clone(),
        ca: Mutex::new(ca),
        ttl: Mutex::new(HashMap::new()),
        refuse: Mutex::new(HashMap::new()),
        down: AtomicBool::new(false),
        calls: AtomicUsize::new(0),
        batches: Mutex::new(Vec::new()),
        max_batch: Mutex::new(None),
    });
    let td = TrustDomain::parse("example.org").unwrap();
    let (out, rx) = watch::channel(Arc::new(Snapshot::empty(td.clone(), bundle.clone())));
    let (ready_tx, ready) = watch::channel(false);
    let cache = Cache::new(td, signer.clone(), clock.clone(), bundle, out, ready_tx);
    Harness {
        clock,
        signer,
        cache,
        rx,
        ready,
    }
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn entry(id: &str, selectors: &[&str], revision: u64) -> AuthorizedEntry {
    AuthorizedEntry {
        id: id.into(),
        spiffe_id: SpiffeId::parse(&format!("spiffe://example.org/{id}")).unwrap(),
        selectors: selectors.iter().map(|s| sel(s)).collect(),
        x509_svid_ttl_seconds: 0,
        dns_names: vec![],
        federates_with: vec![],
        hint: String::new(),
        expires_at: None,
        revision,
        created_at: 0,
    }
}

impl Harness {
    async fn event(&mut self, ev: SyncEvent) {
        self.cache.apply(ev);
        self.cache.step().await;
    }
    async fn advance(&mut self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
        self.cache.step().await;
    }
    fn now(&self) -> i64 {
        self.clock.now_unix()
    }
    /// Steps the cache every 100 ms of clock time for `span`.
    async fn run_for(&mut self, span: Duration) {
        let step = Duration::from_millis(100);
        for _ in 0..span.as_millis() / step.as_millis() {
            self.clock.advance(step);
            self.cache.step().await;
        }
    }
    /// The published SVID of entry `id`, if any.
    fn svid(&self, id: &str) -> Option<Arc<WorkloadSvid>> {
        self.rx
            .borrow()
            .svids
            .iter()
            .find(|s| s.entry_id == id)
            .cloned()
    }
    /// What a workload with `selectors` is offered now.
    fn offered(&self, selectors: &[&str]) -> Vec<String> {
        let sels: Vec<Selector> = selectors.iter().map(|s| sel(s)).collect();
        self.rx
            .borrow()
            .svids_for(&sels, self.now())
            .iter()
            .map(|s| s.entry_id.clone())
            .collect()
    }
}

/// `n` entries `e000`, `e001`, … for `unix:uid:1`.
fn numbered(n: usize) -> Vec<AuthorizedEntry> {
    (0..n)
        .map(|i| entry(&format!("e{i:03}"), &["unix:uid:1"], 1))
        .collect()
}

fn same(a: &Option<Arc<WorkloadSvid>>, b: &Option<Arc<WorkloadSvid>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

#[tokio::test]
async fn nothing_is_signed_before_the_first_full_sync_then_every_entry_is() {
    let mut h = harness();
    h.event(SyncEvent::Upsert(entry("a", &["unix:uid:1"], 1)))
        .await;
    assert_eq!(h.signer.calls(), 0, "no signing before the full set");
    assert!(!*h.ready.borrow());
    h.event(SyncEvent::Full(vec![
        entry("b", &["unix:uid:1"], 1),
        entry("a", &["unix:uid:1"], 1),
    ]))
    .await;
    assert!(*h.ready.borrow(), "ready once every SVID is issued");
    let snap = h.rx.borrow().clone();
    let ids: Vec<&str> = snap.svids.iter().map(|s| s.entry_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"], "ordered by SPIFFE ID");
    let a = &snap.svids[0];
    assert_eq!(a.not_after - a.not_before, 100);
    assert_eq!(a.not_before, h.now());
    // The key is the one the CSR was made for.
    let key = rcgen::KeyPair::try_from(a.key_pkcs8.as_slice()).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&a.cert_chain[0]).unwrap();
    assert_eq!(
        key.public_key_raw(),
        leaf.public_key().subject_public_key.data.as_ref()
    );
}

#[tokio::test]
async fn renews_at_half_life_and_not_before() {
    let mut h = harness();
    h.event(SyncEvent::Full(vec![entry("a", &["unix:uid:1"], 1)]))
        .await;
    let first = h.svid("a");
    h.rx.mark_unchanged();
    // Half of a 100 s life, with the middle jitter draw (0.5): 50 s.
    h.advance(49).await;
    assert!(same(&first, &h.svid("a")), "renewed before half-life");
    assert!(!h.rx.has_changed().unwrap(), "nothing new published");
    h.advance(1).await;
    let second = h.svid("a");
    assert!(!same(&first, &second), "not renewed at half-life");
    assert!(h.rx.has_changed().unwrap(), "the renewal is published");
    let second = second.unwrap();
    assert_eq!(second.not_after, START as i64 + 150);
    // The old SVID is still valid: the renewal overlaps it.
    assert!(first.unwrap().not_after > h.now());
}

#[tokio::test]
async fn the_jitter_draw_moves_renewal_by_up_to_ten_percent_of_half_life() {
    for (unit, due) in [(1.0, 55), (0.0, 45)] {
        let mut h = harness();
        h.clock.set_random_unit(unit);
        h.event(SyncEvent::Full(vec![entry("a", &["unix:uid:1"], 1)]))
            .await;
        let first = h.svid("a");
        h.advance(due - 1).await;
        assert!(same(&first, &h.svid("a")), "draw {unit}: renewed early");
        h.advance(1).await;
        assert!(!same(&first, &h.svid("a")), "draw {unit}: not renewed");
    }
}

#[tokio::test]
async fn a_removed_entry_drops_its_svid_at_once() {
    let mut h = harness();
    h.event(SyncEvent::Full(vec![
        entry("a", &["unix:uid:1"], 1),
        entry("b", &["unix:uid:1"], 1),
        entry("c", &["unix:uid:1"], 1),
    ]))
    .await;
    // Even with the server unreachable: dropping needs no signing.
    h.signer.set_down(true);
    h.event(SyncEvent::Delete("a".into())).await;
    assert!(h.svid("a").is_none());
    assert_eq!(h.offered(&["unix:uid:1"]), ["b", "c"]);
    // A full set without an entry removes it too.
    h.event(SyncEvent::Full(vec![entry("c", &["unix:uid:1"], 1)]))
        .await;
    assert_eq!(h.offered(&["unix:uid:1"]), ["c"]);
}

#[tokio::test]
async fn a_changed_entry_is_reissued_at_once_with_its_new_selectors() {
    let mut h = harness();
    h.event(SyncEvent::Full(vec![entry("a", &["unix:uid:1"], 1)]))
        .await;
    let first = h.svid("a");
    // Narrowed: the entry now also requires a gid.
    h.event(SyncEvent::Upsert(entry(
        "a",
        &["unix:uid:1", "unix:gid:2"],
        2,
    )))
    .await;
    assert!(!same(&first, &h.svid("a")), "re-issued without waiting");
    assert!(h.offered(&["unix:uid:1"]).is_empty());
    assert_eq!(h.offered(&["unix:uid:1", "unix:gid:2"]), ["a"]);
}

fn aki_of(svid: &WorkloadSvid) -> Vec<u8> {
    aki(&svid.cert_chain[0]).unwrap()
}

#[tokio::test]
async fn a_tainted_signing_ca_reissues_from_the_new_one() {
    let mut h = harness();
    h.event(SyncEvent::Full(vec![entry("a", &["unix:uid:1"], 1)]))
        .await;
    let old_ca = h.signer.ca();
    let first = h.svid("a");
    assert_eq!(aki_of(first.as_ref().unwrap()), old_ca.ski);
    // A new CA is prepared and published: the SVID still chains, no
    // re-issue.
    let new_ca = h.signer.rotate();
    let both = vec![old_ca.der.clone(), new_ca.der.clone()];
    h.event(SyncEvent::Bundle(TrustBundle {
        x509_authorities: both.clone(),
        tainted_key_ids: vec![],
        sequence: 2,
        ..Default::default()
    }))
    .await;
    assert!(same(&first, &h.svid("a")));
    // The old CA is tainted: re-issued at once.
    h.event(SyncEvent::Bundle(TrustBundle {
        x509_authorities: both,
        tainted_key_ids: vec![old_ca.ski.clone()],
        sequence: 3,
        ..Default::default()
    }))
    .await;
    let second = h.svid("a").unwrap();
    assert_eq!(aki_of(&second), new_ca.ski);
}

#[tokio::test]
async fn a_signing_ca_dropped_from_the_bundle_reissues() {
    let mut h = harness();
    h.event(SyncEvent::Full(vec![entry("a", &["unix:uid:1"], 1)]))
        .await;
    let first = h.svid("a");
    let new_ca = h.signer.rotate();
    h.event(SyncEvent::Bundle(TrustBundle {
        x509_authorities: vec![new_ca.der.clone()],
        tainted_key_ids: vec![],
        sequence: 2,
        ..Default::default()
    }))
    .await;
    let second = h.svid("a");
    assert!(!same(&first, &second));
    assert_eq!(aki_of(second.as_ref().unwrap()), new_ca.ski);
    assert_eq!(h.rx.borrow().bundle, vec![new_ca.der.clone()]);
}

#[tokio::test]
async fn with_the_server_down_svids_are_kept_until_expiry_and_renewal_backs_off() {
    let mut h = harness();
    h.signer.ttl.lock().unwrap().insert("long".into(), 1000);
    h.event(SyncEvent::Full(vec![
        entry("short", &["unix:uid:1"], 1),
        entry("long", &["unix:uid:1"], 1),
    ]))
    .await;
    let short = h.svid("short").unwrap();
    h.signer.set_down(true);
    // Half-life of `short`: the renewal fails; both SVIDs are still served.
    h.advance(50).await;
    assert_eq!(h.signer.calls(), 2);
    assert!(Arc::ptr_eq(&short, &h.svid("short").unwrap()));
    assert_eq!(h.offered(&["unix:uid:1"]), ["long", "short"]);
    // Backoff after the first failure: 250 ms + 750 ms × 0.5 = 625 ms.
    h.clock.advance(Duration::from_millis(600));
    h.cache.step().await;
    assert_eq!(h.signer.calls(), 2, "retried inside the backoff");
    h.clock.advance(Duration::from_millis(25));
    h.cache.step().await;
    assert_eq!(h.signer.calls(), 3, "retried after the backoff");
    // The second wait doubles: 500 ms + 1500 ms × 0.5 = 1250 ms.
    h.clock.advance(Duration::from_millis(1249));
    h.cache.step().await;
    assert_eq!(h.signer.calls(), 3);
    h.clock.advance(Duration::from_millis(1));
    h.cache.step().await;
    assert_eq!(h.signer.calls(), 4);
    // `short` expires during the outage: no longer offered; `long` is.
    h.clock
        .set(std::time::UNIX_EPOCH + Duration::from_secs(START + 100));
    h.cache.step().await;
    assert_eq!(h.offered(&["unix:uid:1"]), ["long"]);
    // The server returns: the next retry renews, and a new entry is issued.
    h.signer.set_down(false);
    h.event(SyncEvent::Upsert(entry("after", &["unix:uid:1"], 1)))
        .await;
    assert_eq!(h.offered(&["unix:uid:1"]), ["after", "long", "short"]);
    assert!(h.svid("short").unwrap().not_after > h.now());
    assert!(*h.ready.borrow());
}

#[tokio::test]
async fn an_event_ends_the_backoff_and_success_resets_it() {
    let mut h = harness();
    h.signer.set_down(true);
    h.event(SyncEvent::Full(vec![entry("a", &["unix:uid:1"], 1)]))
        .await;
    assert_eq!(h.signer.calls(), 1);
    assert!(h.svid("a").is_none());
    assert!(!*h.ready.borrow(), "not ready while an SVID is missing");
    h.cache.step().await;
    assert_eq!(h.signer.calls(), 1, "backing off");
    h.signer.set_down(false);
    // A new view of the entries is a reason to try again at once.
    h.event(SyncEvent::Upsert(entry("b", &["unix:uid:1"], 1)))
        .await;
    assert_eq!(h.signer.calls(), 2);
    assert_eq!(h.offered(&["unix:uid:1"]), ["a", "b"]);
    assert!(*h.ready.borrow());
    assert_eq!(h.cache.attempt, 0);
    assert!(h.cache.retry_at.is_none());
}

#[tokio::test]
async fn a_refused_entry_does_not_hold_back_the_others() {
    let mut h = harness();
    h.signer.refuse("a", 7);
    h.event(SyncEvent::Full(vec![
        entry("a", &["unix:uid:1"], 1),
        entry("b", &["unix:uid:1"], 1),
    ]))
    .await;
    assert_eq!(h.offered(&["unix:uid:1"]), ["b"]);
    assert!(
        h.cache.refused.contains_key("a"),
        "the refusal is retried later"
    );
    assert!(h.cache.retry_at.is_none(), "the others do not wait");
    h.signer.refuse.lock().unwrap().clear();
    h.advance(1).await;
    assert_eq!(h.offered(&["unix:uid:1"]), ["a", "b"]);
}

#[tokio::test]
async fn a_bundle_update_is_published_and_an_empty_one_served() {
    let mut h = harness();
    h.event(SyncEvent::Full(vec![])).await;
    let first = h.signer.ca().der.clone();
    let second = test_ca().der.clone();
    h.rx.mark_unchanged();
    h.event(SyncEvent::Bundle(TrustBundle {
        x509_authorities: vec![first.clone(), second.clone()],
        tainted_key_ids: vec![],
        sequence: 2,
        ..Default::default()
    }))
    .await;
    assert!(h.rx.has_changed().unwrap());
    assert_eq!(h.rx.borrow_and_update().bundle, vec![first, second]);
    // An empty one is not ignored: the trust domain has no valid SVID.
    h.event(SyncEvent::Bundle(TrustBundle::default())).await;
    assert!(h.rx.has_changed().unwrap());
    assert!(h.rx.borrow().bundle.is_empty());
}

/// gRPC codes the signer answers per entry.
const INVALID_ARGUMENT: i32 = 3;
const NOT_FOUND: i32 = 5;
const PERMISSION_DENIED: i32 = 7;

/// Issue 14 item 8: narrowing an entry's selectors applies at the next
/// snapshot, not once the re-issue succeeds. The signer is down, so no
/// re-issue can happen: a process matching only the old selectors gets
/// nothing at once; one matching the new selectors keeps the still-valid
/// SVID until the new one arrives (it is entitled to the entry, and the old
/// certificate names the same SPIFFE ID).
#[tokio::test]
async fn item8_narrowed_selectors_stop_serving_at_once() {
    let mut h = harness();
    h.event(SyncEvent::Full(vec![entry("a", &["unix:uid:1"], 1)]))
        .await;
    let first = h.svid("a").unwrap();
    h.signer.set_down(true);
    h.event(SyncEvent::Upsert(entry(
        "a",
        &["unix:uid:1", "unix:gid:2"],
        2,
    )))
    .await;
    assert!(
        h.offered(&["unix:uid:1"]).is_empty(),
        "a process matching only the old selectors is still served the narrowed entry"
    );
    assert_eq!(h.offered(&["unix:uid:1", "unix:gid:2"]), ["a"]);
    let kept = h.svid("a").unwrap();
    assert_eq!(kept.cert_chain, first.cert_chain, "the still-valid SVID");
    assert_eq!(kept.key_pkcs8, first.key_pkcs8);

    // Widened back (only uid:2 needed now), still before any re-issue: the
    // old SVID goes only to processes that match both what it was issued
    // for and what the entry says now.
    h.event(SyncEvent::Upsert(entry("a", &["unix:gid:2"], 3)))
        .await;
    assert!(h.offered(&["unix:gid:2"]).is_empty());
    assert!(h.offered(&["unix:uid:1"]).is_empty());
    assert_eq!(h.offered(&["unix:uid:1", "unix:gid:2"]), ["a"]);

    // The signer returns: after the backoff (two failures: 1.25 s), the
    // re-issued SVID carries the entry's selectors.
    h.signer.set_down(false);
    h.advance(2).await;
    let second = h.svid("a").unwrap();
    assert_ne!(second.cert_chain, first.cert_chain, "re-issued");
    assert_eq!(h.offered(&["unix:gid:2"]), ["a"]);
    assert!(h.offered(&["unix:uid:1"]).is_empty());
}

/// Issue 14 item 8: an entry whose SPIFFE ID changed no longer grants the
/// old one: its old SVID is not served to anyone, even before re-issue.
#[tokio::test]
async fn item8_a_changed_spiffe_id_stops_serving_the_old_svid_at_once() {
    let mut h = harness();
    h.event(SyncEvent::Full(vec![entry("a", &["unix:uid:1"], 1)]))
        .await;
    h.signer.set_down(true);
    let mut moved = entry("a", &["unix:uid:1"], 2);
    moved.spiffe_id = SpiffeId::parse("spiffe://example.org/elsewhere").unwrap();
    h.event(SyncEvent::Upsert(moved)).await;
    assert!(
        h.offered(&["unix:uid:1"]).is_empty(),
        "the old SPIFFE ID is still served"
    );
    h.signer.set_down(false);
    h.advance(1).await;
    assert_eq!(
        h.svid("a").unwrap().spiffe_id.as_str(),
        "spiffe://example.org/elsewhere"
    );
}

/// Issue 14 item 6: an entry's `expires_at` ends what the agent serves,
/// whether or not the server's Deleted arrives (here the server is even
/// unreachable), and nothing served outlives it.
#[tokio::test]
async fn item6_expired_entry_stops_being_served() {
    let mut h = harness();
    let mut a = entry("a", &["unix:uid:1"], 1);
    a.expires_at = Some(START as i64 + 30);
    h.event(SyncEvent::Full(vec![a, entry("b", &["unix:uid:1"], 1)]))
        .await;
    assert_eq!(h.offered(&["unix:uid:1"]), ["a", "b"]);
    // The certificate lives 100 s; what is served stops at expires_at.
    assert!(
        h.svid("a").unwrap().not_after <= START as i64 + 30,
        "served until {}, after the entry's expires_at {}",
        h.svid("a").unwrap().not_after,
        START + 30
    );
    h.signer.set_down(true);
    h.advance(29).await;
    assert_eq!(h.offered(&["unix:uid:1"]), ["a", "b"]);
    h.advance(1).await;
    assert_eq!(h.offered(&["unix:uid:1"]), ["b"], "served past expires_at");
    assert!(h.svid("a").is_none(), "still in the snapshot");
    // Never signed again, even once the server is back.
    h.signer.set_down(false);
    let before = h.signer.attempts("a");
    h.advance(60).await;
    assert_eq!(
        h.signer.attempts("a"),
        before,
        "an expired entry was signed"
    );
    assert_eq!(h.offered(&["unix:uid:1"]), ["b"]);
}

/// Issue 14 item 6: a per-entry refusal backs off that entry alone (capped),
/// drops its SVID when it means "not authorized" (the entry moved to another
/// agent and the Deleted was lost), and never delays the other entries.
#[tokio::test]
async fn item6_refused_entry_does_not_block_the_others() {
    let mut h = harness();
    h.event(SyncEvent::Full(vec![
        entry("a", &["unix:uid:1"], 1),
        entry("b", &["unix:uid:1"], 1),
        entry("c", &["unix:uid:1"], 1),
        entry("d", &["unix:uid:1"], 1),
    ]))
    .await;
    // The server no longer authorizes `a` (moved), does not know `c`
    // (deleted), and refuses `d`'s CSR: their renewals at half-life fail.
    h.signer.refuse("a", PERMISSION_DENIED);
    h.signer.refuse("c", NOT_FOUND);
    h.signer.refuse("d", INVALID_ARGUMENT);
    let d = h.svid("d").unwrap();
    h.advance(50).await;
    assert_eq!(
        h.offered(&["unix:uid:1"]),
        ["b", "d"],
        "an SVID the server no longer authorizes is still served"
    );
    // `d` is still authorized: its valid SVID is kept until it expires.
    assert!(Arc::ptr_eq(&d, &h.svid("d").unwrap()));
    // Ten minutes, one step a second: `b` is renewed at each half-life on
    // time, while the refused entries are retried with a growing, capped
    // backoff (never in a tight loop).
    for _ in 0..600 {
        h.advance(1).await;
        let b = h.svid("b").unwrap();
        assert!(
            b.not_after - h.now() >= 50,
            "b was not renewed on time: {} s left at {}",
            b.not_after - h.now(),
            h.now() - START as i64
        );
    }
    for id in ["a", "c", "d"] {
        let n = h.signer.attempts(id);
        assert!((5..=13).contains(&n), "{id} was tried {n} times in 650 s");
    }
    assert!(h.cache.retry_at.is_none(), "every issuance backs off");
    assert!(*h.ready.borrow());
    // A new revision of a refused entry is tried at once.
    h.signer.refuse.lock().unwrap().clear();
    let before = h.signer.attempts("a");
    h.event(SyncEvent::Upsert(entry("a", &["unix:uid:1"], 2)))
        .await;
    assert_eq!(h.signer.attempts("a"), before + 1);
    assert!(h.svid("a").is_some());
}

/// Issue 14 item 9: a server whose signing burst is below the agent's batch
/// refuses the whole call (`ResourceExhausted`). The agent halves the batch
/// (down to 1) and retries after a backoff instead of sending the same
/// batch forever.
#[tokio::test]
async fn item9_agent_splits_a_batch_the_server_refuses_as_too_large() {
    let mut h = harness();
    *h.signer.max_batch.lock().unwrap() = Some(100);
    h.event(SyncEvent::Full(numbered(300))).await;
    h.run_for(Duration::from_secs(10)).await;
    assert_eq!(h.signer.batch_sizes(), [300, 150, 75, 75, 75, 75]);
    assert_eq!(h.rx.borrow().svids.len(), 300, "every SVID issued");
    assert!(*h.ready.borrow());
    let at: Vec<SystemTime> = h
        .signer
        .batches
        .lock()
        .unwrap()
        .iter()
        .map(|b| b.0)
        .collect();
    for w in at.windows(2).take(2) {
        let gap = w[1].duration_since(w[0]).unwrap();
        assert!(gap >= Duration::from_millis(250), "retried after {gap:?}");
    }

    // A server that refuses even one CSR: down to batches of 1, retried
    // with a growing backoff.
    let mut h = harness();
    *h.signer.max_batch.lock().unwrap() = Some(0);
    h.event(SyncEvent::Full(numbered(4))).await;
    h.run_for(Duration::from_secs(60)).await;
    let sizes = h.signer.batch_sizes();
    assert_eq!(sizes[..4], [4, 2, 1, 1], "{sizes:?}");
    assert!(sizes.iter().all(|&n| n >= 1));
    assert!(sizes.len() <= 12, "{} calls in 60 s", sizes.len());
}

mod federation;
mod stream;
