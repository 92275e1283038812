//! The conformance suite every [`Store`] backend must pass. It is ordinary
//! (not `cfg(test)`) code so that any backend, in this crate or another, can
//! run it; like a test, it panics with a message naming what went wrong.
//!
//! A backend provides a [`StoreFactory`]: each call to
//! [`StoreFactory::fresh`] returns a new, empty [`StoreLocation`] (a temp
//! directory, a fresh database schema), and [`StoreLocation::open`] opens
//! the store kept there. Opening the same location again, after the
//! previous store was dropped, must give back the same persistent data; the
//! reopen checks rely on that.
//!
//! Every check is a `pub fn(&dyn StoreLocation)` run on a fresh location
//! and listed in [`CHECKS`]. Run them all with [`run_all`], or get one
//! `#[test]` per check (so failures are named) with
//! [`store_conformance_tests!`](crate::store_conformance_tests):
//!
//! ```ignore
//! sigil_server::store_conformance_tests!(MyFactory);
//! ```

use std::collections::{BTreeSet, HashSet};
use std::fmt::Debug;
use std::sync::Barrier;

use sigil_proto::{Selector, SpiffeId, TrustDomain};

use super::{
    AttestedAgent, BundleRecord, CaJournal, CaSlot, JoinTokenRecord, JwtAuthority, SlotId,
    SlotState, Store, StoreError, StoreResult,
};
use crate::entry::{Entry, EntryEvent, EntryFilter, EntrySpec};

/// One place where a store keeps its data. Dropping it may delete the data.
pub trait StoreLocation {
    /// Opens the store kept here. Called again after the previous store
    /// was dropped, it must return a store with the same persistent data.
    /// Panics if the store cannot be opened.
    fn open(&self) -> Box<dyn Store>;
}

/// Makes fresh, empty locations for a backend under test.
pub trait StoreFactory {
    /// A new location holding an empty store.
    fn fresh(&self) -> Box<dyn StoreLocation>;
}

/// A conformance check, run on a fresh location.
pub type Check = fn(&dyn StoreLocation);

/// Every check, by name. [`store_conformance_tests!`](crate::store_conformance_tests)
/// makes one test per entry and a test that it covers this whole list.
pub const CHECKS: &[(&str, Check)] = &[
    ("entry_crud", entry_crud),
    ("entry_ids_unique", entry_ids_unique),
    ("entry_revisions", entry_revisions),
    ("entry_update_keeps_identity", entry_update_keeps_identity),
    ("entry_duplicates_refused", entry_duplicates_refused),
    ("entry_unknown_id", entry_unknown_id),
    ("entry_batch_create", entry_batch_create),
    ("entry_list_filters", entry_list_filters),
    ("entry_events", entry_events),
    ("entry_event_pruning", entry_event_pruning),
    ("survives_reopen", survives_reopen),
    ("join_tokens", join_tokens),
    ("agents", agents),
    ("bundles", bundles),
    ("ca_journal", ca_journal),
    ("concurrent_entry_changes", concurrent_entry_changes),
    ("concurrent_duplicate_creates", concurrent_duplicate_creates),
    ("concurrent_token_consume", concurrent_token_consume),
    ("concurrent_ca_journal_writes", concurrent_ca_journal_writes),
];

/// Runs every check in [`CHECKS`], each on a fresh location from `factory`.
pub fn run_all(factory: &dyn StoreFactory) {
    for (name, check) in CHECKS {
        eprintln!("store conformance: {name}");
        let location = factory.fresh();
        check(&*location);
    }
}

/// Expands to one `#[test]` per conformance check, each on a fresh location
/// from the factory expression, plus a test that every entry of
/// [`CHECKS`](crate::store::conformance::CHECKS) has its test. Use it inside
/// a `#[cfg(test)] mod`.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(
            @each $factory;
            entry_crud,
            entry_ids_unique,
            entry_revisions,
            entry_update_keeps_identity,
            entry_duplicates_refused,
            entry_unknown_id,
            entry_batch_create,
            entry_list_filters,
            entry_events,
            entry_event_pruning,
            survives_reopen,
            join_tokens,
            agents,
            bundles,
            ca_journal,
            concurrent_entry_changes,
            concurrent_duplicate_creates,
            concurrent_token_consume,
            concurrent_ca_journal_writes,
        );
    };
    (@each $factory:expr; $($check:ident),+ $(,)?) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;

            $(
                #[test]
                fn $check() {
                    let factory = $factory;
                    let location =
                        $crate::store::conformance::StoreFactory::fresh(&factory);
                    $crate::store::conformance::$check(&*location);
                }
            )+

            #[test]
            fn covers_every_check() {
                let tested = [$(stringify!($check)),+];
                let listed: ::std::vec::Vec<&str> = $crate::store::conformance::CHECKS
                    .iter()
                    .map(|(name, _)| *name)
                    .collect();
                assert_eq!(tested.as_slice(), listed.as_slice());
            }
        }
    };
}

// ---- fixtures ----

/// The trust domain the checks use.
pub const TRUST_DOMAIN: &str = "example.org";

/// `spiffe://example.org<path>`; panics on an invalid path.
pub fn spiffe_id(path: &str) -> SpiffeId {
    let id = format!("spiffe://{TRUST_DOMAIN}{path}");
    SpiffeId::parse(&id).unwrap_or_else(|e| panic!("fixture SPIFFE ID {id}: {e}"))
}

fn selector(s: &str) -> Selector {
    Selector::parse(s).unwrap_or_else(|e| panic!("fixture selector {s}: {e}"))
}

fn trust_domain(name: &str) -> TrustDomain {
    TrustDomain::parse(name).unwrap_or_else(|e| panic!("fixture trust domain {name}: {e}"))
}

/// A normalized entry spec for `spiffe://example.org<spiffe_path>` under
/// `spiffe://example.org<parent_path>`, other fields at their defaults.
pub fn entry_spec(spiffe_path: &str, parent_path: &str, selectors: &[&str]) -> EntrySpec {
    let mut spec = raw_spec(spiffe_path, parent_path, selectors);
    spec.normalize();
    spec
}

/// Like [`entry_spec`] but with the selectors in the order given.
fn raw_spec(spiffe_path: &str, parent_path: &str, selectors: &[&str]) -> EntrySpec {
    EntrySpec {
        spiffe_id: spiffe_id(spiffe_path),
        parent_id: spiffe_id(parent_path),
        selectors: selectors.iter().map(|s| selector(s)).collect(),
        x509_svid_ttl: 0,
        jwt_svid_ttl: 0,
        dns_names: Vec::new(),
        federates_with: Vec::new(),
        hint: String::new(),
        admin: false,
        downstream: false,
        expires_at: None,
    }
}

