//! Tests of the x509pop node attestor, server half.

use super::*;
use rcgen::{
    CertificateParams, DnType, DnValue, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384, PKCS_ED25519, SignatureAlgorithm, date_time_ymd,
};
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
};
use sigil_proto::attestation::encode_chain;
use sigil_proto::pem::to_pem;
use sigil_proto::test_pki::{NodePki, node_ca_params, node_leaf_params};

/// 2030-01-01T00:00:00Z.
const NOW: i64 = 1_893_456_000;

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

/// A node's certificate chain (leaf, intermediate) and PKCS#8 key.
struct Node {
    chain: Vec<Vec<u8>>,
    pkcs8: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

fn node_with(pki: &NodePki, params: CertificateParams, alg: &'static SignatureAlgorithm) -> Node {
    let (leaf, key) = pki.sign(&params, alg);
    Node {
        chain: vec![leaf, pki.intermediate.clone()],
        pkcs8: key.serialize_der(),
        alg,
    }
}

fn node(pki: &NodePki, alg: &'static SignatureAlgorithm) -> Node {
    node_with(pki, node_leaf_params("node-1.example.org"), alg)
}

/// The channel binding of the connection the tests attest on.
const CH: ChannelBinding = ChannelBinding([0x5a; 32]);

/// What the agent does: sign context || challenge || channel binding.
fn answer(pkcs8: &[u8], alg: &'static SignatureAlgorithm, challenge: &[u8]) -> Vec<u8> {
    answer_on(pkcs8, alg, challenge, &CH)
}

fn answer_on(
    pkcs8: &[u8],
    alg: &'static SignatureAlgorithm,
    challenge: &[u8],
    channel: &ChannelBinding,
) -> Vec<u8> {
    let message = x509pop_signed_message(challenge, channel);
    let rng = SystemRandom::new();
    if alg == &PKCS_ECDSA_P256_SHA256 || alg == &PKCS_ECDSA_P384_SHA384 {
        let signing = if alg == &PKCS_ECDSA_P256_SHA256 {
            &ECDSA_P256_SHA256_ASN1_SIGNING
        } else {
            &ECDSA_P384_SHA384_ASN1_SIGNING
        };
        let key = EcdsaKeyPair::from_pkcs8(signing, pkcs8, &rng).unwrap();
        key.sign(&rng, &message).unwrap().as_ref().to_vec()
    } else if alg == &PKCS_ED25519 {
        let key = Ed25519KeyPair::from_pkcs8(pkcs8).unwrap();
        key.sign(&message).as_ref().to_vec()
    } else {
        panic!("no test signer for {alg:?}");
    }
}

fn begin(att: &X509PopAttestor, payload: &[u8]) -> (Vec<u8>, Box<dyn ChallengeState>) {
    match att.begin_bound(payload, NOW, Some(&CH)).unwrap() {
        Step::Challenge { challenge, state } => (challenge, state),
        other => panic!("expected a challenge, got {other:?}"),
    }
}

/// The whole exchange, as the agent API drives it.
fn attest(att: &X509PopAttestor, node: &Node) -> Result<AttestedNode, AttestError> {
    let step = att.begin_bound(&encode_chain(&node.chain), NOW, Some(&CH))?;
    let Step::Challenge { challenge, state } = step else {
        panic!("x509pop must challenge, got {step:?}");
    };
    assert_eq!(challenge.len(), 32);
    match state.verify(&answer(&node.pkcs8, node.alg, &challenge))? {
        Step::Done(n) => Ok(n),
        other => panic!("expected Done, got {other:?}"),
    }
}

fn attestor(pki: &NodePki) -> X509PopAttestor {
    X509PopAttestor::new(td(), to_pem(std::slice::from_ref(&pki.root)).as_bytes()).unwrap()
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn refused<T: fmt::Debug>(r: Result<T, AttestError>) -> String {
    match r {
        Err(e @ AttestError::Refused(_)) => e.to_string(),
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[test]
fn a_p256_node_via_an_intermediate_attests() {
    let pki = NodePki::new("corp");
    let att = attestor(&pki);
    assert_eq!(att.name(), "x509pop");
    let node = node(&pki, &PKCS_ECDSA_P256_SHA256);
    let attested = attest(&att, &node).unwrap();

    let leaf_sha = hex::encode(digest(&SHA256, &node.chain[0]));
    assert_eq!(
        attested.agent_id.as_str(),
        format!("spiffe://example.org/sigil/agent/x509pop/{leaf_sha}")
    );
    assert_eq!(
        attested.selectors,
        vec![
            sel("x509pop:subject:cn:node-1.example.org"),
            sel(&format!(
                "x509pop:ca:fingerprint:{}",
                hex::encode(digest(&SHA256, &pki.intermediate))
            )),
            sel(&format!(
                "x509pop:ca:fingerprint:{}",
                hex::encode(digest(&SHA256, &pki.root))
            )),
        ]
    );
    assert!(attested.can_reattest);

    // The same node again: a fresh challenge, the same identity.
    let again = attest(&att, &node).unwrap();
    assert_eq!(again, attested);
}

#[test]
fn challenges_are_fresh_and_answers_do_not_replay() {
    let pki = NodePki::new("corp");
    let att = attestor(&pki);
    let node = node(&pki, &PKCS_ECDSA_P256_SHA256);
    let payload = encode_chain(&node.chain);
    let (first, first_state) = begin(&att, &payload);
    let (second, second_state) = begin(&att, &payload);
    assert_ne!(first, second);
    let first_answer = answer(&node.pkcs8, node.alg, &first);
    let err = second_state.verify(&first_answer).unwrap_err();
    assert!(matches!(err, AttestError::Refused(_)), "{err:?}");
    assert!(first_state.verify(&first_answer).is_ok());
    // A signature over the bare challenge (no context) is not an answer.
    let (challenge, state) = begin(&att, &payload);
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &node.pkcs8, &rng).unwrap();
    let bare = key.sign(&rng, &challenge).unwrap();
    assert!(state.verify(bare.as_ref()).is_err());
}

#[test]
fn i20_4_answers_are_bound_to_the_connection() {
    let pki = NodePki::new("corp");
    let att = attestor(&pki);
    let node = node(&pki, &PKCS_ECDSA_P256_SHA256);
    // An answer made for another connection (a relay's) is refused.
    let payload = encode_chain(&node.chain);
    let (challenge, state) = begin(&att, &payload);
    let other = ChannelBinding([0xa5; 32]);
    let relayed = answer_on(&node.pkcs8, node.alg, &challenge, &other);
    let err = state.verify(&relayed).unwrap_err();
    assert_eq!(
        err.to_string(),
        "attestation refused: x509pop challenge failed: signature does not verify with the \
         certificate's key"
    );
    // A connection without a channel binding cannot attest at all.
    let message = refused(att.begin(&payload, NOW));
    assert!(message.contains("channel binding"), "{message}");
    let message = refused(att.begin_bound(&payload, NOW, None));
    assert!(message.contains("channel binding"), "{message}");
}

#[test]
fn p384_and_ed25519_nodes_attest() {
    let pki = NodePki::new("corp");
    let att = attestor(&pki);
    for alg in [&PKCS_ECDSA_P384_SHA384, &PKCS_ED25519] {
        let node = node(&pki, alg);
        let attested = attest(&att, &node).unwrap();
        let leaf_sha = hex::encode(digest(&SHA256, &node.chain[0]));
        assert!(attested.agent_id.as_str().ends_with(&leaf_sha), "{alg:?}");
        assert_eq!(attested.selectors.len(), 3, "{alg:?}");
    }
}

#[test]
fn a_node_from_an_untrusted_ca_is_refused() {
    let trusted = NodePki::new("corp");
    let other = NodePki::new("rogue");
    let att = attestor(&trusted);
    let node = node(&other, &PKCS_ECDSA_P256_SHA256);
    let message = refused(attest(&att, &node));
    assert!(message.contains("not trusted"), "{message}");
    // Nor does presenting the trusted intermediate next to it help.
    let mut node = node;
    node.chain.push(trusted.intermediate.clone());
    refused(attest(&att, &node));
}

#[test]
fn an_expired_node_certificate_is_refused() {
    let pki = NodePki::new("corp");
    let att = attestor(&pki);
    let mut params = node_leaf_params("old-node");
    params.not_after = date_time_ymd(2025, 1, 1);
    let node = node_with(&pki, params, &PKCS_ECDSA_P256_SHA256);
    let message = refused(attest(&att, &node));
    assert!(message.contains("expired"), "{message}");
}

#[test]
fn the_wrong_key_fails_the_challenge() {
    let pki = NodePki::new("corp");
    let att = attestor(&pki);
    let node = node(&pki, &PKCS_ECDSA_P256_SHA256);
    let impostor = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let (challenge, state) = begin(&att, &encode_chain(&node.chain));
    let forged = answer(&impostor.serialize_der(), node.alg, &challenge);
    let err = state.verify(&forged).unwrap_err();
    assert!(matches!(err, AttestError::Refused(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "attestation refused: x509pop challenge failed: signature does not verify with the \
         certificate's key"
    );
    let (_, state) = begin(&att, &encode_chain(&node.chain));
    assert!(matches!(state.verify(b""), Err(AttestError::Refused(_))));
}

#[test]
fn garbage_payloads_are_invalid() {
    let pki = NodePki::new("corp");
    let att = attestor(&pki);
    let node = node(&pki, &PKCS_ECDSA_P256_SHA256);
    let mut truncated = encode_chain(&node.chain);
    truncated.truncate(truncated.len() - 5);
    let too_many = encode_chain(&vec![node.chain[0].clone(); 9]);
    let pem = to_pem(&node.chain);
    for payload in [
        &b""[..],
        b"garbage",
        b"\x30\x03\x02\x01\x01",
        &truncated,
        &too_many,
        pem.as_bytes(),
    ] {
        let err = att.begin_bound(payload, NOW, Some(&CH)).unwrap_err();
        assert!(matches!(err, AttestError::Invalid(_)), "{err:?}");
    }
}

#[test]
fn a_ca_certificate_as_the_leaf_is_refused() {
    let pki = NodePki::new("corp");
    let att = attestor(&pki);
    // The intermediate itself, and a CA issued under it.
    let message = refused(att.begin_bound(
        &encode_chain(std::slice::from_ref(&pki.intermediate)),
        NOW,
        Some(&CH),
    ));
    assert!(message.contains("is a CA certificate"), "{message}");
    let sub_ca = node_with(&pki, node_ca_params("sub ca"), &PKCS_ECDSA_P256_SHA256);
    let message = refused(att.begin_bound(&encode_chain(&sub_ca.chain), NOW, Some(&CH)));
    assert!(message.contains("is a CA certificate"), "{message}");
}

#[test]
fn a_leaf_not_for_signatures_is_refused() {
    let pki = NodePki::new("corp");
    let att = attestor(&pki);
    let mut params = node_leaf_params("node-ke");
    params.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let node = node_with(&pki, params, &PKCS_ECDSA_P256_SHA256);
    let message = refused(attest(&att, &node));
    assert!(message.contains("digitalSignature"), "{message}");
}

#[test]
fn cn_selector_only_when_valid() {
    let pki = NodePki::new("corp");
    let att = attestor(&pki);
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(
        DnType::CommonName,
        DnValue::Utf8String("bad\u{7}cn".to_string()),
    );
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2040, 1, 1);
    let node = node_with(&pki, params, &PKCS_ECDSA_P256_SHA256);
    let attested = attest(&att, &node).unwrap();
    assert_eq!(attested.selectors.len(), 2);
    assert!(
        attested
            .selectors
            .iter()
            .all(|s| s.value().starts_with("ca:fingerprint:"))
    );

    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2040, 1, 1);
    let node = node_with(&pki, params, &PKCS_ECDSA_P256_SHA256);
    assert_eq!(attest(&att, &node).unwrap().selectors.len(), 2);
}

#[test]
fn the_root_that_anchored_the_chain_is_the_one_fingerprinted() {
    let a = NodePki::new("a");
    let b = NodePki::new("b");
    let bundle = [
        to_pem(std::slice::from_ref(&a.root)),
        to_pem(std::slice::from_ref(&b.root)),
    ]
    .concat();
    let att = X509PopAttestor::new(td(), bundle.as_bytes()).unwrap();
    let node = node(&b, &PKCS_ED25519);
    let attested = attest(&att, &node).unwrap();
    let root_b = sel(&format!(
        "x509pop:ca:fingerprint:{}",
        hex::encode(digest(&SHA256, &b.root))
    ));
    let root_a = sel(&format!(
        "x509pop:ca:fingerprint:{}",
        hex::encode(digest(&SHA256, &a.root))
    ));
    assert!(attested.selectors.contains(&root_b));
    assert!(!attested.selectors.contains(&root_a));
}

#[test]
fn bad_bundles_are_refused() {
    for bundle in [&b""[..], b"   \n", b"not a bundle"] {
        let err = X509PopAttestor::new(td(), bundle).unwrap_err();
        assert!(err.to_string().contains("x509pop CA bundle"), "{err}");
    }
    let pki = NodePki::new("corp");
    let leaf = node(&pki, &PKCS_ECDSA_P256_SHA256);
    let err = X509PopAttestor::new(td(), to_pem(&leaf.chain[..1]).as_bytes()).unwrap_err();
    assert!(err.to_string().contains("not a CA certificate"), "{err}");
    // DER is accepted as well as PEM.
    assert!(X509PopAttestor::new(td(), &pki.root).is_ok());
    let debug = format!("{:?}", attestor(&pki));
    assert!(debug.contains("roots: 1"), "{debug}");
}

#[test]
fn i21_8_ban_rules_name_the_key_and_the_subject() {
    let pki = NodePki::new("corp");
    let att = attestor(&pki);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let spki = format!(
        "x509pop:spki:sha256:{}",
        hex::encode(digest(
            &SHA256,
            &rcgen::PublicKeyData::subject_public_key_info(&key)
        ))
    );
    let issue = |params: CertificateParams| Node {
        chain: vec![
            params.signed_by(&key, &pki.issuer).unwrap().der().to_vec(),
            pki.intermediate.clone(),
        ],
        pkcs8: key.serialize_der(),
        alg: &PKCS_ECDSA_P256_SHA256,
    };
    let first = attest(&att, &issue(node_leaf_params("node-1"))).unwrap();
    assert_eq!(
        first.ban_rules,
        vec![spki.clone(), "x509pop:subject:cn:node-1".to_string()]
    );
    // Re-issued with the same key: a new agent ID, the same rules.
    let mut params = node_leaf_params("node-1");
    params.not_after = date_time_ymd(2039, 6, 1);
    let second = attest(&att, &issue(params)).unwrap();
    assert_ne!(second.agent_id, first.agent_id);
    assert_eq!(second.ban_rules, first.ban_rules);
    // Without a CN: the whole subject DN.
    let mut params = node_leaf_params("x");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "corp");
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, "rack 7");
    let no_cn = attest(&att, &issue(params)).unwrap();
    assert_eq!(
        no_cn.ban_rules,
        vec![spki, "x509pop:subject:dn:O=corp, OU=rack 7".to_string()]
    );
}
