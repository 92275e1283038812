//! Sigil server: CA, registration store, admin API and bundle endpoint.

pub mod ca;
pub mod clock;
pub mod config;
pub mod entry;
pub mod key_manager;
pub mod store;
pub mod upstream;
pub mod admin;
pub mod bundle;
pub mod bundle_endpoint;
pub mod run;
pub mod server_svid;
pub mod cli;
pub mod node_attestor;
pub mod authz;
pub mod registry;
pub mod agent_api;