fn filter(spiffe: Option<&str>, parent: Option<&str>, selectors: &[&str]) -> EntryFilter {
    EntryFilter {
        spiffe_id: spiffe.map(spiffe_id),
        parent_id: parent.map(spiffe_id),
        selectors: selectors.iter().map(|s| selector(s)).collect(),
    }
}

fn agent(path: &str, serial: &str) -> AttestedAgent {
    AttestedAgent {
        spiffe_id: spiffe_id(path),
        attestor: "join_token".to_string(),
        selectors: vec![selector("join_token:abc")],
        serial: serial.to_string(),
        previous_serial: None,
        expires_at: 5000,
        banned: false,
        attested_at: 1000,
        updated_at: 1000,
    }
}

fn bundle(td: &str, x509: &[&[u8]], kids: &[&str], sequence: u64) -> BundleRecord {
    BundleRecord {
        trust_domain: trust_domain(td),
        x509_authorities: x509.iter().map(|c| c.to_vec()).collect(),
        jwt_authorities: kids
            .iter()
            .map(|kid| JwtAuthority {
                kid: kid.to_string(),
                public_key: format!("spki-{kid}").into_bytes(),
                expires_at: 9000,
            })
            .collect(),
        tainted_key_ids: Vec::new(),
        sequence,
    }
}

fn token(hash: &str, expires_at: i64) -> JoinTokenRecord {
    JoinTokenRecord {
        token_hash: hash.to_string(),
        expires_at,
        created_at: 1000,
    }
}

fn ca_slot(slot: SlotId, state: SlotState, serial: &str) -> CaSlot {
    CaSlot {
        slot,
        state,
        key_id: format!("ca-{}", slot.name()),
        cert_chain: vec![format!("cert-{serial}").into_bytes()],
        serial: serial.to_string(),
        not_before: 1000,
        not_after: 2000,
        tainted: false,
        tainted_at: None,
    }
}

// ---- assertion helpers ----

#[track_caller]
fn ok<T>(result: StoreResult<T>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e} ({e:?})"),
    }
}

#[track_caller]
fn expect_err<T: Debug>(
    result: StoreResult<T>,
    what: &str,
    expected: &str,
    is_expected: fn(&StoreError) -> bool,
) -> StoreError {
    match result {
        Ok(v) => panic!("{what}: expected {expected}, got Ok({v:?})"),
        Err(e) if is_expected(&e) => e,
        Err(e) => panic!("{what}: expected {expected}, got {e} ({e:?})"),
    }
}

#[track_caller]
fn expect_not_found<T: Debug>(result: StoreResult<T>, what: &str) {
    expect_err(result, what, "NotFound", |e| {
        matches!(e, StoreError::NotFound { .. })
    });
}

#[track_caller]
fn expect_already_exists<T: Debug>(result: StoreResult<T>, what: &str) {
    expect_err(result, what, "AlreadyExists", |e| {
        matches!(e, StoreError::AlreadyExists { .. })
    });
}

#[track_caller]
fn revision(store: &dyn Store) -> u64 {
    ok(store.entries_revision(), "entries_revision")
}

#[track_caller]
fn events_since(store: &dyn Store, after: u64) -> Option<Vec<EntryEvent>> {
    ok(
        store.entry_events_since(after),
        &format!("entry_events_since({after})"),
    )
}

