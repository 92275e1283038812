//! Issue 15 item 1: the JWT key slots of the CA journal, driven by a manual
//! clock: prepared (and published) at 1/2 of the active key's life,
//! activated at 5/6, the old key published until its expiry plus the
//! longest JWT-SVID TTL; a journal without JWT slots gets a key at start;
//! a `kid` is never one already used.

use super::*;
use crate::ca::manager::jwt_steps::fresh_kid;
use crate::ca::testing::{TTL, manager, start};
use crate::key_manager::memory::MemoryKeyManager;

fn kids(m: &CaManager) -> Vec<String> {
    m.bundle()
        .jwt_authorities
        .iter()
        .map(|a| a.kid.clone())
        .collect()
}

/// Advances to `at` (seconds after the manager's start) and ticks.
fn tick_at(m: &CaManager, clock: &ManualClock, start: SystemTime, at: u64) {
    clock.set(start + Duration::from_secs(at));
    m.tick().unwrap();
}

#[test]
fn i15_1_jwt_key_rotates_on_the_ca_thresholds_and_outlives_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (m, clock) = manager(dir.path());
    let t0 = clock.now();
    let ttl = TTL.as_secs();
    let first = m.jwt_active().kid().to_string();
    assert_eq!(kids(&m), vec![first.clone()], "published at start");

    tick_at(&m, &clock, t0, ttl / 2 - 1);
    assert_eq!(kids(&m).len(), 1, "nothing prepared before 1/2");
    tick_at(&m, &clock, t0, ttl / 2);
    let ks = kids(&m);
    assert_eq!(ks.len(), 2, "prepared and published at 1/2: {ks:?}");
    let next = ks.iter().find(|k| **k != first).unwrap().clone();
    assert_eq!(
        m.jwt_active().kid(),
        first,
        "the prepared key does not sign"
    );
    let seq = m.bundle().sequence;

    tick_at(&m, &clock, t0, ttl * 5 / 6 - 1);
    assert_eq!(m.jwt_active().kid(), first);
    tick_at(&m, &clock, t0, ttl * 5 / 6);
    assert_eq!(m.jwt_active().kid(), next, "activated at 5/6");
    assert!(m.bundle().sequence >= seq);

    // A token the old key signs just before its expiry lives up to the
    // longest JWT-SVID TTL (ca_ttl / 6) longer: the key stays published
    // until not_after + ca_ttl / 6.
    let max = ttl / 6;
    let old = m.bundle().jwt_authorities[0].clone();
    assert_eq!(old.kid, first);
    assert_eq!(old.expires_at, unix(t0) + ttl as i64 + max as i64);
    tick_at(&m, &clock, t0, ttl);
    assert!(
        kids(&m).contains(&first),
        "an X.509 CA leaves at its expiry, the JWT key stays"
    );
    tick_at(&m, &clock, t0, ttl + max - 1);
    assert!(kids(&m).contains(&first));
    tick_at(&m, &clock, t0, ttl + max);
    let ks = kids(&m);
    assert!(
        !ks.contains(&first),
        "dropped once no token it signed is valid"
    );
    assert_eq!(ks[0], next, "{ks:?}");
    assert_eq!(
        ks.len(),
        2,
        "the next key's successor waited for the slot: {ks:?}"
    );
}

#[test]
fn i15_1_a_journal_without_jwt_slots_gets_an_active_published_key_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(MemoryKeyManager::default());
    let clock = crate::ca::testing::clock();
    let m = start(dir.path(), keys.clone(), clock.clone());
    // An existing deployment: the journal has CA slots only.
    let mut j = m.slots.journal().unwrap();
    assert_eq!(j.jwt_slots.len(), 1);
    let ca_before = j.slots.clone();
    j.jwt_slots.clear();
    m.slots.put_journal(&j).unwrap();
    drop(m);
    let m = start(dir.path(), keys, clock);
    let j = m.slots.journal().unwrap();
    assert_eq!(j.slots, ca_before, "the CA slots are untouched");
    let active = j.jwt_active().expect("an active JWT key");
    assert_eq!(active.kid, m.jwt_active().kid());
    assert!(kids(&m).contains(&active.kid), "published before it signs");
}

#[test]
fn i15_1_kid_is_random_and_never_one_the_journal_or_bundle_has() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = manager(dir.path());
    let j = m.slots.journal().unwrap();
    let used = j.jwt_slots[0].kid.clone();
    let used_bytes: [u8; 16] = hex::decode(&used).unwrap().try_into().unwrap();
    let published = vec!["00".repeat(16)];
    // The first two draws collide (journal, then bundle); the third is new.
    let mut draws = vec![[7u8; 16], [0u8; 16], used_bytes];
    let kid = fresh_kid(&j, &published, || Ok(draws.pop().unwrap())).unwrap();
    assert_eq!(
        kid,
        hex::encode([7u8; 16]),
        "skips the journal's and the bundle's kid"
    );
    // Always colliding: refused rather than reused.
    assert!(fresh_kid(&j, &published, || Ok(used_bytes)).is_err());
    assert_eq!(used.len(), 32, "128 bits, hex");
}
