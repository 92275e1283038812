//! Persistent state behind one small synchronous trait: registration entries
//! (with a store-wide revision and an event log for agent sync), join tokens
//! (hashed), attested agents, node bans, trust bundles (with a sequence number) and the
//! CA journal. Every write is durable (flushed) before it returns `Ok`, so an
//! API that answers after a store call never acknowledges a lost write.
//!
//! Implementations: [`sled::SledStore`] (embedded default) and
//! [`postgres::PgStore`] (shared by several servers). Every backend must
//! pass [`conformance::run_all`]. [`open`] opens the one the configuration
//! names.

pub mod conformance;
pub mod federation;
pub mod join_token_ids;
pub mod node_bans;
pub mod postgres;
pub mod servers;
pub mod sled;

use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sigil_proto::{Selector, SpiffeId, TrustDomain};

pub use crate::ca::journal::{CaJournal, CaSlot, JwtSlot, SlotId, SlotState};
use crate::config::ServerConfig;
use crate::entry::{Entry, EntryEvent, EntryFilter, EntrySpec};
pub use federation::{EndpointProfile, FederationRecord};
pub use node_bans::NodeBan;
pub use servers::ServerRecord;

/// Opens the store the configuration names: PostgreSQL with
/// `[store.postgres]`, else the embedded sled store in `<data_dir>/store`.
pub fn open(cfg: &ServerConfig) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(pg) = &cfg.store.postgres {
        let store = self::postgres::PgStore::open(pg).context("opening the PostgreSQL store")?;
        return Ok(Arc::new(store));
    }
    let dir = cfg.store_dir();
    let store = self::sled::SledStore::open(&dir)
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    Ok(Arc::new(store))
}

/// Errors every backend reports the same way.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {key} not found")]
    NotFound { what: &'static str, key: String },
    #[error("{what} already exists: {key}")]
    AlreadyExists { what: &'static str, key: String },
    /// An optimistic concurrency check failed (expected version differs).
    #[error("{what} changed concurrently (expected version {expected}, found {found})")]
    Conflict {
        what: &'static str,
        expected: u64,
        found: u64,
    },
    /// A compare-and-swap found a record other than the expected one.
    #[error("{what} {key} changed since it was read")]
    Changed { what: &'static str, key: String },
    /// An attesting agent matches a node ban ([`NodeBan`]).
    #[error("node ban {rule} (recorded by the ban of agent {banned_by})")]
    Banned { rule: String, banned_by: String },
    #[error("join token expired")]
    TokenExpired,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("store I/O failed: {0}")]
    Io(String),
    /// The store cannot be reached (a shared database down, its
    /// connections refused or timed out): the write (or read) was not
    /// done; retrying later may succeed. Callers answer `Unavailable`.
    #[error("store unreachable: {0}")]
    Unreachable(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// The refusal of an attesting agent whose `rule` is banned by `ban`.
    pub fn banned(rule: &str, ban: &NodeBan) -> StoreError {
        StoreError::Banned {
            rule: rule.to_string(),
            banned_by: ban
                .banned_by
                .first()
                .map(|a| a.to_string())
                .unwrap_or_default(),
        }
    }
}

/// A fresh entry id: 128 random bits as 32 lowercase hex characters.
pub fn random_entry_id(rng: &dyn ring::rand::SecureRandom) -> StoreResult<String> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes)
        .map_err(|_| StoreError::Io("the system random generator failed".to_string()))?;
    Ok(hex::encode(bytes))
}

/// A join token, as stored: only the SHA-256 of the token, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// Lowercase hex SHA-256 of the token string.
    pub token_hash: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Unix seconds.
    pub created_at: i64,
}

/// An agent the server has attested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestedAgent {
    pub spiffe_id: SpiffeId,
    /// Attestor that admitted it ("join_token", "x509pop").
    pub attestor: String,
    /// Node selectors from attestation.
    pub selectors: Vec<Selector>,
    /// Lowercase hex serial of the agent's current SVID.
    pub serial: String,
    /// Serial of the SVID before the current one (accepted during renewal).
    pub previous_serial: Option<String>,
    /// Unix seconds: expiry of the current SVID.
    pub expires_at: i64,
    /// Lowercase hex serial of the CA that signed the current SVID (`ca
    /// revoke` refuses while an agent's SVID chains to the CA). `None` in
    /// records written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_serial: Option<String>,
    pub banned: bool,
    /// The node ban rules a ban of this agent records ([`NodeBan`]): for
    /// x509pop its key and subject, so that a re-issued certificate of the
    /// same node is refused too. Empty for single-use proofs (join tokens)
    /// and in records written before they were recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ban_rules: Vec<String>,
    /// Unix seconds.
    pub attested_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// A trust bundle: the X.509 authorities (DER) and JWT keys of one trust
