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
//! | `join_tokens`  | token hash                            | [`JoinTokenRecord`]      |
//! | `agents`       | agent SPIFFE ID                       | [`AttestedAgent`]        |
//! | `bundles`      | trust domain name                     | [`BundleRecord`]         |
//! | `ca_journal`   | `journal`                             | [`CaJournal`]            |
//!
//! Changes that touch several trees run in one sled transaction, and every
//! write method flushes the database before it returns `Ok` (sled on its own
//! only flushes about every 500 ms), so an acknowledged write survives a crash.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sigil_proto::{SpiffeId, TrustDomain};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::{
    AttestedAgent, BundleRecord, CaJournal, JoinTokenRecord, Store, StoreError, StoreResult,
};
use crate::entry::{Entry, EntryEvent, EntryFilter, EntrySpec};

const T_ENTRIES: &str = "entries";
const T_ENTRY_INDEX: &str = "entry_index";
const T_ENTRY_EVENTS: &str = "entry_events";
const T_META: &str = "meta";
const T_JOIN_TOKENS: &str = "join_tokens";
const T_AGENTS: &str = "agents";
const T_BUNDLES: &str = "bundles";
const T_CA_JOURNAL: &str = "ca_journal";

/// `meta`: the store-wide entry revision (revision of the last change).
const K_REVISION: &str = "entries_revision";
/// `meta`: events with revision <= this value may have been pruned.
const K_PRUNED_UPTO: &str = "events_pruned_upto";
/// `meta`: the on-disk layout version, checked on open.
const K_FORMAT_VERSION: &str = "format_version";
/// `ca_journal`: the one key.
const K_JOURNAL: &str = "journal";

/// The layout described at the top of this file.
const FORMAT_VERSION: u64 = 1;

/// How many fresh ids to try if a random entry id is already taken (with
/// 128 random bits, the first one always fits in practice).
const ID_ATTEMPTS: usize = 4;

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// How long [`SledStore::open`] keeps trying while the directory's lock is
/// held. sled releases its file lock only when the last internal reference
/// to the file goes (its thread-pool writes and deferred epoch garbage), a
/// moment after the previous `SledStore` on the directory was dropped; a
/// child process being spawned also holds the file until its `exec`.
/// Another running server holds the lock for good and is reported after
/// this wait.
const LOCK_WAIT: Duration = Duration::from_secs(3);
const LOCK_RETRY: Duration = Duration::from_millis(10);

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
    bundles: sled::Tree,
    ca_journal: sled::Tree,
    rng: SystemRandom,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens the database in directory `path`, creating it if needed.
    ///
    /// Fails with [`StoreError::Io`] naming the path if the directory stays
    /// locked by another process (or another `SledStore` in this one) for
    /// [`LOCK_WAIT`], if
    /// `path` is not a directory, or if it cannot be read; with
    /// [`StoreError::Corrupt`] if sled finds corruption or the layout version
    /// is not this build's.
    pub fn open(path: &Path) -> StoreResult<SledStore> {
        let shown = path.display();
        match std::fs::metadata(path) {
            Ok(m) if !m.is_dir() => {
                return Err(StoreError::Io(format!(
                    "cannot open store at {shown}: it exists and is not a directory"
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Io(format!("cannot open store at {shown}: {e}")));
            }
        }
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::Config::new().path(path).open() {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) && Instant::now() < deadline => {
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(e) => return Err(open_error(path, e)),
            }
        };
        let tree = |name: &str| db.open_tree(name).map_err(|e| open_error(path, e));
        let store = SledStore {
            path: path.to_path_buf(),
            entries: tree(T_ENTRIES)?,
            entry_index: tree(T_ENTRY_INDEX)?,
            entry_events: tree(T_ENTRY_EVENTS)?,
            meta: tree(T_META)?,
            join_tokens: tree(T_JOIN_TOKENS)?,
            agents: tree(T_AGENTS)?,
            bundles: tree(T_BUNDLES)?,
            ca_journal: tree(T_CA_JOURNAL)?,
            rng: SystemRandom::new(),
            db,
        };
        store.check_format()?;
        tracing::debug!(path = %shown, "store opened");
        Ok(store)
    }

    /// The directory this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the layout version in a new store; refuses another version.
    fn check_format(&self) -> StoreResult<()> {
        let found = self
            .meta
            .get(K_FORMAT_VERSION)
            .map_err(|e| self.io(e))?
            .map(|v| decode_u64(T_META, K_FORMAT_VERSION, &v))
            .transpose()?;
        match found {
            Some(FORMAT_VERSION) => Ok(()),
            Some(other) => Err(StoreError::Corrupt(format!(
                "store at {} has layout version {other}; this build reads version {FORMAT_VERSION}",
                self.path.display()
            ))),
            None => {
                self.meta
                    .insert(K_FORMAT_VERSION, &FORMAT_VERSION.to_be_bytes())
                    .map_err(|e| self.io(e))?;
                self.flush()
            }
        }
    }

    /// Makes every write so far durable.
    fn flush(&self) -> StoreResult<()> {
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

    fn new_entry_id(&self) -> StoreResult<String> {
        let mut bytes = [0u8; 16];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| StoreError::Io("the system random generator failed".to_string()))?;
        Ok(hex::encode(bytes))
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
        match self.meta.get(key).map_err(|e| self.io(e))? {
            Some(v) => decode_u64(T_META, key, &v),
            None => Ok(0),
        }
    }

    /// One attempt at creating an entry with id `id`: `None` if the id is
    /// taken (nothing written).
    fn try_create_entry(&self, id: &str, spec: &EntrySpec, now: i64) -> StoreResult<Option<Entry>> {
        let key = spec.identity_key();
        (
            &self.entries,
            &self.entry_index,
            &self.entry_events,
            &self.meta,
        )
            .transaction(|(entries, index, events, meta)| {
                if let Some(existing) = index.get(key.as_bytes())? {
                    return Err(abort(duplicate(spec, &existing)));
                }
                if entries.get(id.as_bytes())?.is_some() {
                    return Ok(None);
                }
                let revision = tx_next_revision(meta)?;
                let entry = Entry {
                    id: id.to_string(),
                    spec: spec.clone(),
                    revision,
                    created_at: now,
                };
                entries.insert(id.as_bytes(), tx_encode(T_ENTRIES, id, &entry)?)?;
                index.insert(key.as_bytes(), id.as_bytes())?;
                let event = EntryEvent::Upserted(entry.clone());
                events.insert(
                    &revision.to_be_bytes(),
                    tx_encode(T_ENTRY_EVENTS, &revision.to_string(), &event)?,
                )?;
                Ok(Some(entry))
            })
            .map_err(|e| self.tx_error(e))
    }
}

