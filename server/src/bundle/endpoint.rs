//! The bundle endpoint: HTTPS `GET /` answers the trust domain's bundle as a
//! SPIFFE JWK Set (`application/json`). Profile `https_spiffe` presents the
//! server's SVID; `https_web` an operator's certificate and key. Clients are
//! anonymous on purpose: the bundle is public.
//!
//! Connections are capped in all and per source IP (so one client cannot
//! lock federation peers out), headers must arrive within a few seconds
//! and no connection outlives [`CONNECTION_TIMEOUT`]
//! ([`sigil_proto::net::http1`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use sigil_proto::net::{Acceptor, ConnCap, HttpLimits, http1};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::bundle_jwks;
use crate::ca::manager::CaManager;
use crate::config::{BundleEndpointConfig, BundleProfile};
use crate::server_svid::ServerSvid;

/// Time a connection may live (TLS handshake and requests).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The endpoint's caps (`limits.bundle_endpoint_max_connections` and
/// `_per_ip`) with its timeouts.
pub fn limits(max_connections: usize, max_connections_per_ip: usize) -> HttpLimits {
    HttpLimits {
        max_connections,
        max_connections_per_ip,
        header_read_timeout: HEADER_READ_TIMEOUT,
        connection_timeout: CONNECTION_TIMEOUT,
    }
}

#[derive(Clone)]
struct AppState {
    ca: Arc<CaManager>,
    refresh_hint: Duration,
}

async fn serve_bundle(State(st): State<AppState>) -> Response {
    match bundle_jwks(&st.ca.bundle(), st.refresh_hint) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "bundle encoding failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// An operator's certificate chain and key (PEM or DER chain, PEM key),
/// errors naming the config keys `cert_key` and `key_key` (also used by
/// OIDC discovery's `tls_cert_file`/`tls_key_file`).
pub fn load_cert_and_key(
    cert: &std::path::Path,
    key: &std::path::Path,
    cert_key: &str,
    key_key: &str,
) -> anyhow::Result<Arc<CertifiedKey>> {
    use rustls_pki_types::pem::PemObject;
    let cert_bytes =
        std::fs::read(cert).with_context(|| format!("{cert_key} {}", cert.display()))?;
    let chain = sigil_proto::pem::certs_from_pem_or_der(&cert_bytes)
        .with_context(|| format!("{cert_key} {}", cert.display()))?
        .into_iter()
        .map(rustls_pki_types::CertificateDer::from)
        .collect();
    let key_der = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("{key_key} {}: {e}", key.display()))?;
    sigil_proto::tls::certified_key(chain, &key_der)
        .map_err(|e| anyhow::anyhow!("{key_key} {}: unsupported key: {e}", key.display()))
}

/// The certificate the endpoint presents: the server's SVID (`https_spiffe`)
/// or the operator's certificate and key (`https_web`, loaded once; its
/// problems at `now` are logged as warnings).
pub fn cert_resolver(
    be: &BundleEndpointConfig,
    svid: Arc<ServerSvid>,
    now: i64,
) -> anyhow::Result<Arc<dyn ResolvesServerCert>> {
    Ok(match be.profile {
        BundleProfile::HttpsSpiffe => Arc::new(svid.resolver()),
        BundleProfile::HttpsWeb => {
            let (Some(c), Some(k)) = (&be.cert_file, &be.key_file) else {
                anyhow::bail!("bundle_endpoint: https_web needs cert_file and key_file");
            };
            let cert = load_cert_and_key(
                c,
                k,
                "bundle_endpoint.cert_file",
                "bundle_endpoint.key_file",
            )?;
            let chain: Vec<Vec<u8>> = cert.cert.iter().map(|c| c.to_vec()).collect();
            for w in crate::web_cert::warnings(&chain, be.address, now) {
                warn!(warning = %w, "bundle endpoint certificate");
            }
            Arc::new(sigil_proto::tls::SvidResolver::fixed(cert))
        }
    })
}

/// TLS settings for the endpoint: TLS 1.3 and 1.2, no client certificates.
pub fn tls_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves until `shutdown` fires, under `limits`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ca: Arc<CaManager>,
    refresh_hint: Duration,
    limits: HttpLimits,
    shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/", get(serve_bundle))
        .with_state(AppState { ca, refresh_hint });
    serve_tls(listener, "bundle endpoint", tls, app, limits, shutdown).await;
}

/// Serves `app` over TLS (`tls`) on `listener` under `limits` (connection
/// caps in all and per IP, handshake and header timeouts, connection
/// lifetime) until `shutdown` fires. `name` names the listener in logs.
pub async fn serve_tls(
    listener: TcpListener,
    name: &'static str,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: HttpLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let caps = ConnCap::<IpAddr>::new(limits.max_connections, limits.max_connections_per_ip);
    let mut listener = Acceptor::new(listener, name);
    if let Ok(addr) = listener.local_addr() {
        info!(listener = name, %addr, max_connections = limits.max_connections, max_connections_per_ip = limits.max_connections_per_ip, "HTTPS listening");
    }
    loop {
        let (tcp, peer): (_, SocketAddr) = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.changed() => return,
        };
        let Some(permit) = http1::admit(&caps, peer, name) else {
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let work = async {
                let tls = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp))
                    .await
                    .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
                http1::serve_connection(tls, app, &limits).await
            };
            if let Err(e) = work.await {
                debug!(listener = name, %peer, error = %e, "connection ended");
            }
        });
    }
}
