//! Entry sync for one agent: the bundle, then the authorized entries (a full
//! set in pages, or only the changes since a revision the agent already
//! has), then every relevant change as it happens. One task per stream owns
//! the agent's view; the registry's broadcast feeds it. Only changes that
//! touch the agent's entries are sent, so one change costs one message.
//! When the earliest expiry among the entries (and node entries) that make
//! the agent's view passes, the view is diffed again and the lapsed entries
//! are sent as Deleted. Resuming is in [`resume`]. When the registry
//! reloads from the store (it missed changes the event log no longer has),
//! the stream sends the full set again. An agent that resumes from a
//! revision ahead of this server's (it failed over from a server that was
//! ahead) waits for this server to catch up from the store first
//! ([`AHEAD_WAIT`]); if the store cannot be read it is refused with
//! `UNAVAILABLE` (it retries) rather than sent an older set as current.
//!
//! An agent may hold at most `limits.agent_api_max_sync_streams_per_agent`
//! streams at once ([`StreamCount`]); the newest beyond that is refused
//! with `RESOURCE_EXHAUSTED` (the open ones keep working; a dead one is
//! freed when HTTP/2 keepalive closes its connection).

mod federated;
mod resume;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sigil_proto::agent_api as pb;
use sigil_proto::net::{ConnCap, ConnPermit};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{debug, info, warn};

use super::caller::{AgentCaller, Authenticator};
use super::convert::{bundle_to_pb, entry_to_pb};
use super::error::ApiError;
use crate::authz;
use crate::ca::manager::CaManager;
use crate::ca::unix;
use crate::entry::{Entry, EntryEvent};
use crate::registry::{AgentView, Registry};
use crate::store::Store;
use sigil_proto::clock::Clock;

/// Entries per page of a full set unless the agent asks for fewer.
pub const DEFAULT_PAGE: usize = 500;
/// Largest page.
pub const MAX_PAGE: usize = 2000;
pub use resume::{EVENT_PAGE, RESUME_MAX_EVENTS};
/// How often an open stream re-checks that its agent is still admitted.
const RECHECK: Duration = Duration::from_secs(2);
/// How long a resume from a revision ahead of the registry's waits for the
/// registry to catch up from the store.
pub const AHEAD_WAIT: Duration = Duration::from_secs(5);

/// Open SyncEntries streams per agent ID.
pub type StreamCount = Arc<ConnCap<String>>;

/// A [`StreamCount`] allowing `per_agent` streams per agent ID.
pub fn stream_count(per_agent: usize) -> StreamCount {
    ConnCap::new(usize::MAX, per_agent)
}

pub struct SyncContext {
    /// Re-authenticates the caller before each batch the stream sends.
    pub auth: Arc<Authenticator>,
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub ca: Arc<CaManager>,
    pub clock: Arc<dyn Clock>,
    pub refresh_hint: i64,
    /// The streams each agent has open.
    pub open: StreamCount,
    /// Foreign bundles for entries that federate (issue 16); none: not sent.
    pub foreign: Option<Arc<crate::federation::foreign::ForeignBundles>>,
}

type Tx = mpsc::Sender<Result<pb::SyncEntriesResponse, Status>>;

fn msg(kind: pb::sync_entries_response::Kind) -> Result<pb::SyncEntriesResponse, Status> {
    Ok(pb::SyncEntriesResponse { kind: Some(kind) })
}

fn upsert(e: &Entry) -> Result<pb::SyncEntriesResponse, Status> {
    msg(pb::sync_entries_response::Kind::Change(pb::EntryChange {
        kind: pb::entry_change::Kind::Upserted as i32,
        entry: Some(entry_to_pb(e)),
        entry_id: e.id.clone(),
        revision: e.revision,
    }))
}

fn deleted(id: &str, revision: u64) -> Result<pb::SyncEntriesResponse, Status> {
    msg(pb::sync_entries_response::Kind::Change(pb::EntryChange {
        kind: pb::entry_change::Kind::Deleted as i32,
        entry: None,
        entry_id: id.to_string(),
        revision,
    }))
}

struct Stream {
    /// This stream's place in the per-agent count, given back at its end.
    _open: ConnPermit<String>,
    ctx: SyncContext,
    caller: AgentCaller,
    tx: Tx,
    page: usize,
    /// Entry ids the agent holds.
    known: HashSet<String>,
    parents: HashSet<sigil_proto::SpiffeId>,
    revision: u64,
    /// When the view next changes by time alone (an entry or alias expires).
    next_expiry: Option<i64>,
    /// Whether the caller was re-checked for the batch being sent now.
    checked: bool,
    /// The foreign bundles the agent holds and should hold.
    federated: federated::Federated,
}

