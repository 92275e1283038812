//! The CA rotation plan, as pure functions of the journal and a clock
//! reading. A self-signed CA is PREPARED (and published in the bundle) when
//! the active one has lived 1/2 of its life and ACTIVATED at 5/6; the
//! previous one becomes OLD and stays in the bundle until it expires. With
//! SVID TTLs capped at CA TTL / 6, every SVID the old CA signed expires no
//! later than the old CA itself, and every peer has trusted the new CA for
//! 1/3 of a lifetime before the first SVID it signs exists. JWT signing keys
//! follow the same plan ([`next_jwt_step`]), except that an old JWT key stays
//! published until its own expiry plus the longest JWT-SVID TTL, since a
//! token's `exp` is not bounded by the key the way a leaf is by its CA.

use crate::store::{CaJournal, CaSlot, JwtSlot, SlotId, SlotState};

/// One change to make to the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// There is no usable active CA (first start, or it expired while the
    /// server was down): mint one and activate it at once.
    MintActive,
    /// Mint the next CA into this slot and publish it.
    Prepare(SlotId),
    /// Make the prepared CA in this slot the signing one.
    Activate(SlotId),
    /// Remove this inactive slot: expired, or tainted long enough ago that
    /// no valid SVID can depend on it.
    Drop(SlotId),
}

/// When the active CA's successor is prepared and activated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    pub prepare_at: i64,
    pub activate_at: i64,
}

/// What the plan reads of a slot (X.509 CA or JWT key).
pub trait Rotating {
    fn id(&self) -> SlotId;
    fn state(&self) -> SlotState;
    fn not_before(&self) -> i64;
    fn not_after(&self) -> i64;
    /// Unix seconds of the taint, if tainted.
    fn tainted_since(&self) -> Option<i64>;
    /// When nothing it signed can still be valid, given the longest TTL of
    /// what it signs.
    fn retire_at(&self, max_svid_ttl: i64) -> i64;
}

impl Rotating for CaSlot {
    fn id(&self) -> SlotId {
        self.slot
    }
    fn state(&self) -> SlotState {
        self.state
    }
    fn not_before(&self) -> i64 {
        self.not_before
    }
    fn not_after(&self) -> i64 {
        self.not_after
    }
    fn tainted_since(&self) -> Option<i64> {
        self.tainted_at.filter(|_| self.tainted)
    }
    /// A leaf never outlives its CA certificate.
    fn retire_at(&self, _max_svid_ttl: i64) -> i64 {
        self.not_after
    }
}

impl Rotating for JwtSlot {
    fn id(&self) -> SlotId {
        self.slot
    }
    fn state(&self) -> SlotState {
        self.state
    }
    fn not_before(&self) -> i64 {
        self.not_before
    }
    fn not_after(&self) -> i64 {
        self.not_after
    }
    fn tainted_since(&self) -> Option<i64> {
        self.tainted_at.filter(|_| self.tainted)
    }
    /// A token signed just before `not_after` lives one JWT-SVID TTL longer.
    fn retire_at(&self, max_svid_ttl: i64) -> i64 {
        self.not_after.saturating_add(max_svid_ttl)
    }
}

/// The timeline of an active CA (or JWT key).
pub fn timeline(active: &impl Rotating) -> Timeline {
    let (nb, na) = (active.not_before(), active.not_after());
    let life = (na - nb).max(0);
    Timeline {
        prepare_at: nb + life / 2,
        activate_at: nb + life * 5 / 6,
    }
}

/// True when an inactive slot should leave the journal (and the bundle).
pub fn droppable(slot: &impl Rotating, now: i64, max_svid_ttl: i64) -> bool {
    slot.state() != SlotState::Active
        && (now >= slot.retire_at(max_svid_ttl)
            || slot
                .tainted_since()
                .is_some_and(|t| now >= t.saturating_add(max_svid_ttl)))
}

/// The next step due at `now`, if any. Apply it and ask again.
pub fn next_step(journal: &CaJournal, now: i64, max_svid_ttl: i64) -> Option<Step> {
    next_step_of(&journal.slots, now, max_svid_ttl)
}

/// The next JWT key step due at `now`; `max_jwt_ttl` is the longest
/// JWT-SVID TTL.
pub fn next_jwt_step(journal: &CaJournal, now: i64, max_jwt_ttl: i64) -> Option<Step> {
    next_step_of(&journal.jwt_slots, now, max_jwt_ttl)
}