fn ids(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

/// The ids of `expected`, sorted: what a list must return, in that order.
fn sorted_ids(expected: &[&Entry]) -> Vec<String> {
    let mut v: Vec<String> = expected.iter().map(|e| e.id.clone()).collect();
    v.sort();
    v
}

#[track_caller]
fn assert_list(store: &dyn Store, f: &EntryFilter, expected: &[&Entry], what: &str) {
    let listed = ok(store.list_entries(f), what);
    assert_eq!(
        ids(&listed),
        sorted_ids(expected),
        "{what}: wrong entries or order (must be ordered by id)"
    );
    for e in &listed {
        let want = expected
            .iter()
            .find(|x| x.id == e.id)
            .unwrap_or_else(|| panic!("{what}: unexpected entry {}", e.id));
        assert_eq!(e, *want, "{what}: listed entry differs from the stored one");
    }
}

fn is_lower_hex_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---- entries ----

/// Create, get, update and delete one entry.
pub fn entry_crud(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_eq!(ok(s.get_entry(unknown), "get_entry on empty store"), None);
    assert_eq!(ok(s.count_entries(), "count on empty store"), 0);
    assert_list(s, &EntryFilter::default(), &[], "list on empty store");

    let spec = entry_spec("/web", "/agent/a", &["unix:uid:1000", "unix:gid:1000"]);
    let created = ok(s.create_entry(spec.clone(), 1_700_000_000), "create_entry");
    assert!(
        is_lower_hex_id(&created.id),
        "entry id must be 32 lowercase hex characters, got {:?}",
        created.id
    );
    assert_eq!(
        created.spec, spec,
        "created entry must carry the given spec"
    );
    assert_eq!(
        created.created_at, 1_700_000_000,
        "created_at must be `now`"
    );
    assert_eq!(
        ok(s.get_entry(&created.id), "get_entry after create"),
        Some(created.clone()),
        "get_entry must return the entry as create_entry returned it"
    );
    assert_eq!(ok(s.count_entries(), "count after create"), 1);

    let mut new_spec = spec.clone();
    new_spec.x509_svid_ttl = 600;
    new_spec.jwt_svid_ttl = 300;
    new_spec.dns_names = vec!["web.example.org".to_string()];
    new_spec.federates_with = vec![trust_domain("partner.example")];
    new_spec.hint = "internal".to_string();
    new_spec.admin = true;
    new_spec.downstream = true;
    new_spec.expires_at = Some(1_800_000_000);
    let updated = ok(
        s.update_entry(&created.id, new_spec.clone()),
        "update_entry",
    );
    assert_eq!(
        updated.spec, new_spec,
        "updated entry must carry the new spec"
    );
    assert_eq!(
        ok(s.get_entry(&created.id), "get_entry after update"),
        Some(updated.clone()),
        "get_entry must return the entry as update_entry returned it"
    );
    assert_eq!(ok(s.count_entries(), "count after update"), 1);

    let deleted = ok(s.delete_entry(&created.id), "delete_entry");
    assert_eq!(
        deleted, updated,
        "delete_entry must return the entry as it was"
    );
    assert_eq!(ok(s.get_entry(&created.id), "get_entry after delete"), None);
    assert_eq!(ok(s.count_entries(), "count after delete"), 0);
    assert_list(s, &EntryFilter::default(), &[], "list after delete");
}

/// Every entry gets its own 32-hex-character id.
pub fn entry_ids_unique(location: &dyn StoreLocation) {
    let store = location.open();
    let mut seen = HashSet::new();
    for i in 0..50 {
        let spec = entry_spec(&format!("/w/{i}"), "/agent/a", &["unix:uid:1000"]);
        let e = ok(store.create_entry(spec, 1), "create_entry");
        assert!(is_lower_hex_id(&e.id), "bad entry id {:?}", e.id);
        assert!(seen.insert(e.id.clone()), "entry id {} given twice", e.id);
    }
    assert_eq!(ok(store.count_entries(), "count"), 50);
}

/// The store-wide revision grows by exactly one per create, update and
/// delete, and each entry carries the revision of its last change.
pub fn entry_revisions(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    assert_eq!(revision(s), 0, "a new store starts at revision 0");

    let a = ok(
        s.create_entry(entry_spec("/a", "/agent", &["t:a"]), 1),
        "create a",
    );
    assert_eq!(a.revision, 1, "first create gets revision 1");
    assert_eq!(revision(s), 1);
    let b = ok(
        s.create_entry(entry_spec("/b", "/agent", &["t:b"]), 1),
        "create b",
    );
    assert_eq!(b.revision, 2, "second create gets revision 2");
    assert_eq!(revision(s), 2);
    let a2 = ok(
        s.update_entry(&a.id, entry_spec("/a", "/agent", &["t:a", "t:x"])),
        "update a",
    );
    assert_eq!(a2.revision, 3, "update gets the next revision");
    assert_eq!(revision(s), 3);
    assert_eq!(
        ok(s.get_entry(&a.id), "get a").map(|e| e.revision),
        Some(3),
        "stored entry carries its new revision"
    );
    assert_eq!(
        ok(s.get_entry(&b.id), "get b").map(|e| e.revision),
        Some(2),
        "an unchanged entry keeps its revision"
    );
    ok(s.delete_entry(&b.id), "delete b");
    assert_eq!(revision(s), 4, "delete bumps the revision");
    let c = ok(
        s.create_entry(entry_spec("/c", "/agent", &["t:c"]), 1),
        "create c",
    );
    assert_eq!(c.revision, 5, "revision after a delete continues from it");
    let a3 = ok(
        s.update_entry(&a.id, entry_spec("/a", "/agent", &["t:a", "t:x"])),
        "update a with the same spec",
    );
    assert_eq!(a3.revision, 6, "an update without change still bumps");
    assert_eq!(revision(s), 6);
}

/// Update replaces the spec (even the SPIFFE ID), keeps id and created_at.
pub fn entry_update_keeps_identity(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    let e = ok(
        s.create_entry(entry_spec("/old", "/agent/a", &["unix:uid:1"]), 100),
        "create",
    );
    let u = ok(
        s.update_entry(&e.id, entry_spec("/new", "/agent/b", &["unix:uid:2"])),
        "update",
    );
    assert_eq!(u.id, e.id, "update keeps the id");
    assert_eq!(u.created_at, 100, "update keeps created_at");
    assert_eq!(
        u.revision,
        e.revision + 1,
        "update bumps the revision by one"
    );
    assert_eq!(u.spec, entry_spec("/new", "/agent/b", &["unix:uid:2"]));
    assert_list(
        s,
        &filter(Some("/new"), None, &[]),
        &[&u],
        "list by the new SPIFFE ID",
    );
    assert_list(
        s,
        &filter(Some("/old"), None, &[]),
        &[],
        "list by the old SPIFFE ID",
    );
    assert_list(s, &filter(None, Some("/agent/a"), &[]), &[], "old parent");
    assert_list(s, &filter(None, Some("/agent/b"), &[]), &[&u], "new parent");
}

/// Same SPIFFE ID, parent and selector set (in any order) is refused, on
/// create and on update; refused changes leave no trace.
pub fn entry_duplicates_refused(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    let a = ok(
        s.create_entry(entry_spec("/x", "/p", &["unix:uid:1", "unix:gid:2"]), 1),
        "create a",
    );
    expect_already_exists(
        s.create_entry(entry_spec("/x", "/p", &["unix:uid:1", "unix:gid:2"]), 1),
        "create of an identical entry",
    );
    expect_already_exists(
        s.create_entry(entry_spec("/x", "/p", &["unix:gid:2", "unix:uid:1"]), 1),
        "create of the same selector set given in another order (normalized)",
    );
    expect_already_exists(
        s.create_entry(raw_spec("/x", "/p", &["unix:uid:1", "unix:gid:2"]), 1),
        "create of the same selector set given in another order (not normalized)",
    );
    let mut other_fields = entry_spec("/x", "/p", &["unix:uid:1", "unix:gid:2"]);
    other_fields.x509_svid_ttl = 60;
    other_fields.dns_names = vec!["x.example.org".to_string()];
    expect_already_exists(
        s.create_entry(other_fields, 1),
        "create differing only in fields outside the identity",
    );
    assert_eq!(revision(s), 1, "refused creates must not bump the revision");
    assert_eq!(ok(s.count_entries(), "count"), 1);

    let b = ok(
        s.create_entry(entry_spec("/x", "/p", &["unix:uid:1"]), 1),
        "create with a subset of the selectors (not a duplicate)",
    );
    ok(
        s.create_entry(entry_spec("/x", "/q", &["unix:uid:1", "unix:gid:2"]), 1),
        "create with another parent (not a duplicate)",
    );
    ok(
        s.create_entry(entry_spec("/y", "/p", &["unix:uid:1", "unix:gid:2"]), 1),
        "create with another SPIFFE ID (not a duplicate)",
    );
    assert_eq!(revision(s), 4);

    expect_already_exists(
        s.update_entry(&b.id, raw_spec("/x", "/p", &["unix:gid:2", "unix:uid:1"])),
        "update of b into a's identity",
    );
    assert_eq!(
        revision(s),
        4,
        "a refused update must not bump the revision"
    );
    assert_eq!(
        ok(s.get_entry(&b.id), "get b"),
        Some(b.clone()),
        "a refused update must not change the entry"
    );
    assert_eq!(
        events_since(s, 4),
        Some(Vec::new()),
        "a refused update must not record an event"
    );

    let mut a_ttl = a.spec.clone();
    a_ttl.x509_svid_ttl = 120;
    let a2 = ok(
        s.update_entry(&a.id, a_ttl),
        "update of a keeping its own identity",
    );
    let a3 = ok(
        s.update_entry(&a.id, entry_spec("/x", "/p", &["unix:uid:1", "unix:pid:3"])),
        "update of a to a new identity",
    );
    assert_eq!(a3.revision, a2.revision + 1);
    let freed = ok(
        s.create_entry(entry_spec("/x", "/p", &["unix:uid:1", "unix:gid:2"]), 1),
        "create in the identity a left (must be free after the update)",
    );
    expect_already_exists(
        s.update_entry(&b.id, entry_spec("/x", "/p", &["unix:uid:1", "unix:pid:3"])),
        "update of b into a's new identity",
    );
    ok(s.delete_entry(&freed.id), "delete");
    ok(
        s.create_entry(entry_spec("/x", "/p", &["unix:uid:1", "unix:gid:2"]), 1),
        "create in the identity of a deleted entry",
    );
}

/// Update or delete of an unknown id is NotFound and changes nothing.
pub fn entry_unknown_id(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    let unknown = "ffffffffffffffffffffffffffffffff";
    expect_not_found(
        s.update_entry(unknown, entry_spec("/a", "/p", &["t:1"])),
        "update of an unknown id",
    );
    expect_not_found(s.delete_entry(unknown), "delete of an unknown id");
    let e = ok(
        s.create_entry(entry_spec("/a", "/p", &["t:1"]), 1),
        "create",
    );
    ok(s.delete_entry(&e.id), "delete");
    expect_not_found(s.delete_entry(&e.id), "second delete of the same id");
    expect_not_found(
        s.update_entry(&e.id, entry_spec("/a", "/p", &["t:1"])),
        "update of a deleted id",
    );
    assert_eq!(revision(s), 2, "failed updates and deletes change nothing");
    assert_eq!(ok(s.count_entries(), "count"), 0);
    assert_eq!(ok(s.get_entry(unknown), "get unknown"), None);
}

/// Listing with each filter and their combinations; counting.
pub fn entry_list_filters(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    let create = |spiffe: &str, parent: &str, sels: &[&str]| {
        ok(
            s.create_entry(entry_spec(spiffe, parent, sels), 1),
            "create",
        )
    };
    let e1 = create("/web", "/agent/1", &["unix:uid:1000", "unix:gid:1000"]);
    let e2 = create("/web", "/agent/2", &["unix:uid:1000"]);
    let e3 = create("/db", "/agent/1", &["unix:uid:1001"]);
    let e4 = create("/db", "/agent/2", &["unix:uid:1000", "k8s:ns:prod"]);
    // SPIFFE ID and parent that extend e1's: a prefix match would be wrong.
    let e5 = create("/web2", "/agent/10", &["unix:uid:1000"]);
    let e6 = create("/web/api", "/agent/1/x", &["unix:uid:1000"]);

    assert_eq!(ok(s.count_entries(), "count"), 6);
    assert_list(
        s,
        &EntryFilter::default(),
        &[&e1, &e2, &e3, &e4, &e5, &e6],
        "list without filter",
    );
    assert_list(
        s,
        &filter(Some("/web"), None, &[]),
        &[&e1, &e2],
        "list by SPIFFE ID /web",
    );
    assert_list(
        s,
        &filter(None, Some("/agent/1"), &[]),
        &[&e1, &e3],
        "list by parent /agent/1",
    );
    assert_list(
        s,
        &filter(None, None, &["unix:uid:1000"]),
        &[&e1, &e2, &e4, &e5, &e6],
        "list by selector unix:uid:1000",
    );
    assert_list(
        s,
        &filter(None, None, &["unix:gid:1000", "unix:uid:1000"]),
        &[&e1],
        "list by selectors unix:gid:1000 + unix:uid:1000 (all must be present)",
    );
    assert_list(
        s,
        &filter(Some("/db"), None, &["unix:uid:1000"]),
        &[&e4],
        "list by SPIFFE ID /db and selector unix:uid:1000",
    );
    assert_list(
        s,
        &filter(Some("/web"), Some("/agent/2"), &[]),
        &[&e2],
        "list by SPIFFE ID /web and parent /agent/2",
    );
    assert_list(
        s,
        &filter(None, Some("/agent/2"), &["k8s:ns:prod"]),
        &[&e4],
        "list by parent /agent/2 and selector k8s:ns:prod",
    );
    assert_list(
        s,
        &filter(Some("/web"), Some("/agent/1"), &["unix:gid:1000"]),
        &[&e1],
        "list by all three filters",
    );
    assert_list(
        s,
        &filter(Some("/web"), Some("/agent/1"), &["unix:uid:1001"]),
        &[],
        "list by all three filters, no match",
    );
    assert_list(
        s,
        &filter(Some("/nobody"), None, &[]),
        &[],
        "list by an unknown SPIFFE ID",
    );
    assert_list(
        s,
        &filter(None, None, &["unix:uid:9"]),
        &[],
        "list by an unknown selector",
    );
}

/// The event log holds exactly the changes after a revision, in order;
/// a Deleted event carries the deleted content at the deletion's revision.
pub fn entry_events(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    assert_eq!(
        events_since(s, 0),
        Some(Vec::new()),
        "a new store has no events"
    );
    let a1 = ok(
        s.create_entry(entry_spec("/a", "/p", &["t:a"]), 1),
        "create a",
    );
    let b2 = ok(
        s.create_entry(entry_spec("/b", "/p", &["t:b"]), 1),
        "create b",
    );
    let a3 = ok(
        s.update_entry(&a1.id, entry_spec("/a", "/p", &["t:a", "t:z"])),
        "update a",
    );
    let deleted = ok(s.delete_entry(&b2.id), "delete b");
    assert_eq!(deleted, b2);
    let c5 = ok(
        s.create_entry(entry_spec("/c", "/p", &["t:c"]), 1),
        "create c",
    );

    let b_deleted = Entry {
        revision: 4,
        ..b2.clone()
    };
    let all = vec![
        EntryEvent::Upserted(a1),
        EntryEvent::Upserted(b2),
        EntryEvent::Upserted(a3),
        EntryEvent::Deleted(b_deleted),
        EntryEvent::Upserted(c5),
    ];
    assert_eq!(events_since(s, 0), Some(all.clone()), "events since 0");
    for after in 1..=5u64 {
        assert_eq!(
            events_since(s, after),
            Some(all[after as usize..].to_vec()),
            "events since {after}"
        );
    }
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.revision(), i as u64 + 1, "event {i} revision");
    }
    assert_eq!(
        events_since(s, 6),
        None,
        "events since a revision the store never reached: None (full sync)"
    );
}

