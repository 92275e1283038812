//! The bundle endpoint: HTTPS `GET /` answers the trust domain's bundle as a
//! SPIFFE JWK Set (`application/json`). Profile `https_spiffe` presents the
//! server's SVID; `https_web` an operator's certificate and key. Clients are
//! anonymous on purpose: the bundle is public.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::bundle_jwks;
use crate::ca::manager::CaManager;
use crate::config::{BundleEndpointConfig, BundleProfile};
use crate::server_svid::ServerSvid;

/// Most connections served at once.
const MAX_CONNECTIONS: usize = 1024;
/// Time allowed for a TLS handshake plus a request.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

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

fn load_web_cert(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<Arc<CertifiedKey>> {
    use rustls_pki_types::pem::PemObject;
    let cert_bytes = std::fs::read(cert)
        .with_context(|| format!("bundle_endpoint.cert_file {}", cert.display()))?;
    let chain = sigil_proto::pem::certs_from_pem_or_der(&cert_bytes)
        .with_context(|| format!("bundle_endpoint.cert_file {}", cert.display()))?
        .into_iter()
        .map(rustls_pki_types::CertificateDer::from)
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("bundle_endpoint.key_file {}: {e}", key.display()))?;
    sigil_proto::tls::certified_key(chain, &key)
        .map_err(|e| anyhow::anyhow!("bundle_endpoint.key_file: unsupported key: {e}"))
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
            let cert = load_web_cert(c, k)?;
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

/// Serves until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ca: Arc<CaManager>,
    refresh_hint: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/", get(serve_bundle))
        .with_state(AppState { ca, refresh_hint });
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "bundle endpoint listening");
    }
    loop {
        let (tcp, peer): (_, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { debug!(error = %e, "accept failed"); continue; }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "bundle endpoint busy; connection dropped");
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let work = async {
                let tls = acceptor.accept(tcp).await?;
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .await
                    .map_err(std::io::Error::other)
            };
            match tokio::time::timeout(CONNECTION_TIMEOUT, work).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "bundle endpoint connection failed"),
                Err(_) => debug!(%peer, "bundle endpoint connection timed out"),
            }
        });
    }
}
