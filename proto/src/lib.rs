//! The contract every Sigil process shares: the SPIFFE Workload API and
//! Sigil's agent and admin APIs (generated at build time), and the SPIFFE
//! types those APIs speak. No I/O and no daemons live here.

/// The SPIFFE Workload API. Its .proto has no package, so the service path is
/// `/SpiffeWorkloadAPI/<Method>`.
pub mod workload {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("_");
}

/// Sigil's agent ↔ server API.
pub mod agent_api {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("sigil.agent.v1");
}

/// Sigil's admin API (local socket only).
pub mod admin_api {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("sigil.admin.v1");
}