impl SledStore {
    /// Removes `key` from `tree` and flushes; `NotFound` naming `what` if
    /// it was not there.
    fn remove_flushed(&self, tree: &sled::Tree, key: &str, what: &'static str) -> StoreResult<()> {
        if tree.remove(key).map_err(|e| self.io(e))?.is_none() {
            return Err(StoreError::NotFound {
                what,
                key: key.to_string(),
            });
        }
        self.flush()
    }
}

impl SledStore {
    /// Creates one entry without flushing.
    fn create_entry_unflushed(&self, mut spec: EntrySpec, now: i64) -> StoreResult<Entry> {
        spec.normalize();
        for _ in 0..ID_ATTEMPTS {
            let id = self.new_entry_id()?;
            if let Some(entry) = self.try_create_entry(&id, &spec, now)? {
                return Ok(entry);
            }
        }
        Err(StoreError::Io(format!(
            "no free entry id after {ID_ATTEMPTS} random tries: is the random generator broken?"
        )))
    }
}

impl Store for SledStore {
    fn create_entry(&self, spec: EntrySpec, now: i64) -> StoreResult<Entry> {
        let entry = self.create_entry_unflushed(spec, now)?;
        self.flush()?;
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
        // One flush for the whole batch, before any of it is acknowledged.
        self.flush()?;
        Ok(results)
    }

    fn get_entry(&self, id: &str) -> StoreResult<Option<Entry>> {
        self.get_json(&self.entries, T_ENTRIES, id)
    }