/// The method name an open stream's re-checks log under.
const RECHECK_METHOD: &str = "SyncEntries (open stream)";

impl Stream {
    fn now(&self) -> i64 {
        unix(self.ctx.clock.now())
    }

    /// Sends one message; the first message of each batch is preceded by a
    /// re-check of the caller, and a refused caller gets the refusal as the
    /// stream's last message instead.
    async fn send(&mut self, m: Result<pb::SyncEntriesResponse, Status>) -> Result<(), ()> {
        if !self.checked {
            self.checked = true;
            if let Err(status) = self.recheck() {
                info!(agent_id = %self.caller.id, reason = status.message(), "closing sync stream");
                let _ = self.tx.send(Err(status)).await;
                return Err(());
            }
        }
        self.tx.send(m).await.map_err(|_| ())
    }

    /// The caller as a new call would find it now: its certificate chains
    /// to the current bundle and is unexpired, and its record (not evicted,
    /// not banned) still names the stream's serial as current or previous.
    fn recheck(&self) -> Result<(), Status> {
        if self.now() >= self.caller.cert_not_after {
            return Err(ApiError::Refused(
                "the agent SVID this stream was opened with expired; reconnect with the current one"
                    .into(),
            )
            .into());
        }
        tokio::task::block_in_place(|| self.ctx.auth.recheck(&self.caller, RECHECK_METHOD))?;
        self.ctx
            .auth
            .chains_to(&self.caller, &self.ctx.ca.bundle().x509_authorities)
            .map_err(Status::from)
    }

    async fn send_bundle(&mut self) -> Result<(), ()> {
        let b = self.ctx.ca.bundle();
        self.send(msg(pb::sync_entries_response::Kind::Bundle(bundle_to_pb(
            &b,
            self.ctx.refresh_hint,
        ))))
        .await
    }

    fn view(&self) -> AgentView {
        self.ctx
            .registry
            .view_for(&self.caller.id, &self.caller.record.selectors, self.now())
    }

    /// Makes `view` the agent's view from now on (its entries are, or are
    /// about to be, sent).
    fn adopt(&mut self, view: &AgentView) {
        self.revision = view.revision;
        self.parents = view.parents.clone();
        self.known = view.entries.iter().map(|e| e.id.clone()).collect();
        self.next_expiry = view.next_expiry;
        self.federated.set_view(&view.entries);
    }

    /// Sends the foreign bundles the agent's entries now need and the
    /// removals of those they no longer do.
    async fn push_federated(&mut self) -> Result<(), ()> {
        let Some(foreign) = self.ctx.foreign.clone() else {
            return Ok(());
        };
        for m in self.federated.diff(&foreign) {
            let kind = match m {
                federated::Send::Bundle(b) => {
                    debug!(agent_id = %self.caller.id, trust_domain = %b.trust_domain, sequence = b.sequence, "sending a federated bundle");
                    pb::sync_entries_response::Kind::FederatedBundle(bundle_to_pb(
                        &b,
                        self.ctx.refresh_hint,
                    ))
                }
                federated::Send::Removed(td) => {
                    debug!(agent_id = %self.caller.id, trust_domain = %td, "federated bundle removed");
                    pb::sync_entries_response::Kind::FederatedBundleRemoved(td.to_string())
                }
            };
            self.send(msg(kind)).await?;
        }
        Ok(())
    }

    /// Sends the whole authorized set in pages; the last page says so.
    async fn full(&mut self) -> Result<(), ()> {
        let view = self.view();
        self.full_from(view).await
    }

    async fn full_from(&mut self, view: AgentView) -> Result<(), ()> {
        self.adopt(&view);
        // Every federated bundle goes before the last page.
        self.federated.forget_sent();
        self.push_federated().await?;
        let mut chunks = view.entries.chunks(self.page).peekable();
        if chunks.peek().is_none() {
            return self.page_msg(vec![], true).await;
        }
        while let Some(chunk) = chunks.next() {
            let entries = chunk.iter().map(|e| entry_to_pb(e)).collect();
            self.page_msg(entries, chunks.peek().is_none()).await?;
        }
        debug!(agent_id = %self.caller.id, entries = self.known.len(), revision = self.revision, "full entry set sent");
        Ok(())
    }

