//! Talking to the server's agent API over mutual TLS: the server must present
//! `spiffe://<td>/sigil/server` chaining to the bundle; the agent presents its
//! current agent SVID (none while attesting). A channel is reused until the
//! agent's SVID changes. Attestation runs on a channel of exactly one TLS
//! connection ([`connect_for_attestation`]), whose channel binding x509pop
//! answers are bound to.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use sigil_proto::TrustDomain;
use sigil_proto::agent_api::{self as pb, agent_api_client::AgentApiClient};
use sigil_proto::attestation::{ChannelBinding, x509pop_channel_binding};
use sigil_proto::tls::verdict::{self, BundleSource};
use sigil_proto::tls::{SpiffeServerVerifier, TrustRoots, authorize_exact, client_config};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, watch};
use tonic::transport::{Channel, Endpoint};

use crate::cache::{
    CsrRequest, JwtMinter, MintError, MintFuture, MintedJwt, SignError, SignOutcome, SignResult,
    SvidSigner, TrustBundle,
};
use crate::identity::AgentIdentity;
use crate::node_attestor::NodeAttestorClient;
use crate::servers::Servers;

mod failover;
pub use failover::{connect_any, one_or_all};

/// Largest message accepted from the server.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Accepts any server certificate (handshake signatures are still checked).
/// Only for `insecure_bootstrap`: the first attestation of an agent that was
/// given no bundle. Never used once a bundle is known.
#[derive(Debug)]
struct InsecureBootstrapVerifier;

impl ServerCertVerifier for InsecureBootstrapVerifier {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    sigil_proto::tls_signature_methods!(self);
}

fn client_cert(id: &AgentIdentity) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    (
        id.chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_pkcs8.clone())),
    )
}

/// Checks the server like [`SpiffeServerVerifier`] and turns a refusal into
/// its [`verdict::Diagnosis`] (cause and fix), carried in the rustls error to the
/// connect error the agent logs.
#[derive(Debug)]
struct DiagnosingVerifier {
    inner: SpiffeServerVerifier,
    td: TrustDomain,
    source: BundleSource,
}

impl ServerCertVerifier for DiagnosingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, name, ocsp, now)
            .map_err(|e| {
                let d = verdict::diagnose_server_cert(&e, end_entity, &self.td, self.source, now);
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                    rustls::OtherError(Arc::new(d)),
                ))
            })
    }
    sigil_proto::tls_signature_methods!(self);
}

/// A TLS client config that checks the server against `roots` (from
/// `trust_bundle_path` while attesting, `ident` is `None`; the synced
/// bundle once the agent has an SVID). A refused server certificate fails
/// with its [`verdict::Diagnosis`].
pub fn tls_config(
    roots: &TrustRoots,
    td: &TrustDomain,
    ident: Option<&AgentIdentity>,
) -> anyhow::Result<rustls::ClientConfig> {
    let source = if ident.is_some() {
        BundleSource::Synced
    } else {
        BundleSource::File
    };
    tls_config_for(roots, td, ident, source)
}

/// [`tls_config`] with the roots' `source` named (a stored bundle is
/// [`BundleSource::Synced`] even before the agent has an SVID).
pub fn tls_config_for(
    roots: &TrustRoots,
    td: &TrustDomain,
    ident: Option<&AgentIdentity>,
    source: BundleSource,
) -> anyhow::Result<rustls::ClientConfig> {
    let server_id = td.spiffe_id("/sigil/server")?;
    let verifier = Arc::new(DiagnosingVerifier {
        inner: SpiffeServerVerifier::new(roots.clone(), authorize_exact(server_id)),
        td: td.clone(),
        source,
    });
    let mut cfg = client_config(verifier, ident.map(client_cert))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// A TLS client config that trusts any server: insecure bootstrap only.
pub fn insecure_bootstrap_config() -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(InsecureBootstrapVerifier))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// A failed connection to `addr`, with its [`verdict::Diagnosis`] (cause and fix)
/// in place of rustls' or the socket's words when it has one.
fn translated<E>(addr: &str, e: E) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let context = format!("connecting to the server at {addr}");
    match verdict::diagnose_connect_error(addr, &e) {
        Some(d) => anyhow::Error::new(d).context(context),
        None => anyhow::Error::new(e).context(context),
    }
}

