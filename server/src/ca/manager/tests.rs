//! The CA manager's unit tests: publication before signing, and each
//! rotation step (prepare, activate, drop, taint, revoke, restart) driven
//! by a manual clock.

use super::*;
use crate::ca::testing::{MIN_PUBLISH, TTL, manager, start};
use crate::key_manager::memory::MemoryKeyManager;
use sigil_proto::clock::Clock;
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
    m.force_activate(true).unwrap();
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

// Rotation, step by step, driven by the manual clock (what
// tests/tests/ca_rotation.rs checks in real time).

fn at(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap())
}

fn slot_in(st: &CaStatus, state: SlotState) -> Option<CaSlot> {
    st.slots.iter().find(|s| s.state == state).cloned()
}

fn in_bundle(m: &CaManager, slot: &CaSlot) -> bool {
    m.bundle().x509_authorities.contains(&slot.cert_chain[0])
}

/// The authorityKeyIdentifier of a leaf.
fn aki(leaf: &[u8]) -> Vec<u8> {
    let (_, c) = x509_parser::parse_x509_certificate(leaf).unwrap();
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(k) => {
                k.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .unwrap()
}

#[test]
fn prepare_at_half_life_published_at_once_activate_at_five_sixths_drop_after_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (m, clock) = manager(dir.path());
    let st = m.status().unwrap();
    let first = slot_in(&st, SlotState::Active).unwrap();
    let life = first.not_after - first.not_before;
    let t = st.timeline.unwrap();
    assert_eq!(t.prepare_at, first.not_before + life / 2);
    assert_eq!(t.activate_at, first.not_before + life * 5 / 6);

    // Just before ½: nothing to do.
    clock.set(at(t.prepare_at - 1));
    m.tick().unwrap();
    assert_eq!(m.status().unwrap().slots.len(), 1);
    assert_eq!(m.bundle().x509_authorities.len(), 1);

    // At ½: prepared, in the bundle at once, not signing.
    clock.set(at(t.prepare_at));
    m.tick().unwrap();
    let st = m.status().unwrap();
    let next = slot_in(&st, SlotState::Prepared).expect("prepared at 1/2");
    assert!(in_bundle(&m, &next), "a prepared CA is published at once");
    assert!(st.in_bundle.contains(&next.serial));
    assert_eq!(m.active().serial_hex(), first.serial);

    // Just before 5/6: still the first CA signs.
    clock.set(at(t.activate_at - 1));
    m.tick().unwrap();
    assert_eq!(m.active().serial_hex(), first.serial);

    // At 5/6: the prepared CA signs; the first is OLD and stays published.
    clock.set(at(t.activate_at));
    m.tick().unwrap();
    let st = m.status().unwrap();
    assert_eq!(m.active().serial_hex(), next.serial);
    assert_eq!(slot_in(&st, SlotState::Old).unwrap().serial, first.serial);
    assert!(in_bundle(&m, &first), "the old CA stays until it expires");
    assert_signer_published(&m);

    // Just before the old CA expires it is still there; at expiry it goes.
    clock.set(at(first.not_after - 1));
    m.tick().unwrap();
    assert!(in_bundle(&m, &first));
    clock.set(at(first.not_after));
    m.tick().unwrap();
    let st = m.status().unwrap();
    assert!(
        !in_bundle(&m, &first),
        "dropped from the bundle after expiry"
    );
    assert!(st.slots.iter().all(|s| s.serial != first.serial));
    assert!(in_bundle(&m, &next));
    assert_signer_published(&m);
}

/// The reason an operator command was refused.
fn refused(r: Result<CaStatus, CaOpError>) -> String {
    match r {
        Err(CaOpError::Refused(m)) => m,
        other => panic!("not refused: {other:?}"),
    }
}

/// Taints `slot`; returns it as the journal now holds it.
fn taint(m: &CaManager, slot: SlotId) -> CaSlot {
    let st = m.taint(slot).unwrap();
    st.slots.into_iter().find(|s| s.slot == slot).unwrap()
}

#[test]
fn forced_prepare_and_activate_and_their_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _clock) = manager(dir.path());
    let first = m.active().serial_hex().to_string();
    assert!(refused(m.force_activate(true)).contains("no prepared CA"));
    let st = m.force_prepare().unwrap();
    let next = slot_in(&st, SlotState::Prepared).unwrap();
    assert!(in_bundle(&m, &next));
    assert!(refused(m.force_prepare()).contains("already holds a prepared CA"));
    let st = m.force_activate(true).unwrap();
    assert_eq!(m.active().serial_hex(), next.serial);
    assert_eq!(slot_in(&st, SlotState::Old).unwrap().serial, first);
    assert!(
        refused(m.force_prepare()).contains("holds the previous CA"),
        "the old CA's slot is busy until it expires"
    );
    assert_signer_published(&m);
}

