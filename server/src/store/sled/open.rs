//! Opening a [`SledStore`]: waiting out a lock a previous store on the
//! directory still holds, telling "in use", "not a directory" and "corrupt"
//! apart in errors that name the path, and checking the layout version.

use std::path::Path;
use std::time::{Duration, Instant};

use ring::rand::SystemRandom;

use super::codec::decode_u64;
use super::*;

/// How long [`SledStore::open`] keeps trying while the directory's lock is
/// held. sled releases its file lock only when the last internal reference
/// to the file goes (its thread-pool writes and deferred epoch garbage), a
/// moment after the previous `SledStore` on the directory was dropped; a
/// child process being spawned also holds the file until its `exec`.
/// Another running server holds the lock for good and is reported after
/// this wait.
const LOCK_WAIT: Duration = Duration::from_secs(3);
const LOCK_RETRY: Duration = Duration::from_millis(10);

impl SledStore {
    /// Opens the database in directory `path`, creating it if needed.
    ///
    /// Fails with [`StoreError::Io`] naming the path if the directory stays
    /// locked by another process (or another `SledStore` in this one) for
    /// [`LOCK_WAIT`], if
    /// `path` is not a directory, or if it cannot be read; with
    /// [`StoreError::Corrupt`] if sled finds corruption or the layout version
    /// is not this build's.
    pub fn open(path: &Path) -> StoreResult<SledStore> {
        let shown = path.display();
        match std::fs::metadata(path) {
            Ok(m) if !m.is_dir() => {
                return Err(StoreError::Io(format!(
                    "cannot open store at {shown}: it exists and is not a directory"
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Io(format!("cannot open store at {shown}: {e}")));
            }
        }
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            // No background flushing: every write method flushes itself, and
            // a write whose flush failed is undone before any later flush
            // could carry it to disk alone (see `undo`).
            match sled::Config::new().path(path).flush_every_ms(None).open() {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) && Instant::now() < deadline => {
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(e) => return Err(open_error(path, e)),
            }
        };
        let tree = |name: &str| db.open_tree(name).map_err(|e| open_error(path, e));
        let store = SledStore {
            path: path.to_path_buf(),
            entries: tree(T_ENTRIES)?,
            entry_index: tree(T_ENTRY_INDEX)?,
            entry_events: tree(T_ENTRY_EVENTS)?,
            meta: tree(T_META)?,
            join_tokens: tree(T_JOIN_TOKENS)?,
            agents: tree(T_AGENTS)?,
            node_bans: tree(T_NODE_BANS)?,
            bundles: tree(T_BUNDLES)?,
            ca_journal: tree(T_CA_JOURNAL)?,
            federations: tree(T_FEDERATIONS)?,
            rng: SystemRandom::new(),
            #[cfg(test)]
            failing_flushes: Default::default(),
            db,
        };
        store.check_format()?;
        store.migrate_join_token_ids()?;
        tracing::debug!(path = %shown, "store opened");
        Ok(store)
    }

    /// The directory this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the layout version in a new store; refuses another version.
    fn check_format(&self) -> StoreResult<()> {
        let found = self
            .meta
            .get(K_FORMAT_VERSION)
            .map_err(|e| self.io(e))?
            .map(|v| decode_u64(T_META, K_FORMAT_VERSION, &v))
            .transpose()?;
        match found {
            Some(FORMAT_VERSION) => Ok(()),
            Some(other) => Err(StoreError::Corrupt(format!(
                "store at {} has layout version {other}; this build reads version {FORMAT_VERSION}",
                self.path.display()
            ))),
            None => {
                self.meta
                    .insert(K_FORMAT_VERSION, &FORMAT_VERSION.to_be_bytes())
                    .map_err(|e| self.io(e))?;
                self.flush()
            }
        }
    }
}

/// True for sled's "directory locked" error. sled 0.34 reports a held lock
/// as an `Other` I/O error with this text (config.rs, `try_lock`); there is
/// no structured variant.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Maps a sled error from opening the database to a message naming `path`.
fn open_error(path: &Path, e: sled::Error) -> StoreError {
    let shown = path.display();
    if is_lock_error(&e) {
        return StoreError::Io(format!(
            "store at {shown} is in use by another process (its lock is held); \
             stop the other sigil-server or use another data_dir"
        ));
    }
    match e {
        sled::Error::Io(io) => StoreError::Io(format!("cannot open store at {shown}: {io}")),
        sled::Error::Corruption { .. } => StoreError::Corrupt(format!(
            "store at {shown} is corrupt or not a sigil store: {e}"
        )),
        other => StoreError::Io(format!("cannot open store at {shown}: {other}")),
    }
}
