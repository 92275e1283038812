//! The SPIFFE certificate verifiers for rustls: they check the peer's chain
//! against the trust bundle (webpki, ring's signature algorithms, validity
//! at the current time), never look at DNS names, take the leaf's single URI
//! SAN as its SPIFFE ID and let an [`Authorizer`] decide.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DistinguishedName, Error, OtherError};

use super::roots::TrustRoots;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use crate::svid_profile::{self, ProfileError};

/// Decides whether a peer's (already authenticated) SPIFFE ID may connect.
pub type Authorizer = Arc<dyn Fn(&SpiffeId) -> bool + Send + Sync>;

/// Authorizes every ID in trust domain `td`.
pub fn authorize_any_in(td: TrustDomain) -> Authorizer {
    Arc::new(move |id: &SpiffeId| id.is_member_of(&td))
}

/// Authorizes exactly `id`.
pub fn authorize_exact(id: SpiffeId) -> Authorizer {
    Arc::new(move |peer: &SpiffeId| *peer == id)
}

/// Authorizes any of `ids`.
pub fn authorize_one_of(ids: Vec<SpiffeId>) -> Authorizer {
    Arc::new(move |peer: &SpiffeId| ids.contains(peer))
}

/// The SPIFFE ID of an X.509-SVID leaf: its single URI SAN, which must be a
/// SPIFFE ID with a path.
pub fn spiffe_id_from_cert(der: &[u8]) -> Result<SpiffeId, ProfileError> {
    svid_profile::leaf_spiffe_id(der)
}

/// What both verifiers share: roots, authorizer and ring's algorithms.
#[derive(Clone)]
struct SpiffePeerCheck {
    roots: TrustRoots,
    authorizer: Authorizer,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffePeerCheck {
    fn new(roots: TrustRoots, authorizer: Authorizer) -> Self {
        SpiffePeerCheck {
            roots,
            authorizer,
            algorithms: *super::signatures::ring_algorithms(),
        }
    }

    /// Chain to the current roots for `usage` at `now`, then the single URI
    /// SAN, then the authorizer. Returns the peer's SPIFFE ID.
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<SpiffeId, Error> {
        let roots = self.roots.snapshot();
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(webpki_error)?;
        cert.verify_for_usage(
            self.algorithms.all,
            &roots.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(webpki_error)?;
        // The validator's leaf rules (X509-SVID §5.2): webpki checks no
        // key usage bits on an end-entity certificate.
        let id = svid_profile::check_peer_leaf(end_entity).map_err(|e| {
            Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })?;
        if !(self.authorizer)(&id) {
            return Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(id)
    }
}

impl fmt::Debug for SpiffePeerCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffePeerCheck")
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

/// Maps a webpki refusal to the rustls error that names it.
fn webpki_error(e: webpki::Error) -> Error {
    use webpki::Error as W;
    let cert_error = match e {
        W::BadDer | W::BadDerTime | W::TrailingData(_) => CertificateError::BadEncoding,
        W::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        W::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        W::InvalidCertValidity => CertificateError::Expired,
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        W::CertRevoked => CertificateError::Revoked,
        W::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        W::UnsupportedCriticalExtension => CertificateError::UnhandledCriticalExtension,
        #[allow(deprecated)]
        W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) => {
            CertificateError::InvalidPurpose
        }
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    Error::InvalidCertificate(cert_error)
}

/// Verifies a server's X.509-SVID (server-auth usage) for a client. The
/// server name the client dialled is ignored: the SPIFFE ID is the identity.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    check: SpiffePeerCheck,
}

impl SpiffeServerVerifier {
    pub fn new(roots: TrustRoots, authorizer: Authorizer) -> Self {
        SpiffeServerVerifier {
            check: SpiffePeerCheck::new(roots, authorizer),
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check.verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        Ok(ServerCertVerified::assertion())
    }

    crate::tls_signature_methods!(self);
}

/// Verifies a client's X.509-SVID (client-auth usage) for a server. A
/// client certificate is always required: there is no optional mode.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    check: SpiffePeerCheck,
}

impl SpiffeClientVerifier {
    pub fn new(roots: TrustRoots, authorizer: Authorizer) -> Self {
        SpiffeClientVerifier {
            check: SpiffePeerCheck::new(roots, authorizer),
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.check.verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    crate::tls_signature_methods!(self);
}
