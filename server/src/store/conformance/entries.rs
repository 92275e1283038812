//! Conformance checks for registration entries: create, get, update and
//! delete; ids and revisions; duplicate refusal; batch creation; list
//! filters.

use super::fixtures::*;
use super::*;

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
