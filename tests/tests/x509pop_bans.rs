//! Issue 21 item 8: an x509pop ban covers the node, not one certificate.
//! The agent ID hashes the leaf, so a re-issued node certificate is a new
//! agent; `agent ban` therefore also bans the leaf's key and subject (CN),
//! persistently, and AttestNode refuses a certificate matching either.
//! Runs the real server binary; the node side is the agent's own x509pop
//! client code (`X509PopClient`, loading the files as the agent does).

use std::path::Path;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, date_time_ymd};
use sigil_agent::node_attestor::{NodeAttestorClient, X509PopClient};
use sigil_proto::agent_api as pb;
use sigil_proto::attestation;
use sigil_proto::pem::to_pem;
use sigil_proto::test_pki::{NodePki, node_leaf_params};
use sigil_tests::agent_client::{attest_with_challenges, key_and_csr};
use sigil_tests::{ServerOptions, TestServer};
use tonic::Code;

/// Writes `params` signed for `key` under `pki` (chain and key files in
/// `dir/<name>.{pem,key}`) and loads them as the agent does.
fn issue(
    dir: &Path,
    name: &str,
    pki: &NodePki,
    key: &KeyPair,
    params: &CertificateParams,
) -> X509PopClient {
    let leaf = params.signed_by(key, &pki.issuer).unwrap().der().to_vec();
    let (cert, key_file) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, to_pem(&[leaf, pki.intermediate.clone()])).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    X509PopClient::load(&cert, &key_file).unwrap()
}

/// Attests `node` on a fresh connection to `s`.
async fn attest(s: &TestServer, node: &X509PopClient) -> Result<pb::AgentSvid, tonic::Status> {
    let (mut client, channel) = s.attestation_client().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        attest_with_challenges(
            &mut client,
            attestation::X509POP,
            node.payload().unwrap(),
            key_and_csr().1,
            |challenge| node.answer(challenge, &channel).unwrap(),
        ),
    )
    .await
    .expect("attestation timed out")
}

/// Attests `node` and checks that it is refused, naming `rule`.
async fn refused(s: &TestServer, node: &X509PopClient, rule: &str, what: &str) {
    match attest(s, node).await {
        Err(e) => {
            assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e}");
            assert!(e.message().contains(rule), "{what}: {e}");
        }
        Ok(svid) => panic!("{what}: attested as {}", svid.spiffe_id),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn i21_8_reissued_x509pop_cert_of_banned_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = NodePki::new("nodes");
    std::fs::write(d.join("ca.pem"), to_pem(std::slice::from_ref(&pki.root))).unwrap();
    let mut s = TestServer::start(ServerOptions::x509pop(&d.join("ca.pem"))).unwrap();

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert_a = issue(d, "a", &pki, &key, &node_leaf_params("node-1"));
    let a = attest(&s, &cert_a).await.expect("cert A attests").spiffe_id;
    s.cli_ok(&["agent", "ban", "--spiffe-id", &a]);
    refused(&s, &cert_a, "is banned", "cert A itself").await;

    // Re-issued: the same key and subject, another validity (another leaf,
    // another agent ID).
    let mut reissued = node_leaf_params("node-1");
    reissued.not_after = date_time_ymd(2039, 6, 1);
    let cert_b = issue(d, "b", &pki, &key, &reissued);
    refused(&s, &cert_b, "x509pop:spki:sha256:", "same key").await;
    // A new key, the same subject.
    let new_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert_c = issue(d, "c", &pki, &new_key, &node_leaf_params("node-1"));
    refused(&s, &cert_c, "x509pop:subject:cn:node-1", "same subject").await;
    // Another node still attests.
    let other_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert_d = issue(d, "d", &pki, &other_key, &node_leaf_params("node-2"));
    attest(&s, &cert_d).await.expect("another node attests");

    // The ban outlives a restart.
    s.stop();
    s.spawn().unwrap();
    refused(&s, &cert_b, "x509pop:spki:sha256:", "after restart").await;
    refused(&s, &cert_c, "x509pop:subject:cn:node-1", "after restart").await;

    // Unbanning the agent lifts its node bans.
    s.cli_ok(&["agent", "unban", "--spiffe-id", &a]);
    let b = attest(&s, &cert_b).await.expect("cert B after unban");
    assert_ne!(b.spiffe_id, a, "a re-issued certificate is another agent");
    attest(&s, &cert_c).await.expect("cert C after unban");
}
