//! A connection counter with a global cap and a per-key cap (the key is a
//! source IP, a uid, an agent ID, …). A [`ConnPermit`] is one counted
//! connection; it is given back when dropped, so holding it for the life of
//! the connection (not only its handshake) is what bounds open descriptors.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapFull {
    #[error("{0} connections are open, the global limit")]
    Global(usize),
    #[error("{0} connections are open from this source, its limit")]
    PerKey(usize),
}

#[derive(Debug)]
struct Counts<K> {
    total: usize,
    per_key: HashMap<K, usize>,
}

/// At most `global` open things in all, and `per_key` under one key.
#[derive(Debug)]
pub struct ConnCap<K: Hash + Eq + Clone> {
    global: usize,
    per_key: usize,
    counts: Mutex<Counts<K>>,
}

impl<K: Hash + Eq + Clone> ConnCap<K> {
    pub fn new(global: usize, per_key: usize) -> Arc<ConnCap<K>> {
        Arc::new(ConnCap {
            global,
            per_key,
            counts: Mutex::new(Counts {
                total: 0,
                per_key: HashMap::new(),
            }),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts<K>> {
        // The counts stay consistent under a panic elsewhere: every change
        // is one statement.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more under `key`, or says which cap is full.
    pub fn try_acquire(self: &Arc<Self>, key: K) -> Result<ConnPermit<K>, CapFull> {
        let mut c = self.counts();
        if c.total >= self.global {
            return Err(CapFull::Global(c.total));
        }
        let n = c.per_key.entry(key.clone()).or_insert(0);
        if *n >= self.per_key {
            return Err(CapFull::PerKey(*n));
        }
        *n += 1;
        c.total += 1;
        Ok(ConnPermit {
            cap: self.clone(),
            key: Some(key),
        })
    }

    /// Whether the global cap is reached (an acceptor stops accepting then).
    pub fn is_full(&self) -> bool {
        self.counts().total >= self.global
    }

    /// Open things in all.
    pub fn total(&self) -> usize {
        self.counts().total
    }

    /// Open things under `key`.
    pub fn count(&self, key: &K) -> usize {
        self.counts().per_key.get(key).copied().unwrap_or(0)
    }

    fn release(&self, key: &K) {
        let mut c = self.counts();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_key.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_key.remove(key);
            }
        }
    }
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub struct ConnPermit<K: Hash + Eq + Clone> {
    cap: Arc<ConnCap<K>>,
    key: Option<K>,
}

impl<K: Hash + Eq + Clone> Drop for ConnPermit<K> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.cap.release(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_key_and_global_caps_hold_until_the_permit_drops() {
        let cap = ConnCap::<u8>::new(3, 2);
        let a1 = cap.try_acquire(1).unwrap();
        let _a2 = cap.try_acquire(1).unwrap();
        assert_eq!(cap.try_acquire(1).unwrap_err(), CapFull::PerKey(2));
        let b1 = cap.try_acquire(2).unwrap();
        assert_eq!(cap.try_acquire(3).unwrap_err(), CapFull::Global(3));
        assert!(cap.is_full());
        drop(b1);
        let _c1 = cap.try_acquire(3).unwrap();
        drop(a1);
        assert_eq!(cap.count(&1), 1);
        let _a3 = cap.try_acquire(1).unwrap();
        assert_eq!(cap.total(), 3);
    }

    #[test]
    fn a_key_with_nothing_open_is_forgotten() {
        let cap = ConnCap::<String>::new(10, 1);
        drop(cap.try_acquire("x".into()).unwrap());
        assert!(cap.counts().per_key.is_empty());
        assert_eq!(cap.total(), 0);
    }
}
