//! What `sigil-agent api fetch x509` and `api watch` say about an
//! `X509SVIDResponse`: per SVID its SPIFFE ID, hint, serial, validity and
//! chain (subject and issuer of each certificate), then the bundle's CAs
//! and any federated bundles. One model, printed as text or serialized as
//! JSON (times RFC 3339, serials lowercase hex as in the helper's logs).

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;
use sigil_proto::workload as wl;

/// One certificate, as an operator compares it with `openssl x509`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
}

/// One X.509-SVID: its leaf's facts and its whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SvidInfo {
    pub spiffe_id: String,
    pub hint: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    /// The same as `not_after` (the field older versions printed).
    pub expires_at: String,
    /// Leaf first, then the intermediates.
    pub chain: Vec<CertInfo>,
}

/// A whole response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub svids: Vec<SvidInfo>,
    /// The own trust domain's CAs (the bundle every SVID carries).
    pub bundle: Vec<CertInfo>,
    /// Federated trust domain ID to its CAs.
    pub federated_bundles: BTreeMap<String, Vec<CertInfo>>,
}

/// RFC 3339 of unix seconds (the number itself if out of range).
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// DER certificates of a chain or bundle field (DER, or PEM from a
/// non-conforming agent).
pub fn split_certs(bytes: &[u8], what: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    sigil_proto::pem::certs_from_pem_or_der(bytes)
        .with_context(|| format!("the agent sent an invalid {what}"))
}

fn cert_info(der: &[u8], what: &str) -> anyhow::Result<CertInfo> {
    let (_, c) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow::anyhow!("the agent sent an unparsable certificate in {what}: {e}"))?;
    Ok(CertInfo {
        subject: c.subject().to_string(),
        issuer: c.issuer().to_string(),
        serial: hex::encode(c.raw_serial()),
        not_before: rfc3339(c.validity().not_before.timestamp()),
        not_after: rfc3339(c.validity().not_after.timestamp()),
    })
}

fn certs_info(bytes: &[u8], what: &str) -> anyhow::Result<Vec<CertInfo>> {
    split_certs(bytes, what)?
        .iter()
        .map(|d| cert_info(d, what))
        .collect()
}

impl Report {
    pub fn from_response(r: &wl::X509svidResponse) -> anyhow::Result<Report> {
        let svids = r
            .svids
            .iter()
            .map(|s| {
                let what = format!("the chain of {}", s.spiffe_id);
                let chain = certs_info(&s.x509_svid, &what)?;
                let leaf = chain.first().with_context(|| format!("{what} is empty"))?;
                Ok(SvidInfo {
                    spiffe_id: s.spiffe_id.clone(),
                    hint: s.hint.clone(),
                    serial: leaf.serial.clone(),
                    not_before: leaf.not_before.clone(),
                    not_after: leaf.not_after.clone(),
                    expires_at: leaf.not_after.clone(),
                    chain,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bundle = match r.svids.first() {
            Some(s) => certs_info(&s.bundle, "bundle")?,
            None => Vec::new(),
        };
        let federated_bundles = r
            .federated_bundles
            .iter()
            .map(|(td, b)| Ok((td.clone(), certs_info(b, &format!("bundle of {td}"))?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Report {
            svids,
            bundle,
            federated_bundles,
        })
    }

    /// The SVIDs, then the bundles, for `api fetch x509`.
    pub fn text(&self) -> String {
        let mut t = String::new();
        for s in &self.svids {
            t.push_str(&format!("SPIFFE ID:  {}\n", s.spiffe_id));
            if !s.hint.is_empty() {
                t.push_str(&format!("Hint:       {}\n", s.hint));
            }
            t.push_str(&format!("Serial:     {}\n", s.serial));
            t.push_str(&format!("Not before: {}\n", s.not_before));
            t.push_str(&format!("Not after:  {}\n", s.not_after));
            t.push_str("Chain:\n");
            for (i, c) in s.chain.iter().enumerate() {
                t.push_str(&format!("  [{i}] subject: {}\n", c.subject));
                t.push_str(&format!("      issuer: {}\n", c.issuer));
            }
            t.push('\n');
        }
        t.push_str(&self.bundle_text());
        t
    }

    /// The bundle and federated bundles, one CA per line.
    pub fn bundle_text(&self) -> String {
        let mut t = format!("Bundle ({} CA(s)):\n", self.bundle.len());
        for c in &self.bundle {
            t.push_str(&ca_line(c));
        }
        for (td, cas) in &self.federated_bundles {
            t.push_str(&format!("Federated bundle {td} ({} CA(s)):\n", cas.len()));
            for c in cas {
                t.push_str(&ca_line(c));
            }
        }
        t
    }
}

fn ca_line(c: &CertInfo) -> String {
    format!(
        "  subject: {}  serial: {}  not before: {}  not after: {}\n",
        c.subject, c.serial, c.not_before, c.not_after
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_proto::test_pki::TestCa;

    #[test]
    fn a_response_reports_serial_validity_chain_and_bundle() {
        let ca = TestCa::new("example.org");
        let (leaf, _) = ca.leaf("spiffe://example.org/w");
        let r = wl::X509svidResponse {
            svids: vec![wl::X509svid {
                spiffe_id: "spiffe://example.org/w".into(),
                x509_svid: leaf.clone(),
                x509_svid_key: vec![],
                bundle: ca.der.clone(),
                hint: "web".into(),
            }],
            ..Default::default()
        };
        let rep = Report::from_response(&r).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        let s = &rep.svids[0];
        assert_eq!(s.serial, hex::encode(c.raw_serial()));
        assert_eq!(s.chain.len(), 1);
        assert_eq!(s.chain[0].issuer, rep.bundle[0].subject);
        assert!(s.not_after.ends_with('Z'), "{}", s.not_after);
        let t = rep.text();
        assert!(t.contains("Hint:       web"), "{t}");
        assert!(t.contains("Bundle (1 CA(s)):"), "{t}");
    }
}
