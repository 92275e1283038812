//! Conformance checks for the entry event log that agent sync follows:
//! events after a revision, in order, and pruning.

use super::fixtures::*;
use super::*;

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
    let ids = create_under_p(s, 6);
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

/// Pages of the log are the log cut into pieces; a page asked for from
/// before the low-water mark (or beyond the current revision) is `None`.
/// An update that changes the parent is logged as `Moved` naming the old
/// parent (a resuming agent of that parent must drop the entry).
pub fn entry_event_pages_and_moves(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    let ids = create_under_p(s, 7);
    let moved = ok(
        s.update_entry(&ids[0], entry_spec("/w/0", "/q", &["t:1"])),
        "re-parent",
    );
    let stayed = ok(
        s.update_entry(&ids[1], entry_spec("/w/1", "/p", &["t:2"])),
        "update in place",
    );
    let all = events_since(s, 0).expect("no pruning yet");
    assert_eq!(all.len(), 9);
    assert_eq!(
        all[7],
        EntryEvent::Moved {
            entry: moved,
            from: spiffe_id("/p")
        },
        "a re-parent is logged as Moved from the old parent"
    );
    assert_eq!(
        all[8],
        EntryEvent::Upserted(stayed),
        "same parent: Upserted"
    );

    let page = |after: u64, limit: usize| {
        ok(
            s.entry_events_page(after, limit),
            &format!("entry_events_page({after}, {limit})"),
        )
    };
    let mut joined = Vec::new();
    let mut after = 0;
    loop {
        let p = page(after, 4).expect("no pruning yet");
        assert!(p.len() <= 4, "a page holds at most the limit: {}", p.len());
        let Some(last) = p.last() else { break };
        after = last.revision();
        joined.extend(p);
    }
    assert_eq!(joined, all, "the pages, joined, are the log");
    assert_eq!(page(9, 4), Some(Vec::new()), "nothing after the end");
    assert_eq!(page(10, 4), None, "beyond the current revision");
    ok(s.prune_entry_events(5), "prune upto 5");
    assert_eq!(page(4, 4), None, "from before the mark");
    assert_eq!(page(5, 2), Some(all[5..7].to_vec()), "from the mark");
}

/// Creates `/w/0` … `/w/<n-1>` under `/p`; their ids.
fn create_under_p(s: &dyn Store, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let spec = entry_spec(&format!("/w/{i}"), "/p", &["t:1"]);
            ok(s.create_entry(spec, 1), "create").id
        })
        .collect()
}
