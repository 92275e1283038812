//! Every example config in deploy/ loads with the real config loader, and
//! the example keeps the documented defaults.

use std::path::PathBuf;

use sigil_server::config::ServerConfig;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

#[test]
fn example_server_config_loads() {
    let c = ServerConfig::load(&examples().join("server.toml")).unwrap();
    assert_eq!(c.trust_domain.as_str(), "example.org");
    assert_eq!(c.ca_ttl.as_secs(), 24 * 3600);
    assert!(c.bundle_endpoint.is_some());
}
