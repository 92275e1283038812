//! The own trust bundle when several servers share the store (issue 17):
//! the union of every server's published X.509 CAs and JWT keys, with one
//! sequence. Each server recomputes it after every change of its own
//! journal and on every tick, and writes it with compare-and-swap on the
//! stored sequence ([`publish`]): it reads the stored bundle first, then
//! every server record, and writes only if the bundle is still the one it
//! read, else starts over. So when two servers change their journals at
//! once, the later write has seen both journals (no lost update).
//!
//! A server's CAs stay in the union until they expire, also after `server
//! forget` (never earlier: SVIDs they signed may still be valid); other
//! servers' JWT keys stay until their retirement time (the end of the
//! tokens they signed). Under an upstream CA the X.509 part is the
//! upstream's anchors, as for one server (all servers share the upstream).

use sigil_proto::TrustDomain;

use super::published::slot_ski;
use super::rotation::Rotating;
use crate::store::{
    BundleRecord, CaJournal, CaSlot, JwtAuthority, ServerRecord, Store, StoreError, StoreResult,
};

/// How often [`publish`] starts over after losing a race before it gives up.
const ATTEMPTS: usize = 64;

/// The bundle content of several journals (the sequence is the store's).
/// `own` is the calling server's journal: all of its JWT keys are listed,
/// as with one server (its rotation drops them); the JWT keys of the
/// `others` only until they retire (`max_jwt_ttl` after signing ends).
pub fn union_of(
    td: &TrustDomain,
    own: &CaJournal,
    others: &[&CaJournal],
    upstream_anchors: Option<Vec<Vec<u8>>>,
    now: i64,
    max_jwt_ttl: i64,
) -> BundleRecord {
    let all: Vec<&CaJournal> = std::iter::once(own).chain(others.iter().copied()).collect();
    let x509_authorities = match upstream_anchors {
        Some(a) => a,
        None => {
            let mut slots: Vec<&CaSlot> = all
                .iter()
                .flat_map(|j| j.slots.iter())
                .filter(|s| s.not_after > now)
                .collect();
            slots.sort_by_key(|s| (s.not_before, s.serial.clone()));
            let mut out: Vec<Vec<u8>> = Vec::new();
            for c in slots.into_iter().filter_map(|s| s.cert_chain.first()) {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
            out
        }
    };
    let tainted_key_ids = all
        .iter()
        .flat_map(|j| j.slots.iter())
        .filter(|s| s.tainted)
        .filter_map(slot_ski)
        .collect();
    let mut jwt: Vec<(bool, &crate::store::JwtSlot)> = own
        .jwt_slots
        .iter()
        .map(|s| (true, s))
        .chain(
            others
                .iter()
                .flat_map(|j| j.jwt_slots.iter())
                .map(|s| (false, s)),
        )
        .filter(|(mine, s)| *mine || s.retire_at(max_jwt_ttl) > now)
        .collect();
    jwt.sort_by_key(|(_, s)| (s.not_before, s.kid.clone()));
    let jwt_authorities = jwt
        .iter()
        .map(|(_, s)| JwtAuthority {
            kid: s.kid.clone(),
            public_key: s.public_key.clone(),
            expires_at: s.retire_at(max_jwt_ttl),
        })
        .collect();
    let tainted_jwt_key_ids = jwt
        .iter()
        .filter(|(_, s)| s.tainted)
        .map(|(_, s)| s.kid.clone())
        .collect();
    BundleRecord {
        trust_domain: td.clone(),
        x509_authorities,
        jwt_authorities,
        tainted_key_ids,
        tainted_jwt_key_ids,
        sequence: 0,
    }
}

/// Whether a forgotten server's record may go: nothing of it is in the
/// bundle any more (every CA expired, every JWT key retired).
pub fn nothing_left(rec: &ServerRecord, now: i64, max_jwt_ttl: i64) -> bool {
    rec.journal.slots.iter().all(|s| s.not_after <= now)
        && rec
            .journal
            .jwt_slots
            .iter()
            .all(|s| s.retire_at(max_jwt_ttl) <= now)
}

/// Writes the bundle of trust domain `td` that `compute` makes of every
/// server record, with compare-and-swap on the stored sequence (see the
/// file comment); returns the bundle as stored.
pub fn publish(
    store: &dyn Store,
    td: &TrustDomain,
    compute: &dyn Fn(&[ServerRecord]) -> BundleRecord,
) -> StoreResult<BundleRecord> {
    for _ in 0..ATTEMPTS {
        // The bundle first, then the journals: a journal written after
        // this read is either seen below or makes the swap fail.
        let current = store.get_bundle(td)?;
        let servers = store.list_servers()?;
        let want = compute(&servers);
        if let Some(c) = &current
            && same_content(c, &want)
        {
            return Ok(c.clone());
        }
        match store.swap_bundle(current.map(|c| c.sequence), want) {
            Ok(b) => return Ok(b),
            Err(StoreError::Changed { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Io(format!(
        "the bundle of {td} changed concurrently {ATTEMPTS} times in a row while this server \
         recomputed it; it is retried at the next tick"
    )))
}

/// Equal authorities and taints (the sequence aside).
pub fn same_content(a: &BundleRecord, b: &BundleRecord) -> bool {
    a.x509_authorities == b.x509_authorities
        && a.tainted_key_ids == b.tainted_key_ids
        && a.jwt_authorities == b.jwt_authorities
        && a.tainted_jwt_key_ids == b.tainted_jwt_key_ids
}
