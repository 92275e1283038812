//! Server records (issue 17) in PostgreSQL: table `sigil_servers`, one row
//! per server instance, written by compare-and-swap under the row lock
//! (`SELECT … FOR UPDATE`); a swap that expects no record inserts with
//! `ON CONFLICT DO NOTHING`, so it loses to a concurrent insert.

use super::*;
use crate::store::ServerRecord;

impl PgStore {
    pub(super) fn swap_server_tx(
        &self,
        instance_id: &str,
        expected: Option<&ServerRecord>,
        new: Option<&ServerRecord>,
    ) -> StoreResult<()> {
        let label = self.label();
        let err = db(label, "writing a server record");
        let body = new
            .map(|n| encode("sigil_servers", instance_id, n))
            .transpose()?;
        let changed = || StoreError::Changed {
            what: "server record",
            key: instance_id.to_string(),
        };
        self.pool.run("writing a server record", async |c| {
            let tx = c.transaction().await.map_err(&err)?;
            let row = tx
                .query_opt(
                    "SELECT body FROM sigil_servers WHERE instance_id = $1 FOR UPDATE",
                    &[&instance_id],
                )
                .await
                .map_err(&err)?;
            let found: Option<ServerRecord> = row
                .map(|r| decode("sigil_servers", instance_id, r.get(0)))
                .transpose()?;
            if found.as_ref() != expected {
                return Err(changed());
            }
            let n = match (&found, &body) {
                (None, Some(b)) => {
                    tx.execute(
                        "INSERT INTO sigil_servers (instance_id, body) VALUES ($1, $2) \
                         ON CONFLICT DO NOTHING",
                        &[&instance_id, b],
                    )
                    .await
                }
                (Some(_), Some(b)) => {
                    tx.execute(
                        "UPDATE sigil_servers SET body = $2 WHERE instance_id = $1",
                        &[&instance_id, b],
                    )
                    .await
                }
                (Some(_), None) => {
                    tx.execute(
                        "DELETE FROM sigil_servers WHERE instance_id = $1",
                        &[&instance_id],
                    )
                    .await
                }
                (None, None) => Ok(1),
            }
            .map_err(&err)?;
            if n == 0 {
                return Err(changed());
            }
            tx.commit().await.map_err(&err)?;
            Ok(())
        })
    }
}