fn next_step_of<S: Rotating>(slots: &[S], now: i64, max_svid_ttl: i64) -> Option<Step> {
    let find = |st: SlotState| slots.iter().find(|s| s.state() == st);
    let Some(active) = find(SlotState::Active) else {
        return Some(Step::MintActive);
    };
    if now >= active.not_after() {
        return Some(Step::MintActive);
    }
    if let Some(s) = slots.iter().find(|s| droppable(*s, now, max_svid_ttl)) {
        return Some(Step::Drop(s.id()));
    }
    let t = timeline(active);
    if let Some(p) = find(SlotState::Prepared) {
        return (now >= t.activate_at).then_some(Step::Activate(p.id()));
    }
    let other = active.id().other();
    // The other slot still holds the previous CA: wait for it to retire.
    (now >= t.prepare_at && !slots.iter().any(|s| s.id() == other)).then_some(Step::Prepare(other))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: SlotId, state: SlotState, nb: i64, na: i64) -> CaSlot {
        CaSlot {
            slot: id,
            state,
            key_id: format!("ca-{}", id.name()),
            cert_chain: vec![],
            serial: id.name().into(),
            not_before: nb,
            not_after: na,
            tainted: false,
            tainted_at: None,
        }
    }

    fn journal(slots: Vec<CaSlot>) -> CaJournal {
        CaJournal {
            version: 1,
            slots,
            ..Default::default()
        }
    }

    /// Applies steps like the manager does, minting CAs with `ttl`.
    fn apply(j: &mut CaJournal, step: Step, now: i64, ttl: i64) {
        match step {
            Step::MintActive => {
                let id = j.active().map_or(SlotId::A, |a| a.slot.other());
                for s in &mut j.slots {
                    if s.state == SlotState::Active {
                        s.state = SlotState::Old;
                    }
                }
                j.slots.retain(|s| s.slot != id);
                j.slots.push(slot(id, SlotState::Active, now, now + ttl));
            }
            Step::Prepare(id) => j.slots.push(slot(id, SlotState::Prepared, now, now + ttl)),
            Step::Activate(id) => {
                for s in &mut j.slots {
                    if s.state == SlotState::Active {
                        s.state = SlotState::Old;
                    } else if s.slot == id {
                        s.state = SlotState::Active;
                    }
                }
            }
            Step::Drop(id) => j.slots.retain(|s| s.slot != id),
        }
    }

    #[test]
    fn fresh_and_expired_journals_mint_an_active_ca() {
        assert_eq!(
            next_step(&CaJournal::default(), 0, 10),
            Some(Step::MintActive)
        );
        let j = journal(vec![slot(SlotId::A, SlotState::Active, 0, 60)]);
        assert_eq!(next_step(&j, 60, 10), Some(Step::MintActive));
    }

    #[test]
    fn prepare_at_half_activate_at_five_sixths() {
        let j = journal(vec![slot(SlotId::A, SlotState::Active, 0, 60)]);
        assert_eq!(
            timeline(j.active().unwrap()),
            Timeline {
                prepare_at: 30,
                activate_at: 50
            }
        );
        assert_eq!(next_step(&j, 29, 10), None);
        assert_eq!(next_step(&j, 30, 10), Some(Step::Prepare(SlotId::B)));
        let mut j = j;
        j.slots.push(slot(SlotId::B, SlotState::Prepared, 30, 90));
        assert_eq!(next_step(&j, 49, 10), None);
        assert_eq!(next_step(&j, 50, 10), Some(Step::Activate(SlotId::B)));
    }

    #[test]
    fn the_old_ca_stays_until_it_expires_and_blocks_the_next_prepare() {
        let j = journal(vec![
            slot(SlotId::A, SlotState::Old, 0, 60),
            slot(SlotId::B, SlotState::Active, 30, 90),
        ]);
        assert_eq!(
            next_step(&j, 59, 10),
            None,
            "old CA still valid, B not yet at 1/2"
        );
        assert_eq!(next_step(&j, 60, 10), Some(Step::Drop(SlotId::A)));
    }

    #[test]
    fn tainted_inactive_ca_is_dropped_after_the_longest_svid() {
        let mut old = slot(SlotId::A, SlotState::Old, 0, 600);
        old.tainted = true;
        old.tainted_at = Some(100);
        let j = journal(vec![old, slot(SlotId::B, SlotState::Active, 50, 650)]);
        assert_eq!(next_step(&j, 109, 10), None);
        assert_eq!(next_step(&j, 110, 10), Some(Step::Drop(SlotId::A)));
    }

    /// Over many lifetimes: one active CA at every moment, each CA is
    /// published at least 1/3 of a lifetime before it starts signing, and the
    /// active CA always has at least the longest SVID TTL left to live.
    #[test]
    fn simulated_lifetimes_keep_every_invariant() {
        let ttl = 60;
        let max_svid = ttl / 6;
        let mut j = CaJournal::default();
        let mut prepared_at: std::collections::HashMap<SlotId, i64> = Default::default();
        let mut activations = 0;
        for now in 0..(ttl * 10) {
            while let Some(step) = next_step(&j, now, max_svid) {
                match step {
                    Step::Prepare(id) => {
                        prepared_at.insert(id, now);
                    }
                    Step::Activate(id) => {
                        activations += 1;
                        assert!(
                            now - prepared_at[&id] >= ttl / 3,
                            "published too late at {now}"
                        );
                    }
                    Step::MintActive => assert_eq!(now, 0, "no emergency mint in steady state"),
                    Step::Drop(_) => {}
                }
                apply(&mut j, step, now, ttl);
            }
            let active: Vec<&CaSlot> = j
                .slots
                .iter()
                .filter(|s| s.state == SlotState::Active)
                .collect();
            assert_eq!(active.len(), 1, "exactly one active CA at {now}");
            assert!(
                active[0].not_after - now >= max_svid,
                "active CA too close to expiry at {now}"
            );
            assert!(j.slots.len() <= 2);
        }
        assert!(
            activations >= 8,
            "rotated {activations} times in 10 lifetimes"
        );
    }
}
