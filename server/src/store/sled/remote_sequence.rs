//! The last accepted remote `spiffe_sequence` per federated trust domain
//! (issue 16) in the sled store: key `remote_sequence:<trust domain>` of
//! the `meta` tree, a big-endian u64, flushed on every change.

use super::*;

/// Prefix of the `meta` keys.
const K_REMOTE_SEQUENCE: &str = "remote_sequence:";

impl SledStore {
    pub(super) fn get_remote_sequence(&self, td: &TrustDomain) -> StoreResult<Option<u64>> {
        let key = format!("{K_REMOTE_SEQUENCE}{td}");
        match self.meta.get(key.as_bytes()).map_err(|e| self.io(e))? {
            Some(v) => decode_u64(T_META, &key, &v).map(Some),
            None => Ok(None),
        }
    }

    pub(super) fn set_remote_sequence(
        &self,
        td: &TrustDomain,
        sequence: Option<u64>,
    ) -> StoreResult<()> {
        let key = format!("{K_REMOTE_SEQUENCE}{td}");
        match sequence {
            Some(s) => self
                .meta
                .insert(key.as_bytes(), &s.to_be_bytes())
                .map(|_| ()),
            None => self.meta.remove(key.as_bytes()).map(|_| ()),
        }
        .map_err(|e| self.io(e))?;
        self.flush()
    }
}
