//! Store upkeep on a schedule: entry changes older than
//! `limits.entry_event_retention` leave the event log agents resume from,
//! and expired join tokens leave the store. The log holds revisions, not
//! times, so the pruner remembers the revision that was current at each of
//! its rounds and prunes up to the newest one at least one retention old;
//! after a restart nothing is pruned until one retention has passed (never
//! too early, at most one round late). An agent whose revision was pruned
//! gets the full set on its next resume.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sigil_proto::clock::Clock;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::store::{Store, StoreResult};

/// The longest time between two rounds.
const MAX_INTERVAL: Duration = Duration::from_secs(600);

/// How often the pruner runs for `retention`: a quarter of it (so events
/// leave at most a quarter late), between 1s and 10m.
pub fn interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), MAX_INTERVAL)
}

/// What one round removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    /// Events with revision <= this were pruned in this round (0: none).
    pub events_upto: u64,
    pub join_tokens: usize,
}

pub struct Pruner {
    store: Arc<dyn Store>,
    retention_secs: i64,
    /// (unix seconds, revision current then), oldest first.
    marks: Mutex<VecDeque<(i64, u64)>>,
}

impl Pruner {
    pub fn new(store: Arc<dyn Store>, retention: Duration) -> Pruner {
        Pruner {
            store,
            retention_secs: i64::try_from(retention.as_secs()).unwrap_or(i64::MAX),
            marks: Mutex::new(VecDeque::new()),
        }
    }

    /// One round at `now` (unix seconds). Blocking (store calls).
    pub fn round(&self, now: i64) -> StoreResult<Pruned> {
        let revision = self.store.entries_revision()?;
        let cutoff = now.saturating_sub(self.retention_secs);
        let upto = {
            let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
            // A mark with the same revision and an earlier time says more.
            if marks.back().is_none_or(|&(_, r)| r != revision) {
                marks.push_back((now, revision));
            }
            let mut upto = None;
            while let Some(&(t, r)) = marks.front() {
                if t > cutoff {
                    break;
                }
                upto = Some(r);
                marks.pop_front();
            }
            upto
        };
        let mut out = Pruned::default();
        if let Some(upto) = upto.filter(|r| *r > 0) {
            self.store.prune_entry_events(upto)?;
            out.events_upto = upto;
        }
        out.join_tokens = self.store.prune_join_tokens(now)?;
        Ok(out)
    }

    /// Runs a round every `every` until `shutdown` changes.
    pub async fn run(
        self: Arc<Self>,
        clock: Arc<dyn Clock>,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let now = clock.now_unix();
            let p = self.clone();
            match tokio::task::spawn_blocking(move || p.round(now)).await {
                Ok(Ok(Pruned {
                    events_upto: 0,
                    join_tokens: 0,
                })) => {}
                Ok(Ok(p)) => info!(
                    events_pruned_upto = p.events_upto,
                    join_tokens_pruned = p.join_tokens,
                    "pruned the entry event log and expired join tokens"
                ),
                Ok(Err(e)) => warn!(error = %e, "pruning the store failed; retrying next round"),
                Err(e) => warn!(error = %e, "pruning task failed; retrying next round"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests;
