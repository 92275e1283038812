//! The foreign trust domains' bundles the server holds ([`ForeignBundles`]):
//! every stored bundle but the server's own, cached in memory for the sync
//! streams, with a change counter they watch. Every change goes through
//! here (bundle endpoint client, `bundle set`/`delete`, a relationship's
//! bootstrap bundle) so agents are pushed each one. With each bundle
//! fetched from a bundle endpoint it keeps, in the store, the document's
//! `spiffe_sequence` ([`ForeignBundles::put_fetched`]), so an older
//! document is refused after a restart too; an operator's `bundle set` or
//! `delete` forgets it (the operator's bundle is not the endpoint's).

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use sigil_proto::TrustDomain;
use tokio::sync::watch;

use super::accept::Accepted;
use crate::store::{BundleRecord, Store, StoreResult};

pub struct ForeignBundles {
    own: TrustDomain,
    store: Arc<dyn Store>,
    bundles: RwLock<BTreeMap<TrustDomain, Arc<BundleRecord>>>,
    /// The remote `spiffe_sequence` of each bundle accepted from an
    /// endpoint (as stored).
    remote: RwLock<BTreeMap<TrustDomain, u64>>,
    /// Bumped after every change.
    changed: watch::Sender<u64>,
}

impl ForeignBundles {
    /// Loads every stored bundle except `own`'s.
    pub fn load(store: Arc<dyn Store>, own: TrustDomain) -> StoreResult<ForeignBundles> {
        let bundles: BTreeMap<TrustDomain, Arc<BundleRecord>> = store
            .list_bundles()?
            .into_iter()
            .filter(|b| b.trust_domain != own)
            .map(|b| (b.trust_domain.clone(), Arc::new(b)))
            .collect();
        let mut remote = BTreeMap::new();
        for td in bundles.keys() {
            if let Some(seq) = store.remote_sequence(td)? {
                remote.insert(td.clone(), seq);
            }
        }
        Ok(ForeignBundles {
            own,
            store,
            bundles: RwLock::new(bundles),
            remote: RwLock::new(remote),
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

    /// The last bundle of `td` accepted from its endpoint with a
    /// `spiffe_sequence`, as [`super::accept::judge`] compares a fetched
    /// one with; `None` if the stored bundle was not fetched so (or none).
    pub fn accepted(&self, td: &TrustDomain) -> Option<Accepted> {
        let sequence = *self
            .remote
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(td)?;
        let b = self.get(td)?;
        Some(Accepted {
            sequence,
            bundle: sigil_proto::bundle::SpiffeBundle {
                trust_domain: td.clone(),
                x509_authorities: b.x509_authorities.clone(),
                jwt_authorities: b
                    .jwt_authorities
                    .iter()
                    .map(|k| sigil_proto::bundle::JwtKey {
                        kid: k.kid.clone(),
                        spki_der: k.public_key.clone(),
                    })
                    .collect(),
                sequence: Some(sequence),
                refresh_hint: None,
            },
        })
    }

    /// Records (blocking) the remote sequence of `td`'s bundle, or forgets
    /// it (`None`).
    fn set_remote(&self, td: &TrustDomain, sequence: Option<u64>) -> StoreResult<()> {
        let mut remote = self.remote.write().unwrap_or_else(PoisonError::into_inner);
        if remote.get(td).copied() == sequence {
            return Ok(());
        }
        self.store.put_remote_sequence(td, sequence)?;
        match sequence {
            Some(s) => remote.insert(td.clone(), s),
            None => remote.remove(td),
        };
        Ok(())
    }

    /// Stores a bundle fetched from `td`'s endpoint (blocking), then the
    /// document's `spiffe_sequence` if it had one (a document without one
    /// keeps the earlier sequence). The bundle goes first: a crash between
    /// the two leaves the new keys with the older sequence, which the same
    /// document passes again.
    pub fn put_fetched(
        &self,
        bundle: BundleRecord,
        remote_sequence: Option<u64>,
    ) -> StoreResult<Arc<BundleRecord>> {
        let td = bundle.trust_domain.clone();
        let stored = self.put_bundle(bundle)?;
        if remote_sequence.is_some() {
            self.set_remote(&td, remote_sequence)?;
        }
        Ok(stored)
    }

    /// Stores `bundle` as the operator gave it (blocking) and publishes it;
    /// forgets the remote sequence. Returns it as stored.
    pub fn put(&self, bundle: BundleRecord) -> StoreResult<Arc<BundleRecord>> {
        let td = bundle.trust_domain.clone();
        let stored = self.put_bundle(bundle)?;
        self.set_remote(&td, None)?;
        Ok(stored)
    }

    fn put_bundle(&self, bundle: BundleRecord) -> StoreResult<Arc<BundleRecord>> {
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
        self.set_remote(td, None)?;
        self.bundles
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(td);
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }
}
