//! Consumes the server's entry stream for this agent and feeds the cache: a
//! full set (assembled from pages), then changes. On any error it reconnects
//! with exponential backoff and jitter and resumes from the last revision it
//! saw, so the server only sends what changed meanwhile.

use std::sync::Arc;
use std::time::Duration;

use sigil_proto::agent_api as pb;
use sigil_proto::clock::Clock;
use sigil_proto::{Selector, SpiffeId, TrustDomain};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::cache::{AuthorizedEntry, SyncEvent, TrustBundle};
use crate::health::ServerContact;
use crate::rotation;
use crate::server_client::{ServerClient, trust_bundle};

/// Called with every bundle the server sends, before the cache sees it.
pub type OnBundle = dyn Fn(&TrustBundle) + Send + Sync;

/// The domain form of an entry; `None` (the entry is not served) when its
/// SPIFFE ID or a selector does not parse. Unparsable federated trust
/// domains are skipped.
fn authorized_entry(e: pb::Entry) -> Option<AuthorizedEntry> {
    let spiffe_id = SpiffeId::parse(&e.spiffe_id).ok()?;
    let selectors = e
        .selectors
        .iter()
        .map(|s| Selector::new(&s.r#type, &s.value))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let federates_with = e
        .federates_with
        .iter()
        .filter_map(|t| TrustDomain::parse(t).ok())
        .collect();
    Some(AuthorizedEntry {
        id: e.id,
        spiffe_id,
        selectors,
        x509_svid_ttl_seconds: e.x509_svid_ttl_seconds,
        dns_names: e.dns_names,
        federates_with,
        hint: e.hint,
        // The wire's 0 means "never".
        expires_at: (e.expires_at != 0).then_some(e.expires_at),
        revision: e.revision,
        created_at: e.created_at,
    })
}

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
            Err(s) => return Err(client.note_status(&s)),
        };
        *delivered = true;
        contact.ok();
        let ev = match msg.kind {
            Some(pb::sync_entries_response::Kind::Page(p)) => {
                pages.extend(p.entries);
                if !p.last {
                    continue;
                }
                *revision = p.revision;
                SyncEvent::Full(
                    std::mem::take(&mut pages)
                        .into_iter()
                        .filter_map(authorized_entry)
                        .collect(),
                )
            }
            Some(pb::sync_entries_response::Kind::Change(ch)) => {
                *revision = (*revision).max(ch.revision);
                if ch.kind == pb::entry_change::Kind::Deleted as i32 {
                    SyncEvent::Delete(ch.entry_id)
                } else if let Some(e) = ch.entry.and_then(authorized_entry) {
                    SyncEvent::Upsert(e)
                } else {
                    continue;
                }
            }
            Some(pb::sync_entries_response::Kind::Bundle(b)) => {
                let b = trust_bundle(b);
                on_bundle(&b);
                SyncEvent::Bundle(b)
            }
            // Federation (issue 16) is not implemented yet: the server sends
            // neither of these today.
            Some(pb::sync_entries_response::Kind::FederatedBundle(_))
            | Some(pb::sync_entries_response::Kind::FederatedBundleRemoved(_)) => continue,
            None => continue,
        };
        if tx.send(ev).await.is_err() {
            return Ok(());
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
