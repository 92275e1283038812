//! SPIFFE IDs and trust domains, validated strictly at construction so the
//! rest of Sigil can trust the type: lowercase trust domain of `[a-z0-9._-]`
//! (at most 255 bytes), path segments of `[a-zA-Z0-9._-]`, none empty, none
//! `.` or `..`, no trailing `/`, no percent-encoding, query, fragment, port
//! or userinfo, and at most 2048 bytes in all. Only the canonical form is
//! ever emitted.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The scheme prefix of every SPIFFE ID.
pub const SCHEME_PREFIX: &str = "spiffe://";
/// Longest SPIFFE ID accepted, in bytes.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// Longest trust domain name accepted, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a SPIFFE ID or trust domain was refused. Every message names the
/// offending value and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("SPIFFE ID is empty: it must look like spiffe://<trust-domain>/<path>")]
    Empty,
    #[error("{value:?}: a SPIFFE ID must start with the lowercase scheme \"spiffe://\"")]
    WrongScheme { value: String },
    #[error("{value:?}: the trust domain is missing (expected spiffe://<trust-domain>/...)")]
    MissingTrustDomain { value: String },
    #[error(
        "{value:?}: the trust domain must be lowercase; uppercase {ch:?} at byte {pos} is not allowed"
    )]
    UppercaseTrustDomain { value: String, ch: char, pos: usize },
    #[error("{value:?}: a port is not allowed in a SPIFFE ID's trust domain")]
    Port { value: String },
    #[error("{value:?}: userinfo (user@) is not allowed in a SPIFFE ID")]
    UserInfo { value: String },
    #[error(
        "{value:?}: byte {byte:#04x} at position {pos} is not allowed in a trust domain (allowed: a-z 0-9 . _ -)"
    )]
    BadTrustDomainChar { value: String, byte: u8, pos: usize },
    #[error("{value:?}: the trust domain is {len} bytes, more than the limit of 255")]
    TrustDomainTooLong { value: String, len: usize },
    #[error("{value:?}: a query ('?') is not allowed in a SPIFFE ID")]
    Query { value: String },
    #[error("{value:?}: a fragment ('#') is not allowed in a SPIFFE ID")]
    Fragment { value: String },
    #[error("{value:?}: percent-encoding ('%') is not allowed in a SPIFFE ID path")]
    PercentEncoded { value: String },
    #[error("{value:?}: empty path segment ('//') is not allowed in a SPIFFE ID")]
    EmptySegment { value: String },
    #[error("{value:?}: a trailing '/' is not allowed in a SPIFFE ID")]
    TrailingSlash { value: String },
    #[error("{value:?}: path segments '.' and '..' are not allowed in a SPIFFE ID")]
    DotSegment { value: String },
    #[error(
        "{value:?}: byte {byte:#04x} at position {pos} is not allowed in a SPIFFE ID path (allowed: a-z A-Z 0-9 . _ -)"
    )]
    BadPathChar { value: String, byte: u8, pos: usize },
    #[error("SPIFFE ID is {len} bytes, more than the limit of 2048")]
    TooLong { len: usize },
    #[error("{value:?}: a path must be empty or start with '/'")]
    PathWithoutSlash { value: String },
}

fn is_td_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Validates a trust domain name (without scheme). `whole` is the full input
/// for error messages; `offset` the position of `name` in it.
fn validate_trust_domain(name: &str, whole: &str, offset: usize) -> Result<(), SpiffeIdError> {
    let value = || whole.to_string();
    if name.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain { value: value() });
    }
    for (i, b) in name.bytes().enumerate() {
        if is_td_byte(b) {
            continue;
        }
        let pos = offset + i;
        return Err(match b {
            b'A'..=b'Z' => SpiffeIdError::UppercaseTrustDomain {
                value: value(),
                ch: b as char,
                pos,
            },
            b':' => SpiffeIdError::Port { value: value() },
            b'@' => SpiffeIdError::UserInfo { value: value() },
            b'?' => SpiffeIdError::Query { value: value() },
            b'#' => SpiffeIdError::Fragment { value: value() },
            _ => SpiffeIdError::BadTrustDomainChar {
                value: value(),
                byte: b,
                pos,
            },
        });
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong {
            value: value(),
            len: name.len(),
        });
    }
    Ok(())
}

