//! User and group names of the `unix` attestor (`unix:user`, `unix:group`),
//! remembered for at most [`NAME_TTL`]. A look-up goes through NSS, which
//! may read `/etc/passwd` or ask a directory service over a socket, so it
//! may block and costs a file parse at best; done on every Workload API
//! call it was a sixth of the agent's CPU time under load. Remembered for a
//! second, a rename or a new user reaches the selectors at most a second
//! late — far tighter than the system caches that already sit in front of
//! NSS (nscd keeps a name 10 minutes, sssd 90). A name that does not resolve
//! is remembered the same way; a failed look-up is not remembered.
//!
//! [`Names::user`] and [`Names::group`] answer from memory when they can;
//! without leave to block they answer `None` instead of looking up, so the
//! caller can move to a blocking thread.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Group, Uid, User};

/// How long a looked-up name is used before it is looked up again.
pub(super) const NAME_TTL: Duration = Duration::from_secs(1);

/// How many ids of each kind are remembered; when full, expired ones go
/// first, then an arbitrary one.
pub(super) const NAME_CACHE_CAPACITY: usize = 1024;

/// The name of an id as a look-up found it (`None`: it has none).
type Looked = Option<String>;

#[derive(Debug, Default)]
pub(super) struct Names {
    users: Cache<u32>,
    groups: Cache<u32>,
}

impl Names {
    /// The name of `uid`: `Some(Ok(name or none))` from memory or a look-up,
    /// `Some(Err(_))` when the look-up failed, `None` when it is not in
    /// memory and `may_block` is false.
    pub(super) fn user(&self, uid: u32, may_block: bool) -> Option<Result<Looked, nix::Error>> {
        self.users.get_or_look_up(uid, may_block, || {
            User::from_uid(Uid::from_raw(uid)).map(|u| u.map(|u| u.name))
        })
    }

    /// The name of `gid`, as [`Names::user`].
    pub(super) fn group(&self, gid: u32, may_block: bool) -> Option<Result<Looked, nix::Error>> {
        self.groups.get_or_look_up(gid, may_block, || {
            Group::from_gid(Gid::from_raw(gid)).map(|g| g.map(|g| g.name))
        })
    }
}

#[derive(Debug)]
struct Cache<K>(Mutex<HashMap<K, (Instant, Looked)>>);

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache(Mutex::new(HashMap::new()))
    }
}

impl<K: Copy + Eq + Hash> Cache<K> {
    fn get_or_look_up(
        &self,
        id: K,
        may_block: bool,
        look_up: impl FnOnce() -> Result<Looked, nix::Error>,
    ) -> Option<Result<Looked, nix::Error>> {
        let now = Instant::now();
        if let Some((at, name)) = self.lock().get(&id)
            && now.duration_since(*at) < NAME_TTL
        {
            return Some(Ok(name.clone()));
        }
        if !may_block {
            return None;
        }
        // Looked up without the lock held: NSS may take its time.
        let looked = look_up();
        if let Ok(name) = &looked {
            let mut map = self.lock();
            if map.len() >= NAME_CACHE_CAPACITY && !map.contains_key(&id) {
                map.retain(|_, (at, _)| now.duration_since(*at) < NAME_TTL);
                if map.len() >= NAME_CACHE_CAPACITY
                    && let Some(k) = map.keys().next().copied()
                {
                    map.remove(&k);
                }
            }
            map.insert(id, (now, name.clone()));
        }
        Some(looked)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, Looked)>> {
        // Entries are whole (time, name) pairs: a panic elsewhere cannot
        // leave one half-written.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_name_is_looked_up_once_per_ttl_and_never_without_leave_to_block() {
        let cache = Cache::<u32>::default();
        let calls = Cell::new(0);
        let look = || {
            calls.set(calls.get() + 1);
            Ok(Some("alice".to_string()))
        };
        // Not in memory, no leave to block: no look-up, no answer.
        assert!(cache.get_or_look_up(7, false, look).is_none());
        assert_eq!(calls.get(), 0);
        assert_eq!(
            cache.get_or_look_up(7, true, look).unwrap().unwrap(),
            Some("alice".to_string())
        );
        // From memory now, with or without leave to block.
        assert_eq!(
            cache.get_or_look_up(7, false, look).unwrap().unwrap(),
            Some("alice".to_string())
        );
        cache.get_or_look_up(7, true, look).unwrap().unwrap();
        assert_eq!(calls.get(), 1);
        // Past the TTL it is looked up again.
        cache.lock().get_mut(&7).unwrap().0 -= NAME_TTL;
        assert!(cache.get_or_look_up(7, false, look).is_none());
        cache.get_or_look_up(7, true, look).unwrap().unwrap();
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn no_name_is_remembered_but_a_failed_look_up_is_not() {
        let cache = Cache::<u32>::default();
        assert_eq!(
            cache.get_or_look_up(8, true, || Ok(None)).unwrap(),
            Ok(None)
        );
        assert_eq!(
            cache.get_or_look_up(8, false, || Ok(None)).unwrap(),
            Ok(None)
        );
        assert!(
            cache
                .get_or_look_up(9, true, || Err(nix::Error::EIO))
                .unwrap()
                .is_err()
        );
        assert!(cache.get_or_look_up(9, false, || Ok(None)).is_none());
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = Cache::<u32>::default();
        for id in 0..(NAME_CACHE_CAPACITY as u32 + 10) {
            cache
                .get_or_look_up(id, true, || Ok(None))
                .unwrap()
                .unwrap();
        }
        assert_eq!(cache.lock().len(), NAME_CACHE_CAPACITY);
    }
}
