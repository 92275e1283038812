//! The conformance check that everything a store holds survives closing
//! and reopening it, and that the entry revision keeps growing.

use super::fixtures::*;
use super::*;

/// Entries, revision, events, tokens, agents, bundles and CA journal all
/// survive closing and reopening the store; the revision keeps growing.
pub fn survives_reopen(location: &dyn StoreLocation) {
    let agent_a = agent("/sigil/agent/join_token/a", "01");
    let journal = CaJournal {
        version: 0,
        slots: vec![ca_slot(SlotId::A, SlotState::Active, "0a")],
        jwt_slots: vec![jwt_slot(SlotId::A, SlotState::Prepared, "k0a")],
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
