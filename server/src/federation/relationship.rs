//! The rules a federation relationship must meet before it is stored or
//! used, checked the same way for the admin API and `[[federation]]` in
//! `server.toml`: an `https://` bundle endpoint URL without user
//! information or fragment; for `https_spiffe` an `endpoint_spiffe_id`
//! inside the foreign trust domain; never the server's own trust domain.
//! Each refusal names the field and the value. Also the format of an
//! operator's bundle file ([`BundleFileFormat`]). A leaf (it names only the
//! stored record), so the configuration can check `[[federation]]` with it.

use sigil_proto::TrustDomain;

use crate::store::federation::{EndpointProfile, FederationRecord};

pub use sigil_proto::bundle::endpoint_url::EndpointUrl;

/// Parses `https://host[:port][/path]` ([`sigil_proto::bundle::endpoint_url::parse_url`]);
/// the error names the key and the value.
pub fn parse_url(url: &str) -> Result<EndpointUrl, String> {
    sigil_proto::bundle::endpoint_url::parse_url(url)
        .map_err(|why| format!("bundle_endpoint_url {url:?} {why}"))
}

/// `pem` or `spiffe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleFileFormat {
    Pem,
    Spiffe,
}

impl BundleFileFormat {
    /// `pem` (also the empty string: the default) or `spiffe`.
    pub fn parse(s: &str) -> Result<BundleFileFormat, String> {
        match s {
            "" | "pem" => Ok(BundleFileFormat::Pem),
            "spiffe" | "jwks" => Ok(BundleFileFormat::Spiffe),
            other => Err(format!(
                "trust_domain_bundle_format {other:?}: must be \"pem\" or \"spiffe\""
            )),
        }
    }
}

/// Checks `rel` for a server of trust domain `own`.
pub fn check(rel: &FederationRecord, own: &TrustDomain) -> Result<EndpointUrl, String> {
    let td = &rel.trust_domain;
    if td == own {
        return Err(format!(
            "trust_domain {td} is this server's own trust domain: a server federates with \
             other trust domains only"
        ));
    }
    let url = parse_url(&rel.bundle_endpoint_url)?;
    match rel.profile {
        EndpointProfile::HttpsSpiffe => {
            let Some(id) = &rel.endpoint_spiffe_id else {
                return Err(format!(
                    "endpoint_spiffe_id is required with bundle endpoint profile https_spiffe \
                     (the SPIFFE ID the endpoint of {td} presents, e.g. spiffe://{td}/sigil/server)"
                ));
            };
            if &id.trust_domain() != td {
                return Err(format!(
                    "endpoint_spiffe_id {id} is not in trust domain {td}: the endpoint must \
                     present an SVID of the trust domain it serves"
                ));
            }
            if rel.ca_file.is_some() {
                return Err(
                    "ca_file is only used with profile https_web; https_spiffe checks the \
                     endpoint with the trust domain's own bundle"
                        .into(),
                );
            }
        }
        EndpointProfile::HttpsWeb => {
            if let Some(id) = &rel.endpoint_spiffe_id {
                return Err(format!(
                    "endpoint_spiffe_id {id} is only used with profile https_spiffe; https_web \
                     checks the endpoint's host name with the web PKI"
                ));
            }
            if let Some(f) = &rel.ca_file
                && !f.is_absolute()
            {
                return Err(format!("ca_file {} must be an absolute path", f.display()));
            }
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_proto::SpiffeId;

    fn rel(url: &str, profile: EndpointProfile, id: Option<&str>) -> FederationRecord {
        FederationRecord {
            trust_domain: TrustDomain::parse("b.test").unwrap(),
            bundle_endpoint_url: url.into(),
            profile,
            endpoint_spiffe_id: id.map(|i| SpiffeId::parse(i).unwrap()),
            ca_file: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn item1_relationship_rules_name_the_bad_value() {
        let own = TrustDomain::parse("a.test").unwrap();
        let spiffe = EndpointProfile::HttpsSpiffe;
        let ok = rel(
            "https://b.test:8443/",
            spiffe,
            Some("spiffe://b.test/sigil/server"),
        );
        let u = check(&ok, &own).unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("b.test", 8443, "/")
        );
        let mut own_td = ok.clone();
        own_td.trust_domain = own.clone();
        own_td.endpoint_spiffe_id = Some(SpiffeId::parse("spiffe://a.test/x").unwrap());
        for (r, needle) in [
            (
                rel("http://b.test/", spiffe, Some("spiffe://b.test/s")),
                "must be an https:// URL",
            ),
            (
                rel("https://u:p@b.test/", spiffe, Some("spiffe://b.test/s")),
                "user information",
            ),
            (
                rel("https://b.test/#x", spiffe, Some("spiffe://b.test/s")),
                "fragment",
            ),
            (
                rel("https://b.test/", spiffe, None),
                "endpoint_spiffe_id is required",
            ),
            (
                rel("https://b.test/", spiffe, Some("spiffe://c.test/s")),
                "is not in trust domain b.test",
            ),
            (own_td, "own trust domain"),
        ] {
            let e = check(&r, &own).unwrap_err();
            assert!(e.contains(needle), "{}: {e}", r.bundle_endpoint_url);
        }
        assert!(
            EndpointProfile::parse("https_pki")
                .unwrap_err()
                .contains("\"https_pki\"")
        );
    }
}
