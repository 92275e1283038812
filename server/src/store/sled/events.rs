//! The entry event log of the sled store: paged reads that detect a gap or
//! a pruned range (the caller then falls back to a full sync), and pruning
//! below a low-water mark that is raised before any event is removed.

use sled::Transactional;

use super::codec::{decode, decode_u64, tx_meta_u64};
use super::{K_PRUNED_UPTO, K_REVISION, SledStore, T_ENTRY_EVENTS};
use crate::entry::EntryEvent;
use crate::store::{Store, StoreError, StoreResult};

impl SledStore {
    pub(super) fn read_events_page(
        &self,
        after: u64,
        limit: usize,
    ) -> StoreResult<Option<Vec<EntryEvent>>> {
        // Read the revision first: its event and every earlier one were
        // committed with it, so the scan below sees them unless pruned.
        let current = self.entries_revision()?;
        if after > current {
            // The caller's revision comes from another history (a restored
            // backup, a different store): only a full sync is safe.
            return Ok(None);
        }
        let start = after.saturating_add(1).to_be_bytes();
        let end = current.to_be_bytes();
        let expected = usize::try_from(current - after).map_or(limit, |n| n.min(limit));
        let mut events = Vec::with_capacity(expected.min(1024));
        for kv in self.entry_events.range(start..=end).take(limit) {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            let revision = decode_u64(T_ENTRY_EVENTS, &format!("{k:?}"), &k)?;
            let event: EntryEvent = decode(T_ENTRY_EVENTS, &revision.to_string(), &v)?;
            if event.revision() != revision {
                return Err(StoreError::Corrupt(format!(
                    "tree {T_ENTRY_EVENTS} key {revision}: event carries revision {}",
                    event.revision()
                )));
            }
            events.push(event);
        }
        // Read the low-water mark after the scan: pruning raises it before
        // removing events, so an event the scan missed shows up here.
        if after < self.meta_u64(K_PRUNED_UPTO)? {
            return Ok(None);
        }
        // Gapless: the page is the `expected` revisions right after `after`.
        let gapless = events
            .iter()
            .zip(after.saturating_add(1)..)
            .all(|(ev, r)| ev.revision() == r);
        if events.len() != expected || !gapless {
            return Err(StoreError::Corrupt(format!(
                "tree {T_ENTRY_EVENTS}: {} events after revision {after} (current {current}), expected {expected} in a row",
                events.len(),
            )));
        }
        Ok(Some(events))
    }

    pub(super) fn prune_events(&self, upto: u64) -> StoreResult<()> {
        // Raise the low-water mark first (never past the current revision:
        // events that do not exist yet are not pruned), then drop the events.
        let mark = (&self.meta,)
            .transaction(|(meta,)| {
                let current = tx_meta_u64(meta, K_REVISION)?;
                let old = tx_meta_u64(meta, K_PRUNED_UPTO)?;
                let mark = old.max(upto.min(current));
                if mark != old {
                    meta.insert(K_PRUNED_UPTO, &mark.to_be_bytes())?;
                }
                Ok(mark)
            })
            .map_err(|e| self.tx_error(e))?;
        let end = mark.to_be_bytes();
        for kv in self.entry_events.range(..=end) {
            let (k, _) = kv.map_err(|e| self.io(e))?;
            self.entry_events.remove(k).map_err(|e| self.io(e))?;
        }
        self.flush()
    }
}
