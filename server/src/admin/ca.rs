//! Admin API: the CA — show the journal and timeline, force prepare and
//! activate, taint and revoke a slot, of the X.509 CA or (`kind: "jwt"`) of
//! the JWT signing keys — and the trust bundle.

use sigil_proto::admin_api as pb;
use tonic::Status;

use super::AdminService;
use super::error::{AdminError, invalid};
use crate::bundle::bundle_jwks;
use crate::ca::manager::{CaOpError, CaStatus, state_name};
use crate::store::SlotId;

/// Which key slots a CA command is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    X509,
    Jwt,
}

pub fn parse_kind(v: &str) -> Result<Kind, Status> {
    match v {
        "" | "x509" => Ok(Kind::X509),
        "jwt" => Ok(Kind::Jwt),
        other => Err(invalid(format!(
            "kind: {other:?} must be \"x509\" or \"jwt\""
        ))),
    }
}

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

fn ca_status_to_pb(st: &CaStatus, kind: Kind) -> pb::CaStatus {
    let x509 = st.slots.iter().map(|s| pb::CaSlotStatus {
        slot: s.slot.name().to_string(),
        state: state_name(s.state).to_string(),
        serial: s.serial.clone(),
        not_before: s.not_before,
        not_after: s.not_after,
        tainted: s.tainted,
        in_bundle: st.in_bundle.contains(&s.serial),
        key_id: s.key_id.clone(),
        kid: String::new(),
    });
    let jwt = st.jwt_slots.iter().map(|s| pb::CaSlotStatus {
        slot: s.slot.name().to_string(),
        state: state_name(s.state).to_string(),
        serial: String::new(),
        not_before: s.not_before,
        not_after: s.not_after,
        tainted: s.tainted,
        in_bundle: st.in_bundle.contains(&s.kid),
        key_id: s.key_id.clone(),
        kid: s.kid.clone(),
    });
    pb::CaStatus {
        slots: x509.chain(jwt).collect(),
        kind: match kind {
            Kind::X509 => "x509",
            Kind::Jwt => "jwt",
        }
        .to_string(),
        prepare_at: st.timeline.map_or(0, |t| t.prepare_at),
        activate_at: st.timeline.map_or(0, |t| t.activate_at),
        bundle_sequence: st.bundle_sequence,
        warnings: st.warnings.clone(),
    }
}

impl AdminService {
    /// Runs a CA command off the async threads; refusals are
    /// `FailedPrecondition` with the reason.
    pub(super) async fn ca_op(&self, op: Op, kind: &str) -> Result<pb::CaStatus, Status> {
        let kind = parse_kind(kind)?;
        let ca = self.ca.clone();
        let st = tokio::task::spawn_blocking(move || match (kind, op) {
            (Kind::X509, Op::Show) => ca.status().map_err(CaOpError::from),
            (Kind::X509, Op::Prepare) => ca.force_prepare(),
            (Kind::X509, Op::Activate { force }) => ca.force_activate(force),
            (Kind::X509, Op::Taint(slot)) => ca.taint(slot),
            (Kind::X509, Op::Revoke { slot, force }) => ca.revoke(slot, force),
            (Kind::Jwt, Op::Show) => ca.jwt_status().map_err(CaOpError::from),
            (Kind::Jwt, Op::Prepare) => ca.force_prepare_jwt(),
            (Kind::Jwt, Op::Activate { force }) => ca.force_activate_jwt(force),
            (Kind::Jwt, Op::Taint(slot)) => ca.taint_jwt(slot),
            // No agent's identity chains to a JWT key: nothing to force.
            (Kind::Jwt, Op::Revoke { slot, .. }) => ca.revoke_jwt(slot),
        })
        .await
        .map_err(AdminError::task)?
        .map_err(AdminError::from)?;
        Ok(ca_status_to_pb(&st, kind))
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
