//! The embedded default store: [`SledStore`], the [`Store`] trait on sled 0.34.
//!
//! Layout: one sled tree per kind of record, values as JSON.
//!
//! | tree           | key                                   | value                    |
//! |----------------|---------------------------------------|--------------------------|
//! | `entries`      | entry id (32 hex chars)               | [`Entry`]                |
//! | `entry_index`  | [`EntrySpec::identity_key`]           | entry id                 |
//! | `entry_events` | revision, big-endian u64              | [`EntryEvent`]           |
//! | `meta`         | `entries_revision`, `events_pruned_upto`, `format_version` | big-endian u64 |
//! | `meta`         | `join_token_ids_hashed` (see `migrate`)  | big-endian u64 1         |
//! | `join_tokens`  | token hash                            | [`JoinTokenRecord`]      |
//! | `agents`       | agent SPIFFE ID                       | [`AttestedAgent`]        |
//! | `node_bans`    | ban rule (`x509pop:spki:sha256:<hex>`) | [`NodeBan`](super::NodeBan) |
//! | `bundles`      | trust domain name                     | [`BundleRecord`]         |
//! | `meta`         | `bundle_sequence_hwm:<trust domain>`  | big-endian u64: sequence of the last deleted bundle |
//! | `federations`  | trust domain name                     | [`FederationRecord`](super::FederationRecord) |
//! | `ca_journal`   | `journal`                             | [`CaJournal`]            |
//! | `ca_journal`   | `server/<instance id>`                | [`ServerRecord`](super::ServerRecord) |
//!
//! Changes that touch several trees run in one sled transaction, and every
//! write method flushes the database before it returns `Ok` (sled's own
//! periodic flushing is off), so an acknowledged write survives a crash; a
//! write whose flush fails is undone (`undo`) and reported as not stored.

//!
//! Opening (lock wait, layout version) is in `open`, entry creation in
//! `create`, the event log's paged reads and pruning in `events`, the
//! record encoding in `codec`.

mod codec;
mod create;
mod events;
mod migrate;
mod node_bans;
mod open;
mod servers;
#[cfg(test)]
mod tests;
mod undo;

use std::{fmt, path::PathBuf};

use ring::rand::SystemRandom;
use serde::de::DeserializeOwned;
use sigil_proto::{SpiffeId, TrustDomain};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use codec::{
    EntryRow, abort, decode, decode_all, decode_u64, encode, tx_decode, tx_encode, tx_log_event,
    tx_next_revision,
};

use super::{
    AttestedAgent, BundleRecord, CaJournal, FederationRecord, JoinTokenRecord, Store, StoreError,
    StoreResult,
};
use crate::entry::{Entry, EntryEvent, EntryFilter, EntrySpec};

const T_ENTRIES: &str = "entries";
const T_ENTRY_INDEX: &str = "entry_index";
const T_ENTRY_EVENTS: &str = "entry_events";
const T_META: &str = "meta";
const T_JOIN_TOKENS: &str = "join_tokens";
const T_AGENTS: &str = "agents";
const T_NODE_BANS: &str = "node_bans";
const T_BUNDLES: &str = "bundles";
const T_CA_JOURNAL: &str = "ca_journal";
const T_FEDERATIONS: &str = "federations";

/// `meta`: the store-wide entry revision (revision of the last change).
const K_REVISION: &str = "entries_revision";
/// `meta`: events with revision <= this value may have been pruned.
const K_PRUNED_UPTO: &str = "events_pruned_upto";
/// `meta`: the on-disk layout version, checked on open.
const K_FORMAT_VERSION: &str = "format_version";
/// `meta`: prefix of a trust domain's bundle sequence high-water mark.
const K_BUNDLE_HWM: &str = "bundle_sequence_hwm:";
/// `ca_journal`: the one key.
const K_JOURNAL: &str = "journal";

/// The layout described at the top of this file.
const FORMAT_VERSION: u64 = 1;

