//! The JWT signing key steps of the CA journal: the same plan as the X.509
//! slots ([`rotation::next_jwt_step`]), one journal write (compare-and-swap)
//! per step, keys generated before the journal names them and deleted after
//! it stops naming them. JWT keys are always Sigil's own (an upstream CA
//! signs no JWT key), kept by the key manager under `jwt-<slot>-<kid…>`.

use tracing::{info, warn};

use super::Slots;
use crate::ca::jwt::JwtSigner;
use crate::ca::rotation::{self, Step};
use crate::ca::startup::JWT_KEY_PREFIX;
use crate::ca::{CaError, random16};
use crate::key_manager::{KeyError, KeyManager};
use crate::store::{CaJournal, JwtSlot, SlotId, SlotState};

/// Most JWT steps applied in one call.
const MAX_STEPS: usize = 8;

impl Slots {
    /// The longest JWT-SVID TTL (ca_ttl / 6, the rule the issuer enforces).
    pub(super) fn max_jwt_ttl(&self) -> i64 {
        self.max_svid_ttl()
    }

    /// Applies every due JWT key step; returns the journal and the new
    /// signing key if it changed.
    pub(super) fn run_jwt_due(
        &self,
        mut journal: CaJournal,
        now: i64,
    ) -> Result<(CaJournal, Option<JwtSigner>), CaError> {
        let mut signer = None;
        for _ in 0..MAX_STEPS {
            let Some(step) = rotation::next_jwt_step(&journal, now, self.max_jwt_ttl()) else {
                break;
            };
            let (j, s) = self.apply_jwt(journal, step, now)?;
            journal = j;
            signer = s.or(signer);
        }
        Ok((journal, signer))
    }

    /// Applies one JWT key step: one journal write.
    pub(super) fn apply_jwt(
        &self,
        mut journal: CaJournal,
        step: Step,
        now: i64,
    ) -> Result<(CaJournal, Option<JwtSigner>), CaError> {
        match step {
            Step::MintActive => {
                let slot = journal.jwt_active().map_or(SlotId::A, |s| s.slot.other());
                for s in &mut journal.jwt_slots {
                    if s.state == SlotState::Active {
                        s.state = SlotState::Old;
                    }
                }
                let (written, signer) = self.mint_into(journal, slot, SlotState::Active, now)?;
                info!(
                    slot = slot.name(),
                    kid = signer.kid(),
                    alg = signer.alg().name(),
                    "JWT key activated"
                );
                crate::metrics::ca_event("jwt_activate");
                Ok((written, Some(signer)))
            }
            Step::Prepare(slot) => {
                let (written, signer) = self.mint_into(journal, slot, SlotState::Prepared, now)?;
                info!(
                    slot = slot.name(),
                    kid = signer.kid(),
                    "JWT key prepared and published"
                );
                crate::metrics::ca_event("jwt_prepare");
                Ok((written, None))
            }
            Step::Activate(slot) => {
                let next = journal.jwt_slot(slot).cloned().ok_or_else(|| {
                    CaError::Start(format!("JWT key slot {} is empty", slot.name()))
                })?;
                let signer = load_jwt_signer(self.keys.as_ref(), &next)?;
                for s in &mut journal.jwt_slots {
                    if s.state == SlotState::Active {
                        s.state = SlotState::Old;
                    } else if s.slot == slot {
                        s.state = SlotState::Active;
                    }
                }
                let written = self.write_jwt(journal, &[])?;
                info!(slot = slot.name(), kid = signer.kid(), "JWT key activated");
                crate::metrics::ca_event("jwt_activate");
                Ok((written, Some(signer)))
            }
            Step::Drop(slot) => {
                let gone: Vec<JwtSlot> = journal
                    .jwt_slots
                    .iter()
                    .filter(|s| s.slot == slot)
                    .cloned()
                    .collect();
                journal.jwt_slots.retain(|s| s.slot != slot);
                let written = self.write_jwt(journal, &gone)?;
                for g in &gone {
                    info!(slot = slot.name(), kid = %g.kid, "JWT key dropped from the bundle");
                    crate::metrics::ca_event("jwt_drop");
                }
                Ok((written, None))
            }
        }
    }

    /// Mints a key into `slot` (replacing what it held) and writes the
    /// journal.
    fn mint_into(
        &self,
        mut journal: CaJournal,
        slot: SlotId,
        state: SlotState,
        now: i64,
    ) -> Result<(CaJournal, JwtSigner), CaError> {
        let (new, signer) = self.mint_jwt(&journal, slot, state, now)?;
        journal.jwt_slots.retain(|s| s.slot != slot);
        journal.jwt_slots.push(new);
        Ok((self.write_jwt(journal, &[])?, signer))
    }

