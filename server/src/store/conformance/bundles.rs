//! Conformance checks for trust bundles: sequence numbers, taints, delete.

use super::fixtures::*;
use super::*;

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
    // So is a JWT key taint (issue 15): agents re-mint its tokens.
    let mut jwt_tainted = tainted.clone();
    jwt_tainted.tainted_jwt_key_ids = vec!["k1".to_string()];
    let jwt_tainted = ok(s.put_bundle(jwt_tainted), "put with a JWT key taint");
    assert_eq!(jwt_tainted.sequence, 5, "a JWT key taint bumps by one");
    assert_eq!(jwt_tainted.tainted_jwt_key_ids, vec!["k1".to_string()]);
    let jwt_changed = ok(
        s.put_bundle(bundle(TRUST_DOMAIN, &[b"ca1", b"ca2"], &["k1", "k2"], 0)),
        "put without the taint",
    );
    assert_eq!(jwt_changed.sequence, 6, "lifting a taint bumps by one");

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
