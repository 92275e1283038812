//! Test fixtures for the CA: a manager on a sled store in a temporary
//! directory, driven by a [`ManualClock`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_proto::TrustDomain;
use sigil_proto::clock::ManualClock;

use super::manager::{CaManager, CaSettings};
use crate::key_manager::KeyType;
use crate::key_manager::memory::MemoryKeyManager;
use crate::store::Store;
use crate::store::sled::SledStore;

/// The CA lifetime of every fixture.
pub const TTL: Duration = Duration::from_secs(6 * 3600);

/// A clock at a fixed start (2027-01-15).
pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ))
}

/// The store in `dir` (what a server start opens).
pub fn store(dir: &Path) -> Arc<dyn Store> {
    Arc::new(SledStore::open(&dir.join("store")).unwrap())
}

/// A manager on `store` (what a server start does).
pub fn start_on(
    store: Arc<dyn Store>,
    keys: Arc<MemoryKeyManager>,
    clock: Arc<ManualClock>,
) -> Arc<CaManager> {
    CaManager::init(
        store,
        keys,
        None,
        CaSettings {
            trust_domain: TrustDomain::parse("example.org").unwrap(),
            key_type: KeyType::EcP256,
            ca_ttl: TTL,
            activate_prepared: false,
        },
        clock,
    )
    .unwrap()
}

/// A manager on the store in `dir`.
pub fn start(dir: &Path, keys: Arc<MemoryKeyManager>, clock: Arc<ManualClock>) -> Arc<CaManager> {
    start_on(store(dir), keys, clock)
}

/// A fresh manager and its clock.
pub fn manager(dir: &Path) -> (Arc<CaManager>, Arc<ManualClock>) {
    let clock = clock();
    (
        start(dir, Arc::new(MemoryKeyManager::default()), clock.clone()),
        clock,
    )
}
