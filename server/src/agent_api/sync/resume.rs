//! Resuming an agent's entry sync from a revision it already has: what to
//! send so that its set equals its current view, read from the store's
//! event log in bounded pages (off the runtime threads) and folded into one
//! small summary per touched entry, so the work is linear in the events and
//! never holds the log. An entry the agent may hold and no longer may
//! (deleted, moved to another parent, expired, or under an expired alias)
//! is sent as Deleted; a change it cannot resume over (a node entry
//! changed, too many events, a revision the log no longer has or never
//! had) makes the answer a full set instead.

use std::collections::HashMap;
use std::sync::Arc;

use sigil_proto::SpiffeId;
use tracing::warn;

use crate::entry::{Entry, EntryEvent};
use crate::registry::AgentView;
use crate::store::StoreResult;

/// Most events a resume reads; more changes since the agent's revision
/// get the full set (paged), which costs only the agent's own entries.
pub const RESUME_MAX_EVENTS: u64 = 10_000;
/// Events per store read while resuming.
pub const EVENT_PAGE: usize = 500;

/// Reads up to `limit` events after a revision (see
/// [`Store::entry_events_page`](crate::store::Store::entry_events_page)).
pub type PageReader = Arc<dyn Fn(u64, usize) -> StoreResult<Option<Vec<EntryEvent>>> + Send + Sync>;

/// One message of a resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Upsert(Arc<Entry>),
    Deleted { id: String, revision: u64 },
}

impl Change {
    /// Messages go out in this order, so an agent that records the highest
    /// revision it was sent never skips an earlier change if cut off.
    fn order(&self) -> u64 {
        match self {
            Change::Upsert(e) => e.revision,
            Change::Deleted { revision, .. } => *revision,
        }
    }
}

/// What a resume sends.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Send the full set; the reason is logged.
    Full(String),
    /// Send these changes, in order.
    Changes(Vec<Change>),
}

/// What the events after `since` say about one entry.
struct Touched {
    /// Revision of its last event up to the view's revision.
    last: u64,
    /// Some version of it (or the parent it moved from) was under the
    /// agent's reach: the agent may hold it.
    mine: bool,
}

/// The answer to `SyncEntries{since}` for an agent whose current view is
/// `view` (taken after subscribing to live changes: later events reach the
/// stream that way). `server_id` marks node entries.
pub async fn plan(read: PageReader, view: &AgentView, since: u64, server_id: &SpiffeId) -> Plan {
    if since > view.revision {
        return Plan::Full(format!(
            "revision {since} is ahead of the server's {}",
            view.revision
        ));
    }
    let behind = view.revision - since;
    if behind > RESUME_MAX_EVENTS {
        return Plan::Full(format!(
            "{behind} changes since revision {since}, more than a resume reads ({RESUME_MAX_EVENTS})"
        ));
    }
    let mut touched: HashMap<String, Touched> = HashMap::new();
    let mut after = since;
    while after < view.revision {
        let r = read.clone();
        let page = match tokio::task::spawn_blocking(move || r(after, EVENT_PAGE)).await {
            Ok(Ok(Some(page))) if !page.is_empty() => page,
            Ok(Ok(_)) => {
                return Plan::Full(format!(
                    "the event log no longer holds the changes after revision {after}"
                ));
            }
            Ok(Err(e)) => {
                warn!(since, error = %e, "reading the entry event log failed; sending the full set");
                return Plan::Full(format!("reading the event log failed: {e}"));
            }
            Err(e) => return Plan::Full(format!("reading the event log failed: {e}")),
        };
        for ev in page {
            let rev = ev.revision();
            if rev > view.revision {
                after = view.revision;
                break;
            }
            after = rev;
            let e = ev.entry();
            let from = match &ev {
                EntryEvent::Moved { from, .. } => Some(from),
                _ => None,
            };
            if e.spec.parent_id == *server_id || from == Some(server_id) {
                return Plan::Full(format!("node entry {} changed at revision {rev}", e.id));
            }
            let mine = view.reach.contains(&e.spec.parent_id)
                || from.is_some_and(|p| view.reach.contains(p));
            let t = touched.entry(e.id.clone()).or_insert(Touched {
                last: rev,
                mine: false,
            });
            t.last = rev;
            t.mine |= mine;
        }
    }
    let current = |id: &str| {
        view.entries
            .binary_search_by(|e| e.id.as_str().cmp(id))
            .ok()
            .map(|i| view.entries[i].clone())
    };
    let mut out: Vec<Change> = Vec::new();
    for (id, t) in touched.iter() {
        match current(id) {
            Some(e) => out.push(Change::Upsert(e)),
            None if t.mine => out.push(Change::Deleted {
                id: id.clone(),
                revision: t.last,
            }),
            // Never the agent's: it never had it.
            None => {}
        }
    }
    // Lapsed by time since (no event says so): the agent may still hold
    // them. Sent first, at the revision it already has.
    out.extend(
        view.lapsed
            .iter()
            .filter(|id| !touched.contains_key(*id))
            .map(|id| Change::Deleted {
                id: id.clone(),
                revision: since,
            }),
    );
    out.sort_by_key(Change::order);
    Plan::Changes(out)
}

#[cfg(test)]
mod tests;
