use super::*;
use crate::ca::testing::{TTL, manager, start};
use crate::key_manager::memory::MemoryKeyManager;
use sigil_proto::clock::ManualClock;
use std::time::SystemTime;

/// The invariant: the CA that signs is in the published bundle.
fn assert_signer_published(m: &CaManager) {
    let active = m.active();
    assert!(
        m.bundle().x509_authorities.contains(&active.chain()[0]),
        "CA {} signs but is not in bundle sequence {}",
        active.serial_hex(),
        m.bundle().sequence
    );
}

#[test]
fn a_ca_is_published_before_it_signs_at_start_by_operator_and_by_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let (m, clock) = manager(dir.path());
    assert_signer_published(&m);
    let first = m.active().serial_hex().to_string();

    // Operator: prepare (published at once, not signing), then activate.
    let seq = m.bundle().sequence;
    m.force_prepare().unwrap();
    assert!(m.bundle().sequence > seq, "prepare publishes");
    assert_eq!(m.bundle().x509_authorities.len(), 2);
    assert_eq!(m.active().serial_hex(), first, "prepared is not signing");
    m.force_activate().unwrap();
    assert_ne!(m.active().serial_hex(), first);
    assert_signer_published(&m);

    // Rotation by the clock, one tick a minute through two CA lives:
    // whenever the signer changes it is already in the bundle.
    let mut signers = vec![m.active().serial_hex().to_string()];
    for _ in 0..(2 * TTL.as_secs() / 60) {
        clock.advance(Duration::from_secs(60));
        m.tick().unwrap();
        assert_signer_published(&m);
        let s = m.active().serial_hex().to_string();
        if signers.last() != Some(&s) {
            signers.push(s);
        }
    }
    assert!(signers.len() >= 3, "rotated: {signers:?}");
}

#[test]
fn a_restart_after_expiry_publishes_the_new_ca_before_it_signs() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(MemoryKeyManager::default());
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let m = start(dir.path(), keys.clone(), clock.clone());
    let old = m.active().serial_hex().to_string();
    drop(m);
    // Down for longer than a CA's life: at start the CA is minted anew.
    clock.advance(TTL * 3);
    let m = start(dir.path(), keys, clock);
    assert_ne!(m.active().serial_hex(), old);
    assert_signer_published(&m);
}

#[test]
fn an_unpublished_ca_is_never_installed() {
    let dir = tempfile::tempdir().unwrap();
    let (m, clock) = manager(dir.path());
    let before = m.active().serial_hex().to_string();
    let now = unix(clock.now());
    let slot = m.active().slot().other();
    let (_, unpublished) = m.slots.mint(slot, SlotState::Prepared, now).unwrap();
    let serial = unpublished.serial_hex().to_string();
    match m.install(Some(unpublished)) {
        Err(CaError::NotPublished { serial: s }) => assert_eq!(s, serial),
        other => panic!("installed an unpublished CA: {other:?}"),
    }
    assert_eq!(m.active().serial_hex(), before, "the old signer stays");
}
