//! Conformance checks for the server records and the union bundle (issue
//! 17): compare-and-swap of a server's record, of the bundle on its
//! sequence, and no lost update when several servers recompute the union
//! bundle at once ([`crate::ca::union::publish`]).

use super::fixtures::*;
use super::*;
use crate::ca::union;
use crate::store::ServerRecord;

fn record(id: &str, serials: &[&str], last_seen: i64) -> ServerRecord {
    ServerRecord {
        instance_id: id.to_string(),
        journal: CaJournal {
            version: 1,
            slots: serials
                .iter()
                .map(|s| ca_slot(SlotId::A, SlotState::Active, s))
                .collect(),
            jwt_slots: Vec::new(),
        },
        started_at: 100,
        last_seen,
        forgotten_at: None,
    }
}

fn expect_changed<T: Debug>(r: StoreResult<T>, what: &str) {
    expect_err(r, what, "Changed", |e| {
        matches!(e, StoreError::Changed { .. })
    });
}

/// Server records: created only where none is, replaced or removed only
/// from the record read, listed by instance id, kept across a reopen.
pub fn i17_3_server_records_compare_and_swap(location: &dyn StoreLocation) {
    let (a, b) = ("a".repeat(32), "b".repeat(32));
    {
        let store = location.open();
        let s = &*store;
        assert_eq!(ok(s.list_servers(), "list new"), vec![]);
        assert_eq!(ok(s.get_server(&a), "get new"), None);
        let ra = record(&a, &["0a"], 10);
        ok(s.swap_server(&a, None, Some(&ra)), "create a");
        expect_changed(
            s.swap_server(&a, None, Some(&record(&a, &["0c"], 11))),
            "create a again",
        );
        let rb = record(&b, &["0b"], 10);
        ok(s.swap_server(&b, None, Some(&rb)), "create b");
        let stale = record(&a, &["0a"], 9);
        expect_changed(
            s.swap_server(&a, Some(&stale), Some(&record(&a, &["0d"], 12))),
            "swap from a record never stored",
        );
        let ra2 = ServerRecord {
            last_seen: 20,
            forgotten_at: Some(20),
            ..ra.clone()
        };
        ok(s.swap_server(&a, Some(&ra), Some(&ra2)), "swap a");
        expect_changed(s.swap_server(&a, Some(&ra), None), "remove from old a");
        assert_eq!(ok(s.get_server(&a), "get a"), Some(ra2.clone()));
        assert_eq!(ok(s.list_servers(), "list"), vec![ra2.clone(), rb.clone()]);
        ok(s.swap_server(&b, Some(&rb), None), "remove b");
        assert_eq!(ok(s.get_server(&b), "get removed b"), None);
    }
    let store = location.open();
    assert_eq!(
        ok(store.list_servers(), "list after reopen"),
        vec![ServerRecord {
            last_seen: 20,
            forgotten_at: Some(20),
            ..record(&a, &["0a"], 10)
        }],
        "records survive a reopen"
    );
}

/// `swap_bundle` writes only over the sequence it was given (`None`: no
/// bundle), bumps the sequence as `put_bundle` does and keeps it when the
/// content is unchanged.
pub fn i17_3_bundle_compare_and_swap(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    let b1 = bundle(TRUST_DOMAIN, &[b"ca1"], &[], 0);
    let stored = ok(s.swap_bundle(None, b1.clone()), "swap over no bundle");
    assert_eq!(stored.sequence, 1);
    expect_changed(s.swap_bundle(None, b1.clone()), "swap over no bundle again");
    let b2 = bundle(TRUST_DOMAIN, &[b"ca1", b"ca2"], &[], 0);
    expect_changed(s.swap_bundle(Some(7), b2.clone()), "swap over sequence 7");
    let td = trust_domain(TRUST_DOMAIN);
    assert_eq!(
        ok(s.get_bundle(&td), "get").map(|b| b.x509_authorities),
        Some(b1.x509_authorities.clone()),
        "a refused swap wrote nothing"
    );
    let stored = ok(s.swap_bundle(Some(1), b2.clone()), "swap over 1");
    assert_eq!(stored.sequence, 2);
    let same = ok(s.swap_bundle(Some(2), b2), "swap with the same content");
    assert_eq!(same.sequence, 2, "unchanged content keeps the sequence");
}

/// 6 threads, each a server with its own record, each adding CAs to its
/// journal one at a time and recomputing the union bundle after each:
/// once a server's publish returns, the bundle holds all of its CAs (a
/// lost update drops some), and at the end every CA of every journal.
pub fn i17_3_concurrent_union_bundle_loses_no_update(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    const SERVERS: usize = 6;
    const CHANGES: usize = 8;
    let td = trust_domain(TRUST_DOMAIN);
    let barrier = Barrier::new(SERVERS);
    std::thread::scope(|scope| {
        for t in 0..SERVERS {
            let (barrier, td) = (&barrier, &td);
            scope.spawn(move || {
                let id = format!("{t:032x}");
                let mut rec: Option<ServerRecord> = None;
                barrier.wait();
                for c in 0..CHANGES {
                    let serials: Vec<String> = (0..=c).map(|i| format!("{t}-{i}")).collect();
                    let refs: Vec<&str> = serials.iter().map(String::as_str).collect();
                    let new = record(&id, &refs, 1);
                    ok(s.swap_server(&id, rec.as_ref(), Some(&new)), "own record");
                    rec = Some(new);
                    let compute = |servers: &[ServerRecord]| {
                        // Not a synchronisation: it widens the window
                        // between reading the journals and writing the
                        // bundle, where a write without compare-and-swap
                        // loses another server's change.
                        std::thread::sleep(std::time::Duration::from_millis(
                            1 + 7 * (t % 3) as u64,
                        ));
                        let journals: Vec<&CaJournal> =
                            servers.iter().map(|r| &r.journal).collect();
                        union::union_of(td, &CaJournal::default(), &journals, None, 1500, 0)
                    };
                    ok(union::publish(s, td, &compute), "publish the union");
                    // Every later bundle saw this journal: it holds all of
                    // this server's CAs until the server changes again.
                    let b = ok(s.get_bundle(td), "get").expect("a bundle");
                    for serial in &serials {
                        let cert = format!("cert-{serial}").into_bytes();
                        assert!(
                            b.x509_authorities.contains(&cert),
                            "server {t}: CA {serial} lost from the bundle (sequence {}): \
                             a concurrent write overwrote it",
                            b.sequence
                        );
                    }
                }
            });
        }
    });
    let b = ok(s.get_bundle(&td), "get").expect("a bundle");
    let mut got: Vec<Vec<u8>> = b.x509_authorities.clone();
    got.sort();
    let mut want: Vec<Vec<u8>> = (0..SERVERS)
        .flat_map(|t| (0..CHANGES).map(move |i| format!("cert-{t}-{i}").into_bytes()))
        .collect();
    want.sort();
    assert_eq!(
        got.len(),
        want.len(),
        "the bundle has every CA of every server (a lost update drops some)"
    );
    assert_eq!(got, want);
}