/// How many fresh ids to try if a random entry id is already taken (with
/// 128 random bits, the first one always fits in practice).
const ID_ATTEMPTS: usize = 4;

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// The sled-backed [`Store`].
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    entries: sled::Tree,
    entry_index: sled::Tree,
    entry_events: sled::Tree,
    meta: sled::Tree,
    join_tokens: sled::Tree,
    agents: sled::Tree,
    node_bans: sled::Tree,
    bundles: sled::Tree,
    ca_journal: sled::Tree,
    federations: sled::Tree,
    rng: SystemRandom,
    /// Test seam: how many of the next flushes fail.
    #[cfg(test)]
    failing_flushes: std::sync::atomic::AtomicUsize,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Makes every write so far durable.
    fn flush(&self) -> StoreResult<()> {
        #[cfg(test)]
        {
            use std::sync::atomic::Ordering::SeqCst;
            let f = |n: usize| n.checked_sub(1);
            if self.failing_flushes.fetch_update(SeqCst, SeqCst, f).is_ok() {
                return Err(StoreError::Io("flush failed (injected by a test)".into()));
            }
        }
        self.db.flush().map_err(|e| {
            StoreError::Io(format!(
                "flushing store at {} failed: {e}",
                self.path.display()
            ))
        })?;
        Ok(())
    }

    fn io(&self, e: sled::Error) -> StoreError {
        StoreError::Io(format!("store at {}: {e}", self.path.display()))
    }

    fn tx_error(&self, e: TransactionError<StoreError>) -> StoreError {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => self.io(e),
        }
    }

    fn get_json<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        name: &'static str,
        key: &str,
    ) -> StoreResult<Option<T>> {
        tree.get(key)
            .map_err(|e| self.io(e))?
            .map(|v| decode(name, key, &v))
            .transpose()
    }

    fn scan_json<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        name: &'static str,
    ) -> StoreResult<Vec<T>> {
        tree.iter()
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.io(e))?;
                decode(name, &String::from_utf8_lossy(&k), &v)
            })
            .collect()
    }

    fn meta_u64(&self, key: &'static str) -> StoreResult<u64> {
        self.meta_u64_key(key)
    }

    fn meta_u64_key(&self, key: &str) -> StoreResult<u64> {
        match self.meta.get(key).map_err(|e| self.io(e))? {
            Some(v) => decode_u64(T_META, key, &v),
            None => Ok(0),
        }
    }

    /// Removes `key` from `tree` and flushes (undone if that fails);
    /// `NotFound` naming `what` if it was not there.
    fn remove_flushed(&self, tree: &sled::Tree, key: &str, what: &'static str) -> StoreResult<()> {
        let Some(old) = tree.remove(key).map_err(|e| self.io(e))? else {
            return Err(StoreError::NotFound {
                what,
                key: key.to_string(),
            });
        };
        let undo = || self.undo_put(tree, what, key, None, Some(old));
        self.flush_or_undo(&format!("removal of {what} {key}"), undo)
    }
}

impl Store for SledStore {
    fn create_entry(&self, spec: EntrySpec, now: i64) -> StoreResult<Entry> {
        let entry = self.create_entry_unflushed(spec, now)?;
        let undo = || self.undo_entry(&entry.id, Some(entry.revision), None);
        self.flush_or_undo(&format!("new entry {}", entry.id), undo)?;
        Ok(entry)
    }

    fn create_entries(
        &self,
        specs: Vec<EntrySpec>,
        now: i64,
    ) -> StoreResult<Vec<StoreResult<Entry>>> {
        let results: Vec<StoreResult<Entry>> = specs
            .into_iter()
            .map(|spec| self.create_entry_unflushed(spec, now))
            .collect();
        // One flush for the whole batch, before any of it is acknowledged;
        // if it fails, none of the batch stays.
        let undo = || {
            let mut created = results.iter().rev().flatten();
            created.try_for_each(|e| self.undo_entry(&e.id, Some(e.revision), None))
        };
        self.flush_or_undo("batch of new entries", undo)?;
        Ok(results)
    }

    fn get_entry(&self, id: &str) -> StoreResult<Option<Entry>> {
        self.get_json(&self.entries, T_ENTRIES, id)
    }

    fn update_entry(&self, id: &str, mut spec: EntrySpec) -> StoreResult<Entry> {
        spec.normalize();
        let new_key = spec.identity_key();
        let (old, entry) = (
            &self.entries,
            &self.entry_index,
            &self.entry_events,
            &self.meta,
        )
            .transaction(|(entries, index, events, meta)| {
                let Some(old) = entries.get(id.as_bytes())? else {
                    return Err(abort(entry_not_found(id)));
                };
                let old: Entry = tx_decode(T_ENTRIES, id, &old)?;
                let old_key = old.spec.identity_key();
                if old_key != new_key {
                    let taken = index.get(new_key.as_bytes())?;
                    if let Some(other) = taken.filter(|other| other != id.as_bytes()) {
                        return Err(abort(duplicate(&spec, &other)));
                    }
                    if index.get(old_key.as_bytes())?.as_deref() == Some(id.as_bytes()) {
                        index.remove(old_key.as_bytes())?;
                    }
                    index.insert(new_key.as_bytes(), id.as_bytes())?;
                }
                let revision = tx_next_revision(meta)?;
                let entry = Entry {
                    spec: spec.clone(),
                    revision,
                    ..old.clone()
                };
                entries.insert(id.as_bytes(), tx_encode(T_ENTRIES, id, &entry)?)?;
                let event = EntryEvent::updated(&old.spec.parent_id, entry.clone());
                tx_log_event(events, revision, &event)?;
                Ok((old, entry))
            })
            .map_err(|e| self.tx_error(e))?;
        let undo = || self.undo_entry(id, Some(entry.revision), Some(&old));
        self.flush_or_undo(&format!("change of entry {id}"), undo)?;
        Ok(entry)
    }

