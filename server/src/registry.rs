//! The registration entries, held in memory and kept in step with the store:
//! every change is written to the store first (durably), then applied to the
//! index and broadcast to subscribers (the agents' sync streams) in revision
//! order. Reads never touch the store. Changes other servers make to a
//! shared store are followed from its event log ([`follow`]), under the
//! same lock and in the same revision order as local writes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use sigil_proto::selector::is_subset;
use sigil_proto::{Selector, SpiffeId};
use tokio::sync::{broadcast, watch};

use crate::authz;
use crate::entry::{Entry, EntryEvent, EntryFilter, EntrySpec};
use crate::store::{Store, StoreResult};

mod explain;
pub mod follow;
pub use explain::{Explained, Explanation};

/// How many changes a slow subscriber may fall behind before it must
/// resynchronise from a snapshot.
pub const EVENT_BUFFER: usize = 8192;

#[derive(Default)]
struct Index {
    entries: HashMap<String, Arc<Entry>>,
    by_parent: HashMap<SpiffeId, BTreeSet<String>>,
    revision: u64,
}

impl Index {
    fn insert(&mut self, e: Arc<Entry>) {
        self.remove(&e.id);
        self.by_parent
            .entry(e.spec.parent_id.clone())
            .or_default()
            .insert(e.id.clone());
        self.entries.insert(e.id.clone(), e);
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.entries.remove(id)
            && let Some(set) = self.by_parent.get_mut(&old.spec.parent_id)
        {
            set.remove(id);
            if set.is_empty() {
                self.by_parent.remove(&old.spec.parent_id);
            }
        }
    }

    fn children(&self, parent: &SpiffeId) -> impl Iterator<Item = &Arc<Entry>> {
        self.by_parent
            .get(parent)
            .into_iter()
            .flatten()
            .filter_map(|id| self.entries.get(id))
    }
}

/// What an agent is authorized for at one revision.
#[derive(Debug, Clone)]
pub struct AgentView {
    pub revision: u64,
    pub aliases: Vec<SpiffeId>,
    pub parents: HashSet<SpiffeId>,
    pub entries: Vec<Arc<Entry>>,
    /// The parents plus the aliases of expired node entries the agent
    /// matches: every parent an entry the agent may hold can have.
    pub reach: HashSet<SpiffeId>,
    /// Ids of entries under `reach` that are not authorized now (expired,
    /// or under an expired alias): an agent that held them must drop them.
    pub lapsed: Vec<String>,
    /// The earliest `expires_at` after now among the entries and the node
    /// entries that make the view: when it passes, the view changes.
    pub next_expiry: Option<i64>,
}

pub struct Registry {
    store: Arc<dyn Store>,
    server_id: SpiffeId,
    index: RwLock<Index>,
    /// Serialises store writes with their index updates, so events go out
    /// in revision order.
    writes: Mutex<()>,
    events: broadcast::Sender<Arc<EntryEvent>>,
    /// Counts full reloads from the store (the event log no longer held
    /// what the registry missed): subscribers resynchronise from a
    /// snapshot when it changes.
    reloads: watch::Sender<u64>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("server_id", &self.server_id)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Loads every entry from the store.
    pub fn load(store: Arc<dyn Store>, server_id: SpiffeId) -> StoreResult<Arc<Registry>> {
        let index = Self::snapshot(store.as_ref())?;
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Ok(Arc::new(Registry {
            store,
            server_id,
            index: RwLock::new(index),
            writes: Mutex::new(()),
            events,
            reloads: watch::channel(0).0,
        }))
    }

    /// Every entry in the store, at (at least) the revision it reports
    /// first: an entry written in between is in the list and its event is
    /// applied again later, which changes nothing.
    fn snapshot(store: &dyn Store) -> StoreResult<Index> {
        let mut index = Index {
            revision: store.entries_revision()?,
            ..Index::default()
        };
        for e in store.list_entries(&EntryFilter::default())? {
            index.insert(Arc::new(e));
        }
        Ok(index)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, ev: EntryEvent) {
        {
            let mut ix = self.index.write().unwrap_or_else(|p| p.into_inner());
            match &ev {
                EntryEvent::Deleted(e) => ix.remove(&e.id),
                other => ix.insert(Arc::new(other.entry().clone())),
            }
            ix.revision = ix.revision.max(ev.revision());
        }
        // No subscribers is fine.
        let _ = self.events.send(Arc::new(ev));
    }

    fn lock_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn locked<T>(&self, f: impl FnOnce() -> StoreResult<(T, EntryEvent)>) -> StoreResult<T> {
        self.locked_with(self.writes.lock().unwrap_or_else(|p| p.into_inner()), f)
    }

    /// [`Registry::locked`] for a caller that already holds the write lock.
    fn locked_with<T>(
        &self,
        _w: std::sync::MutexGuard<'_, ()>,
        f: impl FnOnce() -> StoreResult<(T, EntryEvent)>,
    ) -> StoreResult<T> {
        let (out, ev) = f()?;
        self.record_local(ev);
        Ok(out)
    }

    pub fn create(&self, spec: EntrySpec, now: i64) -> StoreResult<Entry> {
        self.locked(|| {
            let e = self.store.create_entry(spec, now)?;
            Ok((e.clone(), EntryEvent::Upserted(e)))
        })
    }

