//! Sigil node agent as a library: everything the `sigil-agent` binary runs,
//! shared with the end-to-end tests. Data flow: `sync` (server entry stream)
//! → `cache` (owns SVIDs, asks `rotation` when to renew, signs in batches)
//! → `state::Snapshot` (watch) → `workload_api` (per-caller view, after
//! `workload_attestor` turned peer credentials into selectors).

pub mod bootstrap;
pub mod bundle_refresh;
pub mod cache;
pub mod cli;
pub mod config;
pub mod diagnose;
pub mod health;
pub mod helper;
pub mod identity;
pub mod lifecycle;
pub mod metrics;
pub mod node_attestor;
pub mod persist;
pub mod proxy;
pub mod rotation;
pub mod run;
pub mod server_client;
pub mod servers;
pub mod state;
pub mod sync;
pub mod workload_api;
pub mod workload_attestor;
pub mod workload_client;
