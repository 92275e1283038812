//! The peer check of one proxied connection: it reads the SPIFFE ID of the
//! presented leaf, picks the bundle of that ID's trust domain (so a CA of
//! one trust domain can never vouch for an ID of another) and hands the
//! verification to the shared SPIFFE verifiers of `sigil_proto::tls`
//! (chain, validity, X.509-SVID leaf rules, then the allow-list). It writes
//! down what it saw (the class of the result, the presented certificate's
//! facts, the verified ID) for the connection's metrics and refusal log; a
//! check is made per connection for that reason.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DistinguishedName, Error, OtherError};
use sigil_proto::spiffe_id::SpiffeId;
use sigil_proto::tls::peer_result::{PeerResult, classify};
use sigil_proto::tls::verdict::CertFacts;
use sigil_proto::tls::{
    Authorizer, SpiffeClientVerifier, SpiffeServerVerifier, spiffe_id_from_cert,
};

use super::source::BundleSet;

/// What the check saw of the peer's certificate.
#[derive(Debug, Clone)]
pub struct Seen {
    pub result: PeerResult,
    /// Why, in words (the verifier's error).
    pub detail: String,
    pub facts: Option<CertFacts>,
    /// The peer's ID once its chain verified (`ok`, `id_not_allowed`).
    pub verified_id: Option<SpiffeId>,
}

/// One connection's peer check (as a client or a server verifier).
pub struct PeerCheck {
    bundles: BundleSet,
    authorizer: Authorizer,
    seen: Mutex<Option<Seen>>,
}

impl std::fmt::Debug for PeerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCheck")
            .field("bundles", &self.bundles)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum Side {
    /// We are the server checking a client.
    Client,
    /// We are the client checking a server.
    Server,
}

impl PeerCheck {
    pub fn new(bundles: BundleSet, authorizer: Authorizer) -> Arc<PeerCheck> {
        Arc::new(PeerCheck {
            bundles,
            authorizer,
            seen: Mutex::new(None),
        })
    }

    /// What the check saw; `None` when no certificate reached it.
    pub fn seen(&self) -> Option<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, seen: Seen) {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(seen);
    }

    fn check(
        &self,
        side: Side,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Error> {
        let facts = CertFacts::of(end_entity);
        let refuse = |result, detail: String, err: Error, verified_id| {
            self.record(Seen {
                result,
                detail,
                facts: facts.clone(),
                verified_id,
            });
            Err(err)
        };
        let id = match spiffe_id_from_cert(end_entity) {
            Ok(id) => id,
            Err(e) => {
                let detail = e.to_string();
                let err =
                    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))));
                return refuse(PeerResult::BadSan, detail, err, None);
            }
        };
        let td = id.trust_domain();
        let Some(roots) = self.bundles.roots_for(&td) else {
            return refuse(
                PeerResult::WrongTrustDomain,
                format!(
                    "{id} is of trust domain {td}, for which no bundle is held (held: {:?})",
                    self.bundles.trust_domains()
                ),
                Error::InvalidCertificate(CertificateError::UnknownIssuer),
                None,
            );
        };
        let result = match side {
            Side::Client => SpiffeClientVerifier::new(roots, self.authorizer.clone())
                .verify_client_cert(end_entity, intermediates, now)
                .map(|_| ()),
            Side::Server => SpiffeServerVerifier::new(roots, self.authorizer.clone())
                .verify_server_cert(
                    end_entity,
                    intermediates,
                    &ServerName::try_from("spiffe.invalid")
                        .map_err(|_| Error::HandshakeNotComplete)?,
                    &[],
                    now,
                )
                .map(|_| ()),
        };
        match result {
            Ok(()) => {
                self.record(Seen {
                    result: PeerResult::Ok,
                    detail: String::new(),
                    facts,
                    verified_id: Some(id),
                });
                Ok(())
            }
            Err(e) => {
                let class = classify(&e);
                let detail = match class {
                    PeerResult::IdNotAllowed => format!("{id} is not on the allow-list"),
                    _ => e.to_string(),
                };
                let verified = (class == PeerResult::IdNotAllowed).then_some(id);
                refuse(class, detail, e, verified)
            }
        }
    }
}

impl ClientCertVerifier for PeerCheck {
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
        self.check(Side::Client, end_entity, intermediates, now)?;
        Ok(ClientCertVerified::assertion())
    }

    sigil_proto::tls_signature_methods!(self);
}

impl ServerCertVerifier for PeerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check(Side::Server, end_entity, intermediates, now)?;
        Ok(ServerCertVerified::assertion())
    }

    sigil_proto::tls_signature_methods!(self);
}
