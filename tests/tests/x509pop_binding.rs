//! Issue 20 item 4, second half: the x509pop proof is bound to the TLS
//! connection it is given on (RFC 8446 §7.5 exported keying material), so a
//! man in the middle holding two TLS connections to the real server cannot
//! relay a node's signed challenge from one to the other.

use std::time::Duration;

use sigil_agent::node_attestor::{NodeAttestorClient, X509PopClient};
use sigil_proto::attestation;
use sigil_tests::agent_client::{attest_with_challenges, key_and_csr};
use sigil_tests::{ServerOptions, TestServer};
use tonic::Code;

/// A node CA (written to `dir/nodes-ca.pem`) and one node certificate and
/// key under it (`dir/node.pem`, `dir/node.key`), as the real agent loads them.
fn node_pki(dir: &std::path::Path) -> X509PopClient {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut cap = rcgen::CertificateParams::default();
    cap.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    cap.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    cap.distinguished_name
        .push(rcgen::DnType::CommonName, "node CA");
    let ca_cert = cap.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&cap, &ca_key);
    std::fs::write(dir.join("nodes-ca.pem"), ca_cert.pem()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "node-1");
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("node.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("node.key"), key.serialize_pem()).unwrap();
    X509PopClient::load(&dir.join("node.pem"), &dir.join("node.key")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn i20_4_relayed_x509pop_proof_fails() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_pki(dir.path());
    let s = TestServer::start(ServerOptions {
        extra: format!(
            "[node_attestor.x509pop]\nca_bundle_path = \"{}\"\n",
            dir.path().join("nodes-ca.pem").display()
        ),
        ..Default::default()
    })
    .unwrap();
    let limit = Duration::from_secs(30);

    // Connection 1 is the node's own; connection 2 is the relay's. The relay
    // starts an attestation on connection 2 with the node's (public)
    // certificate chain and has the node answer the challenge as if it came
    // on connection 1.
    let (mut own, own_channel) = s.attestation_client().await.unwrap();
    let (mut relay, relay_channel) = s.attestation_client().await.unwrap();
    assert_ne!(own_channel, relay_channel, "two connections, one binding");
    let relayed = tokio::time::timeout(
        limit,
        attest_with_challenges(
            &mut relay,
            attestation::X509POP,
            node.payload().unwrap(),
            key_and_csr().1,
            |challenge| node.answer(challenge, &own_channel).unwrap(),
        ),
    )
    .await
    .expect("relayed attestation timed out");
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
    let svid = tokio::time::timeout(
        limit,
        attest_with_challenges(
            &mut own,
            attestation::X509POP,
            node.payload().unwrap(),
            key_and_csr().1,
            |challenge| node.answer(challenge, &own_channel).unwrap(),
        ),
    )
    .await
    .expect("direct attestation timed out")
    .expect("direct attestation refused");
    assert!(
        svid.spiffe_id
            .starts_with("spiffe://example.org/sigil/agent/x509pop/"),
        "{}",
        svid.spiffe_id
    );
}
