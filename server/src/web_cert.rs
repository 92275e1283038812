//! Checks of the operator's `https_web` bundle endpoint certificate, made
//! when it is loaded (at start and by `validate`): what would make federated
//! relying parties refuse it. Pure: DER chain, listen address and time in,
//! warnings out. None stops the server (the endpoint may sit behind a proxy
//! or a name the server cannot know), but each names the fix.

use std::net::{IpAddr, SocketAddr};

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// Warnings about `chain` (DER, leaf first) served on `address` at `now`
/// (unix seconds).
pub fn warnings(chain: &[Vec<u8>], address: SocketAddr, now: i64) -> Vec<String> {
    let mut w = Vec::new();
    let Some(leaf_der) = chain.first() else {
        return vec!["bundle_endpoint.cert_file holds no certificate".into()];
    };
    let Ok((_, leaf)) = x509_parser::certificate::X509Certificate::from_der(leaf_der) else {
        return vec!["bundle_endpoint.cert_file: the first certificate does not parse".into()];
    };
    let validity = leaf.validity();
    if now >= validity.not_after.timestamp() {
        w.push(format!(
            "bundle_endpoint.cert_file expired at {}: relying parties will refuse the bundle \
             endpoint; renew the certificate",
            validity.not_after
        ));
    } else if now < validity.not_before.timestamp() {
        w.push(format!(
            "bundle_endpoint.cert_file is not valid before {}: relying parties will refuse it \
             until then",
            validity.not_before
        ));
    }
    let (mut dns, mut ips, mut uris) = (Vec::new(), Vec::new(), 0usize);
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns.push((*d).to_string()),
                GeneralName::IPAddress(b) => ips.push(b.to_vec()),
                GeneralName::URI(_) => uris += 1,
                _ => {}
            }
        }
    }
    if dns.is_empty() && ips.is_empty() {
        w.push(
            "bundle_endpoint.cert_file has no DNS or IP subjectAltName: web PKI clients match \
             the bundle endpoint URL's host against those and will refuse it"
                .into(),
        );
    } else if dns.is_empty() && !address.ip().is_unspecified() {
        let want = match address.ip() {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        if !ips.contains(&want) {
            w.push(format!(
                "bundle_endpoint.cert_file names no DNS host and not the listen address {}: a \
                 relying party using https://{address}/ will refuse it",
                address.ip()
            ));
        }
    }
    // webpki (Sigil's verifiers, and rustls-based relying parties) fails
    // closed on URI name constraints when the leaf has a URI SAN.
    let constrained = chain
        .iter()
        .skip(1)
        .any(|der| has_uri_name_constraints(der));
    if constrained && uris > 0 {
        w.push(
            "bundle_endpoint.cert_file has a URI subjectAltName under a CA with URI name \
             constraints: webpki-based clients (Sigil's own included) refuse such chains; use \
             a certificate without URI SANs"
                .into(),
        );
    }
    w
}

/// Whether the certificate `der` carries nameConstraints with a URI
/// subtree, on which webpki fails closed for every leaf with a URI SAN
/// (every SVID). `false` when it does not parse.
pub fn has_uri_name_constraints(der: &[u8]) -> bool {
    x509_parser::certificate::X509Certificate::from_der(der).is_ok_and(|(_, c)| {
        c.extensions().iter().any(|e| match e.parsed_extension() {
            ParsedExtension::NameConstraints(nc) => nc
                .permitted_subtrees
                .iter()
                .chain(nc.excluded_subtrees.iter())
                .flatten()
                .any(|s| matches!(s.base, GeneralName::URI(_))),
            _ => false,
        })
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    const NOW: i64 = 1_800_000_000;

    fn t(s: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(s).unwrap()
    }

    fn cert(sans: Vec<SanType>, not_after: i64) -> Vec<u8> {
        let mut p = CertificateParams::default();
        p.subject_alt_names = sans;
        p.not_before = t(NOW - 3600);
        p.not_after = t(not_after);
        p.self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_good_certificate_has_no_warning() {
        let c = cert(
            vec![SanType::DnsName("bundle.example.org".try_into().unwrap())],
            NOW + 86_400,
        );
        assert!(warnings(std::slice::from_ref(&c), addr("0.0.0.0:8443"), NOW).is_empty());
        assert!(warnings(&[c], addr("10.0.0.5:8443"), NOW).is_empty());
        let ip = cert(
            vec![SanType::IpAddress("10.0.0.5".parse().unwrap())],
            NOW + 86_400,
        );
        assert!(warnings(&[ip], addr("10.0.0.5:8443"), NOW).is_empty());
    }

    #[test]
    fn problems_are_named() {
        let expired = cert(
            vec![SanType::DnsName("b.example.org".try_into().unwrap())],
            NOW - 1,
        );
        let w = warnings(&[expired], addr("0.0.0.0:8443"), NOW);
        assert!(w.len() == 1 && w[0].contains("expired"), "{w:?}");

        let no_san = cert(vec![], NOW + 86_400);
        let w = warnings(&[no_san], addr("0.0.0.0:8443"), NOW);
        assert!(
            w.len() == 1 && w[0].contains("no DNS or IP subjectAltName"),
            "{w:?}"
        );

        let other_ip = cert(
            vec![SanType::IpAddress("10.0.0.6".parse().unwrap())],
            NOW + 86_400,
        );
        let w = warnings(&[other_ip], addr("10.0.0.5:8443"), NOW);
        assert!(
            w.len() == 1 && w[0].contains("not the listen address 10.0.0.5"),
            "{w:?}"
        );
    }

    /// A CA whose nameConstraints permit only `spiffe://example.org` (a
    /// URI subtree, written by hand: rcgen has none); its DER, params, key.
    pub(crate) fn uri_constrained_ca() -> (Vec<u8>, CertificateParams, KeyPair) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        // NameConstraints { permittedSubtrees [0] { GeneralSubtree { [6] uri } } }
        let uri = b"spiffe://example.org";
        let mut subtree = vec![0x86, uri.len() as u8];
        subtree.extend_from_slice(uri);
        let mut seq = vec![0x30, subtree.len() as u8];
        seq.extend(subtree);
        let mut permitted = vec![0xa0, seq.len() as u8];
        permitted.extend(seq);
        let mut nc = vec![0x30, permitted.len() as u8];
        nc.extend(permitted);
        let mut ext = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 30], nc);
        ext.set_criticality(true);
        ca.custom_extensions.push(ext);
        let ca_der = ca.self_signed(&ca_key).unwrap().der().to_vec();
        (ca_der, ca, ca_key)
    }

    #[test]
    fn uri_sans_under_uri_name_constraints_are_flagged() {
        let (ca_der, ca, ca_key) = uri_constrained_ca();
        assert!(has_uri_name_constraints(&ca_der));
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![
            SanType::DnsName("b.example.org".try_into().unwrap()),
            SanType::URI("spiffe://example.org/x".try_into().unwrap()),
        ];
        p.not_before = t(NOW - 60);
        p.not_after = t(NOW + 3600);
        let leaf = p
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap()
            .der()
            .to_vec();
        let w = warnings(&[leaf, ca_der], addr("0.0.0.0:8443"), NOW);
        assert!(
            w.len() == 1 && w[0].contains("URI name constraints"),
            "{w:?}"
        );
    }
}
