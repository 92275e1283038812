//! Tests of the node attestation payloads: encoding, decoding and the
//! proofs of possession they carry.

use super::*;
use crate::test_pki::{NodePki, node_leaf_params};
use rcgen::{
    CertificateParams, ExtendedKeyUsagePurpose, KeyPair, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
};

/// 2030-01-01T00:00:00Z, inside every test certificate's validity.
const NOW: u64 = 1_893_456_000;

fn new_pki() -> NodePki {
    NodePki::new("test")
}

fn leaf_params(eku: Vec<ExtendedKeyUsagePurpose>) -> CertificateParams {
    let mut p = node_leaf_params("node-1");
    p.extended_key_usages = eku;
    p
}

fn leaf(pki: &NodePki, eku: Vec<ExtendedKeyUsagePurpose>) -> Vec<u8> {
    pki.sign(&leaf_params(eku), &PKCS_ECDSA_P256_SHA256).0
}

#[test]
fn join_token_form() {
    assert!(is_valid_join_token("0123456789abcdef0123456789abcdef"));
    assert!(is_valid_join_token("A-z_9"));
    assert!(is_valid_join_token(&"a".repeat(128)));
    for bad in ["", "..", "a/b", "a b", "tök", "a\n", &"a".repeat(129)] {
        assert!(!is_valid_join_token(bad), "{bad:?}");
    }
}

#[test]
fn signed_message_is_context_then_challenge_then_channel_binding() {
    let m = x509pop_signed_message(&[1, 2, 3], &ChannelBinding([7; 32]));
    assert_eq!(&m[..X509POP_CONTEXT.len()], X509POP_CONTEXT);
    assert_eq!(
        &m[X509POP_CONTEXT.len()..X509POP_CONTEXT.len() + 3],
        &[1, 2, 3]
    );
    assert_eq!(&m[X509POP_CONTEXT.len() + 3..], &[7; 32]);
    assert!(X509POP_CONTEXT.ends_with(&[0]));
    assert_eq!(
        format!("{:?}", ChannelBinding([7; 32])),
        "ChannelBinding(..)"
    );
}

#[test]
fn chain_round_trip_and_limits() {
    let pki = new_pki();
    let chain = vec![leaf(&pki, vec![]), pki.intermediate.clone()];
    assert_eq!(decode_chain(&encode_chain(&chain)).unwrap(), chain);

    assert_eq!(decode_chain(b""), Err(X509PopError::EmptyChain));
    assert!(matches!(
        decode_chain(b"garbage"),
        Err(X509PopError::MalformedChain { .. })
    ));
    let pem = crate::pem::to_pem(&chain);
    assert!(matches!(
        decode_chain(pem.as_bytes()),
        Err(X509PopError::MalformedChain { .. })
    ));
    let mut trailing = encode_chain(&chain);
    trailing.push(0x30);
    assert!(matches!(
        decode_chain(&trailing),
        Err(X509PopError::MalformedChain { .. })
    ));
    let nine = vec![pki.intermediate.clone(); 9];
    assert_eq!(
        decode_chain(&encode_chain(&nine)),
        Err(X509PopError::TooManyCerts { count: 9 })
    );
    let mut big = vec![0x30];
    big.resize(X509POP_MAX_CHAIN_BYTES + 1, 0);
    assert_eq!(
        decode_chain(&big),
        Err(X509PopError::ChainTooLarge {
            len: X509POP_MAX_CHAIN_BYTES + 1
        })
    );
}

#[test]
fn verified_path_lists_intermediate_then_root() {
    let pki = new_pki();
    let other = new_pki();
    let chain = vec![leaf(&pki, vec![]), pki.intermediate.clone()];
    let roots = vec![other.root.clone(), pki.root.clone()];
    let cas = verify_x509pop_chain(&chain, &roots, NOW).unwrap();
    assert_eq!(cas, vec![pki.intermediate.clone(), pki.root.clone()]);
    // Unused extra certificates are not on the path.
    let chain = vec![
        leaf(&pki, vec![]),
        other.intermediate.clone(),
        pki.intermediate.clone(),
    ];
    let cas = verify_x509pop_chain(&chain, &roots, NOW).unwrap();
    assert_eq!(cas, vec![pki.intermediate.clone(), pki.root.clone()]);
}

#[test]
fn extended_key_usage_rule() {
    let pki = new_pki();
    let roots = vec![pki.root.clone()];
    for eku in [
        vec![],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        vec![ExtendedKeyUsagePurpose::Any],
    ] {
        let chain = vec![leaf(&pki, eku.clone()), pki.intermediate.clone()];
        assert!(verify_x509pop_chain(&chain, &roots, NOW).is_ok(), "{eku:?}");
    }
    for eku in [
        vec![ExtendedKeyUsagePurpose::ServerAuth],
        vec![ExtendedKeyUsagePurpose::CodeSigning],
    ] {
        let chain = vec![leaf(&pki, eku.clone()), pki.intermediate.clone()];
        let err = verify_x509pop_chain(&chain, &roots, NOW).unwrap_err();
        assert!(
            err.to_string().contains("without clientAuth"),
            "{eku:?}: {err}"
        );
    }
}

#[test]
fn untrusted_expired_and_bad_roots() {
    let pki = new_pki();
    let chain = vec![leaf(&pki, vec![]), pki.intermediate.clone()];
    let other = NodePki::new("another");
    let err = verify_x509pop_chain(&chain, std::slice::from_ref(&other.root), NOW).unwrap_err();
    assert!(
        err.to_string().contains("does not lead to a configured"),
        "{err}"
    );
    // A CA with the same name but another key.
    let impostor = new_pki();
    let err = verify_x509pop_chain(&chain, std::slice::from_ref(&impostor.root), NOW).unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
    let later = 2_240_611_200; // 2041-01-01
    let err = verify_x509pop_chain(&chain, std::slice::from_ref(&pki.root), later).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    assert_eq!(
        verify_x509pop_chain(&chain, &[], NOW),
        Err(X509PopError::NoRoots)
    );
    assert_eq!(check_x509pop_roots(&[]), Err(X509PopError::NoRoots));
    assert!(matches!(
        check_x509pop_roots(&[pki.root.clone(), b"junk".to_vec()]),
        Err(X509PopError::BadRoot { index: 1, .. })
    ));
    assert_eq!(check_x509pop_roots(std::slice::from_ref(&pki.root)), Ok(()));
}

#[test]
fn key_algorithms() {
    let pki = new_pki();
    for (alg, expected) in [
        (&PKCS_ECDSA_P256_SHA256, X509PopKeyAlg::EcdsaP256Sha256),
        (&PKCS_ECDSA_P384_SHA384, X509PopKeyAlg::EcdsaP384Sha384),
        (&PKCS_ED25519, X509PopKeyAlg::Ed25519),
    ] {
        let key = KeyPair::generate_for(alg).unwrap();
        let der = leaf_params(vec![])
            .signed_by(&key, &pki.issuer)
            .unwrap()
            .der()
            .to_vec();
        let public = x509pop_public_key(&der).unwrap();
        assert_eq!(public.alg, expected);
        assert_eq!(public.key, key.public_key_raw());
    }
    assert!(matches!(
        x509pop_public_key(b"junk"),
        Err(X509PopError::MalformedChain { .. })
    ));
    assert_eq!(modulus_bits(&[0x00, 0x80, 0x00]), 16);
    assert_eq!(modulus_bits(&[0x01, 0x00]), 9);
    assert_eq!(modulus_bits(&[]), 0);
}
