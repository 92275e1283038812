//! The server's Prometheus metrics: every name and label set lives here, so
//! the rest of the code records events without spelling metric names. A
//! leaf: it knows no server type (the scrape-time refresher, which reads the
//! CA and the registry, is [`crate::scrape`]).

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

pub const SVIDS_ISSUED: &str = "sigil_server_svids_issued_total";
pub const SIGNING_SECONDS: &str = "sigil_server_signing_duration_seconds";
pub const ATTESTATIONS: &str = "sigil_server_node_attestations_total";
pub const CA_ROTATIONS: &str = "sigil_server_ca_events_total";
pub const CONNECTED_AGENTS: &str = "sigil_server_connected_agents";
pub const ENTRIES: &str = "sigil_server_entries";
pub const CA_EXPIRY: &str = "sigil_server_ca_expiry_seconds";
pub const SVID_EXPIRY: &str = "sigil_server_svid_expiry_seconds";

/// What an SVID was issued to.
#[derive(Debug, Clone, Copy)]
pub enum SvidKind {
    Workload,
    Agent,
    Server,
}

impl SvidKind {
    fn label(self) -> &'static str {
        match self {
            SvidKind::Workload => "workload",
            SvidKind::Agent => "agent",
            SvidKind::Server => "server",
        }
    }
}

/// Registers help texts (once, at start-up).
pub fn describe() {
    describe_counter!(
        SVIDS_ISSUED,
        "X.509-SVID signing requests by kind (workload, agent, server) and result"
    );
    describe_histogram!(
        SIGNING_SECONDS,
        metrics::Unit::Seconds,
        "Time to check one CSR and sign its leaf"
    );
    describe_counter!(ATTESTATIONS, "Node attestations by attestor and result");
    describe_counter!(
        CA_ROTATIONS,
        "CA journal events: prepare, activate, drop, taint, revoke"
    );
    describe_gauge!(
        CONNECTED_AGENTS,
        "Open entry sync streams (connected agents)"
    );
    describe_gauge!(ENTRIES, "Registration entries in the store");
    describe_gauge!(
        CA_EXPIRY,
        metrics::Unit::Seconds,
        "Seconds until the active X.509 CA expires"
    );
    describe_gauge!(
        SVID_EXPIRY,
        metrics::Unit::Seconds,
        "Seconds until the server's own SVID expires"
    );
    describe_federation();
    // Present from the start, so dashboards and alerts see zeros, not gaps.
    gauge!(CONNECTED_AGENTS).set(0.0);
}

/// One signing request's outcome.
pub fn svid_signed(kind: SvidKind, result: &'static str, took: Duration) {
    counter!(SVIDS_ISSUED, "kind" => kind.label(), "result" => result).increment(1);
    if result == "ok" {
        histogram!(SIGNING_SECONDS, "kind" => kind.label()).record(took.as_secs_f64());
    }
}

/// One node attestation's outcome (`result` is `ok` or a gRPC code name).
pub fn attestation(attestor: &str, result: &'static str) {
    counter!(ATTESTATIONS, "attestor" => attestor.to_string(), "result" => result).increment(1);
}

/// A CA journal event.
pub fn ca_event(event: &'static str) {
    counter!(CA_ROTATIONS, "event" => event).increment(1);
}

/// Counts one connected agent while it lives.
pub struct ConnectedAgent(());

impl ConnectedAgent {
    pub fn counted() -> ConnectedAgent {
        gauge!(CONNECTED_AGENTS).increment(1.0);
        ConnectedAgent(())
    }
}

impl Drop for ConnectedAgent {
    fn drop(&mut self) {
        gauge!(CONNECTED_AGENTS).decrement(1.0);
    }
}

/// Sets the gauges computed at scrape time: entries in the store, and
/// seconds until the active CA and the server's own SVID expire.
pub fn scrape_gauges(entries: u64, ca_expires_in: i64, svid_expires_in: i64) {
    // Counts and second offsets are far inside f64's exact integer range.
    gauge!(ENTRIES).set(entries as f64);
    gauge!(CA_EXPIRY).set(ca_expires_in as f64);
    gauge!(SVID_EXPIRY).set(svid_expires_in as f64);
}

// ---- federation (issue 16) ----

pub const FEDERATION_LAST_REFRESH: &str = "sigil_server_federation_last_refresh_timestamp_seconds";
pub const FEDERATION_REFRESH_FAILURES: &str = "sigil_server_federation_refresh_failures_total";

fn describe_federation() {
    describe_gauge!(
        FEDERATION_LAST_REFRESH,
        metrics::Unit::Seconds,
        "Unix time of the last accepted fetch of a foreign trust domain's bundle"
    );
    describe_counter!(
        FEDERATION_REFRESH_FAILURES,
        "Foreign bundle fetches that failed or were refused, by trust domain and reason \
         (connect, tls, timeout, http_status, body, parse, trust_domain, sequence, config, store)"
    );
}

/// A foreign bundle fetch was accepted at `now` (Unix seconds).
pub fn federation_refreshed(trust_domain: &str, now: i64) {
    // Unix seconds are far inside f64's exact integer range.
    gauge!(FEDERATION_LAST_REFRESH, "trust_domain" => trust_domain.to_string()).set(now as f64);
}

/// A foreign bundle fetch failed or was refused.
pub fn federation_refresh_failed(trust_domain: &str, reason: &'static str) {
    counter!(FEDERATION_REFRESH_FAILURES, "trust_domain" => trust_domain.to_string(), "reason" => reason)
        .increment(1);
}
