//! An `[[inbound]]` listener: mTLS in, plaintext to a local backend. Every
//! connection must present a client X.509-SVID that chains to the bundle of
//! its trust domain and whose SPIFFE ID the allow-list admits; there is no
//! optional mode and no plaintext listener. The proxy presents its current
//! SVID at each handshake. Bytes are then copied as they are (TCP), or, with
//! `pass_peer_id_header`, requests are relayed as HTTP/1 with the verified
//! `X-Spiffe-Id` ([`super::peer_header`]).

use std::sync::Arc;
use std::time::Instant;

use sigil_proto::tls::{Authorizer, server_config_with_resolver};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::config::Inbound;
use super::handshake::{Failure, HANDSHAKE_TIMEOUT, report};
use super::metrics::{Direction, OpenConnection};
use super::peer_check::PeerCheck;
use super::source::Identity;
use super::{peer_header, pipe};

/// Accepts on `listener` forever.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: Inbound,
    identity: Identity,
    slots: Arc<Semaphore>,
) {
    let allow = cfg.allow.clone();
    let authorizer: Authorizer = Arc::new(move |id| allow.allows(id));
    let cfg = Arc::new(cfg);
    super::accept_loop(listener, "proxy inbound", slots, move |tcp, peer| {
        let (cfg, identity, authorizer) = (cfg.clone(), identity.clone(), authorizer.clone());
        async move { connection(tcp, peer.to_string(), &cfg, identity, authorizer).await }
    })
    .await;
}

async fn connection(
    tcp: TcpStream,
    peer: String,
    cfg: &Inbound,
    identity: Identity,
    authorizer: Authorizer,
) {
    let _ = tcp.set_nodelay(true);
    let check = PeerCheck::new(identity.bundles.clone(), authorizer);
    let tls = match server_config_with_resolver(Arc::new(identity.resolver.clone()), check.clone())
    {
        Ok(c) => tokio_rustls::TlsAcceptor::from(Arc::new(c)),
        Err(e) => {
            warn!(error = %e, "cannot build the TLS configuration");
            return;
        }
    };
    let start = Instant::now();
    let (stream, outcome) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
        Ok(Ok(s)) => (Some(s), Ok(())),
        Ok(Err(e)) => (None, Err(Failure::Io(e))),
        Err(_) => (None, Err(Failure::Timeout)),
    };
    let verified = report(
        Direction::Inbound,
        cfg.listen,
        &peer,
        &check,
        outcome,
        start.elapsed(),
    );
    let (Some(stream), Some(id)) = (stream, verified) else {
        return;
    };
    let _open = OpenConnection::counted(Direction::Inbound);
    let backend = match pipe::connect(&cfg.backend).await {
        Ok(b) => b,
        Err(e) => {
            warn!(listen = %cfg.listen, backend = %cfg.backend, peer_id = %id, error = %e,
                  "cannot reach the backend; closing the connection");
            return;
        }
    };
    let r = if cfg.pass_peer_id_header {
        let (stream, tally) = pipe::Counted::new(stream);
        let r = peer_header::relay(stream, backend, &id).await;
        tally.record(Direction::Inbound);
        r
    } else {
        pipe::copy(Direction::Inbound, stream, backend).await
    };
    if let Err(e) = r {
        debug!(listen = %cfg.listen, peer_id = %id, error = %e, "connection ended with an error");
    }
}
