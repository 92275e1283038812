//! Admin API: attested agents — list, get, evict, ban and unban.

use sigil_proto::SpiffeId;
use sigil_proto::admin_api as pb;
use tonic::Status;
use tracing::info;

use super::AdminService;
use super::convert;
use super::error::{AdminError, invalid};
use crate::node_attestor::is_agent_id;
use crate::store::{AttestedAgent, Store, StoreError};

/// Most compare-and-swap attempts of one ban or unban while renewals of
/// the same agent keep changing its record.
const SWAP_ATTEMPTS: usize = 16;

fn agent_to_pb(a: &AttestedAgent) -> pb::Agent {
    pb::Agent {
        spiffe_id: a.spiffe_id.to_string(),
        attestor: a.attestor.clone(),
        selectors: a.selectors.iter().map(convert::selector_to_pb).collect(),
        serial: a.serial.clone(),
        expires_at: a.expires_at,
        banned: a.banned,
        attested_at: a.attested_at,
        updated_at: a.updated_at,
    }
}

fn load_agent(store: &dyn Store, id: &SpiffeId) -> Result<AttestedAgent, AdminError> {
    store.get_agent(id)?.ok_or_else(|| agent_not_found(id))
}

impl AdminService {
    fn agent_id(&self, v: &str) -> Result<SpiffeId, Status> {
        let id = convert::parse_id_in("spiffe_id", v, &self.settings.limits).map_err(invalid)?;
        if !is_agent_id(&id, &self.settings.limits.trust_domain) {
            return Err(invalid(format!(
                "spiffe_id: {id} is not an agent ID (spiffe://<td>/sigil/agent/...)"
            )));
        }
        Ok(id)
    }

    pub(super) async fn list_agents(&self) -> Result<pb::ListAgentsResponse, Status> {
        let agents = self.blocking(|store| Ok(store.list_agents()?)).await?;
        Ok(pb::ListAgentsResponse {
            agents: agents.iter().map(agent_to_pb).collect(),
        })
    }

    pub(super) async fn get_agent(&self, r: pb::AgentIdRequest) -> Result<pb::Agent, Status> {
        let id = self.agent_id(&r.spiffe_id)?;
        let a = self.blocking(move |store| load_agent(store, &id)).await?;
        Ok(agent_to_pb(&a))
    }

    pub(super) async fn evict_agent(&self, r: pb::AgentIdRequest) -> Result<pb::Agent, Status> {
        let id = self.agent_id(&r.spiffe_id)?;
        let a = self
            .blocking(move |store| {
                let a = load_agent(store, &id)?;
                store.delete_agent(&id)?;
                Ok(a)
            })
            .await?;
        info!(agent_id = %a.spiffe_id, "agent evicted");
        Ok(agent_to_pb(&a))
    }

    pub(super) async fn set_banned(
        &self,
        r: pb::AgentIdRequest,
        banned: bool,
    ) -> Result<pb::Agent, Status> {
        let id = self.agent_id(&r.spiffe_id)?;
        let now = self.now();
        let a = self
            .blocking(move |store| {
                // Compare-and-swap, again over a fresh read if a renewal
                // changed the record meanwhile: the ban never reverts it.
                // Renewals are rate-limited per agent, so this converges.
                // The node ban rules are recorded (or lifted) in the same
                // step.
                for _ in 0..SWAP_ATTEMPTS {
                    let old = match store.get_agent(&id)? {
                        Some(old) => old,
                        None if !banned => return unban_evicted(store, &id).map(|()| None),
                        None => return Err(agent_not_found(&id)),
                    };
                    let mut a = old.clone();
                    a.banned = banned;
                    a.updated_at = now;
                    match store.swap_agent_ban(&old, &a, now) {
                        Ok(()) => return Ok(Some(a)),
                        Err(StoreError::Changed { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(StoreError::Changed {
                    what: "agent",
                    key: id.to_string(),
                }
                .into())
            })
            .await?;
        let Some(a) = a else {
            // No record to show: the answer names the agent, not banned.
            info!(agent_id = %r.spiffe_id, "node bans of an evicted agent lifted");
            return Ok(pb::Agent {
                spiffe_id: r.spiffe_id,
                ..Default::default()
            });
        };
        info!(agent_id = %a.spiffe_id, banned, node_bans = ?a.ban_rules, "agent ban changed");
        Ok(agent_to_pb(&a))
    }
}

fn agent_not_found(id: &SpiffeId) -> AdminError {
    StoreError::NotFound {
        what: "agent",
        key: id.to_string(),
    }
    .into()
}

/// Unban of an agent whose record is gone (evicted after its ban): lifts
/// the node bans it recorded; `NotFound` if there were none.
fn unban_evicted(store: &dyn Store, id: &SpiffeId) -> Result<(), AdminError> {
    match store.clear_node_bans_of(id)? {
        0 => Err(agent_not_found(id)),
        _ => Ok(()),
    }
}
