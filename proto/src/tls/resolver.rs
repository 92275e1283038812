//! The certificate a TLS endpoint presents, taken from a `watch` channel of
//! the current SVID (chain + key) at every handshake: [`SvidResolver`] is a
//! rustls server- and client-certificate resolver, so a rotated SVID is
//! served on the next handshake without rebuilding any config. Behind
//! feature `tls-resolver` (it needs tokio's `watch`).

use std::fmt;
use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

/// The rustls form of an SVID: its DER chain (leaf first) and a signing key
/// made from `key` with ring.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'_>,
) -> Result<Arc<CertifiedKey>, rustls::Error> {
    let signing = rustls::crypto::ring::sign::any_supported_type(key)?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// Presents whatever SVID its channel holds now, as a server certificate
/// and as a client certificate.
#[derive(Clone)]
pub struct SvidResolver {
    current: watch::Receiver<Arc<CertifiedKey>>,
}

impl SvidResolver {
    /// Presents the value of `current` at each handshake.
    pub fn new(current: watch::Receiver<Arc<CertifiedKey>>) -> Self {
        SvidResolver { current }
    }

    /// Always presents `key` (a certificate that never rotates, e.g. the
    /// bundle endpoint's `https_web` one).
    pub fn fixed(key: Arc<CertifiedKey>) -> Self {
        // A receiver keeps the last value after its sender is dropped.
        Self::new(watch::channel(key).1)
    }

    /// The SVID presented now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.borrow().clone()
    }
}

impl fmt::Debug for SvidResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvidResolver")
            .field("chain_len", &self.current.borrow().cert.len())
            .finish()
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
