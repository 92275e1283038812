//! Admin API: the CA — show the journal and timeline, force prepare and
//! activate, taint and revoke a slot — and the trust bundle.

use sigil_proto::admin_api as pb;
use tonic::Status;

use super::AdminService;
use super::error::{AdminError, invalid};
use crate::bundle::bundle_jwks;
use crate::ca::manager::{CaOpError, CaStatus, state_name};
use crate::store::SlotId;

/// An operator's CA command.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Show,
    Prepare,
    Activate { force: bool },
    Taint(SlotId),
    Revoke { slot: SlotId, force: bool },
}

pub fn parse_slot(v: &str) -> Result<SlotId, Status> {
    match v {
        "a" => Ok(SlotId::A),
        "b" => Ok(SlotId::B),
        other => Err(invalid(format!("slot: {other:?} must be \"a\" or \"b\""))),
    }
}

fn ca_status_to_pb(st: &CaStatus) -> pb::CaStatus {
    pb::CaStatus {
        slots: st
            .slots
            .iter()
            .map(|s| pb::CaSlotStatus {
                slot: s.slot.name().to_string(),
                state: state_name(s.state).to_string(),
                serial: s.serial.clone(),
                not_before: s.not_before,
                not_after: s.not_after,
                tainted: s.tainted,
                in_bundle: st.in_bundle.contains(&s.serial),
                key_id: s.key_id.clone(),
            })
            .collect(),
        prepare_at: st.timeline.map_or(0, |t| t.prepare_at),
        activate_at: st.timeline.map_or(0, |t| t.activate_at),
        bundle_sequence: st.bundle_sequence,
        warnings: st.warnings.clone(),
    }
}

impl AdminService {
    /// Runs a CA command off the async threads; refusals are
    /// `FailedPrecondition` with the reason.
    pub(super) async fn ca_op(&self, op: Op) -> Result<pb::CaStatus, Status> {
        let ca = self.ca.clone();
        let st = tokio::task::spawn_blocking(move || match op {
            Op::Show => ca.status().map_err(CaOpError::from),
            Op::Prepare => ca.force_prepare(),
            Op::Activate { force } => ca.force_activate(force),
            Op::Taint(slot) => ca.taint(slot),
            Op::Revoke { slot, force } => ca.revoke(slot, force),
        })
        .await
        .map_err(AdminError::task)?
        .map_err(AdminError::from)?;
        Ok(ca_status_to_pb(&st))
    }

    pub(super) fn get_bundle(&self) -> Result<pb::Bundle, Status> {
        let b = self.ca.bundle();
        let hint = self.settings.bundle_refresh_hint;
        let jwks = bundle_jwks(&b, hint).map_err(AdminError::Internal)?;
        Ok(pb::Bundle {
            trust_domain: b.trust_domain.to_string(),
            x509_authorities: b.x509_authorities.clone(),
            sequence: b.sequence,
            refresh_hint_seconds: i64::try_from(hint.as_secs()).unwrap_or(i64::MAX),
            jwks,
        })
    }
}