    fn update_entry(&self, id: &str, mut spec: EntrySpec) -> StoreResult<Entry> {
        spec.normalize();
        let new_key = spec.identity_key();
        let entry = (
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
                    id: old.id,
                    spec: spec.clone(),
                    revision,
                    created_at: old.created_at,
                };
                entries.insert(id.as_bytes(), tx_encode(T_ENTRIES, id, &entry)?)?;
                let event = EntryEvent::Upserted(entry.clone());
                events.insert(
                    &revision.to_be_bytes(),
                    tx_encode(T_ENTRY_EVENTS, &revision.to_string(), &event)?,
                )?;
                Ok(entry)
            })
            .map_err(|e| self.tx_error(e))?;
        self.flush()?;
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
                events.insert(
                    &revision.to_be_bytes(),
                    tx_encode(T_ENTRY_EVENTS, &revision.to_string(), &event)?,
                )?;
                Ok(old)
            })
            .map_err(|e| self.tx_error(e))?;
        self.flush()?;
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
        // Read the revision first: its event and every earlier one were
        // committed with it, so the scan below sees them unless pruned.
        let current = self.entries_revision()?;
        if after > current {
            // The caller's revision comes from another history (a restored
            // backup, a different store): only a full sync is safe.
            return Ok(None);
        }
        let start = after.saturating_add(1).to_be_bytes();
        let end = current.to_be_bytes();
        let mut events = Vec::new();
        for kv in self.entry_events.range(start..=end) {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            let revision = decode_u64(T_ENTRY_EVENTS, &format!("{k:?}"), &k)?;
            let event: EntryEvent = decode(T_ENTRY_EVENTS, &revision.to_string(), &v)?;
            if event.revision() != revision {
                return Err(StoreError::Corrupt(format!(
                    "tree {T_ENTRY_EVENTS} key {revision}: event carries revision {}",
                    event.revision()
                )));
            }
            events.push(event);
        }
        // Read the low-water mark after the scan: pruning raises it before
        // removing events, so an event the scan missed shows up here.
        if after < self.meta_u64(K_PRUNED_UPTO)? {
            return Ok(None);
        }
        if events.len() as u64 != current - after {
            return Err(StoreError::Corrupt(format!(
                "tree {T_ENTRY_EVENTS}: {} events between revisions {after} and {current}, expected {}",
                events.len(),
                current - after
            )));
        }
        Ok(Some(events))
    }

    fn prune_entry_events(&self, upto: u64) -> StoreResult<()> {
        // Raise the low-water mark first (never past the current revision:
        // events that do not exist yet are not pruned), then drop the events.
        let mark = (&self.meta,)
            .transaction(|(meta,)| {
                let current = tx_meta_u64(meta, K_REVISION)?;
                let old = tx_meta_u64(meta, K_PRUNED_UPTO)?;
                let mark = old.max(upto.min(current));
                if mark != old {
                    meta.insert(K_PRUNED_UPTO, &mark.to_be_bytes())?;
                }
                Ok(mark)
            })
            .map_err(|e| self.tx_error(e))?;
        let end = mark.to_be_bytes();
        for kv in self.entry_events.range(..=end) {
            let (k, _) = kv.map_err(|e| self.io(e))?;
            self.entry_events.remove(k).map_err(|e| self.io(e))?;
        }
        self.flush()
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
        self.flush()
    }

    fn consume_join_token(&self, token_hash: &str, now: i64) -> StoreResult<JoinTokenRecord> {
        let token: JoinTokenRecord = (&self.join_tokens,)
            .transaction(|(tokens,)| {
                let Some(v) = tokens.remove(token_hash.as_bytes())? else {
                    return Err(abort(StoreError::NotFound {
                        what: "join token",
                        key: token_label(token_hash),
                    }));
                };
                tx_decode(T_JOIN_TOKENS, &token_label(token_hash), &v)
            })
            .map_err(|e| self.tx_error(e))?;
        // The removal is committed either way: an expired token is gone too.
        self.flush()?;
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
        self.agents.insert(key, value).map_err(|e| self.io(e))?;
        self.flush()
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

    fn get_bundle(&self, td: &TrustDomain) -> StoreResult<Option<BundleRecord>> {
        self.get_json(&self.bundles, T_BUNDLES, td.as_str())
    }

    fn put_bundle(&self, bundle: BundleRecord) -> StoreResult<BundleRecord> {
        let key = bundle.trust_domain.as_str().to_string();
        let stored = (&self.bundles,)
            .transaction(|(bundles,)| {
                let old: Option<BundleRecord> = bundles
                    .get(key.as_bytes())?
                    .map(|v| tx_decode(T_BUNDLES, &key, &v))
                    .transpose()?;
                let sequence = match &old {
                    Some(old)
                        if old.x509_authorities == bundle.x509_authorities
                            && old.jwt_authorities == bundle.jwt_authorities
                            && old.tainted_key_ids == bundle.tainted_key_ids =>
                    {
                        return Ok(old.clone());
                    }
                    Some(old) => old.sequence + 1,
                    None => 1,
                };
                let new = BundleRecord {
                    sequence,
                    ..bundle.clone()
                };
                bundles.insert(key.as_bytes(), tx_encode(T_BUNDLES, &key, &new)?)?;
                Ok(new)
            })
            .map_err(|e| self.tx_error(e))?;
        self.flush()?;
        Ok(stored)
    }

    fn list_bundles(&self) -> StoreResult<Vec<BundleRecord>> {
        self.scan_json(&self.bundles, T_BUNDLES)
    }

    fn delete_bundle(&self, td: &TrustDomain) -> StoreResult<()> {
        self.remove_flushed(&self.bundles, td.as_str(), "bundle")
    }

    fn get_ca_journal(&self) -> StoreResult<CaJournal> {
        Ok(self
            .get_json(&self.ca_journal, T_CA_JOURNAL, K_JOURNAL)?
            .unwrap_or_default())
    }

    fn put_ca_journal(&self, journal: &CaJournal) -> StoreResult<CaJournal> {
        let stored = (&self.ca_journal,)
            .transaction(|(tree,)| {
                let found = match tree.get(K_JOURNAL)? {
                    Some(v) => tx_decode::<CaJournal>(T_CA_JOURNAL, K_JOURNAL, &v)?.version,
                    None => 0,
                };
                if found != journal.version {
                    return Err(abort(StoreError::Conflict {
                        what: "CA journal",
                        expected: journal.version,
                        found,
                    }));
                }
                let new = CaJournal {
                    version: found + 1,
                    slots: journal.slots.clone(),
                };
                tree.insert(K_JOURNAL, tx_encode(T_CA_JOURNAL, K_JOURNAL, &new)?)?;
                Ok(new)
            })
            .map_err(|e| self.tx_error(e))?;
        self.flush()?;
        Ok(stored)
    }
}

