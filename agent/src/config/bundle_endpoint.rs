//! `[bundle_endpoint]`: where the agent fetches its trust bundle when the
//! bundle it stored no longer verifies the server (it was offline through a
//! whole CA rotation). The server's `https_web` bundle endpoint is checked
//! with the web PKI (`ca_file`, normal hostname verification), never with
//! the SPIFFE bundle it is meant to replace, and never insecurely.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, invalid};

/// The system roots file `ca_file` defaults to.
pub const DEFAULT_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBundleEndpoint {
    url: String,
    ca_file: Option<PathBuf>,
}

/// A checked `[bundle_endpoint]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEndpointConfig {
    /// The URL as written (for logs and `/ready`).
    pub url: String,
    /// The host name the certificate must carry (DNS name or IP address).
    pub host: String,
    pub port: u16,
    /// Path and query sent in the request (`/` when the URL has none).
    pub path: String,
    /// PEM roots the endpoint's certificate must chain to.
    pub ca_file: PathBuf,
}

impl BundleEndpointConfig {
    /// The URL as the shared fetch takes it.
    pub fn endpoint_url(&self) -> sigil_proto::bundle::endpoint_url::EndpointUrl {
        sigil_proto::bundle::endpoint_url::EndpointUrl {
            host: self.host.clone(),
            port: self.port,
            path: self.path.clone(),
        }
    }
}

impl RawBundleEndpoint {
    /// Checks the URL (`https://host[:port][/path]`, no user info, no
    /// fragment: [`sigil_proto::bundle::endpoint_url::parse_url`]) and the
    /// roots file path; each message names the key and the value.
    pub fn check(self) -> Result<BundleEndpointConfig, ConfigError> {
        let u = sigil_proto::bundle::endpoint_url::parse_url(&self.url)
            .map_err(|why| invalid("bundle_endpoint.url", format!("{:?} {why}", self.url)))?;
        let ca_file = self
            .ca_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CA_FILE));
        if !ca_file.is_absolute() {
            return Err(invalid(
                "bundle_endpoint.ca_file",
                format!("{} must be an absolute path", ca_file.display()),
            ));
        }
        Ok(BundleEndpointConfig {
            port: u.port,
            url: self.url,
            host: u.host,
            path: u.path,
            ca_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str) -> Result<BundleEndpointConfig, String> {
        RawBundleEndpoint {
            url: url.into(),
            ca_file: None,
        }
        .check()
        .map_err(|e| e.to_string())
    }

    #[test]
    fn urls_are_checked_and_split() {
        let c = check("https://sigil.example.org:8443/").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.path.as_str()),
            ("sigil.example.org", 8443, "/")
        );
        assert_eq!(c.ca_file, PathBuf::from(DEFAULT_CA_FILE));
        let c = check("https://[::1]/b?x=1").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.path.as_str()),
            ("::1", 443, "/b?x=1")
        );
        for (url, needle) in [
            ("http://sigil.example.org/", "must be an https:// URL"),
            ("sigil.example.org", "must be an https:// URL"),
            ("https://u:p@sigil.example.org/", "user information"),
            ("not a url", "is not a URL"),
        ] {
            let e = check(url).unwrap_err();
            assert!(
                e.contains("bundle_endpoint.url") && e.contains(needle),
                "{url}: {e}"
            );
        }
        let e = RawBundleEndpoint {
            url: "https://a/".into(),
            ca_file: Some("rel.pem".into()),
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(e.contains("bundle_endpoint.ca_file"), "{e}");
    }
}
