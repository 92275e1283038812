//! The agent API's TLS listener: accepts TCP, completes the TLS handshake
//! (bounded in time and number), and hands tonic streams that carry the
//! peer's verified certificate chain and the connection's channel binding
//! (exported keying material, which x509pop answers are bound to) as
//! connection info.
//!
//! At the TLS layer a client certificate is optional, because node
//! attestation must work before an agent has one; a certificate that is
//! presented must chain to the current bundle and name an agent ID, or the
//! handshake fails. Whether a method may be called without one is decided
//! per call by the method table in [`super::access`] (deny by default).
//!
//! Connections are held to [`ListenerLimits`]: a global and a per-source-IP
//! cap on *open* connections (a connection is counted from accept until it
//! closes), and a deadline by which the TLS handshake must be done and the
//! client's HTTP/2 preface must have arrived; a client that completes TLS
//! and then sends nothing is closed at that deadline. The preface is read
//! here and replayed to the HTTP/2 server. A connection with no call in
//! progress for the idle timeout is closed ([`super::idle`]).
//!
//! [`client_verifier`] and [`tls_config`] build the TLS settings;
//! [`follow_bundle`] keeps the verifier's roots in step with the bundle.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::DistinguishedName;
use rustls::server::ResolvesServerCert;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_proto::TrustDomain;
use sigil_proto::attestation::{ChannelBinding, x509pop_channel_binding};
use sigil_proto::net::{Acceptor, ConnCap, ConnPermit};
use sigil_proto::tls::{SpiffeClientVerifier, TrustRoots};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use super::idle::Activity;
use crate::node_attestor::is_agent_id;
use crate::store::BundleRecord;

/// Handshakes in progress at once.
pub const MAX_HANDSHAKES: usize = 256;
/// What every HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the listener allows connections (`[limits]` of the config).
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Connections open at once, from everyone.
    pub max_connections: usize,
    /// Connections open at once from one source IP.
    pub max_connections_per_ip: usize,
    /// Time from accept until the TLS handshake is done and the HTTP/2
    /// preface has arrived.
    pub preface_timeout: Duration,
    /// A connection with no call in progress this long is closed.
    pub idle_timeout: Duration,
}

/// What a handler may learn about the connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The client's certificate chain, verified at the handshake; `None` for
    /// an anonymous (attesting) client.
    pub chain: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// The connection's x509pop channel binding; `None` only where no TLS
    /// connection stands behind the call (a re-check of an open stream).
    pub channel: Option<ChannelBinding>,
    /// The connection's calls in progress (for its idle timeout).
    pub activity: Option<Arc<Activity>>,
}

/// The connection's [`Activity`] from a request's extensions (for
/// [`super::idle::IdleLayer`]).
pub fn activity_of(ext: &http::Extensions) -> Option<Arc<Activity>> {
    ext.get::<PeerInfo>().and_then(|p| p.activity.clone())
}

/// A TLS connection from an agent, counted against the connection caps
/// until it is dropped.
pub struct AgentConn {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
    /// The HTTP/2 preface, read by the listener; replayed first.
    preface: &'static [u8],
    _permit: ConnPermit<IpAddr>,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    /// Wakes the reader when the connection may have been idle too long.
    idle_check: Pin<Box<tokio::time::Sleep>>,
}

impl AgentConn {
    /// An error once the connection has had no call in progress for its
    /// idle timeout (hyper then closes it); otherwise re-arms the check.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        loop {
            let next = match self.activity.idle_deadline(self.idle_timeout) {
                Some(d) if d <= tokio::time::Instant::now() => {
                    debug!(remote = ?self.info.remote, timeout = ?self.idle_timeout, "agent API connection idle; closed");
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no call on this connection for the idle timeout",
                    ));
                }
                Some(d) => d,
                // A call is in progress: look again a timeout from now.
                None => tokio::time::Instant::now() + self.idle_timeout,
            };
            if self.idle_check.deadline() != next {
                self.idle_check.as_mut().reset(next);
            }
            if self.idle_check.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
        }
    }
}

impl Connected for AgentConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for AgentConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Err(e) = self.check_idle(cx) {
            return Poll::Ready(Err(e));
        }
        if !self.preface.is_empty() {
            let n = self.preface.len().min(buf.remaining());
            buf.put_slice(&self.preface[..n]);
            self.preface = &self.preface[n..];
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgentConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Verifies a client certificate when one is presented (against the current
/// bundle, SPIFFE ID authorized by the wrapped verifier), and lets clients
/// without one through to the per-method table.
#[derive(Debug)]
pub struct AttestationFriendlyVerifier(pub Arc<SpiffeClientVerifier>);

impl ClientCertVerifier for AttestationFriendlyVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        // Only node attestation runs without a certificate; the method
        // table enforces that every other method has a verified one.
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| super::refused_peer::note(end_entity, e, now))
    }
    sigil_proto::tls_signature_methods!(self);
}

