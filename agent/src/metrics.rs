//! The agent's Prometheus metrics: every name and label set lives here, so
//! the rest of the code records events without spelling metric names.

use std::sync::Arc;

use metrics::{counter, describe_counter, describe_gauge, gauge};
use tokio::sync::watch;

use crate::identity::AgentIdentity;
use crate::state::StateRx;

pub const WORKLOAD_CALLS: &str = "sigil_agent_workload_api_calls_total";
pub const WORKLOAD_STREAMS: &str = "sigil_agent_workload_streams";
pub const WORKLOAD_CONNECTIONS_REFUSED: &str = "sigil_agent_workload_connections_refused_total";
pub const WORKLOAD_CONNECTIONS_CLOSED: &str = "sigil_agent_workload_connections_closed_total";
pub const WORKLOAD_ATTESTATIONS: &str = "sigil_agent_workload_attestations_total";
pub const NODE_ATTESTATIONS: &str = "sigil_agent_node_attestations_total";
pub const SVIDS_ISSUED: &str = "sigil_agent_svids_issued_total";
pub const ROTATIONS: &str = "sigil_agent_svid_rotations_total";
pub const SYNC_ERRORS: &str = "sigil_agent_sync_errors_total";
pub const CACHED_SVIDS: &str = "sigil_agent_cached_svids";
pub const SVID_EXPIRY: &str = "sigil_agent_svid_expiry_seconds";
pub const AGENT_SVID_EXPIRY: &str = "sigil_agent_agent_svid_expiry_seconds";
pub const CA_EXPIRY: &str = "sigil_agent_ca_expiry_seconds";
pub const IDENTITY_STATE: &str = "sigil_agent_identity_state";
/// 1 when the agent is ready (`/ready` 200, `healthcheck` 0), else 0.
pub const READY: &str = "sigil_agent_ready";
pub const BUNDLE_FETCHES: &str = "sigil_agent_bundle_endpoint_fetches_total";
/// 1 for the server (`address` label) the agent uses, 0 for those it used before.
pub const SERVER: &str = "sigil_agent_server";
pub const SERVER_FAILOVERS: &str = "sigil_agent_server_failovers_total";
/// The values of [`IDENTITY_STATE`]'s `state` label.
pub const IDENTITY_STATES: [&str; 4] = ["attesting", "attested", "refused", "expired"];

/// Registers help texts (once, at start-up).
pub fn describe() {
    describe_counter!(
        WORKLOAD_CALLS,
        "Workload API calls by method and gRPC code; a stream that later ends with an error counts again with that code"
    );
    describe_gauge!(WORKLOAD_STREAMS, "Open Workload API streams");
    describe_counter!(
        WORKLOAD_CONNECTIONS_REFUSED,
        "Workload API connections closed at accept, by reason: per_uid, global (connection caps)"
    );
    describe_counter!(
        WORKLOAD_CONNECTIONS_CLOSED,
        "Workload API connections closed by the agent, by reason: preface_timeout, idle_timeout"
    );
    describe_counter!(
        WORKLOAD_ATTESTATIONS,
        "Workload attestations (peer credentials to selectors) by result"
    );
    describe_counter!(
        NODE_ATTESTATIONS,
        "This agent's node attestations by attestor and result"
    );
    describe_counter!(
        SVIDS_ISSUED,
        "Workload X.509-SVIDs requested from the server, by result"
    );
    describe_counter!(
        ROTATIONS,
        "Workload SVIDs (re)issued, by reason: missing, half_life, entry_changed, ca_tainted, ..."
    );
    describe_counter!(
        SYNC_ERRORS,
        "Entry sync streams interrupted (the agent keeps serving cached SVIDs)"
    );
    describe_gauge!(CACHED_SVIDS, "Workload SVIDs in the cache");
    describe_gauge!(
        READY,
        "1 when the agent is ready, 0 when not (the reason is on /ready and in healthcheck)"
    );
    describe_counter!(
        BUNDLE_FETCHES,
        "Trust bundle fetches from [bundle_endpoint] (the stored bundle no longer verified the server), by result"
    );
    describe_gauge!(
        SVID_EXPIRY,
        metrics::Unit::Seconds,
        "Seconds until the earliest cached workload SVID expires (NaN when none)"
    );
    describe_gauge!(
        AGENT_SVID_EXPIRY,
        metrics::Unit::Seconds,
        "Seconds until the agent's own SVID expires"
    );
    describe_gauge!(
        CA_EXPIRY,
        metrics::Unit::Seconds,
        "Seconds until the earliest CA in the trust bundle expires"
    );
    describe_gauge!(
        IDENTITY_STATE,
        "1 for the state of the agent's own identity (attesting, attested, refused, expired), 0 for the others; refused and expired need the operator"
    );
    describe_gauge!(
        SERVER,
        "1 for the server (address label) the agent uses, 0 for servers it used before"
    );
    describe_counter!(
        SERVER_FAILOVERS,
        "Moves to another server after the one in use failed (connection error, Unavailable)"
    );
    // Present from the start, so dashboards and alerts see zeros, not gaps.
    gauge!(WORKLOAD_STREAMS).set(0.0);
    counter!(SYNC_ERRORS).absolute(0);
    counter!(SERVER_FAILOVERS).absolute(0);
}

