//! What the proxy does with the end of every mTLS handshake: counts it
//! (`sigil_proxy_handshakes_total`, the latency histogram) and logs every
//! refusal once, with the peer address, the presented certificate's serial,
//! SPIFFE ID and issuer, and the reason (the `result` label and the
//! verifier's words). The class comes from the connection's
//! [`PeerCheck`] when it refused the certificate, else from the TLS error.

use std::net::SocketAddr;
use std::time::Duration;

use sigil_proto::spiffe_id::SpiffeId;
use sigil_proto::tls::peer_result::{PeerResult, classify};
use tracing::{debug, warn};

use super::metrics::{self, Direction};
use super::peer_check::PeerCheck;

/// How long a peer has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A handshake that did not complete.
pub enum Failure {
    Io(std::io::Error),
    Timeout,
}

/// Counts and logs the handshake of `peer` on `listen`; returns the
/// verified peer ID when it succeeded.
pub fn report(
    d: Direction,
    listen: SocketAddr,
    peer: &str,
    check: &PeerCheck,
    outcome: Result<(), Failure>,
    took: Duration,
) -> Option<SpiffeId> {
    let seen = check.seen();
    let (result, detail) = match (&outcome, &seen) {
        (Ok(()), Some(s)) if s.result == PeerResult::Ok => (PeerResult::Ok, String::new()),
        // The certificate passed but the handshake failed later, or it
        // never reached the check (no certificate, a protocol error).
        (Ok(()), _) => (PeerResult::TlsError, "no verified peer certificate".into()),
        (Err(_), Some(s)) if s.result != PeerResult::Ok => (s.result, s.detail.clone()),
        (Err(Failure::Timeout), _) => (
            PeerResult::TlsError,
            format!("no complete handshake within {HANDSHAKE_TIMEOUT:?}"),
        ),
        (Err(Failure::Io(e)), _) => {
            let tls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
            match tls {
                Some(t) => (classify(t), t.to_string()),
                None => (PeerResult::TlsError, e.to_string()),
            }
        }
    };
    let verified = seen.as_ref().and_then(|s| s.verified_id.clone());
    metrics::handshake(d, verified.as_ref(), result, took);
    let facts = seen.as_ref().and_then(|s| s.facts.as_ref());
    if result == PeerResult::Ok {
        debug!(
            direction = d.label(),
            listen = %listen,
            peer_addr = %peer,
            serial = facts.map_or("-", |f| f.serial.as_str()),
            spiffe_id = %verified.as_ref().map(|i| i.as_str()).unwrap_or("-"),
            issuer = facts.map_or("-", |f| f.issuer.as_str()),
            "mTLS handshake ok"
        );
        return verified;
    }
    warn!(
        direction = d.label(),
        listen = %listen,
        peer_addr = %peer,
        serial = facts.map_or("-", |f| f.serial.as_str()),
        spiffe_id = facts.map_or("-", |f| f.spiffe_id.as_str()),
        issuer = facts.map_or("-", |f| f.issuer.as_str()),
        reason = result.label(),
        detail = %detail,
        "mTLS handshake refused"
    );
    None
}
