//! Creating an entry in the sled store: a random 128-bit id, the duplicate
//! check on the identity index, the next revision and the Upserted event,
//! all in one transaction (flushing is the caller's).

use sled::Transactional;

use super::codec::{abort, tx_encode, tx_log_event, tx_next_revision};
use super::*;

impl SledStore {
    /// Creates one entry without flushing.
    pub(super) fn create_entry_unflushed(
        &self,
        mut spec: EntrySpec,
        now: i64,
    ) -> StoreResult<Entry> {
        spec.normalize();
        for _ in 0..ID_ATTEMPTS {
            let id = self.new_entry_id()?;
            if let Some(entry) = self.try_create_entry(&id, &spec, now)? {
                return Ok(entry);
            }
        }
        Err(StoreError::Io(format!(
            "no free entry id after {ID_ATTEMPTS} random tries: is the random generator broken?"
        )))
    }

    fn new_entry_id(&self) -> StoreResult<String> {
        crate::store::random_entry_id(&self.rng)
    }

    /// One attempt at creating an entry with id `id`: `None` if the id is
    /// taken (nothing written).
    fn try_create_entry(&self, id: &str, spec: &EntrySpec, now: i64) -> StoreResult<Option<Entry>> {
        let key = spec.identity_key();
        (
            &self.entries,
            &self.entry_index,
            &self.entry_events,
            &self.meta,
        )
            .transaction(|(entries, index, events, meta)| {
                if let Some(existing) = index.get(key.as_bytes())? {
                    return Err(abort(duplicate(spec, &existing)));
                }
                if entries.get(id.as_bytes())?.is_some() {
                    return Ok(None);
                }
                let revision = tx_next_revision(meta)?;
                let entry = Entry {
                    id: id.to_string(),
                    spec: spec.clone(),
                    revision,
                    created_at: now,
                };
                entries.insert(id.as_bytes(), tx_encode(T_ENTRIES, id, &entry)?)?;
                index.insert(key.as_bytes(), id.as_bytes())?;
                let event = EntryEvent::Upserted(entry.clone());
                tx_log_event(events, revision, &event)?;
                Ok(Some(entry))
            })
            .map_err(|e| self.tx_error(e))
    }
}
