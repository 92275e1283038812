//! Unit tests of the resume plan over a real sled store and registry, with
//! a [`ManualClock`] for expiry: every way an entry stops being the agent's
//! gives Deleted, unrelated changes give nothing, and the log is read in
//! bounded pages (or not at all when too far behind).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sigil_proto::Selector;
use sigil_proto::clock::{Clock, ManualClock};

use super::*;
use crate::entry::EntrySpec;
use crate::registry::Registry;
use crate::store::Store;
use crate::store::conformance::{entry_spec, spiffe_id};
use crate::store::sled::SledStore;

const SERVER: &str = "/sigil/server";
const AGENT_A: &str = "/sigil/agent/x509pop/a";
const AGENT_B: &str = "/sigil/agent/x509pop/b";

/// Store reads a plan made: the largest page asked for, and how many.
#[derive(Default)]
struct Reads {
    largest: AtomicUsize,
    count: AtomicUsize,
}

/// A registry over a sled store in a temp dir, and the reads of the plans.
struct Fixture {
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    reads: Arc<Reads>,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        Fixture {
            registry: Registry::load(store.clone(), spiffe_id(SERVER)).unwrap(),
            store,
            reads: Arc::default(),
            clock: ManualClock::at_unix(1_700_000_000),
            _dir: dir,
        }
    }

    fn now(&self) -> i64 {
        self.clock.now_unix()
    }

    fn create(&self, spec: EntrySpec) -> Entry {
        self.registry.create(spec, self.now()).unwrap()
    }

    fn reader(&self) -> PageReader {
        let (store, reads) = (self.store.clone(), self.reads.clone());
        Arc::new(move |after, limit| {
            reads.largest.fetch_max(limit, Ordering::SeqCst);
            reads.count.fetch_add(1, Ordering::SeqCst);
            store.entry_events_page(after, limit)
        })
    }

    /// The plan for `agent` (with `node_selectors`) resuming from `since`.
    async fn plan_for(&self, agent: &str, node_selectors: &[Selector], since: u64) -> Plan {
        let view = self
            .registry
            .view_for(&spiffe_id(agent), node_selectors, self.now());
        plan(self.reader(), &view, since, &spiffe_id(SERVER)).await
    }
}

fn changes(p: Plan) -> Vec<Change> {
    match p {
        Plan::Changes(c) => c,
        Plan::Full(reason) => panic!("expected changes, got a full sync: {reason}"),
    }
}

fn deleted_ids(c: &[Change]) -> Vec<&str> {
    c.iter()
        .filter_map(|c| match c {
            Change::Deleted { id, .. } => Some(id.as_str()),
            Change::Upsert(_) => None,
        })
        .collect()
}

