//! The foreign trust domains' bundles the server holds ([`ForeignBundles`]):
//! every stored bundle but the server's own, cached in memory for the sync
//! streams, with a change counter they watch. Every change goes through
//! here (bundle endpoint client, `bundle set`/`delete`, a relationship's
//! bootstrap bundle) so agents are pushed each one.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use sigil_proto::TrustDomain;
use tokio::sync::watch;

use crate::store::{BundleRecord, Store, StoreResult};

pub struct ForeignBundles {
    own: TrustDomain,
    store: Arc<dyn Store>,
    bundles: RwLock<BTreeMap<TrustDomain, Arc<BundleRecord>>>,
    /// Bumped after every change.
    changed: watch::Sender<u64>,
}

impl ForeignBundles {
    /// Loads every stored bundle except `own`'s.
    pub fn load(store: Arc<dyn Store>, own: TrustDomain) -> StoreResult<ForeignBundles> {
        let bundles = store
            .list_bundles()?
            .into_iter()
            .filter(|b| b.trust_domain != own)
            .map(|b| (b.trust_domain.clone(), Arc::new(b)))
            .collect();
        Ok(ForeignBundles {
            own,
            store,
            bundles: RwLock::new(bundles),
            changed: watch::Sender::new(0),
        })
    }

    pub fn own_trust_domain(&self) -> &TrustDomain {
        &self.own
    }

    // The lock only guards map updates, which cannot be left half done, so
    // a poisoned lock still holds a consistent map.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<TrustDomain, Arc<BundleRecord>>> {
        self.bundles.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, td: &TrustDomain) -> Option<Arc<BundleRecord>> {
        self.read().get(td).cloned()
    }

    pub fn list(&self) -> Vec<Arc<BundleRecord>> {
        self.read().values().cloned().collect()
    }

    /// Watches changes (the value is a counter).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Stores `bundle` (blocking) and publishes it; returns it as stored.
    pub fn put(&self, bundle: BundleRecord) -> StoreResult<Arc<BundleRecord>> {
        let stored = Arc::new(self.store.put_bundle(bundle)?);
        let td = stored.trust_domain.clone();
        let changed = self
            .bundles
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(td, stored.clone())
            .is_none_or(|old| old.sequence != stored.sequence);
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
        Ok(stored)
    }

    /// Re-reads the stored bundles (blocking), for another server's
    /// changes to a shared store ([`super::follow`]); publishes a change
    /// if any sequence (or the set of trust domains) differs. A local
    /// change racing the read wins, or is restored by the next reload.
    pub fn reload(&self) -> StoreResult<()> {
        let before = *self.changed.borrow();
        let stored: BTreeMap<TrustDomain, BundleRecord> = self
            .store
            .list_bundles()?
            .into_iter()
            .filter(|b| b.trust_domain != self.own)
            .map(|b| (b.trust_domain.clone(), b))
            .collect();
        let mut map = self.bundles.write().unwrap_or_else(PoisonError::into_inner);
        let differs = map.len() != stored.len()
            || stored
                .iter()
                .any(|(td, b)| map.get(td).is_none_or(|o| o.sequence != b.sequence));
        if !differs || *self.changed.borrow() != before {
            return Ok(());
        }
        *map = stored
            .into_iter()
            .map(|(td, b)| (td, Arc::new(b)))
            .collect();
        drop(map);
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Deletes the bundle of `td` (blocking); `NotFound` if absent.
    pub fn delete(&self, td: &TrustDomain) -> StoreResult<()> {
        self.store.delete_bundle(td)?;
        self.bundles
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(td);
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }
}