    fn delete_entry(&self, id: &str) -> StoreResult<Entry> {
        let entry = (
            &self.entries,
            &self.entry_index,
            &self.entry_events,
            &self.meta,
        )
            .transaction(|(entries, index, events, meta)| {
                let Some(old) = entries.remove(id.as_bytes())? else {
                    return Err(abort(entry_not_found(id)));
                };
                let old: Entry = tx_decode(T_ENTRIES, id, &old)?;
                let key = old.spec.identity_key();
                if index.get(key.as_bytes())?.as_deref() == Some(id.as_bytes()) {
                    index.remove(key.as_bytes())?;
                }
                let revision = tx_next_revision(meta)?;
                let event = EntryEvent::Deleted(Entry {
                    revision,
                    ..old.clone()
                });
                tx_log_event(events, revision, &event)?;
                Ok(old)
            })
            .map_err(|e| self.tx_error(e))?;
        let undo = || self.undo_entry(id, None, Some(&entry));
        self.flush_or_undo(&format!("removal of entry {id}"), undo)?;
        Ok(entry)
    }

    fn list_entries(&self, filter: &EntryFilter) -> StoreResult<Vec<Entry>> {
        let Some(spiffe_id) = &filter.spiffe_id else {
            // The whole table (the server's start): decoding dominates, so
            // it is spread over the cores.
            let raw = self
                .entries
                .iter()
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.io(e))?;
            let mut all: Vec<Entry> = decode_all::<EntryRow>(T_ENTRIES, &raw)?
                .into_iter()
                .map(Entry::from)
                .collect();
            all.retain(|e| filter.matches(e));
            return Ok(all);
        };
        // The identity key starts with the SPIFFE ID and a NUL (which no
        // SPIFFE ID contains), so a prefix scan of the index finds exactly
        // the entries with this SPIFFE ID.
        let prefix = format!("{spiffe_id}\u{0}");
        let mut found = Vec::new();
        for kv in self.entry_index.scan_prefix(prefix.as_bytes()) {
            let (k, id) = kv.map_err(|e| self.io(e))?;
            let id = String::from_utf8(id.to_vec()).map_err(|_| {
                StoreError::Corrupt(format!(
                    "tree {T_ENTRY_INDEX} key {:?}: entry id is not UTF-8",
                    String::from_utf8_lossy(&k)
                ))
            })?;
            // A concurrent delete may have removed the entry since the scan
            // saw the index key: skip it, as if the scan had come later.
            if let Some(entry) = self.get_entry(&id)?.filter(|e| filter.matches(e)) {
                found.push(entry);
            }
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found.dedup_by(|a, b| a.id == b.id);
        Ok(found)
    }

    fn count_entries(&self) -> StoreResult<u64> {
        Ok(self.entries.len() as u64)
    }

    fn entries_revision(&self) -> StoreResult<u64> {
        self.meta_u64(K_REVISION)
    }

    fn entry_events_since(&self, after: u64) -> StoreResult<Option<Vec<EntryEvent>>> {
        self.entry_events_page(after, usize::MAX)
    }

    fn entry_events_page(&self, after: u64, limit: usize) -> StoreResult<Option<Vec<EntryEvent>>> {
        self.read_events_page(after, limit)
    }

    fn prune_entry_events(&self, upto: u64) -> StoreResult<()> {
        self.prune_events(upto)
    }

    fn create_join_token(&self, token: JoinTokenRecord) -> StoreResult<()> {
        let key = token.token_hash.clone();
        let value = encode(T_JOIN_TOKENS, &token_label(&key), &token)?;
        (&self.join_tokens,)
            .transaction(|(tokens,)| {
                if tokens.get(key.as_bytes())?.is_some() {
                    return Err(abort(StoreError::AlreadyExists {
                        what: "join token",
                        key: token_label(&key),
                    }));
                }
                tokens.insert(key.as_bytes(), value.as_slice())?;
                Ok(())
            })
            .map_err(|e| self.tx_error(e))?;
        let undo = || self.undo_put(&self.join_tokens, "join token", &key, Some(&value), None);
        self.flush_or_undo("new join token", undo)
    }

