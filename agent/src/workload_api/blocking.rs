//! Turns on a blocking thread for attestations that cannot be made from
//! procfs and memory alone (a name to look up, an executable to hash or to
//! open off a local filesystem). Such an attestation can wait as long as
//! the caller's filesystem lets it: a FUSE daemon of the caller's own that
//! stops answering holds the thread for good. Tokio's blocking pool is
//! finite (512 threads) and the accept of every connection needs one, so a
//! few hundred held calls would stop the Workload API from accepting
//! anyone.
//!
//! So a call takes a turn before its blocking attestation and keeps it
//! until that thread is done (the turn moves into the blocking task, so a
//! caller that gives up cannot leave a thread held and take another turn):
//! at most [`PER_UID`] at once per uid and [`TOTAL`] over all, well below
//! the pool's size. A call waits for its turn without holding a thread;
//! one uid's held calls make only that uid's wait, and can never take the
//! threads accepts need.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Blocking attestations at once, over all callers.
pub const TOTAL: usize = 256;
/// Blocking attestations at once for one uid.
pub const PER_UID: usize = 16;

/// The turns: one semaphore for all, one per uid with a call waiting or
/// attested.
#[derive(Debug)]
pub(super) struct BlockingTurns {
    total: Arc<Semaphore>,
    per_uid: Arc<Mutex<HashMap<u32, Arc<Semaphore>>>>,
    per_uid_max: usize,
}

/// A turn; given back when dropped (with the uid's semaphore forgotten once
/// no one holds or waits for it).
#[derive(Debug)]
pub(super) struct Turn {
    uid: u32,
    uid_sem: Arc<Semaphore>,
    per_uid: Arc<Mutex<HashMap<u32, Arc<Semaphore>>>>,
    permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.permits = None;
        let mut map = self.per_uid.lock().unwrap_or_else(PoisonError::into_inner);
        // Held by the map and by this turn only: nobody else waits.
        if Arc::strong_count(&self.uid_sem) == 2 {
            map.remove(&self.uid);
        }
    }
}

impl Default for BlockingTurns {
    fn default() -> Self {
        BlockingTurns::new(TOTAL, PER_UID)
    }
}

impl BlockingTurns {
    pub(super) fn new(total: usize, per_uid: usize) -> BlockingTurns {
        BlockingTurns {
            total: Arc::new(Semaphore::new(total)),
            per_uid: Arc::default(),
            per_uid_max: per_uid,
        }
    }

    /// Waits for a turn of `uid` (its own, then one of all), holding no
    /// thread meanwhile. `None` only if the turns were closed (never).
    pub(super) async fn turn(&self, uid: u32) -> Option<Turn> {
        let uid_sem = self
            .per_uid
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(uid)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_uid_max)))
            .clone();
        let mut turn = Turn {
            uid,
            uid_sem: uid_sem.clone(),
            per_uid: self.per_uid.clone(),
            permits: None,
        };
        let mine = uid_sem.acquire_owned().await.ok()?;
        let all = self.total.clone().acquire_owned().await.ok()?;
        turn.permits = Some((mine, all));
        Some(turn)
    }

    /// Uids with a turn held or waited for (tests).
    #[cfg(test)]
    pub(super) fn uids(&self) -> usize {
        self.per_uid
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_uid_gets_at_most_its_share_and_others_go_on() {
        let turns = Arc::new(BlockingTurns::new(3, 2));
        let a1 = turns.turn(1).await.unwrap();
        let _a2 = turns.turn(1).await.unwrap();
        // uid 1's third call waits ...
        let waiting = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.turn(1).await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        // ... while uid 2 gets the last turn of all, and a fourth caller
        // (uid 3) waits for one.
        let b = turns.turn(2).await.unwrap();
        let over_all = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.turn(3).await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!over_all.is_finished());
        drop(b);
        over_all.await.unwrap().unwrap();
        drop(a1);
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_uid_with_no_turn_held_or_awaited_is_forgotten() {
        let turns = BlockingTurns::new(4, 2);
        let t = turns.turn(7).await.unwrap();
        assert_eq!(turns.uids(), 1);
        drop(t);
        assert_eq!(turns.uids(), 0);
    }
}
