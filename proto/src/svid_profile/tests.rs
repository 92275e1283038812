//! Tests of the X.509-SVID profile checks: a conforming leaf and CA, then
//! one test certificate per rule broken.

use rcgen::{
    CustomExtension, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, KeyUsagePurpose,
    NameConstraints, PublicKeyData, SerialNumber,
};

use super::*;
use crate::test_pki::{TestCa, ca_params, dns, leaf_params, self_signed, uri};

const ID: &str = "spiffe://example.org/ns/prod/sa/web";

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn leaf_err(ca: &TestCa, params: &rcgen::CertificateParams) -> ProfileError {
    let (der, _) = ca.sign(params);
    check_leaf(&der).expect_err("leaf must be refused")
}

#[test]
fn good_leaf_is_accepted_and_described() {
    let ca = TestCa::new("example.org");
    let mut p = leaf_params(&[ID]);
    p.subject_alt_names.push(dns("web.example.org"));
    p.subject_alt_names.push(dns("web"));
    p.serial_number = Some(SerialNumber::from_slice(&[0x00, 0x00, 0x8a, 0x01]));
    let (der, key) = ca.sign(&p);
    let info = check_leaf(&der).unwrap();
    assert_eq!(info.spiffe_id.as_str(), ID);
    assert_eq!(info.dns_names, vec!["web.example.org", "web"]);
    assert_eq!(info.serial_hex, "8a01");
    assert_eq!(info.not_before, p.not_before.unix_timestamp());
    assert_eq!(info.not_after, p.not_after.unix_timestamp());
    assert_eq!(info.spki_der, key.subject_public_key_info());
    assert!(!info.ski.is_empty());
    let ca_info = check_signing_cert(&ca.der, &td()).unwrap();
    assert_eq!(info.aki.as_deref(), Some(ca_info.ski.as_slice()));
    assert_eq!(leaf_spiffe_id(&der).unwrap().as_str(), ID);
}

#[test]
fn leaf_uri_san_count() {
    let ca = TestCa::new("example.org");
    let two = leaf_params(&[ID, "spiffe://example.org/other"]);
    assert_eq!(
        leaf_err(&ca, &two),
        ProfileError::UriSanCount {
            role: ROLE_LEAF,
            found: 2
        }
    );
    let mut none = leaf_params(&[]);
    none.subject_alt_names = vec![dns("web.example.org")];
    let err = leaf_err(&ca, &none);
    assert_eq!(
        err,
        ProfileError::UriSanCount {
            role: ROLE_LEAF,
            found: 0
        }
    );
    assert_eq!(
        err.to_string(),
        "X.509-SVID leaf must have exactly one URI SAN, found 0"
    );
    // No SAN extension at all.
    assert_eq!(
        leaf_err(&ca, &leaf_params(&[])),
        ProfileError::UriSanCount {
            role: ROLE_LEAF,
            found: 0
        }
    );
}

#[test]
fn leaf_uri_must_be_spiffe_id_with_path() {
    let ca = TestCa::new("example.org");
    match leaf_err(&ca, &leaf_params(&["https://example.org/x"])) {
        ProfileError::BadSpiffeId { uri, source, .. } => {
            assert_eq!(uri, "https://example.org/x");
            assert!(matches!(source, SpiffeIdError::WrongScheme { .. }));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        leaf_err(&ca, &leaf_params(&["spiffe://Example.org/x"])),
        ProfileError::BadSpiffeId {
            source: SpiffeIdError::UppercaseTrustDomain { .. },
            ..
        }
    ));
    assert_eq!(
        leaf_err(&ca, &leaf_params(&["spiffe://example.org"])),
        ProfileError::LeafWithoutPath {
            id: "spiffe://example.org".into()
        }
    );
}

#[test]
fn leaf_basic_constraints() {
    let ca = TestCa::new("example.org");
    let mut is_ca = leaf_params(&[ID]);
    is_ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    assert_eq!(leaf_err(&ca, &is_ca), ProfileError::LeafIsCa);

    // No basicConstraints (rcgen then also omits the SKI; add one so
    // the basicConstraints rule is the one that fails).
    let mut missing = leaf_params(&[ID]);
    missing.is_ca = IsCa::NoCa;
    let mut ski = CustomExtension::from_oid_content(&[2, 5, 29, 14], vec![0x04, 0x02, 1, 2]);
    ski.set_criticality(false);
    missing.custom_extensions.push(ski);
    assert_eq!(
        leaf_err(&ca, &missing),
        ProfileError::MissingBasicConstraints { role: ROLE_LEAF }
    );
}