    async fn page_msg(&mut self, entries: Vec<pb::Entry>, last: bool) -> Result<(), ()> {
        self.send(msg(pb::sync_entries_response::Kind::Page(pb::EntryPage {
            entries,
            last,
            revision: self.revision,
        })))
        .await
    }

    /// Sends the changes since `since` if the store still has them and no
    /// node entry changed meanwhile; otherwise the full set.
    async fn resume(&mut self, since: u64) -> Result<(), ()> {
        if since > self.ctx.registry.revision() {
            self.catch_up_to(since).await?;
        }
        let view = self.view();
        let store = self.ctx.store.clone();
        let read: resume::PageReader =
            Arc::new(move |after, limit| store.entry_events_page(after, limit));
        let server_id = self.ctx.registry.server_id().clone();
        match resume::plan(read, &view, since, &server_id).await {
            resume::Plan::Full(reason) => {
                debug!(agent_id = %self.caller.id, since, reason, "cannot resume; sending the full set");
                self.full_from(view).await
            }
            resume::Plan::Changes(changes) => {
                self.adopt(&view);
                debug!(agent_id = %self.caller.id, since, changes = changes.len(), revision = self.revision, "resumed");
                for c in changes {
                    self.send(match c {
                        resume::Change::Upsert(e) => upsert(&e),
                        resume::Change::Deleted { id, revision } => deleted(&id, revision),
                    })
                    .await?;
                }
                Ok(())
            }
        }
    }

    /// Before resuming from `since`, ahead of the registry: catches the
    /// registry up from the store (bounded by [`AHEAD_WAIT`]). A store that
    /// cannot be read ends the stream with `UNAVAILABLE`: the agent keeps
    /// what it has and retries. A store that is itself behind `since` (it
    /// was restored) gets the full set, as before.
    async fn catch_up_to(&mut self, since: u64) -> Result<(), ()> {
        let registry = self.ctx.registry.clone();
        let task = tokio::task::spawn_blocking(move || registry.catch_up());
        let failed = match tokio::time::timeout(AHEAD_WAIT, task).await {
            Ok(Ok(Ok(_))) => return Ok(()),
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {AHEAD_WAIT:?}"),
        };
        let revision = self.ctx.registry.revision();
        warn!(agent_id = %self.caller.id, since, revision, error = %failed,
            "an agent resumes from a revision ahead of this server's and the store cannot be read to catch up; refusing");
        let status = Status::unavailable(format!(
            "this server's entries are at revision {revision}, behind the agent's {since}, \
             and the store is unreachable to catch up; retry"
        ));
        let _ = self.tx.send(Err(status)).await;
        Err(())
    }

    /// Diffs the whole view against what the agent holds and sends the
    /// difference: after a node entry changed (aliases may have), or when
    /// an entry or alias expired.
    async fn rediff(&mut self) -> Result<(), ()> {
        let view = self.view();
        let ids: HashSet<String> = view.entries.iter().map(|e| e.id.clone()).collect();
        let mut gone: Vec<String> = self.known.difference(&ids).cloned().collect();
        gone.sort();
        for id in gone {
            self.send(deleted(&id, self.revision)).await?;
        }
        let new: Vec<Arc<Entry>> = view
            .entries
            .iter()
            .filter(|e| !self.known.contains(&e.id))
            .cloned()
            .collect();
        for e in new {
            self.send(upsert(&e)).await?;
        }
        // Keep the stream's revision: changes the view already holds but
        // whose events are still queued are sent again when they arrive,
        // rather than skipped.
        let revision = self.revision;
        self.adopt(&view);
        self.revision = revision;
        Ok(())
    }

    async fn on_event(&mut self, ev: &EntryEvent) -> Result<(), ()> {
        if ev.revision() <= self.revision {
            return Ok(());
        }
        self.revision = ev.revision();
        let e = ev.entry();
        let server_id = self.ctx.registry.server_id();
        let was_node = matches!(ev, EntryEvent::Moved { from, .. } if from == server_id);
        if self.ctx.registry.is_node_entry(e) || was_node {
            // Aliases may have changed: diff the whole view.
            return self.rediff().await;
        }
        if !ev.is_deleted() && authz::is_authorized(e, &self.parents, self.now()) {
            self.known.insert(e.id.clone());
            self.federated.upsert(e);
            if let Some(t) = e.spec.expires_at {
                self.next_expiry = Some(self.next_expiry.map_or(t, |n| n.min(t)));
            }
            return self.send(upsert(e)).await;
        }
        if self.known.remove(&e.id) {
            self.federated.remove(&e.id);
            self.send(deleted(&e.id, e.revision)).await
        } else {
            Ok(())
        }
    }

