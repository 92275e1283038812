//! Unit tests of the [`Registry`] over a real sled store in a temp dir, with
//! a [`ManualClock`] wherever time matters (entry expiry): what reaches the
//! index and the subscribers on every change and in which order, what an
//! agent is authorized for (its own entries, node aliases, expiry), and
//! what survives a restart.

use std::sync::Arc;
use std::time::Duration;

use sigil_proto::Selector;
use sigil_proto::clock::{Clock, ManualClock};
use tokio::sync::broadcast;

use super::Registry;
use crate::entry::{Entry, EntryEvent, EntryFilter, EntrySpec};
use crate::store::conformance::{entry_spec, spiffe_id};
use crate::store::sled::SledStore;
use crate::store::{Store, StoreError, StoreResult};

const SERVER: &str = "/sigil/server";
const AGENT_A: &str = "/sigil/agent/x509pop/a";
const AGENT_B: &str = "/sigil/agent/x509pop/b";

/// A registry over a sled store in its own temp dir (kept alive with it).
struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    clock: ManualClock,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (store, registry) = open(&dir);
        Fixture {
            dir,
            store,
            registry,
            clock: ManualClock::at_unix(1_700_000_000),
        }
    }

    fn now(&self) -> i64 {
        self.clock.now_unix()
    }

    fn create(&self, spec: EntrySpec) -> Entry {
        self.registry.create(spec, self.now()).unwrap()
    }

    /// One batch of `(spiffe path, selector)` entries under agent A.
    fn create_many(&self, items: &[(&str, &str)]) -> Vec<StoreResult<Entry>> {
        let specs = items
            .iter()
            .map(|(path, sel)| entry_spec(path, AGENT_A, &[sel]))
            .collect();
        self.registry.create_many(specs, self.now()).unwrap()
    }

    /// What `agent` with `node_selectors` is authorized for now: entry ids.
    fn view_ids(&self, agent: &str, node_selectors: &[Selector]) -> Vec<String> {
        self.registry
            .view_for(&spiffe_id(agent), node_selectors, self.now())
            .entries
            .iter()
            .map(|e| e.id.clone())
            .collect()
    }
}

fn open(dir: &tempfile::TempDir) -> (Arc<dyn Store>, Arc<Registry>) {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let registry = Registry::load(store.clone(), spiffe_id(SERVER)).unwrap();
    (store, registry)
}

fn selectors(s: &[&str]) -> Vec<Selector> {
    s.iter().map(|s| Selector::parse(s).unwrap()).collect()
}

/// A node entry: parented to the server, giving `spiffe_path` as an alias to
/// agents whose node selectors include `node_selectors`.
fn node_entry(spiffe_path: &str, node_selectors: &[&str]) -> EntrySpec {
    entry_spec(spiffe_path, SERVER, node_selectors)
}

/// Every event already sent to `rx`, in order.
fn drain(rx: &mut broadcast::Receiver<Arc<EntryEvent>>) -> Vec<EntryEvent> {
    let mut out = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        out.push((*ev).clone());
    }
    out
}

