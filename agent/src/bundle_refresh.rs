//! Trust bundle refresh from the server's `https_web` bundle endpoint (issue
//! 14: an agent offline through a whole CA rotation comes back by itself).
//! Only when the stored bundle no longer verifies the server (the handshake
//! fails with an unknown issuer or a bad signature, seen by [`probe`] after
//! the entry sync failed), and only with `[bundle_endpoint]` configured, the
//! agent fetches the bundle over HTTPS checked with the web PKI (`ca_file`
//! roots, normal hostname verification; never the SPIFFE bundle it replaces,
//! never insecure), bounded in size ([`MAX_BUNDLE_BYTES`]) and time
//! ([`FETCH_TIMEOUT`]), decodes it as a SPIFFE JWK Set, checks it is for the
//! agent's trust domain and that it does verify the server, and applies it
//! like a bundle from the server (roots, stored file, the identity
//! lifecycle, which then renews or attests again). Failures are retried
//! with backoff; the reason is on `/ready` (see `crate::health`) and in
//! the log.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sigil_proto::TrustDomain;
use sigil_proto::clock::Clock;
use sigil_proto::tls::{TrustRoots, verdict};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cache::TrustBundle;
use crate::config::BundleEndpointConfig;
use crate::health::ServerContact;
use crate::rotation;
use crate::sync::OnBundle;

/// Largest bundle document fetched, in bytes (the JWK Set decoder's limit).
pub const MAX_BUNDLE_BYTES: usize = sigil_proto::bundle::MAX_BUNDLE_BYTES;
/// Time allowed for one fetch: connect, TLS, request and the whole body.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one probe handshake with the server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a server the stored bundle does not verify is checked again
/// when there is no `[bundle_endpoint]` to fetch from.
const RECHECK: Duration = Duration::from_secs(30);

/// What a handshake with the agent API says of the roots it was checked with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Verified,
    /// The roots do not verify the server's certificate (why).
    NotVerified(String),
    /// No answer, or a failure that says nothing of the roots.
    Unreachable(String),
}

