//! Another server's foreign-bundle writes to a shared store (here a sled
//! store written directly, not through this server's [`ForeignBundles`])
//! reach this server's memory and its sync streams' change counter at the
//! next reload; nothing changed publishes nothing.

use std::sync::Arc;

use sigil_proto::TrustDomain;

use crate::federation::foreign::ForeignBundles;
use crate::store::sled::SledStore;
use crate::store::{BundleRecord, Store};

fn bundle(td: &str, ca: u8) -> BundleRecord {
    BundleRecord {
        trust_domain: TrustDomain::parse(td).unwrap(),
        x509_authorities: vec![vec![ca; 8]],
        jwt_authorities: Vec::new(),
        tainted_key_ids: Vec::new(),
        tainted_jwt_key_ids: Vec::new(),
        sequence: 0,
    }
}

#[test]
fn i17_2_foreign_bundles_written_by_another_server_are_reloaded_and_published() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let own = TrustDomain::parse("example.org").unwrap();
    let foreign = ForeignBundles::load(store.clone(), own).unwrap();
    let mut changes = foreign.subscribe();
    let td = TrustDomain::parse("partner.test").unwrap();

    // The other server stores a new foreign bundle (and our own, ignored).
    store.put_bundle(bundle("partner.test", 1)).unwrap();
    store.put_bundle(bundle("example.org", 9)).unwrap();
    assert!(foreign.get(&td).is_none());
    foreign.reload().unwrap();
    assert_eq!(foreign.get(&td).unwrap().x509_authorities, vec![vec![1; 8]]);
    assert_eq!(foreign.list().len(), 1, "the own bundle is not foreign");
    assert!(changes.has_changed().unwrap(), "sync streams are told");
    changes.mark_unchanged();

    // Nothing new: nothing published.
    foreign.reload().unwrap();
    assert!(!changes.has_changed().unwrap());

    // A rotation (new sequence), then a deletion.
    store.put_bundle(bundle("partner.test", 2)).unwrap();
    foreign.reload().unwrap();
    assert_eq!(foreign.get(&td).unwrap().x509_authorities, vec![vec![2; 8]]);
    assert!(changes.has_changed().unwrap());
    changes.mark_unchanged();
    store.delete_bundle(&td).unwrap();
    foreign.reload().unwrap();
    assert!(foreign.get(&td).is_none());
    assert!(changes.has_changed().unwrap());
}
