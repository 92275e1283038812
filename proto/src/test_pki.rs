//! Test certificates (feature `test-pki`, and this crate's own tests): a CA
//! with the trust domain ID as URI SAN, intermediates, and leaves that follow
//! the X.509-SVID profile, all made at test time with rcgen. Tests bend the
//! parameters to break one rule each. Never part of a daemon build: every
//! builder panics (`unwrap`) when rcgen fails, as a test would.

use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SignatureAlgorithm, date_time_ymd,
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

    /// The CA as an rcgen issuer, for leaves a test shapes itself.
    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
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

/// A web PKI for an HTTPS server (an `https_web` bundle endpoint): a CA
/// without SPIFFE ID and a serverAuth certificate it signed for the DNS
/// name `host`; returns (CA DER, certificate DER, certificate key).
pub fn web_server_cert(host: &str) -> (Vec<u8>, Vec<u8>, KeyPair) {
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = TestCa::from_params(ca_params);
    let mut leaf = CertificateParams::default();
    leaf.subject_alt_names = vec![dns(host)];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let (cert, key) = ca.sign(&leaf);
    (ca.der, cert, key)
}

/// A node CA's parameters for x509pop (an operator's PKI, no SPIFFE ID):
/// cA=true, keyCertSign + cRLSign, CN `cn`, valid 2020-01-01 to 2040-01-01
/// so that tests attest at a fixed time.
pub fn node_ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2040, 1, 1);
    p
}

/// A node certificate's parameters for x509pop: cA=false, digitalSignature,
/// CN `cn`, the validity of [`node_ca_params`].
pub fn node_leaf_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    // rcgen writes extensions (keyUsage included) only when one of a few
    // others is present; basicConstraints cA=false is one.
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2040, 1, 1);
    p
}

/// An operator's node PKI for x509pop: a root (CN `<name> root`) and an
/// intermediate under it (CN `<name> intermediate`) that signs nodes.
pub struct NodePki {
    pub root: Vec<u8>,
    pub intermediate: Vec<u8>,
    pub issuer: Issuer<'static, KeyPair>,
}

impl NodePki {
    pub fn new(name: &str) -> Self {
        let root_key = KeyPair::generate().unwrap();
        let root_params = node_ca_params(&format!("{name} root"));
        let root = root_params.self_signed(&root_key).unwrap().der().to_vec();
        let root_issuer = Issuer::new(root_params, root_key);
        let inter_key = KeyPair::generate().unwrap();
        let inter_params = node_ca_params(&format!("{name} intermediate"));
        let intermediate = inter_params
            .signed_by(&inter_key, &root_issuer)
            .unwrap()
            .der()
            .to_vec();
        NodePki {
            root,
            intermediate,
            issuer: Issuer::new(inter_params, inter_key),
        }
    }

    /// Signs `params` with the intermediate for a fresh `alg` key; returns
    /// (cert DER, key).
    pub fn sign(
        &self,
        params: &CertificateParams,
        alg: &'static SignatureAlgorithm,
    ) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate_for(alg).unwrap();
        let der = params.signed_by(&key, &self.issuer).unwrap().der().to_vec();
        (der, key)
    }
}

/// A self-signed upstream root CA (an operator's PKI, no SPIFFE ID) for a
/// fresh `alg` key: CN `Test Upstream Root`, keyCertSign + cRLSign, valid
/// from an hour ago for 30 days, with the SHA-1 key identifier OpenSSL
/// writes by default (RFC 5280 §4.2.1.2 method 1).
pub fn upstream_root(alg: &'static SignatureAlgorithm) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "Test Upstream Root");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ski = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        rcgen::PublicKeyData::der_bytes(&key),
    );
    p.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(ski.as_ref().to_vec());
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(30);
    let cert = p.self_signed(&key).unwrap();
    (cert, key)
}
