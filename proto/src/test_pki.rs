//! Test certificates (feature `test-pki`, and this crate's own tests): a CA
//! with the trust domain ID as URI SAN, intermediates, and leaves that follow
//! the X.509-SVID profile, all made at test time with rcgen. Tests bend the
//! parameters to break one rule each. Never part of a daemon build.

use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

pub fn uri(s: &str) -> SanType {
    SanType::URI(Ia5String::try_from(s).unwrap())
}

pub fn dns(s: &str) -> SanType {
    SanType::DnsName(Ia5String::try_from(s).unwrap())
}

/// A CA's parameters: cA=true, keyCertSign + cRLSign, URI SAN
/// `spiffe://<td>`, valid from a minute ago for a day. Each call gets
/// its own subject name, so two test CAs never share one by accident.
pub fn ca_params(td: &str) -> CertificateParams {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{td} test CA {n}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.subject_alt_names = vec![uri(&format!("spiffe://{td}"))];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::minutes(1);
    p.not_after = now + Duration::days(1);
    p
}

/// An X.509-SVID leaf's parameters for the given URI SANs: cA=false,
/// critical digitalSignature, serverAuth + clientAuth, SKI and AKI,
/// valid from ten seconds ago for an hour.
pub fn leaf_params(uris: &[&str]) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "SPIFFE");
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    p.subject_alt_names = uris.iter().map(|u| uri(u)).collect();
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::seconds(10);
    p.not_after = now + Duration::hours(1);
    p
}

/// A CA that can sign test leaves.
pub struct TestCa {
    pub der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(td: &str) -> Self {
        Self::from_params(ca_params(td))
    }

    pub fn from_params(params: CertificateParams) -> Self {
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        TestCa {
            der,
            issuer: Issuer::new(params, key),
        }
    }

    /// Signs `params` for a fresh P-256 key; returns (cert DER, key).
    pub fn sign(&self, params: &CertificateParams) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let der = params.signed_by(&key, &self.issuer).unwrap().der().to_vec();
        (der, key)
    }

    /// An intermediate CA for `td` signed by this CA.
    pub fn intermediate(&self, td: &str) -> TestCa {
        let params = ca_params(td);
        let (der, key) = self.sign(&params);
        TestCa {
            der,
            issuer: Issuer::new(params, key),
        }
    }

    /// A profile-conforming leaf for `id`.
    pub fn leaf(&self, id: &str) -> (Vec<u8>, KeyPair) {
        self.sign(&leaf_params(&[id]))
    }
}

/// A self-signed P-384 CA for `td` (DER): the other curve a bundle may use.
pub fn p384_ca(td: &str) -> Vec<u8> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    ca_params(td).self_signed(&key).unwrap().der().to_vec()
}

/// A self-signed certificate for `params` (issuer = subject).
pub fn self_signed(params: &CertificateParams) -> (Vec<u8>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let der = params.self_signed(&key).unwrap().der().to_vec();
    (der, key)
}
