//! Turns the messages of one sync stream into cache events: pages are
//! collected into one full set; entry changes, the own bundle and foreign
//! bundles pass through as they come. The contract for foreign bundles
//! (federation): a full set sends every one the agent's entries federate
//! with before its last page, so with that page the cache is told which
//! ones the full set sent, and drops the others; a resumed sync ends with
//! the set of foreign trust domains to hold, and the cache drops the rest.

use std::collections::BTreeSet;

use sigil_proto::agent_api as pb;
use sigil_proto::{Selector, SpiffeId, TrustDomain};
use tracing::warn;

use crate::cache::{AuthorizedEntry, ForeignBundle, SyncEvent};
use crate::server_client::trust_bundle;

/// The state of one stream between messages.
#[derive(Default)]
pub(super) struct Assembler {
    /// Entries of the pages of a full set not yet complete.
    pages: Vec<pb::Entry>,
    /// The foreign trust domains sent since the stream opened or since the
    /// last full set ended.
    fed_sent: BTreeSet<TrustDomain>,
}

impl Assembler {
    /// The events one message makes (none for a page that is not the last);
    /// `revision` becomes the last revision the cache is given in full.
    pub(super) fn take(
        &mut self,
        kind: Option<pb::sync_entries_response::Kind>,
        revision: &mut u64,
    ) -> Vec<SyncEvent> {
        use pb::sync_entries_response::Kind;
        match kind {
            Some(Kind::Page(p)) => {
                self.pages.extend(p.entries);
                if !p.last {
                    return Vec::new();
                }
                *revision = p.revision;
                vec![
                    SyncEvent::FederatedSet(std::mem::take(&mut self.fed_sent)),
                    SyncEvent::Full(
                        std::mem::take(&mut self.pages)
                            .into_iter()
                            .filter_map(authorized_entry)
                            .collect(),
                    ),
                ]
            }
            Some(Kind::Change(ch)) => {
                *revision = (*revision).max(ch.revision);
                if ch.kind == pb::entry_change::Kind::Deleted as i32 {
                    vec![SyncEvent::Delete(ch.entry_id)]
                } else {
                    ch.entry
                        .and_then(authorized_entry)
                        .map(SyncEvent::Upsert)
                        .into_iter()
                        .collect()
                }
            }
            Some(Kind::Bundle(b)) => vec![SyncEvent::Bundle(trust_bundle(b))],
            Some(Kind::FederatedBundle(b)) => match foreign_bundle(b) {
                Ok(f) => {
                    self.fed_sent.insert(f.trust_domain.clone());
                    vec![SyncEvent::Federated(f)]
                }
                Err(e) => {
                    warn!(error = %e, "federated bundle from the server ignored");
                    Vec::new()
                }
            },
            Some(Kind::FederatedBundleRemoved(td)) => match TrustDomain::parse(&td) {
                Ok(td) => {
                    self.fed_sent.remove(&td);
                    vec![SyncEvent::FederatedRemoved(td)]
                }
                Err(e) => {
                    warn!(trust_domain = %td, error = %e, "removal of a federated bundle ignored: not a trust domain");
                    Vec::new()
                }
            },
            Some(Kind::FederatedSet(set)) => {
                // After a resume: exactly these are held now (issue 16).
                let kept: BTreeSet<TrustDomain> = set
                    .trust_domains
                    .iter()
                    .filter_map(|t| match TrustDomain::parse(t) {
                        Ok(td) => Some(td),
                        Err(e) => {
                            warn!(trust_domain = %t, error = %e, "federated trust domain in the server's set ignored: not a trust domain");
                            None
                        }
                    })
                    .collect();
                self.fed_sent = kept.clone();
                vec![SyncEvent::FederatedSet(kept)]
            }
            None => Vec::new(),
        }
    }
}

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

/// The domain form of a foreign bundle; refused when it names no trust
/// domain.
fn foreign_bundle(b: pb::Bundle) -> Result<ForeignBundle, String> {
    let trust_domain = TrustDomain::parse(&b.trust_domain)
        .map_err(|e| format!("trust domain {:?}: {e}", b.trust_domain))?;
    Ok(ForeignBundle {
        trust_domain,
        bundle: trust_bundle(b),
    })
}

#[cfg(test)]
mod tests;