/// Opens a channel to `addr` (`host:port`).
pub async fn connect(
    addr: &str,
    cfg: rustls::ClientConfig,
) -> anyhow::Result<AgentApiClient<Channel>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let addr = addr.to_string();
    let target = addr.clone();
    let channel = Endpoint::from_static("http://sigil-server.invalid")
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            let addr = addr.clone();
            async move {
                let tcp = TcpStream::connect(&addr).await?;
                let _ = tcp.set_nodelay(true);
                // Names are not checked: the verifier checks the SPIFFE ID.
                let name =
                    ServerName::try_from("sigil-server.invalid").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| translated(&target, e))?;
    Ok(AgentApiClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Opens a channel to `addr` (`host:port`) that runs over one TLS
/// connection only, and returns it with that connection's channel binding.
/// Should the connection drop, the channel fails rather than reconnecting
/// (a new connection would have another binding): attest again.
pub async fn connect_for_attestation(
    addr: &str,
    cfg: rustls::ClientConfig,
) -> anyhow::Result<(AgentApiClient<Channel>, ChannelBinding)> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tls = tokio::time::timeout(Duration::from_secs(10), async {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        // Names are not checked: the verifier checks the SPIFFE ID.
        let name = ServerName::try_from("sigil-server.invalid").map_err(std::io::Error::other)?;
        connector.connect(name, tcp).await
    })
    .await
    .map_err(|_| anyhow::anyhow!("connecting to the server at {addr}: timed out after 10 s"))?
    .map_err(|e| translated(addr, e))?;
    let binding = x509pop_channel_binding(tls.get_ref().1)
        .with_context(|| format!("exporting the channel binding of the connection to {addr}"))?;
    let once = Arc::new(std::sync::Mutex::new(Some(tls)));
    let channel = Endpoint::from_static("http://sigil-server.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let stream = once.lock().ok().and_then(|mut s| s.take());
            async move {
                match stream {
                    Some(tls) => Ok(TokioIo::new(tls)),
                    None => Err(std::io::Error::other(
                        "the attestation connection closed; attestation must start again on a \
                         new connection",
                    )),
                }
            }
        }))
        .await
        .with_context(|| format!("connecting to the server at {addr}"))?;
    Ok((
        AgentApiClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        binding,
    ))
}

/// The domain form of the server's bundle message. JWT authorities that
/// cannot be published (no `kid`, a `kid` already seen, a key type a
/// bundle cannot carry) are left out, with a warning.
pub fn trust_bundle(b: pb::Bundle) -> TrustBundle {
    TrustBundle {
        x509_authorities: b.x509_authorities,
        tainted_key_ids: b.tainted_key_ids,
        sequence: b.sequence,
        jwt_authorities: crate::cache::usable_jwt_keys(
            b.jwt_authorities
                .into_iter()
                .map(|a| sigil_proto::JwtKey {
                    kid: a.key_id,
                    spki_der: a.public_key,
                })
                .collect(),
        ),
        tainted_jwt_key_ids: b.tainted_jwt_key_ids,
    }
}

/// The server's answer to an attestation that failed: `code` tells a
/// refusal (a spent token, an unknown node) from an outage.
#[derive(Debug, thiserror::Error)]
#[error("node attestation refused: {message}")]
pub struct AttestRefused {
    pub code: tonic::Code,
    pub message: String,
}