/// After pruning, asking for events from before the low-water mark gives
/// None; from at or after it, the events.
pub fn entry_event_pruning(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    let mut ids = Vec::new();
    for i in 0..6 {
        let e = ok(
            s.create_entry(entry_spec(&format!("/w/{i}"), "/p", &["t:1"]), 1),
            "create",
        );
        ids.push(e.id);
    }
    let before = events_since(s, 0).expect("no pruning yet");
    assert_eq!(before.len(), 6);

    ok(s.prune_entry_events(3), "prune upto 3");
    assert_eq!(events_since(s, 0), None, "events since 0 after prune 3");
    assert_eq!(events_since(s, 2), None, "events since 2 after prune 3");
    assert_eq!(
        events_since(s, 3),
        Some(before[3..].to_vec()),
        "events since 3 after prune 3"
    );
    assert_eq!(
        events_since(s, 4),
        Some(before[4..].to_vec()),
        "events since 4 after prune 3"
    );
    assert_eq!(events_since(s, 6), Some(Vec::new()), "events since 6");
    assert_eq!(ok(s.count_entries(), "count"), 6, "pruning keeps entries");

    ok(s.prune_entry_events(1), "prune upto 1 (below the mark)");
    assert_eq!(
        events_since(s, 2),
        None,
        "a lower prune must not lower the mark"
    );
    assert_eq!(events_since(s, 3).map(|v| v.len()), Some(3));

    let u = ok(
        s.update_entry(&ids[0], entry_spec("/w/0", "/p", &["t:2"])),
        "update after prune",
    );
    assert_eq!(u.revision, 7);
    assert_eq!(
        events_since(s, 3).map(|v| v.len()),
        Some(4),
        "new events are recorded after a prune"
    );

    ok(
        s.prune_entry_events(100),
        "prune beyond the current revision",
    );
    assert_eq!(events_since(s, 6), None, "events since 6 after prune all");
    assert_eq!(
        events_since(s, 7),
        Some(Vec::new()),
        "events since the current revision after prune all"
    );
    let d = ok(s.delete_entry(&ids[1]), "delete after prune all");
    assert_eq!(
        events_since(s, 7),
        Some(vec![EntryEvent::Deleted(Entry { revision: 8, ..d })]),
        "a prune beyond the current revision must not hide later events"
    );
}

