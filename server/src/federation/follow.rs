//! Following other servers' federation changes on a shared store: the
//! relationships and foreign bundles are not in the entry revision log, so
//! every [`PERIOD`] the server re-reads them ([`ForeignBundles::reload`],
//! then [`Federation::reconcile`], which starts, restarts or stops the
//! bundle endpoint clients); a changed foreign bundle reaches the agents'
//! sync streams through the foreign bundles' change counter, as a local
//! one does. Each server also runs its own client per relationship, so a
//! foreign bundle rotation reaches it without another server's help. A
//! failed re-read (store unreachable) is logged once and retried at the
//! next period; the bundles held in memory keep being served.
//!
//! [`ForeignBundles::reload`]: super::foreign::ForeignBundles::reload

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::Federation;

/// How often a server on a shared store re-reads federation state.
pub const PERIOD: Duration = Duration::from_secs(2);

/// Re-reads federation state every `period` until `shutdown`.
pub async fn follow(
    federation: Arc<Federation>,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
        let f = federation.clone();
        let r = tokio::task::spawn_blocking(move || {
            f.foreign().reload()?;
            f.reconcile()
        })
        .await;
        match r {
            Ok(Ok(())) if failing => {
                failing = false;
                info!("following federation changes again");
            }
            Ok(Ok(())) => {}
            Ok(Err(e)) if !failing => {
                failing = true;
                warn!(error = %e, "re-reading federation state failed; serving what is held");
            }
            Ok(Err(_)) => {}
            Err(e) => warn!(error = %e, "the federation follow task failed"),
        }
    }
}
