//! The helper's JWT keys, as spiffe-helper names them: `jwt_svids = [{
//! jwt_audience = "…", jwt_svid_file_name = "…" }]` (one token file per
//! audience, written with `key_file_mode`: a token is a bearer credential)
//! and `jwt_bundle_file_name` (the JWK Set of the SVID's trust domain,
//! written with `cert_file_mode`). Both are optional; without them the
//! helper writes X.509 files only.

use serde::Deserialize;

use super::config::{HelperConfigError, file_name, invalid};

/// One `[[jwt_svids]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJwtSvid {
    jwt_audience: Option<String>,
    jwt_svid_file_name: Option<String>,
}

/// One token file: the audience it is for, and its name in `cert_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSvidFile {
    pub audience: String,
    pub file_name: String,
}

/// The validated JWT part of a helper config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtConfig {
    pub svids: Vec<JwtSvidFile>,
    pub bundle_file_name: Option<String>,
}

impl JwtConfig {
    /// True when no JWT file is configured.
    pub fn is_empty(&self) -> bool {
        self.svids.is_empty() && self.bundle_file_name.is_none()
    }

    /// Validates the JWT keys; `taken`: the X.509 file names, which no JWT
    /// file may reuse.
    pub(super) fn from_raw(
        svids: Option<Vec<RawJwtSvid>>,
        bundle: Option<String>,
        taken: &[&str],
    ) -> Result<JwtConfig, HelperConfigError> {
        let mut names: Vec<String> = taken.iter().map(|s| s.to_string()).collect();
        let mut out = JwtConfig::default();
        for raw in svids.unwrap_or_default() {
            let audience = raw.jwt_audience.filter(|a| !a.is_empty()).ok_or_else(|| {
                invalid(
                    "jwt_svids",
                    "every entry needs a jwt_audience (the token's aud)",
                )
            })?;
            let name = raw.jwt_svid_file_name.ok_or_else(|| {
                invalid(
                    "jwt_svids",
                    format!("the entry for audience {audience:?} needs a jwt_svid_file_name"),
                )
            })?;
            let name = file_name("jwt_svids", Some(name), "")?;
            if names.contains(&name) {
                return Err(invalid(
                    "jwt_svids",
                    format!("jwt_svid_file_name {name:?} is already used by another file"),
                ));
            }
            names.push(name.clone());
            out.svids.push(JwtSvidFile {
                audience,
                file_name: name,
            });
        }
        if let Some(b) = bundle {
            let name = file_name("jwt_bundle_file_name", Some(b), "")?;
            if names.contains(&name) {
                return Err(invalid(
                    "jwt_bundle_file_name",
                    format!("{name:?} is already used by another file"),
                ));
            }
            out.bundle_file_name = Some(name);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::HelperConfig;
    use super::*;

    const OK: &str = "cert_dir = \"/tmp/certs\"\n";

    #[test]
    fn helper_jwt_keys_parse_as_spiffe_helper_writes_them() {
        let c = HelperConfig::parse(&format!(
            "{OK}jwt_bundle_file_name = \"jwt_bundle.json\"\n\
             jwt_svids = [{{ jwt_audience = \"vault\", jwt_svid_file_name = \"vault.jwt\" }},\n\
             {{ jwt_audience = \"aws\", jwt_svid_file_name = \"aws.jwt\" }}]\n"
        ))
        .unwrap();
        assert_eq!(
            c.jwt,
            JwtConfig {
                svids: vec![
                    JwtSvidFile {
                        audience: "vault".into(),
                        file_name: "vault.jwt".into()
                    },
                    JwtSvidFile {
                        audience: "aws".into(),
                        file_name: "aws.jwt".into()
                    },
                ],
                bundle_file_name: Some("jwt_bundle.json".into()),
            }
        );
        assert!(HelperConfig::parse(OK).unwrap().jwt.is_empty());
    }

    #[test]
    fn helper_jwt_key_errors_name_the_key_and_value() {
        for (extra, key, words) in [
            (
                "jwt_svids = [{ jwt_svid_file_name = \"a.jwt\" }]",
                "jwt_svids",
                "jwt_audience",
            ),
            (
                "jwt_svids = [{ jwt_audience = \"a\" }]",
                "jwt_svids",
                "\"a\" needs a jwt_svid_file_name",
            ),
            (
                "jwt_svids = [{ jwt_audience = \"a\", jwt_svid_file_name = \"../x\" }]",
                "jwt_svids",
                "\"../x\"",
            ),
            (
                "jwt_svids = [{ jwt_audience = \"a\", jwt_svid_file_name = \"svid.pem\" }]",
                "jwt_svids",
                "\"svid.pem\" is already used",
            ),
            (
                "jwt_svids = [{ jwt_audience = \"a\", jwt_svid_file_name = \"t\" }]\n\
                 jwt_bundle_file_name = \"t\"",
                "jwt_bundle_file_name",
                "\"t\" is already used",
            ),
            (
                "jwt_svids = [{ jwt_audience = \"a\", jwt_file = \"t\" }]",
                "jwt_file",
                "unknown",
            ),
        ] {
            let e = HelperConfig::parse(&format!("{OK}{extra}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains(words), "{extra}: {e}");
        }
    }
}
