//! An `[[outbound]]` listener: plaintext in (on loopback unless forced), mTLS
//! out to `target` with the proxy's current SVID as the client certificate;
//! the server must present an X.509-SVID that chains to the bundle of its
//! trust domain and whose SPIFFE ID is `server_id` (or on `allow`). The
//! name dialled is not checked: the SPIFFE ID is the identity.

use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;
use sigil_proto::tls::{Authorizer, client_config_with_resolver};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::config::Outbound;
use super::handshake::{Failure, HANDSHAKE_TIMEOUT, report};
use super::metrics::{Direction, OpenConnection};
use super::peer_check::PeerCheck;
use super::pipe;
use super::source::Identity;

/// Accepts on `listener` forever.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: Outbound,
    identity: Identity,
    slots: Arc<Semaphore>,
) {
    let allow = cfg.allow.clone();
    let authorizer: Authorizer = Arc::new(move |id| allow.allows(id));
    let cfg = Arc::new(cfg);
    super::accept_loop(listener, "proxy outbound", slots, move |tcp, _peer| {
        let (cfg, identity, authorizer) = (cfg.clone(), identity.clone(), authorizer.clone());
        async move { connection(tcp, &cfg, identity, authorizer).await }
    })
    .await;
}

/// The name sent as SNI: the target's host when it is a valid name or IP.
fn server_name(target: &str) -> ServerName<'static> {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
}

async fn connection(local: TcpStream, cfg: &Outbound, identity: Identity, authorizer: Authorizer) {
    let _ = local.set_nodelay(true);
    let remote = match TcpStream::connect(cfg.target.as_str()).await {
        Ok(r) => r,
        Err(e) => {
            warn!(listen = %cfg.listen, target = %cfg.target, error = %e,
                  "cannot reach the target; closing the connection");
            return;
        }
    };
    let _ = remote.set_nodelay(true);
    let check = PeerCheck::new(identity.bundles.clone(), authorizer);
    let tls = match client_config_with_resolver(check.clone(), Arc::new(identity.resolver.clone()))
    {
        Ok(c) => tokio_rustls::TlsConnector::from(Arc::new(c)),
        Err(e) => {
            warn!(error = %e, "cannot build the TLS configuration");
            return;
        }
    };
    let start = Instant::now();
    let (stream, outcome) = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tls.connect(server_name(&cfg.target), remote),
    )
    .await
    {
        Ok(Ok(s)) => (Some(s), Ok(())),
        Ok(Err(e)) => (None, Err(Failure::Io(e))),
        Err(_) => (None, Err(Failure::Timeout)),
    };
    let verified = report(
        Direction::Outbound,
        cfg.listen,
        &cfg.target,
        &check,
        outcome,
        start.elapsed(),
    );
    let (Some(stream), Some(id)) = (stream, verified) else {
        return;
    };
    let _open = OpenConnection::counted(Direction::Outbound);
    if let Err(e) = pipe::copy(Direction::Outbound, local, stream).await {
        debug!(listen = %cfg.listen, peer_id = %id, error = %e, "connection ended with an error");
    }
}
