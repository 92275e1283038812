//! Issue 17 item 3: a CA per server. Several managers (servers) on one
//! store, each with its own instance id and key manager, driven by one
//! manual clock: each keeps its own journal and CA, the bundle is the
//! union, a forgotten server's CAs stay until they expire, and a journal
//! written before per-server journals is taken over by the server whose
//! keys it names.

use super::*;
use crate::ca::testing::{INSTANCE_ID, TTL, start_as};
use crate::key_manager::memory::MemoryKeyManager;

const OTHER: &str = "fedcba9876543210fedcba9876543210";

fn server(
    store: &Arc<dyn crate::store::Store>,
    clock: &Arc<ManualClock>,
    id: &str,
) -> Result<Arc<CaManager>, CaError> {
    start_as(
        store.clone(),
        Arc::new(MemoryKeyManager::default()),
        clock.clone(),
        None,
        crate::key_manager::KeyType::EcP256,
        id,
    )
}

fn ca_cert(m: &CaManager) -> Vec<u8> {
    m.active().chain()[0].clone()
}

#[test]
fn item2_two_servers_on_one_store_each_keep_their_own_ca() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::ca::testing::store(dir.path());
    let clock = crate::ca::testing::clock();
    let a = server(&store, &clock, INSTANCE_ID).unwrap();
    // Its own keys only: B cannot load A's keys (another disk).
    let b = server(&store, &clock, OTHER).expect("a second server on the same store starts");
    assert_ne!(a.active().serial_hex(), b.active().serial_hex());
    a.tick().unwrap();
    for m in [&a, &b] {
        let bundle = m.bundle();
        assert!(bundle.x509_authorities.contains(&ca_cert(&a)), "A's CA");
        assert!(bundle.x509_authorities.contains(&ca_cert(&b)), "B's CA");
        assert!(
            bundle
                .jwt_authorities
                .iter()
                .any(|k| k.kid == a.jwt_active().kid())
                && bundle
                    .jwt_authorities
                    .iter()
                    .any(|k| k.kid == b.jwt_active().kid()),
            "both JWT keys"
        );
    }
    let servers = store.list_servers().unwrap();
    assert_eq!(servers.len(), 2);
    for r in &servers {
        assert_eq!(
            r.journal.slots.len(),
            1,
            "{}: its own slot only",
            r.instance_id
        );
    }
    // Each rotates its own CA: A's prepare leaves B's journal alone.
    let before = store.get_server(OTHER).unwrap().unwrap().journal;
    a.force_prepare().unwrap();
    assert_eq!(store.get_server(OTHER).unwrap().unwrap().journal, before);
    b.tick().unwrap();
    assert_eq!(
        b.bundle().x509_authorities.len(),
        3,
        "B publishes A's prepared CA"
    );
}

#[test]
fn item4_forget_refuses_self_and_recent_and_keeps_cas_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::ca::testing::store(dir.path());
    let clock = crate::ca::testing::clock();
    let t0 = clock.now();
    let a = server(&store, &clock, INSTANCE_ID).unwrap();
    let b = server(&store, &clock, OTHER).unwrap();
    let b_ca = ca_cert(&b);
    drop(b);
    let e = refused(a.forget_server(INSTANCE_ID, true));
    assert!(e.contains("this server"), "{e}");
    let e = refused(a.forget_server(OTHER, false));
    assert!(e.contains("--force") && e.contains(OTHER), "{e}");
    // Stale after 60 s without a heartbeat: no --force needed.
    clock.set(t0 + Duration::from_secs(61));
    a.tick().unwrap();
    let rec = a.forget_server(OTHER, false).unwrap();
    assert!(rec.forgotten_at.is_some());
    a.tick().unwrap();
    assert!(
        a.bundle().x509_authorities.contains(&b_ca),
        "kept until it expires"
    );
    // Just before B's CA expires it is still there; after, it and B's
    // record are gone (its JWT key retired too).
    clock.set(t0 + TTL - Duration::from_secs(5));
    a.tick().unwrap();
    assert!(a.bundle().x509_authorities.contains(&b_ca), "never earlier");
    clock.set(t0 + TTL + TTL / 6 + Duration::from_secs(5));
    a.tick().unwrap();
    a.tick().unwrap();
    assert!(
        !a.bundle().x509_authorities.contains(&b_ca),
        "gone after expiry"
    );
    assert!(store.get_server(OTHER).unwrap().is_none(), "record removed");
}

#[test]
fn item2_sled_journal_written_before_instances_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(MemoryKeyManager::default());
    let clock = crate::ca::testing::clock();
    let m = crate::ca::testing::start(dir.path(), keys.clone(), clock.clone());
    let journal = m.slots.journal().unwrap();
    let serial = m.active().serial_hex().to_string();
    drop(m);
    // The same journal as the single row of an older store.
    let old = tempfile::tempdir().unwrap();
    let store = crate::ca::testing::store(old.path());
    store
        .put_ca_journal(&crate::store::CaJournal {
            version: 0,
            ..journal
        })
        .unwrap();
    drop(store);
    let m = crate::ca::testing::start(old.path(), keys, clock);
    assert_eq!(
        m.active().serial_hex(),
        serial,
        "the same CA, not a new one"
    );
}
