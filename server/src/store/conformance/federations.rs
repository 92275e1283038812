//! Conformance checks for federation relationships (CRUD, order, reopen)
//! and for the bundle sequence high-water mark (issue 16 item 4).

use super::fixtures::*;
use super::*;
use crate::store::{EndpointProfile, FederationRecord};

fn relationship(td: &str, url: &str, created_at: i64) -> FederationRecord {
    FederationRecord {
        trust_domain: trust_domain(td),
        bundle_endpoint_url: url.to_string(),
        profile: EndpointProfile::HttpsSpiffe,
        endpoint_spiffe_id: Some(
            SpiffeId::parse(&format!("spiffe://{td}/sigil/server"))
                .unwrap_or_else(|e| panic!("fixture endpoint ID: {e}")),
        ),
        ca_file: None,
        created_at,
        updated_at: created_at,
    }
}

/// Federation relationships: put (create and replace), get, list ordered
/// by trust domain, delete (`NotFound` when absent), all kept across a reopen.
pub fn federations(location: &dyn StoreLocation) {
    let b = trust_domain("b.test");
    {
        let store = location.open();
        let s = &*store;
        assert_eq!(ok(s.get_federation(&b), "get unknown relationship"), None);
        assert!(ok(s.list_federations(), "list empty").is_empty());
        expect_not_found(s.delete_federation(&b), "delete unknown relationship");

        let first = relationship("b.test", "https://b.test:8443/", 10);
        ok(s.put_federation(&first), "put b.test");
        assert_eq!(ok(s.get_federation(&b), "get b.test"), Some(first));
        let mut web = relationship("b.test", "https://b.test/bundle", 10);
        web.profile = EndpointProfile::HttpsWeb;
        web.endpoint_spiffe_id = None;
        web.ca_file = Some("/etc/b-roots.pem".into());
        web.updated_at = 20;
        ok(s.put_federation(&web), "replace b.test");
        assert_eq!(ok(s.get_federation(&b), "get replaced"), Some(web.clone()));
        let a = relationship("a.test", "https://a.test/", 5);
        let c = relationship("c.test", "https://c.test/", 5);
        ok(s.put_federation(&c), "put c.test");
        ok(s.put_federation(&a), "put a.test");
        assert_eq!(
            ok(s.list_federations(), "list"),
            vec![a.clone(), web.clone(), c.clone()],
            "list holds each relationship once, ordered by trust domain"
        );
        ok(
            s.delete_federation(&trust_domain("c.test")),
            "delete c.test",
        );
        expect_not_found(
            s.delete_federation(&trust_domain("c.test")),
            "delete c.test twice",
        );
    }
    let store = location.open();
    assert_eq!(
        ok(store.list_federations(), "list after reopen").len(),
        2,
        "relationships survive a reopen"
    );
}

/// A trust domain's bundle sequence never repeats: a bundle stored after
/// `delete_bundle` continues above the deleted one's sequence, also after a
/// reopen (the bundle endpoint's `spiffe_sequence` must strictly increase).
pub fn item4_bundle_sequence_survives_delete_and_reopen(location: &dyn StoreLocation) {
    let td = trust_domain(TRUST_DOMAIN);
    {
        let store = location.open();
        let s = &*store;
        ok(
            s.put_bundle(bundle(TRUST_DOMAIN, &[b"ca1"], &[], 0)),
            "put 1",
        );
        let second = ok(
            s.put_bundle(bundle(TRUST_DOMAIN, &[b"ca1", b"ca2"], &[], 0)),
            "put 2",
        );
        assert_eq!(second.sequence, 2);
        ok(s.delete_bundle(&td), "delete");
        let again = ok(
            s.put_bundle(bundle(TRUST_DOMAIN, &[b"ca3"], &[], 0)),
            "re-create after delete",
        );
        assert_eq!(
            again.sequence, 3,
            "a bundle re-created after a delete continues above the deleted sequence 2"
        );
        ok(s.delete_bundle(&td), "delete again");
        ok(
            s.put_bundle(bundle("partner.example", &[b"p"], &[], 0)),
            "another trust domain",
        );
    }
    let store = location.open();
    let after = ok(
        store.put_bundle(bundle(TRUST_DOMAIN, &[b"ca4"], &[], 0)),
        "re-create after delete and reopen",
    );
    assert_eq!(after.sequence, 4, "the high-water mark 3 survives a reopen");
}
