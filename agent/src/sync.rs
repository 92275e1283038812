//! Consumes the server's entry stream for this agent and feeds the cache: a
//! full set (assembled from pages), then changes. On any error it reconnects
//! with exponential backoff and jitter and resumes from the last revision it
//! saw, so the server only sends what changed meanwhile.

use std::sync::Arc;
use std::time::Duration;

use sigil_proto::agent_api as pb;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::cache::SyncEvent;
use crate::rotation;
use crate::server_client::ServerClient;

fn random_unit() -> f64 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// Reads one stream until it ends, recording in `revision` the last
/// revision the cache has been given in full, and in `delivered` whether the
/// stream produced anything (a healthy connection).
async fn follow(
    client: &ServerClient,
    revision: &mut u64,
    delivered: &mut bool,
    tx: &mpsc::Sender<SyncEvent>,
    on_bundle: &(dyn Fn(&pb::Bundle) + Send + Sync),
) -> Result<(), String> {
    let since = *revision;
    let mut c = client.client().await.map_err(|e| format!("{e:#}"))?;
    let mut stream = c
        .sync_entries(pb::SyncEntriesRequest {
            since_revision: since,
            page_size: 0,
        })
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
        .into_inner();
    let mut pages: Vec<pb::Entry> = Vec::new();
    info!(since, "entry sync stream open");
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Err(format!(
                    "stream ended by the server (revision {})",
                    *revision
                ));
            }
            Err(s) => return Err(format!("{}: {}", s.code(), s.message())),
        };
        *delivered = true;
        let ev = match msg.kind {
            Some(pb::sync_entries_response::Kind::Page(p)) => {
                pages.extend(p.entries);
                if !p.last {
                    continue;
                }
                *revision = p.revision;
                SyncEvent::Full(std::mem::take(&mut pages))
            }
            Some(pb::sync_entries_response::Kind::Change(ch)) => {
                *revision = (*revision).max(ch.revision);
                if ch.kind == pb::entry_change::Kind::Deleted as i32 {
                    SyncEvent::Delete(ch.entry_id)
                } else if let Some(e) = ch.entry {
                    SyncEvent::Upsert(e)
                } else {
                    continue;
                }
            }
            Some(pb::sync_entries_response::Kind::Bundle(b)) => {
                on_bundle(&b);
                SyncEvent::Bundle {
                    authorities: b.x509_authorities,
                    tainted: b.tainted_key_ids,
                }
            }
            None => continue,
        };
        if tx.send(ev).await.is_err() {
            return Ok(());
        }
    }
}

/// Keeps the cache in sync until `shutdown` fires.
pub async fn run(
    client: Arc<ServerClient>,
    tx: mpsc::Sender<SyncEvent>,
    on_bundle: Arc<dyn Fn(&pb::Bundle) + Send + Sync>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut since = 0u64;
    let mut attempt = 0u32;
    let mut identity = client.identity();
    loop {
        let mut delivered = false;
        let result = tokio::select! {
            r = follow(&client, &mut since, &mut delivered, &tx, on_bundle.as_ref()) => r,
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
        let wait = Duration::from_millis(rotation::backoff_ms(attempt, random_unit()));
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}