    /// How long until the next expiry should be checked: at most
    /// [`RECHECK`], so a clock that jumps (or a test's manual clock) is
    /// caught up with soon.
    fn until_expiry(&self) -> Option<Duration> {
        let t = self.next_expiry?;
        let secs = u64::try_from(t.saturating_sub(self.now())).unwrap_or(0);
        Some(Duration::from_secs(secs).min(RECHECK))
    }

    /// Runs when the expiry timer fires: re-diffs if the expiry passed.
    async fn on_expiry_timer(&mut self) -> Result<(), ()> {
        match self.next_expiry {
            Some(t) if t <= self.now() => {
                debug!(agent_id = %self.caller.id, expires_at = t, "an entry or alias expired; re-checking the view");
                self.rediff().await
            }
            _ => Ok(()),
        }
    }

    async fn run(mut self, since: u64) {
        // Subscribe before the snapshot so no change falls in between.
        let mut events = self.ctx.registry.subscribe();
        let mut bundles = self.ctx.ca.subscribe_bundle();
        let mut reloads = self.ctx.registry.subscribe_reloads();
        let mut foreign = match &self.ctx.foreign {
            Some(f) => f.subscribe(),
            // Never changes: no foreign bundles are sent.
            None => tokio::sync::watch::channel(0).1,
        };
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        let start = async {
            self.send_bundle().await?;
            if since == 0 {
                self.full().await
            } else {
                self.resume(since).await?;
                self.push_federated().await
            }
        };
        if start.await.is_err() {
            return;
        }
        let _connected = crate::metrics::ConnectedAgent::counted();
        info!(agent_id = %self.caller.id, entries = self.known.len(), revision = self.revision, "agent sync stream open");
        loop {
            // Each wake-up is one batch: re-check before its first message.
            self.checked = false;
            let step = tokio::select! {
                ev = events.recv() => match ev {
                    Ok(ev) => self.on_event(&ev).await,
                    Err(RecvError::Lagged(n)) => {
                        debug!(agent_id = %self.caller.id, missed = n, "sync stream lagged; sending the full set");
                        self.full().await
                    }
                    Err(RecvError::Closed) => return,
                },
                r = reloads.changed() => match r {
                    Ok(()) => {
                        info!(agent_id = %self.caller.id, "the registry reloaded from the store; sending the full set");
                        self.full().await
                    }
                    Err(_) => return,
                },
                r = bundles.changed() => match r {
                    Ok(()) => self.send_bundle().await,
                    Err(_) => return,
                },
                r = foreign.changed(), if self.ctx.foreign.is_some() => match r {
                    Ok(()) => Ok(()),
                    Err(_) => return,
                },
                _ = recheck.tick() => match self.recheck() {
                    Ok(()) => Ok(()),
                    Err(status) => {
                        info!(agent_id = %self.caller.id, reason = status.message(), "closing sync stream");
                        let _ = self.tx.send(Err(status)).await;
                        return;
                    }
                },
                _ = expiry_timer(self.until_expiry()) => self.on_expiry_timer().await,
                _ = self.tx.closed() => return,
            };
            if step.is_err() || self.push_federated().await.is_err() {
                return;
            }
        }
    }
}

/// Sleeps `d`, or forever when there is nothing to wait for.
async fn expiry_timer(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Starts a sync stream for `caller`; the receiver feeds the gRPC response.
/// Refused when the agent has as many streams open as it may.
pub fn start(
    ctx: SyncContext,
    caller: AgentCaller,
    since: u64,
    page_size: u32,
) -> Result<mpsc::Receiver<Result<pb::SyncEntriesResponse, Status>>, ApiError> {
    let open = match ctx.open.try_acquire(caller.id.to_string()) {
        Ok(p) => p,
        Err(full) => {
            warn!(agent_id = %caller.id, reason = %full, "SyncEntries refused: too many streams open for this agent");
            return Err(ApiError::Exhausted(
                "this agent already has as many SyncEntries streams open as \
                 limits.agent_api_max_sync_streams_per_agent allows; the newest is refused",
            ));
        }
    };
    let (tx, rx) = mpsc::channel(64);
    let page = match usize::try_from(page_size).unwrap_or(MAX_PAGE) {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let s = Stream {
        _open: open,
        ctx,
        caller,
        tx,
        page,
        known: HashSet::new(),
        parents: HashSet::new(),
        revision: 0,
        next_expiry: None,
        checked: false,
        federated: federated::Federated::default(),
    };
    tokio::spawn(s.run(since));
    Ok(rx)
}