    /// Creates several entries with one durable store write (one flush);
    /// each item's outcome in order. Events go out in revision order once
    /// the whole batch is durable.
    pub fn create_many(
        &self,
        specs: Vec<EntrySpec>,
        now: i64,
    ) -> StoreResult<Vec<StoreResult<Entry>>> {
        let _w = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let results = self.store.create_entries(specs, now)?;
        for e in results.iter().flatten() {
            self.record_local(EntryEvent::Upserted(e.clone()));
        }
        Ok(results)
    }

    /// Stores `spec` as entry `id`'s new content. An update that changes
    /// nothing writes nothing: the stored entry comes back with its
    /// revision, and no event goes out (agents re-issue nothing).
    pub fn update(&self, id: &str, mut spec: EntrySpec) -> StoreResult<Entry> {
        let w = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        // Under the write lock the index holds what the store holds.
        let old = self.get(id);
        spec.normalize();
        if let Some(old) = old.as_ref().filter(|old| old.spec == spec) {
            return Ok(Entry::clone(old));
        }
        self.locked_with(w, || {
            let old_parent = old.map(|e| e.spec.parent_id.clone());
            let e = self.store.update_entry(id, spec)?;
            let ev = match old_parent {
                Some(p) => EntryEvent::updated(&p, e.clone()),
                None => EntryEvent::Upserted(e.clone()),
            };
            Ok((e, ev))
        })
    }

    /// Deletes entry `id`. The deletion's revision is read back from the
    /// event log (with any other server's writes before it), as another
    /// server may write between the delete and a read of the revision.
    pub fn delete(&self, id: &str) -> StoreResult<Entry> {
        let _w = self.lock_writes();
        let e = self.store.delete_entry(id)?;
        if let Err(err) = self.catch_up_locked() {
            tracing::warn!(entry_id = id, error = %err,
                "reading back a deletion from the event log failed; the follower applies it");
        }
        Ok(e)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.read().entries.get(id).cloned()
    }

    pub fn revision(&self) -> u64 {
        self.read().revision
    }

    pub fn count(&self) -> u64 {
        self.read().entries.len() as u64
    }

    /// Every entry matching `filter`, ordered by id.
    pub fn list(&self, filter: &EntryFilter) -> Vec<Arc<Entry>> {
        let ix = self.read();
        let mut v: Vec<Arc<Entry>> = match &filter.parent_id {
            Some(p) => ix
                .children(p)
                .filter(|e| filter.matches(e))
                .cloned()
                .collect(),
            None => ix
                .entries
                .values()
                .filter(|e| filter.matches(e))
                .cloned()
                .collect(),
        };
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EntryEvent>> {
        self.events.subscribe()
    }

    pub fn server_id(&self) -> &SpiffeId {
        &self.server_id
    }

    /// True for a node entry (parented to the server).
    pub fn is_node_entry(&self, e: &Entry) -> bool {
        e.spec.parent_id == self.server_id
    }

    /// The agent's aliases and parents at the current revision.
    pub fn parents_for(
        &self,
        agent_id: &SpiffeId,
        node_selectors: &[Selector],
        now: i64,
    ) -> (Vec<SpiffeId>, HashSet<SpiffeId>) {
        self.parents_in(&self.read(), agent_id, node_selectors, now)
    }

    /// The agent's aliases (from the node entries in `ix`) and parents.
    fn parents_in(
        &self,
        ix: &Index,
        agent_id: &SpiffeId,
        node_selectors: &[Selector],
        now: i64,
    ) -> (Vec<SpiffeId>, HashSet<SpiffeId>) {
        let aliases = authz::aliases(
            ix.children(&self.server_id).map(AsRef::as_ref),
            node_selectors,
            now,
        );
        let parents = authz::parents(agent_id, &aliases);
        (aliases, parents)
    }

    /// Everything the agent is authorized for, at one consistent revision.
    pub fn view_for(
        &self,
        agent_id: &SpiffeId,
        node_selectors: &[Selector],
        now: i64,
    ) -> AgentView {
        let ix = self.read();
        let (aliases, parents) = self.parents_in(&ix, agent_id, node_selectors, now);
        let matching: Vec<&Arc<Entry>> = ix
            .children(&self.server_id)
            .filter(|e| is_subset(&e.spec.selectors, node_selectors))
            .collect();
        let mut reach = parents.clone();
        reach.extend(matching.iter().map(|e| e.spec.spiffe_id.clone()));
        let mut entries = Vec::new();
        let mut lapsed = Vec::new();
        for e in reach.iter().flat_map(|p| ix.children(p)) {
            if authz::is_authorized(e, &parents, now) {
                entries.push(e.clone());
            } else {
                lapsed.push(e.id.clone());
            }
        }
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        entries.dedup_by(|a, b| a.id == b.id);
        // Each entry has one parent, so it is in one of the two lists.
        lapsed.sort();
        let next_expiry = matching
            .iter()
            .copied()
            .chain(entries.iter())
            .filter_map(|e| e.spec.expires_at)
            .filter(|t| *t > now)
            .min();
        AgentView {
            revision: ix.revision,
            aliases,
            parents,
            entries,
            reach,
            lapsed,
            next_expiry,
        }
    }
}

#[cfg(test)]
mod tests;