/// domain, with a sequence number that increases on every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRecord {
    pub trust_domain: TrustDomain,
    pub x509_authorities: Vec<Vec<u8>>,
    pub jwt_authorities: Vec<JwtAuthority>,
    /// Subject key identifiers of tainted X.509 authorities: agents re-issue
    /// every SVID such a CA signed.
    #[serde(default)]
    pub tainted_key_ids: Vec<Vec<u8>>,
    /// `kid`s of tainted JWT keys: agents drop and re-mint every token one
    /// signed.
    #[serde(default)]
    pub tainted_jwt_key_ids: Vec<String>,
    /// Set by the store: previous + 1 on every change of content.
    pub sequence: u64,
}

/// A JWT signing key published in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtAuthority {
    pub kid: String,
    /// SubjectPublicKeyInfo DER.
    pub public_key: Vec<u8>,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The persistence contract. Synchronous on purpose: callers on async tasks
/// use `spawn_blocking`. Every method that writes flushes before returning.
pub trait Store: Send + Sync + 'static {
    // ---- entries ----

    /// Stores a new entry with a fresh id, `revision` = the new store-wide
    /// entry revision and `created_at` = `now`. Refuses a duplicate (same
    /// SPIFFE ID, parent and selector set) with `AlreadyExists`.
    fn create_entry(&self, spec: EntrySpec, now: i64) -> StoreResult<Entry>;
    /// Creates several entries as [`Store::create_entry`] would, one after
    /// the other (each with its own revision, in order), and makes them all
    /// durable with one flush before returning. Each item's outcome is
    /// returned in order; a refused item (e.g. `AlreadyExists`, also against
    /// an earlier item of the same batch) does not stop the others. An outer
    /// `Err` means the batch could not be made durable: nothing of it may be
    /// acknowledged.
    fn create_entries(
        &self,
        specs: Vec<EntrySpec>,
        now: i64,
    ) -> StoreResult<Vec<StoreResult<Entry>>>;
    fn get_entry(&self, id: &str) -> StoreResult<Option<Entry>>;
    /// Replaces the spec of entry `id`, bumping its revision. `NotFound` if
    /// absent; `AlreadyExists` if the new spec duplicates another entry.
    fn update_entry(&self, id: &str, spec: EntrySpec) -> StoreResult<Entry>;
    /// Deletes entry `id` and returns it as it was. `NotFound` if absent.
    fn delete_entry(&self, id: &str) -> StoreResult<Entry>;
    /// Every entry matching the filter, ordered by id.
    fn list_entries(&self, filter: &EntryFilter) -> StoreResult<Vec<Entry>>;
    fn count_entries(&self) -> StoreResult<u64>;
    /// The store-wide entry revision: the revision of the last change (0 if
    /// there never was one). Never decreases, also across restarts.
    fn entries_revision(&self) -> StoreResult<u64>;
    /// Events with revision > `after`, in order; `None` if some of them were
    /// pruned (the caller must do a full sync instead).
    fn entry_events_since(&self, after: u64) -> StoreResult<Option<Vec<EntryEvent>>>;
    /// The first `limit` events with revision > `after` (fewer at the end
    /// of the log), in order; `None` when [`Store::entry_events_since`]
    /// would say `None`. Readers page through the log with this, passing
    /// the last revision they got, so no read holds the whole log.
    fn entry_events_page(&self, after: u64, limit: usize) -> StoreResult<Option<Vec<EntryEvent>>>;
    /// Drops events with revision <= `upto`.
    fn prune_entry_events(&self, upto: u64) -> StoreResult<()>;

    // ---- join tokens ----

    /// `AlreadyExists` if a token with this hash is stored.
    fn create_join_token(&self, token: JoinTokenRecord) -> StoreResult<()>;
    /// Atomically removes the token and returns it: a second call for the
    /// same hash gets `NotFound`. An expired token is removed and reported as
    /// `TokenExpired`.
    fn consume_join_token(&self, token_hash: &str, now: i64) -> StoreResult<JoinTokenRecord>;
    /// Removes tokens expired at `now`; returns how many.
    fn prune_join_tokens(&self, now: i64) -> StoreResult<usize>;

    // ---- attested agents ----

    fn put_agent(&self, agent: &AttestedAgent) -> StoreResult<()>;
    /// Compare-and-swap: stores `new` only if the stored record for
    /// `new.spiffe_id` equals `expected` (`None`: no record), atomically
    /// with that check; `Changed` (nothing written) otherwise. Every change
    /// made from a record read earlier goes through this, so a ban or an
    /// eviction that lands in between is never undone.
    fn swap_agent(&self, expected: Option<&AttestedAgent>, new: &AttestedAgent) -> StoreResult<()>;
    fn get_agent(&self, id: &SpiffeId) -> StoreResult<Option<AttestedAgent>>;
    fn list_agents(&self) -> StoreResult<Vec<AttestedAgent>>;
    /// `NotFound` if absent.
    fn delete_agent(&self, id: &SpiffeId) -> StoreResult<()>;

    // ---- node bans ----

    /// [`Store::swap_agent`] for an attestation: also refuses with `Banned`
    /// (nothing written) if any of `new.ban_rules` is banned, checked in the
    /// same atomic step as the swap, so a ban stored before this call
    /// starts always wins.
    fn admit_agent(&self, expected: Option<&AttestedAgent>, new: &AttestedAgent)
    -> StoreResult<()>;
    /// [`Store::swap_agent`] for a ban or an unban, in one atomic step with
    /// the node bans: if `new.banned`, records `new.spiffe_id` as a banner
    /// of each of `new.ban_rules` (a new [`NodeBan`] created at `now`); if
    /// not, removes it from each of them (a rule nobody names is lifted).
    fn swap_agent_ban(
        &self,
        expected: &AttestedAgent,
        new: &AttestedAgent,
        now: i64,
    ) -> StoreResult<()>;
    /// Removes `agent` from every node ban (an agent unbanned after its
    /// record was evicted); returns how many bans named it.
    fn clear_node_bans_of(&self, agent: &SpiffeId) -> StoreResult<usize>;
    /// Every node ban, ordered by rule.
    fn list_node_bans(&self) -> StoreResult<Vec<NodeBan>>;

    // ---- bundles ----

    fn get_bundle(&self, td: &TrustDomain) -> StoreResult<Option<BundleRecord>>;
    /// Stores the bundle's authorities. The stored `sequence` is the previous
    /// one + 1 if the authorities or taints changed, else it stays; a new
    /// bundle gets 1 + the highest sequence any earlier bundle of that trust
    /// domain had (1 if there never was one), so a sequence never repeats,
    /// also across `delete_bundle` and restarts. The given `sequence` is
    /// ignored. Returns the bundle as stored.
    fn put_bundle(&self, bundle: BundleRecord) -> StoreResult<BundleRecord>;
    fn list_bundles(&self) -> StoreResult<Vec<BundleRecord>>;
    /// `NotFound` if absent. Keeps the bundle's sequence as the trust
    /// domain's high-water mark (see [`Store::put_bundle`]).
    fn delete_bundle(&self, td: &TrustDomain) -> StoreResult<()>;

    // ---- federation relationships ----

    /// Stores `rel`, replacing any relationship with its trust domain.
    fn put_federation(&self, rel: &FederationRecord) -> StoreResult<()>;
    fn get_federation(&self, td: &TrustDomain) -> StoreResult<Option<FederationRecord>>;
    /// Every relationship, ordered by trust domain.
    fn list_federations(&self) -> StoreResult<Vec<FederationRecord>>;
    /// `NotFound` if absent.
    fn delete_federation(&self, td: &TrustDomain) -> StoreResult<()>;

    // ---- CA journal ----

    /// The journal, or a default (version 0, no slots) if none was written.
    fn get_ca_journal(&self) -> StoreResult<CaJournal>;
    /// Writes `journal` if the stored version equals `journal.version`
    /// (`Conflict` otherwise) and returns it with the version incremented.
    fn put_ca_journal(&self, journal: &CaJournal) -> StoreResult<CaJournal>;

    // ---- servers: a CA journal per server, the union bundle (issue 17) ----

    /// Every server record, ordered by instance id.
    fn list_servers(&self) -> StoreResult<Vec<ServerRecord>>;
    fn get_server(&self, instance_id: &str) -> StoreResult<Option<ServerRecord>>;
    /// Compare-and-swap of the record of `instance_id`: stores `new`
    /// (`None`: removes the record) only if the stored record equals
    /// `expected` (`None`: no record), atomically with that check;
    /// `Changed` (nothing written) otherwise. `new` must carry
    /// `instance_id`.
    fn swap_server(
        &self,
        instance_id: &str,
        expected: Option<&ServerRecord>,
        new: Option<&ServerRecord>,
    ) -> StoreResult<()>;
    /// [`Store::put_bundle`], only if the stored bundle's sequence is
    /// `expected` (`None`: no bundle stored), atomically with that check;
    /// `Changed` (nothing written) otherwise. Several servers recompute the
    /// union bundle with this, so none overwrites a change it has not seen.
    fn swap_bundle(&self, expected: Option<u64>, bundle: BundleRecord)
    -> StoreResult<BundleRecord>;

    // ---- following other servers' writes (issue 17) ----

    /// A `watch` of the latest committed entry revision, for a store that
    /// other servers write too (`None`: this server is the only writer,
    /// its registry sees every change). Woken at once by a change, with a
    /// periodic check every `poll` as a safety net; the registry catches
    /// up from the event log when it rises ([`crate::registry::follow`]).
    fn revision_feed(
        &self,
        poll: std::time::Duration,
    ) -> StoreResult<Option<tokio::sync::watch::Receiver<u64>>> {
        let _ = poll;
        Ok(None)
    }
}
