//! The Workload API endpoint address, as `SPIFFE_ENDPOINT_SOCKET` and
//! configuration give it (SPIFFE Workload Endpoint §4): a URI whose scheme
//! (case-insensitive) is `unix` or `tcp`.
//!
//! - `unix`: no authority (or an empty one, as in `unix:///run/agent.sock`),
//!   no query, no fragment, and a non-empty absolute path, percent-decoded.
//! - `tcp`: an IP address (not a name) and a port, nothing else. Recognised
//!   so that the error can say what is wrong: Sigil serves the Workload API
//!   on Unix sockets only.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// A parsed endpoint address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointAddress {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// Why an endpoint address was refused; each message quotes the value and
/// names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("{value:?} is not a URI: expected unix:///absolute/path (or tcp://IP:port)")]
    NotUri { value: String },
    #[error("{value:?}: scheme {scheme:?} is not supported; use unix:///absolute/path")]
    Scheme { value: String, scheme: String },
    #[error(
        "{value:?}: a unix: address must not name a host ({authority:?}); use unix:///absolute/path"
    )]
    UnixAuthority { value: String, authority: String },
    #[error("{value:?}: the socket path must be absolute and not empty")]
    UnixPath { value: String },
    #[error("{value:?}: a query or fragment is not allowed in an endpoint address")]
    QueryOrFragment { value: String },
    #[error("{value:?}: bad percent-encoding in the path")]
    Percent { value: String },
    #[error(
        "{value:?}: a tcp: address is tcp://IP:port with an IP address, a port and nothing else"
    )]
    Tcp { value: String },
}

/// Parses an endpoint address (see the module documentation).
pub fn parse_endpoint(value: &str) -> Result<EndpointAddress, EndpointError> {
    let owned = || value.to_string();
    let (scheme, rest) = value
        .split_once(':')
        .ok_or_else(|| EndpointError::NotUri { value: owned() })?;
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(EndpointError::NotUri { value: owned() });
    }
    if rest.contains(['?', '#']) {
        return Err(EndpointError::QueryOrFragment { value: owned() });
    }
    match scheme.to_ascii_lowercase().as_str() {
        "unix" => {
            let path = match rest.strip_prefix("//") {
                Some(after) => {
                    let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
                    if !authority.is_empty() {
                        return Err(EndpointError::UnixAuthority {
                            value: owned(),
                            authority: authority.to_string(),
                        });
                    }
                    path
                }
                None => rest,
            };
            if !path.starts_with('/') || path.len() < 2 {
                return Err(EndpointError::UnixPath { value: owned() });
            }
            let decoded =
                percent_decode(path).ok_or_else(|| EndpointError::Percent { value: owned() })?;
            Ok(EndpointAddress::Unix(PathBuf::from(decoded)))
        }
        "tcp" => {
            let tcp = || EndpointError::Tcp { value: owned() };
            let hostport = rest.strip_prefix("//").ok_or_else(tcp)?;
            let hostport = hostport.strip_suffix('/').unwrap_or(hostport);
            if hostport.contains(['/', '@']) {
                return Err(tcp());
            }
            let addr: SocketAddr = hostport.parse().map_err(|_| tcp())?;
            // `SocketAddr` parsing accepts only IP literals; a port is required.
            let _: IpAddr = addr.ip();
            Ok(EndpointAddress::Tcp(addr))
        }
        other => Err(EndpointError::Scheme {
            value: owned(),
            scheme: other.to_string(),
        }),
    }
}

/// Decodes `%XX` escapes; `None` on a malformed escape or a decoded NUL
/// (no path may hold one).
fn percent_decode(s: &str) -> Option<std::ffi::OsString> {
    use std::os::unix::ffi::OsStringExt;
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            let b = u8::from_str_radix(hex, 16).ok()?;
            if b == 0 {
                return None;
            }
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(p: &str) -> Result<EndpointAddress, EndpointError> {
        Ok(EndpointAddress::Unix(PathBuf::from(p)))
    }

    #[test]
    fn unix_addresses() {
        assert_eq!(
            parse_endpoint("unix:///run/sigil/agent.sock"),
            unix("/run/sigil/agent.sock")
        );
        assert_eq!(
            parse_endpoint("unix:/run/agent.sock"),
            unix("/run/agent.sock")
        );
        // The scheme is case-insensitive.
        assert_eq!(parse_endpoint("UNIX:///run/a.sock"), unix("/run/a.sock"));
        assert_eq!(parse_endpoint("Unix:/run/a.sock"), unix("/run/a.sock"));
        // Percent-decoded.
        assert_eq!(
            parse_endpoint("unix:///tmp/my%20dir/a.sock"),
            unix("/tmp/my dir/a.sock")
        );
        assert_eq!(parse_endpoint("unix:///tmp/%2541"), unix("/tmp/%41"));
    }

    #[test]
    fn unix_addresses_refused_name_the_rule() {
        for (value, want) in [
            ("unix://host/run/a.sock", "must not name a host (\"host\")"),
            ("unix://localhost/run/a.sock", "must not name a host"),
            ("unix:run/a.sock", "must be absolute"),
            ("unix://", "must be absolute"),
            ("unix:///", "must be absolute and not empty"),
            ("unix:", "must be absolute"),
            ("unix:///run/a.sock?x=1", "query or fragment"),
            ("unix:///run/a.sock#f", "query or fragment"),
            ("unix:///run/%zz", "percent-encoding"),
            ("unix:///run/%0", "percent-encoding"),
            ("unix:///run/%00", "percent-encoding"),
            ("/run/a.sock", "not a URI"),
            ("run/a.sock", "not a URI"),
            ("1x:/a", "not a URI"),
            ("http://127.0.0.1:8080", "scheme \"http\" is not supported"),
        ] {
            let e = parse_endpoint(value).unwrap_err().to_string();
            assert!(e.contains(want), "{value}: {e}");
            assert!(e.contains(&format!("{value:?}")), "quotes the value: {e}");
        }
    }

    #[test]
    fn tcp_addresses() {
        assert_eq!(
            parse_endpoint("tcp://127.0.0.1:8000"),
            Ok(EndpointAddress::Tcp("127.0.0.1:8000".parse().unwrap()))
        );
        assert_eq!(
            parse_endpoint("TCP://[::1]:8000"),
            Ok(EndpointAddress::Tcp("[::1]:8000".parse().unwrap()))
        );
        for bad in [
            "tcp://localhost:8000",
            "tcp://127.0.0.1",
            "tcp:127.0.0.1:8000",
            "tcp://127.0.0.1:8000/path",
            "tcp://user@127.0.0.1:8000",
            "tcp://127.0.0.1:8000?q",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }
}
