//! Conformance checks under concurrency: parallel entry changes, racing
//! duplicate creates, racing token consumption and CA journal writes.

use super::fixtures::*;
use super::*;

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
                        ..Default::default()
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
