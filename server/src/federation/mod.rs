//! Federation (issue 16, server side): the relationships with foreign trust
//! domains ([`relationship`] rules, stored ones plus `[[federation]]` in
//! `server.toml`, where a static relationship wins over a stored one of the
//! same trust domain), the foreign bundles ([`foreign`]) and one bundle
//! endpoint client task per relationship ([`client`], [`fetch`],
//! [`accept`]). [`Federation`] owns the tasks and restarts a relationship's
//! task when it changes.

pub mod accept;
pub mod bundle_file;
pub mod client;
pub mod fetch;
pub mod follow;
pub mod foreign;
pub mod refresh;
pub mod relationship;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sigil_proto::TrustDomain;
use sigil_proto::clock::Clock;
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use crate::store::{FederationRecord, Store, StoreResult};
use client::{Client, Outcome, RefreshRequest, RefreshStatus};
use foreign::ForeignBundles;
pub use refresh::{DEFAULT_HINT, RefreshSettings};

/// A relationship as the server uses it, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub record: FederationRecord,
    /// Declared in `server.toml` (`[[federation]]`): wins over a stored one.
    pub is_static: bool,
    /// The stored relationship a static one hides, if any.
    pub shadows_stored: bool,
    pub status: RefreshStatus,
}

struct Task {
    record: FederationRecord,
    requests: mpsc::Sender<RefreshRequest>,
    status: Arc<Mutex<RefreshStatus>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

pub struct Federation {
    own: TrustDomain,
    store: Arc<dyn Store>,
    foreign: Arc<ForeignBundles>,
    clock: Arc<dyn Clock>,
    settings: RefreshSettings,
    statics: BTreeMap<TrustDomain, FederationRecord>,
    tasks: Mutex<BTreeMap<TrustDomain, Task>>,
}

impl Federation {
    pub fn new(
        store: Arc<dyn Store>,
        foreign: Arc<ForeignBundles>,
        clock: Arc<dyn Clock>,
        settings: RefreshSettings,
        statics: Vec<FederationRecord>,
    ) -> Arc<Federation> {
        Arc::new(Federation {
            own: foreign.own_trust_domain().clone(),
            store,
            foreign,
            clock,
            settings,
            statics: statics
                .into_iter()
                .map(|r| (r.trust_domain.clone(), r))
                .collect(),
            tasks: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn foreign(&self) -> &Arc<ForeignBundles> {
        &self.foreign
    }

    pub fn own_trust_domain(&self) -> &TrustDomain {
        &self.own
    }

    pub fn is_static(&self, td: &TrustDomain) -> bool {
        self.statics.contains_key(td)
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, BTreeMap<TrustDomain, Task>> {
        // The map is only ever changed by whole inserts and removes.
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every relationship in use (blocking: reads the store), ordered by
    /// trust domain.
    pub fn list(&self) -> StoreResult<Vec<Effective>> {
        let stored: BTreeMap<TrustDomain, FederationRecord> = self
            .store
            .list_federations()?
            .into_iter()
            .map(|r| (r.trust_domain.clone(), r))
            .collect();
        let mut all: BTreeMap<TrustDomain, Effective> = BTreeMap::new();
        for (td, r) in &stored {
            all.insert(td.clone(), self.effective(r.clone(), false, false));
        }
        for (td, r) in &self.statics {
            let shadows = stored.contains_key(td);
            all.insert(td.clone(), self.effective(r.clone(), true, shadows));
        }
        Ok(all.into_values().collect())
    }

    fn effective(&self, record: FederationRecord, is_static: bool, shadows: bool) -> Effective {
        let status = self
            .tasks()
            .get(&record.trust_domain)
            .map(|t| {
                t.status
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            })
            .unwrap_or_default();
        Effective {
            record,
            is_static,
            shadows_stored: shadows,
            status,
        }
    }

    /// The relationship of `td` in use, if any (blocking).
    pub fn get(&self, td: &TrustDomain) -> StoreResult<Option<Effective>> {
        Ok(self
            .list()?
            .into_iter()
            .find(|e| &e.record.trust_domain == td))
    }

    /// Starts, restarts or stops client tasks so there is one per
    /// relationship in use, each with its current record (blocking: reads
    /// the store; call from a runtime context).
    pub fn reconcile(&self) -> StoreResult<()> {
        let want: BTreeMap<TrustDomain, Effective> = self
            .list()?
            .into_iter()
            .map(|e| (e.record.trust_domain.clone(), e))
            .collect();
        let mut tasks = self.tasks();
        // A changed relationship keeps the trust domain's refresh status:
        // the last accepted sequence stays the reference for its new endpoint.
        let mut statuses: BTreeMap<TrustDomain, Arc<Mutex<RefreshStatus>>> = BTreeMap::new();
        tasks.retain(|td, t| {
            let keep = want.get(td).is_some_and(|e| e.record == t.record);
            if !keep && want.contains_key(td) {
                statuses.insert(td.clone(), t.status.clone());
            }
            keep
        });
        for (td, e) in want {
            if tasks.contains_key(&td) {
                continue;
            }
            let url = match relationship::check(&e.record, &self.own) {
                Ok(u) => u,
                Err(why) => {
                    tracing::error!(trust_domain = %td, error = %why, "federation relationship not used");
                    continue;
                }
            };
            if e.shadows_stored {
                info!(trust_domain = %td, "federation: the relationship in server.toml ([[federation]]) wins over the stored one");
            }
            let status = statuses.remove(&td).unwrap_or_default();
            let (requests, rx) = mpsc::channel(8);
            let client = Client {
                rel: e.record.clone(),
                url,
                foreign: self.foreign.clone(),
                clock: self.clock.clone(),
                settings: self.settings,
                status: status.clone(),
            };
            let handle = tokio::spawn(client.run(rx));
            tasks.insert(
                td,
                Task {
                    record: e.record,
                    requests,
                    status,
                    handle,
                },
            );
        }
        Ok(())
    }

    /// Fetches the bundle of `td` now; the outcome of that fetch. `None`
    /// when no relationship of `td` is in use.
    pub async fn refresh(&self, td: &TrustDomain) -> Option<Outcome> {
        let requests = self.tasks().get(td).map(|t| t.requests.clone())?;
        let (tx, rx) = oneshot::channel();
        requests.send(tx).await.ok()?;
        // The task answers after at most one fetch (bounded by its timeout).
        let wait = fetch::FETCH_TIMEOUT + Duration::from_secs(5);
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(outcome)) => Some(outcome),
            _ => Some(Err(format!(
                "no refresh outcome within {} s",
                wait.as_secs()
            ))),
        }
    }
}
