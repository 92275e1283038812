//! Undoing a write whose flush failed. sled applies a write to its memory
//! (and to disk at some later flush) before [`SledStore`] flushes; when that
//! flush fails the write must not be left behind, or the store and the
//! server's in-memory registry disagree, a retry meets `AlreadyExists` for an
//! entry nobody can see, and the write appears after a restart. So each
//! write method hands [`SledStore::flush_or_undo`] its inverse, applied in
//! one transaction and only while the record is still what the write left
//! (a later change is never overwritten); the caller gets an error that says
//! the write was not stored.
//!
//! Inverses are new changes, never a rewind of a counter: an undone entry
//! change is logged as one more revision (with its event), an undone bundle
//! or CA journal write stores the old content under the next sequence or
//! version, so nobody who saw the failed write's number can mistake other
//! content for it later.

use sled::Transactional;

use super::codec::{abort, tx_decode, tx_encode, tx_log_event, tx_next_revision};
use super::*;

impl SledStore {
    /// Flushes; if that fails, applies `undo` (the write's inverse) and
    /// returns an error saying that the `what` was not stored. The undo is
    /// flushed too, best effort: if that also fails it reaches the disk with
    /// the next flush that works, together with the write it undoes.
    pub(super) fn flush_or_undo(
        &self,
        what: &str,
        undo: impl FnOnce() -> StoreResult<()>,
    ) -> StoreResult<()> {
        let Err(failed) = self.flush() else {
            return Ok(());
        };
        let failed = match failed {
            StoreError::Io(m) => m,
            other => other.to_string(),
        };
        match undo() {
            Ok(()) => {
                if let Err(again) = self.flush() {
                    tracing::warn!(store = %self.path.display(), write = what, error = %again,
                        "flushing the undo of a failed write failed too; it is undone in memory");
                }
                Err(StoreError::Io(format!(
                    "{failed}; the {what} was not stored (undone)"
                )))
            }
            Err(e) => {
                tracing::error!(store = %self.path.display(), write = what, error = %e,
                    "undoing a write whose flush failed did not work");
                Err(StoreError::Io(format!(
                    "{failed}; the {what} is not durable and undoing it failed ({e}): \
                     it stays visible until the server restarts"
                )))
            }
        }
    }

    /// The inverse of a write to one key of a single-record tree: puts
    /// `previous` back (removes the key for `None`) if the key still holds
    /// `written` (`None`: absent); `Changed` otherwise.
    pub(super) fn undo_put(
        &self,
        tree: &sled::Tree,
        what: &'static str,
        key: &str,
        written: Option<&[u8]>,
        previous: Option<sled::IVec>,
    ) -> StoreResult<()> {
        tree.compare_and_swap(key, written, previous)
            .map_err(|e| self.io(e))?
            .map_err(|_| StoreError::Changed {
                what,
                key: key.to_string(),
            })
    }

    /// The inverse of an entry change, as one more revision: entry `id` must
    /// be at revision `written` (`None`: absent); it is replaced by
    /// `restore`'s spec (an Upserted event) or removed (a Deleted event).
    pub(super) fn undo_entry(
        &self,
        id: &str,
        written: Option<u64>,
        restore: Option<&Entry>,
    ) -> StoreResult<()> {
        let changed = || {
            abort(StoreError::Changed {
                what: "entry",
                key: id.to_string(),
            })
        };
        (
            &self.entries,
            &self.entry_index,
            &self.entry_events,
            &self.meta,
        )
            .transaction(|(entries, index, events, meta)| {
                let current: Option<Entry> = entries
                    .get(id.as_bytes())?
                    .map(|v| tx_decode(T_ENTRIES, id, &v))
                    .transpose()?;
                if current.as_ref().map(|e| e.revision) != written {
                    return Err(changed());
                }
                if let Some(cur) = &current {
                    let key = cur.spec.identity_key();
                    if index.get(key.as_bytes())?.as_deref() == Some(id.as_bytes()) {
                        index.remove(key.as_bytes())?;
                    }
                    entries.remove(id.as_bytes())?;
                }
                let revision = tx_next_revision(meta)?;
                let event = match (restore, current) {
                    (Some(old), _) => {
                        let key = old.spec.identity_key();
                        if index.get(key.as_bytes())?.is_some() {
                            return Err(changed());
                        }
                        let entry = Entry {
                            revision,
                            ..old.clone()
                        };
                        entries.insert(id.as_bytes(), tx_encode(T_ENTRIES, id, &entry)?)?;
                        index.insert(key.as_bytes(), id.as_bytes())?;
                        EntryEvent::Upserted(entry)
                    }
                    (None, Some(cur)) => EntryEvent::Deleted(Entry { revision, ..cur }),
                    (None, None) => return Err(changed()),
                };
                tx_log_event(events, revision, &event)?;
                Ok(())
            })
            .map_err(|e| self.tx_error(e))
    }

    /// The inverse of [`Store::put_bundle`]: if the bundle is still
    /// `written`, the `previous` content under the next sequence (or no
    /// bundle, if there was none).
    pub(super) fn undo_bundle(
        &self,
        written: &BundleRecord,
        previous: Option<BundleRecord>,
    ) -> StoreResult<()> {
        let key = written.trust_domain.as_str();
        let written_bytes = encode(T_BUNDLES, key, written)?;
        let restored = previous
            .map(|old| {
                let new = BundleRecord {
                    sequence: written.sequence + 1,
                    ..old
                };
                encode(T_BUNDLES, key, &new)
            })
            .transpose()?;
        self.undo_put(
            &self.bundles,
            "bundle",
            key,
            Some(&written_bytes),
            restored.map(sled::IVec::from),
        )
    }

    /// The inverse of [`Store::put_ca_journal`]: if the journal is still
    /// `written`, the `previous` slots under the next version.
    pub(super) fn undo_journal(
        &self,
        written: &CaJournal,
        previous: &CaJournal,
    ) -> StoreResult<()> {
        let restored = CaJournal {
            version: written.version + 1,
            ..previous.clone()
        };
        (&self.ca_journal,)
            .transaction(|(tree,)| {
                let found = match tree.get(K_JOURNAL)? {
                    Some(v) => tx_decode::<CaJournal>(T_CA_JOURNAL, K_JOURNAL, &v)?.version,
                    None => 0,
                };
                if found != written.version {
                    return Err(abort(StoreError::Conflict {
                        what: "CA journal",
                        expected: written.version,
                        found,
                    }));
                }
                tree.insert(K_JOURNAL, tx_encode(T_CA_JOURNAL, K_JOURNAL, &restored)?)?;
                Ok(())
            })
            .map_err(|e| self.tx_error(e))
    }
}
