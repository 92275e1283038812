//! A bundle endpoint URL and the check of a fetched bundle's authorities,
//! shared by the server's federation client and the agent's bundle
//! refresh: `https://host[:port][/path]`, no user information, no
//! fragment ([`parse_url`]); no X.509 authority of a bundle may name
//! another trust domain ([`check_authorities`]). Errors say why and leave
//! naming the configuration key to the caller.

use crate::TrustDomain;

/// A bundle endpoint URL split for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    /// DNS name or IP address (no brackets).
    pub host: String,
    pub port: u16,
    /// Path and query sent in the request (`/` when the URL has none).
    pub path: String,
}

impl EndpointUrl {
    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 443 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Parses `https://host[:port][/path]`; refuses another scheme, user
/// information and a fragment. The error is the reason ("must be an
/// https:// URL"), to follow the key and the value.
pub fn parse_url(url: &str) -> Result<EndpointUrl, String> {
    if url.contains('#') {
        return Err("must not have a fragment (#…)".into());
    }
    let uri: http::Uri = url.parse().map_err(|e| format!("is not a URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err("must be an https:// URL".into());
    }
    let authority = uri.authority().ok_or("has no host")?;
    if authority.as_str().contains('@') {
        return Err("must not carry user information (user@…)".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err("has no host".into());
    }
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    Ok(EndpointUrl {
        host,
        port: authority.port_u16().unwrap_or(443),
        path,
    })
}

/// No X.509 authority may carry the SPIFFE ID of another trust domain than
/// `td` (an authority without one passes).
pub fn check_authorities(td: &TrustDomain, authorities: &[Vec<u8>]) -> Result<(), String> {
    use x509_parser::extensions::GeneralName;
    let want = td.id().to_string();
    for (i, der) in authorities.iter().enumerate() {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("X.509 authority {i} does not parse: {e}"))?;
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            continue;
        };
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && uri.starts_with("spiffe://")
                && *uri != want
            {
                return Err(format!(
                    "X.509 authority {i} is for {uri}, not trust domain {want}: a bundle of \
                     another trust domain"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_and_bad_ones_say_why() {
        let u = parse_url("https://[::1]/b?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 443, "/b?x=1")
        );
        assert_eq!(u.host_header(), "[::1]");
        let u = parse_url("https://b.test:8443").unwrap();
        assert_eq!((u.port, u.path.as_str()), (8443, "/"));
        assert_eq!(u.host_header(), "b.test:8443");
        for (url, needle) in [
            ("http://b.test/", "must be an https:// URL"),
            ("b.test", "must be an https:// URL"),
            ("https://u:p@b.test/", "user information"),
            ("https://b.test/#x", "fragment"),
            ("not a url", "is not a URL"),
        ] {
            let e = parse_url(url).unwrap_err();
            assert!(e.contains(needle), "{url}: {e}");
        }
    }
}
