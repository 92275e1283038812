//! The PostgreSQL store: [`PgStore`], the [`Store`] trait on a database
//! that several servers share (high availability).
//!
//! Every write is one transaction, committed before the call returns (so
//! durable as PostgreSQL's commit is). Entry changes are serialized by the
//! row of the store-wide revision (`sigil_meta.entries_revision`), locked
//! first in each entry transaction: a writer takes the next revision only
//! after the previous writer committed, so revisions commit in order and
//! without gaps, and no reader (of any server) ever sees revision N+1
//! before N. Each entry transaction also sends `NOTIFY sigil_entries` with
//! its last revision, delivered at commit, for servers that follow the log.
//! Join tokens are consumed with `DELETE … RETURNING` (one winner across
//! servers); agent records, bundles (with each trust domain's sequence
//! high-water mark) and the CA journal are compare-and-swap
//! under row locks; node bans and admissions serialize on an advisory lock.
//!
//! Connections and the sync-to-async bridge are in `pool`, the schema and
//! its migrations in `schema`, entries and their event log in `entries`,
//! the other records in `records`, following other servers' entry writes
//! (LISTEN/NOTIFY and a catch-up poll) in `follow`.

mod entries;
mod follow;
mod pool;
mod records;
mod schema;
mod servers;

use std::fmt;
use std::sync::Arc;

use ring::rand::SystemRandom;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sigil_proto::{SpiffeId, TrustDomain};
use tokio_postgres_rustls::MakeRustlsConnect;

pub use entries::ENTRIES_CHANNEL;
pub use schema::SCHEMA_VERSION;

use super::{
    AttestedAgent, BundleRecord, CaJournal, FederationRecord, JoinTokenRecord, NodeBan, Store,
    StoreError, StoreResult,
};
use crate::config::{PgTls, PostgresConfig};
use crate::entry::{Entry, EntryEvent, EntryFilter, EntrySpec};
use pool::{Connector, Pool};

/// The environment variable the password is read from when
/// `password_file` is not set (libpq's name).
pub const PASSWORD_ENV: &str = "PGPASSWORD";

/// The PostgreSQL-backed [`Store`].
pub struct PgStore {
    pool: Pool,
    rng: SystemRandom,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.pool.label())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects, and migrates the schema (see `schema`). The password comes
    /// from `password_file`, else [`PASSWORD_ENV`]; errors name the
    /// database (host and name), never the password.
    pub fn open(cfg: &PostgresConfig) -> StoreResult<PgStore> {
        let (mut config, tls) = cfg
            .client_config()
            .map_err(|e| StoreError::Io(e.to_string()))?;
        if let Some(password) = read_password(cfg)? {
            config.password(password);
        }
        config.connect_timeout(cfg.statement_timeout);
        config.application_name("sigil-server");
        let label = label(&config);
        let tls = match tls {
            PgTls::Off => None,
            PgTls::Verified { .. } => Some(rustls_connector(cfg)?),
        };
        let connector = Connector {
            config,
            tls,
            statement_timeout: cfg.statement_timeout,
            label: label.clone(),
        };
        let store = PgStore {
            pool: Pool::new(connector, cfg.max_connections)?,
            rng: SystemRandom::new(),
        };
        let found = store.pool.run("migrating the schema", async |c| {
            schema::migrate(c, &label).await
        })?;
        tracing::debug!(database = %label, schema_before = found,
            schema = SCHEMA_VERSION, "PostgreSQL store opened");
        Ok(store)
    }

    fn label(&self) -> &str {
        self.pool.label()
    }
}

/// `host/dbname` of a client config, for messages and logs.
fn label(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "?".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or("?"))
}

fn read_password(cfg: &PostgresConfig) -> StoreResult<Option<String>> {
    if let Some(path) = &cfg.password_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            StoreError::Io(format!(
                "store.postgres.password_file {}: cannot read: {e}",
                path.display()
            ))
        })?;
        return Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()));
    }
    Ok(std::env::var(PASSWORD_ENV).ok())
}

