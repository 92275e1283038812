//! Federation relationships as stored (issue 16): which foreign trust
//! domain's bundle endpoint the server fetches from, and how it
//! authenticates that endpoint. The record is plain data; its rules (https
//! URL, an endpoint ID inside the trust domain for `https_spiffe`, not the
//! server's own trust domain) are checked in `crate::federation::relationship`
//! before anything is stored.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sigil_proto::{SpiffeId, TrustDomain};

/// How a bundle endpoint proves who it is (SPIFFE Trust Domain and Bundle §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointProfile {
    /// A web PKI certificate (the system roots, or `ca_file`).
    HttpsWeb,
    /// An X.509-SVID of the foreign trust domain with `endpoint_spiffe_id`,
    /// checked with the stored bundle of that trust domain.
    HttpsSpiffe,
}

impl EndpointProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointProfile::HttpsWeb => "https_web",
            EndpointProfile::HttpsSpiffe => "https_spiffe",
        }
    }

    /// `https_web` or `https_spiffe`; the error names the value and the choices.
    pub fn parse(s: &str) -> Result<EndpointProfile, String> {
        match s {
            "https_web" => Ok(EndpointProfile::HttpsWeb),
            "https_spiffe" => Ok(EndpointProfile::HttpsSpiffe),
            other => Err(format!(
                "unknown bundle endpoint profile {other:?}: must be \"https_web\" or \"https_spiffe\""
            )),
        }
    }
}

/// One federation relationship: the server fetches `trust_domain`'s bundle
/// from `bundle_endpoint_url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationRecord {
    pub trust_domain: TrustDomain,
    /// `https://host[:port][/path]`.
    pub bundle_endpoint_url: String,
    pub profile: EndpointProfile,
    /// `https_spiffe` only: the exact SPIFFE ID the endpoint must present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_spiffe_id: Option<SpiffeId>,
    /// `https_web` only: PEM roots instead of the system's web PKI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}
