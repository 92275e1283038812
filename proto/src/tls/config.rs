//! The rustls `ServerConfig`/`ClientConfig` builders every Sigil process
//! uses: ring as the provider, TLS 1.3 and 1.2, the SPIFFE verifiers of
//! [`super::verify`], and no session resumption, so that every connection
//! is verified against the current roots and authorizer.

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{NoServerSessionStorage, ResolvesServerCert};
use rustls::{ClientConfig, Error, ServerConfig, SupportedProtocolVersion};

use super::verify::SpiffeClientVerifier;

/// TLS 1.3 and 1.2, in order of preference.
const VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

fn ring_provider() -> Arc<CryptoProvider> {
    // Built once: proxies build a config per connection.
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// A server that requires a client X.509-SVID accepted by
/// `client_verifier`. Session resumption is off, so every connection is
/// verified against the current roots and authorizer.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_verifier: Arc<SpiffeClientVerifier>,
) -> Result<ServerConfig, Error> {
    server_config_with_versions(chain, key, client_verifier, VERSIONS)
}

fn server_config_with_versions(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_verifier: Arc<SpiffeClientVerifier>,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<ServerConfig, Error> {
    let mut config = ServerConfig::builder_with_provider(ring_provider())
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain, key)?;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A server that lets ANY client connect without a certificate. Only for
/// endpoints that are meant to be anonymous (the bundle endpoint, node
/// attestation); everything else uses [`server_config`].
pub fn server_config_allowing_anonymous_clients(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, Error> {
    ServerConfig::builder_with_provider(ring_provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
}

/// A client that accepts servers `verifier` (a
/// [`SpiffeServerVerifier`](super::verify::SpiffeServerVerifier), or
/// one wrapping it) accepts and presents
/// `client_cert` (chain, key) when given. Session resumption is off, so
/// every connection verifies the server against the current roots.
pub fn client_config(
    verifier: Arc<dyn ServerCertVerifier>,
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, Error> {
    client_config_with_versions(verifier, client_cert, VERSIONS)
}

pub(super) fn client_config_with_versions(
    verifier: Arc<dyn ServerCertVerifier>,
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<ClientConfig, Error> {
    let builder = ClientConfig::builder_with_provider(ring_provider())
        .with_protocol_versions(versions)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client_cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// A server presenting what `cert` resolves (e.g. an
/// [`SvidResolver`](super::SvidResolver)) that requires a client
/// certificate `client_verifier` accepts (one delegating to
/// [`SpiffeClientVerifier`]); no session resumption.
pub fn server_config_with_resolver(
    cert: Arc<dyn ResolvesServerCert>,
    client_verifier: Arc<dyn ClientCertVerifier>,
) -> Result<ServerConfig, Error> {
    let mut config = ServerConfig::builder_with_provider(ring_provider())
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(client_verifier)
        .with_cert_resolver(cert);
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A client presenting what `cert` resolves, accepting servers `verifier`
/// accepts; no session resumption.
pub fn client_config_with_resolver(
    verifier: Arc<dyn ServerCertVerifier>,
    cert: Arc<dyn ResolvesClientCert>,
) -> Result<ClientConfig, Error> {
    let mut config = ClientConfig::builder_with_provider(ring_provider())
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(cert);
    config.resumption = Resumption::disabled();
    Ok(config)
}
