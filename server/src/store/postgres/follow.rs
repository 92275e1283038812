//! Following the entry revision of a PostgreSQL store that other servers
//! write too: [`PgStore::follow_revisions`] gives a `watch` of the latest
//! committed store-wide revision, woken at once by the `NOTIFY` every entry
//! transaction sends at commit (on a connection of its own that `LISTEN`s),
//! with a periodic catch-up poll as a safety net (a notification lost with
//! a connection, a write made outside Sigil). After each (re)connection it
//! reads the revision once, so nothing committed before `LISTEN` took hold
//! is missed. A revision it reports is committed with every earlier one
//! (the revision is gapless), so a reader of the event log up to it sees
//! every change. The task ends when every receiver is gone or the store is
//! dropped; connection failures are retried with backoff (at most `poll`).
//!
//! Applying the events behind a new revision to a server's in-memory
//! registry (and pushing them to its agents) is the registry's part.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

use super::entries::{ENTRIES_CHANNEL, K_REVISION, meta};
use super::pool::Connector;
use super::*;

/// The first retry delay after the follower's connection failed.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

impl PgStore {
    /// A `watch` of the latest committed entry revision (see the file
    /// comment); starts at the current one. `poll` is the catch-up period.
    pub fn follow_revisions(&self, poll: Duration) -> StoreResult<watch::Receiver<u64>> {
        let (tx, rx) = watch::channel(self.entries_revision()?);
        let poll = poll.max(Duration::from_millis(10));
        self.pool
            .handle()?
            .spawn(follow(self.pool.connector(), tx, poll));
        Ok(rx)
    }
}

async fn follow(connector: Arc<Connector>, tx: watch::Sender<u64>, poll: Duration) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Err(e) = listen(&connector, &tx, poll).await else {
            return;
        };
        tracing::warn!(database = %connector.label, error = %e, retry_in = ?backoff,
            "following the PostgreSQL entry log failed");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tx.closed() => return,
        }
        backoff = (backoff * 2).min(poll);
    }
}

/// One connection's worth of following; `Ok` once every receiver is gone.
async fn listen(connector: &Connector, tx: &watch::Sender<u64>, poll: Duration) -> StoreResult<()> {
    let label = connector.label.as_str();
    let (messages_tx, mut messages) = mpsc::unbounded_channel();
    let client = connector.connect(Some(messages_tx)).await?;
    client
        .batch_execute(&format!("LISTEN {ENTRIES_CHANNEL}"))
        .await
        .map_err(db(label, "listening for entry changes"))?;
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tx.closed() => return Ok(()),
            // The first tick is at once: the catch-up read after LISTEN.
            _ = tick.tick() => publish(tx, meta(&client, K_REVISION, label).await?),
            m = messages.recv() => match m {
                Some(AsyncMessage::Notification(n)) if n.channel() == ENTRIES_CHANNEL => {
                    match n.payload().parse::<u64>() {
                        Ok(revision) => publish(tx, revision),
                        Err(_) => publish(tx, meta(&client, K_REVISION, label).await?),
                    }
                }
                Some(_) => {}
                None => {
                    return Err(StoreError::Io(format!(
                        "PostgreSQL at {label}: the LISTEN connection closed"
                    )));
                }
            },
        }
    }
}

/// Raises the watched revision to `revision` (never lowers it).
fn publish(tx: &watch::Sender<u64>, revision: u64) {
    tx.send_if_modified(|current| {
        let newer = revision > *current;
        if newer {
            *current = revision;
        }
        newer
    });
}
