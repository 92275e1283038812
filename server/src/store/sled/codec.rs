//! How the sled store encodes its records: JSON values, big-endian u64
//! counters, the bulk-load [`EntryRow`], parallel decoding of large trees,
//! and the same helpers inside a sled transaction.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sigil_proto::{SpiffeId, TrustDomain};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::{K_REVISION, T_ENTRY_EVENTS, T_META, TxResult};
use crate::entry::{Entry, EntryEvent, EntrySpec};
use crate::store::{StoreError, StoreResult};

pub(super) fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

/// An [`Entry`] as stored, field for field: the same JSON as `Entry`'s
/// own (whose spec is `#[serde(flatten)]`), decoded without flatten's
/// intermediate buffering, which made loading every entry at start several
/// times slower.
#[derive(serde::Deserialize)]
pub(super) struct EntryRow {
    id: String,
    spiffe_id: SpiffeId,
    parent_id: SpiffeId,
    selectors: Vec<sigil_proto::Selector>,
    x509_svid_ttl: u64,
    jwt_svid_ttl: u64,
    dns_names: Vec<String>,
    federates_with: Vec<TrustDomain>,
    hint: String,
    admin: bool,
    downstream: bool,
    expires_at: Option<i64>,
    revision: u64,
    created_at: i64,
}

impl From<EntryRow> for Entry {
    fn from(r: EntryRow) -> Entry {
        Entry {
            id: r.id,
            spec: EntrySpec {
                spiffe_id: r.spiffe_id,
                parent_id: r.parent_id,
                selectors: r.selectors,
                x509_svid_ttl: r.x509_svid_ttl,
                jwt_svid_ttl: r.jwt_svid_ttl,
                dns_names: r.dns_names,
                federates_with: r.federates_with,
                hint: r.hint,
                admin: r.admin,
                downstream: r.downstream,
                expires_at: r.expires_at,
            },
            revision: r.revision,
            created_at: r.created_at,
        }
    }
}

/// Below this many records, [`decode_all`] stays on the calling thread.
pub(super) const PARALLEL_DECODE_MIN: usize = 4096;

/// Decodes every `(key, value)` record, in order, on all cores for large
/// sets.
pub(super) fn decode_all<T: DeserializeOwned + Send>(
    tree: &'static str,
    raw: &[(sled::IVec, sled::IVec)],
) -> StoreResult<Vec<T>> {
    let one = |(k, v): &(sled::IVec, sled::IVec)| -> StoreResult<T> {
        serde_json::from_slice(v).map_err(|e| {
            StoreError::Corrupt(format!(
                "tree {tree} key {}: {e}",
                String::from_utf8_lossy(k)
            ))
        })
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if raw.len() < PARALLEL_DECODE_MIN || threads < 2 {
        return raw.iter().map(one).collect();
    }
    let chunk = raw.len().div_ceil(threads);
    let parts: Vec<StoreResult<Vec<T>>> = std::thread::scope(|s| {
        let handles: Vec<_> = raw
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(one).collect::<StoreResult<Vec<T>>>()))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(StoreError::Corrupt(format!(
                        "tree {tree}: decoding a record panicked"
                    )))
                })
            })
            .collect()
    });
    let mut out = Vec::with_capacity(raw.len());
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

pub(super) fn decode<T: DeserializeOwned>(tree: &str, key: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("tree {tree} key {key}: {e}")))
}

pub(super) fn encode<T: Serialize>(tree: &str, key: &str, value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| StoreError::Corrupt(format!("tree {tree} key {key}: cannot encode: {e}")))
}

pub(super) fn decode_u64(tree: &str, key: &str, bytes: &[u8]) -> StoreResult<u64> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| {
        StoreError::Corrupt(format!(
            "tree {tree} key {key}: expected an 8-byte counter, found {} bytes",
            bytes.len()
        ))
    })?;
    Ok(u64::from_be_bytes(arr))
}

pub(super) fn tx_decode<T: DeserializeOwned>(tree: &str, key: &str, bytes: &[u8]) -> TxResult<T> {
    decode(tree, key, bytes).map_err(abort)
}

pub(super) fn tx_encode<T: Serialize>(tree: &str, key: &str, value: &T) -> TxResult<Vec<u8>> {
    encode(tree, key, value).map_err(abort)
}

pub(super) fn tx_meta_u64(meta: &TransactionalTree, key: &str) -> TxResult<u64> {
    match meta.get(key)? {
        Some(v) => decode_u64(T_META, key, &v).map_err(abort),
        None => Ok(0),
    }
}

/// Increments the store-wide entry revision inside a transaction and
/// returns the new value.
pub(super) fn tx_next_revision(meta: &TransactionalTree) -> TxResult<u64> {
    let revision = tx_meta_u64(meta, K_REVISION)? + 1;
    meta.insert(K_REVISION, &revision.to_be_bytes())?;
    Ok(revision)
}

/// Appends `event` to the entry event log at `revision`, inside a
/// transaction.
pub(super) fn tx_log_event(
    events: &TransactionalTree,
    revision: u64,
    event: &EntryEvent,
) -> TxResult<()> {
    events.insert(
        &revision.to_be_bytes(),
        tx_encode(T_ENTRY_EVENTS, &revision.to_string(), event)?,
    )?;
    Ok(())
}
