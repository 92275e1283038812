//! Following a store that other servers write too. The store's event log
//! is the one order of every entry change (its revision is gapless), so
//! the registry applies it in that order: [`Registry::catch_up`] reads the
//! events after the registry's revision in bounded pages and applies and
//! broadcasts each one exactly as a local write, under the registry's
//! write lock, so local and followed writes interleave in revision order.
//! A local write whose revision is not the next one (another server wrote
//! in between) first catches up to the revision before it; its own event
//! is never applied twice, as nothing at or below the registry's revision
//! is applied again. When the log was pruned past the registry's revision,
//! the registry reloads every entry from the store and bumps its reload
//! count: every sync stream then sends its agent the full set
//! ([`Registry::subscribe_reloads`]).
//!
//! [`follow`] runs the catch-up whenever the store's revision feed
//! ([`Store::revision_feed`](crate::store::Store::revision_feed): woken by
//! `NOTIFY` on PostgreSQL, with a periodic poll as a safety net) reports a
//! revision ahead of the registry's, retrying with backoff while the store
//! is unreachable; once it is back, it resumes from the registry's last
//! revision.
//!
//! The other synced records are not copied into memory: agent records
//! (evictions, bans) and node bans are read from the store on every agent
//! call and before every batch an open sync stream sends, so another
//! server's write applies at the next call; the trust bundle, federation
//! relationships and foreign bundles are the CA's and the federation's to
//! follow.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::Registry;
use crate::entry::EntryEvent;
use crate::store::StoreResult;

/// Events per store read while catching up.
pub const CATCH_UP_PAGE: usize = 500;
/// The first retry delay after a catch-up failed; doubled up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What one catch-up did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CaughtUp {
    /// Events applied.
    pub applied: u64,
    /// Whether the registry was reloaded from the store.
    pub reloaded: bool,
}

impl Registry {
    /// Applies every change in the store's event log after the registry's
    /// revision (see the file comment).
    pub fn catch_up(&self) -> StoreResult<CaughtUp> {
        let _w = self.lock_writes();
        self.catch_up_locked()
    }

    /// [`Registry::catch_up`] for a caller that holds the write lock.
    pub(super) fn catch_up_locked(&self) -> StoreResult<CaughtUp> {
        self.catch_up_to(u64::MAX)
    }

    /// Applies the logged changes after the registry's revision up to
    /// `upto`, in order; reloads when the log no longer has them.
    fn catch_up_to(&self, upto: u64) -> StoreResult<CaughtUp> {
        let mut done = CaughtUp::default();
        let mut after = self.revision();
        while after < upto {
            let Some(page) = self.store.entry_events_page(after, CATCH_UP_PAGE)? else {
                if done.reloaded {
                    // Pruned again at once: leave it to the next catch-up.
                    return Ok(done);
                }
                self.reload_locked()?;
                done.reloaded = true;
                after = self.revision();
                continue;
            };
            if page.is_empty() {
                break;
            }
            for ev in page {
                let r = ev.revision();
                if r > upto {
                    return Ok(done);
                }
                if r > after {
                    after = r;
                    self.apply(ev);
                    done.applied += 1;
                }
            }
        }
        Ok(done)
    }

    /// Replaces the index with the store's entries and tells subscribers
    /// to resynchronise.
    fn reload_locked(&self) -> StoreResult<()> {
        let index = Registry::snapshot(self.store.as_ref())?;
        let revision = index.revision;
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = index;
        self.reloads.send_modify(|n| *n += 1);
        info!(
            revision,
            "the entry event log no longer holds the changes this server missed; \
             reloaded every entry from the store and resynchronising agents"
        );
        Ok(())
    }

    /// Applies a local write's event (the write lock held): after the
    /// changes other servers made before it, never twice.
    pub(super) fn record_local(&self, ev: EntryEvent) {
        let r = ev.revision();
        if r > self.revision().saturating_add(1)
            && let Err(e) = self.catch_up_to(r - 1)
        {
            warn!(revision = r, error = %e,
                "catching up with other servers' writes before a local one failed; \
                 the follower applies both");
            return;
        }
        if r > self.revision() {
            self.apply(ev);
        }
    }

    /// A `watch` whose value changes on every full reload: the subscriber
    /// must resynchronise from a snapshot ([`Registry::view_for`]).
    pub fn subscribe_reloads(&self) -> watch::Receiver<u64> {
        self.reloads.subscribe()
    }
}

/// Keeps `registry` in step with the store's revision `feed` until
/// `shutdown` (or the feed ends).
pub async fn follow(
    registry: Arc<Registry>,
    mut feed: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let target = *feed.borrow_and_update();
        if target > registry.revision() {
            let r = registry.clone();
            match tokio::task::spawn_blocking(move || r.catch_up()).await {
                Ok(Ok(done)) => {
                    backoff = FIRST_BACKOFF;
                    debug!(
                        applied = done.applied,
                        reloaded = done.reloaded,
                        revision = registry.revision(),
                        "followed other servers' entry changes"
                    );
                    continue;
                }
                Ok(Err(e)) => {
                    warn!(error = %e, revision = registry.revision(), target, retry_in = ?backoff,
                        "following the store's entry changes failed; serving from memory")
                }
                Err(e) => warn!(error = %e, "the entry catch-up task failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        tokio::select! {
            r = feed.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests;