/// TLS that verifies the database server against `ca_file` (host name
/// included).
fn rustls_connector(cfg: &PostgresConfig) -> StoreResult<MakeRustlsConnect> {
    let Some(path) = &cfg.ca_file else {
        return Err(StoreError::Io(
            "store.postgres.ca_file is needed for TLS".into(),
        ));
    };
    let bad = |m: String| StoreError::Io(format!("store.postgres.ca_file {}: {m}", path.display()));
    let text = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let pems = pem::parse_many(&text).map_err(|e| bad(format!("not PEM: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for p in pems.iter().filter(|p| p.tag() == "CERTIFICATE") {
        roots
            .add(rustls_pki_types::CertificateDer::from(
                p.contents().to_vec(),
            ))
            .map_err(|e| bad(format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no CERTIFICATE".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Maps a database error of operation `what` to a [`StoreError::Io`]
/// naming the database.
pub(super) fn db<'a>(
    label: &'a str,
    what: &'a str,
) -> impl Fn(tokio_postgres::Error) -> StoreError + 'a {
    move |e| {
        let m = format!(
            "PostgreSQL at {label}: {what} failed: {}",
            pool::error_chain(&e)
        );
        if unreachable(&e) {
            StoreError::Unreachable(m)
        } else {
            StoreError::Io(m)
        }
    }
}

/// Whether `e` says the database cannot be reached (the connection closed
/// or broke, or the server refuses connections or is shutting down), as
/// opposed to a refused statement: [`StoreError::Unreachable`].
pub(super) fn unreachable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Class 08: connection exception; 57P01-57P03: admin or crash
        // shutdown, cannot connect now.
        Some(c) => c.code().starts_with("08") || matches!(c.code(), "57P01" | "57P02" | "57P03"),
        // No SQLSTATE: an I/O error or a connection-level failure.
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

fn decode<T: DeserializeOwned>(table: &str, key: &str, body: &str) -> StoreResult<T> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::Corrupt(format!("table {table} key {key}: {e}")))
}

fn encode<T: Serialize>(table: &str, key: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Corrupt(format!("table {table} key {key}: cannot encode: {e}")))
}

/// A u64 counter as PostgreSQL's bigint.
fn to_i64(what: &str, v: u64) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Io(format!("{what} {v} exceeds PostgreSQL's bigint")))
}

/// A bigint counter read back (never negative as written).
fn to_u64(table: &str, v: i64) -> StoreResult<u64> {
    u64::try_from(v)
        .map_err(|_| StoreError::Corrupt(format!("table {table}: negative counter {v}")))
}

impl Store for PgStore {
    fn create_entry(&self, spec: EntrySpec, now: i64) -> StoreResult<Entry> {
        let mut out = self.create_entries_tx(vec![spec], now)?;
        out.pop()
            .unwrap_or_else(|| Err(StoreError::Io("a batch of one created nothing".into())))
    }