    /// Writes the journal (CAS), then deletes the keys of `gone` slots and
    /// any JWT key no slot names.
    pub(super) fn write_jwt(
        &self,
        mut journal: CaJournal,
        gone: &[JwtSlot],
    ) -> Result<CaJournal, CaError> {
        journal.jwt_slots.sort_by_key(|s| s.slot.name());
        let written = self.put_journal(&journal)?;
        for g in gone {
            self.keys.delete(&g.key_id)?;
        }
        remove_orphan_jwt_keys(self.keys.as_ref(), &written)?;
        Ok(written)
    }

    /// Mints a JWT key into `slot`: key first (durable), then the slot. The
    /// `kid` is 128 random bits, never one the journal or bundle has used.
    fn mint_jwt(
        &self,
        journal: &CaJournal,
        slot: SlotId,
        state: SlotState,
        now: i64,
    ) -> Result<(JwtSlot, JwtSigner), CaError> {
        let kid = fresh_kid(journal, &self.published_kids()?, random16)?;
        let key_id = format!("{JWT_KEY_PREFIX}{}-{}", slot.name(), &kid[..16]);
        let ttl = i64::try_from(self.settings.ca_ttl.as_secs()).unwrap_or(i64::MAX);
        let not_after = now.saturating_add(ttl);
        let key = self.keys.generate(&key_id, self.settings.jwt_key_type)?;
        let signer = JwtSigner::new(slot, &kid, &key, not_after)?;
        Ok((
            JwtSlot {
                slot,
                state,
                key_id,
                kid,
                public_key: signer.public_key().to_vec(),
                not_before: now,
                not_after,
                tainted: false,
                tainted_at: None,
            },
            signer,
        ))
    }

    /// The kids of the stored bundle (which may still name a dropped key).
    fn published_kids(&self) -> Result<Vec<String>, CaError> {
        Ok(self
            .store
            .get_bundle(&self.settings.trust_domain)?
            .map(|b| b.jwt_authorities.into_iter().map(|a| a.kid).collect())
            .unwrap_or_default())
    }

    /// At start: a JWT slot whose key is gone cannot sign. An active one
    /// becomes OLD (its public key stays published for the tokens it
    /// signed) and the plan mints a new active key at once: JWT-SVIDs live
    /// minutes and no trust chain depends on the key, unlike a CA key.
    pub(super) fn retire_missing_jwt_keys(
        &self,
        mut journal: CaJournal,
    ) -> Result<CaJournal, CaError> {
        let mut changed = false;
        for s in &mut journal.jwt_slots {
            match self.keys.load(&s.key_id) {
                Ok(_) => {}
                Err(KeyError::NotFound { .. }) => {
                    warn!(
                        slot = s.slot.name(),
                        kid = %s.kid,
                        key = %self.keys.location(&s.key_id),
                        "a JWT key the CA journal names is missing; it can no longer sign \
                         (a new one is minted if it was the active key)"
                    );
                    if s.state != SlotState::Old {
                        s.state = SlotState::Old;
                        changed = true;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        if changed {
            journal = self.write_jwt(journal, &[])?;
        }
        Ok(journal)
    }
}

/// A random `kid` (128 bits, hex) that no journal slot and no bundle key
/// has: drawn again on the (astronomically unlikely) collision.
pub(crate) fn fresh_kid(
    journal: &CaJournal,
    published: &[String],
    mut random: impl FnMut() -> Result<[u8; 16], CaError>,
) -> Result<String, CaError> {
    for _ in 0..8 {
        let kid = hex::encode(random()?);
        if !journal.jwt_slots.iter().any(|s| s.kid == kid) && !published.contains(&kid) {
            return Ok(kid);
        }
    }
    Err(CaError::Random)
}

/// Loads the signer of a JWT slot.
pub(super) fn load_jwt_signer(keys: &dyn KeyManager, slot: &JwtSlot) -> Result<JwtSigner, CaError> {
    let key = keys.load(&slot.key_id)?;
    JwtSigner::new(slot.slot, &slot.kid, &key, slot.not_after)
}

/// Deletes JWT keys no journal slot names (a crash between key generation
/// and the journal write).
pub(crate) fn remove_orphan_jwt_keys(
    keys: &dyn KeyManager,
    journal: &CaJournal,
) -> Result<(), CaError> {
    for id in keys.list()? {
        if id.starts_with(JWT_KEY_PREFIX) && !journal.jwt_slots.iter().any(|s| s.key_id == id) {
            warn!(key_id = %id, "removing JWT key not referenced by the CA journal");
            keys.delete(&id)?;
        }
    }
    Ok(())
}
