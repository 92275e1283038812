//! What `ca show` reports: the X.509 or JWT key slots of the journal, the
//! active one's rotation timeline and which keys the bundle holds; and the
//! wording shared by the operator commands of both kinds.

use std::time::Duration;

use super::CaManager;
use crate::ca::CaError;
use crate::ca::rotation::{self, Timeline};
use crate::store::{CaSlot, JwtSlot, SlotState};

/// The journal and the rotation timeline, for `ca show` (X.509 slots in
/// `slots`; with `--kind jwt`, the JWT key slots in `jwt_slots`).
#[derive(Debug, Clone)]
pub struct CaStatus {
    pub slots: Vec<CaSlot>,
    pub jwt_slots: Vec<JwtSlot>,
    pub timeline: Option<Timeline>,
    pub bundle_sequence: u64,
    /// Serials (hex) of the CAs, or kids of the JWT keys, in the bundle.
    pub in_bundle: Vec<String>,
    /// What a forced command broke (the operator sees it).
    pub warnings: Vec<String>,
}

impl CaManager {
    /// The X.509 slots and timeline.
    pub fn status(&self) -> Result<CaStatus, CaError> {
        let journal = self.slots.journal()?;
        let b = self.bundle();
        let in_bundle = journal
            .slots
            .iter()
            .filter(|s| {
                s.cert_chain
                    .first()
                    .is_some_and(|c| b.x509_authorities.contains(c))
            })
            .map(|s| s.serial.clone())
            .collect();
        Ok(CaStatus {
            timeline: journal.active().map(rotation::timeline),
            slots: journal.slots,
            jwt_slots: Vec::new(),
            bundle_sequence: b.sequence,
            in_bundle,
            warnings: Vec::new(),
        })
    }

    /// The JWT key slots and their timeline (`ca show --kind jwt`).
    pub fn jwt_status(&self) -> Result<CaStatus, CaError> {
        let journal = self.slots.journal()?;
        let b = self.bundle();
        let in_bundle = journal
            .jwt_slots
            .iter()
            .filter(|s| b.jwt_authorities.iter().any(|a| a.kid == s.kid))
            .map(|s| s.kid.clone())
            .collect();
        Ok(CaStatus {
            timeline: journal.jwt_active().map(rotation::timeline),
            slots: Vec::new(),
            jwt_slots: journal.jwt_slots,
            bundle_sequence: b.sequence,
            in_bundle,
            warnings: Vec::new(),
        })
    }
}

pub fn state_name(s: SlotState) -> &'static str {
    match s {
        SlotState::Prepared => "prepared",
        SlotState::Active => "active",
        SlotState::Old => "old",
    }
}

/// Why a prepared key (`what`: "the prepared CA in slot a (serial …)")
/// cannot be activated yet.
pub(super) fn too_early(what: &str, published: Duration, min: Duration) -> String {
    let fmt = sigil_proto::format_duration;
    format!(
        "{what} has been published for {}; the minimum is {} (2 x the bundle refresh hint): \
         agents and relying parties that have not fetched the bundle since it was prepared \
         would reject everything it signs. Wait {} more, or pass --force to activate now and \
         accept that risk",
        fmt(published),
        fmt(min),
        fmt(min.saturating_sub(published))
    )
}
