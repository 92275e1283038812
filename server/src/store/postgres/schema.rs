//! The PostgreSQL store's schema and its versioned migrations, applied when
//! a store opens: in one transaction that first takes a transaction-scoped
//! advisory lock, so servers starting together migrate one at a time (the
//! second finds the work done), and a migration either lands whole with its
//! version or not at all (PostgreSQL's DDL is transactional). Servers
//! already running never take that lock: a migration does not stall them.
//! A database whose schema is newer than this build knows is refused,
//! naming both versions.
//!
//! Tables (text keys in the "C" collation, so that ordering is by bytes as
//! in the sled store; records as JSON text, decoded as sled's are):
//!
//! | table                | key                  | also                              |
//! |----------------------|----------------------|-----------------------------------|
//! | `sigil_schema`       | (one row)            | `version`                         |
//! | `sigil_meta`         | `name`               | `entries_revision`, `events_pruned_upto` |
//! | `sigil_entries`      | `id`                 | `identity` (SHA-256 of the identity key, unique), `spiffe_id`, `parent_id`, `revision` |
//! | `sigil_entry_events` | `revision`           |                                   |
//! | `sigil_join_tokens`  | `token_hash`         | `expires_at`                      |
//! | `sigil_agents`       | `spiffe_id`          |                                   |
//! | `sigil_node_bans`    | `rule`               |                                   |
//! | `sigil_bundles`      | `trust_domain`       |                                   |
//! | `sigil_ca_journal`   | `name` (`journal`)   | `version`                         |
//! | `sigil_federations`  | `trust_domain`       |                                   |
//! | `sigil_bundle_marks` | `trust_domain`       | `sequence` of the last deleted bundle |
//! | `sigil_servers`      | `instance_id`        | the server's own CA journal (issue 17) |

use tokio_postgres::Client;

use super::db;
use crate::store::{StoreError, StoreResult};

/// Key of the advisory lock migrations run under ("sigil" + 1).
const MIGRATION_LOCK: i64 = 0x7369_6769_6c01;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the tables above.
    r#"
    CREATE TABLE sigil_meta (
        name text COLLATE "C" PRIMARY KEY,
        value bigint NOT NULL
    );
    INSERT INTO sigil_meta (name, value)
        VALUES ('entries_revision', 0), ('events_pruned_upto', 0);
    CREATE TABLE sigil_entries (
        id text COLLATE "C" PRIMARY KEY,
        identity bytea NOT NULL UNIQUE,
        spiffe_id text COLLATE "C" NOT NULL,
        parent_id text COLLATE "C" NOT NULL,
        revision bigint NOT NULL,
        body text NOT NULL
    );
    CREATE INDEX sigil_entries_spiffe_id ON sigil_entries (spiffe_id);
    CREATE INDEX sigil_entries_parent_id ON sigil_entries (parent_id);
    CREATE TABLE sigil_entry_events (
        revision bigint PRIMARY KEY,
        body text NOT NULL
    );
    CREATE TABLE sigil_join_tokens (
        token_hash text COLLATE "C" PRIMARY KEY,
        expires_at bigint NOT NULL,
        body text NOT NULL
    );
    CREATE TABLE sigil_agents (
        spiffe_id text COLLATE "C" PRIMARY KEY,
        body text NOT NULL
    );
    CREATE TABLE sigil_node_bans (
        rule text COLLATE "C" PRIMARY KEY,
        body text NOT NULL
    );
    CREATE TABLE sigil_bundles (
        trust_domain text COLLATE "C" PRIMARY KEY,
        body text NOT NULL
    );
    CREATE TABLE sigil_ca_journal (
        name text COLLATE "C" PRIMARY KEY,
        version bigint NOT NULL,
        body text NOT NULL
    );
    "#,
    // 2 (issue 16): federation relationships, and each trust domain's
    // bundle sequence high-water mark (kept across a bundle's deletion).
    r#"
    CREATE TABLE sigil_federations (
        trust_domain text COLLATE "C" PRIMARY KEY,
        body text NOT NULL
    );
    CREATE TABLE sigil_bundle_marks (
        trust_domain text COLLATE "C" PRIMARY KEY,
        sequence bigint NOT NULL
    );
    "#,
    // 3 (issue 17): one record per server instance, with its own CA
    // journal (`crate::store::ServerRecord`). The old single journal row
    // stays; the server whose keys it names adopts it at its next start.
    r#"
    CREATE TABLE sigil_servers (
        instance_id text COLLATE "C" PRIMARY KEY,
        body text NOT NULL
    );
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the schema to [`SCHEMA_VERSION`] (see the file comment); returns
/// the version found before.
pub(super) async fn migrate(client: &mut Client, label: &str) -> StoreResult<i32> {
    let err = db(label, "migrating the schema");
    let tx = client.transaction().await.map_err(&err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(&err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS sigil_schema (version integer NOT NULL)")
        .await
        .map_err(&err)?;
    let found: i32 = match tx
        .query_opt("SELECT version FROM sigil_schema", &[])
        .await
        .map_err(&err)?
    {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO sigil_schema (version) VALUES (0)", &[])
                .await
                .map_err(&err)?;
            0
        }
    };
    if found > SCHEMA_VERSION {
        return Err(newer_schema(label, found));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        tx.batch_execute(sql).await.map_err(&err)?;
        tracing::info!(database = %label, from, to = from + 1, "PostgreSQL schema migrated");
    }
    tx.execute("UPDATE sigil_schema SET version = $1", &[&SCHEMA_VERSION])
        .await
        .map_err(&err)?;
    tx.commit().await.map_err(&err)?;
    Ok(found)
}

fn newer_schema(label: &str, found: i32) -> StoreError {
    StoreError::Corrupt(format!(
        "PostgreSQL database {label} has schema version {found}, newer than this \
         sigil-server knows (version {SCHEMA_VERSION}): run a sigil-server at least as new as \
         the one that migrated it"
    ))
}
