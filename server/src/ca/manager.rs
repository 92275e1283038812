//! Owns the CA key slots. The journal in the store is the truth: at start
//! and every second [`CaManager::tick`] asks [`super::rotation::next_step`]
//! what is due (mint, prepare, activate, drop) and applies it, one journal
//! write (compare-and-swap) per step, so a crash at any point resumes from
//! the last step written. Keys are generated before the journal names them;
//! keys no journal slot names are deleted at start. The trust bundle in the
//! store is recomputed from the journal after every change, and the active
//! signer and the bundle are published as snapshots. Operators can force
//! prepare, activate, taint and revoke. The JWT signing keys ride in the
//! same journal and bundle ([`jwt_steps`], [`jwt_ops`]).

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::dependents;
use super::jwt::JwtSigner;
use super::published::is_published;
use super::rotation::{self, Step};
use super::startup::{KEY_PREFIX, check_keys, remove_orphan_keys};
use super::{CaError, X509Ca, odt, profile, random16, unix};
use crate::key_manager::{KeyManager, KeyType};
use crate::store::{BundleRecord, CaJournal, CaSlot, SlotId, SlotState, Store};
use crate::upstream::UpstreamAuthority;
use sigil_proto::TrustDomain;
use sigil_proto::clock::Clock;

/// Most steps applied in one tick (a tick normally applies zero or one).
const MAX_STEPS: usize = 8;

#[derive(Debug, Clone)]
pub struct CaSettings {
    pub trust_domain: TrustDomain,
    pub key_type: KeyType,
    /// JWT signing keys (`jwt_key_type`); their TTL is `ca_ttl`.
    pub jwt_key_type: KeyType,
    pub ca_ttl: Duration,
    /// At start, activate a usable prepared CA if the active CA's key is
    /// gone (`run --activate-prepared`).
    pub activate_prepared: bool,
    /// How long a prepared CA must have been published before an operator
    /// may activate it without `force` (2 × the bundle refresh hint).
    pub min_publish: Duration,
    /// This server's stable instance id ([`crate::instance_id`]): its
    /// journal in the store is keyed by it.
    pub instance_id: String,
}

/// What an operator asked for that cannot be done now.
#[derive(Debug, thiserror::Error)]
pub enum CaOpError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// The journal operations: everything that writes keys, the journal or
/// the bundle. Steps that change the signing CA return the new signer.
struct Slots {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    keys: Arc<dyn KeyManager>,
    upstream: Option<Arc<dyn UpstreamAuthority>>,
    settings: CaSettings,
}

pub struct CaManager {
    slots: Slots,
    clock: Arc<dyn Clock>,
    /// Serialises journal changes (ticks and operator commands).
    ops: Mutex<()>,
    active: RwLock<Arc<X509Ca>>,
    jwt_active: RwLock<Arc<JwtSigner>>,
    bundle: watch::Sender<Arc<BundleRecord>>,
}

impl std::fmt::Debug for CaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaManager")
            .field("settings", &self.slots.settings)
            .finish_non_exhaustive()
    }
}