#[test]
fn taint_marks_the_old_cas_svids_due_and_revoke_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(MemoryKeyManager::default());
    let clock = crate::ca::testing::clock();
    let m = start(dir.path(), keys.clone(), clock.clone());
    // An SVID signed by the first CA.
    let key = rcgen::KeyPair::generate().unwrap();
    let id = sigil_proto::SpiffeId::parse("spiffe://example.org/w").unwrap();
    let leaf = m
        .active()
        .sign_leaf(&id, &[], Duration::from_secs(600), &key, clock.now())
        .unwrap();
    let old_slot = m.active().slot();
    assert!(refused(m.taint(old_slot)).contains("holds the active CA"));
    m.force_prepare().unwrap();
    m.force_activate(true).unwrap();
    assert!(refused(m.revoke(old_slot, false)).contains("not tainted"));
    assert!(m.bundle().tainted_key_ids.is_empty());

    let seq = m.bundle().sequence;
    let old = taint(&m, old_slot);
    assert!(old.tainted);
    assert!(m.bundle().sequence > seq, "a taint is published");
    assert_eq!(
        m.bundle().tainted_key_ids,
        vec![aki(&leaf.chain[0])],
        "the SVIDs the tainted CA signed carry a tainted key id: agents renew them now"
    );
    assert!(in_bundle(&m, &old), "still trusted until revoked");

    // Self-signed: revoking removes the CA from the bundle and its key.
    m.revoke(old_slot, false).unwrap();
    assert!(!in_bundle(&m, &old));
    assert!(m.bundle().tainted_key_ids.is_empty());
    assert!(!keys.list().unwrap().contains(&old.key_id));
    assert_signer_published(&m);
}

#[test]
fn a_tainted_ca_leaves_the_bundle_once_no_svid_it_signed_can_be_valid() {
    let dir = tempfile::tempdir().unwrap();
    let (m, clock) = manager(dir.path());
    let old_slot = m.active().slot();
    m.force_prepare().unwrap();
    m.force_activate(true).unwrap();
    let old = taint(&m, old_slot);
    // Longest SVID TTL is CA TTL / 6: after that, nothing depends on it.
    clock.advance(TTL / 6 - Duration::from_secs(1));
    m.tick().unwrap();
    assert!(in_bundle(&m, &old));
    clock.advance(Duration::from_secs(1));
    m.tick().unwrap();
    assert!(!in_bundle(&m, &old));
    assert!(old.not_after > unix(clock.now()), "before its own expiry");
}

#[test]
fn a_restart_from_the_journal_gives_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(MemoryKeyManager::default());
    let clock = crate::ca::testing::clock();
    let m = start(dir.path(), keys.clone(), clock.clone());
    let old_slot = m.active().slot();
    m.force_prepare().unwrap();
    m.force_activate(true).unwrap();
    m.taint(old_slot).unwrap();
    m.force_prepare().unwrap_err(); // the old slot is still busy
    let before = m.status().unwrap();
    let (active, bundle) = (m.active().serial_hex().to_string(), m.bundle());
    drop(m);

    let m = start(dir.path(), keys, clock);
    let after = m.status().unwrap();
    assert_eq!(after.slots, before.slots);
    assert_eq!(after.timeline, before.timeline);
    assert_eq!(after.in_bundle, before.in_bundle);
    assert_eq!(m.active().serial_hex(), active);
    assert_eq!(m.bundle().x509_authorities, bundle.x509_authorities);
    assert_eq!(m.bundle().tainted_key_ids, bundle.tainted_key_ids);
    assert_eq!(m.bundle().sequence, bundle.sequence, "nothing re-published");
}

/// A manager start on `dir`'s store that may fail.
fn try_start(
    dir: &std::path::Path,
    keys: Arc<MemoryKeyManager>,
    clock: Arc<ManualClock>,
    activate_prepared: bool,
) -> Result<Arc<CaManager>, CaError> {
    CaManager::init(
        crate::ca::testing::store(dir),
        keys,
        None,
        CaSettings {
            trust_domain: TrustDomain::parse("example.org").unwrap(),
            key_type: KeyType::EcP256,
            jwt_key_type: KeyType::EcP256,
            ca_ttl: TTL,
            activate_prepared,
            min_publish: crate::ca::testing::MIN_PUBLISH,
            instance_id: crate::ca::testing::INSTANCE_ID.to_string(),
        },
        clock,
    )
}