/// True for sled's "directory locked" error. sled 0.34 reports a held lock
/// as an `Other` I/O error with this text (config.rs, `try_lock`); there is
/// no structured variant.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Maps a sled error from opening the database to a message naming `path`.
fn open_error(path: &Path, e: sled::Error) -> StoreError {
    let shown = path.display();
    if is_lock_error(&e) {
        return StoreError::Io(format!(
            "store at {shown} is in use by another process (its lock is held); \
             stop the other sigil-server or use another data_dir"
        ));
    }
    match e {
        sled::Error::Io(io) => StoreError::Io(format!("cannot open store at {shown}: {io}")),
        sled::Error::Corruption { .. } => StoreError::Corrupt(format!(
            "store at {shown} is corrupt or not a sigil store: {e}"
        )),
        other => StoreError::Io(format!("cannot open store at {shown}: {other}")),
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

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

/// An [`Entry`] as stored, field for field: the same JSON as `Entry`'s
/// own (whose spec is `#[serde(flatten)]`), decoded without flatten's
/// intermediate buffering, which made loading every entry at start several
/// times slower.
#[derive(serde::Deserialize)]
struct EntryRow {
    id: String,
    spiffe_id: SpiffeId,
    parent_id: SpiffeId,
    selectors: Vec<sigil_proto::Selector>,
    x509_svid_ttl: u64,
    jwt_svid_ttl: u64,
    dns_names: Vec<String>,
    federates_with: Vec<TrustDomain>,
    hint: String,
    admin: bool,
    downstream: bool,
    expires_at: Option<i64>,
    revision: u64,
    created_at: i64,
}

impl From<EntryRow> for Entry {
    fn from(r: EntryRow) -> Entry {
        Entry {
            id: r.id,
            spec: EntrySpec {
                spiffe_id: r.spiffe_id,
                parent_id: r.parent_id,
                selectors: r.selectors,
                x509_svid_ttl: r.x509_svid_ttl,
                jwt_svid_ttl: r.jwt_svid_ttl,
                dns_names: r.dns_names,
                federates_with: r.federates_with,
                hint: r.hint,
                admin: r.admin,
                downstream: r.downstream,
                expires_at: r.expires_at,
            },
            revision: r.revision,
            created_at: r.created_at,
        }
    }
}

/// Below this many records, [`decode_all`] stays on the calling thread.
const PARALLEL_DECODE_MIN: usize = 4096;

/// Decodes every `(key, value)` record, in order, on all cores for large
/// sets.
fn decode_all<T: DeserializeOwned + Send>(
    tree: &'static str,
    raw: &[(sled::IVec, sled::IVec)],
) -> StoreResult<Vec<T>> {
    let one = |(k, v): &(sled::IVec, sled::IVec)| -> StoreResult<T> {
        serde_json::from_slice(v).map_err(|e| {
            StoreError::Corrupt(format!(
                "tree {tree} key {}: {e}",
                String::from_utf8_lossy(k)
            ))
        })
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if raw.len() < PARALLEL_DECODE_MIN || threads < 2 {
        return raw.iter().map(one).collect();
    }
    let chunk = raw.len().div_ceil(threads);
    let parts: Vec<StoreResult<Vec<T>>> = std::thread::scope(|s| {
        let handles: Vec<_> = raw
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(one).collect::<StoreResult<Vec<T>>>()))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(StoreError::Corrupt(format!(
                        "tree {tree}: decoding a record panicked"
                    )))
                })
            })
            .collect()
    });
    let mut out = Vec::with_capacity(raw.len());
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

