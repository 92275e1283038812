//! A minimal agent-side client of the agent API for tests: real TLS with the
//! server's SVID checked against the bundle, optional client certificate.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sigil_proto::SpiffeId;
use sigil_proto::agent_api::{self as pb, agent_api_client::AgentApiClient};
use sigil_proto::tls::{SpiffeServerVerifier, TrustRoots, authorize_exact, client_config};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// An agent's key and SVID.
pub struct AgentIdentity {
    pub id: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Clone for AgentIdentity {
    fn clone(&self) -> Self {
        AgentIdentity {
            id: self.id.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// A fresh P-256 key and a CSR (DER) for it.
pub fn key_and_csr() -> (rcgen::KeyPair, Vec<u8>) {
    let key = rcgen::KeyPair::generate().expect("keygen");
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("csr");
    (key, csr.der().to_vec())
}

/// The identity for an SVID signed over `key`.
pub fn identity(key: &rcgen::KeyPair, svid: &pb::AgentSvid) -> AgentIdentity {
    AgentIdentity {
        id: svid.spiffe_id.clone(),
        chain: svid
            .cert_chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// Connects to the agent API at `addr`, trusting `bundle` and expecting the
/// server ID of `trust_domain`.
pub async fn connect(
    addr: SocketAddr,
    bundle: Vec<Vec<u8>>,
    trust_domain: &str,
    ident: Option<&AgentIdentity>,
) -> anyhow::Result<AgentApiClient<Channel>> {
    let server_id = SpiffeId::parse(&format!("spiffe://{trust_domain}/sigil/server"))?;
    let verifier = Arc::new(SpiffeServerVerifier::new(
        TrustRoots::new(bundle)?,
        authorize_exact(server_id),
    ));
    let mut cfg = client_config(
        verifier,
        ident.map(|i| (i.chain.clone(), i.key.clone_key())),
    )?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let channel = Endpoint::from_static("http://sigil-agent-api.invalid")
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let name = ServerName::try_from("sigil-server.invalid").expect("static name");
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(AgentApiClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

/// Runs node attestation with a single payload (no challenges).
pub async fn attest(
    client: &mut AgentApiClient<Channel>,
    attestor: &str,
    payload: Vec<u8>,
    csr: Vec<u8>,
) -> Result<pb::AgentSvid, tonic::Status> {
    let first = pb::AttestNodeRequest {
        step: Some(pb::attest_node_request::Step::Params(
            pb::AttestationParams {
                attestor: attestor.to_string(),
                payload,
                csr,
            },
        )),
    };
    let mut resp = client
        .attest_node(tokio_stream::iter(vec![first]))
        .await?
        .into_inner();
    match resp.message().await? {
        Some(pb::AttestNodeResponse {
            step: Some(pb::attest_node_response::Step::Svid(s)),
        }) => Ok(s),
        other => Err(tonic::Status::internal(format!(
            "unexpected reply {other:?}"
        ))),
    }
}

/// Runs node attestation answering challenges with `answer`.
pub async fn attest_with_challenges(
    client: &mut AgentApiClient<Channel>,
    attestor: &str,
    payload: Vec<u8>,
    csr: Vec<u8>,
    answer: impl Fn(&[u8]) -> Vec<u8>,
) -> Result<pb::AgentSvid, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::AttestNodeRequest {
        step: Some(pb::attest_node_request::Step::Params(
            pb::AttestationParams {
                attestor: attestor.to_string(),
                payload,
                csr,
            },
        )),
    })
    .await
    .expect("send");
    let mut resp = client
        .attest_node(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    loop {
        match resp.message().await? {
            Some(pb::AttestNodeResponse {
                step: Some(pb::attest_node_response::Step::Challenge(c)),
            }) => {
                let _ = tx
                    .send(pb::AttestNodeRequest {
                        step: Some(pb::attest_node_request::Step::ChallengeResponse(answer(&c))),
                    })
                    .await;
            }
            Some(pb::AttestNodeResponse {
                step: Some(pb::attest_node_response::Step::Svid(s)),
            }) => return Ok(s),
            other => {
                return Err(tonic::Status::internal(format!(
                    "unexpected reply {other:?}"
                )));
            }
        }
    }
}
