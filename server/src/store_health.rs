//! Whether the store can be reached now, for `/ready`: a probe reads the
//! store's revision every [`PROBE`] (off the runtime threads) and keeps
//! the last failure. An unreachable store does not make the server
//! not-ready: it keeps serving its agents from memory (syncs, workload
//! SVIDs), and a probe that turned every server of an HA set not-ready
//! together would take them all out of a load balancer at once. `/ready`
//! answers 200 "ready (degraded): store unreachable: …" instead, and what
//! needs a write answers `UNAVAILABLE` naming the cause.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::store::{Store, StoreError};

/// How often the store is probed.
pub const PROBE: Duration = Duration::from_secs(1);

/// The last probe's failure, if it failed.
#[derive(Debug, Default)]
pub struct StoreHealth(Mutex<Option<String>>);

impl StoreHealth {
    /// `Some("store unreachable: …")` while the last probe failed.
    pub fn problem(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, problem: Option<String>) {
        let mut cur = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match (&*cur, &problem) {
            (None, Some(p)) => {
                warn!(problem = %p, "the store cannot be reached; serving from memory")
            }
            (Some(_), None) => info!("the store can be reached again"),
            _ => {}
        }
        *cur = problem;
    }

    /// Probes `store` every [`PROBE`] until `shutdown`.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let s = store.clone();
            let problem = match tokio::task::spawn_blocking(move || s.entries_revision()).await {
                Ok(Ok(_)) => None,
                Ok(Err(e @ StoreError::Unreachable(_))) => Some(e.to_string()),
                Ok(Err(e)) => Some(format!("store unreachable: {e}")),
                Err(e) => Some(format!("store probe failed: {e}")),
            };
            self.set(problem);
            tokio::select! {
                _ = tokio::time::sleep(PROBE) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