fn ids(entries: &[Arc<Entry>]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn create_update_delete_reach_index_and_subscribers_in_revision_order() {
    let f = Fixture::new();
    let r = &f.registry;
    assert_eq!((r.revision(), r.count()), (0, 0));
    let mut rx = r.subscribe();

    let e = f.create(entry_spec("/w", AGENT_A, &["unix:uid:1"]));
    assert_eq!(e.created_at, f.now());
    assert_eq!(r.get(&e.id).as_deref(), Some(&e));
    assert_eq!((r.revision(), r.count()), (e.revision, 1));

    let updated = r
        .update(&e.id, entry_spec("/w", AGENT_A, &["unix:uid:2"]))
        .unwrap();
    assert!(updated.revision > e.revision);
    assert_eq!(r.get(&e.id).as_deref(), Some(&updated));

    let deleted = r.delete(&e.id).unwrap();
    assert!(deleted.revision > updated.revision);
    assert_eq!(deleted.revision, f.store.entries_revision().unwrap());
    assert_eq!(deleted.spec, updated.spec, "a delete carries the content");
    assert!(r.get(&e.id).is_none());
    assert_eq!((r.revision(), r.count()), (deleted.revision, 0));

    assert_eq!(
        drain(&mut rx),
        vec![
            EntryEvent::Upserted(e),
            EntryEvent::Upserted(updated),
            EntryEvent::Deleted(deleted),
        ]
    );
}

/// A subscriber that follows the broadcast sees exactly the store's change
/// log: what an agent's sync stream resumes from after a reconnect.
#[test]
fn i22_5_a_no_op_update_writes_nothing_and_sends_no_event() {
    let f = Fixture::new();
    let r = &f.registry;
    let e = f.create(entry_spec("/w", AGENT_A, &["unix:uid:2", "unix:gid:1"]));
    let mut rx = r.subscribe();
    // The same content, selectors in another order: unchanged.
    let same = r
        .update(
            &e.id,
            entry_spec("/w", AGENT_A, &["unix:gid:1", "unix:uid:2"]),
        )
        .unwrap();
    assert_eq!(same, e, "same revision, same content");
    assert_eq!(r.revision(), e.revision);
    assert_eq!(f.store.entries_revision().unwrap(), e.revision, "no write");
    assert!(
        drain(&mut rx).is_empty(),
        "no event: agents re-issue nothing"
    );
    // A real change still bumps the revision.
    let changed = r
        .update(&e.id, entry_spec("/w", AGENT_A, &["unix:uid:3"]))
        .unwrap();
    assert!(changed.revision > e.revision);
    assert_eq!(drain(&mut rx).len(), 1);
}

#[test]
fn broadcast_follows_the_store_change_log() {
    let f = Fixture::new();
    let r = &f.registry;
    let before = f.create(entry_spec("/before", AGENT_A, &["unix:uid:1"]));
    let mut rx = r.subscribe();
    let a = f.create(entry_spec("/a", AGENT_A, &["unix:uid:2"]));
    r.update(&a.id, entry_spec("/a", AGENT_B, &["unix:uid:2"]))
        .unwrap();
    r.delete(&before.id).unwrap();
    let batch = f.create_many(&[("/b1", "unix:uid:3"), ("/b2", "unix:uid:4")]);
    assert!(batch.iter().all(Result::is_ok));

    let seen = drain(&mut rx);
    let logged = f
        .store
        .entry_events_since(before.revision)
        .unwrap()
        .unwrap();
    assert_eq!(seen, logged);
    let revisions: Vec<u64> = seen.iter().map(EntryEvent::revision).collect();
    let expected: Vec<u64> = (before.revision + 1..=r.revision()).collect();
    assert_eq!(revisions, expected, "one event per revision, in order");
}

#[test]
fn refused_changes_change_nothing() {
    let f = Fixture::new();
    let r = &f.registry;
    let e = f.create(entry_spec("/w", AGENT_A, &["unix:uid:1"]));
    let other = f.create(entry_spec("/w", AGENT_A, &["unix:uid:2"]));
    let mut rx = r.subscribe();
    let rev = r.revision();

    let dup = r.create(entry_spec("/w", AGENT_A, &["unix:uid:1"]), f.now());
    assert!(
        matches!(dup, Err(StoreError::AlreadyExists { .. })),
        "{dup:?}"
    );
    let clash = r.update(&other.id, entry_spec("/w", AGENT_A, &["unix:uid:1"]));
    assert!(
        matches!(clash, Err(StoreError::AlreadyExists { .. })),
        "{clash:?}"
    );
    let unknown = "0123456789abcdef0123456789abcdef";
    let missing = r.update(unknown, entry_spec("/x", AGENT_A, &["unix:uid:9"]));
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
    assert!(matches!(
        r.delete(unknown),
        Err(StoreError::NotFound { .. })
    ));

    // A batch refuses its duplicate item and keeps the others.
    let batch = f.create_many(&[("/w", "unix:uid:1"), ("/new", "unix:uid:5")]);
    assert!(matches!(batch[0], Err(StoreError::AlreadyExists { .. })));
    let created = batch[1].as_ref().unwrap().clone();

    assert_eq!(drain(&mut rx), vec![EntryEvent::Upserted(created)]);
    assert_eq!(r.revision(), rev + 1);
    assert_eq!(r.get(&e.id).as_deref(), Some(&e));
    assert_eq!(r.get(&other.id).as_deref(), Some(&other));
}

#[test]
fn list_filters_by_parent_and_is_ordered_by_id() {
    let f = Fixture::new();
    let r = &f.registry;
    let mut under_a: Vec<String> = (0..5)
        .map(|i| {
            f.create(entry_spec(&format!("/a{i}"), AGENT_A, &["unix:uid:1"]))
                .id
        })
        .collect();
    let b = f.create(entry_spec("/b", AGENT_B, &["unix:uid:1"]));
    let by_parent = |p: &str| EntryFilter {
        parent_id: Some(spiffe_id(p)),
        ..EntryFilter::default()
    };
    under_a.sort();
    assert_eq!(ids(&r.list(&by_parent(AGENT_A))), under_a);
    let mut all = under_a.clone();
    all.push(b.id.clone());
    assert_eq!(ids(&r.list(&EntryFilter::default())), sorted(all));
    let by_selector = EntryFilter {
        selectors: selectors(&["unix:uid:1"]),
        ..EntryFilter::default()
    };
    assert_eq!(r.list(&by_selector).len(), 6);

    // An update that moves an entry to another parent moves it in the index.
    let moved = under_a.remove(0);
    r.update(&moved, entry_spec("/a0", AGENT_B, &["unix:uid:1"]))
        .unwrap();
    assert_eq!(ids(&r.list(&by_parent(AGENT_A))), under_a);
    assert_eq!(
        ids(&r.list(&by_parent(AGENT_B))),
        sorted(vec![moved, b.id.clone()])
    );
    r.delete(&b.id).unwrap();
    assert_eq!(r.list(&by_parent(AGENT_B)).len(), 1);
}

/// An agent is authorized for its own entries and nobody else's (the sync
/// end-to-end test: another agent's entry is not sent).
#[test]
fn an_agent_sees_its_own_entries_only() {
    let f = Fixture::new();
    let mine = f.create(entry_spec("/one", AGENT_A, &["unix:uid:1"]));
    let theirs = f.create(entry_spec("/two", AGENT_B, &["unix:uid:1"]));
    assert_eq!(f.view_ids(AGENT_A, &[]), vec![mine.id.clone()]);
    assert_eq!(f.view_ids(AGENT_B, &[]), vec![theirs.id.clone()]);
    let view = f.registry.view_for(&spiffe_id(AGENT_A), &[], f.now());
    assert_eq!(view.revision, f.registry.revision());
    assert!(view.aliases.is_empty());
    assert_eq!(view.parents.len(), 1);
    assert!(view.parents.contains(&spiffe_id(AGENT_A)));

    f.registry.delete(&mine.id).unwrap();
    assert!(f.view_ids(AGENT_A, &[]).is_empty());
}

/// A node entry whose selectors the agent's node selectors include gives it
/// an alias; entries under the alias are authorized for exactly the matching
/// agents (the x509pop node-alias end-to-end test).
#[test]
fn node_aliases_authorize_exactly_the_matching_agents() {
    let f = Fixture::new();
    let r = &f.registry;
    let node = f.create(node_entry("/rack/n1", &["x509pop:subject:cn:n1"]));
    assert!(r.is_node_entry(&node));
    assert_eq!(r.server_id(), &spiffe_id(SERVER));
    let w = f.create(entry_spec("/rack-workload", "/rack/n1", &["unix:uid:7"]));
    assert!(!r.is_node_entry(&w));
    let n1 = selectors(&["x509pop:subject:cn:n1", "x509pop:ca:fingerprint:aa"]);
    let n2 = selectors(&["x509pop:subject:cn:n2", "x509pop:ca:fingerprint:aa"]);

    let (aliases, parents) = r.parents_for(&spiffe_id(AGENT_A), &n1, f.now());
    assert_eq!(aliases, vec![spiffe_id("/rack/n1")]);
    assert!(parents.contains(&spiffe_id("/rack/n1")) && parents.contains(&spiffe_id(AGENT_A)));
    assert_eq!(f.view_ids(AGENT_A, &n1), vec![w.id.clone()]);

    let (aliases, _) = r.parents_for(&spiffe_id(AGENT_B), &n2, f.now());
    assert!(aliases.is_empty());
    assert!(f.view_ids(AGENT_B, &n2).is_empty());

    // Widening the node entry's selectors beyond n1's drops the alias.
    r.update(
        &node.id,
        node_entry(
            "/rack/n1",
            &["x509pop:subject:cn:n1", "x509pop:subject:cn:other"],
        ),
    )
    .unwrap();
    assert!(f.view_ids(AGENT_A, &n1).is_empty());
}

/// Entries under the agent's own ID and under each of its aliases are
/// merged into one list ordered by id.
#[test]
fn a_view_merges_own_and_alias_entries_in_id_order() {
    let f = Fixture::new();
    f.create(node_entry("/rack/n1", &["k:n1"]));
    f.create(node_entry("/rack/all", &["k:all"]));
    let mut want: Vec<String> = (0..4)
        .map(|i| {
            let parent = if i % 2 == 0 { "/rack/n1" } else { "/rack/all" };
            f.create(entry_spec(&format!("/w{i}"), parent, &["unix:uid:1"]))
                .id
        })
        .collect();
    want.push(f.create(entry_spec("/own", AGENT_A, &["unix:uid:1"])).id);
    let node_sel = selectors(&["k:n1", "k:all"]);
    assert_eq!(f.view_ids(AGENT_A, &node_sel), sorted(want));
}

/// An entry stops being authorized at its `expires_at` (that second
/// included); an expired node entry stops giving its alias.
#[test]
fn expired_entries_and_aliases_are_not_authorized() {
    let f = Fixture::new();
    let in_a_minute = f.now() + 60;
    let mut spec = entry_spec("/short", AGENT_A, &["unix:uid:1"]);
    spec.expires_at = Some(in_a_minute);
    let short = f.create(spec);
    let long = f.create(entry_spec("/long", AGENT_A, &["unix:uid:2"]));
    let mut node = node_entry("/rack/n1", &["k:n1"]);
    node.expires_at = Some(in_a_minute + 60);
    f.create(node);
    let under_alias = f.create(entry_spec("/aliased", "/rack/n1", &["unix:uid:3"]));
    let node_sel = selectors(&["k:n1"]);

    assert_eq!(
        f.view_ids(AGENT_A, &node_sel),
        sorted(vec![
            short.id.clone(),
            long.id.clone(),
            under_alias.id.clone()
        ])
    );
    f.clock.advance(Duration::from_secs(59));
    assert!(f.view_ids(AGENT_A, &node_sel).contains(&short.id));
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(
        f.view_ids(AGENT_A, &node_sel),
        sorted(vec![long.id.clone(), under_alias.id.clone()])
    );
    // Still in the registry (the admin API lists it); only not authorized.
    assert!(f.registry.get(&short.id).is_some());

    f.clock.advance(Duration::from_secs(60));
    let (aliases, _) = f
        .registry
        .parents_for(&spiffe_id(AGENT_A), &node_sel, f.now());
    assert!(aliases.is_empty(), "an expired node entry gives no alias");
    assert_eq!(f.view_ids(AGENT_A, &node_sel), vec![long.id.clone()]);
}

/// After a restart the registry loads every entry and the revision from the
/// store; the next change continues the revision.
#[test]
fn load_after_restart_keeps_entries_and_revision() {
    let f = Fixture::new();
    let kept = f.create(entry_spec("/kept", AGENT_A, &["unix:uid:1"]));
    let gone = f.create(entry_spec("/gone", AGENT_A, &["unix:uid:2"]));
    f.create(node_entry("/rack/n1", &["k:n1"]));
    f.registry.delete(&gone.id).unwrap();
    let revision = f.registry.revision();
    let listed = f.registry.list(&EntryFilter::default());
    let Fixture {
        dir,
        store,
        registry,
        clock,
    } = f;
    drop((registry, store));

    let (store, registry) = open(&dir);
    let f = Fixture {
        dir,
        store,
        registry,
        clock,
    };
    assert_eq!(f.registry.revision(), revision);
    assert_eq!(f.registry.list(&EntryFilter::default()), listed);
    assert_eq!(f.registry.get(&kept.id).as_deref(), Some(&kept));
    assert!(f.registry.get(&gone.id).is_none());
    assert_eq!(
        f.view_ids(AGENT_A, &selectors(&["k:n1"])),
        vec![kept.id.clone()]
    );
    let next = f.create(entry_spec("/next", AGENT_A, &["unix:uid:3"]));
    assert_eq!(next.revision, revision + 1);
}

/// Node selectors are matched as a set: an agent with more node selectors
/// than a node entry asks for still gets the alias; the node entry's own
/// SPIFFE ID is not an entry the agent is authorized for.
#[test]
fn node_entries_are_not_in_an_agents_view() {
    let f = Fixture::new();
    f.create(node_entry("/rack/n1", &["k:n1"]));
    let view = f.registry.view_for(
        &spiffe_id(AGENT_A),
        &selectors(&["k:n1", "k:extra"]),
        f.now(),
    );
    assert_eq!(view.aliases, vec![spiffe_id("/rack/n1")]);
    assert!(view.entries.is_empty());
}
