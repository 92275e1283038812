//! OIDC discovery (issue 15, off by default): cloud providers and Vault
//! verify JWT-SVIDs through `GET /.well-known/openid-configuration` and
//! `GET /keys` ([`documents`]), both `application/json` with a
//! `Cache-Control` max-age of the bundle refresh hint, answered from the
//! server's published bundle (its JWT keys) at each request. Unknown paths
//! are 404, other methods on the two paths 405. HTTPS with
//! `oidc_discovery.tls_cert_file`/`tls_key_file`, else plain HTTP for a
//! TLS-terminating proxy (warned about at start). The listener is the
//! capped HTTP/1 one of the bundle endpoint and the health port.

pub mod documents;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sigil_proto::net::{HttpLimits, http1};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::OidcDiscoveryConfig;
use crate::store::BundleRecord;

/// Name of the listener in logs.
const NAME: &str = "OIDC discovery";

#[derive(Clone)]
struct AppState {
    issuer: Arc<str>,
    bundle: watch::Receiver<Arc<BundleRecord>>,
    cache_control: HeaderValue,
}

fn json(st: &AppState, doc: Result<String, documents::DocumentError>) -> Response {
    match doc {
        Ok(body) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, st.cache_control.clone()),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            error!(error = %e, "OIDC document encoding failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn configuration(State(st): State<AppState>) -> Response {
    let bundle = st.bundle.borrow().clone();
    json(&st, documents::configuration(&st.issuer, &bundle))
}

async fn keys(State(st): State<AppState>) -> Response {
    let bundle = st.bundle.borrow().clone();
    json(&st, documents::keys(&bundle))
}

/// The two documents for `issuer`, at the root and, when the issuer URL has
/// a path, under that path too (a relying party asks for
/// `<issuer>/.well-known/openid-configuration`, with or without a proxy
/// that strips the path). Other paths 404, other methods 405.
pub fn router(
    issuer: &str,
    bundle: watch::Receiver<Arc<BundleRecord>>,
    refresh_hint: Duration,
) -> Router {
    let cache_control = HeaderValue::from_str(&documents::cache_control(refresh_hint))
        .unwrap_or_else(|_| HeaderValue::from_static("no-cache"));
    let mut app = Router::new()
        .route(documents::CONFIGURATION_PATH, get(configuration))
        .route(documents::KEYS_PATH, get(keys));
    let prefix = documents::issuer_path(issuer);
    if !prefix.is_empty() {
        app = app
            .route(
                &format!("{prefix}{}", documents::CONFIGURATION_PATH),
                get(configuration),
            )
            .route(&format!("{prefix}{}", documents::KEYS_PATH), get(keys));
    }
    app.with_state(AppState {
        issuer: issuer.into(),
        bundle,
        cache_control,
    })
}

/// A bound discovery endpoint, ready to serve.
pub struct Endpoint {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: HttpLimits,
}

impl Endpoint {
    /// Loads the TLS files (if configured) and binds `d.address`; every
    /// failure names its config key.
    pub async fn bind(
        d: &OidcDiscoveryConfig,
        issuer: &str,
        bundle: watch::Receiver<Arc<BundleRecord>>,
        refresh_hint: Duration,
        limits: HttpLimits,
    ) -> anyhow::Result<Endpoint> {
        let tls = match d.tls_files() {
            Some((cert, key)) => {
                let ck = crate::bundle::endpoint::load_cert_and_key(
                    cert,
                    key,
                    "oidc_discovery.tls_cert_file",
                    "oidc_discovery.tls_key_file",
                )?;
                let resolver = Arc::new(sigil_proto::tls::SvidResolver::fixed(ck));
                Some(crate::bundle::endpoint::tls_config(resolver)?)
            }
            None => None,
        };
        let listener = TcpListener::bind(d.address)
            .await
            .with_context(|| format!("oidc_discovery.address {}", d.address))?;
        Ok(Endpoint {
            listener,
            tls,
            app: router(issuer, bundle, refresh_hint),
            limits,
        })
    }

    /// Serves until `shutdown` fires.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let address = self.listener.local_addr().ok();
        match self.tls {
            Some(tls) => {
                info!(?address, "OIDC discovery serving HTTPS");
                crate::bundle::endpoint::serve_tls(
                    self.listener,
                    NAME,
                    tls,
                    self.app,
                    self.limits,
                    shutdown,
                )
                .await
            }
            None => {
                warn!(
                    ?address,
                    "OIDC discovery serves plain HTTP (no oidc_discovery.tls_cert_file and \
                     tls_key_file): put it behind a TLS-terminating proxy"
                );
                http1::serve(self.listener, NAME, self.app, self.limits, async move {
                    let _ = shutdown.changed().await;
                })
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests;