/// Validates a path ("" or "/seg/seg"). `whole`/`offset` as above.
fn validate_path(path: &str, whole: &str, offset: usize) -> Result<(), SpiffeIdError> {
    let value = || whole.to_string();
    if path.is_empty() {
        return Ok(());
    }
    if !path.starts_with('/') {
        return Err(SpiffeIdError::PathWithoutSlash { value: value() });
    }
    // Report characters with a specific meaning in URIs first.
    for (i, b) in path.bytes().enumerate() {
        let err = match b {
            b'?' => SpiffeIdError::Query { value: value() },
            b'#' => SpiffeIdError::Fragment { value: value() },
            b'%' => SpiffeIdError::PercentEncoded { value: value() },
            b'/' => continue,
            b if is_path_byte(b) => continue,
            _ => SpiffeIdError::BadPathChar {
                value: value(),
                byte: b,
                pos: offset + i,
            },
        };
        return Err(err);
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "" if i == last => return Err(SpiffeIdError::TrailingSlash { value: value() }),
            "" => return Err(SpiffeIdError::EmptySegment { value: value() }),
            "." | ".." => return Err(SpiffeIdError::DotSegment { value: value() }),
            _ => {}
        }
    }
    Ok(())
}

/// A trust domain name such as `example.org`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a trust domain given as a bare name (`example.org`) or as a
    /// trust domain ID (`spiffe://example.org`).
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        if input.is_empty() {
            return Err(SpiffeIdError::MissingTrustDomain {
                value: input.to_string(),
            });
        }
        if input.contains("://") {
            let id = SpiffeId::parse(input)?;
            if !id.path().is_empty() {
                return Err(SpiffeIdError::BadTrustDomainChar {
                    value: input.to_string(),
                    byte: b'/',
                    pos: SCHEME_PREFIX.len() + id.trust_domain_str().len(),
                });
            }
            return Ok(id.trust_domain());
        }
        validate_trust_domain(input, input, 0)?;
        Ok(TrustDomain(input.to_string()))
    }

    /// The bare name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain ID, e.g. `spiffe://example.org`.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            td_len: self.0.len(),
            value: format!("{SCHEME_PREFIX}{}", self.0),
        }
    }

    /// The ID of a workload or service in this trust domain. `path` must be
    /// empty or start with `/`.
    pub fn spiffe_id(&self, path: &str) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::parse(&format!("{SCHEME_PREFIX}{}{path}", self.0))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A valid SPIFFE ID: `spiffe://<trust-domain><path>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    value: String,
    td_len: usize,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID. Nothing is normalised: any input
    /// that is not already canonical is refused with the rule it broke.
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        if input.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if input.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong { len: input.len() });
        }
        let Some(rest) = input.strip_prefix(SCHEME_PREFIX) else {
            return Err(SpiffeIdError::WrongScheme {
                value: input.to_string(),
            });
        };
        let td_end = rest.find('/').unwrap_or(rest.len());
        let (td, path) = rest.split_at(td_end);
        validate_trust_domain(td, input, SCHEME_PREFIX.len())?;
        validate_path(path, input, SCHEME_PREFIX.len() + td_end)?;
        Ok(SpiffeId {
            value: input.to_string(),
            td_len: td.len(),
        })
    }

    /// The whole ID in canonical form.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    fn trust_domain_str(&self) -> &str {
        &self.value[SCHEME_PREFIX.len()..SCHEME_PREFIX.len() + self.td_len]
    }

    /// The trust domain this ID belongs to.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_str().to_string())
    }

    /// The path, empty for a trust domain ID, otherwise starting with `/`.
    pub fn path(&self) -> &str {
        &self.value[SCHEME_PREFIX.len() + self.td_len..]
    }

    /// True for the trust domain ID itself (no path).
    pub fn is_trust_domain_id(&self) -> bool {
        self.path().is_empty()
    }

    /// True when the ID is in `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain_str() == td.as_str()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.value)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.value)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts() {
        let id = SpiffeId::parse("spiffe://example.org/ns/prod/sa/web").unwrap();
        assert_eq!(id.trust_domain().as_str(), "example.org");
        assert_eq!(id.path(), "/ns/prod/sa/web");
        assert!(!id.is_trust_domain_id());
        let td = TrustDomain::parse("spiffe://example.org").unwrap();
        assert_eq!(td, id.trust_domain());
        assert_eq!(td.id().as_str(), "spiffe://example.org");
        assert!(td.id().is_trust_domain_id());
        assert_eq!(
            td.spiffe_id("/a").unwrap().as_str(),
            "spiffe://example.org/a"
        );
        assert!(TrustDomain::parse("spiffe://example.org/path").is_err());
    }

    #[test]
    fn serde_validates() {
        let ok: SpiffeId = serde_json::from_str("\"spiffe://td/x\"").unwrap();
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"spiffe://td/x\"");
        let err = serde_json::from_str::<SpiffeId>("\"spiffe://TD/x\"").unwrap_err();
        assert!(err.to_string().contains("lowercase"), "{err}");
    }
}
