//! The proxy's Prometheus metrics: every name and label lives here.
//! `peer_id` is a verified SPIFFE ID (`ok`, `id_not_allowed`: the chain
//! verified) or `unknown` (every other refusal: an unverified ID is the
//! attacker's to choose); at most [`PEER_ID_CAP`] distinct IDs get their own
//! label, later ones count as `unknown`, so a flood of new IDs cannot grow
//! the metrics without bound.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use sigil_proto::spiffe_id::SpiffeId;
use sigil_proto::tls::peer_result::PeerResult;

pub const HANDSHAKES: &str = "sigil_proxy_handshakes_total";
pub const CONNECTIONS_OPEN: &str = "sigil_proxy_connections_open";
pub const BYTES: &str = "sigil_proxy_bytes_total";
pub const HANDSHAKE_SECONDS: &str = "sigil_proxy_handshake_duration_seconds";
pub const SVID_EXPIRY: &str = "sigil_proxy_svid_expiry_seconds";

/// Distinct `peer_id` labels per process; beyond it, `unknown`.
pub const PEER_ID_CAP: usize = 100;

/// `direction`: `inbound` (mTLS in) or `outbound` (mTLS out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

pub fn describe() {
    describe_counter!(
        HANDSHAKES,
        "mTLS handshakes by direction, peer_id (verified, or unknown) and result: ok, \
         no_client_cert, unknown_ca, expired, not_yet_valid, wrong_trust_domain, id_not_allowed, \
         bad_san, tls_error"
    );
    describe_gauge!(CONNECTIONS_OPEN, "Proxied connections open, by direction");
    describe_counter!(
        BYTES,
        metrics::Unit::Bytes,
        "Bytes proxied, by direction and way: in (from the side that connected to the proxy), \
         out (back to it)"
    );
    describe_histogram!(
        HANDSHAKE_SECONDS,
        metrics::Unit::Seconds,
        "mTLS handshake duration, by direction"
    );
    describe_gauge!(
        SVID_EXPIRY,
        metrics::Unit::Seconds,
        "Seconds until the proxy's own X.509-SVID expires"
    );
    for d in [Direction::Inbound, Direction::Outbound] {
        gauge!(CONNECTIONS_OPEN, "direction" => d.label()).set(0.0);
    }
}

static SEEN_IDS: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// The `peer_id` label of a verified ID (see the module doc).
fn peer_label(id: Option<&SpiffeId>) -> String {
    let Some(id) = id else {
        return "unknown".into();
    };
    // The set is only inserted into: a poisoned lock is still consistent.
    let mut guard = SEEN_IDS.lock().unwrap_or_else(PoisonError::into_inner);
    let seen = guard.get_or_insert_with(HashSet::new);
    if seen.contains(id.as_str()) || seen.len() < PEER_ID_CAP {
        seen.insert(id.as_str().to_string());
        id.as_str().to_string()
    } else {
        "unknown".into()
    }
}

/// One handshake's outcome and duration.
pub fn handshake(d: Direction, verified: Option<&SpiffeId>, result: PeerResult, took: Duration) {
    counter!(HANDSHAKES, "direction" => d.label(), "peer_id" => peer_label(verified),
             "result" => result.label())
    .increment(1);
    histogram!(HANDSHAKE_SECONDS, "direction" => d.label()).record(took.as_secs_f64());
}

pub fn bytes(d: Direction, way_in: u64, way_out: u64) {
    counter!(BYTES, "direction" => d.label(), "way" => "in").increment(way_in);
    counter!(BYTES, "direction" => d.label(), "way" => "out").increment(way_out);
}

pub fn svid_expiry(seconds: i64) {
    // Seconds are far inside f64's exact integer range.
    gauge!(SVID_EXPIRY).set(seconds as f64);
}

/// Counts one open connection while it lives.
pub struct OpenConnection(Direction);

impl OpenConnection {
    pub fn counted(d: Direction) -> OpenConnection {
        gauge!(CONNECTIONS_OPEN, "direction" => d.label()).increment(1.0);
        OpenConnection(d)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        gauge!(CONNECTIONS_OPEN, "direction" => self.0.label()).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item2_peer_id_labels_are_capped() {
        let mut labels = HashSet::new();
        for i in 0..PEER_ID_CAP + 50 {
            let id = SpiffeId::parse(&format!("spiffe://example.org/w{i}")).unwrap();
            labels.insert(peer_label(Some(&id)));
        }
        assert!(labels.len() <= PEER_ID_CAP + 1, "{}", labels.len());
        assert!(labels.contains("unknown"));
        assert_eq!(peer_label(None), "unknown");
        // An ID seen before the cap keeps its label.
        let first = SpiffeId::parse("spiffe://example.org/w0").unwrap();
        assert_eq!(peer_label(Some(&first)), "spiffe://example.org/w0");
    }
}
