//! A minimal agent-side client of the agent API for tests: real TLS with the
//! server's SVID checked against the bundle, optional client certificate.

use std::net::SocketAddr;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sigil_proto::agent_api::{self as pb, agent_api_client::AgentApiClient};
use sigil_proto::tls::TrustRoots;
use tonic::transport::Channel;

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
/// server ID of `trust_domain` (the agent's own client code).
pub async fn connect(
    addr: SocketAddr,
    bundle: Vec<Vec<u8>>,
    trust_domain: &str,
    ident: Option<&AgentIdentity>,
) -> anyhow::Result<AgentApiClient<Channel>> {
    let td = sigil_proto::TrustDomain::parse(trust_domain)?;
    let ident = match ident {
        Some(i) => {
            let PrivateKeyDer::Pkcs8(k) = &i.key else {
                anyhow::bail!("test identities use PKCS#8 keys");
            };
            let chain = i.chain.iter().map(|c| c.to_vec()).collect();
            Some(sigil_agent::identity::AgentIdentity::from_parts(
                chain,
                k.secret_pkcs8_der().to_vec(),
            )?)
        }
        None => None,
    };
    let cfg =
        sigil_agent::server_client::tls_config(&TrustRoots::new(bundle)?, &td, ident.as_ref())?;
    sigil_agent::server_client::connect(&addr.to_string(), cfg).await
}

/// Connects anonymously to the agent API at `addr` over one TLS connection
/// (the agent's attestation client) and returns that connection's channel
/// binding with it.
pub async fn connect_for_attestation(
    addr: SocketAddr,
    bundle: Vec<Vec<u8>>,
    trust_domain: &str,
) -> anyhow::Result<(
    AgentApiClient<Channel>,
    sigil_proto::attestation::ChannelBinding,
)> {
    let td = sigil_proto::TrustDomain::parse(trust_domain)?;
    let cfg = sigil_agent::server_client::tls_config(&TrustRoots::new(bundle)?, &td, None)?;
    sigil_agent::server_client::connect_for_attestation(&addr.to_string(), cfg).await
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
