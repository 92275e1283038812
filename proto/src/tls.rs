//! SPIFFE authentication for rustls: certificate verifiers that check the
//! peer's chain against the trust bundle (webpki, ring's signature
//! algorithms, validity at the current time), never look at DNS names, take
//! the leaf's single URI SAN as its SPIFFE ID and let an [`Authorizer`]
//! decide. The trust bundle lives in [`TrustRoots`] and can be replaced at
//! run time (CA rotation) without rebuilding any rustls config. Also here:
//! the `ServerConfig`/`ClientConfig` builders every Sigil process uses.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::NoServerSessionStorage;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, OtherError,
    ServerConfig, SignatureScheme, SupportedProtocolVersion,
};

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
struct RootSet {
    certs: Arc<Vec<CertificateDer<'static>>>,
    anchors: Vec<TrustAnchor<'static>>,
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

    fn snapshot(&self) -> Arc<RootSet> {
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
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
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

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
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

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.check.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.check.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.check.schemes()
    }
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

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.check.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.check.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.check.schemes()
    }
}

/// TLS 1.3 and 1.2, in order of preference.
const VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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

/// A client that accepts servers `verifier` accepts and presents
/// `client_cert` (chain, key) when given. Session resumption is off, so
/// every connection verifies the server against the current roots.
pub fn client_config(
    verifier: Arc<SpiffeServerVerifier>,
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, Error> {
    client_config_with_versions(verifier, client_cert, VERSIONS)
}

fn client_config_with_versions(
    verifier: Arc<SpiffeServerVerifier>,
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rcgen::{ExtendedKeyUsagePurpose, KeyPair};
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use rustls::{ClientConnection, Connection, ServerConnection};
    use time::{Duration, OffsetDateTime};

    use super::*;
    use crate::svid_profile::test_pki::{TestCa, leaf_params, self_signed};

    const SERVER_ID: &str = "spiffe://example.org/sigil/server";
    const AGENT_ID: &str = "spiffe://example.org/sigil/agent/join_token/abc";

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    fn td() -> TrustDomain {
        TrustDomain::parse("example.org").unwrap()
    }

    fn key_der(key: &KeyPair) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
    }

    /// A certificate chain and its key, ready for a rustls config.
    struct Svid {
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    }

    impl Svid {
        fn new(chain: Vec<Vec<u8>>, key: &KeyPair) -> Self {
            Svid {
                chain: chain.into_iter().map(CertificateDer::from).collect(),
                key: key_der(key),
            }
        }

        fn leaf(ca: &TestCa, id: &str) -> Self {
            let (der, key) = ca.leaf(id);
            Svid::new(vec![der], &key)
        }

        fn pair(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
            (self.chain.clone(), self.key.clone_key())
        }
    }

    /// An authorizer that records every ID it is asked about.
    fn recording(inner: Authorizer) -> (Authorizer, Arc<Mutex<Vec<SpiffeId>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let authorizer: Authorizer = Arc::new(move |peer: &SpiffeId| {
            log.lock().unwrap().push(peer.clone());
            inner(peer)
        });
        (authorizer, seen)
    }

    fn seen(log: &Arc<Mutex<Vec<SpiffeId>>>) -> Vec<String> {
        log.lock().unwrap().iter().map(|i| i.to_string()).collect()
    }

    #[derive(Debug, Default)]
    struct Outcome {
        client_err: Option<Error>,
        server_err: Option<Error>,
        /// The client's leaf as the server saw it, on success.
        client_leaf: Option<Vec<u8>>,
        version: Option<rustls::ProtocolVersion>,
    }

    impl Outcome {
        fn assert_ok(&self) {
            assert!(
                self.client_err.is_none() && self.server_err.is_none(),
                "handshake failed: {self:?}"
            );
        }

        fn server_refused(&self) -> &Error {
            self.server_err
                .as_ref()
                .unwrap_or_else(|| panic!("server accepted: {self:?}"))
        }

        fn client_refused(&self) -> &Error {
            self.client_err
                .as_ref()
                .unwrap_or_else(|| panic!("client accepted: {self:?}"))
        }
    }

    /// Moves every pending TLS record from `from` to `to`.
    fn transfer(from: &mut Connection, to: &mut Connection) -> Result<usize, Error> {
        let mut buf = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            to.read_tls(&mut rd).unwrap();
            to.process_new_packets()?;
        }
        Ok(buf.len())
    }

    /// Runs a full handshake in memory, then sends application data both
    /// ways. The client dials a name that is in no certificate: SPIFFE
    /// verification must not look at DNS names.
    fn handshake(client: ClientConfig, server: ServerConfig) -> Outcome {
        let name = ServerName::try_from("no-such-name.invalid").unwrap();
        let mut c = Connection::Client(ClientConnection::new(Arc::new(client), name).unwrap());
        let mut s = Connection::Server(ServerConnection::new(Arc::new(server)).unwrap());
        let mut out = Outcome::default();
        for _ in 0..20 {
            if let Err(e) = transfer(&mut c, &mut s) {
                out.server_err = Some(e);
                out.client_err = transfer(&mut s, &mut c).err();
                return out;
            }
            if let Err(e) = transfer(&mut s, &mut c) {
                out.client_err = Some(e);
                out.server_err = transfer(&mut c, &mut s).err();
                return out;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
        }
        assert!(
            !c.is_handshaking() && !s.is_handshaking(),
            "handshake stalled"
        );

        use std::io::{Read, Write};
        c.writer().write_all(b"ping").unwrap();
        transfer(&mut c, &mut s).unwrap();
        let mut got = [0u8; 4];
        s.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        s.writer().write_all(b"pong").unwrap();
        transfer(&mut s, &mut c).unwrap();
        c.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");

        out.client_leaf = s
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|leaf| leaf.to_vec());
        out.version = c.protocol_version();
        assert_eq!(out.version, s.protocol_version());
        out
    }

    /// A server presenting `server` and requiring client SVIDs from
    /// `roots` accepted by `authorizer`.
    fn server_cfg(server: &Svid, roots: &TrustRoots, authorizer: Authorizer) -> ServerConfig {
        let verifier = Arc::new(SpiffeClientVerifier::new(roots.clone(), authorizer));
        let (chain, key) = server.pair();
        server_config(chain, key, verifier).unwrap()
    }

    fn client_cfg(
        client: Option<&Svid>,
        roots: &TrustRoots,
        authorizer: Authorizer,
    ) -> ClientConfig {
        let verifier = Arc::new(SpiffeServerVerifier::new(roots.clone(), authorizer));
        client_config(verifier, client.map(Svid::pair)).unwrap()
    }

    /// The profile rule carried by a refusal for a bad SPIFFE ID SAN.
    fn profile_error(e: &Error) -> ProfileError {
        match e {
            Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => inner
                .downcast_ref::<ProfileError>()
                .unwrap_or_else(|| panic!("not a profile error: {e:?}"))
                .clone(),
            other => panic!("not a profile error: {other:?}"),
        }
    }

    fn is_cert_error(e: &Error, want: fn(&CertificateError) -> bool) -> bool {
        matches!(e, Error::InvalidCertificate(ce) if want(ce))
    }

    /// One CA, its roots, a server SVID and an agent SVID.
    struct World {
        ca: TestCa,
        roots: TrustRoots,
        server: Svid,
        agent: Svid,
    }

    fn world() -> World {
        let ca = TestCa::new("example.org");
        let roots = TrustRoots::new(vec![ca.der.clone()]).unwrap();
        let server = Svid::leaf(&ca, SERVER_ID);
        let agent = Svid::leaf(&ca, AGENT_ID);
        World {
            ca,
            roots,
            server,
            agent,
        }
    }

    /// Server expects agents of example.org; client expects the server ID.
    /// Returns the outcome and what each side's authorizer saw.
    fn agent_to_server(w: &World, client: Option<&Svid>) -> (Outcome, Vec<String>, Vec<String>) {
        let (server_auth, server_seen) = recording(authorize_any_in(td()));
        let (client_auth, client_seen) = recording(authorize_exact(id(SERVER_ID)));
        let out = handshake(
            client_cfg(client, &w.roots, client_auth),
            server_cfg(&w.server, &w.roots, server_auth),
        );
        (out, seen(&server_seen), seen(&client_seen))
    }

    #[test]
    fn mutual_spiffe_tls_13() {
        let w = world();
        let (out, server_saw, client_saw) = agent_to_server(&w, Some(&w.agent));
        out.assert_ok();
        assert_eq!(out.version, Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(server_saw, vec![AGENT_ID]);
        assert_eq!(client_saw, vec![SERVER_ID]);
        let leaf = out.client_leaf.unwrap();
        assert_eq!(spiffe_id_from_cert(&leaf).unwrap().as_str(), AGENT_ID);
    }

    #[test]
    fn mutual_spiffe_tls_12() {
        let w = world();
        let (server_auth, server_seen) = recording(authorize_any_in(td()));
        let (client_auth, client_seen) = recording(authorize_exact(id(SERVER_ID)));
        let verifier = Arc::new(SpiffeServerVerifier::new(w.roots.clone(), client_auth));
        let client =
            client_config_with_versions(verifier, Some(w.agent.pair()), &[&rustls::version::TLS12])
                .unwrap();
        let out = handshake(client, server_cfg(&w.server, &w.roots, server_auth));
        out.assert_ok();
        assert_eq!(out.version, Some(rustls::ProtocolVersion::TLSv1_2));
        assert_eq!(seen(&server_seen), vec![AGENT_ID]);
        assert_eq!(seen(&client_seen), vec![SERVER_ID]);
    }

    #[test]
    fn chain_through_an_intermediate() {
        let root = TestCa::new("example.org");
        let intermediate = root.intermediate("example.org");
        let roots = TrustRoots::new(vec![root.der.clone()]).unwrap();
        let (leaf, key) = intermediate.leaf(AGENT_ID);
        let agent = Svid::new(vec![leaf, intermediate.der.clone()], &key);
        let (sleaf, skey) = intermediate.leaf(SERVER_ID);
        let server = Svid::new(vec![sleaf, intermediate.der.clone()], &skey);
        let out = handshake(
            client_cfg(Some(&agent), &roots, authorize_exact(id(SERVER_ID))),
            server_cfg(&server, &roots, authorize_exact(id(AGENT_ID))),
        );
        out.assert_ok();

        // Without the intermediate in the chain, the leaf has no path.
        let (leaf, key) = intermediate.leaf(AGENT_ID);
        let bare = Svid::new(vec![leaf], &key);
        let out = handshake(
            client_cfg(Some(&bare), &roots, authorize_exact(id(SERVER_ID))),
            server_cfg(&server, &roots, authorize_exact(id(AGENT_ID))),
        );
        assert!(is_cert_error(out.server_refused(), |e| matches!(
            e,
            CertificateError::UnknownIssuer
        )));
    }

    #[test]
    fn client_cert_from_another_ca_is_refused() {
        let w = world();
        let other = TestCa::new("example.org");
        let stranger = Svid::leaf(&other, AGENT_ID);
        let (out, server_saw, _) = agent_to_server(&w, Some(&stranger));
        assert!(
            is_cert_error(out.server_refused(), |e| matches!(
                e,
                CertificateError::UnknownIssuer
            )),
            "{out:?}"
        );
        assert!(
            server_saw.is_empty(),
            "authorizer must not run: {server_saw:?}"
        );
    }

    #[test]
    fn ca_forging_our_ca_name_is_refused() {
        // A different key under the very same subject name as the real CA.
        let params = crate::svid_profile::test_pki::ca_params("example.org");
        let real = TestCa::from_params(params.clone());
        let forged = TestCa::from_params(params);
        let w = World {
            roots: TrustRoots::new(vec![real.der.clone()]).unwrap(),
            server: Svid::leaf(&real, SERVER_ID),
            agent: Svid::leaf(&forged, AGENT_ID),
            ca: real,
        };
        let (out, server_saw, _) = agent_to_server(&w, Some(&w.agent));
        assert!(
            is_cert_error(out.server_refused(), |e| matches!(
                e,
                CertificateError::BadSignature
            )),
            "{out:?}"
        );
        assert!(server_saw.is_empty());
    }

    #[test]
    fn self_signed_leaf_is_refused() {
        let w = world();
        let (der, key) = self_signed(&leaf_params(&[AGENT_ID]));
        let forged = Svid::new(vec![der], &key);
        let (out, server_saw, _) = agent_to_server(&w, Some(&forged));
        assert!(is_cert_error(out.server_refused(), |e| matches!(
            e,
            CertificateError::UnknownIssuer
        )));
        assert!(server_saw.is_empty());
    }

    #[test]
    fn expired_client_cert_is_refused() {
        let w = world();
        let mut p = leaf_params(&[AGENT_ID]);
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::hours(2);
        p.not_after = now - Duration::hours(1);
        let (der, key) = w.ca.sign(&p);
        let expired = Svid::new(vec![der], &key);
        let (out, _, _) = agent_to_server(&w, Some(&expired));
        assert!(
            is_cert_error(out.server_refused(), |e| matches!(
                e,
                CertificateError::ExpiredContext { .. }
            )),
            "{out:?}"
        );

        let mut p = leaf_params(&[AGENT_ID]);
        p.not_before = now + Duration::hours(1);
        p.not_after = now + Duration::hours(2);
        let (der, key) = w.ca.sign(&p);
        let future = Svid::new(vec![der], &key);
        let (out, _, _) = agent_to_server(&w, Some(&future));
        assert!(is_cert_error(out.server_refused(), |e| matches!(
            e,
            CertificateError::NotValidYetContext { .. }
        )));
    }

    #[test]
    fn unauthorized_client_id_is_refused() {
        let w = world();
        let intruder_id = "spiffe://example.org/workload/not-an-agent";
        let intruder = Svid::leaf(&w.ca, intruder_id);
        let (server_auth, server_seen) = recording(authorize_exact(id(AGENT_ID)));
        let out = handshake(
            client_cfg(Some(&intruder), &w.roots, authorize_exact(id(SERVER_ID))),
            server_cfg(&w.server, &w.roots, server_auth),
        );
        assert!(is_cert_error(out.server_refused(), |e| matches!(
            e,
            CertificateError::ApplicationVerificationFailure
        )));
        assert_eq!(seen(&server_seen), vec![intruder_id]);
        // The client learns it was refused.
        assert!(out.client_err.is_some(), "{out:?}");
    }

    #[test]
    fn unauthorized_server_id_is_refused() {
        let w = world();
        let (client_auth, client_seen) =
            recording(authorize_exact(id("spiffe://example.org/somebody/else")));
        let out = handshake(
            client_cfg(Some(&w.agent), &w.roots, client_auth),
            server_cfg(&w.server, &w.roots, authorize_any_in(td())),
        );
        assert!(is_cert_error(out.client_refused(), |e| matches!(
            e,
            CertificateError::ApplicationVerificationFailure
        )));
        assert_eq!(seen(&client_seen), vec![SERVER_ID]);
    }

    /// SPIFFE X509-SVID (2026): a leaf whose URI SAN is a bare trust-domain
    /// ID is no SVID, on either side of the handshake, whatever the
    /// authorizer would allow.
    #[test]
    fn server_with_a_trust_domain_id_is_refused() {
        let w = world();
        let root_id = Svid::leaf(&w.ca, "spiffe://example.org");
        let (client_auth, client_seen) = recording(authorize_any_in(td()));
        let out = handshake(
            client_cfg(Some(&w.agent), &w.roots, client_auth),
            server_cfg(&root_id, &w.roots, authorize_any_in(td())),
        );
        assert_eq!(
            profile_error(out.client_refused()),
            ProfileError::LeafWithoutPath {
                id: "spiffe://example.org".into()
            }
        );
        assert!(seen(&client_seen).is_empty(), "the authorizer never ran");
    }

    #[test]
    fn server_cert_from_another_ca_is_refused() {
        let w = world();
        let other = TestCa::new("example.org");
        let impostor = Svid::leaf(&other, SERVER_ID);
        let out = handshake(
            client_cfg(Some(&w.agent), &w.roots, authorize_exact(id(SERVER_ID))),
            server_cfg(&impostor, &w.roots, authorize_any_in(td())),
        );
        assert!(is_cert_error(out.client_refused(), |e| matches!(
            e,
            CertificateError::UnknownIssuer
        )));
    }

    #[test]
    fn missing_client_cert_is_refused() {
        let w = world();
        let (out, server_saw, _) = agent_to_server(&w, None);
        assert!(
            matches!(out.server_refused(), Error::NoCertificatesPresented),
            "{out:?}"
        );
        assert!(server_saw.is_empty());
        // Under TLS 1.2 as well.
        let verifier = Arc::new(SpiffeServerVerifier::new(
            w.roots.clone(),
            authorize_exact(id(SERVER_ID)),
        ));
        let client =
            client_config_with_versions(verifier, None, &[&rustls::version::TLS12]).unwrap();
        let out = handshake(
            client,
            server_cfg(&w.server, &w.roots, authorize_any_in(td())),
        );
        assert!(matches!(
            out.server_refused(),
            Error::NoCertificatesPresented
        ));
    }

    #[test]
    fn client_cert_needs_exactly_one_uri_san() {
        let w = world();
        let (der, key) =
            w.ca.sign(&leaf_params(&[AGENT_ID, "spiffe://example.org/second"]));
        let two = Svid::new(vec![der], &key);
        let (out, server_saw, _) = agent_to_server(&w, Some(&two));
        assert_eq!(
            profile_error(out.server_refused()),
            ProfileError::UriSanCount {
                role: crate::svid_profile::ROLE_LEAF,
                found: 2
            }
        );
        // The log line names the rule.
        assert!(
            out.server_refused().to_string().contains("UriSanCount"),
            "{}",
            out.server_refused()
        );
        assert!(server_saw.is_empty());

        let mut p = leaf_params(&[]);
        p.subject_alt_names = vec![crate::svid_profile::test_pki::dns("agent.example.org")];
        let (der, key) = w.ca.sign(&p);
        let none = Svid::new(vec![der], &key);
        let (out, server_saw, _) = agent_to_server(&w, Some(&none));
        assert_eq!(
            profile_error(out.server_refused()),
            ProfileError::UriSanCount {
                role: crate::svid_profile::ROLE_LEAF,
                found: 0
            }
        );
        assert!(server_saw.is_empty());

        // A trust domain ID is not a workload identity.
        let root_id = Svid::leaf(&w.ca, "spiffe://example.org");
        let (out, _, _) = agent_to_server(&w, Some(&root_id));
        assert_eq!(
            profile_error(out.server_refused()),
            ProfileError::LeafWithoutPath {
                id: "spiffe://example.org".into()
            }
        );
    }

    #[test]
    fn key_usage_is_enforced() {
        let w = world();
        // A leaf only good for serverAuth cannot authenticate a client.
        let mut p = leaf_params(&[AGENT_ID]);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let (der, key) = w.ca.sign(&p);
        let server_only = Svid::new(vec![der], &key);
        let (out, _, _) = agent_to_server(&w, Some(&server_only));
        assert!(is_cert_error(out.server_refused(), |e| matches!(
            e,
            CertificateError::InvalidPurpose
        )));
        // A CA certificate (even one with the right URI SAN form) is not a
        // leaf.
        let mut ca_leaf_params = crate::svid_profile::test_pki::ca_params("example.org");
        ca_leaf_params.subject_alt_names = vec![crate::svid_profile::test_pki::uri(AGENT_ID)];
        let (der, key) = w.ca.sign(&ca_leaf_params);
        let ca_leaf = Svid::new(vec![der], &key);
        let (out, server_saw, _) = agent_to_server(&w, Some(&ca_leaf));
        assert!(
            matches!(
                out.server_refused(),
                Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))
                    if inner.to_string().contains("CaUsedAsEndEntity")
            ),
            "{out:?}"
        );
        assert!(server_saw.is_empty());
    }

    /// X509-SVID §5.2: a validator refuses a leaf with keyCertSign or
    /// cRLSign, on both sides, even when cA=false and the chain, the URI SAN
    /// and the authorizer are all fine (webpki does not look at these bits
    /// on an end entity). The same CA's correct leaf is accepted.
    #[test]
    fn leaf_with_a_signing_key_usage_is_refused_by_both_verifiers() {
        let w = world();
        for (usage, name) in [
            (rcgen::KeyUsagePurpose::KeyCertSign, "keyCertSign"),
            (rcgen::KeyUsagePurpose::CrlSign, "cRLSign"),
        ] {
            let mut p = leaf_params(&[AGENT_ID]);
            p.key_usages.push(usage.clone());
            let (der, key) = w.ca.sign(&p);
            let bad = Svid::new(vec![der], &key);
            let want = ProfileError::LeafKeyUsageForbidden { usage: name };
            // As a client certificate (the agent API's server side).
            let (out, server_saw, _) = agent_to_server(&w, Some(&bad));
            assert_eq!(profile_error(out.server_refused()), want);
            assert!(server_saw.is_empty());
            // As a server certificate (the agent's and helpers' client side).
            let mut p = leaf_params(&[SERVER_ID]);
            p.key_usages.push(usage);
            let (der, key) = w.ca.sign(&p);
            let bad_server = Svid::new(vec![der], &key);
            let out = handshake(
                client_cfg(Some(&w.agent), &w.roots, authorize_exact(id(SERVER_ID))),
                server_cfg(&bad_server, &w.roots, authorize_any_in(td())),
            );
            assert_eq!(profile_error(out.client_refused()), want);
        }
        let (out, server_saw, client_saw) = agent_to_server(&w, Some(&w.agent));
        out.assert_ok();
        assert_eq!(server_saw, vec![AGENT_ID]);
        assert_eq!(client_saw, vec![SERVER_ID]);
    }

    #[test]
    fn roots_can_be_replaced_at_run_time() {
        let w = world();
        let new_ca = TestCa::new("example.org");
        let new_agent = Svid::leaf(&new_ca, AGENT_ID);
        let server_cfg = Arc::new(server_cfg(&w.server, &w.roots, authorize_any_in(td())));
        let client = |svid: &Svid| {
            // The client trusts both CAs so only the server's view matters.
            let both = TrustRoots::new(vec![w.ca.der.clone(), new_ca.der.clone()]).unwrap();
            client_cfg(Some(svid), &both, authorize_exact(id(SERVER_ID)))
        };

        handshake(client(&w.agent), (*server_cfg).clone()).assert_ok();
        let out = handshake(client(&new_agent), (*server_cfg).clone());
        assert!(out.server_err.is_some(), "new CA not trusted yet: {out:?}");

        // Rotate: the same server config now trusts only the new CA.
        w.roots.set(vec![new_ca.der.clone()]).unwrap();
        assert_eq!(w.roots.get().len(), 1);
        assert_eq!(w.roots.get()[0].as_ref(), new_ca.der.as_slice());
        handshake(client(&new_agent), (*server_cfg).clone()).assert_ok();
        let out = handshake(client(&w.agent), (*server_cfg).clone());
        assert!(is_cert_error(out.server_refused(), |e| matches!(
            e,
            CertificateError::UnknownIssuer
        )));

        // A bad replacement is refused and leaves the roots as they were.
        assert_eq!(w.roots.set(vec![]), Err(TlsError::NoRoots));
        assert!(matches!(
            w.roots.set(vec![b"garbage".to_vec()]),
            Err(TlsError::BadRoot { index: 0, .. })
        ));
        assert_eq!(w.roots.get()[0].as_ref(), new_ca.der.as_slice());
    }

    #[test]
    fn every_connection_is_verified_again() {
        let w = world();
        let (server_auth, server_seen) = recording(authorize_any_in(td()));
        let (client_auth, client_seen) = recording(authorize_exact(id(SERVER_ID)));
        let server = server_cfg(&w.server, &w.roots, server_auth);
        let client = client_cfg(Some(&w.agent), &w.roots, client_auth);
        for _ in 0..2 {
            handshake(client.clone(), server.clone()).assert_ok();
        }
        assert_eq!(seen(&server_seen), vec![AGENT_ID, AGENT_ID]);
        assert_eq!(seen(&client_seen), vec![SERVER_ID, SERVER_ID]);
    }

    #[test]
    fn anonymous_server_accepts_clients_without_certs() {
        let w = world();
        let (chain, key) = w.server.pair();
        let server = server_config_allowing_anonymous_clients(chain, key).unwrap();
        let out = handshake(
            client_cfg(None, &w.roots, authorize_exact(id(SERVER_ID))),
            server,
        );
        out.assert_ok();
        assert!(out.client_leaf.is_none());
    }

    #[test]
    fn client_verifier_always_requires_a_cert() {
        let v = SpiffeClientVerifier::new(
            TrustRoots::new(vec![TestCa::new("example.org").der]).unwrap(),
            authorize_any_in(td()),
        );
        assert!(v.offer_client_auth());
        assert!(v.client_auth_mandatory());
        assert!(v.root_hint_subjects().is_empty());
        assert!(!v.supported_verify_schemes().is_empty());
    }

    #[test]
    fn authorizers() {
        let web = id("spiffe://example.org/web");
        let db = id("spiffe://example.org/db");
        let foreign = id("spiffe://other.org/web");
        let any = authorize_any_in(td());
        assert!(any(&web) && any(&db) && !any(&foreign));
        let exact = authorize_exact(web.clone());
        assert!(exact(&web) && !exact(&db) && !exact(&foreign));
        let one_of = authorize_one_of(vec![web.clone(), foreign.clone()]);
        assert!(one_of(&web) && one_of(&foreign) && !one_of(&db));
        assert!(!authorize_one_of(vec![])(&web));
    }

    #[test]
    fn trust_roots_validate_their_input() {
        assert_eq!(TrustRoots::new(vec![]).unwrap_err(), TlsError::NoRoots);
        let ca = TestCa::new("example.org");
        let err = TrustRoots::new(vec![ca.der.clone(), b"junk".to_vec()]).unwrap_err();
        assert!(matches!(err, TlsError::BadRoot { index: 1, .. }), "{err:?}");
        let roots = TrustRoots::new(vec![ca.der.clone()]).unwrap();
        assert_eq!(format!("{roots:?}"), "TrustRoots { certs: 1 }");
    }

    #[test]
    fn spiffe_id_from_cert_reads_the_single_uri_san() {
        let ca = TestCa::new("example.org");
        let (leaf, _) = ca.leaf(AGENT_ID);
        assert_eq!(spiffe_id_from_cert(&leaf).unwrap().as_str(), AGENT_ID);
        let (two, _) = ca.sign(&leaf_params(&[AGENT_ID, SERVER_ID]));
        assert_eq!(
            spiffe_id_from_cert(&two).unwrap_err(),
            ProfileError::UriSanCount {
                role: crate::svid_profile::ROLE_LEAF,
                found: 2
            }
        );
        assert!(matches!(
            spiffe_id_from_cert(b"junk"),
            Err(ProfileError::NotX509 { .. })
        ));
    }
}
