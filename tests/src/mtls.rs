//! The mTLS example: two workloads get their SVIDs from the agent through the
//! unmodified `spiffe` crate (`X509Source`) and talk over rustls mutual TLS.
//! The server requires a client certificate, verifies it against the bundle
//! and admits only SPIFFE IDs on an allow-list; the client checks the
//! server's SPIFFE ID. Certificates and roots are read from the source at
//! every handshake, so rotated SVIDs and bundles are picked up without a
//! restart.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sigil_proto::SpiffeId;
use sigil_proto::tls::{
    SpiffeClientVerifier, SpiffeServerVerifier, TrustRoots, authorize_exact, authorize_one_of,
};
use spiffe::{X509Source, X509Svid};

/// Picks the SVID with one SPIFFE ID.
#[derive(Debug)]
pub struct IdPicker(pub String);

impl spiffe::x509_source::SvidPicker for IdPicker {
    fn pick_svid(&self, svids: &[Arc<X509Svid>]) -> Option<usize> {
        svids
            .iter()
            .position(|s| s.spiffe_id().to_string() == self.0)
    }
}

/// An `X509Source` on `endpoint` (`unix:/path`) that serves the SVID `id`.
pub async fn source(endpoint: &str, id: &str) -> anyhow::Result<Arc<X509Source>> {
    let s = X509Source::builder()
        .endpoint(endpoint)
        .picker(IdPicker(id.to_string()))
        .build()
        .await?;
    Ok(Arc::new(s))
}

/// The source's current SVID as a rustls key.
fn certified(source: &X509Source) -> Option<Arc<CertifiedKey>> {
    let svid = source.svid().ok()?;
    let chain: Vec<CertificateDer<'static>> = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).ok()?;
    Some(Arc::new(CertifiedKey::new(chain, signing)))
}

/// Serves the source's current SVID in every handshake.
#[derive(Debug)]
pub struct SourceCert(pub Arc<X509Source>);

impl ResolvesServerCert for SourceCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        certified(&self.0)
    }
}

impl ResolvesClientCert for SourceCert {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        certified(&self.0)
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// The CAs (DER) of `td` the source holds now; none if it has no bundle
/// for `td`.
pub fn bundle_cas(source: &X509Source, td: &spiffe::TrustDomain) -> Vec<Vec<u8>> {
    source
        .bundle_set()
        .ok()
        .and_then(|set| set.get(td))
        .map(|b| {
            b.authorities()
                .iter()
                .map(|c| c.as_bytes().to_vec())
                .collect()
        })
        .unwrap_or_default()
}

/// Trust roots that follow the source's bundle for `td`.
pub fn roots(source: &Arc<X509Source>, td: &str) -> anyhow::Result<TrustRoots> {
    let td = spiffe::TrustDomain::new(td)?;
    let read = {
        let source = source.clone();
        move || bundle_cas(&source, &td)
    };
    let roots = TrustRoots::new(read())?;
    let r = roots.clone();
    let mut updates = source.updated();
    tokio::spawn(async move {
        while updates.changed().await.is_ok() {
            let _ = r.set(read());
        }
    });
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server that requires a client SVID whose SPIFFE ID is in `allowed`.
pub fn server_config(
    source: Arc<X509Source>,
    roots: TrustRoots,
    allowed: Vec<SpiffeId>,
) -> anyhow::Result<rustls::ServerConfig> {
    let verifier = Arc::new(SpiffeClientVerifier::new(roots, authorize_one_of(allowed)));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SourceCert(source)));
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(cfg)
}

/// A client that presents its SVID (if `source` is given) and accepts only
/// the server `server_id`.
pub fn client_config(
    source: Option<Arc<X509Source>>,
    roots: TrustRoots,
    server_id: SpiffeId,
) -> anyhow::Result<rustls::ClientConfig> {
    let verifier = Arc::new(SpiffeServerVerifier::new(roots, authorize_exact(server_id)));
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match source {
        Some(s) => builder.with_client_cert_resolver(Arc::new(SourceCert(s))),
        None => builder.with_no_client_auth(),
    };
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(cfg)
}