#[test]
fn leaf_key_usage() {
    let ca = TestCa::new("example.org");
    let mut missing = leaf_params(&[ID]);
    missing.key_usages.clear();
    assert_eq!(
        leaf_err(&ca, &missing),
        ProfileError::MissingKeyUsage { role: ROLE_LEAF }
    );

    let mut non_critical = leaf_params(&[ID]);
    non_critical.key_usages.clear();
    // keyUsage BIT STRING with only digitalSignature set.
    let mut ku = CustomExtension::from_oid_content(&[2, 5, 29, 15], vec![0x03, 0x02, 0x07, 0x80]);
    ku.set_criticality(false);
    non_critical.custom_extensions.push(ku);
    assert_eq!(
        leaf_err(&ca, &non_critical),
        ProfileError::KeyUsageNotCritical { role: ROLE_LEAF }
    );

    let mut no_ds = leaf_params(&[ID]);
    no_ds.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    assert_eq!(
        leaf_err(&ca, &no_ds),
        ProfileError::KeyUsageMissing {
            role: ROLE_LEAF,
            usage: "digitalSignature"
        }
    );

    let mut cert_sign = leaf_params(&[ID]);
    cert_sign.key_usages.push(KeyUsagePurpose::KeyCertSign);
    assert_eq!(
        leaf_err(&ca, &cert_sign),
        ProfileError::LeafKeyUsageForbidden {
            usage: "keyCertSign"
        }
    );

    let mut crl_sign = leaf_params(&[ID]);
    crl_sign.key_usages.push(KeyUsagePurpose::CrlSign);
    assert_eq!(
        leaf_err(&ca, &crl_sign),
        ProfileError::LeafKeyUsageForbidden { usage: "cRLSign" }
    );
}

#[test]
fn leaf_ext_key_usage() {
    let ca = TestCa::new("example.org");
    let mut server_only = leaf_params(&[ID]);
    server_only.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    assert_eq!(
        leaf_err(&ca, &server_only),
        ProfileError::ExtKeyUsageMissing {
            purpose: "clientAuth"
        }
    );
    let mut client_only = leaf_params(&[ID]);
    client_only.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    assert_eq!(
        leaf_err(&ca, &client_only),
        ProfileError::ExtKeyUsageMissing {
            purpose: "serverAuth"
        }
    );
    let mut none = leaf_params(&[ID]);
    none.extended_key_usages.clear();
    assert_eq!(leaf_err(&ca, &none), ProfileError::MissingExtKeyUsage);
}

#[test]
fn leaf_key_identifiers() {
    let ca = TestCa::new("example.org");
    let mut no_aki = leaf_params(&[ID]);
    no_aki.use_authority_key_identifier_extension = false;
    assert_eq!(leaf_err(&ca, &no_aki), ProfileError::MissingAuthorityKeyId);

    // basicConstraints (cA=false, an empty SEQUENCE) without an SKI.
    let mut no_ski = leaf_params(&[ID]);
    no_ski.is_ca = IsCa::NoCa;
    let mut bc = CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x00]);
    bc.set_criticality(true);
    no_ski.custom_extensions.push(bc);
    assert_eq!(
        leaf_err(&ca, &no_ski),
        ProfileError::MissingSubjectKeyId { role: ROLE_LEAF }
    );

    // A second SKI next to the one rcgen writes.
    let mut dup = leaf_params(&[ID]);
    dup.custom_extensions
        .push(CustomExtension::from_oid_content(
            &[2, 5, 29, 14],
            vec![0x04, 0x02, 1, 2],
        ));
    assert_eq!(
        leaf_err(&ca, &dup),
        ProfileError::DuplicateExtension {
            role: ROLE_LEAF,
            oid: "2.5.29.14".into()
        }
    );
}

