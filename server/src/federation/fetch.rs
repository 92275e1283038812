//! One fetch of a foreign bundle endpoint: TLS as the relationship's
//! profile says (`https_web`: the web PKI of `ca_file` or the system roots
//! file, with host name verification; `https_spiffe`: the stored bundle of
//! the foreign trust domain and exactly `endpoint_spiffe_id`, through
//! `sigil_proto::tls`), then `GET` over HTTP/1.1. Bounded: the whole fetch
//! within [`FETCH_TIMEOUT`], the body at most [`MAX_BUNDLE_BYTES`]; only a
//! `200` counts (a redirect is a failure, never followed). Modelled on the
//! agent's `bundle_refresh` fetch.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sigil_proto::tls::{SpiffeServerVerifier, TrustRoots, authorize_exact, client_config};
use tokio::net::TcpStream;

use super::relationship::EndpointUrl;
use crate::store::{BundleRecord, EndpointProfile, FederationRecord};

/// Largest bundle document fetched, in bytes.
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;
/// Time allowed for one fetch: connect, TLS, request and the whole body.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The roots `https_web` uses without `ca_file`.
pub const SYSTEM_ROOTS_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why a fetch failed, with the metric's `reason` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    /// `tls`, `connect`, `http_status`, `timeout`, `body`, `config`.
    pub reason: &'static str,
    pub message: String,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn fail(reason: &'static str, message: String) -> FetchError {
    FetchError { reason, message }
}

/// The TLS client config for `rel`; `https_spiffe` needs the stored bundle
/// of its trust domain.
pub fn tls_config(
    rel: &FederationRecord,
    stored: Option<&BundleRecord>,
) -> Result<rustls::ClientConfig, FetchError> {
    let td = &rel.trust_domain;
    let mut cfg = match rel.profile {
        EndpointProfile::HttpsSpiffe => {
            let id = rel
                .endpoint_spiffe_id
                .clone()
                .ok_or_else(|| fail("config", format!("federation {td}: no endpoint_spiffe_id")))?;
            let certs = stored
                .map(|b| b.x509_authorities.clone())
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    fail(
                        "config",
                        format!(
                            "no X.509 authority of {td} is stored to check its https_spiffe \
                             endpoint with: set one with `sigil-server bundle set --trust-domain \
                             {td}` or create the relationship with --trust-domain-bundle"
                        ),
                    )
                })?;
            let roots = TrustRoots::new(certs)
                .map_err(|e| fail("config", format!("the stored bundle of {td}: {e}")))?;
            let verifier = SpiffeServerVerifier::new(roots, authorize_exact(id));
            client_config(Arc::new(verifier), None)
                .map_err(|e| fail("config", format!("TLS client for {td}: {e}")))?
        }
        EndpointProfile::HttpsWeb => {
            let file = rel
                .ca_file
                .clone()
                .unwrap_or_else(|| SYSTEM_ROOTS_FILE.into());
            web_config(&file)?
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

fn web_config(file: &Path) -> Result<rustls::ClientConfig, FetchError> {
    let bad = |e: String| fail("config", format!("ca_file {}: {e}", file.display()));
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _unusable) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad("holds no usable CA certificate".into()));
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// Aborts the connection task when the fetch ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetches the document at `url` over `tls`, within [`FETCH_TIMEOUT`].
pub async fn fetch(
    shown: &str,
    url: &EndpointUrl,
    tls: rustls::ClientConfig,
) -> Result<Bytes, FetchError> {
    tokio::time::timeout(FETCH_TIMEOUT, get(shown, url, tls))
        .await
        .map_err(|_| {
            fail(
                "timeout",
                format!(
                    "{shown}: no complete answer within {} s",
                    FETCH_TIMEOUT.as_secs()
                ),
            )
        })?
}

async fn get(
    shown: &str,
    url: &EndpointUrl,
    tls: rustls::ClientConfig,
) -> Result<Bytes, FetchError> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| fail("connect", format!("connecting to {shown}: {e}")))?;
    let name = ServerName::try_from(url.host.clone()).map_err(|e| {
        fail(
            "config",
            format!(
                "{shown}: host {:?} is not a valid server name: {e}",
                url.host
            ),
        )
    })?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| {
            let why = sigil_proto::tls::verdict::diagnose_connect_error(shown, &e)
                .map_or_else(|| e.to_string(), |d| d.to_string());
            fail("tls", format!("TLS with {shown}: {why}"))
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail("connect", format!("HTTP with {shown}: {e}")))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let req = http::Request::get(url.path.as_str())
        .header(http::header::HOST, url.host_header())
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail("config", format!("building the request for {shown}: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| fail("connect", format!("GET {shown}: {e}")))?;
    let status = resp.status();
    if status.is_redirection() {
        return Err(fail(
            "http_status",
            format!("GET {shown} answered {status}: redirects are not followed"),
        ));
    }
    if status != http::StatusCode::OK {
        return Err(fail(
            "http_status",
            format!("GET {shown} answered {status}, expected 200"),
        ));
    }
    let body = Limited::new(resp.into_body(), MAX_BUNDLE_BYTES)
        .collect()
        .await
        .map_err(|e| {
            fail(
                "body",
                format!("{shown}: reading the bundle (at most {MAX_BUNDLE_BYTES} bytes): {e}"),
            )
        })?;
    Ok(body.to_bytes())
}