/// The agent moved to another server.
pub fn server_failover() {
    counter!(SERVER_FAILOVERS).increment(1);
}

/// The agent now uses `new` (and no longer `old`).
pub fn current_server(old: Option<std::net::SocketAddr>, new: std::net::SocketAddr) {
    if let Some(o) = old {
        gauge!(SERVER, "address" => o.to_string()).set(0.0);
    }
    gauge!(SERVER, "address" => new.to_string()).set(1.0);
}

/// One Workload API call's outcome.
pub fn workload_call(method: &'static str, code: tonic::Code) {
    counter!(WORKLOAD_CALLS, "method" => method, "code" => sigil_proto::health::code_label(code))
        .increment(1);
}

/// A Workload API connection closed at accept (`per_uid`, `global`).
pub fn workload_connection_refused(reason: &'static str) {
    counter!(WORKLOAD_CONNECTIONS_REFUSED, "reason" => reason).increment(1);
}

/// A Workload API connection closed for a timeout.
pub fn workload_connection_closed(reason: &'static str) {
    counter!(WORKLOAD_CONNECTIONS_CLOSED, "reason" => reason).increment(1);
}

pub fn workload_attestation(result: &'static str) {
    counter!(WORKLOAD_ATTESTATIONS, "result" => result).increment(1);
}

pub fn node_attestation(attestor: &'static str, result: &'static str) {
    counter!(NODE_ATTESTATIONS, "attestor" => attestor, "result" => result).increment(1);
}

pub fn svids_issued(result: &'static str, n: u64) {
    if n > 0 {
        counter!(SVIDS_ISSUED, "result" => result).increment(n);
    }
}

pub fn rotation(reason: &'static str) {
    counter!(ROTATIONS, "reason" => reason).increment(1);
}

/// The agent identity's state: 1 for `current`, 0 for every other label.
pub fn identity_state(current: &'static str) {
    for l in IDENTITY_STATES {
        gauge!(IDENTITY_STATE, "state" => l).set(if l == current { 1.0 } else { 0.0 });
    }
}

/// The agent's readiness as one gauge (see `crate::health`).
pub fn ready(ok: bool) {
    gauge!(READY).set(if ok { 1.0 } else { 0.0 });
}

/// One bundle fetch from `[bundle_endpoint]`: `ok` or `error`.
pub fn bundle_fetch(result: &'static str) {
    counter!(BUNDLE_FETCHES, "result" => result).increment(1);
}

pub fn sync_error() {
    counter!(SYNC_ERRORS).increment(1);
}

/// Counts one open Workload API stream while it lives.
pub struct OpenStream(());

impl OpenStream {
    pub fn counted() -> OpenStream {
        gauge!(WORKLOAD_STREAMS).increment(1.0);
        OpenStream(())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        gauge!(WORKLOAD_STREAMS).decrement(1.0);
    }
}

/// Sets the gauges computed at scrape time.
pub fn refresher(
    state: StateRx,
    identity: watch::Receiver<Arc<AgentIdentity>>,
) -> sigil_proto::health::Refresh {
    Arc::new(move || {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let snap = state.borrow().clone();
        // Counts and Unix seconds are far inside f64's exact integer range.
        gauge!(CACHED_SVIDS).set(snap.svids.len() as f64);
        match snap.svids.iter().map(|s| s.not_after).min() {
            Some(t) => gauge!(SVID_EXPIRY).set((t - now) as f64),
            None => gauge!(SVID_EXPIRY).set(f64::NAN),
        }
        let ca = snap
            .bundle
            .iter()
            .filter_map(|der| x509_parser::parse_x509_certificate(der).ok())
            .map(|(_, c)| c.validity().not_after.timestamp())
            .min();
        if let Some(t) = ca {
            gauge!(CA_EXPIRY).set((t - now) as f64);
        }
        gauge!(AGENT_SVID_EXPIRY).set((identity.borrow().not_after - now) as f64);
    })
}
