//! The u64 values of the sled store's `meta` tree (big-endian): read by
//! key (counters, bundle high-water marks; absent reads as 0), and the
//! last accepted remote `spiffe_sequence` per federated trust domain
//! (issue 16), key `remote_sequence:<trust domain>`, flushed on every
//! change.

use super::*;

/// Prefix of the `meta` keys.
const K_REMOTE_SEQUENCE: &str = "remote_sequence:";

impl SledStore {
    pub(super) fn meta_u64(&self, key: &'static str) -> StoreResult<u64> {
        self.meta_u64_key(key)
    }

    pub(super) fn meta_u64_key(&self, key: &str) -> StoreResult<u64> {
        match self.meta.get(key).map_err(|e| self.io(e))? {
            Some(v) => decode_u64(T_META, key, &v),
            None => Ok(0),
        }
    }

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
