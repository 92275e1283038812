//! Owns the CA key slots: loads the journal from the store at start, mints a
//! CA (self-signed, or an intermediate under the upstream CA) when there is
//! no usable active one, removes key files the journal does not reference,
//! and keeps the trust bundle in the store in line with the journal. The
//! active signer and the bundle are published as snapshots.
//!
//! Scheduled rotation with overlap (prepare at 1/2, activate at 5/6) is the
//! next step; today a new CA is minted when the active one is missing,
//! expired, or past 5/6 of its life at start or at a periodic check.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::{CaError, X509Ca, odt, profile, random16, unix};
use crate::clock::Clock;
use crate::config::KeyType;
use crate::key_manager::KeyManager;
use crate::store::{BundleRecord, CaJournal, CaSlot, SlotId, SlotState, Store};
use crate::upstream::UpstreamAuthority;
use sigil_proto::TrustDomain;

/// Prefix of every CA key id, so that cleanup never touches other keys.
const KEY_PREFIX: &str = "ca-";

#[derive(Debug, Clone)]
pub struct CaSettings {
    pub trust_domain: TrustDomain,
    pub key_type: KeyType,
    pub ca_ttl: Duration,
}

pub struct CaManager {
    store: Arc<dyn Store>,
    keys: Arc<dyn KeyManager>,
    upstream: Option<Arc<dyn UpstreamAuthority>>,
    settings: CaSettings,
    clock: Arc<dyn Clock>,
    active: RwLock<Arc<X509Ca>>,
    bundle: watch::Sender<Arc<BundleRecord>>,
}

impl std::fmt::Debug for CaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaManager")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// True when a slot can no longer serve as the active CA: expired, or past
/// 5/6 of its life (SVIDs signed now would be cut short).
fn needs_replacement(slot: &CaSlot, now: i64) -> bool {
    let life = slot.not_after - slot.not_before;
    now >= slot.not_before + life * 5 / 6
}

impl CaManager {
    /// Loads or creates the active CA and reconciles the bundle.
    pub fn init(
        store: Arc<dyn Store>,
        keys: Arc<dyn KeyManager>,
        upstream: Option<Arc<dyn UpstreamAuthority>>,
        settings: CaSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<CaManager>, CaError> {
        let now = unix(clock.now());
        let mut journal = store.get_ca_journal()?;
        remove_orphan_keys(keys.as_ref(), &journal)?;
        let usable = journal
            .active()
            .filter(|s| !needs_replacement(s, now))
            .cloned();
        let active = match usable.and_then(|slot| load_signer(keys.as_ref(), &slot).ok()) {
            Some(ca) => ca,
            None => {
                let (ca, j) = mint_active(
                    store.as_ref(),
                    keys.as_ref(),
                    upstream.as_deref(),
                    &settings,
                    journal,
                    now,
                )?;
                journal = j;
                ca
            }
        };
        let bundle = reconcile_bundle(
            store.as_ref(),
            upstream.as_deref(),
            &settings,
            &journal,
            now,
        )?;
        let (tx, _) = watch::channel(Arc::new(bundle));
        info!(
            slot = active.slot().name(),
            serial = active.serial_hex(),
            not_after = active.not_after(),
            "CA ready"
        );
        Ok(Arc::new(CaManager {
            store,
            keys,
            upstream,
            settings,
            clock,
            active: RwLock::new(Arc::new(active)),
            bundle: tx,
        }))
    }

    /// The CA that signs now.
    pub fn active(&self) -> Arc<X509Ca> {
        self.active
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
        &self.settings.trust_domain
    }

    /// Replaces the active CA if it is past 5/6 of its life; drops expired
    /// CAs from the bundle. Called periodically.
    pub fn tick(&self) -> Result<(), CaError> {
        let now = unix(self.clock.now());
        let mut journal = self.store.get_ca_journal()?;
        if journal.active().is_none_or(|s| needs_replacement(s, now)) {
            let (ca, j) = mint_active(
                self.store.as_ref(),
                self.keys.as_ref(),
                self.upstream.as_deref(),
                &self.settings,
                journal,
                now,
            )?;
            journal = j;
            warn!(
                slot = ca.slot().name(),
                serial = ca.serial_hex(),
                "active CA replaced"
            );
            *self.active.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ca);
        }
        let bundle = reconcile_bundle(
            self.store.as_ref(),
            self.upstream.as_deref(),
            &self.settings,
            &journal,
            now,
        )?;
        self.bundle.send_if_modified(|cur| {
            if cur.sequence != bundle.sequence {
                *cur = Arc::new(bundle);
                true
            } else {
                false
            }
        });
        Ok(())
    }
}

