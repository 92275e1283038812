//! The JWT-SVID keys of the server config: `jwt_key_type` (default
//! `"ec-p256"`, ES256; `"ec-p384"` ES384; `"rsa-2048"`/`"rsa-4096"` RS256),
//! `default_jwt_svid_ttl` (default 5m, or ca_ttl / 6 when that is shorter)
//! and `jwt_issuer` (the `iss` claim; unset: no `iss`). The JWT key TTL is
//! `ca_ttl`, so a JWT-SVID TTL obeys the same ÷6 rule as an X.509 one.

use std::time::Duration;

use serde::Deserialize;
use sigil_proto::duration::serde_duration;

use super::{ConfigError, check_svid_ttl, invalid, max_svid_ttl};
use crate::key_manager::KeyType;

/// The default JWT-SVID TTL when `default_jwt_svid_ttl` is not set.
pub const DEFAULT_JWT_SVID_TTL: Duration = Duration::from_secs(300);

/// A TTL as the file spells it ("5m").
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(super) struct Ttl(#[serde(with = "serde_duration")] pub(super) Duration);

/// Validated JWT-SVID settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub key_type: KeyType,
    /// For entries without their own `jwt_svid_ttl` and minted tokens
    /// without a TTL.
    pub default_svid_ttl: Duration,
    /// The `iss` claim, if any.
    pub issuer: Option<String>,
}

/// Checks the raw keys against `ca_ttl`.
pub(super) fn check_jwt(
    key_type: KeyType,
    default_svid_ttl: Option<Duration>,
    issuer: Option<String>,
    ca_ttl: Duration,
) -> Result<JwtConfig, ConfigError> {
    let default_svid_ttl = match default_svid_ttl {
        Some(ttl) => {
            if ttl < Duration::from_secs(1) {
                return Err(invalid("default_jwt_svid_ttl", "must be at least 1s"));
            }
            check_svid_ttl("default_jwt_svid_ttl", ttl, ca_ttl)
                .map_err(|m| invalid("default_jwt_svid_ttl", m))?;
            ttl
        }
        None => DEFAULT_JWT_SVID_TTL.min(max_svid_ttl(ca_ttl)),
    };
    if let Some(iss) = &issuer {
        let ok_scheme = iss.starts_with("https://") || iss.starts_with("http://");
        if !ok_scheme
            || iss.contains(['?', '#'])
            || iss.chars().any(|c| c.is_whitespace() || c.is_control())
            || iss.trim_end_matches('/').ends_with(':')
        {
            return Err(invalid(
                "jwt_issuer",
                format!(
                    "{iss:?} is not an issuer URL: it must be an https:// (or http://) URL \
                     without query, fragment or spaces (OpenID Connect Discovery §3)"
                ),
            ));
        }
    }
    Ok(JwtConfig {
        key_type,
        default_svid_ttl,
        issuer,
    })
}

#[cfg(test)]
mod tests {
    use super::super::ServerConfig;
    use super::*;

    const MINIMAL: &str = "trust_domain = \"example.org\"\ndata_dir = \"/x\"\n";

    #[test]
    fn i15_jwt_keys_have_defaults_and_named_refusals() {
        let c = ServerConfig::parse(MINIMAL).unwrap();
        assert_eq!(c.jwt.key_type, KeyType::EcP256);
        assert_eq!(c.jwt.default_svid_ttl, Duration::from_secs(300));
        assert_eq!(c.jwt.issuer, None);
        let c = ServerConfig::parse(&format!(
            "{MINIMAL}jwt_key_type = \"rsa-4096\"\ndefault_jwt_svid_ttl = \"2m\"\n\
             jwt_issuer = \"https://oidc.example.org\"\n"
        ))
        .unwrap();
        assert_eq!(c.jwt.key_type, KeyType::Rsa4096);
        assert_eq!(c.jwt.default_svid_ttl, Duration::from_secs(120));
        assert_eq!(c.jwt.issuer.as_deref(), Some("https://oidc.example.org"));
        // A short ca_ttl lowers the unset default to ca_ttl / 6.
        let c = ServerConfig::parse(&format!(
            "{MINIMAL}ca_ttl = \"6m\"\ndefault_x509_svid_ttl = \"1m\"\nagent_svid_ttl = \"1m\"\n"
        ))
        .unwrap();
        assert_eq!(c.jwt.default_svid_ttl, Duration::from_secs(60));
        for (extra, needle) in [
            ("jwt_key_type = \"rsa-1024\"\n", "rsa-1024"),
            (
                "default_jwt_svid_ttl = \"5h\"\n",
                "default_jwt_svid_ttl 5h exceeds ca_ttl / 6 = 4h",
            ),
            ("default_jwt_svid_ttl = \"0s\"\n", "default_jwt_svid_ttl"),
            (
                "jwt_issuer = \"oidc.example.org\"\n",
                "jwt_issuer: \"oidc.example.org\"",
            ),
            ("jwt_issuer = \"https://x.org/?a=1\"\n", "jwt_issuer"),
            ("ca_key_type = \"rsa-2048\"\n", "ca_key_type: \"rsa-2048\""),
        ] {
            let e = ServerConfig::parse(&format!("{MINIMAL}{extra}")).unwrap_err();
            assert!(e.to_string().contains(needle), "{extra}: {e}");
        }
    }
}
