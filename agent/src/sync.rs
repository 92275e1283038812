//! Consumes the server's entry stream for this agent and feeds the cache: a
//! full set (assembled from pages), then changes. On any error it reconnects
//! with exponential backoff and jitter and resumes from the last revision it
//! saw, so the server only sends what changed meanwhile. Foreign trust
//! domains' bundles (federation) come on the same stream; a full set sends
//! all of them before its last page, and those it did not send are dropped.

mod assemble;

use std::sync::Arc;
use std::time::Duration;

use sigil_proto::agent_api as pb;
use sigil_proto::clock::Clock;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::cache::{SyncEvent, TrustBundle};
use crate::health::ServerContact;
use crate::rotation;
use crate::server_client::ServerClient;
use assemble::Assembler;

/// Called with every bundle the server sends, before the cache sees it.
pub type OnBundle = dyn Fn(&TrustBundle) + Send + Sync;

/// Reads one stream until it ends, recording in `revision` the last
/// revision the cache has been given in full, and in `delivered` whether the
/// stream produced anything (a healthy connection, also told to `contact`).
async fn follow(
    client: &ServerClient,
    contact: &ServerContact,
    revision: &mut u64,
    delivered: &mut bool,
    tx: &mpsc::Sender<SyncEvent>,
    on_bundle: &OnBundle,
) -> Result<(), String> {
    let since = *revision;
    let mut c = client.client().await.map_err(|e| format!("{e:#}"))?;
    let mut stream = c
        .sync_entries(pb::SyncEntriesRequest {
            since_revision: since,
            page_size: 0,
        })
        .await
        .map_err(|s| client.note_status(&s))?
        .into_inner();
    let mut assembler = Assembler::default();
    info!(since, "entry sync stream open");
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                // The server is going away (a graceful stop ends streams):
                // the next stream goes to the next server.
                client.servers().mark_down();
                return Err(format!(
                    "stream ended by the server (revision {})",
                    *revision
                ));
            }
            Err(s) => return Err(client.note_status(&s)),
        };
        *delivered = true;
        contact.ok();
        for ev in assembler.take(msg.kind, revision) {
            if let SyncEvent::Bundle(b) = &ev {
                on_bundle(b);
            }
            if tx.send(ev).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Keeps the cache in sync until `shutdown` fires; every stream that
/// delivers and every failure is recorded in `contact` (the agent's health).
pub async fn run(
    client: Arc<ServerClient>,
    contact: ServerContact,
    tx: mpsc::Sender<SyncEvent>,
    on_bundle: Arc<OnBundle>,
    clock: Arc<dyn Clock>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut since = 0u64;
    let mut attempt = 0u32;
    let mut identity = client.identity();
    loop {
        let mut delivered = false;
        let result = tokio::select! {
            r = follow(&client, &contact, &mut since, &mut delivered, &tx, on_bundle.as_ref()) => r,
            // The agent renewed its SVID: move the stream to the new one
            // at once (resuming from `since`), before the server retires it.
            _ = identity.changed() => {
                info!(since, "agent SVID renewed; reopening the entry stream with it");
                continue;
            }
            _ = shutdown.changed() => return,
        };
        if let Err(e) = result {
            warn!(error = %e, "entry sync interrupted; serving cached SVIDs");
            contact.failed(clock.now_unix(), &e);
            crate::metrics::sync_error();
        }
        if tx.is_closed() {
            return;
        }
        client.reset().await;
        // A stream that worked resets the backoff: reconnect quickly.
        if delivered {
            attempt = 0;
        }
        let wait = Duration::from_millis(rotation::backoff_ms(attempt, clock.random_unit()));
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}