/// Verifies client certificates against `roots`, admitting only agent IDs
/// of `td`.
pub fn client_verifier(roots: TrustRoots, td: TrustDomain) -> Arc<SpiffeClientVerifier> {
    let agent_only: sigil_proto::tls::Authorizer =
        Arc::new(move |id: &sigil_proto::SpiffeId| is_agent_id(id, &td));
    Arc::new(SpiffeClientVerifier::new(roots, agent_only))
}

/// The agent API's TLS settings: TLS 1.3 and 1.2 (with the extended master
/// secret), ALPN h2, the server's
/// certificate from `cert`, a client certificate checked by `verifier` when
/// one is presented, and no session resumption (every connection is
/// verified against the current bundle).
pub fn tls_config(
    verifier: Arc<SpiffeClientVerifier>,
    cert: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_client_cert_verifier(Arc::new(AttestationFriendlyVerifier(verifier)))
    .with_cert_resolver(cert);
    tls.alpn_protocols = vec![b"h2".to_vec()];
    // TLS 1.2 only with the extended master secret (RFC 7627): without it
    // the exported keying material the x509pop proof is bound to is not
    // unique to the connection.
    tls.require_ems = true;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    Ok(Arc::new(tls))
}

/// Sets `roots` to every new bundle until `shutdown` (or the bundle's
/// sender goes away).
pub async fn follow_bundle(
    roots: TrustRoots,
    mut bundles: watch::Receiver<Arc<BundleRecord>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = bundles.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let certs = bundles.borrow().x509_authorities.clone();
        if let Err(e) = roots.set(certs) {
            warn!(error = %e, "agent API trust roots not updated");
        }
    }
}

/// Reads the client's HTTP/2 preface; an error for anything else.
async fn read_preface(tls: &mut TlsStream<TcpStream>) -> std::io::Result<()> {
    let mut got = [0u8; 24];
    tls.read_exact(&mut got).await?;
    if &got != H2_PREFACE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the client did not start with the HTTP/2 preface",
        ));
    }
    Ok(())
}

/// Accepts connections until `shutdown`, sending TLS connections whose
/// HTTP/2 preface has arrived to the returned channel (the `incoming` of
/// tonic's server), under `limits`.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: ListenerLimits,
    mut shutdown: watch::Receiver<bool>,
) -> mpsc::Receiver<Result<AgentConn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let caps = ConnCap::<IpAddr>::new(limits.max_connections, limits.max_connections_per_ip);
    let mut listener = Acceptor::new(listener, "agent API");
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                c = listener.accept() => c,
                _ = shutdown.changed() => return,
            };
            let conn_permit = match caps.try_acquire(remote.ip()) {
                Ok(p) => p,
                Err(full) => {
                    debug!(%remote, reason = %full, "agent API connection refused");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                debug!(%remote, "too many TLS handshakes in progress; connection dropped");
                continue;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let deadline = tokio::time::Instant::now() + limits.preface_timeout;
            tokio::spawn(async move {
                let handshake = {
                    let _permit = permit;
                    tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await
                };
                match handshake {
                    Ok(Ok(mut tls)) => {
                        match tokio::time::timeout_at(deadline, read_preface(&mut tls)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                debug!(%remote, error = %e, "agent API connection closed before HTTP/2");
                                return;
                            }
                            Err(_) => {
                                debug!(%remote, timeout = ?limits.preface_timeout, "agent API client sent no HTTP/2 preface in time; closed");
                                return;
                            }
                        }
                        let chain = tls.get_ref().1.peer_certificates().map(|c| {
                            Arc::new(c.iter().map(|c| c.clone().into_owned()).collect::<Vec<_>>())
                        });
                        let channel = match x509pop_channel_binding(tls.get_ref().1) {
                            Ok(c) => Some(c),
                            Err(e) => {
                                // x509pop on this connection is refused for
                                // want of it; other attestors do not need it.
                                warn!(%remote, error = %e, "agent API connection has no channel binding");
                                None
                            }
                        };
                        let activity = Activity::new();
                        let conn = AgentConn {
                            inner: tls,
                            info: PeerInfo {
                                remote: Some(remote),
                                chain,
                                channel,
                                activity: Some(activity.clone()),
                            },
                            preface: H2_PREFACE,
                            _permit: conn_permit,
                            activity,
                            idle_timeout: limits.idle_timeout,
                            idle_check: Box::pin(tokio::time::sleep(limits.idle_timeout)),
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => super::refused_peer::log_refused(remote, &e),
                    Err(_) => debug!(%remote, "agent API TLS handshake timed out"),
                }
            });
        }
    });
    rx
}
