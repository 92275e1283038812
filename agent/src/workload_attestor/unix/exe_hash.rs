//! SHA-256 of the executable a process runs, cached per file version: the
//! file behind `/proc/<pid>/exe` is opened once and its identity, size and
//! content all come from that open file, so a binary replaced meanwhile is
//! never given another's hash.
//!
//! Hashing is bounded (issue 14, item 12): at most [`MAX_CONCURRENT_HASHES`]
//! executables are hashed at once, whoever asks; others wait (at most
//! [`HASH_WAIT`], then the attestation fails and the caller retries) and
//! look in the cache again once they may hash, so many callers of one new
//! binary hash it about once. The cache is keyed by content identity (dev,
//! inode, size, mtime, ctime), so touching or copying a large binary costs
//! one hash per new version, never more than the bound at a time.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
#[cfg(test)]
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use ring::digest;

use super::super::exe_file::{self, FileVersion};
use super::super::{WorkloadAttestError, read_error, unavailable};

/// How many executable hashes are remembered.
pub(super) const HASH_CACHE_CAPACITY: usize = 1024;

/// How many executables are hashed at once (the machine's I/O and a core
/// each, at most).
pub(super) const MAX_CONCURRENT_HASHES: usize = 2;

/// How long an attestation waits for its turn to hash before it fails.
pub(super) const HASH_WAIT: Duration = Duration::from_secs(30);

/// What the cache knows of an executable.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Known {
    /// Its hash, or `None`: it gets none (over the size limit, or changed
    /// while it was hashed).
    Hash(Option<String>),
    /// Not cached, and hashing was not allowed.
    NotCached,
}

/// The hash cache, and the size limit above which nothing is hashed.
#[derive(Debug)]
pub(super) struct ExeHashes {
    max_bytes: u64,
    hashes: Mutex<HashMap<FileVersion, String>>,
    /// Hashes running now (at most `MAX_CONCURRENT_HASHES`).
    running: Mutex<usize>,
    turn: Condvar,
    #[cfg(test)]
    computed: AtomicU64,
    /// The most hashes seen running at once.
    #[cfg(test)]
    pub(super) max_running: AtomicUsize,
}

/// A turn to hash; given back when dropped.
struct HashTurn<'a>(&'a ExeHashes);

impl Drop for HashTurn<'_> {
    fn drop(&mut self) {
        let mut running = self.0.running_lock();
        *running = running.saturating_sub(1);
        self.0.turn.notify_one();
    }
}

impl ExeHashes {
    pub(super) fn new(max_bytes: u64) -> Self {
        ExeHashes {
            max_bytes,
            hashes: Mutex::new(HashMap::new()),
            running: Mutex::new(0),
            turn: Condvar::new(),
            #[cfg(test)]
            computed: AtomicU64::new(0),
            #[cfg(test)]
            max_running: AtomicUsize::new(0),
        }
    }

