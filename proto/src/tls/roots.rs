//! The trust bundle a SPIFFE verifier checks peers against: [`TrustRoots`],
//! shared by every verifier built from it and replaceable at run time (CA
//! rotation) without rebuilding any rustls config.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::pki_types::{CertificateDer, TrustAnchor};

/// Why a trust bundle could not be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("the trust bundle has no CA certificates: at least one trust anchor is required")]
    NoRoots,
    #[error("trust bundle certificate {index} cannot be used as a trust anchor: {reason}")]
    BadRoot { index: usize, reason: String },
}

/// One installed trust bundle: the certificates and the anchors made from
/// them, swapped together.
pub(super) struct RootSet {
    certs: Arc<Vec<CertificateDer<'static>>>,
    pub(super) anchors: Vec<TrustAnchor<'static>>,
}

impl RootSet {
    fn new(certs: Vec<Vec<u8>>) -> Result<Self, TlsError> {
        if certs.is_empty() {
            return Err(TlsError::NoRoots);
        }
        let certs: Vec<CertificateDer<'static>> =
            certs.into_iter().map(CertificateDer::from).collect();
        let anchors = certs
            .iter()
            .enumerate()
            .map(|(index, cert)| {
                webpki::anchor_from_trusted_cert(cert)
                    .map(|a| a.to_owned())
                    .map_err(|e| TlsError::BadRoot {
                        index,
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(RootSet {
            certs: Arc::new(certs),
            anchors,
        })
    }
}

/// The CA certificates peers must chain to, shared by every verifier built
/// from it; [`TrustRoots::set`] takes effect for the next handshake.
#[derive(Clone)]
pub struct TrustRoots {
    inner: Arc<RwLock<Arc<RootSet>>>,
}

impl TrustRoots {
    /// Trust the DER CA certificates `certs` (at least one).
    pub fn new(certs: Vec<Vec<u8>>) -> Result<Self, TlsError> {
        Ok(TrustRoots {
            inner: Arc::new(RwLock::new(Arc::new(RootSet::new(certs)?))),
        })
    }

    /// Replaces the trusted certificates. On error the old ones stay.
    pub fn set(&self, certs: Vec<Vec<u8>>) -> Result<(), TlsError> {
        let next = Arc::new(RootSet::new(certs)?);
        // The lock only guards an Arc swap, which cannot be left half done,
        // so a poisoned lock still holds a consistent value.
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(())
    }

    /// The certificates currently trusted.
    pub fn get(&self) -> Arc<Vec<CertificateDer<'static>>> {
        self.snapshot().certs.clone()
    }

    pub(super) fn snapshot(&self) -> Arc<RootSet> {
        // See `set`: a poisoned lock still holds a consistent value.
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl fmt::Debug for TrustRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustRoots")
            .field("certs", &self.snapshot().certs.len())
            .finish()
    }
}