    fn consume_join_token(&self, token_hash: &str, now: i64) -> StoreResult<JoinTokenRecord> {
        let (raw, token): (sled::IVec, JoinTokenRecord) = (&self.join_tokens,)
            .transaction(|(tokens,)| {
                let Some(v) = tokens.remove(token_hash.as_bytes())? else {
                    return Err(abort(StoreError::NotFound {
                        what: "join token",
                        key: token_label(token_hash),
                    }));
                };
                Ok((
                    v.clone(),
                    tx_decode(T_JOIN_TOKENS, &token_label(token_hash), &v)?,
                ))
            })
            .map_err(|e| self.tx_error(e))?;
        // The removal is committed either way: an expired token is gone too.
        // Not durable, it is undone: the token was not spent.
        let undo = || self.undo_put(&self.join_tokens, "join token", token_hash, None, Some(raw));
        self.flush_or_undo("use of a join token", undo)?;
        if token_expired(&token, now) {
            return Err(StoreError::TokenExpired);
        }
        Ok(token)
    }

    fn prune_join_tokens(&self, now: i64) -> StoreResult<usize> {
        let mut removed = 0;
        for kv in self.join_tokens.iter() {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            let label = token_label(&String::from_utf8_lossy(&k));
            let token: JoinTokenRecord = decode(T_JOIN_TOKENS, &label, &v)?;
            if token_expired(&token, now) {
                // Only if nobody consumed (or replaced) it meanwhile.
                let swapped = self
                    .join_tokens
                    .compare_and_swap(&k, Some(&v), None::<&[u8]>)
                    .map_err(|e| self.io(e))?;
                if swapped.is_ok() {
                    removed += 1;
                }
            }
        }
        self.flush()?;
        Ok(removed)
    }

    fn put_agent(&self, agent: &AttestedAgent) -> StoreResult<()> {
        let key = agent.spiffe_id.as_str();
        let value = encode(T_AGENTS, key, agent)?;
        let old = self.agents.insert(key, value.as_slice());
        let old = old.map_err(|e| self.io(e))?;
        let undo = || self.undo_put(&self.agents, "agent", key, Some(&value), old);
        self.flush_or_undo(&format!("record of agent {key}"), undo)
    }

    fn swap_agent(&self, expected: Option<&AttestedAgent>, new: &AttestedAgent) -> StoreResult<()> {
        let key = new.spiffe_id.as_str();
        let value = encode(T_AGENTS, key, new)?;
        let old = (&self.agents,)
            .transaction(|(agents,)| {
                let raw = node_bans::tx_expect_agent(agents, key, expected)?;
                agents.insert(key.as_bytes(), value.as_slice())?;
                Ok(raw)
            })
            .map_err(|e| self.tx_error(e))?;
        let undo = || self.undo_put(&self.agents, "agent", key, Some(&value), old);
        self.flush_or_undo(&format!("record of agent {key}"), undo)
    }

    fn get_agent(&self, id: &SpiffeId) -> StoreResult<Option<AttestedAgent>> {
        self.get_json(&self.agents, T_AGENTS, id.as_str())
    }

    fn list_agents(&self) -> StoreResult<Vec<AttestedAgent>> {
        self.scan_json(&self.agents, T_AGENTS)
    }

    fn delete_agent(&self, id: &SpiffeId) -> StoreResult<()> {
        self.remove_flushed(&self.agents, id.as_str(), "agent")
    }

    fn admit_agent(&self, old: Option<&AttestedAgent>, new: &AttestedAgent) -> StoreResult<()> {
        self.admit_agent_swap(old, new)
    }

    fn swap_agent_ban(
        &self,
        old: &AttestedAgent,
        new: &AttestedAgent,
        now: i64,
    ) -> StoreResult<()> {
        self.swap_agent_ban_tx(old, new, now)
    }

    fn clear_node_bans_of(&self, agent: &SpiffeId) -> StoreResult<usize> {
        self.clear_node_bans(agent)
    }

    fn list_node_bans(&self) -> StoreResult<Vec<super::NodeBan>> {
        self.scan_json(&self.node_bans, T_NODE_BANS)
    }

    fn get_bundle(&self, td: &TrustDomain) -> StoreResult<Option<BundleRecord>> {
        self.get_json(&self.bundles, T_BUNDLES, td.as_str())
    }

    fn put_bundle(&self, bundle: BundleRecord) -> StoreResult<BundleRecord> {
        self.put_bundle_if(bundle, None)
    }