/// One TLS handshake with the agent API at `addr`, checking the server's
/// SVID against `roots` (no client certificate; nothing is sent).
pub async fn probe(addr: &str, roots: &TrustRoots, td: &TrustDomain) -> Probe {
    let tls = match crate::server_client::tls_config(roots, td, None) {
        Ok(t) => t,
        Err(e) => return Probe::Unreachable(format!("{e:#}")),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let r = tokio::time::timeout(PROBE_TIMEOUT, async {
        let tcp = TcpStream::connect(addr).await?;
        // Names are not checked: the verifier checks the SPIFFE ID.
        let name = ServerName::try_from("sigil-server.invalid").map_err(std::io::Error::other)?;
        connector.connect(name, tcp).await
    })
    .await;
    match r {
        Err(_) => Probe::Unreachable(format!(
            "no TLS handshake within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
        Ok(Ok(_)) => Probe::Verified,
        Ok(Err(e)) => match verdict::diagnose_connect_error(addr, &e) {
            Some(d) if d.verdict.is_unknown_server_ca() => Probe::NotVerified(d.to_string()),
            _ => Probe::Unreachable(e.to_string()),
        },
    }
}

/// The TLS client config for the bundle endpoint: the roots of `ca_file`,
/// hostname verification, HTTP/1.1.
pub fn web_tls(be: &BundleEndpointConfig) -> anyhow::Result<rustls::ClientConfig> {
    let file = || format!("bundle_endpoint.ca_file {}", be.ca_file.display());
    let certs = CertificateDer::pem_file_iter(&be.ca_file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", file()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _unusable) = roots.add_parsable_certificates(certs);
    if added == 0 {
        anyhow::bail!("{}: holds no usable CA certificate", file());
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Fetches and checks the bundle at `be.url` over `tls`.
pub async fn fetch(
    be: &BundleEndpointConfig,
    tls: rustls::ClientConfig,
    td: &TrustDomain,
) -> anyhow::Result<TrustBundle> {
    let body = tokio::time::timeout(FETCH_TIMEOUT, get(be, tls))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "{}: no complete answer within {} s",
                be.url,
                FETCH_TIMEOUT.as_secs()
            )
        })??;
    bundle_from_document(td, &body).with_context(|| be.url.clone())
}

/// Aborts the connection task when the fetch ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `GET` of the URL's path: the body of a 200 answer, at most
/// [`MAX_BUNDLE_BYTES`].
async fn get(be: &BundleEndpointConfig, tls: rustls::ClientConfig) -> anyhow::Result<Bytes> {
    let url = &be.url;
    let tcp = TcpStream::connect((be.host.as_str(), be.port))
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let name = ServerName::try_from(be.host.clone()).map_err(|e| {
        anyhow::anyhow!("{url}: host {:?} is not a valid server name: {e}", be.host)
    })?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .with_context(|| {
            format!(
                "TLS with {url} (its certificate must chain to bundle_endpoint.ca_file {} and \
                 name {})",
                be.ca_file.display(),
                be.host
            )
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP with {url}"))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let host = if be.host.contains(':') {
        format!("[{}]", be.host)
    } else {
        be.host.clone()
    };
    let host = if be.port == 443 {
        host
    } else {
        format!("{host}:{}", be.port)
    };
    let req = http::Request::get(be.path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .with_context(|| format!("building the request for {url}"))?;
    let resp = sender
        .send_request(req)
        .await
        .with_context(|| format!("GET {url}"))?;
    if resp.status() != http::StatusCode::OK {
        anyhow::bail!("GET {url} answered {}, expected 200", resp.status());
    }
    let body = Limited::new(resp.into_body(), MAX_BUNDLE_BYTES)
        .collect()
        .await
        .map_err(|e| {
            anyhow::anyhow!("{url}: reading the bundle (at most {MAX_BUNDLE_BYTES} bytes): {e}")
        })?;
    Ok(body.to_bytes())
}

/// Decodes a SPIFFE JWK Set and checks it is for `td` (see
/// [`check_trust_domain`]).
pub fn bundle_from_document(td: &TrustDomain, body: &[u8]) -> anyhow::Result<TrustBundle> {
    let decoded = sigil_proto::bundle::decode(td, body)?;
    let b = decoded.bundle;
    check_trust_domain(td, &b.x509_authorities)?;
    Ok(TrustBundle {
        x509_authorities: b.x509_authorities,
        tainted_key_ids: Vec::new(),
        sequence: b.sequence.unwrap_or(0),
        jwt_authorities: b.jwt_authorities,
        tainted_jwt_key_ids: Vec::new(),
    })
}

/// The bundle must hold an X.509 authority, and no authority may carry the
/// SPIFFE ID of another trust domain. (That it is the server's own bundle
/// is then shown by the server's SVID verifying against it: [`probe`].)
pub fn check_trust_domain(td: &TrustDomain, authorities: &[Vec<u8>]) -> anyhow::Result<()> {
    use x509_parser::extensions::GeneralName;
    if authorities.is_empty() {
        anyhow::bail!("the bundle has no X.509 authority for trust domain {td}");
    }
    let want = td.id().to_string();
    for (i, der) in authorities.iter().enumerate() {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| anyhow::anyhow!("X.509 authority {i} does not parse: {e}"))?;
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            continue;
        };
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && uri.starts_with("spiffe://")
                && *uri != want
            {
                anyhow::bail!(
                    "X.509 authority {i} is for {uri}, not the agent's trust domain {want}: \
                     refused"
                );
            }
        }
    }
    Ok(())
}

/// The task that watches for a server the stored bundle does not verify.
pub struct Refresher {
    /// The agent's servers: the current one is probed.
    pub servers: Arc<crate::servers::Servers>,
    pub trust_domain: TrustDomain,
    pub endpoint: Option<BundleEndpointConfig>,
    /// The roots the agent checks the server with (shared with its client).
    pub roots: TrustRoots,
    pub contact: ServerContact,
    /// Applies a fetched bundle like one from the server.
    pub on_bundle: Arc<OnBundle>,
    pub clock: Arc<dyn Clock>,
}

impl Refresher {
    /// Runs until `shutdown` fires.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut contact = self.contact.subscribe();
        let mut attempt = 0u32;
        loop {
            // Nothing to check while the server answers.
            if contact.borrow_and_update().failing_since.is_none() {
                tokio::select! {
                    r = contact.changed() => if r.is_err() { return },
                    _ = shutdown.changed() => return,
                }
                continue;
            }
            let addr = &self.servers.current_or_first();
            let why = match probe(addr, &self.roots, &self.trust_domain).await {
                Probe::NotVerified(why) => {
                    format!("the stored trust bundle does not verify the server at {addr} ({why})")
                }
                Probe::Verified | Probe::Unreachable(_) => {
                    // Not a bundle problem: look again at the next failure.
                    self.contact.untrusted(None);
                    attempt = 0;
                    tokio::select! {
                        r = contact.changed() => if r.is_err() { return },
                        _ = shutdown.changed() => return,
                    }
                    continue;
                }
            };
            let Some(be) = &self.endpoint else {
                let reason = format!(
                    "{why}; configure [bundle_endpoint] to fetch the current bundle, or write it \
                     (`sigil-server bundle show`) to trust_bundle_path and restart the agent with \
                     --reset-identity"
                );
                if self.contact.get().untrusted.as_deref() != Some(reason.as_str()) {
                    warn!(%reason, "agent stranded");
                }
                self.contact.untrusted(Some(reason));
                tokio::select! {
                    _ = tokio::time::sleep(RECHECK) => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            };
            info!(server = %addr, url = %be.url, reason = %why, "fetching the trust bundle from the bundle endpoint");
            match self.refresh(be).await {
                Ok(n) => {
                    crate::metrics::bundle_fetch("ok");
                    attempt = 0;
                    self.contact.untrusted(None);
                    info!(url = %be.url, authorities = n, "trust bundle refreshed from the bundle endpoint; the server verifies again");
                    tokio::select! {
                        r = contact.changed() => if r.is_err() { return },
                        _ = shutdown.changed() => return,
                    }
                }
                Err(e) => {
                    crate::metrics::bundle_fetch("error");
                    let wait = Duration::from_millis(rotation::backoff_ms(
                        attempt,
                        self.clock.random_unit(),
                    ));
                    attempt = attempt.saturating_add(1);
                    let error = format!("{e:#}");
                    warn!(url = %be.url, %error, retry_in_ms = wait.as_millis() as u64, "fetching the trust bundle failed");
                    self.contact.untrusted(Some(format!(
                        "{why}; fetching the bundle from {} failed: {error}",
                        be.url
                    )));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }

    /// Fetches, checks that the fetched bundle verifies the server, and
    /// applies it; returns the number of authorities.
    async fn refresh(&self, be: &BundleEndpointConfig) -> anyhow::Result<usize> {
        let bundle = fetch(be, web_tls(be)?, &self.trust_domain).await?;
        let roots = TrustRoots::new(bundle.x509_authorities.clone())
            .with_context(|| format!("the bundle from {}", be.url))?;
        let addr = &self.servers.current_or_first();
        match probe(addr, &roots, &self.trust_domain).await {
            Probe::Verified => {}
            Probe::NotVerified(why) => anyhow::bail!(
                "the bundle from {} does not verify the server at {addr} either ({why}): not used",
                be.url
            ),
            Probe::Unreachable(why) => anyhow::bail!(
                "the server at {addr} could not be reached to check the bundle from {}: {why}",
                be.url
            ),
        }
        (self.on_bundle)(&bundle);
        Ok(bundle.x509_authorities.len())
    }
}

#[cfg(test)]
mod tests;
