//! Sigil server: CA, registration store, admin API and bundle endpoint.

pub mod admin;
pub mod agent_api;
pub mod authz;
pub mod bundle;
pub mod ca;
pub mod cli;
pub mod config;
pub mod entry;
pub mod federation;
pub mod instance_id;
pub mod key_manager;
pub mod metrics;
pub mod node_attestor;
pub mod oidc;
pub mod pruning;
pub mod registry;
pub mod run;
pub mod scrape;
pub mod server_svid;
pub mod store;
pub mod store_health;
pub mod ttl_limit;
pub mod upstream;
pub mod web_cert;
