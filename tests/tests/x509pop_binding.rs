//! Issue 20 item 4, second half: the x509pop proof is bound to the TLS
//! connection it is given on (RFC 8446 §7.5 exported keying material), so a
//! man in the middle holding two TLS connections to the real server cannot
//! relay a node's signed challenge from one to the other.

use std::time::Duration;

use std::path::Path;

use sigil_agent::node_attestor::{NodeAttestorClient, X509PopClient};
use sigil_proto::agent_api::{self as pb, agent_api_client::AgentApiClient};
use sigil_proto::attestation::{self, ChannelBinding};
use sigil_proto::pem::to_pem;
use sigil_proto::test_pki::{NodePki, node_leaf_params};
use sigil_tests::agent_client::{attest_with_challenges, key_and_csr};
use sigil_tests::{ServerOptions, TestServer};
use tonic::Code;
use tonic::transport::Channel;

/// A node PKI (root written to `dir/nodes-ca.pem`) and one node's chain and
/// key under it (`dir/node.pem`, `dir/node.key`), loaded as the agent does.
fn node_files(dir: &Path) -> X509PopClient {
    let pki = NodePki::new("nodes");
    let (leaf, key) = pki.sign(&node_leaf_params("node-1"), &rcgen::PKCS_ECDSA_P256_SHA256);
    std::fs::write(
        dir.join("nodes-ca.pem"),
        to_pem(std::slice::from_ref(&pki.root)),
    )
    .unwrap();
    std::fs::write(dir.join("node.pem"), to_pem(&[leaf, pki.intermediate])).unwrap();
    std::fs::write(dir.join("node.key"), key.serialize_pem()).unwrap();
    X509PopClient::load(&dir.join("node.pem"), &dir.join("node.key")).unwrap()
}

/// Starts an x509pop attestation of `node` on `client` and has the node
/// answer the challenge as received on the connection bound to `channel`.
async fn attest_answering(
    client: &mut AgentApiClient<Channel>,
    node: &X509PopClient,
    channel: &ChannelBinding,
) -> Result<pb::AgentSvid, tonic::Status> {
    tokio::time::timeout(
        Duration::from_secs(30),
        attest_with_challenges(
            client,
            attestation::X509POP,
            node.payload().unwrap(),
            key_and_csr().1,
            |challenge| node.answer(challenge, channel).unwrap(),
        ),
    )
    .await
    .expect("attestation timed out")
}

#[tokio::test(flavor = "multi_thread")]
async fn i20_4_relayed_x509pop_proof_fails() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_files(dir.path());
    let s = TestServer::start(ServerOptions::x509pop(&dir.path().join("nodes-ca.pem"))).unwrap();

    // Connection 1 is the node's own; connection 2 is the relay's. The relay
    // starts an attestation on connection 2 with the node's (public)
    // certificate chain and has the node answer the challenge as if it came
    // on connection 1.
    let (mut own, own_channel) = s.attestation_client().await.unwrap();
    let (mut relay, relay_channel) = s.attestation_client().await.unwrap();
    assert_ne!(own_channel, relay_channel, "two connections, one binding");
    let relayed = attest_answering(&mut relay, &node, &own_channel).await;
    match relayed {
        Err(e) => {
            assert_eq!(e.code(), Code::PermissionDenied, "{e}");
            assert!(e.message().contains("challenge failed"), "{e}");
        }
        Ok(svid) => panic!(
            "a proof relayed from another TLS connection was accepted: {}",
            svid.spiffe_id
        ),
    }

    // The node attesting directly on its own connection succeeds.
    let svid = attest_answering(&mut own, &node, &own_channel)
        .await
        .expect("direct attestation refused");
    assert!(
        svid.spiffe_id
            .starts_with("spiffe://example.org/sigil/agent/x509pop/"),
        "{}",
        svid.spiffe_id
    );
}
