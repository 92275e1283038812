//! The lifecycle decisions, one rule per test, at instants a `ManualClock`
//! sets.

use std::collections::HashSet;
use std::time::Duration;

use sigil_proto::clock::{Clock, ManualClock};

use super::*;

const OLD: &[u8] = b"old-ca";
const NEW: &[u8] = b"new-ca";

fn ids(v: &[&[u8]]) -> HashSet<Vec<u8>> {
    v.iter().map(|k| k.to_vec()).collect()
}

fn facts<'a>(
    clock: &ManualClock,
    bundle: &'a HashSet<Vec<u8>>,
    tainted: &'a HashSet<Vec<u8>>,
) -> Facts<'a> {
    Facts {
        now: clock.now_unix(),
        not_after: 1_000_100,
        renew_at: 1_000_050,
        signer: Some(OLD),
        bundle_ids: bundle,
        tainted,
        refused: None,
        can_reattest: false,
    }
}

#[test]
fn item1_tainted_or_removed_signer_renews_at_once() {
    let clock = ManualClock::at_unix(1_000_000);
    let both = ids(&[OLD, NEW]);
    let none = HashSet::new();
    assert_eq!(
        decide(&facts(&clock, &both, &none)),
        Decision::RenewAt(1_000_050)
    );
    let tainted = ids(&[OLD]);
    assert_eq!(
        decide(&facts(&clock, &both, &tainted)),
        Decision::RenewNow("ca_tainted")
    );
    let only_new = ids(&[NEW]);
    assert_eq!(
        decide(&facts(&clock, &only_new, &none)),
        Decision::RenewNow("ca_left_bundle")
    );
    // An unknown bundle (none received yet) is no reason to renew.
    let empty = HashSet::new();
    assert_eq!(
        decide(&facts(&clock, &empty, &none)),
        Decision::RenewAt(1_000_050)
    );
}

#[test]
fn item2_refused_identity_reattests_or_is_stranded_with_the_remedy() {
    let clock = ManualClock::at_unix(1_000_000);
    let b = ids(&[OLD]);
    let none = HashSet::new();
    let mut f = facts(&clock, &b, &none);
    f.refused = Some("agent X is not attested (unknown or evicted)");
    match decide(&f) {
        Decision::Stranded(s @ State::Refused(_)) => {
            let why = s.readiness().unwrap_err();
            assert!(why.contains("evicted"), "{why}");
            assert!(why.contains("token generate"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    f.can_reattest = true;
    assert!(matches!(decide(&f), Decision::Reattest(w) if w.contains("evicted")));
}

#[test]
fn item3_expiry_reattests_or_is_stranded() {
    let clock = ManualClock::at_unix(1_000_000);
    let b = ids(&[OLD]);
    let none = HashSet::new();
    assert!(matches!(
        decide(&facts(&clock, &b, &none)),
        Decision::RenewAt(_)
    ));
    clock.advance(Duration::from_secs(100));
    let f = facts(&clock, &b, &none);
    match decide(&f) {
        Decision::Stranded(s @ State::Expired(_)) => {
            assert_eq!(s.label(), "expired");
            assert!(s.readiness().unwrap_err().contains("expired at 1000100"));
        }
        other => panic!("{other:?}"),
    }
    let f = Facts {
        can_reattest: true,
        ..f
    };
    assert!(matches!(decide(&f), Decision::Reattest(_)));
}

#[test]
fn item2_spent_by_knows_both_agent_id_forms() {
    let token = "abc123";
    assert!(spent_by(
        "spiffe://example.org/sigil/agent/join_token/abc123",
        token
    ));
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let h = &hex::encode(digest.as_ref())[..32];
    assert!(spent_by(
        &format!("spiffe://example.org/sigil/agent/join_token/{h}"),
        token
    ));
    assert!(!spent_by(
        "spiffe://example.org/sigil/agent/join_token/other",
        token
    ));
    assert!(!spent_by(
        "spiffe://example.org/sigil/agent/x509pop/abc123",
        token
    ));
}