/// Entries, revision, events, tokens, agents, bundles and CA journal all
/// survive closing and reopening the store; the revision keeps growing.
pub fn survives_reopen(location: &dyn StoreLocation) {
    let agent_a = agent("/sigil/agent/join_token/a", "01");
    let journal = CaJournal {
        version: 0,
        slots: vec![ca_slot(SlotId::A, SlotState::Active, "0a")],
    };
    let (a, c, events, bundle_stored, journal_stored) = {
        let store = location.open();
        let s = &*store;
        let a = ok(
            s.create_entry(entry_spec("/a", "/p", &["t:a"]), 10),
            "create a",
        );
        let b = ok(
            s.create_entry(entry_spec("/b", "/p", &["t:b"]), 10),
            "create b",
        );
        let a = ok(
            s.update_entry(&a.id, entry_spec("/a", "/p", &["t:a", "t:b"])),
            "update a",
        );
        ok(s.delete_entry(&b.id), "delete b");
        let c = ok(
            s.create_entry(entry_spec("/c", "/p", &["t:c"]), 10),
            "create c",
        );
        ok(s.prune_entry_events(1), "prune");
        let events = events_since(s, 1).expect("events after the prune mark");
        ok(s.create_join_token(token("t1", 5000)), "create token t1");
        ok(s.create_join_token(token("t2", 5000)), "create token t2");
        ok(s.put_agent(&agent_a), "put agent");
        ok(
            s.put_bundle(bundle(TRUST_DOMAIN, &[b"ca1"], &["k1"], 0)),
            "put bundle",
        );
        let bundle_stored = ok(
            s.put_bundle(bundle(TRUST_DOMAIN, &[b"ca1", b"ca2"], &["k1"], 0)),
            "put changed bundle",
        );
        assert_eq!(bundle_stored.sequence, 2);
        let journal_stored = ok(s.put_ca_journal(&journal), "put CA journal");
        (a, c, events, bundle_stored, journal_stored)
    };

    {
        let store = location.open();
        let s = &*store;
        assert_eq!(revision(s), 5, "revision after reopen");
        assert_eq!(ok(s.count_entries(), "count after reopen"), 2);
        assert_eq!(
            ok(s.get_entry(&a.id), "get a after reopen"),
            Some(a.clone())
        );
        assert_eq!(
            ok(s.get_entry(&c.id), "get c after reopen"),
            Some(c.clone())
        );
        assert_list(s, &EntryFilter::default(), &[&a, &c], "list after reopen");
        assert_list(
            s,
            &filter(Some("/a"), None, &[]),
            &[&a],
            "list by SPIFFE ID after reopen",
        );
        expect_already_exists(
            s.create_entry(entry_spec("/a", "/p", &["t:b", "t:a"]), 1),
            "duplicate check after reopen",
        );
        assert_eq!(events_since(s, 0), None, "prune mark after reopen");
        assert_eq!(
            events_since(s, 1),
            Some(events.clone()),
            "events after reopen"
        );
        assert_eq!(
            ok(s.consume_join_token("t1", 2000), "consume t1 after reopen"),
            token("t1", 5000)
        );
        assert_eq!(
            ok(s.get_agent(&agent_a.spiffe_id), "get agent after reopen"),
            Some(agent_a.clone())
        );
        assert_eq!(
            ok(s.get_bundle(&trust_domain(TRUST_DOMAIN)), "get bundle"),
            Some(bundle_stored.clone())
        );
        assert_eq!(
            ok(s.get_ca_journal(), "get CA journal after reopen"),
            journal_stored
        );

        let d = ok(
            s.create_entry(entry_spec("/d", "/p", &["t:d"]), 20),
            "create after reopen",
        );
        assert_eq!(d.revision, 6, "the revision keeps growing after reopen");
        let same = ok(
            s.put_bundle(bundle(TRUST_DOMAIN, &[b"ca1", b"ca2"], &["k1"], 0)),
            "put same bundle after reopen",
        );
        assert_eq!(same.sequence, 2, "same content keeps the sequence");
        let bumped = ok(
            s.put_bundle(bundle(TRUST_DOMAIN, &[b"ca2"], &["k1"], 0)),
            "put changed bundle after reopen",
        );
        assert_eq!(
            bumped.sequence, 3,
            "the sequence keeps growing after reopen"
        );
        let j2 = ok(
            s.put_ca_journal(&journal_stored),
            "put CA journal with the reopened version",
        );
        assert_eq!(j2.version, 2);
    }

    let store = location.open();
    let s = &*store;
    assert_eq!(revision(s), 6, "revision after the second reopen");
    assert_eq!(ok(s.count_entries(), "count after the second reopen"), 3);
    expect_not_found(
        s.consume_join_token("t1", 2000),
        "a token consumed before a reopen stays consumed",
    );
    ok(s.consume_join_token("t2", 2000), "consume t2");
    assert_eq!(ok(s.get_ca_journal(), "journal").version, 2);
    assert_eq!(
        ok(s.get_bundle(&trust_domain(TRUST_DOMAIN)), "bundle").map(|b| b.sequence),
        Some(3)
    );
    assert_eq!(events_since(s, 5).map(|v| v.len()), Some(1));
}

