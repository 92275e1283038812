//! Node bans: a ban of an agent that a reusable proof admitted (x509pop)
//! also bans what identifies its node — the certificate's public key and
//! its subject, as rules such as `x509pop:spki:sha256:<hex>` and
//! `x509pop:subject:cn:<CN>` (see [`crate::node_attestor`]) — so that a
//! re-issued certificate of the same node, which hashes to a new agent ID,
//! is refused too. A rule lives while at least one banned agent names it:
//! unbanning every agent that recorded it lifts it. The store checks the
//! rules of an attesting agent atomically with writing its record
//! ([`super::Store::admit_agent`]).

use serde::{Deserialize, Serialize};
use sigil_proto::SpiffeId;

/// One banned node rule and the banned agents that recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeBan {
    /// `<attestor>:<kind>:<value>`, e.g. `x509pop:spki:sha256:<hex>`.
    pub rule: String,
    /// The agents whose ban recorded the rule, in the order they did.
    pub banned_by: Vec<SpiffeId>,
    /// Unix seconds: when the first of them did.
    pub created_at: i64,
}

impl NodeBan {
    /// `self` with `agent` added to `banned_by` (a new ban created at `now`
    /// if `self` is `None`).
    pub fn add(old: Option<NodeBan>, rule: &str, agent: &SpiffeId, now: i64) -> NodeBan {
        let mut ban = old.unwrap_or_else(|| NodeBan {
            rule: rule.to_string(),
            banned_by: Vec::new(),
            created_at: now,
        });
        if !ban.banned_by.contains(agent) {
            ban.banned_by.push(agent.clone());
        }
        ban
    }

    /// `self` without `agent`; `None` when no agent names it any more (the
    /// rule is lifted).
    pub fn remove(mut self, agent: &SpiffeId) -> Option<NodeBan> {
        self.banned_by.retain(|a| a != agent);
        (!self.banned_by.is_empty()).then_some(self)
    }
}
