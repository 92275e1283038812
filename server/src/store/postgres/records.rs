//! The PostgreSQL store's records other than entries: join tokens (one
//! `DELETE … RETURNING` consumes a token, so across servers exactly one
//! caller gets it), attested agents (compare-and-swap under a row lock; an
//! insert that expects no record loses to a concurrent one through the
//! primary key), node bans (ban changes and admissions serialize on one
//! advisory lock, so a ban committed before an admission starts always
//! wins), bundles (sequence bumped under a row lock) and the CA journal
//! (compare-and-swap on its version).

use tokio_postgres::Transaction;

use super::*;

/// Advisory lock held by ban changes and admissions ("sigil" + 2).
const BANS_LOCK: i64 = 0x7369_6769_6c02;
/// Advisory lock held by bundle writes ("sigil" + 3).
const BUNDLES_LOCK: i64 = 0x7369_6769_6c03;
/// `sigil_ca_journal`: the one key.
const K_JOURNAL: &str = "journal";

impl PgStore {
    pub(super) fn insert_join_token(&self, token: JoinTokenRecord) -> StoreResult<()> {
        let label = token_label(&token.token_hash);
        let body = encode("sigil_join_tokens", &label, &token)?;
        let err = db(self.label(), "storing a join token");
        let n = self.pool.run("storing a join token", async |c| {
            c.execute(
                "INSERT INTO sigil_join_tokens (token_hash, expires_at, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (token_hash) DO NOTHING",
                &[&token.token_hash, &token.expires_at, &body],
            )
            .await
            .map_err(&err)
        })?;
        if n == 0 {
            return Err(StoreError::AlreadyExists {
                what: "join token",
                key: label,
            });
        }
        Ok(())
    }

    pub(super) fn take_join_token(&self, hash: &str, now: i64) -> StoreResult<JoinTokenRecord> {
        let err = db(self.label(), "using a join token");
        let row = self.pool.run("using a join token", async |c| {
            c.query_opt(
                "DELETE FROM sigil_join_tokens WHERE token_hash = $1 RETURNING body",
                &[&hash],
            )
            .await
            .map_err(&err)
        })?;
        let Some(row) = row else {
            return Err(StoreError::NotFound {
                what: "join token",
                key: token_label(hash),
            });
        };
        let token: JoinTokenRecord = decode("sigil_join_tokens", &token_label(hash), row.get(0))?;
        // Removed either way: an expired token is gone too.
        if token.expires_at <= now {
            return Err(StoreError::TokenExpired);
        }
        Ok(token)
    }

