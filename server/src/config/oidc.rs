//! `[oidc_discovery]` (the OIDC discovery endpoint, off by default) of the
//! server's configuration, with its rules: it needs `jwt_issuer` (read in
//! [`super::jwt`]), which must then be an `https://` URL without query,
//! fragment or userinfo (relying parties fetch
//! `<issuer>/.well-known/openid-configuration`), and takes both TLS files
//! or neither (plain HTTP behind a TLS-terminating proxy, warned about).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, invalid};

/// Longest `jwt_issuer` accepted, in bytes.
pub const MAX_ISSUER_LEN: usize = 2048;

/// `[oidc_discovery]`: where the discovery document and `/keys` are served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcDiscoveryConfig {
    pub address: SocketAddr,
    /// PEM certificate chain for HTTPS (with `tls_key_file`); without
    /// both, plain HTTP.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

impl OidcDiscoveryConfig {
    /// The certificate and key files, when HTTPS is configured.
    pub fn tls_files(&self) -> Option<(&PathBuf, &PathBuf)> {
        self.tls_cert_file.as_ref().zip(self.tls_key_file.as_ref())
    }
}

/// Checks `jwt_issuer`: an `https://` URL with a host, no whitespace, no
/// query, fragment or userinfo, at most [`MAX_ISSUER_LEN`] bytes.
pub fn check_issuer(issuer: &str) -> Result<(), ConfigError> {
    let bad = |rule: &str| invalid("jwt_issuer", format!("{issuer:?} {rule}"));
    if issuer.len() > MAX_ISSUER_LEN {
        return Err(bad(&format!("is longer than {MAX_ISSUER_LEN} bytes")));
    }
    let Some(rest) = issuer.strip_prefix("https://") else {
        return Err(bad(
            "must be an https:// URL (OIDC issuers are HTTPS; relying parties fetch \
             <issuer>/.well-known/openid-configuration)",
        ));
    };
    if issuer.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain whitespace or control characters"));
    }
    if issuer.contains(['?', '#']) {
        return Err(bad("must not have a query or fragment"));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("has no host"));
    }
    if authority.contains('@') {
        return Err(bad("must not carry userinfo (user@host)"));
    }
    Ok(())
}

/// Checks `[oidc_discovery]` against `jwt_issuer`.
pub fn check_discovery(
    d: &OidcDiscoveryConfig,
    jwt_issuer: Option<&str>,
) -> Result<(), ConfigError> {
    let Some(issuer) = jwt_issuer else {
        return Err(invalid(
            "jwt_issuer",
            "[oidc_discovery] is configured but jwt_issuer is not: the discovery document's \
             issuer and the tokens' iss claim come from it; set jwt_issuer = \"https://…\" \
             (the URL relying parties reach this endpoint at)",
        ));
    };
    check_issuer(issuer)?;
    match (&d.tls_cert_file, &d.tls_key_file) {
        (Some(_), None) => Err(invalid(
            "oidc_discovery.tls_key_file",
            "is missing: tls_cert_file is set, HTTPS needs both files",
        )),
        (None, Some(_)) => Err(invalid(
            "oidc_discovery.tls_cert_file",
            "is missing: tls_key_file is set, HTTPS needs both files",
        )),
        _ => Ok(()),
    }
}

/// The warning about plain HTTP, when discovery runs without TLS files.
pub fn plain_http_warning(d: &OidcDiscoveryConfig) -> Option<String> {
    d.tls_files().is_none().then(|| {
        format!(
            "oidc_discovery at {} serves plain HTTP (no tls_cert_file/tls_key_file): only \
             behind a TLS-terminating proxy; relying parties fetch the issuer over HTTPS",
            d.address
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_https_urls_without_query_fragment_or_userinfo() {
        for ok in [
            "https://oidc.example.org",
            "https://oidc.example.org:8444",
            "https://example.org/tenant/1",
        ] {
            check_issuer(ok).unwrap();
        }
        for (bad, needle) in [
            ("http://oidc.example.org", "must be an https:// URL"),
            ("oidc.example.org", "must be an https:// URL"),
            ("https://", "has no host"),
            ("https:///x", "has no host"),
            ("https://a.org/?x=1", "query or fragment"),
            ("https://a.org/#f", "query or fragment"),
            ("https://u@a.org", "userinfo"),
            ("https://a.org/ x", "whitespace"),
        ] {
            let e = check_issuer(bad).unwrap_err().to_string();
            assert!(e.contains("jwt_issuer") && e.contains(needle), "{bad}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        let long = format!("https://a.org/{}", "x".repeat(MAX_ISSUER_LEN));
        assert!(
            check_issuer(&long)
                .unwrap_err()
                .to_string()
                .contains("longer than")
        );
    }

    const MINIMAL: &str = "trust_domain = \"example.org\"\ndata_dir = \"/tmp/x\"\n";

    fn parse(extra: &str) -> Result<crate::config::ServerConfig, ConfigError> {
        crate::config::ServerConfig::parse(&format!("{MINIMAL}{extra}"))
    }

    #[test]
    fn item1_discovery_without_jwt_issuer_is_refused_and_plain_http_is_warned_about() {
        let c = parse("").unwrap();
        assert!(
            c.oidc_discovery.is_none() && c.jwt.issuer.is_none(),
            "off by default"
        );
        let e = parse("[oidc_discovery]\naddress = \"127.0.0.1:8444\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("jwt_issuer") && e.contains("[oidc_discovery]"),
            "{e}"
        );
        let e = parse(
            "jwt_issuer = \"https://o.example.org\"\n[oidc_discovery]\naddress = \"127.0.0.1:1\"\n\
             tls_cert_file = \"/c.pem\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("oidc_discovery.tls_key_file"), "{e}");
        // JS's jwt_issuer rule allows http:// for the iss claim alone;
        // discovery needs https://.
        parse("jwt_issuer = \"http://o.example.org\"\n").unwrap();
        let e = parse(
            "jwt_issuer = \"http://o.example.org\"\n[oidc_discovery]\naddress = \"127.0.0.1:1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("jwt_issuer") && e.contains("https://"), "{e}");
        let e = parse(
            "jwt_issuer = \"https://o.example.org\"\n[oidc_discovery]\naddress = \"127.0.0.1:1\"\nport = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("port"), "{e}");

        let plain = parse(
            "jwt_issuer = \"https://o.example.org\"\n[oidc_discovery]\naddress = \"127.0.0.1:8444\"\n",
        )
        .unwrap();
        assert_eq!(plain.jwt.issuer.as_deref(), Some("https://o.example.org"));
        let w = plain.warnings();
        assert!(w.iter().any(|w| w.contains("plain HTTP")), "{w:?}");
        let tls = parse(
            "jwt_issuer = \"https://o.example.org\"\n[oidc_discovery]\naddress = \"127.0.0.1:8444\"\n\
             tls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"\n",
        )
        .unwrap();
        assert!(tls.warnings().is_empty(), "{:?}", tls.warnings());
        let e = tls.check_paths().unwrap_err().to_string();
        assert!(e.contains("oidc_discovery.tls_cert_file"), "{e}");
    }
}