impl From<tonic::Status> for AttestRefused {
    fn from(s: tonic::Status) -> AttestRefused {
        AttestRefused {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

impl AttestRefused {
    /// The server decided against this attestor: trying again cannot help.
    pub fn is_final(&self) -> bool {
        matches!(
            self.code,
            tonic::Code::PermissionDenied
                | tonic::Code::Unauthenticated
                | tonic::Code::InvalidArgument
        )
    }
}

/// Attests the node over `client`, a channel of the one TLS connection
/// whose channel binding is `channel` (see [`connect_for_attestation`]);
/// returns the agent's new identity and the bundle.
pub async fn attest(
    client: &mut AgentApiClient<Channel>,
    channel: &ChannelBinding,
    attestor: &dyn NodeAttestorClient,
) -> anyhow::Result<(AgentIdentity, TrustBundle)> {
    let (key, csr) = crate::identity::key_and_csr()?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::AttestNodeRequest {
        step: Some(pb::attest_node_request::Step::Params(
            pb::AttestationParams {
                attestor: attestor.name().to_string(),
                payload: attestor.payload()?,
                csr,
            },
        )),
    })
    .await
    .context("attestation stream closed")?;
    let mut resp = client
        .attest_node(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(AttestRefused::from)?
        .into_inner();
    loop {
        let msg = resp
            .message()
            .await
            .map_err(AttestRefused::from)?
            .context("the server closed the attestation stream")?;
        match msg.step {
            Some(pb::attest_node_response::Step::Challenge(c)) => {
                let answer = attestor.answer(&c, channel)?;
                tx.send(pb::AttestNodeRequest {
                    step: Some(pb::attest_node_request::Step::ChallengeResponse(answer)),
                })
                .await
                .context("attestation stream closed")?;
            }
            Some(pb::attest_node_response::Step::Svid(svid)) => {
                let bundle = svid
                    .bundle
                    .clone()
                    .context("attestation reply without a bundle")?;
                let ident = AgentIdentity::from_parts(svid.cert_chain, key.serialize_der())?;
                return Ok((ident, trust_bundle(bundle)));
            }
            None => anyhow::bail!("empty attestation reply"),
        }
    }
}

/// A reusable client that follows the agent's identity and the current
/// server (see [`crate::servers`]: a server that fails is left for the
/// next at the next reconnect).
pub struct ServerClient {
    servers: Arc<Servers>,
    td: TrustDomain,
    roots: TrustRoots,
    identity: watch::Receiver<Arc<AgentIdentity>>,
    cached: Mutex<Option<(String, AgentApiClient<Channel>)>>,
    /// Counts calls the server refused for who the agent is (evicted,
    /// banned, unknown): the identity lifecycle looks at once.
    refusals: watch::Sender<u64>,
}

impl ServerClient {
    pub fn new(
        servers: Arc<Servers>,
        td: TrustDomain,
        roots: TrustRoots,
        identity: watch::Receiver<Arc<AgentIdentity>>,
    ) -> ServerClient {
        ServerClient {
            servers,
            td,
            roots,
            identity,
            cached: Mutex::new(None),
            refusals: watch::Sender::new(0),
        }
    }

    /// The agent's servers and the current one.
    pub fn servers(&self) -> &Arc<Servers> {
        &self.servers
    }

    /// Notes a call's error status (a refusal of the agent's identity is
    /// counted, see [`ServerClient::refusals`]; a server that seems down is
    /// left at the next reconnect) and formats it for logs.
    pub fn note_status(&self, s: &tonic::Status) -> String {
        if matches!(
            s.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        ) {
            self.refusals.send_modify(|n| *n += 1);
        }
        self.note_down(s);
        let addr = self.servers.current_or_first();
        // A refusal at the TLS layer (with TLS 1.3 the server's alert about
        // the agent's SVID arrives with the first call): its cause and fix.
        if let Some(d) =
            std::error::Error::source(s).and_then(|src| verdict::diagnose_connect_error(&addr, src))
        {
            return format!("{}: {d}", s.code());
        }
        format!("{}: {}", s.code(), s.message())
    }

    /// Marks the current server down when `s` says it is (connection
    /// lost, `Unavailable`): the next reconnect fails over.
    pub fn note_down(&self, s: &tonic::Status) {
        if crate::servers::is_server_down(s.code()) {
            self.servers.mark_down();
        }
    }

    /// Changes when a call was refused for the agent's identity.
    pub fn refusals(&self) -> watch::Receiver<u64> {
        self.refusals.subscribe()
    }

    /// The agent's identity, to notice renewals.
    pub fn identity(&self) -> watch::Receiver<Arc<AgentIdentity>> {
        self.identity.clone()
    }

    /// The roots the server is checked against (updated from the bundle).
    pub fn roots(&self) -> &TrustRoots {
        &self.roots
    }

    /// A client authenticated with the current agent SVID, to the current
    /// server (or, when it is down, the next that answers).
    pub async fn client(&self) -> anyhow::Result<AgentApiClient<Channel>> {
        let ident = self.identity.borrow().clone();
        let mut cached = self.cached.lock().await;
        if let Some((serial, c)) = cached.as_ref()
            && *serial == ident.serial
        {
            return Ok(c.clone());
        }
        let tls = tls_config(&self.roots, &self.td, Some(&ident))?;
        let c = connect_any(&self.servers, ident.id.as_str(), tls).await?;
        *cached = Some((ident.serial.clone(), c.clone()));
        Ok(c)
    }

    /// Forgets the cached channel (after an error); the next call connects
    /// again, to the next server if the current one was marked down.
    pub async fn reset(&self) {
        *self.cached.lock().await = None;
    }
}

impl ServerClient {
    /// Renews the agent's own SVID for the key of `csr`; returns the new
    /// chain (DER, leaf first). A server's answer is a `tonic::Status`
    /// inside the error.
    pub async fn renew_agent(&self, csr: Vec<u8>) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut c = self.client().await?;
        let svid = c
            .renew_agent(pb::RenewAgentRequest { csr })
            .await
            // The status itself: a refusal (evicted, banned) is told apart
            // from an outage by its code.
            .map_err(|s| {
                self.note_down(&s);
                anyhow::Error::new(s)
            })?
            .into_inner()
            .svid
            .context("renewal reply without an SVID")?;
        Ok(svid.cert_chain)
    }
}

/// Workload SVIDs are signed by the server's `SignSvids`.
impl SvidSigner for ServerClient {
    async fn sign_svids(&self, batch: Vec<CsrRequest>) -> Result<Vec<SignResult>, SignError> {
        let mut client = self
            .client()
            .await
            .map_err(|e| SignError::Failed(format!("{e:#}")))?;
        let req = pb::SignSvidsRequest {
            requests: batch
                .into_iter()
                .map(|r| pb::SvidRequest {
                    entry_id: r.entry_id,
                    csr: r.csr,
                })
                .collect(),
        };
        let resp = match client.sign_svids(req).await {
            Ok(r) => r.into_inner(),
            // The signing rate limit: the connection is fine.
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                return Err(SignError::RateLimited(format!(
                    "{}: {}",
                    s.code(),
                    s.message()
                )));
            }
            Err(s) => {
                self.reset().await;
                return Err(SignError::Failed(self.note_status(&s)));
            }
        };
        Ok(resp
            .results
            .into_iter()
            .map(|r| SignResult {
                entry_id: r.entry_id,
                outcome: match r.result {
                    Some(pb::svid_result::Result::Svid(s)) => SignOutcome::Signed(s.cert_chain),
                    Some(pb::svid_result::Result::Error(e)) => SignOutcome::Refused {
                        code: e.code,
                        message: e.message,
                    },
                    None => SignOutcome::Empty,
                },
            })
            .collect())
    }
}

/// JWT-SVIDs are minted by the server's `MintJwtSvid`.
impl JwtMinter for ServerClient {
    fn mint_jwt_svid<'a>(&'a self, entry_id: &'a str, audience: &'a [String]) -> MintFuture<'a> {
        Box::pin(async move {
            let mut client = self
                .client()
                .await
                .map_err(|e| MintError::Failed(format!("{e:#}")))?;
            let req = pb::MintJwtSvidRequest {
                entry_id: entry_id.to_string(),
                audience: audience.to_vec(),
            };
            let svid = match client.mint_jwt_svid(req).await {
                Ok(r) => r.into_inner().svid,
                Err(s) => {
                    let unauthorized = matches!(
                        s.code(),
                        tonic::Code::PermissionDenied | tonic::Code::NotFound
                    );
                    if !unauthorized && s.code() != tonic::Code::ResourceExhausted {
                        self.reset().await;
                    }
                    let m = self.note_status(&s);
                    return Err(if unauthorized {
                        MintError::Unauthorized(m)
                    } else {
                        MintError::Failed(m)
                    });
                }
            };
            let svid =
                svid.ok_or_else(|| MintError::Failed("MintJwtSvid answer without an SVID".into()))?;
            if svid.token.is_empty() {
                return Err(MintError::Failed(
                    "MintJwtSvid answer with an empty token".into(),
                ));
            }
            Ok(MintedJwt {
                token: svid.token,
                issued_at: svid.issued_at,
                expires_at: svid.expires_at,
            })
        })
    }
}
