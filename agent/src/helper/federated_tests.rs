//! The helper's federated bundle files (issue 16 item 3): what the
//! Workload API sends as `federated_bundles` is written to
//! `federated_bundle.pem`, and appended to `bundle.pem` only when
//! `include_federated_domains` asks for it.

use std::collections::HashMap;

use super::*;

fn cert() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.self_signed(&key).unwrap().der().to_vec()
}

fn response(leaf: &[u8], own: &[u8], federated: &[(&str, Vec<u8>)]) -> wl::X509svidResponse {
    wl::X509svidResponse {
        svids: vec![wl::X509svid {
            spiffe_id: "spiffe://a.test/w".into(),
            x509_svid: leaf.to_vec(),
            x509_svid_key: vec![1, 2, 3],
            bundle: own.to_vec(),
            hint: String::new(),
        }],
        crl: Vec::new(),
        federated_bundles: federated
            .iter()
            .map(|(td, der)| (td.to_string(), der.clone()))
            .collect::<HashMap<_, _>>(),
    }
}

fn helper(dir: &Path, extra: &str) -> Helper {
    let cfg = HelperConfig::parse(&format!("cert_dir = {:?}\n{extra}", dir.display())).unwrap();
    Helper {
        cfg,
        socket: PathBuf::from("/nonexistent"),
        last: None,
    }
}

fn certs_in(path: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read(path).unwrap();
    if text.is_empty() {
        return Vec::new();
    }
    sigil_proto::pem::from_pem(&text).unwrap()
}

/// Publishes what the Workload API would send; whether files changed.
async fn publish(h: &mut Helper, leaf: &[u8], own: &[u8], fed: &[(&str, Vec<u8>)]) -> bool {
    let m = select(response(leaf, own, fed), None).unwrap();
    h.publish(&m, &Default::default()).await.unwrap()
}

#[tokio::test]
async fn i16_3_helper_writes_federated_bundle_pem_and_appends_only_when_asked() {
    let (leaf, own, b1, b2, c1) = (cert(), cert(), cert(), cert(), cert());
    let dir = tempfile::tempdir().unwrap();
    let mut h = helper(dir.path(), "");
    let fed = [
        ("spiffe://c.test", c1.clone()),
        ("spiffe://b.test", [b1.clone(), b2.clone()].concat()),
    ];
    assert!(publish(&mut h, &leaf, &own, &fed).await);
    assert_eq!(
        certs_in(&dir.path().join("federated_bundle.pem")),
        [b1.clone(), b2.clone(), c1.clone()],
        "every federated CA, in trust domain order"
    );
    assert_eq!(
        certs_in(&dir.path().join("bundle.pem")),
        vec![own.clone()],
        "bundle.pem is the own trust domain's unless include_federated_domains"
    );

    // A changed federated bundle alone is an update.
    let fed = [("spiffe://b.test", b2.clone())];
    assert!(
        publish(&mut h, &leaf, &own, &fed).await,
        "a federated bundle change rewrites the files"
    );
    assert_eq!(
        certs_in(&dir.path().join("federated_bundle.pem")),
        vec![b2.clone()]
    );
    // An emptied ("all revoked") bundle, then none: an empty file.
    let fed = [("spiffe://b.test", Vec::new())];
    assert!(publish(&mut h, &leaf, &own, &fed).await);
    assert!(certs_in(&dir.path().join("federated_bundle.pem")).is_empty());

    // include_federated_domains: bundle.pem has both.
    let dir2 = tempfile::tempdir().unwrap();
    let mut h = helper(
        dir2.path(),
        "include_federated_domains = true\nfederated_bundle_file_name = \"fed.pem\"\n",
    );
    let fed = [("spiffe://b.test", b1.clone())];
    assert!(publish(&mut h, &leaf, &own, &fed).await);
    assert_eq!(
        certs_in(&dir2.path().join("bundle.pem")),
        [own.clone(), b1.clone()]
    );
    assert_eq!(certs_in(&dir2.path().join("fed.pem")), vec![b1.clone()]);

    // A federated bundle that is not DER certificates is refused (the
    // update is skipped, never half written).
    let bad = [("spiffe://b.test", b"garbage".to_vec())];
    let e = select(response(&leaf, &own, &bad), None).unwrap_err();
    assert!(format!("{e:#}").contains("spiffe://b.test"), "{e:#}");
}