    pub(super) fn delete_expired_tokens(&self, now: i64) -> StoreResult<usize> {
        let err = db(self.label(), "pruning join tokens");
        let n = self.pool.run("pruning join tokens", async |c| {
            c.execute(
                "DELETE FROM sigil_join_tokens WHERE expires_at <= $1",
                &[&now],
            )
            .await
            .map_err(&err)
        })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub(super) fn upsert_agent(&self, agent: &AttestedAgent) -> StoreResult<()> {
        let key = agent.spiffe_id.as_str();
        let body = encode("sigil_agents", key, agent)?;
        let err = db(self.label(), "storing an agent");
        self.pool.run("storing an agent", async |c| {
            c.execute(
                "INSERT INTO sigil_agents (spiffe_id, body) VALUES ($1, $2) \
                 ON CONFLICT (spiffe_id) DO UPDATE SET body = EXCLUDED.body",
                &[&key, &body],
            )
            .await
            .map_err(&err)?;
            Ok(())
        })
    }

    pub(super) fn get_agent_row(&self, id: &SpiffeId) -> StoreResult<Option<AttestedAgent>> {
        self.get_body("sigil_agents", "spiffe_id", id.as_str())
    }

    /// [`Store::swap_agent`]; with `check_bans`, [`Store::admit_agent`].
    pub(super) fn swap_agent_tx(
        &self,
        expected: Option<&AttestedAgent>,
        new: &AttestedAgent,
        check_bans: bool,
    ) -> StoreResult<()> {
        let label = self.label();
        let err = db(label, "changing an agent record");
        self.pool.run("changing an agent record", async |c| {
            let tx = c.transaction().await.map_err(&err)?;
            if check_bans {
                advisory_lock(&tx, BANS_LOCK, label).await?;
                for rule in &new.ban_rules {
                    let ban: Option<NodeBan> = body_for_update(&tx, BAN, rule, label).await?;
                    if let Some(ban) = ban {
                        return Err(StoreError::banned(rule, &ban));
                    }
                }
            }
            swap_in(&tx, expected, new, label).await?;
            tx.commit().await.map_err(&err)
        })
    }

    pub(super) fn swap_agent_ban_tx(
        &self,
        expected: &AttestedAgent,
        new: &AttestedAgent,
        now: i64,
    ) -> StoreResult<()> {
        let label = self.label();
        let err = db(label, "changing a ban");
        self.pool.run("changing a ban", async |c| {
            let tx = c.transaction().await.map_err(&err)?;
            advisory_lock(&tx, BANS_LOCK, label).await?;
            swap_in(&tx, Some(expected), new, label).await?;
            for rule in &new.ban_rules {
                let ban: Option<NodeBan> = body_for_update(&tx, BAN, rule, label).await?;
                let after = if new.banned {
                    Some(NodeBan::add(ban, rule, &new.spiffe_id, now))
                } else {
                    ban.and_then(|b| b.remove(&new.spiffe_id))
                };
                write_ban(&tx, rule, after.as_ref(), label).await?;
            }
            tx.commit().await.map_err(&err)
        })
    }

    pub(super) fn clear_node_bans_tx(&self, agent: &SpiffeId) -> StoreResult<usize> {
        let label = self.label();
        let err = db(label, "clearing node bans");
        self.pool.run("clearing node bans", async |c| {
            let tx = c.transaction().await.map_err(&err)?;
            advisory_lock(&tx, BANS_LOCK, label).await?;
            let rows = tx
                .query("SELECT rule, body FROM sigil_node_bans ORDER BY rule", &[])
                .await
                .map_err(&err)?;
            let mut cleared = 0;
            for row in rows {
                let rule: &str = row.get(0);
                let ban: NodeBan = decode("sigil_node_bans", rule, row.get(1))?;
                if ban.banned_by.contains(agent) {
                    write_ban(&tx, rule, ban.remove(agent).as_ref(), label).await?;
                    cleared += 1;
                }
            }
            tx.commit().await.map_err(&err)?;
            Ok(cleared)
        })
    }

    pub(super) fn get_bundle_row(&self, td: &TrustDomain) -> StoreResult<Option<BundleRecord>> {
        self.get_body("sigil_bundles", "trust_domain", td.as_str())
    }

    /// With `expected = Some(seq)`: only if the stored sequence is `seq`
    /// (`None`: no bundle), else `Changed` ([`Store::swap_bundle`]).
    pub(super) fn put_bundle_tx(
        &self,
        bundle: BundleRecord,
        expected: Option<Option<u64>>,
    ) -> StoreResult<BundleRecord> {
        let label = self.label();
        let key = bundle.trust_domain.as_str().to_string();
        let key = key.as_str();
        let err = db(label, "storing a bundle");
        self.pool.run("storing a bundle", async |c| {
            let tx = c.transaction().await.map_err(&err)?;
            advisory_lock(&tx, BUNDLES_LOCK, label).await?;
            let old: Option<BundleRecord> = body_for_update(&tx, BUNDLE, key, label).await?;
            if let Some(e) = expected
                && old.as_ref().map(|o| o.sequence) != e
            {
                return Err(StoreError::Changed {
                    what: "bundle",
                    key: key.to_string(),
                });
            }
            let sequence = match &old {
                Some(old)
                    if old.x509_authorities == bundle.x509_authorities
                        && old.jwt_authorities == bundle.jwt_authorities
                        && old.tainted_key_ids == bundle.tainted_key_ids
                        && old.tainted_jwt_key_ids == bundle.tainted_jwt_key_ids =>
                {
                    return Ok(old.clone());
                }
                Some(old) => old.sequence + 1,
                None => {
                    let mark = tx
                        .query_opt(
                            "SELECT sequence FROM sigil_bundle_marks WHERE trust_domain = $1",
                            &[&key],
                        )
                        .await
                        .map_err(&err)?;
                    mark.map_or(Ok(0), |r| to_u64("sigil_bundle_marks", r.get(0)))? + 1
                }
            };
            let new = BundleRecord {
                sequence,
                ..bundle.clone()
            };
            let body = encode("sigil_bundles", key, &new)?;
            tx.execute(
                "INSERT INTO sigil_bundles (trust_domain, body) VALUES ($1, $2) \
                 ON CONFLICT (trust_domain) DO UPDATE SET body = EXCLUDED.body",
                &[&key, &body],
            )
            .await
            .map_err(&err)?;
            tx.commit().await.map_err(&err)?;
            Ok(new)
        })
    }

    /// Deletes a bundle, keeping its sequence as the trust domain's
    /// high-water mark in the same transaction.
    pub(super) fn delete_bundle_tx(&self, td: &TrustDomain) -> StoreResult<()> {
        let label = self.label();
        let key = td.as_str();
        let err = db(label, "deleting a bundle");
        self.pool.run("deleting a bundle", async |c| {
            let tx = c.transaction().await.map_err(&err)?;
            advisory_lock(&tx, BUNDLES_LOCK, label).await?;
            let row = tx
                .query_opt(
                    "DELETE FROM sigil_bundles WHERE trust_domain = $1 RETURNING body",
                    &[&key],
                )
                .await
                .map_err(&err)?;
            let Some(row) = row else {
                return Err(StoreError::NotFound {
                    what: "bundle",
                    key: key.to_string(),
                });
            };
            let old: BundleRecord = decode("sigil_bundles", key, row.get(0))?;
            tx.execute(
                "INSERT INTO sigil_bundle_marks (trust_domain, sequence) VALUES ($1, $2) \
                 ON CONFLICT (trust_domain) DO UPDATE \
                 SET sequence = GREATEST(sigil_bundle_marks.sequence, EXCLUDED.sequence)",
                &[&key, &to_i64("bundle sequence", old.sequence)?],
            )
            .await
            .map_err(&err)?;
            tx.commit().await.map_err(&err)
        })
    }

    pub(super) fn put_federation_row(&self, rel: &FederationRecord) -> StoreResult<()> {
        let key = rel.trust_domain.as_str();
        let body = encode("sigil_federations", key, rel)?;
        let err = db(self.label(), "storing a federation relationship");
        self.pool
            .run("storing a federation relationship", async |c| {
                c.execute(
                    "INSERT INTO sigil_federations (trust_domain, body) VALUES ($1, $2) \
                 ON CONFLICT (trust_domain) DO UPDATE SET body = EXCLUDED.body",
                    &[&key, &body],
                )
                .await
                .map_err(&err)?;
                Ok(())
            })
    }

    pub(super) fn get_federation_row(
        &self,
        td: &TrustDomain,
    ) -> StoreResult<Option<FederationRecord>> {
        self.get_body("sigil_federations", "trust_domain", td.as_str())
    }

    pub(super) fn get_journal_row(&self) -> StoreResult<CaJournal> {
        Ok(self
            .get_body("sigil_ca_journal", "name", K_JOURNAL)?
            .unwrap_or_default())
    }

    pub(super) fn put_journal_tx(&self, journal: &CaJournal) -> StoreResult<CaJournal> {
        let label = self.label();
        let err = db(label, "writing the CA journal");
        // Every field of the journal is carried; only the version changes.
        let new = CaJournal {
            version: journal.version + 1,
            ..journal.clone()
        };
        let body = encode("sigil_ca_journal", K_JOURNAL, &new)?;
        let (expected, version) = (
            to_i64("journal version", journal.version)?,
            to_i64("journal version", new.version)?,
        );
        self.pool.run("writing the CA journal", async |c| {
            // One statement, atomic: insert version 1 if there is no row,
            // else update only a row still at the expected version.
            let n = if journal.version == 0 {
                c.execute(
                    "INSERT INTO sigil_ca_journal (name, version, body) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO NOTHING",
                    &[&K_JOURNAL, &version, &body],
                )
                .await
            } else {
                c.execute(
                    "UPDATE sigil_ca_journal SET version = $2, body = $3 \
                     WHERE name = $1 AND version = $4",
                    &[&K_JOURNAL, &version, &body, &expected],
                )
                .await
            }
            .map_err(&err)?;
            if n == 1 {
                return Ok(new.clone());
            }
            let found = c
                .query_opt(
                    "SELECT version FROM sigil_ca_journal WHERE name = $1",
                    &[&K_JOURNAL],
                )
                .await
                .map_err(&err)?
                .map_or(Ok(0), |r| to_u64("sigil_ca_journal", r.get(0)))?;
            Err(StoreError::Conflict {
                what: "CA journal",
                expected: journal.version,
                found,
            })
        })
    }

    /// The record of `table` whose `key_col` is `key`.
    pub(super) fn get_body<T: DeserializeOwned>(
        &self,
        table: &'static str,
        key_col: &'static str,
        key: &str,
    ) -> StoreResult<Option<T>> {
        let err = db(self.label(), "reading");
        let sql = format!("SELECT body FROM {table} WHERE {key_col} = $1");
        let row = self.pool.run("reading", async |c| {
            c.query_opt(&sql, &[&key]).await.map_err(&err)
        })?;
        row.map(|r| decode(table, key, r.get(0))).transpose()
    }

    /// Every record of `table`, ordered by `key_col`.
    pub(super) fn list_bodies<T: DeserializeOwned>(
        &self,
        table: &'static str,
        key_col: &'static str,
    ) -> StoreResult<Vec<T>> {
        let err = db(self.label(), "listing");
        let sql = format!("SELECT {key_col}, body FROM {table} ORDER BY {key_col}");
        let rows = self
            .pool
            .run("listing", async |c| c.query(&sql, &[]).await.map_err(&err))?;
        rows.iter()
            .map(|r| decode(table, r.get(0), r.get(1)))
            .collect()
    }

    /// Deletes the record of `table` whose `key_col` is `key`; `NotFound`
    /// naming `what` if there is none.
    pub(super) fn delete_row(
        &self,
        table: &'static str,
        key_col: &'static str,
        key: &str,
        what: &'static str,
    ) -> StoreResult<()> {
        let err = db(self.label(), "deleting");
        let sql = format!("DELETE FROM {table} WHERE {key_col} = $1");
        let n = self.pool.run("deleting", async |c| {
            c.execute(&sql, &[&key]).await.map_err(&err)
        })?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what,
                key: key.to_string(),
            });
        }
        Ok(())
    }
}

