//! Entries and their event log in the PostgreSQL store. Every entry write
//! is one transaction that first locks the `entries_revision` row of
//! `sigil_meta` (`SELECT … FOR UPDATE`): entry writers, on every server,
//! run one at a time, each sees what the previous one committed (READ
//! COMMITTED takes a fresh snapshot per statement), and takes the next
//! revisions. The duplicate check (identity key) and the id check run under
//! that lock; the unique index on `identity` backs them up. Reads of the
//! log run in one REPEATABLE READ snapshot, so the revision, the events and
//! the prune mark they compare agree.

use ring::digest;
use tokio_postgres::{GenericClient, IsolationLevel, Transaction};

use super::*;

/// `sigil_meta`: the store-wide entry revision.
pub(super) const K_REVISION: &str = "entries_revision";
/// `sigil_meta`: events with revision <= this value may have been pruned.
const K_PRUNED_UPTO: &str = "events_pruned_upto";
/// The channel entry transactions notify with their last revision.
pub const ENTRIES_CHANNEL: &str = "sigil_entries";

const T_ENTRIES: &str = "sigil_entries";
const T_EVENTS: &str = "sigil_entry_events";

/// How many fresh ids to try if a random entry id is already taken.
const ID_ATTEMPTS: usize = 4;

impl PgStore {
    pub(super) fn create_entries_tx(
        &self,
        specs: Vec<EntrySpec>,
        now: i64,
    ) -> StoreResult<Vec<StoreResult<Entry>>> {
        let label = self.label();
        let err = db(label, "creating entries");
        self.pool.run("creating entries", async |c| {
            let tx = c.transaction().await.map_err(&err)?;
            let mut revision = lock_revision(&tx, label).await?;
            let mut out = Vec::with_capacity(specs.len());
            for spec in specs {
                match self.create_one(&tx, spec, now, revision + 1).await {
                    Ok(entry) => {
                        revision = entry.revision;
                        out.push(Ok(entry));
                    }
                    Err(e @ StoreError::AlreadyExists { .. }) => out.push(Err(e)),
                    Err(e) => return Err(e),
                }
            }
            finish_entry_tx(tx, revision, label).await?;
            Ok(out)
        })
    }

    /// One create inside an entry transaction, at `revision`.
    async fn create_one(
        &self,
        tx: &Transaction<'_>,
        mut spec: EntrySpec,
        now: i64,
        revision: u64,
    ) -> StoreResult<Entry> {
        let err = db(self.label(), "creating an entry");
        spec.normalize();
        let identity = identity(&spec);
        let taken = tx
            .query_opt(
                "SELECT id FROM sigil_entries WHERE identity = $1",
                &[&identity],
            )
            .await
            .map_err(&err)?;
        if let Some(row) = taken {
            return Err(duplicate(&spec, row.get(0)));
        }
        let mut id = None;
        for _ in 0..ID_ATTEMPTS {
            let candidate = self.new_entry_id()?;
            let used = tx
                .query_opt("SELECT 1 FROM sigil_entries WHERE id = $1", &[&candidate])
                .await
                .map_err(&err)?;
            if used.is_none() {
                id = Some(candidate);
                break;
            }
        }
        let Some(id) = id else {
            return Err(StoreError::Io(format!(
                "no free entry id after {ID_ATTEMPTS} random tries: is the random generator broken?"
            )));
        };
        let entry = Entry {
            id,
            spec,
            revision,
            created_at: now,
        };
        write_entry(tx, &entry, &identity, self.label(), true).await?;
        log_event(tx, &EntryEvent::Upserted(entry.clone()), self.label()).await?;
        Ok(entry)
    }

    fn new_entry_id(&self) -> StoreResult<String> {
        crate::store::random_entry_id(&self.rng)
    }

    pub(super) fn update_entry_tx(&self, id: &str, mut spec: EntrySpec) -> StoreResult<Entry> {
        spec.normalize();
        let label = self.label();
        let err = db(label, "updating an entry");
        self.pool.run("updating an entry", async |c| {
            let tx = c.transaction().await.map_err(&err)?;
            let revision = lock_revision(&tx, label).await? + 1;
            let Some(old) = entry_by_id(&tx, id, label).await? else {
                return Err(entry_not_found(id));
            };
            let identity = identity(&spec);
            let taken = tx
                .query_opt(
                    "SELECT id FROM sigil_entries WHERE identity = $1 AND id <> $2",
                    &[&identity, &id],
                )
                .await
                .map_err(&err)?;
            if let Some(row) = taken {
                return Err(duplicate(&spec, row.get(0)));
            }
            let entry = Entry {
                spec,
                revision,
                ..old.clone()
            };
            write_entry(&tx, &entry, &identity, label, false).await?;
            let event = EntryEvent::updated(&old.spec.parent_id, entry.clone());
            log_event(&tx, &event, label).await?;
            finish_entry_tx(tx, revision, label).await?;
            Ok(entry)
        })
    }

