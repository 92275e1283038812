//! The CA manager's JWT key operations: installing a new signing key (only
//! once the bundle publishes its `kid`: a key is in every bundle before it
//! signs), and the operator commands `ca prepare|activate|taint|revoke
//! --kind jwt`.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::status::too_early;
use super::{CaManager, CaOpError, CaStatus, state_name};
use crate::ca::jwt::JwtSigner;
use crate::ca::rotation::{Rotating, Step};
use crate::ca::{CaError, unix};
use crate::store::{BundleRecord, SlotId, SlotState};

/// Refuses a JWT key the bundle does not publish yet.
pub(super) fn check_jwt_published(
    bundle: &BundleRecord,
    signer: &JwtSigner,
) -> Result<(), CaError> {
    if bundle.jwt_authorities.iter().any(|a| a.kid == signer.kid()) {
        Ok(())
    } else {
        Err(CaError::NotPublished {
            serial: format!("JWT key {}", signer.kid()),
        })
    }
}

impl CaManager {
    /// Makes `signer` (if a step produced one) the JWT key that signs; it
    /// must already be in the published bundle.
    pub(super) fn install_jwt(&self, signer: Option<JwtSigner>) -> Result<(), CaError> {
        let Some(s) = signer else {
            return Ok(());
        };
        check_jwt_published(&self.bundle(), &s)?;
        *self.jwt_active.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
        Ok(())
    }
}

impl CaManager {
    /// Prepares the next JWT key now (`ca prepare --kind jwt`): published
    /// in the bundle at once, signing nothing until activated.
    pub fn force_prepare_jwt(&self) -> Result<CaStatus, CaOpError> {
        let _g = self.lock();
        let now = unix(self.clock.now());
        let journal = self.slots.journal()?;
        if let Some(p) = journal.jwt_prepared() {
            return Err(CaOpError::Refused(format!(
                "JWT slot {} already holds a prepared key (kid {}); activate it first",
                p.slot.name(),
                p.kid
            )));
        }
        let active = journal
            .jwt_active()
            .ok_or_else(|| CaOpError::Refused("there is no active JWT key".into()))?;
        let other = active.slot.other();
        if let Some(o) = journal.jwt_slot(other) {
            return Err(CaOpError::Refused(format!(
                "JWT slot {} holds the previous key (kid {}) until {} (unix), when no token it \
                 signed can still be valid. Wait, or `ca taint --kind jwt` and `ca revoke \
                 --kind jwt` it",
                other.name(),
                o.kid,
                Rotating::retire_at(o, self.slots.max_jwt_ttl())
            )));
        }
        let (journal, _) = self.slots.apply_jwt(journal, Step::Prepare(other), now)?;
        self.publish(&journal, now)?;
        drop(_g);
        Ok(self.jwt_status()?)
    }

    /// Activates the prepared JWT key now. Unless `force`, it must have
    /// been published for at least `min_publish`.
    pub fn force_activate_jwt(&self, force: bool) -> Result<CaStatus, CaOpError> {
        let _g = self.lock();
        let now = unix(self.clock.now());
        let journal = self.slots.journal()?;
        let prepared = journal.jwt_prepared().ok_or_else(|| {
            CaOpError::Refused(
                "there is no prepared JWT key; run `ca prepare --kind jwt` first".into(),
            )
        })?;
        let published = Duration::from_secs(u64::try_from(now - prepared.not_before).unwrap_or(0));
        let min = self.slots.settings.min_publish;
        if published < min && !force {
            let what = format!(
                "the prepared JWT key in slot {} (kid {})",
                prepared.slot.name(),
                prepared.kid
            );
            return Err(CaOpError::Refused(too_early(&what, published, min)));
        }
        if published < min {
            warn!(kid = %prepared.kid, published_secs = published.as_secs(), "activating a JWT key published for less than the minimum, as forced");
        }
        let slot = prepared.slot;
        let (journal, signer) = self.slots.apply_jwt(journal, Step::Activate(slot), now)?;
        self.publish(&journal, now)?;
        self.install_jwt(signer)?;
        drop(_g);
        Ok(self.jwt_status()?)
    }

    /// Taints an inactive JWT key: its kid goes into the bundle's
    /// `tainted_jwt_key_ids`, agents drop and re-mint every token it
    /// signed, and it leaves the bundle when none can still be valid.
    pub fn taint_jwt(&self, slot: SlotId) -> Result<CaStatus, CaOpError> {
        let _g = self.lock();
        let now = unix(self.clock.now());
        let mut journal = self.slots.journal()?;
        let s = journal
            .jwt_slots
            .iter_mut()
            .find(|s| s.slot == slot)
            .ok_or_else(|| CaOpError::Refused(format!("JWT slot {} is empty", slot.name())))?;
        if s.state == SlotState::Active {
            return Err(CaOpError::Refused(format!(
                "JWT slot {} holds the active key; prepare and activate another one \
                 (`--kind jwt`) before tainting it",
                slot.name()
            )));
        }
        if !s.tainted {
            s.tainted = true;
            s.tainted_at = Some(now);
        }
        let kid = s.kid.clone();
        let journal = self.slots.write_jwt(journal, &[])?;
        warn!(slot = slot.name(), kid = %kid, "JWT key tainted");
        crate::metrics::ca_event("jwt_taint");
        self.publish(&journal, now)?;
        drop(_g);
        Ok(self.jwt_status()?)
    }

    /// Removes a tainted, inactive JWT key from the bundle and deletes it:
    /// tokens it signed stop validating at once.
    pub fn revoke_jwt(&self, slot: SlotId) -> Result<CaStatus, CaOpError> {
        let _g = self.lock();
        let now = unix(self.clock.now());
        let journal = self.slots.journal()?;
        let s = journal
            .jwt_slot(slot)
            .ok_or_else(|| CaOpError::Refused(format!("JWT slot {} is empty", slot.name())))?;
        if s.state == SlotState::Active || !s.tainted {
            return Err(CaOpError::Refused(format!(
                "only a tainted, inactive JWT key can be revoked; slot {} is {}{}",
                slot.name(),
                state_name(s.state),
                if s.tainted {
                    " (tainted)"
                } else {
                    " and not tainted"
                }
            )));
        }
        let kid = s.kid.clone();
        let (journal, _) = self.slots.apply_jwt(journal, Step::Drop(slot), now)?;
        warn!(slot = slot.name(), kid = %kid, "JWT key revoked");
        crate::metrics::ca_event("jwt_revoke");
        self.publish(&journal, now)?;
        drop(_g);
        Ok(self.jwt_status()?)
    }
}
