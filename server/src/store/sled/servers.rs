//! Server records (issue 17) in the sled store, in the `ca_journal` tree
//! under `server/<instance id>` (a [`ServerRecord`]), written by
//! compare-and-swap; and the bundle write with an optional expected
//! sequence, shared by [`Store::put_bundle`] and [`Store::swap_bundle`]. A
//! sled store has one server, but the contract is the same as on
//! PostgreSQL so that the conformance suite holds for both.

use sled::Transactional;

use super::codec::{abort, tx_decode, tx_encode, tx_meta_u64};
use super::*;
use crate::store::ServerRecord;

/// `ca_journal`: prefix of a server record's key.
const K_SERVER_PREFIX: &str = "server/";

fn server_key(instance_id: &str) -> String {
    format!("{K_SERVER_PREFIX}{instance_id}")
}

impl SledStore {
    pub(super) fn list_server_records(&self) -> StoreResult<Vec<ServerRecord>> {
        let mut out = Vec::new();
        for kv in self.ca_journal.scan_prefix(K_SERVER_PREFIX) {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            out.push(decode(T_CA_JOURNAL, &String::from_utf8_lossy(&k), &v)?);
        }
        Ok(out)
    }

    pub(super) fn get_server_record(&self, instance_id: &str) -> StoreResult<Option<ServerRecord>> {
        self.get_json(&self.ca_journal, T_CA_JOURNAL, &server_key(instance_id))
    }

    pub(super) fn swap_server_record(
        &self,
        instance_id: &str,
        expected: Option<&ServerRecord>,
        new: Option<&ServerRecord>,
    ) -> StoreResult<()> {
        let key = server_key(instance_id);
        let value = new.map(|n| encode(T_CA_JOURNAL, &key, n)).transpose()?;
        let old = (&self.ca_journal,)
            .transaction(|(tree,)| {
                let raw = tree.get(key.as_bytes())?;
                let found: Option<ServerRecord> = raw
                    .as_ref()
                    .map(|v| tx_decode(T_CA_JOURNAL, &key, v))
                    .transpose()?;
                if found.as_ref() != expected {
                    return Err(abort(StoreError::Changed {
                        what: "server record",
                        key: instance_id.to_string(),
                    }));
                }
                match &value {
                    Some(v) => drop(tree.insert(key.as_bytes(), v.as_slice())?),
                    None => drop(tree.remove(key.as_bytes())?),
                }
                Ok(raw)
            })
            .map_err(|e| self.tx_error(e))?;
        let undo = || {
            self.undo_put(
                &self.ca_journal,
                "server record",
                &key,
                value.as_deref(),
                old,
            )
        };
        self.flush_or_undo(&format!("record of server {instance_id}"), undo)
    }

    /// Stores the bundle's authorities as [`Store::put_bundle`] does; with
    /// `expected = Some(seq)`, only if the stored sequence is `seq` (`None`:
    /// no bundle), else `Changed`.
    pub(super) fn put_bundle_if(
        &self,
        bundle: BundleRecord,
        expected: Option<Option<u64>>,
    ) -> StoreResult<BundleRecord> {
        let key = bundle.trust_domain.as_str().to_string();
        let hwm_key = format!("{K_BUNDLE_HWM}{key}");
        let (old, stored) = (&self.bundles, &self.meta)
            .transaction(|(bundles, meta)| {
                let old: Option<BundleRecord> = bundles
                    .get(key.as_bytes())?
                    .map(|v| tx_decode(T_BUNDLES, &key, &v))
                    .transpose()?;
                if let Some(e) = expected
                    && old.as_ref().map(|o| o.sequence) != e
                {
                    return Err(abort(StoreError::Changed {
                        what: "bundle",
                        key: key.clone(),
                    }));
                }
                let sequence = match &old {
                    Some(old)
                        if old.x509_authorities == bundle.x509_authorities
                            && old.jwt_authorities == bundle.jwt_authorities
                            && old.tainted_key_ids == bundle.tainted_key_ids
                            && old.tainted_jwt_key_ids == bundle.tainted_jwt_key_ids =>
                    {
                        return Ok((None, old.clone()));
                    }
                    Some(old) => old.sequence + 1,
                    None => tx_meta_u64(meta, &hwm_key)? + 1,
                };
                let new = BundleRecord {
                    sequence,
                    ..bundle.clone()
                };
                bundles.insert(key.as_bytes(), tx_encode(T_BUNDLES, &key, &new)?)?;
                Ok((Some(old), new))
            })
            .map_err(|e| self.tx_error(e))?;
        // `None`: nothing changed, nothing to undo.
        if let Some(old) = old {
            let undo = || self.undo_bundle(&stored, old);
            self.flush_or_undo(&format!("bundle of {key}"), undo)?;
        } else {
            self.flush()?;
        }
        Ok(stored)
    }
}