    pub(super) fn delete_entry_tx(&self, id: &str) -> StoreResult<Entry> {
        let label = self.label();
        let err = db(label, "deleting an entry");
        self.pool.run("deleting an entry", async |c| {
            let tx = c.transaction().await.map_err(&err)?;
            let revision = lock_revision(&tx, label).await? + 1;
            let row = tx
                .query_opt(
                    "DELETE FROM sigil_entries WHERE id = $1 RETURNING body",
                    &[&id],
                )
                .await
                .map_err(&err)?;
            let Some(row) = row else {
                return Err(entry_not_found(id));
            };
            let old: Entry = decode(T_ENTRIES, id, row.get(0))?;
            let event = EntryEvent::Deleted(Entry {
                revision,
                ..old.clone()
            });
            log_event(&tx, &event, label).await?;
            finish_entry_tx(tx, revision, label).await?;
            Ok(old)
        })
    }

    pub(super) fn get_entry_row(&self, id: &str) -> StoreResult<Option<Entry>> {
        let label = self.label();
        self.pool.run("reading an entry", async |c| {
            entry_by_id(&*c, id, label).await
        })
    }

    pub(super) fn list_entry_rows(&self, filter: &EntryFilter) -> StoreResult<Vec<Entry>> {
        let label = self.label();
        let err = db(label, "listing entries");
        let spiffe_id = filter.spiffe_id.as_ref().map(|s| s.as_str());
        let parent_id = filter.parent_id.as_ref().map(|s| s.as_str());
        let rows = self.pool.run("listing entries", async |c| {
            c.query(
                "SELECT id, body FROM sigil_entries \
                 WHERE ($1::text IS NULL OR spiffe_id = $1) \
                   AND ($2::text IS NULL OR parent_id = $2) \
                 ORDER BY id",
                &[&spiffe_id, &parent_id],
            )
            .await
            .map_err(&err)
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let entry: Entry = decode(T_ENTRIES, row.get(0), row.get(1))?;
            if filter.matches(&entry) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    pub(super) fn count_entry_rows(&self) -> StoreResult<u64> {
        let err = db(self.label(), "counting entries");
        let n: i64 = self.pool.run("counting entries", async |c| {
            let row = c
                .query_one("SELECT count(*) FROM sigil_entries", &[])
                .await
                .map_err(&err)?;
            Ok(row.get(0))
        })?;
        to_u64(T_ENTRIES, n)
    }

    pub(super) fn meta_value(&self, name: &str) -> StoreResult<u64> {
        let label = self.label();
        self.pool.run("reading the revision", async |c| {
            meta(&*c, name, label).await
        })
    }

    pub(super) fn read_events_page(
        &self,
        after: u64,
        limit: usize,
    ) -> StoreResult<Option<Vec<EntryEvent>>> {
        let label = self.label();
        let err = db(label, "reading entry events");
        self.pool.run("reading entry events", async |c| {
            let tx = c
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(&err)?;
            let current = meta(&tx, K_REVISION, label).await?;
            if after > current {
                // The caller's revision comes from another history: only a
                // full sync is safe.
                return Ok(None);
            }
            if after < meta(&tx, K_PRUNED_UPTO, label).await? {
                return Ok(None);
            }
            let expected = usize::try_from(current - after).map_or(limit, |n| n.min(limit));
            let rows = tx
                .query(
                    "SELECT revision, body FROM sigil_entry_events \
                     WHERE revision > $1 AND revision <= $2 ORDER BY revision LIMIT $3",
                    &[
                        &to_i64("revision", after)?,
                        &to_i64("revision", current)?,
                        &i64::try_from(expected).unwrap_or(i64::MAX),
                    ],
                )
                .await
                .map_err(&err)?;
            tx.commit().await.map_err(&err)?;
            let mut events = Vec::with_capacity(rows.len());
            for (row, want) in rows.iter().zip(after + 1..) {
                let revision = to_u64(T_EVENTS, row.get(0))?;
                let event: EntryEvent = decode(T_EVENTS, &revision.to_string(), row.get(1))?;
                if revision != want || event.revision() != revision {
                    return Err(StoreError::Corrupt(format!(
                        "table {T_EVENTS}: revision {want} expected after {after}, found row \
                         {revision} carrying event revision {}",
                        event.revision()
                    )));
                }
                events.push(event);
            }
            if events.len() != expected {
                return Err(StoreError::Corrupt(format!(
                    "table {T_EVENTS}: {} events after revision {after} (current {current}), \
                     expected {expected} in a row",
                    events.len()
                )));
            }
            Ok(Some(events))
        })
    }

    pub(super) fn prune_events(&self, upto: u64) -> StoreResult<()> {
        let label = self.label();
        let err = db(label, "pruning entry events");
        self.pool.run("pruning entry events", async |c| {
            let tx = c.transaction().await.map_err(&err)?;
            // Under the revision lock: no entry write interleaves.
            let current = lock_revision(&tx, label).await?;
            let old = meta(&tx, K_PRUNED_UPTO, label).await?;
            let mark = old.max(upto.min(current));
            let mark_i = to_i64("prune mark", mark)?;
            tx.execute(
                "UPDATE sigil_meta SET value = $1 WHERE name = $2",
                &[&mark_i, &K_PRUNED_UPTO],
            )
            .await
            .map_err(&err)?;
            tx.execute(
                "DELETE FROM sigil_entry_events WHERE revision <= $1",
                &[&mark_i],
            )
            .await
            .map_err(&err)?;
            tx.commit().await.map_err(&err)
        })
    }
}

/// Locks the revision row for this transaction and returns the revision.
async fn lock_revision(tx: &Transaction<'_>, label: &str) -> StoreResult<u64> {
    let row = tx
        .query_one(
            "SELECT value FROM sigil_meta WHERE name = $1 FOR UPDATE",
            &[&K_REVISION],
        )
        .await
        .map_err(db(label, "locking the entry revision"))?;
    to_u64("sigil_meta", row.get(0))
}

/// Stores `revision` as the store-wide revision, notifies followers, and
/// commits.
async fn finish_entry_tx(tx: Transaction<'_>, revision: u64, label: &str) -> StoreResult<()> {
    let err = db(label, "committing an entry change");
    tx.execute(
        "UPDATE sigil_meta SET value = $1 WHERE name = $2",
        &[&to_i64("revision", revision)?, &K_REVISION],
    )
    .await
    .map_err(&err)?;
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&ENTRIES_CHANNEL, &revision.to_string()],
    )
    .await
    .map_err(&err)?;
    tx.commit().await.map_err(&err)
}

pub(super) async fn meta(c: &impl GenericClient, name: &str, label: &str) -> StoreResult<u64> {
    let row = c
        .query_opt("SELECT value FROM sigil_meta WHERE name = $1", &[&name])
        .await
        .map_err(db(label, "reading sigil_meta"))?;
    match row {
        Some(row) => to_u64("sigil_meta", row.get(0)),
        None => Err(StoreError::Corrupt(format!(
            "table sigil_meta has no row {name}"
        ))),
    }
}

async fn entry_by_id(c: &impl GenericClient, id: &str, label: &str) -> StoreResult<Option<Entry>> {
    let row = c
        .query_opt("SELECT body FROM sigil_entries WHERE id = $1", &[&id])
        .await
        .map_err(db(label, "reading an entry"))?;
    row.map(|r| decode(T_ENTRIES, id, r.get(0))).transpose()
}

async fn write_entry(
    tx: &Transaction<'_>,
    entry: &Entry,
    identity: &[u8],
    label: &str,
    new: bool,
) -> StoreResult<()> {
    let body = encode(T_ENTRIES, &entry.id, entry)?;
    let revision = to_i64("revision", entry.revision)?;
    let sql = if new {
        "INSERT INTO sigil_entries (id, identity, spiffe_id, parent_id, revision, body) \
         VALUES ($1, $2, $3, $4, $5, $6)"
    } else {
        "UPDATE sigil_entries SET identity = $2, spiffe_id = $3, parent_id = $4, \
         revision = $5, body = $6 WHERE id = $1"
    };
    tx.execute(
        sql,
        &[
            &entry.id,
            &identity,
            &entry.spec.spiffe_id.as_str(),
            &entry.spec.parent_id.as_str(),
            &revision,
            &body,
        ],
    )
    .await
    .map_err(db(label, "writing an entry"))?;
    Ok(())
}

async fn log_event(tx: &Transaction<'_>, event: &EntryEvent, label: &str) -> StoreResult<()> {
    let revision = event.revision();
    let body = encode(T_EVENTS, &revision.to_string(), event)?;
    tx.execute(
        "INSERT INTO sigil_entry_events (revision, body) VALUES ($1, $2)",
        &[&to_i64("revision", revision)?, &body],
    )
    .await
    .map_err(db(label, "logging an entry event"))?;
    Ok(())
}

/// SHA-256 of the entry's identity key (which holds NULs, and may be
/// longer than a btree index entry allows).
fn identity(spec: &EntrySpec) -> Vec<u8> {
    digest::digest(&digest::SHA256, spec.identity_key().as_bytes())
        .as_ref()
        .to_vec()
}

fn entry_not_found(id: &str) -> StoreError {
    StoreError::NotFound {
        what: "entry",
        key: id.to_string(),
    }
}

fn duplicate(spec: &EntrySpec, existing_id: &str) -> StoreError {
    StoreError::AlreadyExists {
        what: "entry",
        key: format!(
            "{} with parent {} and the same selectors (entry {existing_id})",
            spec.spiffe_id, spec.parent_id
        ),
    }
}