// ---- join tokens ----

/// Tokens are single use, expire (at `expires_at` itself), and pruning
/// removes only expired ones.
pub fn join_tokens(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    expect_not_found(s.consume_join_token("nope", 1500), "consume unknown token");

    ok(s.create_join_token(token("h1", 2000)), "create h1");
    expect_already_exists(
        s.create_join_token(token("h1", 9000)),
        "create with a hash already stored",
    );
    assert_eq!(
        ok(s.consume_join_token("h1", 1500), "consume h1"),
        token("h1", 2000),
        "consume returns the token as created (a duplicate create must not overwrite it)"
    );
    expect_not_found(s.consume_join_token("h1", 1500), "second consume of h1");

    ok(s.create_join_token(token("h2", 1000)), "create expired h2");
    expect_err(
        s.consume_join_token("h2", 1500),
        "consume of an expired token",
        "TokenExpired",
        |e| matches!(e, StoreError::TokenExpired),
    );
    expect_not_found(
        s.consume_join_token("h2", 1500),
        "consume of an expired token after TokenExpired (it is removed)",
    );

    ok(s.create_join_token(token("h3", 1500)), "create h3");
    expect_err(
        s.consume_join_token("h3", 1500),
        "consume at the expiry second",
        "TokenExpired",
        |e| matches!(e, StoreError::TokenExpired),
    );

    ok(s.create_join_token(token("p1", 1000)), "create p1");
    ok(s.create_join_token(token("p2", 1500)), "create p2");
    ok(s.create_join_token(token("p3", 1501)), "create p3");
    ok(s.create_join_token(token("p4", 9000)), "create p4");
    assert_eq!(
        ok(s.prune_join_tokens(1500), "prune at 1500"),
        2,
        "prune removes exactly the expired tokens"
    );
    assert_eq!(ok(s.prune_join_tokens(1500), "prune again"), 0);
    expect_not_found(s.consume_join_token("p1", 1400), "consume pruned p1");
    expect_not_found(s.consume_join_token("p2", 1400), "consume pruned p2");
    assert_eq!(
        ok(s.consume_join_token("p3", 1500), "consume unexpired p3"),
        token("p3", 1501)
    );
    ok(s.consume_join_token("p4", 1500), "consume unexpired p4");
}

// ---- agents ----

/// Agents: put (overwrites), get, list, delete.
pub fn agents(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    let a = agent("/sigil/agent/join_token/a", "01");
    let b = agent("/sigil/agent/x509pop/b", "02");
    assert_eq!(ok(s.get_agent(&a.spiffe_id), "get unknown agent"), None);
    assert!(ok(s.list_agents(), "list empty").is_empty());
    expect_not_found(s.delete_agent(&a.spiffe_id), "delete unknown agent");

    ok(s.put_agent(&a), "put a");
    ok(s.put_agent(&b), "put b");
    assert_eq!(ok(s.get_agent(&a.spiffe_id), "get a"), Some(a.clone()));

    let mut a2 = a.clone();
    a2.previous_serial = Some(a.serial.clone());
    a2.serial = "03".to_string();
    a2.expires_at = 7000;
    a2.banned = true;
    a2.updated_at = 1500;
    ok(s.put_agent(&a2), "put a again (renewal)");
    assert_eq!(
        ok(s.get_agent(&a.spiffe_id), "get a after overwrite"),
        Some(a2.clone()),
        "put must overwrite"
    );
    let mut listed = ok(s.list_agents(), "list");
    listed.sort_by(|x, y| x.spiffe_id.cmp(&y.spiffe_id));
    assert_eq!(
        listed,
        vec![a2.clone(), b.clone()],
        "list holds each agent once"
    );

    ok(s.delete_agent(&a.spiffe_id), "delete a");
    assert_eq!(ok(s.get_agent(&a.spiffe_id), "get deleted a"), None);
    expect_not_found(s.delete_agent(&a.spiffe_id), "delete a twice");
    assert_eq!(ok(s.list_agents(), "list after delete"), vec![b]);
}

// ---- bundles ----

