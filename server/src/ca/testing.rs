//! Test fixtures for the CA: a manager on a sled store in a temporary
//! directory, driven by a [`ManualClock`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_proto::TrustDomain;
use sigil_proto::clock::ManualClock;

use super::manager::{CaManager, CaSettings};
use crate::config::DiskUpstreamConfig;
use crate::key_manager::KeyType;
use crate::key_manager::memory::MemoryKeyManager;
use crate::store::Store;
use crate::store::sled::SledStore;
use crate::upstream::UpstreamAuthority;
use crate::upstream::disk::DiskUpstream;
use sigil_proto::clock::Clock;

/// The CA lifetime of every fixture.
pub const TTL: Duration = Duration::from_secs(6 * 3600);

/// How long a prepared CA is published before `ca activate` (unforced).
pub const MIN_PUBLISH: Duration = Duration::from_secs(600);

/// A clock at a fixed start (2027-01-15).
pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ))
}

/// A manual clock at the real time now.
pub fn clock_now() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(SystemTime::now()))
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
    start_under(store, keys, clock, None)
}

/// An upstream CA (`[upstream.disk]`): a fresh root written to `dir`,
/// valid for 30 days from the real time (drive it with [`clock_now`]).
pub fn upstream(dir: &Path) -> Arc<dyn UpstreamAuthority> {
    let (cert, key) = sigil_proto::test_pki::upstream_root(&rcgen::PKCS_ECDSA_P256_SHA256);
    let cert_file = dir.join("upstream.pem");
    let key_file = dir.join("upstream_key.pem");
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    // The owner's alone, as the upstream key-file check requires.
    let owner_only = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&key_file, owner_only).unwrap();
    let cfg = DiskUpstreamConfig {
        cert_file,
        key_file,
        bundle_file: None,
    };
    let now = super::unix(clock_now().now());
    Arc::new(DiskUpstream::load(&cfg, now).unwrap())
}

/// A manager on `store`, under `upstream` if given.
pub fn start_under(
    store: Arc<dyn Store>,
    keys: Arc<MemoryKeyManager>,
    clock: Arc<ManualClock>,
    upstream: Option<Arc<dyn UpstreamAuthority>>,
) -> Arc<CaManager> {
    start_with_jwt(store, keys, clock, upstream, KeyType::EcP256)
}

/// A manager whose JWT keys are of `jwt_key_type`.
pub fn start_with_jwt(
    store: Arc<dyn Store>,
    keys: Arc<MemoryKeyManager>,
    clock: Arc<ManualClock>,
    upstream: Option<Arc<dyn UpstreamAuthority>>,
    jwt_key_type: KeyType,
) -> Arc<CaManager> {
    CaManager::init(
        store,
        keys,
        upstream,
        CaSettings {
            trust_domain: TrustDomain::parse("example.org").unwrap(),
            key_type: KeyType::EcP256,
            jwt_key_type,
            ca_ttl: TTL,
            activate_prepared: false,
            min_publish: MIN_PUBLISH,
            instance_id: crate::ca::testing::INSTANCE_ID.to_string(),
        },
        clock,
    )
    .unwrap()
}

/// The instance id of the managers of these tests.
pub const INSTANCE_ID: &str = "0123456789abcdef0123456789abcdef";

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
