//! Node bans in the sled store (tree `node_bans`, key: the rule, value: a
//! [`NodeBan`]): the agent-record compare-and-swap that also checks an
//! attesting agent's rules, and the one that records or lifts a ban's
//! rules, each one transaction over `agents` and `node_bans` (sled runs
//! transactions one at a time, so a ban and an attestation never
//! interleave).

use sled::Transactional;
use sled::transaction::TransactionalTree;

use super::codec::{abort, tx_decode, tx_encode};
use super::*;
use crate::store::NodeBan;

/// What a swap left in one key, and what was there before (for the undo).
type Written = (String, Option<Vec<u8>>, Option<sled::IVec>);

/// Checks inside a transaction that the agent record for `key` is
/// `expected`; `Changed` otherwise.
pub(super) fn tx_expect_agent(
    agents: &TransactionalTree,
    key: &str,
    expected: Option<&AttestedAgent>,
) -> TxResult<Option<sled::IVec>> {
    let raw = agents.get(key.as_bytes())?;
    let found: Option<AttestedAgent> = raw
        .as_ref()
        .map(|v| tx_decode(T_AGENTS, key, v))
        .transpose()?;
    if found.as_ref() != expected {
        return Err(abort(StoreError::Changed {
            what: "agent",
            key: key.to_string(),
        }));
    }
    Ok(raw)
}

impl SledStore {
    pub(super) fn admit_agent_swap(
        &self,
        expected: Option<&AttestedAgent>,
        new: &AttestedAgent,
    ) -> StoreResult<()> {
        let key = new.spiffe_id.as_str();
        let value = encode(T_AGENTS, key, new)?;
        let old = (&self.agents, &self.node_bans)
            .transaction(|(agents, bans)| {
                for rule in &new.ban_rules {
                    if let Some(raw) = bans.get(rule.as_bytes())? {
                        let ban: NodeBan = tx_decode(T_NODE_BANS, rule, &raw)?;
                        return Err(abort(StoreError::banned(rule, &ban)));
                    }
                }
                let raw = tx_expect_agent(agents, key, expected)?;
                agents.insert(key.as_bytes(), value.as_slice())?;
                Ok(raw)
            })
            .map_err(|e| self.tx_error(e))?;
        let undo = || self.undo_put(&self.agents, "agent", key, Some(&value), old);
        self.flush_or_undo(&format!("record of agent {key}"), undo)
    }

    pub(super) fn swap_agent_ban_tx(
        &self,
        expected: &AttestedAgent,
        new: &AttestedAgent,
        now: i64,
    ) -> StoreResult<()> {
        let key = new.spiffe_id.as_str();
        let value = encode(T_AGENTS, key, new)?;
        let (old, written) = (&self.agents, &self.node_bans)
            .transaction(|(agents, bans)| {
                let old = tx_expect_agent(agents, key, Some(expected))?;
                agents.insert(key.as_bytes(), value.as_slice())?;
                let mut written: Vec<Written> = Vec::new();
                for rule in &new.ban_rules {
                    let before = bans.get(rule.as_bytes())?;
                    let ban: Option<NodeBan> = before
                        .as_ref()
                        .map(|raw| tx_decode(T_NODE_BANS, rule, raw))
                        .transpose()?;
                    let after = if new.banned {
                        Some(NodeBan::add(ban, rule, &new.spiffe_id, now))
                    } else {
                        ban.and_then(|b| b.remove(&new.spiffe_id))
                    };
                    let after = match after {
                        Some(b) => {
                            let bytes = tx_encode(T_NODE_BANS, rule, &b)?;
                            bans.insert(rule.as_bytes(), bytes.as_slice())?;
                            Some(bytes)
                        }
                        None => {
                            bans.remove(rule.as_bytes())?;
                            None
                        }
                    };
                    written.push((rule.clone(), after, before));
                }
                Ok((old, written))
            })
            .map_err(|e| self.tx_error(e))?;
        let undo = || {
            for (rule, after, before) in written {
                self.undo_put(&self.node_bans, "node ban", &rule, after.as_deref(), before)?;
            }
            self.undo_put(&self.agents, "agent", key, Some(&value), old)
        };
        self.flush_or_undo(&format!("ban change of agent {key}"), undo)
    }

    pub(super) fn clear_node_bans(&self, agent: &SpiffeId) -> StoreResult<usize> {
        let named: Vec<NodeBan> = self
            .scan_json::<NodeBan>(&self.node_bans, T_NODE_BANS)?
            .into_iter()
            .filter(|b| b.banned_by.contains(agent))
            .collect();
        let mut cleared = 0;
        for ban in named {
            let key = ban.rule.clone();
            let before = encode(T_NODE_BANS, &key, &ban)?;
            let after = ban
                .remove(agent)
                .map(|b| encode(T_NODE_BANS, &key, &b))
                .transpose()?;
            // Only over what was read: a ban recorded meanwhile is kept
            // (the caller may clear again).
            self.node_bans
                .compare_and_swap(key.as_bytes(), Some(before.as_slice()), after)
                .map_err(|e| self.io(e))?
                .map_err(|_| StoreError::Changed {
                    what: "node ban",
                    key: key.clone(),
                })?;
            cleared += 1;
        }
        self.flush()?;
        Ok(cleared)
    }
}
