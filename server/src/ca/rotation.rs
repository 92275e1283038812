//! The CA rotation plan, as pure functions of the journal and a clock
//! reading. A self-signed CA is PREPARED (and published in the bundle) when
//! the active one has lived 1/2 of its life and ACTIVATED at 5/6; the
//! previous one becomes OLD and stays in the bundle until it expires. With
//! SVID TTLs capped at CA TTL / 6, every SVID the old CA signed expires no
//! later than the old CA itself, and every peer has trusted the new CA for
//! 1/3 of a lifetime before the first SVID it signs exists.

use crate::store::{CaJournal, CaSlot, SlotId, SlotState};

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

/// The timeline of an active CA.
pub fn timeline(active: &CaSlot) -> Timeline {
    let life = (active.not_after - active.not_before).max(0);
    Timeline {
        prepare_at: active.not_before + life / 2,
        activate_at: active.not_before + life * 5 / 6,
    }
}

/// True when an inactive slot should leave the journal (and the bundle).
pub fn droppable(slot: &CaSlot, now: i64, max_svid_ttl: i64) -> bool {
    slot.state != SlotState::Active
        && (now >= slot.not_after
            || slot
                .tainted_at
                .is_some_and(|t| slot.tainted && now >= t.saturating_add(max_svid_ttl)))
}

/// The next step due at `now`, if any. Apply it and ask again.
pub fn next_step(journal: &CaJournal, now: i64, max_svid_ttl: i64) -> Option<Step> {
    let Some(active) = journal.active() else {
        return Some(Step::MintActive);
    };
    if now >= active.not_after {
        return Some(Step::MintActive);
    }
    if let Some(s) = journal
        .slots
        .iter()
        .find(|s| droppable(s, now, max_svid_ttl))
    {
        return Some(Step::Drop(s.slot));
    }
    let t = timeline(active);
    if let Some(p) = journal.prepared() {
        return (now >= t.activate_at).then_some(Step::Activate(p.slot));
    }
    let other = active.slot.other();
    // The other slot still holds the previous CA: wait for it to expire.
    (now >= t.prepare_at && journal.slot(other).is_none()).then_some(Step::Prepare(other))
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
        CaJournal { version: 1, slots }
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
