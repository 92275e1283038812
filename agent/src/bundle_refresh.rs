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
use rustls_pki_types::ServerName;
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
pub const FETCH_TIMEOUT: Duration = sigil_proto::bundle::fetch::FETCH_TIMEOUT;
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
    sigil_proto::bundle::fetch::web_roots(&be.ca_file)
        .map_err(|e| anyhow::anyhow!("bundle_endpoint.ca_file {}: {e}", be.ca_file.display()))
}

/// Fetches ([`sigil_proto::bundle::fetch::fetch`]: bounded in time and
/// size, a `200` only) and checks the bundle at `be.url` over `tls`.
pub async fn fetch(
    be: &BundleEndpointConfig,
    tls: rustls::ClientConfig,
    td: &TrustDomain,
) -> anyhow::Result<TrustBundle> {
    let body = sigil_proto::bundle::fetch::fetch(&be.url, &be.endpoint_url(), tls)
        .await
        .map_err(|e| match e.reason {
            "tls" => anyhow::anyhow!(
                "{e} (its certificate must chain to bundle_endpoint.ca_file {} and name {})",
                be.ca_file.display(),
                be.host
            ),
            _ => anyhow::Error::new(e),
        })?;
    bundle_from_document(td, &body).with_context(|| be.url.clone())
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
    if authorities.is_empty() {
        anyhow::bail!("the bundle has no X.509 authority for trust domain {td}");
    }
    sigil_proto::bundle::endpoint_url::check_authorities(td, authorities)
        .map_err(|e| anyhow::anyhow!("{e}: refused"))
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