fn decode<T: DeserializeOwned>(tree: &str, key: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("tree {tree} key {key}: {e}")))
}

fn encode<T: Serialize>(tree: &str, key: &str, value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| StoreError::Corrupt(format!("tree {tree} key {key}: cannot encode: {e}")))
}

fn decode_u64(tree: &str, key: &str, bytes: &[u8]) -> StoreResult<u64> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| {
        StoreError::Corrupt(format!(
            "tree {tree} key {key}: expected an 8-byte counter, found {} bytes",
            bytes.len()
        ))
    })?;
    Ok(u64::from_be_bytes(arr))
}

fn tx_decode<T: DeserializeOwned>(tree: &str, key: &str, bytes: &[u8]) -> TxResult<T> {
    decode(tree, key, bytes).map_err(abort)
}

fn tx_encode<T: Serialize>(tree: &str, key: &str, value: &T) -> TxResult<Vec<u8>> {
    encode(tree, key, value).map_err(abort)
}

fn tx_meta_u64(meta: &TransactionalTree, key: &str) -> TxResult<u64> {
    match meta.get(key)? {
        Some(v) => decode_u64(T_META, key, &v).map_err(abort),
        None => Ok(0),
    }
}

/// Increments the store-wide entry revision inside a transaction and
/// returns the new value.
fn tx_next_revision(meta: &TransactionalTree) -> TxResult<u64> {
    let revision = tx_meta_u64(meta, K_REVISION)? + 1;
    meta.insert(K_REVISION, &revision.to_be_bytes())?;
    Ok(revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{StoreFactory, StoreLocation};

    /// The bulk-load row reads exactly what `Entry` writes, every field.
    #[test]
    fn entry_row_decodes_what_entry_encodes() {
        let entry = Entry {
            id: "0123456789abcdef0123456789abcdef".into(),
            spec: EntrySpec {
                spiffe_id: SpiffeId::parse("spiffe://example.org/w").unwrap(),
                parent_id: SpiffeId::parse("spiffe://example.org/p").unwrap(),
                selectors: vec![sigil_proto::Selector::parse("unix:uid:1").unwrap()],
                x509_svid_ttl: 60,
                jwt_svid_ttl: 30,
                dns_names: vec!["w.example.org".into()],
                federates_with: vec![TrustDomain::parse("other.org").unwrap()],
                hint: "h".into(),
                admin: true,
                downstream: true,
                expires_at: Some(99),
            },
            revision: 7,
            created_at: 5,
        };
        let json = serde_json::to_vec(&entry).unwrap();
        let row: EntryRow = serde_json::from_slice(&json).unwrap();
        assert_eq!(Entry::from(row), entry);
        let many: Vec<(sled::IVec, sled::IVec)> = (0..PARALLEL_DECODE_MIN + 3)
            .map(|i| (i.to_string().as_bytes().into(), json.as_slice().into()))
            .collect();
        let decoded = decode_all::<EntryRow>(T_ENTRIES, &many).unwrap();
        assert_eq!(
            decoded.len(),
            many.len(),
            "a parallel decode keeps every record"
        );
    }

    /// A fresh temporary directory per location; removed when dropped.
    struct SledLocation {
        dir: tempfile::TempDir,
    }

    impl StoreLocation for SledLocation {
        fn open(&self) -> Box<dyn Store> {
            Box::new(SledStore::open(self.dir.path()).expect("open sled store in temp dir"))
        }
    }

    struct SledFactory;

    impl StoreFactory for SledFactory {
        fn fresh(&self) -> Box<dyn StoreLocation> {
            Box::new(SledLocation {
                dir: tempfile::tempdir().expect("create temp dir"),
            })
        }
    }

    crate::store_conformance_tests!(SledFactory);

    #[test]
    fn locked_directory_is_reported_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let first = SledStore::open(dir.path()).unwrap();
        let err = SledStore::open(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Io(_)), "{err:?}");
        assert!(msg.contains("in use by another process"), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        drop(first);
        // Released on drop: the same directory opens again.
        SledStore::open(dir.path()).unwrap();
    }

    #[test]
    fn regular_file_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"hello").unwrap();
        let err = SledStore::open(&file).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Io(_)), "{err:?}");
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert!(msg.contains("not a directory"), "{msg}");
    }

    #[test]
    fn garbage_database_is_refused_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("conf"), b"\xff\xfe garbage").unwrap();
        std::fs::write(dir.path().join("db"), vec![0xa5u8; 4096]).unwrap();
        let err = SledStore::open(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    }

    #[test]
    fn corrupt_record_names_tree_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.entries.insert("abc", &b"{not json"[..]).unwrap();
        let err = store.get_entry("abc").unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("entries") && msg.contains("abc"), "{msg}");
        store.meta.insert(K_REVISION, &b"\x01"[..]).unwrap();
        let err = store.entries_revision().unwrap_err();
        assert!(err.to_string().contains(K_REVISION), "{err}");
    }

    #[test]
    fn other_layout_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .meta
            .insert(K_FORMAT_VERSION, &99u64.to_be_bytes())
            .unwrap();
        drop(store);
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        assert!(err.to_string().contains("version 99"), "{err}");
    }

    #[test]
    fn debug_shows_only_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let shown = format!("{store:?}");
        assert!(shown.starts_with("SledStore { path: "), "{shown}");
        assert!(shown.contains(&format!("{:?}", dir.path())), "{shown}");
    }

    const CHILD_ENV: &str = "SIGIL_SLED_DURABILITY_CHILD";

    /// Write methods checked by [`acknowledged_writes_survive_process_exit`].
    const DURABLE_OPS: &[&str] = &[
        "create_entry",
        "update_entry",
        "delete_entry",
        "prune_entry_events",
        "create_join_token",
        "consume_join_token",
        "prune_join_tokens",
        "put_agent",
        "delete_agent",
        "put_bundle",
        "delete_bundle",
        "put_ca_journal",
    ];

    fn agent_id() -> SpiffeId {
        crate::store::conformance::spiffe_id("/sigil/agent/join_token/x")
    }

    fn td() -> TrustDomain {
        TrustDomain::parse("example.org").unwrap()
    }

    fn bundle(cert: &[u8]) -> BundleRecord {
        BundleRecord {
            trust_domain: td(),
            x509_authorities: vec![cert.to_vec()],
            jwt_authorities: Vec::new(),
            tainted_key_ids: Vec::new(),
            sequence: 0,
        }
    }

    fn token(expires_at: i64) -> JoinTokenRecord {
        JoinTokenRecord {
            token_hash: "ab".repeat(32),
            expires_at,
            created_at: 1,
        }
    }

    /// In the child: prepares the store, then calls `op` as the very last
    /// write before the process exits.
    fn durable_write(store: &SledStore, op: &str) {
        let spec = |sel: &str| crate::store::conformance::entry_spec("/w", "/agent", &[sel]);
        let agent = AttestedAgent {
            spiffe_id: agent_id(),
            attestor: "join_token".to_string(),
            selectors: Vec::new(),
            serial: "01".to_string(),
            previous_serial: None,
            expires_at: 10,
            banned: false,
            attested_at: 1,
            updated_at: 1,
        };
        let entry = match op {
            "create_entry" | "put_agent" | "put_bundle" | "put_ca_journal"
            | "create_join_token" => None,
            _ => Some(store.create_entry(spec("t:1"), 1).unwrap()),
        };
        let id = entry.map(|e| e.id).unwrap_or_default();
        match op {
            "create_entry" => drop(store.create_entry(spec("t:1"), 1).unwrap()),
            "update_entry" => drop(store.update_entry(&id, spec("t:2")).unwrap()),
            "delete_entry" => drop(store.delete_entry(&id).unwrap()),
            "prune_entry_events" => store.prune_entry_events(1).unwrap(),
            "create_join_token" => store.create_join_token(token(100)).unwrap(),
            "consume_join_token" => {
                store.create_join_token(token(100)).unwrap();
                store.consume_join_token(&"ab".repeat(32), 2).unwrap();
            }
            "prune_join_tokens" => {
                store.create_join_token(token(5)).unwrap();
                assert_eq!(store.prune_join_tokens(10).unwrap(), 1);
            }
            "put_agent" => store.put_agent(&agent).unwrap(),
            "delete_agent" => {
                store.put_agent(&agent).unwrap();
                store.delete_agent(&agent.spiffe_id).unwrap();
            }
            "put_bundle" => drop(store.put_bundle(bundle(b"ca1")).unwrap()),
            "delete_bundle" => {
                store.put_bundle(bundle(b"ca1")).unwrap();
                store.delete_bundle(&td()).unwrap();
            }
            "put_ca_journal" => drop(store.put_ca_journal(&CaJournal::default()).unwrap()),
            other => panic!("unknown op {other}"),
        }
    }

    /// In the parent, after the child exited: the last write is there.
    fn check_durable(store: &SledStore, op: &str) {
        let revision = store.entries_revision().unwrap();
        let token_left = store.consume_join_token(&"ab".repeat(32), 2);
        match op {
            "create_entry" => assert_eq!((revision, store.count_entries().unwrap()), (1, 1)),
            "update_entry" => {
                assert_eq!(revision, 2);
                let all = store.list_entries(&EntryFilter::default()).unwrap();
                assert_eq!(all[0].spec.selectors[0].to_string(), "t:2");
            }
            "delete_entry" => assert_eq!((revision, store.count_entries().unwrap()), (2, 0)),
            "prune_entry_events" => assert_eq!(store.entry_events_since(0).unwrap(), None),
            "create_join_token" => assert!(token_left.is_ok(), "{token_left:?}"),
            "consume_join_token" | "prune_join_tokens" => assert!(
                matches!(token_left, Err(StoreError::NotFound { .. })),
                "{token_left:?}"
            ),
            "put_agent" => assert!(store.get_agent(&agent_id()).unwrap().is_some()),
            "delete_agent" => assert_eq!(store.get_agent(&agent_id()).unwrap(), None),
            "put_bundle" => assert!(store.get_bundle(&td()).unwrap().is_some()),
            "delete_bundle" => assert_eq!(store.get_bundle(&td()).unwrap(), None),
            "put_ca_journal" => assert_eq!(store.get_ca_journal().unwrap().version, 1),
            other => panic!("unknown op {other}"),
        }
    }

    /// Each write method, as the last write of a child process that then
    /// exits without dropping the store (so sled's flush on drop never
    /// runs): what it acknowledged must be on disk.
    #[test]
    fn acknowledged_writes_survive_process_exit() {
        if let Ok(job) = std::env::var(CHILD_ENV) {
            let (op, dir) = job.split_once(':').unwrap();
            let store = SledStore::open(Path::new(dir)).unwrap();
            durable_write(&store, op);
            // Skip every destructor, including sled's final flush.
            std::process::exit(0);
        }
        let exe = std::env::current_exe().unwrap();
        for op in DURABLE_OPS {
            let dir = tempfile::tempdir().unwrap();
            let status = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "store::sled::tests::acknowledged_writes_survive_process_exit",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, format!("{op}:{}", dir.path().display()))
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "{op}: child failed: {status}");
            let store = SledStore::open(dir.path()).unwrap();
            check_durable(&store, op);
        }
    }
}