    fn running_lock(&self) -> std::sync::MutexGuard<'_, usize> {
        // A counter: a panic elsewhere cannot leave it half-written.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits (at most `HASH_WAIT`) for a turn to hash.
    fn hash_turn(&self, pid: i32) -> Result<HashTurn<'_>, WorkloadAttestError> {
        let running = self.running_lock();
        let (mut running, timeout) = self
            .turn
            .wait_timeout_while(running, HASH_WAIT, |n| *n >= MAX_CONCURRENT_HASHES)
            .unwrap_or_else(|e| e.into_inner());
        if timeout.timed_out() && *running >= MAX_CONCURRENT_HASHES {
            return Err(unavailable(
                pid,
                format!(
                    "no turn to hash the executable within {HASH_WAIT:?} \
                     ({MAX_CONCURRENT_HASHES} hashes running)"
                ),
            ));
        }
        *running += 1;
        #[cfg(test)]
        self.max_running.fetch_max(*running, Ordering::Relaxed);
        Ok(HashTurn(self))
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// How many hashes were computed (not found in the cache).
    #[cfg(test)]
    pub(super) fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileVersion, String>> {
        // A panic while the lock was held cannot leave the map half-updated
        // in a way that matters: every entry is a complete (key, hash) pair.
        self.hashes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// SHA-256 (lowercase hex) of the executable behind `exe_link`, or `None`
    /// when it is over the size limit or changed while it was read.
    #[cfg(test)]
    pub(super) fn sha256(
        &self,
        pid: i32,
        exe_link: &Path,
    ) -> Result<Option<String>, WorkloadAttestError> {
        match self.sha256_if(pid, exe_link, true, false)? {
            Known::Hash(hash) => Ok(hash),
            Known::NotCached => Err(unavailable(pid, "the executable's hash needs hashing")),
        }
    }

    /// [`ExeHashes::sha256`], or [`Known::NotCached`] when the hash is not
    /// cached and `may_hash` is false (hashing reads the whole file: a
    /// blocking thread's work). `local`: the executable is on a local,
    /// kernel-backed filesystem (`exe_file`).
    pub(super) fn sha256_if(
        &self,
        pid: i32,
        exe_link: &Path,
        may_hash: bool,
        local: bool,
    ) -> Result<Known, WorkloadAttestError> {
        // On a local filesystem a hash already known is found without
        // opening the file, keyed by the version `statx` gives from memory:
        // there the attributes in memory are the file's. (On others they
        // may lag behind the server's, so the file is opened.)
        if local {
            let stat =
                exe_file::stat_cached(exe_link).map_err(|e| read_error(pid, exe_link, &e))?;
            if let known @ Known::Hash(_) = self.known(pid, &stat.version, stat.is_file)? {
                return Ok(known);
            }
        }
        if !may_hash {
            return Ok(Known::NotCached);
        }
        // Open once and take everything from the open file, so that the key,
        // the size check and the content are of the same file.
        let mut file = File::open(exe_link).map_err(|e| read_error(pid, exe_link, &e))?;
        let meta = file.metadata().map_err(|e| read_error(pid, exe_link, &e))?;
        let version = FileVersion::of(&meta);
        match self.known(pid, &version, meta.is_file())? {
            Known::NotCached => self
                .compute(pid, exe_link, &mut file, version)
                .map(Known::Hash),
            known => Ok(known),
        }
    }

    /// What the cache knows of `version`: refused if it is not a regular
    /// file, no hash over the size limit (logged), else the cached hash.
    fn known(
        &self,
        pid: i32,
        version: &FileVersion,
        is_file: bool,
    ) -> Result<Known, WorkloadAttestError> {
        if !is_file {
            return Err(unavailable(pid, "the executable is not a regular file"));
        }
        if version.size > self.max_bytes {
            tracing::debug!(
                pid,
                size = version.size,
                limit = self.max_bytes,
                "executable larger than the hash limit; unix:sha256 omitted"
            );
            return Ok(Known::Hash(None));
        }
        Ok(self
            .lock()
            .get(version)
            .map_or(Known::NotCached, |h| Known::Hash(Some(h.clone()))))
    }

    /// Hashes `file` (of `version`) under the concurrency bound and caches
    /// the result.
    fn compute(
        &self,
        pid: i32,
        exe_link: &Path,
        file: &mut File,
        version: FileVersion,
    ) -> Result<Option<String>, WorkloadAttestError> {
        let _turn = self.hash_turn(pid)?;
        // Another caller may have hashed this version while we waited.
        if let Some(hash) = self.lock().get(&version) {
            return Ok(Some(hash.clone()));
        }

        #[cfg(test)]
        self.computed.fetch_add(1, Ordering::Relaxed);
        let (hash, len) =
            sha256_hex(file, self.max_bytes).map_err(|e| read_error(pid, exe_link, &e))?;
        let after = file.metadata().map_err(|e| read_error(pid, exe_link, &e))?;
        if len != version.size || FileVersion::of(&after) != version {
            tracing::debug!(
                pid,
                "executable changed while it was hashed; unix:sha256 omitted"
            );
            return Ok(None);
        }

        let mut hashes = self.lock();
        if hashes.len() >= HASH_CACHE_CAPACITY && !hashes.contains_key(&version) {
            // Evict an arbitrary entry: cheap, and a cache miss only costs a
            // re-hash.
            if let Some(evict) = hashes.keys().next().copied() {
                hashes.remove(&evict);
            }
        }
        hashes.insert(version, hash.clone());
        Ok(Some(hash))
    }
}

/// SHA-256 of at most `limit` bytes of `reader`, and how many bytes it read
/// (`limit + 1` at most, so a file that grew shows up).
pub(super) fn sha256_hex(reader: &mut impl Read, limit: u64) -> io::Result<(String, u64)> {
    let mut reader = reader.take(limit.saturating_add(1));
    let mut context = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        context.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(context.finish()), len))
}
