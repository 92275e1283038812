//! This server's record in the store (issue 17): its own CA journal keyed by
//! its instance id, registered at start (adopting the single journal of a
//! store written before per-server journals, if its keys are on this disk),
//! a heartbeat, the removal of forgotten servers whose keys have all left
//! the bundle, and the own bundle as the union of every server's journal
//! ([`crate::ca::union`]).

use tracing::{info, warn};

use super::{CaManager, CaOpError, Slots};
use crate::ca::union::{self, nothing_left};
use crate::ca::{CaError, unix};
use crate::store::{BundleRecord, CaJournal, ServerRecord, StoreError};

/// How often a server refreshes `last_seen` (seconds).
pub const HEARTBEAT_SECS: i64 = 10;
/// A server not seen for this long (6 missed heartbeats) is stale: `server
/// forget` takes it without `--force`.
pub const STALE_AFTER_SECS: i64 = 6 * HEARTBEAT_SECS;
/// How often a swap of the own record is retried after a concurrent change
/// of something else in it (a heartbeat never races itself; `server
/// forget` from another server may).
const ATTEMPTS: usize = 8;

impl Slots {
    fn id(&self) -> &str {
        &self.settings.instance_id
    }

    fn record(&self) -> Result<Option<ServerRecord>, CaError> {
        Ok(self.store.get_server(self.id())?)
    }

    /// This server's journal (empty before the first write).
    pub(super) fn journal(&self) -> Result<CaJournal, CaError> {
        Ok(self.record()?.map(|r| r.journal).unwrap_or_default())
    }

