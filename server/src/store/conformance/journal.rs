//! Conformance checks for the CA journal: compare-and-swap on its version.

use super::fixtures::*;
use super::*;

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
        jwt_slots: vec![jwt_slot(SlotId::B, SlotState::Active, "k0b")],
    };
    let j1 = ok(s.put_ca_journal(&j0), "put with version 0");
    assert_eq!(j1.version, 1, "a successful put returns version + 1");
    assert_eq!(j1.slots, j0.slots);
    assert_eq!(j1.jwt_slots, j0.jwt_slots, "JWT key slots are kept too");
    assert_eq!(ok(s.get_ca_journal(), "get"), j1);

    let stale = CaJournal {
        version: 0,
        slots: vec![ca_slot(SlotId::B, SlotState::Prepared, "0b")],
        ..Default::default()
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
