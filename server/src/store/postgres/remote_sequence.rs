//! The last accepted remote `spiffe_sequence` per federated trust domain
//! (issue 16) in the PostgreSQL store: rows `remote_sequence:<trust
//! domain>` of `sigil_meta` (no schema change), one upsert or delete each.

use super::*;

/// Prefix of the `sigil_meta` names.
const K_REMOTE_SEQUENCE: &str = "remote_sequence:";

impl PgStore {
    pub(super) fn remote_sequence_row(&self, td: &TrustDomain) -> StoreResult<Option<u64>> {
        let name = format!("{K_REMOTE_SEQUENCE}{td}");
        let err = db(self.label(), "reading a remote bundle sequence");
        let row = self
            .pool
            .run("reading a remote bundle sequence", async |c| {
                c.query_opt("SELECT value FROM sigil_meta WHERE name = $1", &[&name])
                    .await
                    .map_err(&err)
            })?;
        row.map(|r| to_u64("sigil_meta", r.get(0))).transpose()
    }

    pub(super) fn put_remote_sequence_row(
        &self,
        td: &TrustDomain,
        sequence: Option<u64>,
    ) -> StoreResult<()> {
        let name = format!("{K_REMOTE_SEQUENCE}{td}");
        let err = db(self.label(), "storing a remote bundle sequence");
        let value = sequence
            .map(|s| to_i64("remote bundle sequence", s))
            .transpose()?;
        self.pool
            .run("storing a remote bundle sequence", async |c| match value {
                Some(v) => c
                    .execute(
                        "INSERT INTO sigil_meta (name, value) VALUES ($1, $2) \
                         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                        &[&name, &v],
                    )
                    .await
                    .map_err(&err),
                None => c
                    .execute("DELETE FROM sigil_meta WHERE name = $1", &[&name])
                    .await
                    .map_err(&err),
            })?;
        Ok(())
    }
}