    /// Writes this server's journal if its stored version is
    /// `journal.version` (`Conflict` otherwise); returns it as stored.
    pub(super) fn put_journal(&self, journal: &CaJournal) -> Result<CaJournal, CaError> {
        for _ in 0..ATTEMPTS {
            let rec = self.record()?;
            let found = rec.as_ref().map_or(0, |r| r.journal.version);
            if found != journal.version {
                return Err(StoreError::Conflict {
                    what: "CA journal",
                    expected: journal.version,
                    found,
                }
                .into());
            }
            let written = CaJournal {
                version: found + 1,
                ..journal.clone()
            };
            let now = unix(self.clock.now());
            let new = match &rec {
                Some(r) => ServerRecord {
                    journal: written.clone(),
                    ..r.clone()
                },
                None => self.fresh_record(written.clone(), now),
            };
            match self.store.swap_server(self.id(), rec.as_ref(), Some(&new)) {
                Ok(()) => return Ok(written),
                Err(StoreError::Changed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(changed_too_often(self.id()))
    }

    fn fresh_record(&self, journal: CaJournal, now: i64) -> ServerRecord {
        ServerRecord {
            instance_id: self.id().to_string(),
            journal,
            started_at: now,
            last_seen: now,
            forgotten_at: None,
        }
    }

    /// At start: this server's record, created if new (taking over the
    /// store's single pre-issue-17 journal when the keys it names are on
    /// this server's disk: on sled always; on PostgreSQL only the server
    /// that wrote it), with `last_seen` now; returns the journal.
    pub(super) fn register(&self, now: i64) -> Result<CaJournal, CaError> {
        info!(instance_id = %self.id(), "server instance");
        for _ in 0..ATTEMPTS {
            let rec = self.record()?;
            let new = match &rec {
                Some(r) => ServerRecord {
                    last_seen: now,
                    forgotten_at: None,
                    ..r.clone()
                },
                None => self.fresh_record(self.adoptable_legacy_journal()?, now),
            };
            if rec.as_ref().is_some_and(|r| r.forgotten_at.is_some()) {
                warn!(instance_id = %self.id(),
                    "this server was forgotten (`server forget`) and is back: its record is restored");
            }
            match self.store.swap_server(self.id(), rec.as_ref(), Some(&new)) {
                Ok(()) => return Ok(new.journal),
                Err(StoreError::Changed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(changed_too_often(self.id()))
    }

    /// The store's single journal (written before per-server journals) if
    /// a key it names loads here, else an empty journal.
    fn adoptable_legacy_journal(&self) -> Result<CaJournal, CaError> {
        let legacy = self.store.get_ca_journal()?;
        let mut ids = legacy
            .slots
            .iter()
            .map(|s| &s.key_id)
            .chain(legacy.jwt_slots.iter().map(|s| &s.key_id));
        if ids.any(|k| self.keys.load(k).is_ok()) {
            info!(instance_id = %self.id(), version = legacy.version,
                "this server takes over the CA journal written before per-server journals");
            return Ok(legacy);
        }
        Ok(CaJournal::default())
    }

    /// Every tick: refreshes `last_seen` when it is [`HEARTBEAT_SECS`] old
    /// (a forgotten server that still runs restores its record), and removes
    /// the records of forgotten servers of which nothing is in the bundle.
    pub(super) fn heartbeat(&self, now: i64) -> Result<(), CaError> {
        for rec in self.store.list_servers()? {
            if rec.instance_id == self.id() {
                if now - rec.last_seen < HEARTBEAT_SECS && rec.forgotten_at.is_none() {
                    continue;
                }
                if rec.forgotten_at.is_some() {
                    warn!(instance_id = %self.id(),
                        "this server was forgotten (`server forget`) but runs: its record is restored");
                }
                let new = ServerRecord {
                    last_seen: now,
                    forgotten_at: None,
                    ..rec.clone()
                };
                // Lost to a concurrent change: the next tick tries again.
                match self.store.swap_server(self.id(), Some(&rec), Some(&new)) {
                    Ok(()) | Err(StoreError::Changed { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            } else if rec.forgotten_at.is_some() && nothing_left(&rec, now, self.max_jwt_ttl()) {
                match self.store.swap_server(&rec.instance_id, Some(&rec), None) {
                    Ok(()) => info!(instance_id = %rec.instance_id,
                        "removed the record of a forgotten server: all its CAs and JWT keys expired"),
                    Err(StoreError::Changed { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Recomputes the own bundle as the union of this server's `journal`
    /// and every other server's, and stores it if it changed.
    pub(super) fn reconcile_bundle(
        &self,
        journal: &CaJournal,
        now: i64,
    ) -> Result<BundleRecord, CaError> {
        let anchors = self.upstream.as_ref().map(|u| u.trust_anchors());
        let compute = |servers: &[ServerRecord]| {
            let others: Vec<&CaJournal> = servers
                .iter()
                .filter(|r| r.instance_id != self.id())
                .map(|r| &r.journal)
                .collect();
            union::union_of(
                &self.settings.trust_domain,
                journal,
                &others,
                anchors.clone(),
                now,
                self.max_jwt_ttl(),
            )
        };
        Ok(union::publish(
            self.store.as_ref(),
            &self.settings.trust_domain,
            &compute,
        )?)
    }
}

/// How `server list` shows a server: `live`, `stale` or `forgotten`.
pub fn server_status(rec: &ServerRecord, now: i64) -> &'static str {
    if rec.forgotten_at.is_some() {
        "forgotten"
    } else if now - rec.last_seen < STALE_AFTER_SECS {
        "live"
    } else {
        "stale"
    }
}

impl CaManager {
    /// This server's instance id.
    pub fn instance_id(&self) -> &str {
        self.slots.id()
    }

    /// How long after its signing ends a JWT key stays in the bundle.
    pub fn max_jwt_ttl(&self) -> i64 {
        self.slots.max_jwt_ttl()
    }

    /// Every server sharing the store (`server list`), and the time now.
    pub fn servers(&self) -> Result<(Vec<ServerRecord>, i64), CaError> {
        let now = unix(self.clock.now());
        Ok((self.slots.store.list_servers()?, now))
    }

    /// Marks server `id` forgotten (`server forget`): refused for this
    /// server itself and, unless `force`, for one seen within
    /// [`STALE_AFTER_SECS`]. Its CAs and JWT keys stay in the bundle until
    /// they expire (never earlier); its record goes after that.
    pub fn forget_server(&self, id: &str, force: bool) -> Result<ServerRecord, CaOpError> {
        if id == self.instance_id() {
            return Err(CaOpError::Refused(format!(
                "server {id} is this server (the one answering); forget it from another server \
                 after stopping it"
            )));
        }
        for _ in 0..ATTEMPTS {
            let now = unix(self.clock.now());
            let rec = self
                .slots
                .store
                .get_server(id)
                .map_err(CaError::from)?
                .ok_or_else(|| {
                    CaError::Store(StoreError::NotFound {
                        what: "server",
                        key: id.to_string(),
                    })
                })?;
            if rec.forgotten_at.is_some() {
                return Ok(rec);
            }
            let age = now - rec.last_seen;
            if age < STALE_AFTER_SECS && !force {
                return Err(CaOpError::Refused(format!(
                    "server {id} was seen {age} s ago (less than {STALE_AFTER_SECS} s): it may \
                     still run; stop it first, or use --force"
                )));
            }
            let new = ServerRecord {
                forgotten_at: Some(now),
                ..rec.clone()
            };
            match self.slots.store.swap_server(id, Some(&rec), Some(&new)) {
                Ok(()) => {
                    warn!(instance_id = %id, last_seen = rec.last_seen, force,
                        "server forgotten; its CAs and JWT keys stay in the bundle until they expire");
                    return Ok(new);
                }
                Err(StoreError::Changed { .. }) => continue,
                Err(e) => return Err(CaError::from(e).into()),
            }
        }
        Err(changed_too_often(id).into())
    }
}

fn changed_too_often(id: &str) -> CaError {
    CaError::Store(StoreError::Io(format!(
        "the record of server {id} changed concurrently {ATTEMPTS} times in a row"
    )))
}