#[test]
fn item4_a_missing_active_key_stops_the_start_and_offers_the_prepared_ca() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(MemoryKeyManager::default());
    let clock = crate::ca::testing::clock();
    let m = start(dir.path(), keys.clone(), clock.clone());
    let lost = m.active().serial_hex().to_string();
    let lost_key = m.status().unwrap().slots[0].key_id.clone();
    let prepared = slot_in(&m.force_prepare().unwrap(), SlotState::Prepared).unwrap();
    let journal = m.slots.store.get_ca_journal().unwrap();
    drop(m);
    keys.delete(&lost_key).unwrap();

    // No new CA: the start stops, naming the lost key and the prepared CA.
    let e = try_start(dir.path(), keys.clone(), clock.clone(), false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&lost) && e.contains("missing") && e.contains(&prepared.serial),
        "{e}"
    );
    assert!(
        e.contains("--activate-prepared") && e.contains("ca activate"),
        "{e}"
    );
    let store = crate::ca::testing::store(dir.path());
    assert_eq!(store.get_ca_journal().unwrap(), journal, "journal changed");
    let ca_keys: Vec<String> = keys
        .list()
        .unwrap()
        .into_iter()
        .filter(|k| k.starts_with("ca-"))
        .collect();
    assert_eq!(ca_keys, vec![prepared.key_id.clone()]);
    drop(store);

    // Asked to, it switches to the prepared CA (published already).
    let m = try_start(dir.path(), keys, clock, true).unwrap();
    assert_eq!(m.active().serial_hex(), prepared.serial);
    assert_signer_published(&m);
}

#[test]
fn item3_revoke_under_an_upstream_ca_is_refused_and_the_taint_stays() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(MemoryKeyManager::default());
    let clock = crate::ca::testing::clock_now();
    let up = crate::ca::testing::upstream(dir.path());
    let store = crate::ca::testing::store(dir.path());
    let m = crate::ca::testing::start_under(store, keys.clone(), clock, Some(up));
    let old_slot = m.active().slot();
    m.force_prepare().unwrap();
    m.force_activate(true).unwrap();
    let old = taint(&m, old_slot);
    let bundle = m.bundle();

    // The bundle holds the upstream root: revoking here would remove no
    // trust, so it is refused, saying what to do instead.
    let e = refused(m.revoke(old_slot, false));
    assert!(e.contains("upstream") && e.contains(&old.serial), "{e}");
    assert!(e.contains("revoke it at the upstream CA"), "{e}");
    let st = m.status().unwrap();
    let kept = st.slots.iter().find(|s| s.slot == old_slot).unwrap();
    assert!(kept.tainted, "the taint stays, so agents re-issue");
    assert!(keys.list().unwrap().contains(&old.key_id));
    assert_eq!(m.bundle().tainted_key_ids, bundle.tainted_key_ids);
    assert!(!m.bundle().tainted_key_ids.is_empty());
}

#[test]
fn item10_activate_right_after_prepare_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let (m, clock) = manager(dir.path());
    let first = m.active().serial_hex().to_string();
    let prepared = slot_in(&m.force_prepare().unwrap(), SlotState::Prepared).unwrap();

    // Published for 0s, then 1s short of the minimum: refused, naming the
    // minimum and --force; nothing changes.
    for wait in [Duration::ZERO, MIN_PUBLISH - Duration::from_secs(1)] {
        clock.advance(wait);
        let e = refused(m.force_activate(false));
        assert!(
            e.contains("the minimum is 10m") && e.contains("--force"),
            "{e}"
        );
        assert!(e.contains(&prepared.serial), "{e}");
        assert_eq!(m.active().serial_hex(), first);
    }
    // Forced: activated at once.
    m.force_activate(true).unwrap();
    assert_eq!(m.active().serial_hex(), prepared.serial);
    assert_signer_published(&m);

    // Unforced after the minimum: activated.
    let dir = tempfile::tempdir().unwrap();
    let (m, clock) = manager(dir.path());
    let prepared = slot_in(&m.force_prepare().unwrap(), SlotState::Prepared).unwrap();
    clock.advance(MIN_PUBLISH);
    m.force_activate(false).unwrap();
    assert_eq!(m.active().serial_hex(), prepared.serial);
}

mod jwt;