impl CaManager {
    /// Loads the journal, applies whatever is due (minting the first CA),
    /// and reconciles the bundle.
    pub fn init(
        store: Arc<dyn Store>,
        keys: Arc<dyn KeyManager>,
        upstream: Option<Arc<dyn UpstreamAuthority>>,
        settings: CaSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<CaManager>, CaError> {
        let slots = Slots {
            store,
            clock: clock.clone(),
            keys,
            upstream,
            settings,
        };
        let now = unix(clock.now());
        let mut journal = slots.register(now)?;
        // A key the journal names that does not load stops the start: never
        // a new CA in its place (see `startup`).
        let switch = check_keys(
            slots.keys.as_ref(),
            &journal,
            now,
            slots.settings.activate_prepared,
        )?;
        remove_orphan_keys(slots.keys.as_ref(), &journal)?;
        if let Some(p) = switch {
            journal = slots.apply(journal, Step::Activate(p), now)?.0;
        }
        journal = slots.run_due(journal, now)?.0;
        if journal.jwt_slots.is_empty() {
            info!(
                jwt_key_type = slots.settings.jwt_key_type.name(),
                "the CA journal has no JWT signing key (written before JWT-SVIDs): preparing \
                 and activating one now; it is published before anything is signed with it"
            );
        }
        journal = slots.retire_missing_jwt_keys(journal)?;
        journal = slots.run_jwt_due(journal, now)?.0;
        let jwt_signer = journal
            .jwt_active()
            .ok_or_else(|| CaError::Start("no active JWT key after start".into()))
            .and_then(|s| jwt_steps::load_jwt_signer(slots.keys.as_ref(), s))?;
        let active = journal
            .active()
            .cloned()
            .ok_or_else(|| CaError::BadCaCert("no active CA after start".into()))?;
        let signer = load_signer(slots.keys.as_ref(), &active)?;
        let bundle = slots.reconcile_bundle(&journal, now)?;
        if !is_published(&bundle, slots.upstream.is_some(), &signer) {
            return Err(CaError::NotPublished {
                serial: signer.serial_hex().to_string(),
            });
        }
        jwt_ops::check_jwt_published(&bundle, &jwt_signer)?;
        info!(
            slot = signer.slot().name(),
            serial = signer.serial_hex(),
            not_after = signer.not_after(),
            jwt_kid = jwt_signer.kid(),
            "CA ready"
        );
        Ok(Arc::new(CaManager {
            slots,
            clock,
            ops: Mutex::new(()),
            active: RwLock::new(Arc::new(signer)),
            jwt_active: RwLock::new(Arc::new(jwt_signer)),
            bundle: watch::channel(Arc::new(bundle)).0,
        }))
    }

    /// The CA that signs now.
    pub fn active(&self) -> Arc<X509Ca> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The JWT key that signs now.
    pub fn jwt_active(&self) -> Arc<JwtSigner> {
        self.jwt_active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The trust bundle of the server's trust domain.
    pub fn bundle(&self) -> Arc<BundleRecord> {
        self.bundle.borrow().clone()
    }

    /// Changes of the bundle, as snapshots.
    pub fn subscribe_bundle(&self) -> watch::Receiver<Arc<BundleRecord>> {
        self.bundle.subscribe()
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.slots.settings.trust_domain
    }

    /// Makes `signer` (if a step produced one) the CA that signs. It must
    /// already be in the published bundle (Trust Domain and Bundle §4.1: a
    /// new key is published before it is used), so every path publishes
    /// first; otherwise the old signer stays and the error says why.
    fn install(&self, signer: Option<X509Ca>) -> Result<(), CaError> {
        let Some(s) = signer else {
            return Ok(());
        };
        if !is_published(&self.bundle(), self.slots.upstream.is_some(), &s) {
            return Err(CaError::NotPublished {
                serial: s.serial_hex().to_string(),
            });
        }
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies every due step, then publishes. Called every second.
    pub fn tick(&self) -> Result<(), CaError> {
        let _g = self.lock();
        let now = unix(self.clock.now());
        self.slots.heartbeat(now)?;
        let journal = self.slots.journal()?;
        let (journal, signer) = self.slots.run_due(journal, now)?;
        let (journal, jwt_signer) = self.slots.run_jwt_due(journal, now)?;
        // Publish, then sign with it: never the other way round.
        self.publish(&journal, now)?;
        self.install_jwt(jwt_signer)?;
        self.install(signer)
    }

    /// Prepares the next CA now (operator command).
    pub fn force_prepare(&self) -> Result<CaStatus, CaOpError> {
        let _g = self.lock();
        let now = unix(self.clock.now());
        let journal = self.slots.journal()?;
        if let Some(p) = journal.prepared() {
            return Err(CaOpError::Refused(format!(
                "slot {} already holds a prepared CA (serial {}); activate it first",
                p.slot.name(),
                p.serial
            )));
        }
        let active = journal
            .active()
            .ok_or_else(|| CaOpError::Refused("there is no active CA".into()))?;
        let other = active.slot.other();
        if let Some(o) = journal.slot(other) {
            return Err(CaOpError::Refused(format!(
                "slot {} holds the previous CA (serial {}) until it expires at {} (unix); \
                 SVIDs it signed may still be valid. Wait, or `ca taint` and `ca revoke` it",
                other.name(),
                o.serial,
                o.not_after
            )));
        }
        let (journal, _) = self.slots.apply(journal, Step::Prepare(other), now)?;
        self.publish(&journal, now)?;
        drop(_g);
        Ok(self.status()?)
    }

    /// Activates the prepared CA now (operator command). Unless `force`, it
    /// must have been published for at least `min_publish`.
    pub fn force_activate(&self, force: bool) -> Result<CaStatus, CaOpError> {
        let _g = self.lock();
        let now = unix(self.clock.now());
        let journal = self.slots.journal()?;
        let prepared = journal.prepared().ok_or_else(|| {
            CaOpError::Refused("there is no prepared CA; run `ca prepare` first".into())
        })?;
        let p = prepared.slot;
        let published = Duration::from_secs(u64::try_from(now - prepared.not_before).unwrap_or(0));
        if published < self.slots.settings.min_publish {
            if !force {
                return Err(CaOpError::Refused(too_early(
                    &format!(
                        "the prepared CA in slot {} (serial {})",
                        p.name(),
                        prepared.serial
                    ),
                    published,
                    self.slots.settings.min_publish,
                )));
            }
            warn!(
                slot = p.name(),
                serial = %prepared.serial,
                published_secs = published.as_secs(),
                min_publish_secs = self.slots.settings.min_publish.as_secs(),
                "activating a CA published for less than the minimum, as forced"
            );
        }
        let (journal, signer) = self.slots.apply(journal, Step::Activate(p), now)?;
        self.publish(&journal, now)?;
        self.install(signer)?;
        drop(_g);
        Ok(self.status()?)
    }

    /// Taints an inactive CA: agents re-issue every SVID it signed at once,
    /// and it leaves the bundle when none of them can still be valid.
    pub fn taint(&self, slot: SlotId) -> Result<CaStatus, CaOpError> {
        let _g = self.lock();
        let now = unix(self.clock.now());
        let mut journal = self.slots.journal()?;
        let s = journal
            .slots
            .iter_mut()
            .find(|s| s.slot == slot)
            .ok_or_else(|| CaOpError::Refused(format!("slot {} is empty", slot.name())))?;
        if s.state == SlotState::Active {
            return Err(CaOpError::Refused(format!(
                "slot {} holds the active CA; prepare and activate another one before tainting it",
                slot.name()
            )));
        }
        if !s.tainted {
            s.tainted = true;
            s.tainted_at = Some(now);
        }
        let serial = s.serial.clone();
        let journal = self.slots.put_journal(&journal)?;
        warn!(slot = slot.name(), serial = %serial, "CA tainted");
        crate::metrics::ca_event("taint");
        self.publish(&journal, now)?;
        drop(_g);
        Ok(self.status()?)
    }

    /// Removes a tainted, inactive CA from the bundle and deletes its key;
    /// refused while an agent's own SVID chains to it, unless `force`.
    pub fn revoke(&self, slot: SlotId, force: bool) -> Result<CaStatus, CaOpError> {
        let _g = self.lock();
        let now = unix(self.clock.now());
        let journal = self.slots.journal()?;
        let s = journal
            .slot(slot)
            .ok_or_else(|| CaOpError::Refused(format!("slot {} is empty", slot.name())))?;
        if s.state == SlotState::Active || !s.tainted {
            return Err(CaOpError::Refused(format!(
                "only a tainted, inactive CA can be revoked; slot {} is {}{}",
                slot.name(),
                state_name(s.state),
                if s.tainted {
                    " (tainted)"
                } else {
                    " and not tainted"
                }
            )));
        }
        if self.slots.upstream.is_some() {
            // The bundle holds the upstream roots: the intermediate still
            // chains to them after it leaves the journal.
            return Err(CaOpError::Refused(format!(
                "slot {} (serial {}) is an intermediate under the upstream CA \
                 ([upstream.disk]); the bundle holds the upstream roots, so revoking it here \
                 would remove no trust: revoke it at the upstream CA (or rotate the upstream \
                 root). It stays tainted, so agents re-issue every SVID it signed",
                slot.name(),
                s.serial
            )));
        }
        let serial = s.serial.clone();
        let agents = self.slots.store.list_agents().map_err(CaError::from)?;
        let warnings = dependents::check_revoke(&agents, slot.name(), &serial, now, force);
        let warnings = warnings.map_err(CaOpError::Refused)?;
        let (journal, _) = self.slots.apply(journal, Step::Drop(slot), now)?;
        warn!(slot = slot.name(), serial = %serial, "CA revoked");
        crate::metrics::ca_event("revoke");
        self.publish(&journal, now)?;
        drop(_g);
        Ok(CaStatus {
            warnings,
            ..self.status()?
        })
    }

    /// Recomputes the bundle and publishes it (and the signer) if changed.
    fn publish(&self, journal: &CaJournal, now: i64) -> Result<(), CaError> {
        let bundle = self.slots.reconcile_bundle(journal, now)?;
        self.bundle.send_if_modified(|cur| {
            if cur.sequence != bundle.sequence || cur.trust_domain != bundle.trust_domain {
                *cur = Arc::new(bundle);
                true
            } else {
                false
            }
        });
        Ok(())
    }
}

impl Slots {
    fn max_svid_ttl(&self) -> i64 {
        i64::try_from((self.settings.ca_ttl / 6).as_secs()).unwrap_or(i64::MAX)
    }

    /// Applies every due step; returns the journal and the newest signer if
    /// the signing CA changed.
    fn run_due(
        &self,
        mut journal: CaJournal,
        now: i64,
    ) -> Result<(CaJournal, Option<X509Ca>), CaError> {
        let mut signer = None;
        for _ in 0..MAX_STEPS {
            match rotation::next_step(&journal, now, self.max_svid_ttl()) {
                Some(step) => {
                    let (j, s) = self.apply(journal, step, now)?;
                    journal = j;
                    signer = s.or(signer);
                }
                None => break,
            }
        }
        Ok((journal, signer))
    }

    /// Applies one step: one journal write. Keys are generated before the
    /// journal names them and deleted after it stops naming them.
    fn apply(
        &self,
        mut journal: CaJournal,
        step: Step,
        now: i64,
    ) -> Result<(CaJournal, Option<X509Ca>), CaError> {
        match step {
            Step::MintActive => {
                let slot = journal.active().map_or(SlotId::A, |s| s.slot.other());
                for s in &mut journal.slots {
                    if s.state == SlotState::Active {
                        s.state = SlotState::Old;
                    }
                }
                let (new, signer) = self.mint(slot, SlotState::Active, now)?;
                journal.slots.retain(|s| s.slot != slot);
                journal.slots.push(new);
                let written = self.write(journal, &[])?;
                info!(
                    slot = slot.name(),
                    serial = signer.serial_hex(),
                    "CA activated"
                );
                crate::metrics::ca_event("activate");
                Ok((written, Some(signer)))
            }
            Step::Prepare(slot) => {
                let (new, signer) = self.mint(slot, SlotState::Prepared, now)?;
                journal.slots.retain(|s| s.slot != slot);
                journal.slots.push(new);
                let written = self.write(journal, &[])?;
                info!(
                    slot = slot.name(),
                    serial = signer.serial_hex(),
                    "CA prepared"
                );
                crate::metrics::ca_event("prepare");
                Ok((written, None))
            }
            Step::Activate(slot) => {
                let next = journal
                    .slot(slot)
                    .cloned()
                    .ok_or_else(|| CaError::BadCaCert(format!("slot {} is empty", slot.name())))?;
                let signer = load_signer(self.keys.as_ref(), &next)?;
                for s in &mut journal.slots {
                    if s.state == SlotState::Active {
                        s.state = SlotState::Old;
                    } else if s.slot == slot {
                        s.state = SlotState::Active;
                    }
                }
                let written = self.write(journal, &[])?;
                info!(
                    slot = slot.name(),
                    serial = signer.serial_hex(),
                    "CA activated"
                );
                crate::metrics::ca_event("activate");
                Ok((written, Some(signer)))
            }
            Step::Drop(slot) => {
                let gone: Vec<CaSlot> = journal
                    .slots
                    .iter()
                    .filter(|s| s.slot == slot)
                    .cloned()
                    .collect();
                journal.slots.retain(|s| s.slot != slot);
                let written = self.write(journal, &gone)?;
                for g in &gone {
                    info!(slot = slot.name(), serial = %g.serial, "CA dropped from the bundle");
                    crate::metrics::ca_event("drop");
                }
                Ok((written, None))
            }
        }
    }

    /// Writes the journal (CAS), then deletes the keys of `gone` slots.
    fn write(&self, mut journal: CaJournal, gone: &[CaSlot]) -> Result<CaJournal, CaError> {
        journal.slots.sort_by_key(|s| s.slot.name());
        let written = self.put_journal(&journal)?;
        for g in gone {
            self.keys.delete(&g.key_id)?;
        }
        remove_orphan_keys(self.keys.as_ref(), &written)?;
        Ok(written)
    }

    /// Mints a CA into `slot`: key first (durable), then the certificate.
    fn mint(&self, slot: SlotId, state: SlotState, now: i64) -> Result<(CaSlot, X509Ca), CaError> {
        let serial = profile::serial_from_random(random16()?);
        let serial_hex = hex::encode(serial.to_bytes());
        let key_id = format!("{KEY_PREFIX}{}-{}", slot.name(), &serial_hex[..16]);
        let ttl = i64::try_from(self.settings.ca_ttl.as_secs()).unwrap_or(i64::MAX);
        let not_before = now - i64::try_from(profile::BACKDATE.as_secs()).unwrap_or(0);
        let mut not_after = now.saturating_add(ttl);
        if let Some(up) = &self.upstream {
            not_after = not_after.min(up.not_after());
        }
        let params = profile::ca_params(
            &self.settings.trust_domain,
            odt(not_before),
            odt(not_after),
            serial,
            self.upstream.is_some(),
        )?;
        let key = self.keys.generate(&key_id, self.settings.key_type)?;
        let chain = match &self.upstream {
            Some(up) => up.mint_ca(&params, &key)?,
            None => vec![
                params
                    .self_signed(&key)
                    .map_err(|e| CaError::Sign(e.to_string()))?
                    .der()
                    .to_vec(),
            ],
        };
        let signer = X509Ca::new(slot, key, chain.clone())?;
        Ok((
            CaSlot {
                slot,
                state,
                key_id,
                cert_chain: chain,
                serial: serial_hex,
                // The slot's own timeline starts when it was minted.
                not_before: now,
                not_after,
                tainted: false,
                tainted_at: None,
            },
            signer,
        ))
    }
}

fn load_signer(keys: &dyn KeyManager, slot: &CaSlot) -> Result<X509Ca, CaError> {
    let key = keys.load(&slot.key_id)?;
    X509Ca::new(slot.slot, key, slot.cert_chain.clone())
}

mod jwt_ops;
mod jwt_steps;
pub mod servers;
mod status;

use status::too_early;
pub use status::{CaStatus, state_name};

#[cfg(test)]
mod tests;
