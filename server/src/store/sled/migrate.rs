//! The one migration run when a [`SledStore`] opens: join-token agent IDs
//! from the old form (`.../join_token/<token>`) to the hash form
//! ([`crate::store::join_token_ids`]). Agent records are renamed and entries
//! whose `parent_id` is an old-form ID are re-parented, each re-parented
//! entry with a new revision and an Upserted event so that agents see the
//! change through sync. Everything, with the `meta` flag that says it is
//! done, is one transaction: the migration runs exactly once per store (a
//! store this build creates is marked done at once, so its hash-form IDs are
//! never hashed again).

use std::collections::HashMap;

use sigil_proto::SpiffeId;
use sled::Transactional;

use super::codec::{abort, tx_encode, tx_log_event, tx_next_revision};
use super::*;
use crate::store::join_token_ids::from_old_form;

/// `meta`: present (value 1) once join-token agent IDs are in hash form.
pub(super) const K_JOIN_TOKEN_IDS_HASHED: &str = "join_token_ids_hashed";

impl SledStore {
    /// Migrates old-form join-token agent IDs, once (see the file comment).
    pub(super) fn migrate_join_token_ids(&self) -> StoreResult<()> {
        if self
            .meta
            .get(K_JOIN_TOKEN_IDS_HASHED)
            .map_err(|e| self.io(e))?
            .is_some()
        {
            return Ok(());
        }
        let mut renamed: HashMap<SpiffeId, SpiffeId> = HashMap::new();
        let agents: Vec<AttestedAgent> = self.scan_json(&self.agents, T_AGENTS)?;
        let agents: Vec<(String, AttestedAgent)> = agents
            .into_iter()
            .filter_map(|a| {
                let (new, _) = from_old_form(&a.spiffe_id)?;
                renamed.insert(a.spiffe_id.clone(), new.clone());
                let old_key = a.spiffe_id.to_string();
                Some((
                    old_key,
                    AttestedAgent {
                        spiffe_id: new,
                        ..a
                    },
                ))
            })
            .collect();
        // Entries may name an agent that is gone (evicted): every old-form
        // parent is mapped, not only those with a record.
        let entries: Vec<(Entry, SpiffeId)> = self
            .list_entries(&EntryFilter::default())?
            .into_iter()
            .filter_map(|e| {
                let (new, _) = from_old_form(&e.spec.parent_id)?;
                Some((e, new))
            })
            .collect();
        let tx = (
            &self.agents,
            &self.entries,
            &self.entry_index,
            &self.entry_events,
            &self.meta,
        )
            .transaction(|(agent_tree, entry_tree, index, events, meta)| {
                if meta.get(K_JOIN_TOKEN_IDS_HASHED)?.is_some() {
                    return Ok(0);
                }
                for (old_key, agent) in &agents {
                    let key = agent.spiffe_id.as_str();
                    agent_tree.remove(old_key.as_bytes())?;
                    agent_tree.insert(key.as_bytes(), tx_encode(T_AGENTS, key, agent)?)?;
                }
                for (old, parent) in &entries {
                    let old_key = old.spec.identity_key();
                    if index.get(old_key.as_bytes())?.as_deref() == Some(old.id.as_bytes()) {
                        index.remove(old_key.as_bytes())?;
                    }
                    let mut spec = old.spec.clone();
                    spec.parent_id = parent.clone();
                    let key = spec.identity_key();
                    if index.get(key.as_bytes())?.is_some() {
                        return Err(abort(StoreError::Corrupt(format!(
                            "migrating join-token agent IDs: entry {} re-parented to {parent} \
                             duplicates another entry; remove one of them with an older build",
                            old.id
                        ))));
                    }
                    let revision = tx_next_revision(meta)?;
                    let entry = Entry {
                        spec,
                        revision,
                        ..old.clone()
                    };
                    let id = entry.id.as_str();
                    entry_tree.insert(id.as_bytes(), tx_encode(T_ENTRIES, id, &entry)?)?;
                    index.insert(key.as_bytes(), id.as_bytes())?;
                    tx_log_event(events, revision, &EntryEvent::Upserted(entry))?;
                }
                meta.insert(K_JOIN_TOKEN_IDS_HASHED, &1u64.to_be_bytes())?;
                Ok(agents.len() + entries.len())
            })
            .map_err(|e| self.tx_error(e))?;
        self.flush()?;
        if tx > 0 {
            tracing::info!(store = %self.path.display(), agents = agents.len(),
                entries = entries.len(),
                "join-token agent IDs migrated to the hash form (no token in IDs)");
        }
        Ok(())
    }
}
