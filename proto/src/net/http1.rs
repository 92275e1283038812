//! An HTTP/1 listener that holds under idle and slow clients: connections
//! are counted per source IP and in all ([`ConnCap`]) for as long as they
//! are open, a client must send each request's headers within
//! `header_read_timeout` (hyper's timer-driven check) and no connection
//! lives longer than `connection_timeout`. Used by both daemons'
//! health/metrics port (plain) and the server's bundle endpoint (TLS).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use super::{Acceptor, ConnCap, ConnPermit, HttpLimits};

/// Counts a new connection from `peer`, or says why not (logged at debug:
/// a flood must not flood the log).
pub fn admit(
    cap: &Arc<ConnCap<IpAddr>>,
    peer: SocketAddr,
    listener: &'static str,
) -> Option<ConnPermit<IpAddr>> {
    match cap.try_acquire(peer.ip()) {
        Ok(p) => Some(p),
        Err(full) => {
            debug!(listener, %peer, reason = %full, "connection refused");
            None
        }
    }
}

/// Serves one connection's requests with `app` under `limits` (header-read
/// timeout, connection lifetime).
pub async fn serve_connection<I>(io: I, app: Router, limits: &HttpLimits) -> std::io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    match tokio::time::timeout(limits.connection_timeout, conn).await {
        Ok(r) => r.map_err(std::io::Error::other),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connection open longer than its limit",
        )),
    }
}

/// Accepts plain-HTTP connections on `listener` and serves `app` on each
/// under `limits`, until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    name: &'static str,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let cap = ConnCap::<IpAddr>::new(limits.max_connections, limits.max_connections_per_ip);
    let mut acceptor = Acceptor::new(listener, name);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer): (TcpStream, SocketAddr) = tokio::select! {
            c = acceptor.accept() => c,
            _ = &mut shutdown => return,
        };
        let Some(permit) = admit(&cap, peer, name) else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_connection(tcp, app, &limits).await {
                debug!(listener = name, %peer, error = %e, "connection ended");
            }
        });
    }
}
