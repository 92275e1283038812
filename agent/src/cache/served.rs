//! What workloads are served of a cached SVID, given what its entry says
//! now. An SVID is issued for an entry as it was; until the re-issue for a
//! changed entry arrives, the old SVID is served only within both: to
//! processes that match the selectors it was issued under *and* the entry's
//! current ones (so narrowing applies at the next snapshot, issue 14 item 8),
//! never once the entry names another SPIFFE ID, and never past the entry's
//! `expires_at` (issue 14 item 6). A pure function of the two, so the cache
//! keeps the same `Arc` (and publishes nothing) when nothing changed.

use std::sync::Arc;

use super::AuthorizedEntry;
use crate::state::WorkloadSvid;

/// How the SVID `issued` may be served for `entry` now: `None` when it may
/// not be served at all. Returns `current` itself when it already is that
/// view, `issued` itself when the entry did not change what it allows.
pub(super) fn view(
    issued: &Arc<WorkloadSvid>,
    current: Option<&Arc<WorkloadSvid>>,
    entry: &AuthorizedEntry,
) -> Option<Arc<WorkloadSvid>> {
    if entry.spiffe_id != issued.spiffe_id {
        return None;
    }
    let mut selectors = issued.selectors.clone();
    for s in &entry.selectors {
        if !selectors.contains(s) {
            selectors.push(s.clone());
        }
    }
    let not_after = entry
        .expires_at
        .map_or(issued.not_after, |t| t.min(issued.not_after));
    let same_as = |s: &WorkloadSvid| {
        s.selectors == selectors
            && s.not_after == not_after
            && s.hint == entry.hint
            && s.federates_with == entry.federates_with
    };
    if same_as(issued) {
        return Some(issued.clone());
    }
    if let Some(c) = current.filter(|c| same_as(c) && c.cert_chain == issued.cert_chain) {
        return Some(c.clone());
    }
    Some(Arc::new(WorkloadSvid {
        entry_id: issued.entry_id.clone(),
        spiffe_id: issued.spiffe_id.clone(),
        selectors,
        hint: entry.hint.clone(),
        cert_chain: issued.cert_chain.clone(),
        key_pkcs8: issued.key_pkcs8.clone(),
        not_before: issued.not_before,
        not_after,
        federates_with: entry.federates_with.clone(),
        entry_created_at: issued.entry_created_at,
    }))
}
