//! [`Registry::explain`] over a sled store with a [`ManualClock`]: issued
//! entries (direct and through a node alias), the nearest miss with its
//! missing selector first, a wrong parent, and an entry that moves from
//! issued to expired when the clock passes its `expires_at`.

use std::sync::Arc;
use std::time::Duration;

use sigil_proto::Selector;
use sigil_proto::clock::{Clock, ManualClock};

use crate::registry::Registry;
use crate::store::Store;
use crate::store::conformance::{entry_spec, spiffe_id};
use crate::store::sled::SledStore;

fn sels(s: &[&str]) -> Vec<Selector> {
    s.iter().map(|s| Selector::parse(s).unwrap()).collect()
}

fn ids(v: &[super::Explained]) -> Vec<String> {
    v.iter()
        .map(|x| x.entry.spec.spiffe_id.path().to_string())
        .collect()
}

#[test]
fn explain_ranks_near_misses_names_wrong_parents_and_follows_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let r = Registry::load(store, spiffe_id("/sigil/server")).unwrap();
    let clock = ManualClock::at_unix(1_700_000_000);
    let now = clock.now_unix();
    let a = "/sigil/agent/x509pop/a";
    for (path, parent, s) in [
        ("/direct", a, vec!["unix:uid:1"]),
        ("/one-missing", a, vec!["unix:uid:1", "unix:gid:2"]),
        (
            "/two-missing",
            a,
            vec!["unix:uid:1", "unix:gid:3", "unix:user:x"],
        ),
        ("/other-agent", "/sigil/agent/x509pop/b", vec!["unix:uid:1"]),
        ("/rack", "/sigil/server", vec!["x509pop:subject:cn:n1"]),
        ("/via-rack", "/rack", vec!["unix:uid:1"]),
    ] {
        r.create(entry_spec(path, parent, &s), now).unwrap();
    }
    let mut expiring = entry_spec("/expiring", a, &["unix:uid:1"]);
    expiring.expires_at = Some(now + 10);
    r.create(expiring, now).unwrap();

    let node = sels(&["x509pop:subject:cn:n1"]);
    let workload = sels(&["unix:uid:1"]);
    let x = r.explain(&spiffe_id(a), &node, &workload, now, 1);
    let mut issued = ids(&x.issued);
    issued.sort();
    assert_eq!(issued, ["/direct", "/expiring", "/via-rack"]);
    let via = x
        .issued
        .iter()
        .find(|e| e.entry.spec.spiffe_id.path() == "/via-rack");
    assert_eq!(via.unwrap().via_alias, Some(spiffe_id("/rack")));
    // Capped at 1: the nearest, with exactly its missing selector.
    assert_eq!(ids(&x.near_misses), ["/one-missing"]);
    assert_eq!(x.near_misses[0].missing, sels(&["unix:gid:2"]));
    assert_eq!(x.near_misses_left_off, 1);
    assert_eq!(ids(&x.wrong_parent), ["/other-agent"]);
    assert!(x.expired.is_empty());
    // Without the node selectors the alias's entry has the wrong parent.
    let x = r.explain(&spiffe_id(a), &[], &workload, now, 10);
    assert!(ids(&x.wrong_parent).contains(&"/via-rack".to_string()));

    clock.advance(Duration::from_secs(11));
    let x = r.explain(&spiffe_id(a), &node, &workload, clock.now_unix(), 10);
    assert_eq!(ids(&x.expired), ["/expiring"]);
    assert!(x.expired[0].reason.contains("expired at"));
    assert!(!ids(&x.issued).contains(&"/expiring".to_string()));
}