/// Bundles: sequence 1 on first put, kept for the same content, +1 on
/// every change; get, list, delete.
pub fn bundles(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    let td = trust_domain(TRUST_DOMAIN);
    let other = trust_domain("partner.example");
    assert_eq!(ok(s.get_bundle(&td), "get unknown bundle"), None);
    assert!(ok(s.list_bundles(), "list empty").is_empty());
    expect_not_found(s.delete_bundle(&td), "delete unknown bundle");

    let first = ok(
        s.put_bundle(bundle(TRUST_DOMAIN, &[b"ca1"], &["k1"], 99)),
        "first put (given sequence ignored)",
    );
    assert_eq!(first.sequence, 1, "a new bundle gets sequence 1");
    assert_eq!(first, bundle(TRUST_DOMAIN, &[b"ca1"], &["k1"], 1));
    assert_eq!(ok(s.get_bundle(&td), "get"), Some(first.clone()));

    let same = ok(
        s.put_bundle(bundle(TRUST_DOMAIN, &[b"ca1"], &["k1"], 0)),
        "put same content",
    );
    assert_eq!(same.sequence, 1, "same content keeps the sequence");
    let x509_changed = ok(
        s.put_bundle(bundle(TRUST_DOMAIN, &[b"ca1", b"ca2"], &["k1"], 0)),
        "put with another X.509 authority",
    );
    assert_eq!(x509_changed.sequence, 2, "an X.509 change bumps by one");
    let jwt_changed = ok(
        s.put_bundle(bundle(TRUST_DOMAIN, &[b"ca1", b"ca2"], &["k1", "k2"], 0)),
        "put with another JWT authority",
    );
    assert_eq!(jwt_changed.sequence, 3, "a JWT change bumps by one");
    let same_again = ok(
        s.put_bundle(bundle(TRUST_DOMAIN, &[b"ca1", b"ca2"], &["k1", "k2"], 7)),
        "put same content again",
    );
    assert_eq!(same_again, jwt_changed);
    assert_eq!(ok(s.get_bundle(&td), "get"), Some(jwt_changed.clone()));
    // A taint is a change agents must hear about.
    let mut tainted = bundle(TRUST_DOMAIN, &[b"ca1", b"ca2"], &["k1", "k2"], 0);
    tainted.tainted_key_ids = vec![b"ski-ca1".to_vec()];
    let tainted = ok(s.put_bundle(tainted), "put with a taint");
    assert_eq!(tainted.sequence, 4, "a taint bumps by one");
    let jwt_changed = ok(
        s.put_bundle(bundle(TRUST_DOMAIN, &[b"ca1", b"ca2"], &["k1", "k2"], 0)),
        "put without the taint",
    );
    assert_eq!(jwt_changed.sequence, 5, "lifting a taint bumps by one");

    let partner = ok(
        s.put_bundle(bundle("partner.example", &[b"p1"], &[], 0)),
        "put another trust domain",
    );
    assert_eq!(partner.sequence, 1, "sequences are per trust domain");
    let mut listed = ok(s.list_bundles(), "list");
    listed.sort_by(|a, b| a.trust_domain.cmp(&b.trust_domain));
    let mut want = vec![jwt_changed.clone(), partner.clone()];
    want.sort_by(|a, b| a.trust_domain.cmp(&b.trust_domain));
    assert_eq!(listed, want, "list holds each bundle once");

    ok(s.delete_bundle(&other), "delete partner bundle");
    assert_eq!(ok(s.get_bundle(&other), "get deleted"), None);
    expect_not_found(s.delete_bundle(&other), "delete twice");
    assert_eq!(ok(s.list_bundles(), "list after delete"), vec![jwt_changed]);
}

// ---- CA journal ----

/// CA journal: default version 0, compare-and-swap on the version.
pub fn ca_journal(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    assert_eq!(
        ok(s.get_ca_journal(), "get new journal"),
        CaJournal::default(),
        "a new store has version 0 and no slots"
    );
    let j0 = CaJournal {
        version: 0,
        slots: vec![ca_slot(SlotId::A, SlotState::Active, "0a")],
    };
    let j1 = ok(s.put_ca_journal(&j0), "put with version 0");
    assert_eq!(j1.version, 1, "a successful put returns version + 1");
    assert_eq!(j1.slots, j0.slots);
    assert_eq!(ok(s.get_ca_journal(), "get"), j1);

    let stale = CaJournal {
        version: 0,
        slots: vec![ca_slot(SlotId::B, SlotState::Prepared, "0b")],
    };
    let e = expect_err(
        s.put_ca_journal(&stale),
        "put with a stale version",
        "Conflict",
        |e| matches!(e, StoreError::Conflict { .. }),
    );
    assert!(
        matches!(
            e,
            StoreError::Conflict {
                expected: 0,
                found: 1,
                ..
            }
        ),
        "Conflict must report expected 0 and found 1, got {e:?}"
    );
    let ahead = CaJournal {
        version: 5,
        ..stale.clone()
    };
    expect_err(
        s.put_ca_journal(&ahead),
        "put with a future version",
        "Conflict",
        |e| matches!(e, StoreError::Conflict { .. }),
    );
    assert_eq!(
        ok(s.get_ca_journal(), "get after conflicts"),
        j1,
        "a refused put writes nothing"
    );

    let mut next = j1.clone();
    next.slots
        .push(ca_slot(SlotId::B, SlotState::Prepared, "0b"));
    let j2 = ok(s.put_ca_journal(&next), "put with version 1");
    assert_eq!(j2.version, 2);
    assert_eq!(ok(s.get_ca_journal(), "get"), j2);
    assert_eq!(
        j2.slot(SlotId::B).map(|x| x.state),
        Some(SlotState::Prepared)
    );
}

// ---- concurrency ----

/// 4 threads each create 50 entries (and a fifth updates one entry 50
/// times): every change gets its own revision, none is lost.
pub fn concurrent_entry_changes(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    // Prior changes, so the check does not depend on starting at 0.
    let gone = ok(
        s.create_entry(entry_spec("/gone", "/p", &["t:1"]), 1),
        "create",
    );
    ok(s.delete_entry(&gone.id), "delete");
    let hot = ok(
        s.create_entry(entry_spec("/hot", "/p", &["t:0"]), 1),
        "create",
    );
    let start = revision(s);
    assert_eq!(start, 3);

    const THREADS: usize = 4;
    const PER_THREAD: usize = 50;
    const UPDATES: usize = 50;
    let barrier = Barrier::new(THREADS + 1);
    let (created, updated) = std::thread::scope(|scope| {
        let creators: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    (0..PER_THREAD)
                        .map(|i| {
                            let spec = entry_spec(&format!("/t{t}/w{i}"), "/p", &["t:1"]);
                            ok(s.create_entry(spec, 1), "concurrent create")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let updater = {
            let barrier = &barrier;
            let hot = &hot;
            scope.spawn(move || {
                barrier.wait();
                (0..UPDATES)
                    .map(|i| {
                        let spec = entry_spec("/hot", "/p", &[&format!("t:{}", i + 1)]);
                        ok(s.update_entry(&hot.id, spec), "concurrent update").revision
                    })
                    .collect::<Vec<_>>()
            })
        };
        let created: Vec<Entry> = creators
            .into_iter()
            .flat_map(|h| h.join().expect("creator thread panicked"))
            .collect();
        let updated = updater.join().expect("updater thread panicked");
        (created, updated)
    });

    let total = (THREADS * PER_THREAD + UPDATES) as u64;
    assert_eq!(created.len(), THREADS * PER_THREAD);
    assert_eq!(
        ok(s.count_entries(), "count"),
        (THREADS * PER_THREAD) as u64 + 1,
        "every concurrent create must be stored"
    );
    for e in &created {
        assert_eq!(
            ok(s.get_entry(&e.id), "get concurrently created entry").as_ref(),
            Some(e),
            "entry {} as returned by create",
            e.id
        );
    }
    let ids: HashSet<&str> = created.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        created.len(),
        "concurrent creates got duplicate ids"
    );
    let revisions: BTreeSet<u64> = created
        .iter()
        .map(|e| e.revision)
        .chain(updated.iter().copied())
        .collect();
    assert_eq!(
        revisions,
        (start + 1..=start + total).collect::<BTreeSet<u64>>(),
        "every change must get its own revision, with no gaps"
    );
    assert!(
        updated.windows(2).all(|w| w[0] < w[1]),
        "one thread's successive updates must get increasing revisions"
    );
    assert_eq!(revision(s), start + total, "final revision");
    assert_eq!(
        ok(s.get_entry(&hot.id), "get updated entry").map(|e| e.revision),
        updated.last().copied()
    );
    let events = events_since(s, start).expect("no pruning");
    assert_eq!(events.len() as u64, total, "one event per change");
    assert!(
        events
            .iter()
            .zip(start + 1..)
            .all(|(e, rev)| e.revision() == rev),
        "events in revision order"
    );
}

/// 8 threads creating the same entry at once: exactly one succeeds.
pub fn concurrent_duplicate_creates(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    const THREADS: usize = 8;
    let barrier = Barrier::new(THREADS);
    let results: Vec<StoreResult<Entry>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    s.create_entry(entry_spec("/same", "/p", &["t:1", "t:2"]), 1)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread panicked"))
            .collect()
    });
    let created = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        created, 1,
        "exactly one concurrent duplicate create succeeds"
    );
    for r in results.into_iter().filter(|r| r.is_err()) {
        expect_already_exists(r, "losing concurrent duplicate create");
    }
    assert_eq!(ok(s.count_entries(), "count"), 1);
    assert_eq!(revision(s), 1);
}