    fn list_bundles(&self) -> StoreResult<Vec<BundleRecord>> {
        self.scan_json(&self.bundles, T_BUNDLES)
    }

    fn delete_bundle(&self, td: &TrustDomain) -> StoreResult<()> {
        // The high-water mark first: written alone it is harmless (a
        // sequence may skip numbers, never repeat one).
        if let Some(old) = self.get_bundle(td)? {
            let hwm_key = format!("{K_BUNDLE_HWM}{td}");
            let hwm = self.meta_u64_key(&hwm_key)?.max(old.sequence);
            self.meta
                .insert(hwm_key.as_bytes(), &hwm.to_be_bytes())
                .map_err(|e| self.io(e))?;
        }
        self.remove_flushed(&self.bundles, td.as_str(), "bundle")
    }

    fn put_federation(&self, rel: &FederationRecord) -> StoreResult<()> {
        let key = rel.trust_domain.as_str();
        let bytes = encode(T_FEDERATIONS, key, rel)?;
        let old = self
            .federations
            .insert(key, bytes.as_slice())
            .map_err(|e| self.io(e))?;
        let undo = || self.undo_put(&self.federations, "federation", key, Some(&bytes), old);
        self.flush_or_undo(&format!("federation relationship {key}"), undo)
    }

    fn get_federation(&self, td: &TrustDomain) -> StoreResult<Option<FederationRecord>> {
        self.get_json(&self.federations, T_FEDERATIONS, td.as_str())
    }

    fn list_federations(&self) -> StoreResult<Vec<FederationRecord>> {
        self.scan_json(&self.federations, T_FEDERATIONS)
    }

    fn delete_federation(&self, td: &TrustDomain) -> StoreResult<()> {
        self.remove_flushed(&self.federations, td.as_str(), "federation relationship")
    }

    fn get_ca_journal(&self) -> StoreResult<CaJournal> {
        Ok(self
            .get_json(&self.ca_journal, T_CA_JOURNAL, K_JOURNAL)?
            .unwrap_or_default())
    }

    fn put_ca_journal(&self, journal: &CaJournal) -> StoreResult<CaJournal> {
        let (old, stored) = (&self.ca_journal,)
            .transaction(|(tree,)| {
                let old = match tree.get(K_JOURNAL)? {
                    Some(v) => tx_decode::<CaJournal>(T_CA_JOURNAL, K_JOURNAL, &v)?,
                    None => CaJournal::default(),
                };
                let found = old.version;
                if found != journal.version {
                    return Err(abort(StoreError::Conflict {
                        what: "CA journal",
                        expected: journal.version,
                        found,
                    }));
                }
                let new = CaJournal {
                    version: found + 1,
                    ..journal.clone()
                };
                tree.insert(K_JOURNAL, tx_encode(T_CA_JOURNAL, K_JOURNAL, &new)?)?;
                Ok((old, new))
            })
            .map_err(|e| self.tx_error(e))?;
        let undo = || self.undo_journal(&stored, &old);
        self.flush_or_undo("CA journal", undo)?;
        Ok(stored)
    }

    fn list_servers(&self) -> StoreResult<Vec<super::ServerRecord>> {
        self.list_server_records()
    }

    fn get_server(&self, instance_id: &str) -> StoreResult<Option<super::ServerRecord>> {
        self.get_server_record(instance_id)
    }

    fn swap_server(
        &self,
        instance_id: &str,
        expected: Option<&super::ServerRecord>,
        new: Option<&super::ServerRecord>,
    ) -> StoreResult<()> {
        self.swap_server_record(instance_id, expected, new)
    }

    fn swap_bundle(
        &self,
        expected: Option<u64>,
        bundle: BundleRecord,
    ) -> StoreResult<BundleRecord> {
        self.put_bundle_if(bundle, Some(expected))
    }
}

/// An expired token is one whose expiry time has come.
fn token_expired(token: &JoinTokenRecord, now: i64) -> bool {
    token.expires_at <= now
}

/// How a token hash appears in errors: a prefix, enough to tell tokens apart.
fn token_label(hash: &str) -> String {
    let prefix: String = hash.chars().take(12).collect();
    format!("sha256:{prefix}…")
}

fn entry_not_found(id: &str) -> StoreError {
    StoreError::NotFound {
        what: "entry",
        key: id.to_string(),
    }
}

fn duplicate(spec: &EntrySpec, existing_id: &[u8]) -> StoreError {
    StoreError::AlreadyExists {
        what: "entry",
        key: format!(
            "{} with parent {} and the same selectors (entry {})",
            spec.spiffe_id,
            spec.parent_id,
            String::from_utf8_lossy(existing_id)
        ),
    }
}