/// A keyed table, for [`body_for_update`].
struct Table {
    name: &'static str,
    key: &'static str,
}
const AGENT: Table = Table {
    name: "sigil_agents",
    key: "spiffe_id",
};
const BAN: Table = Table {
    name: "sigil_node_bans",
    key: "rule",
};
const BUNDLE: Table = Table {
    name: "sigil_bundles",
    key: "trust_domain",
};

/// The record for `key`, its row locked for this transaction.
async fn body_for_update<T: DeserializeOwned>(
    tx: &Transaction<'_>,
    table: Table,
    key: &str,
    label: &str,
) -> StoreResult<Option<T>> {
    let sql = format!(
        "SELECT body FROM {} WHERE {} = $1 FOR UPDATE",
        table.name, table.key
    );
    let row = tx
        .query_opt(&sql, &[&key])
        .await
        .map_err(db(label, "reading for update"))?;
    row.map(|r| decode(table.name, key, r.get(0))).transpose()
}

async fn advisory_lock(tx: &Transaction<'_>, key: i64, label: &str) -> StoreResult<()> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
        .await
        .map_err(db(label, "taking an advisory lock"))?;
    Ok(())
}

/// Inside `tx`: stores `new` if the agent record is `expected`, else
/// `Changed`.
async fn swap_in(
    tx: &Transaction<'_>,
    expected: Option<&AttestedAgent>,
    new: &AttestedAgent,
    label: &str,
) -> StoreResult<()> {
    let key = new.spiffe_id.as_str();
    let changed = || StoreError::Changed {
        what: "agent",
        key: key.to_string(),
    };
    let found: Option<AttestedAgent> = body_for_update(tx, AGENT, key, label).await?;
    if found.as_ref() != expected {
        return Err(changed());
    }
    let body = encode("sigil_agents", key, new)?;
    let err = db(label, "writing an agent record");
    // No record expected: the insert loses (0 rows) to one that a
    // concurrent swap committed meanwhile.
    let sql = if found.is_none() {
        "INSERT INTO sigil_agents (spiffe_id, body) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    } else {
        "UPDATE sigil_agents SET body = $2 WHERE spiffe_id = $1"
    };
    if tx.execute(sql, &[&key, &body]).await.map_err(&err)? == 0 {
        return Err(changed());
    }
    Ok(())
}

/// Inside `tx`: stores the ban of `rule`, or removes it (`None`).
async fn write_ban(
    tx: &Transaction<'_>,
    rule: &str,
    ban: Option<&NodeBan>,
    label: &str,
) -> StoreResult<()> {
    let err = db(label, "writing a node ban");
    match ban {
        Some(b) => {
            let body = encode("sigil_node_bans", rule, b)?;
            tx.execute(
                "INSERT INTO sigil_node_bans (rule, body) VALUES ($1, $2) \
                 ON CONFLICT (rule) DO UPDATE SET body = EXCLUDED.body",
                &[&rule, &body],
            )
            .await
            .map_err(&err)?;
        }
        None => {
            tx.execute("DELETE FROM sigil_node_bans WHERE rule = $1", &[&rule])
                .await
                .map_err(&err)?;
        }
    }
    Ok(())
}

/// How a token hash appears in errors: a prefix, enough to tell tokens apart.
fn token_label(hash: &str) -> String {
    let prefix: String = hash.chars().take(12).collect();
    format!("sha256:{prefix}…")
}
