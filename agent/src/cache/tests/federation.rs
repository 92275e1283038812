//! Foreign bundles from the sync stream through the cache to a real
//! Workload API server on a temp socket (issue 16 item 3): a caller gets the
//! bundles of the trust domains its SVIDs' entries federate with, open
//! streams are pushed every change, and what a full set leaves out is gone.

use std::collections::{BTreeMap, BTreeSet};

use sigil_proto::workload as wpb;

use super::stream::{WAIT, open_stream, serve_cache};
use super::*;
use crate::workload_api::SECURITY_HEADER;
use crate::workload_api::tests::client_at;

fn td(s: &str) -> TrustDomain {
    TrustDomain::parse(s).unwrap()
}

fn foreign(name: &str, cas: &[&Arc<TestCa>], sequence: u64) -> SyncEvent {
    SyncEvent::Federated(ForeignBundle {
        trust_domain: td(name),
        bundle: TrustBundle {
            x509_authorities: cas.iter().map(|c| c.der.clone()).collect(),
            sequence,
            ..Default::default()
        },
    })
}

fn federating(id: &str, uid: u32, with: &[&str]) -> AuthorizedEntry {
    let mut e = entry(id, &[&format!("unix:uid:{uid}")], 1);
    e.federates_with = with.iter().map(|t| td(t)).collect();
    e
}

async fn next(s: &mut tonic::Streaming<wpb::X509svidResponse>) -> wpb::X509svidResponse {
    tokio::time::timeout(WAIT, s.message())
        .await
        .expect("no update on the open stream")
        .unwrap()
        .expect("stream ended")
}

fn fed(m: &wpb::X509svidResponse) -> BTreeMap<String, Vec<u8>> {
    m.federated_bundles.clone().into_iter().collect()
}

async fn bundles(path: std::path::PathBuf) -> BTreeSet<String> {
    let mut req = tonic::Request::new(wpb::X509BundlesRequest {});
    req.metadata_mut()
        .insert(SECURITY_HEADER, "true".parse().unwrap());
    let mut s = client_at(&path)
        .await
        .fetch_x509_bundles(req)
        .await
        .unwrap()
        .into_inner();
    let m = tokio::time::timeout(WAIT, s.message())
        .await
        .expect("bundles")
        .unwrap()
        .unwrap();
    m.bundles.into_keys().collect()
}

#[tokio::test]
async fn i16_3_workloads_get_only_the_foreign_bundles_their_entries_federate_with_and_every_change()
{
    let mut h = harness();
    let b1 = test_ca();
    let c1 = test_ca();
    // A full set as the server sends it: foreign bundles, then the pages.
    h.cache.apply(foreign("b.test", &[&b1], 1));
    h.cache.apply(foreign("c.test", &[&c1], 1));
    h.cache
        .apply(SyncEvent::FederatedSet([td("b.test"), td("c.test")].into()));
    h.event(SyncEvent::Full(vec![
        federating("fed", 1, &["b.test"]),
        federating("plain", 2, &[]),
    ]))
    .await;

    let (_d1, federates) = serve_cache(h.rx.clone(), h.clock.clone(), &["unix:uid:1"]).await;
    let (_d2, plain) = serve_cache(h.rx.clone(), h.clock.clone(), &["unix:uid:2"]).await;
    let mut s = open_stream(federates.clone()).await;
    let mut p = open_stream(plain.clone()).await;
    let first = next(&mut s).await;
    assert_eq!(
        fed(&first),
        BTreeMap::from([("spiffe://b.test".to_string(), b1.der.clone())]),
        "exactly the trust domains its entry federates with"
    );
    assert!(
        fed(&next(&mut p).await).is_empty(),
        "an entry that federates with nothing gets no foreign bundle"
    );
    assert_eq!(
        bundles(federates.clone()).await,
        BTreeSet::from([
            "spiffe://example.org".to_string(),
            "spiffe://b.test".to_string(),
        ]),
        "FetchX509Bundles: the own bundle and those its entries federate with"
    );
    assert_eq!(
        bundles(plain.clone()).await,
        BTreeSet::from(["spiffe://example.org".to_string()]),
        "FetchX509Bundles of a caller whose entry federates with nothing"
    );

    // b.test prepares a new CA: the open stream is pushed both, at once,
    // without any SVID being re-issued.
    let calls = h.signer.calls();
    let b2 = test_ca();
    h.event(foreign("b.test", &[&b1, &b2], 2)).await;
    let pushed = next(&mut s).await;
    assert_eq!(
        fed(&pushed)["spiffe://b.test"],
        [b1.der.clone(), b2.der.clone()].concat()
    );
    assert_eq!(
        h.signer.calls(),
        calls,
        "a foreign bundle re-issues nothing"
    );

    // Its own trust domain never comes as a foreign bundle.
    h.event(foreign("example.org", &[&c1], 3)).await;
    assert_eq!(h.rx.borrow().bundle, [h.signer.ca().der.clone()]);
    assert!(!h.rx.borrow().federated.contains_key(&td("example.org")));

    // "All revoked": an empty bundle is served as such.
    h.event(foreign("b.test", &[], 3)).await;
    assert_eq!(
        fed(&next(&mut s).await)["spiffe://b.test"],
        Vec::<u8>::new()
    );

    // Removed by the server: gone from the open stream.
    h.event(foreign("b.test", &[&b2], 4)).await;
    assert_eq!(fed(&next(&mut s).await)["spiffe://b.test"], b2.der);
    h.event(SyncEvent::FederatedRemoved(td("b.test"))).await;
    assert!(fed(&next(&mut s).await).is_empty());

    // A later full set that sends only b.test drops c.test.
    h.cache.apply(foreign("b.test", &[&b2], 4));
    h.cache
        .apply(SyncEvent::FederatedSet([td("b.test")].into()));
    h.event(SyncEvent::Full(vec![
        federating("fed", 1, &["b.test"]),
        federating("plain", 2, &[]),
    ]))
    .await;
    assert_eq!(fed(&next(&mut s).await)["spiffe://b.test"], b2.der);
    assert!(
        h.rx.borrow().federated.keys().eq([&td("b.test")]),
        "c.test, left out of the full set, is dropped"
    );
    // c.test back, and an entry now federating with it: its caller is
    // pushed the bundle.
    h.cache.apply(foreign("c.test", &[&c1], 2));
    h.event(SyncEvent::Upsert(federating(
        "fed",
        1,
        &["b.test", "c.test"],
    )))
    .await;
    let m = loop {
        // The re-issue for the new entry revision may come as its own update.
        let m = next(&mut s).await;
        if m.federated_bundles.len() == 2 {
            break m;
        }
    };
    assert_eq!(fed(&m)["spiffe://c.test"], c1.der);
    assert_eq!(
        bundles(federates).await,
        BTreeSet::from([
            "spiffe://example.org".to_string(),
            "spiffe://b.test".to_string(),
            "spiffe://c.test".to_string()
        ]),
    );
}
