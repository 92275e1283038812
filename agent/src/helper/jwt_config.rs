//! The helper's JWT keys, as spiffe-helper names them: `jwt_svids = [{
//! jwt_audience = "…", jwt_svid_file_name = "…" }]` (one token file per
//! audience, written with `key_file_mode`: a token is a bearer credential)
//! and `jwt_bundle_file_name` (the JWK Set of the SVID's trust domain,
//! written with `cert_file_mode`). Both are optional; without them the
//! helper writes X.509 files only.

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
}