    fn create_entries(
        &self,
        specs: Vec<EntrySpec>,
        now: i64,
    ) -> StoreResult<Vec<StoreResult<Entry>>> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        self.create_entries_tx(specs, now)
    }

    fn get_entry(&self, id: &str) -> StoreResult<Option<Entry>> {
        self.get_entry_row(id)
    }

    fn update_entry(&self, id: &str, spec: EntrySpec) -> StoreResult<Entry> {
        self.update_entry_tx(id, spec)
    }

    fn delete_entry(&self, id: &str) -> StoreResult<Entry> {
        self.delete_entry_tx(id)
    }

    fn list_entries(&self, filter: &EntryFilter) -> StoreResult<Vec<Entry>> {
        self.list_entry_rows(filter)
    }

    fn count_entries(&self) -> StoreResult<u64> {
        self.count_entry_rows()
    }

    fn entries_revision(&self) -> StoreResult<u64> {
        self.meta_value(entries::K_REVISION)
    }

    fn entry_events_since(&self, after: u64) -> StoreResult<Option<Vec<EntryEvent>>> {
        self.read_events_page(after, usize::MAX)
    }

    fn entry_events_page(&self, after: u64, limit: usize) -> StoreResult<Option<Vec<EntryEvent>>> {
        self.read_events_page(after, limit)
    }

    fn prune_entry_events(&self, upto: u64) -> StoreResult<()> {
        self.prune_events(upto)
    }

    fn create_join_token(&self, token: JoinTokenRecord) -> StoreResult<()> {
        self.insert_join_token(token)
    }

    fn consume_join_token(&self, token_hash: &str, now: i64) -> StoreResult<JoinTokenRecord> {
        self.take_join_token(token_hash, now)
    }

    fn prune_join_tokens(&self, now: i64) -> StoreResult<usize> {
        self.delete_expired_tokens(now)
    }

    fn put_agent(&self, agent: &AttestedAgent) -> StoreResult<()> {
        self.upsert_agent(agent)
    }

    fn swap_agent(&self, expected: Option<&AttestedAgent>, new: &AttestedAgent) -> StoreResult<()> {
        self.swap_agent_tx(expected, new, false)
    }

    fn get_agent(&self, id: &SpiffeId) -> StoreResult<Option<AttestedAgent>> {
        self.get_agent_row(id)
    }

    fn list_agents(&self) -> StoreResult<Vec<AttestedAgent>> {
        self.list_bodies("sigil_agents", "spiffe_id")
    }

    fn delete_agent(&self, id: &SpiffeId) -> StoreResult<()> {
        self.delete_row("sigil_agents", "spiffe_id", id.as_str(), "agent")
    }

    fn admit_agent(
        &self,
        expected: Option<&AttestedAgent>,
        new: &AttestedAgent,
    ) -> StoreResult<()> {
        self.swap_agent_tx(expected, new, true)
    }

    fn swap_agent_ban(
        &self,
        expected: &AttestedAgent,
        new: &AttestedAgent,
        now: i64,
    ) -> StoreResult<()> {
        self.swap_agent_ban_tx(expected, new, now)
    }

    fn clear_node_bans_of(&self, agent: &SpiffeId) -> StoreResult<usize> {
        self.clear_node_bans_tx(agent)
    }

    fn list_node_bans(&self) -> StoreResult<Vec<NodeBan>> {
        self.list_bodies("sigil_node_bans", "rule")
    }

    fn get_bundle(&self, td: &TrustDomain) -> StoreResult<Option<BundleRecord>> {
        self.get_bundle_row(td)
    }

    fn put_bundle(&self, bundle: BundleRecord) -> StoreResult<BundleRecord> {
        self.put_bundle_tx(bundle, None)
    }

    fn list_bundles(&self) -> StoreResult<Vec<BundleRecord>> {
        self.list_bodies("sigil_bundles", "trust_domain")
    }

    fn delete_bundle(&self, td: &TrustDomain) -> StoreResult<()> {
        self.delete_bundle_tx(td)
    }

    fn put_federation(&self, rel: &FederationRecord) -> StoreResult<()> {
        self.put_federation_row(rel)
    }

    fn get_federation(&self, td: &TrustDomain) -> StoreResult<Option<FederationRecord>> {
        self.get_federation_row(td)
    }

    fn list_federations(&self) -> StoreResult<Vec<FederationRecord>> {
        self.list_bodies("sigil_federations", "trust_domain")
    }

    fn delete_federation(&self, td: &TrustDomain) -> StoreResult<()> {
        let key = td.as_str();
        self.delete_row(
            "sigil_federations",
            "trust_domain",
            key,
            "federation relationship",
        )
    }

    fn get_ca_journal(&self) -> StoreResult<CaJournal> {
        self.get_journal_row()
    }

    fn put_ca_journal(&self, journal: &CaJournal) -> StoreResult<CaJournal> {
        self.put_journal_tx(journal)
    }

    fn list_servers(&self) -> StoreResult<Vec<super::ServerRecord>> {
        self.list_bodies("sigil_servers", "instance_id")
    }

    fn get_server(&self, instance_id: &str) -> StoreResult<Option<super::ServerRecord>> {
        self.get_body("sigil_servers", "instance_id", instance_id)
    }

    fn swap_server(
        &self,
        instance_id: &str,
        expected: Option<&super::ServerRecord>,
        new: Option<&super::ServerRecord>,
    ) -> StoreResult<()> {
        self.swap_server_tx(instance_id, expected, new)
    }

    fn swap_bundle(
        &self,
        expected: Option<u64>,
        bundle: BundleRecord,
    ) -> StoreResult<BundleRecord> {
        self.put_bundle_tx(bundle, Some(expected))
    }

    // ---- following other servers' writes (issue 17) ----

    fn revision_feed(
        &self,
        poll: std::time::Duration,
    ) -> StoreResult<Option<tokio::sync::watch::Receiver<u64>>> {
        PgStore::follow_revisions(self, poll).map(Some)
    }
}