fn upserted_ids(c: &[Change]) -> Vec<&str> {
    c.iter()
        .filter_map(|c| match c {
            Change::Upsert(e) => Some(e.id.as_str()),
            Change::Deleted { .. } => None,
        })
        .collect()
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn item6_moved_entry_is_deleted_on_resume_unit() {
    let f = Fixture::new();
    let moved = f.create(entry_spec("/moved", AGENT_A, &["unix:uid:1"]));
    let deleted = f.create(entry_spec("/deleted", AGENT_A, &["unix:uid:2"]));
    let kept = f.create(entry_spec("/kept", AGENT_A, &["unix:uid:3"]));
    let since = f.registry.revision();
    f.registry
        .update(&moved.id, entry_spec("/moved", AGENT_B, &["unix:uid:1"]))
        .unwrap();
    f.registry.delete(&deleted.id).unwrap();
    let other = f.create(entry_spec("/other", AGENT_B, &["unix:uid:4"]));
    let changed = f
        .registry
        .update(&kept.id, entry_spec("/kept", AGENT_A, &["unix:uid:5"]))
        .unwrap();

    let a = changes(f.plan_for(AGENT_A, &[], since).await);
    let mut gone = deleted_ids(&a);
    gone.sort();
    let mut want = vec![moved.id.as_str(), deleted.id.as_str()];
    want.sort();
    assert_eq!(gone, want, "moved and deleted entries are Deleted: {a:?}");
    assert_eq!(upserted_ids(&a), vec![changed.id.as_str()]);
    let order: Vec<u64> = a.iter().map(Change::order).collect();
    assert!(order.is_sorted(), "in revision order: {order:?}");

    // Agent B gets the entry moved to it and its new one; nothing of A's.
    let b = changes(f.plan_for(AGENT_B, &[], since).await);
    let mut got = upserted_ids(&b);
    got.sort();
    let mut want = vec![moved.id.as_str(), other.id.as_str()];
    want.sort();
    assert_eq!(got, want);
    assert!(deleted_ids(&b).is_empty(), "{b:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn item6_expired_entry_is_deleted_on_resume_unit() {
    let f = Fixture::new();
    let t = f.now() + 60;
    let mut spec = entry_spec("/expiring", AGENT_A, &["unix:uid:1"]);
    spec.expires_at = Some(t);
    let expiring = f.create(spec);
    // An alias that expires: entries under it lapse with it.
    let mut node = entry_spec("/rack", SERVER, &["x509pop:subject:cn:n1"]);
    node.expires_at = Some(t + 60);
    f.create(node);
    let under_alias = f.create(entry_spec("/w", "/rack", &["unix:uid:2"]));
    let since = f.registry.revision();
    let nodes = [sel("x509pop:subject:cn:n1")];

    let view = f.registry.view_for(&spiffe_id(AGENT_A), &nodes, f.now());
    assert_eq!(view.next_expiry, Some(t), "the earliest expiry");
    assert!(changes(f.plan_for(AGENT_A, &nodes, since).await).is_empty());

    f.clock.advance(Duration::from_secs(60));
    let a = changes(f.plan_for(AGENT_A, &nodes, since).await);
    assert_eq!(deleted_ids(&a), vec![expiring.id.as_str()]);
    f.clock.advance(Duration::from_secs(60));
    let a = changes(f.plan_for(AGENT_A, &nodes, since).await);
    let mut gone = deleted_ids(&a);
    gone.sort();
    let mut want = vec![expiring.id.as_str(), under_alias.id.as_str()];
    want.sort();
    assert_eq!(gone, want, "the alias expired too");
    // An agent that never matched the alias is told nothing of it.
    let b = changes(f.plan_for(AGENT_B, &[], since).await);
    assert!(b.is_empty(), "{b:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn item7_resume_is_bounded_unit() {
    let f = Fixture::new();
    let since = f.registry.revision();
    let n = 3 * EVENT_PAGE + 7;
    let specs: Vec<EntrySpec> = (0..n)
        .map(|i| entry_spec(&format!("/w/{i}"), AGENT_A, &["unix:uid:1"]))
        .collect();
    for r in f.registry.create_many(specs, f.now()).unwrap() {
        r.unwrap();
    }
    let a = changes(f.plan_for(AGENT_A, &[], since).await);
    assert_eq!(upserted_ids(&a).len(), n, "every new entry, once");
    assert_eq!(f.reads.largest.load(Ordering::SeqCst), EVENT_PAGE, "paged");
    assert_eq!(f.reads.count.load(Ordering::SeqCst), n.div_ceil(EVENT_PAGE));
    assert!(changes(f.plan_for(AGENT_B, &[], since).await).is_empty());

    // Too far behind (or ahead): a full set, without reading the log.
    let specs: Vec<EntrySpec> = (0..RESUME_MAX_EVENTS)
        .map(|i| entry_spec(&format!("/x/{i}"), AGENT_B, &["unix:uid:1"]))
        .collect();
    for r in f.registry.create_many(specs, f.now()).unwrap() {
        r.unwrap();
    }
    let reads = f.reads.count.load(Ordering::SeqCst);
    let ahead = f.registry.revision() + 1;
    for from in [since, ahead] {
        match f.plan_for(AGENT_A, &[], from).await {
            Plan::Full(reason) => eprintln!("resume from {from}: {reason}"),
            other => panic!("resume from {from}: {other:?}"),
        }
    }
    assert_eq!(
        f.reads.count.load(Ordering::SeqCst),
        reads,
        "no read for those"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn item7_resume_older_than_the_log_gets_a_full_sync_unit() {
    let f = Fixture::new();
    for i in 0..5 {
        f.create(entry_spec(&format!("/w/{i}"), AGENT_A, &["unix:uid:1"]));
    }
    f.store.prune_entry_events(3).unwrap();
    assert!(matches!(f.plan_for(AGENT_A, &[], 2).await, Plan::Full(_)));
    assert_eq!(changes(f.plan_for(AGENT_A, &[], 3).await).len(), 2);
    // A node entry changed: aliases may differ, only a full set is safe.
    f.create(entry_spec("/rack", SERVER, &["x509pop:subject:cn:n1"]));
    assert!(matches!(f.plan_for(AGENT_A, &[], 3).await, Plan::Full(_)));
}
