//! Server and agent TOML config parsing: never panics; an accepted config
//! keeps its invariants (SVID TTLs within CA TTL / 6, absolute socket path).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_agent::config::AgentConfig;
use sigil_server::config::{ServerConfig, max_svid_ttl};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ServerConfig::parse(text) {
        Ok(c) => {
            assert!(c.default_x509_svid_ttl <= max_svid_ttl(c.ca_ttl));
            assert!(c.agent_svid_ttl <= max_svid_ttl(c.ca_ttl));
            assert!(!c.data_dir.as_os_str().is_empty());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    match AgentConfig::parse(text) {
        Ok(c) => {
            assert!(c.socket_path.is_absolute());
            assert!(c.trust_bundle_path.is_some() || c.insecure_bootstrap);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
