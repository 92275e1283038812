//! Admin API: `ExplainEntries` (`sigil-server entry explain`) — for an
//! agent and a workload's selectors, the entries that would be issued and
//! why the nearest others would not. The agent's node selectors come from
//! its attestation record; the matching is the registry's
//! ([`Registry::explain`](crate::registry::Registry::explain)). Read-only.

use sigil_proto::admin_api as pb;
use tonic::Status;

use super::AdminService;
use super::convert;
use super::error::invalid;
use crate::node_attestor::is_agent_id;
use crate::registry::Explained;

/// Near misses and wrong-parent entries listed each when the request
/// gives no limit.
pub const DEFAULT_LIMIT: usize = 10;
/// The largest limit a request may ask for.
pub const MAX_LIMIT: usize = 1000;

fn explained_to_pb(x: &Explained) -> pb::ExplainedEntry {
    pb::ExplainedEntry {
        entry: Some(convert::entry_to_pb(&x.entry)),
        missing_selectors: x.missing.iter().map(convert::selector_to_pb).collect(),
        via_alias: x
            .via_alias
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        reason: x.reason.clone(),
    }
}

impl AdminService {
    pub(super) async fn explain_entries(
        &self,
        r: pb::ExplainEntriesRequest,
    ) -> Result<pb::ExplainEntriesResponse, Status> {
        let limits = &self.settings.limits;
        let agent_id = convert::parse_id_in("parent_id", &r.parent_id, limits).map_err(invalid)?;
        if !is_agent_id(&agent_id, &limits.trust_domain) {
            return Err(invalid(format!(
                "parent_id: {agent_id} is not an agent ID (spiffe://<td>/sigil/agent/...): \
                 explain takes the agent the workload runs under"
            )));
        }
        let workload = convert::parse_selectors("selectors", &r.selectors).map_err(invalid)?;
        let limit = match usize::try_from(r.limit).unwrap_or(usize::MAX) {
            0 => DEFAULT_LIMIT,
            n if n > MAX_LIMIT => {
                return Err(invalid(format!(
                    "limit: {n} is more than the maximum of {MAX_LIMIT}"
                )));
            }
            n => n,
        };
        let id = agent_id.clone();
        let agent = self
            .blocking(move |store| Ok(store.get_agent(&id)?))
            .await?;
        let node_selectors = agent
            .as_ref()
            .map(|a| a.selectors.clone())
            .unwrap_or_default();
        let now = self.now();
        let x = self
            .registry
            .explain(&agent_id, &node_selectors, &workload, now, limit);
        Ok(pb::ExplainEntriesResponse {
            issued: x.issued.iter().map(explained_to_pb).collect(),
            near_misses: x.near_misses.iter().map(explained_to_pb).collect(),
            expired: x.expired.iter().map(explained_to_pb).collect(),
            wrong_parent: x.wrong_parent.iter().map(explained_to_pb).collect(),
            aliases: x.aliases.iter().map(ToString::to_string).collect(),
            node_selectors: node_selectors.iter().map(convert::selector_to_pb).collect(),
            agent_known: agent.is_some(),
            agent_banned: agent.as_ref().is_some_and(|a| a.banned),
            near_misses_left_off: u32::try_from(x.near_misses_left_off).unwrap_or(u32::MAX),
            wrong_parent_left_off: u32::try_from(x.wrong_parent_left_off).unwrap_or(u32::MAX),
            evaluated_at: now,
        })
    }
}
