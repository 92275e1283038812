//! Unit tests of following a store written by another server: the "other
//! server" writes to the same sled store directly (not through this
//! registry), which is what a second server on a shared database does.
//! What reaches the index and the subscribers, in which order, never
//! twice, and the reload when the log was pruned.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::entry::{EntryEvent, EntryFilter};
use crate::registry::Registry;
use crate::store::Store;
use crate::store::conformance::{entry_spec, spiffe_id};
use crate::store::sled::SledStore;

const SERVER: &str = "/sigil/server";
const AGENT: &str = "/sigil/agent/x509pop/a";
const NOW: i64 = 1_700_000_000;

fn open() -> (tempfile::TempDir, Arc<dyn Store>, Arc<Registry>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let registry = Registry::load(store.clone(), spiffe_id(SERVER)).unwrap();
    (dir, store, registry)
}

/// Every event the subscriber has now: (revision, entry id, deleted).
fn drain(rx: &mut broadcast::Receiver<Arc<EntryEvent>>) -> Vec<(u64, String, bool)> {
    let mut out = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        out.push((ev.revision(), ev.entry().id.clone(), ev.is_deleted()));
    }
    out
}

fn ids(registry: &Registry) -> Vec<String> {
    let mut v: Vec<String> = registry
        .list(&EntryFilter::default())
        .iter()
        .map(|e| e.id.clone())
        .collect();
    v.sort();
    v
}

#[test]
fn i17_2_catch_up_applies_another_servers_writes_in_revision_order() {
    let (_dir, store, registry) = open();
    let mut rx = registry.subscribe();
    let a = store
        .create_entry(entry_spec("/w/a", AGENT, &["unix:uid:1"]), NOW)
        .unwrap();
    let b = store
        .create_entry(entry_spec("/w/b", AGENT, &["unix:uid:2"]), NOW)
        .unwrap();
    let a2 = store
        .update_entry(&a.id, entry_spec("/w/a", AGENT, &["unix:uid:3"]))
        .unwrap();
    store.delete_entry(&b.id).unwrap();
    assert_eq!(registry.revision(), 0, "nothing followed yet");
    let done = registry.catch_up().unwrap();
    assert_eq!((done.applied, done.reloaded), (4, false));
    assert_eq!(
        drain(&mut rx),
        vec![
            (1, a.id.clone(), false),
            (2, b.id.clone(), false),
            (3, a.id.clone(), false),
            (4, b.id.clone(), true),
        ],
        "every change broadcast once, in revision order"
    );
    assert_eq!(registry.revision(), 4);
    assert_eq!(ids(&registry), vec![a.id.clone()]);
    assert_eq!(registry.get(&a.id).unwrap().spec, a2.spec);
    assert_eq!(registry.catch_up().unwrap().applied, 0, "nothing new");
}

#[test]
fn i17_2_local_write_after_another_servers_write_applies_both_in_order() {
    let (_dir, store, registry) = open();
    let mut rx = registry.subscribe();
    let theirs = store
        .create_entry(entry_spec("/w/theirs", AGENT, &["unix:uid:1"]), NOW)
        .unwrap();
    let mine = registry
        .create(entry_spec("/w/mine", AGENT, &["unix:uid:2"]), NOW)
        .unwrap();
    assert_eq!(
        drain(&mut rx),
        vec![(1, theirs.id.clone(), false), (2, mine.id.clone(), false)],
        "the other server's write goes out first, then the local one"
    );
    let mut want = vec![theirs.id.clone(), mine.id.clone()];
    want.sort();
    assert_eq!(ids(&registry), want);
    assert_eq!(
        registry.catch_up().unwrap().applied,
        0,
        "own write not applied twice"
    );
    assert!(drain(&mut rx).is_empty());
}

#[test]
fn i17_2_local_delete_after_another_servers_write_has_its_own_revision() {
    let (_dir, store, registry) = open();
    let gone = registry
        .create(entry_spec("/w/gone", AGENT, &["unix:uid:1"]), NOW)
        .unwrap();
    let mut rx = registry.subscribe();
    let theirs = store
        .create_entry(entry_spec("/w/theirs", AGENT, &["unix:uid:2"]), NOW)
        .unwrap();
    registry.delete(&gone.id).unwrap();
    assert_eq!(
        drain(&mut rx),
        vec![(2, theirs.id.clone(), false), (3, gone.id.clone(), true)],
        "the deletion goes out at its own revision, after the other write"
    );
    assert_eq!(ids(&registry), vec![theirs.id.clone()]);
}

#[test]
fn i17_2_pruned_log_reloads_and_tells_subscribers_to_resync() {
    let (_dir, store, registry) = open();
    let stale = registry
        .create(entry_spec("/w/stale", AGENT, &["unix:uid:1"]), NOW)
        .unwrap();
    let reloads = registry.subscribe_reloads();
    let fresh = store
        .create_entry(entry_spec("/w/fresh", AGENT, &["unix:uid:2"]), NOW)
        .unwrap();
    store.delete_entry(&stale.id).unwrap();
    store
        .prune_entry_events(store.entries_revision().unwrap())
        .unwrap();
    let done = registry.catch_up().unwrap();
    assert!(done.reloaded, "{done:?}");
    assert!(
        reloads.has_changed().unwrap(),
        "subscribers are told to resync"
    );
    assert_eq!(ids(&registry), vec![fresh.id.clone()]);
    assert_eq!(registry.revision(), store.entries_revision().unwrap());
}
