//! `entry explain`'s answer, from the registry's own matching: the entries
//! an agent would issue to a workload with given selectors, and for those
//! it would not, why. The agent's view comes from [`Registry::view_for`]
//! (what the sync stream sends the agent) and the workload match from
//! `sigil_proto::selector::{is_subset, missing}` (what the agent's
//! Workload API applies), so the explanation cannot drift from issuance.

use std::sync::Arc;

use sigil_proto::selector::{is_subset, missing};
use sigil_proto::tls::verdict::rfc3339;
use sigil_proto::{Selector, SpiffeId};

use super::Registry;
use crate::authz;
use crate::entry::{Entry, EntryFilter};

/// One entry and why it is (not) issued.
#[derive(Debug, Clone)]
pub struct Explained {
    pub entry: Arc<Entry>,
    /// The entry's selectors the workload lacks.
    pub missing: Vec<Selector>,
    /// The agent's alias the entry is parented to.
    pub via_alias: Option<SpiffeId>,
    pub reason: String,
}

/// The whole answer for one agent and one workload.
#[derive(Debug, Clone, Default)]
pub struct Explanation {
    /// Oldest first (`created_at`, then id): the first is the default SVID.
    pub issued: Vec<Explained>,
    /// Fewest missing selectors first, at most `limit`.
    pub near_misses: Vec<Explained>,
    pub near_misses_left_off: usize,
    pub expired: Vec<Explained>,
    /// At most `limit`.
    pub wrong_parent: Vec<Explained>,
    pub wrong_parent_left_off: usize,
    pub aliases: Vec<SpiffeId>,
}

fn list(sels: &[Selector]) -> String {
    let v: Vec<String> = sels.iter().map(ToString::to_string).collect();
    v.join(", ")
}

impl Registry {
    /// Explains what an agent `agent_id` with `node_selectors` would issue
    /// at `now` to a workload with `workload` selectors. `limit` caps the
    /// near misses and the wrong-parent entries each.
    pub fn explain(
        &self,
        agent_id: &SpiffeId,
        node_selectors: &[Selector],
        workload: &[Selector],
        now: i64,
        limit: usize,
    ) -> Explanation {
        let view = self.view_for(agent_id, node_selectors, now);
        let via = |e: &Entry| {
            (e.spec.parent_id != *agent_id && view.aliases.contains(&e.spec.parent_id))
                .then(|| e.spec.parent_id.clone())
        };
        let mut out = Explanation {
            aliases: view.aliases.clone(),
            ..Explanation::default()
        };
        let mut near = Vec::new();
        for e in &view.entries {
            let lacks: Vec<Selector> = missing(&e.spec.selectors, workload).cloned().collect();
            let alias = via(e);
            let parent = match &alias {
                Some(a) => format!("under node alias {a}"),
                None => "under this agent".to_string(),
            };
            if is_subset(&e.spec.selectors, workload) {
                out.issued.push(Explained {
                    entry: e.clone(),
                    missing: lacks,
                    reason: format!("issued: {parent}, all selectors match"),
                    via_alias: alias,
                });
            } else {
                near.push(Explained {
                    entry: e.clone(),
                    reason: format!("{parent}, but the workload lacks {}", list(&lacks)),
                    missing: lacks,
                    via_alias: alias,
                });
            }
        }
        out.issued.sort_by(|a, b| {
            (a.entry.created_at, &a.entry.id).cmp(&(b.entry.created_at, &b.entry.id))
        });
        near.sort_by(|a, b| (a.missing.len(), &a.entry.id).cmp(&(b.missing.len(), &b.entry.id)));
        out.near_misses_left_off = near.len().saturating_sub(limit);
        near.truncate(limit);
        out.near_misses = near;
        for id in &view.lapsed {
            let Some(e) = self.get(id) else { continue };
            if !is_subset(&e.spec.selectors, workload) {
                continue;
            }
            let reason = match e.spec.expires_at.filter(|_| authz::expired(&e, now)) {
                Some(t) => format!("the entry expired at {}", rfc3339(t)),
                None => format!(
                    "its parent {} is a node alias whose node entry expired",
                    e.spec.parent_id
                ),
            };
            out.expired.push(Explained {
                via_alias: None,
                missing: Vec::new(),
                reason,
                entry: e,
            });
        }
        let (wrong, left_off) = self.wrong_parent(&view.reach, node_selectors, workload, limit);
        out.wrong_parent = wrong;
        out.wrong_parent_left_off = left_off;
        out
    }

    /// Entries whose selectors the workload has but whose parent the
    /// agent cannot reach, each with why.
    fn wrong_parent(
        &self,
        reach: &std::collections::HashSet<SpiffeId>,
        node_selectors: &[Selector],
        workload: &[Selector],
        limit: usize,
    ) -> (Vec<Explained>, usize) {
        let nodes = self.list(&EntryFilter {
            parent_id: Some(self.server_id().clone()),
            ..EntryFilter::default()
        });
        let all: Vec<Explained> = self
            .list(&EntryFilter::default())
            .into_iter()
            .filter(|e| {
                !self.is_node_entry(e)
                    && !reach.contains(&e.spec.parent_id)
                    && is_subset(&e.spec.selectors, workload)
            })
            .map(|e| {
                let alias = nodes.iter().find(|n| n.spec.spiffe_id == e.spec.parent_id);
                let reason = match alias {
                    Some(n) => format!(
                        "its parent {} is a node alias the agent does not have: the agent lacks \
                         node selectors {}",
                        e.spec.parent_id,
                        list(
                            &missing(&n.spec.selectors, node_selectors)
                                .cloned()
                                .collect::<Vec<_>>()
                        )
                    ),
                    None => format!(
                        "its parent {} is neither this agent nor one of its node aliases",
                        e.spec.parent_id
                    ),
                };
                Explained {
                    entry: e,
                    missing: Vec::new(),
                    via_alias: None,
                    reason,
                }
            })
            .collect();
        let left_off = all.len().saturating_sub(limit);
        (all.into_iter().take(limit).collect(), left_off)
    }
}

#[cfg(test)]
mod tests;