/// 8 threads consuming the same token at once: exactly one gets it.
pub fn concurrent_token_consume(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    ok(s.create_join_token(token("race", 5000)), "create token");
    const THREADS: usize = 8;
    let barrier = Barrier::new(THREADS);
    let results: Vec<StoreResult<JoinTokenRecord>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    s.consume_join_token("race", 1000)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread panicked"))
            .collect()
    });
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "exactly one concurrent consume succeeds");
    for r in results.into_iter().filter(|r| r.is_err()) {
        expect_not_found(r, "losing concurrent consume");
    }
}

/// 8 threads writing the CA journal from the same version: one wins.
pub fn concurrent_ca_journal_writes(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    const THREADS: usize = 8;
    let barrier = Barrier::new(THREADS);
    let results: Vec<StoreResult<CaJournal>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let journal = CaJournal {
                        version: 0,
                        slots: vec![ca_slot(SlotId::A, SlotState::Active, &format!("{t:02x}"))],
                    };
                    barrier.wait();
                    s.put_ca_journal(&journal)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread panicked"))
            .collect()
    });
    let winners: Vec<&CaJournal> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one concurrent journal write wins"
    );
    let winner = winners[0].clone();
    for r in results.into_iter().filter(|r| r.is_err()) {
        expect_err(r, "losing concurrent journal write", "Conflict", |e| {
            matches!(e, StoreError::Conflict { .. })
        });
    }
    assert_eq!(winner.version, 1);
    assert_eq!(
        ok(s.get_ca_journal(), "get"),
        winner,
        "the winner is stored"
    );
}

/// `create_entries` creates each spec as `create_entry` would, in order with
/// consecutive revisions and one event each; refuses duplicates (of stored
/// entries and of earlier items of the same batch) item by item without
/// stopping the batch; an empty batch changes nothing; and everything it
/// acknowledged is there after a reopen.
pub fn entry_batch_create(location: &dyn StoreLocation) {
    let (created, rev) = {
        let store = location.open();
        let s = &*store;
        let before = ok(
            s.create_entry(entry_spec("/old", "/p", &["t:old"]), 1),
            "create old",
        );
        assert!(
            ok(s.create_entries(Vec::new(), 2), "empty batch").is_empty(),
            "an empty batch has no outcomes"
        );
        assert_eq!(
            revision(s),
            before.revision,
            "an empty batch changes nothing"
        );
        let out = ok(
            s.create_entries(
                vec![
                    entry_spec("/b/0", "/p", &["t:a", "t:b"]),
                    entry_spec("/old", "/p", &["t:old"]),
                    entry_spec("/b/1", "/p", &["t:a"]),
                    raw_spec("/b/0", "/p", &["t:b", "t:a"]),
                    entry_spec("/b/2", "/p", &["t:c"]),
                ],
                7,
            ),
            "create_entries",
        );
        assert_eq!(out.len(), 5, "one outcome per spec");
        let mut out = out.into_iter();
        let b0 = ok(out.next().expect("outcome 0"), "batch item 0");
        expect_already_exists(
            out.next().expect("outcome 1"),
            "batch item duplicating a stored entry",
        );
        let b1 = ok(out.next().expect("outcome 2"), "batch item 2");
        expect_already_exists(
            out.next().expect("outcome 3"),
            "batch item duplicating an earlier item of the batch",
        );
        let b2 = ok(out.next().expect("outcome 4"), "batch item 4");
        let created = vec![b0, b1, b2];
        for (i, e) in created.iter().enumerate() {
            assert_eq!(
                e.revision,
                before.revision + 1 + i as u64,
                "batch items get consecutive revisions in order"
            );
            assert_eq!(e.created_at, 7, "created_at is the batch's now");
            assert!(is_lower_hex_id(&e.id), "bad entry id {:?}", e.id);
            assert_eq!(
                ok(s.get_entry(&e.id), "get batch entry").as_ref(),
                Some(e),
                "a batch entry reads back as returned"
            );
        }
        assert_eq!(revision(s), before.revision + 3);
        assert_eq!(ok(s.count_entries(), "count"), 4);
        let events = events_since(s, before.revision).expect("events of the batch");
        let upserted: Vec<&Entry> = events
            .iter()
            .map(|ev| match ev {
                EntryEvent::Upserted(e) => e,
                other => panic!("unexpected event {other:?}"),
            })
            .collect();
        assert_eq!(
            upserted,
            created.iter().collect::<Vec<_>>(),
            "one Upserted event per created item, in order"
        );
        (created, revision(s))
    };
    let store = location.open();
    let s = &*store;
    assert_eq!(revision(s), rev, "the batch's revision survives a reopen");
    for e in &created {
        assert_eq!(
            ok(s.get_entry(&e.id), "get after reopen").as_ref(),
            Some(e),
            "an acknowledged batch entry survives a reopen"
        );
    }
}