#[test]
fn malformed_extension_is_refused() {
    let ca = TestCa::new("example.org");
    let mut p = leaf_params(&[ID]);
    p.key_usages.clear();
    // A keyUsage whose value is NULL instead of a BIT STRING.
    let mut ku = CustomExtension::from_oid_content(&[2, 5, 29, 15], vec![0x05, 0x00]);
    ku.set_criticality(true);
    p.custom_extensions.push(ku);
    let err = leaf_err(&ca, &p);
    assert!(
        matches!(
            err,
            ProfileError::MalformedExtension {
                extension: "keyUsage",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn leaf_serial_must_be_positive() {
    let ca = TestCa::new("example.org");
    let mut zero = leaf_params(&[ID]);
    zero.serial_number = Some(SerialNumber::from_slice(&[0]));
    assert_eq!(
        leaf_err(&ca, &zero),
        ProfileError::ZeroSerial { role: ROLE_LEAF }
    );

    // rcgen always encodes serials as positive: flip the sign bit of a
    // recognisable serial in the DER (same length, so still valid DER).
    let marker = [0x5a, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77];
    let mut neg = leaf_params(&[ID]);
    neg.serial_number = Some(SerialNumber::from_slice(&marker));
    let (mut der, _) = ca.sign(&neg);
    let at = der.windows(marker.len()).position(|w| w == marker).unwrap();
    der[at] = 0xda;
    assert_eq!(
        check_leaf(&der).unwrap_err(),
        ProfileError::NegativeSerial {
            role: ROLE_LEAF,
            serial_hex: "da11223344556677".into()
        }
    );
}

#[test]
fn garbage_is_refused() {
    assert!(matches!(
        check_leaf(b"not a certificate"),
        Err(ProfileError::NotX509 { .. })
    ));
    assert!(matches!(check_leaf(&[]), Err(ProfileError::NotX509 { .. })));
    assert!(matches!(
        check_signing_cert(&[0x30, 0x03, 0x02, 0x01, 0x01], &td()),
        Err(ProfileError::NotX509 { .. })
    ));
    let ca = TestCa::new("example.org");
    let (mut der, _) = ca.leaf(ID);
    der.push(0);
    assert_eq!(
        check_leaf(&der).unwrap_err(),
        ProfileError::TrailingData { len: 1 }
    );
}

#[test]
fn good_signing_cert() {
    let ca = TestCa::new("example.org");
    let info = check_signing_cert(&ca.der, &td()).unwrap();
    assert!(!info.ski.is_empty());
    assert!(info.not_after > info.not_before);
    assert!(!info.serial_hex.is_empty());
    assert!(!info.serial_hex.starts_with("00"));
    // An intermediate signed by another CA passes too.
    let root = TestCa::new("example.org");
    let (der, _) = root.sign(&ca_params("example.org"));
    check_signing_cert(&der, &td()).unwrap();
}

#[test]
fn signing_cert_rules() {
    let td = td();
    let err = |p: rcgen::CertificateParams| check_signing_cert(&self_signed(&p).0, &td);

    let mut path = ca_params("example.org");
    path.subject_alt_names = vec![uri("spiffe://example.org/ca")];
    let e = err(path).unwrap_err();
    assert_eq!(
        e,
        ProfileError::NotTrustDomainId {
            role: ROLE_SIGNING,
            uri: "spiffe://example.org/ca".into(),
            expected: "spiffe://example.org".into()
        }
    );
    assert!(e.to_string().contains("must be the trust domain ID"), "{e}");

    let other_td = ca_params("other.org");
    assert!(matches!(
        err(other_td),
        Err(ProfileError::NotTrustDomainId { .. })
    ));

    let mut two = ca_params("example.org");
    two.subject_alt_names.push(uri("spiffe://example.org/x"));
    assert_eq!(
        err(two),
        Err(ProfileError::UriSanCount {
            role: ROLE_SIGNING,
            found: 2
        })
    );

    let mut no_uri = ca_params("example.org");
    no_uri.subject_alt_names.clear();
    assert_eq!(
        err(no_uri),
        Err(ProfileError::UriSanCount {
            role: ROLE_SIGNING,
            found: 0
        })
    );

    let mut not_ca = ca_params("example.org");
    not_ca.is_ca = IsCa::ExplicitNoCa;
    assert_eq!(err(not_ca), Err(ProfileError::SigningNotCa));

    let mut no_cert_sign = ca_params("example.org");
    no_cert_sign.key_usages = vec![KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    assert_eq!(
        err(no_cert_sign),
        Err(ProfileError::KeyUsageMissing {
            role: ROLE_SIGNING,
            usage: "keyCertSign"
        })
    );

    let mut no_ku = ca_params("example.org");
    no_ku.key_usages.clear();
    assert_eq!(
        err(no_ku),
        Err(ProfileError::MissingKeyUsage { role: ROLE_SIGNING })
    );

    let mut constrained = ca_params("example.org");
    constrained.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DnsName("example.org".into())],
        excluded_subtrees: vec![],
    });
    assert_eq!(err(constrained), Err(ProfileError::NameConstraints));

    // A leaf is not a signing certificate.
    let ca = TestCa::new("example.org");
    let (leaf, _) = ca.leaf(ID);
    assert_eq!(
        check_signing_cert(&leaf, &td),
        Err(ProfileError::SigningNotCa)
    );
}