fn load_signer(keys: &dyn KeyManager, slot: &CaSlot) -> Result<X509Ca, CaError> {
    let key = keys.load(&slot.key_id)?;
    X509Ca::new(slot.slot, key, slot.cert_chain.clone())
}

/// Deletes CA keys that no journal slot references (left by a crash between
/// key generation and the journal write).
fn remove_orphan_keys(keys: &dyn KeyManager, journal: &CaJournal) -> Result<(), CaError> {
    for id in keys.list()? {
        if id.starts_with(KEY_PREFIX) && !journal.slots.iter().any(|s| s.key_id == id) {
            warn!(key_id = %id, "removing CA key not referenced by the CA journal");
            keys.delete(&id)?;
        }
    }
    Ok(())
}

/// Mints a new CA into the slot that is not active, makes it active, marks
/// the previous active one OLD, and writes the journal.
fn mint_active(
    store: &dyn Store,
    keys: &dyn KeyManager,
    upstream: Option<&dyn UpstreamAuthority>,
    settings: &CaSettings,
    mut journal: CaJournal,
    now: i64,
) -> Result<(X509Ca, CaJournal), CaError> {
    let slot = journal.active().map_or(SlotId::A, |s| s.slot.other());
    let serial = profile::serial_from_random(random16()?);
    let serial_hex = hex::encode(serial.to_bytes());
    let key_id = format!("{KEY_PREFIX}{}-{}", slot.name(), &serial_hex[..16]);
    let ttl = i64::try_from(settings.ca_ttl.as_secs()).unwrap_or(i64::MAX);
    let not_before = now - i64::try_from(profile::BACKDATE.as_secs()).unwrap_or(0);
    let mut not_after = now.saturating_add(ttl);
    if let Some(up) = upstream {
        not_after = not_after.min(up.not_after());
    }
    let params = profile::ca_params(
        &settings.trust_domain,
        odt(not_before),
        odt(not_after),
        serial,
        upstream.is_some(),
    )?;
    let key = keys.generate(&key_id, settings.key_type)?;
    let chain = match upstream {
        Some(up) => up.mint_ca(&params, &key)?,
        None => vec![
            params
                .self_signed(&key)
                .map_err(|e| CaError::Sign(e.to_string()))?
                .der()
                .to_vec(),
        ],
    };
    for s in &mut journal.slots {
        if s.state == SlotState::Active {
            s.state = SlotState::Old;
        }
    }
    journal.slots.retain(|s| s.slot != slot);
    journal.slots.push(CaSlot {
        slot,
        state: SlotState::Active,
        key_id: key_id.clone(),
        cert_chain: chain.clone(),
        serial: serial_hex,
        not_before,
        not_after,
        tainted: false,
    });
    journal.slots.sort_by_key(|s| s.slot.name());
    let written = match store.put_ca_journal(&journal) {
        Ok(j) => j,
        Err(e) => {
            // Do not leave an unreferenced key behind.
            let _ = keys.delete(&key_id);
            return Err(e.into());
        }
    };
    // The slot we replaced may have held a key; it is no longer referenced.
    remove_orphan_keys(keys, &written)?;
    let ca = X509Ca::new(slot, key, chain)?;
    info!(
        slot = slot.name(),
        serial = ca.serial_hex(),
        "minted new CA"
    );
    Ok((ca, written))
}

/// The X.509 authorities the bundle must hold now: the upstream anchors, or
/// every unexpired self-signed CA of the journal (oldest first).
pub fn bundle_authorities(
    upstream: Option<&dyn UpstreamAuthority>,
    journal: &CaJournal,
    now: i64,
) -> Vec<Vec<u8>> {
    if let Some(up) = upstream {
        return up.trust_anchors();
    }
    let mut slots: Vec<&CaSlot> = journal.slots.iter().filter(|s| s.not_after > now).collect();
    slots.sort_by_key(|s| s.not_before);
    slots
        .into_iter()
        .filter_map(|s| s.cert_chain.first().cloned())
        .collect()
}

fn reconcile_bundle(
    store: &dyn Store,
    upstream: Option<&dyn UpstreamAuthority>,
    settings: &CaSettings,
    journal: &CaJournal,
    now: i64,
) -> Result<BundleRecord, CaError> {
    let x509_authorities = bundle_authorities(upstream, journal, now);
    let jwt_authorities = store
        .get_bundle(&settings.trust_domain)?
        .map(|b| b.jwt_authorities)
        .unwrap_or_default();
    Ok(store.put_bundle(BundleRecord {
        trust_domain: settings.trust_domain.clone(),
        x509_authorities,
        jwt_authorities,
        sequence: 0,
    })?)
}
