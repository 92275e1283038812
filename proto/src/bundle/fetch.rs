//! One bounded HTTPS `GET` of a bundle document, shared by the server's
//! federation client and the agent's bundle refresh: TLS as the caller
//! configured it (see [`web_roots`] for the web PKI of a roots file), then
//! HTTP/1.1 to the URL's path. The whole fetch within [`FETCH_TIMEOUT`],
//! the body at most [`MAX_BUNDLE_BYTES`]; only a `200` counts (a redirect
//! is a failure, never followed). Each failure carries a `reason` label
//! for metrics and a message naming the endpoint.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use super::MAX_BUNDLE_BYTES;
use super::endpoint_url::EndpointUrl;

/// Time allowed for one fetch: connect, TLS, request and the whole body.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

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

impl std::error::Error for FetchError {}

fn fail(reason: &'static str, message: String) -> FetchError {
    FetchError { reason, message }
}

/// A TLS client config trusting the PEM roots of `file` (host names are
/// verified as usual), speaking HTTP/1.1. The error says why, to follow
/// the key and the file name.
pub fn web_roots(file: &Path) -> Result<rustls::ClientConfig, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _unusable) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err("holds no usable CA certificate".into());
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Aborts the connection task when the fetch ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetches the document at `url` over `tls`, within [`FETCH_TIMEOUT`];
/// `shown` is the URL as configured, for messages.
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
            let why = crate::tls::verdict::diagnose_connect_error(shown, &e)
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
