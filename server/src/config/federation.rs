//! `[[federation]]` (static federation relationships, issue 16) and
//! `[federation_client]` (poll interval bounds). A static relationship
//! follows the same rules as one created over the admin API (checked here,
//! each message naming the key and the value) and wins over a stored one
//! of the same trust domain.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sigil_proto::duration::serde_duration;
use sigil_proto::{SpiffeId, TrustDomain, format_duration};

use super::{ConfigError, invalid};
use crate::federation::refresh::RefreshSettings;
use crate::federation::relationship::BundleFileFormat;
use crate::store::federation::{EndpointProfile, FederationRecord};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFederation {
    trust_domain: String,
    bundle_endpoint_url: String,
    bundle_endpoint_profile: String,
    endpoint_spiffe_id: Option<String>,
    ca_file: Option<PathBuf>,
    /// The foreign bundle to start from (needed by `https_spiffe` until the
    /// first fetch), stored at start when none is stored yet.
    trust_domain_bundle: Option<PathBuf>,
    /// `pem` (default) or `spiffe`.
    #[serde(default)]
    trust_domain_bundle_format: String,
}

/// A checked `[[federation]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticFederation {
    pub record: FederationRecord,
    pub bundle_file: Option<(PathBuf, BundleFileFormat)>,
}

/// `[federation_client]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationClientConfig {
    /// Shortest poll interval whatever hint an endpoint gives. Default 30s.
    #[serde(default = "default_floor", with = "serde_duration")]
    pub refresh_floor: Duration,
    /// Longest poll interval and backoff. Default 1h.
    #[serde(default = "default_ceiling", with = "serde_duration")]
    pub refresh_ceiling: Duration,
}

impl Default for FederationClientConfig {
    fn default() -> Self {
        FederationClientConfig {
            refresh_floor: default_floor(),
            refresh_ceiling: default_ceiling(),
        }
    }
}

fn default_floor() -> Duration {
    Duration::from_secs(30)
}
fn default_ceiling() -> Duration {
    Duration::from_secs(3600)
}

impl FederationClientConfig {
    pub fn check(self) -> Result<RefreshSettings, ConfigError> {
        if self.refresh_floor < Duration::from_secs(1) {
            return Err(invalid(
                "federation_client.refresh_floor",
                format!(
                    "{} must be at least 1s",
                    format_duration(self.refresh_floor)
                ),
            ));
        }
        if self.refresh_ceiling < self.refresh_floor {
            return Err(invalid(
                "federation_client.refresh_ceiling",
                format!(
                    "{} is below refresh_floor {}",
                    format_duration(self.refresh_ceiling),
                    format_duration(self.refresh_floor)
                ),
            ));
        }
        Ok(RefreshSettings {
            floor: self.refresh_floor,
            ceiling: self.refresh_ceiling,
        })
    }
}

/// Checks every `[[federation]]` entry for a server of trust domain `own`.
pub fn check_static(
    raw: Vec<RawFederation>,
    own: &TrustDomain,
) -> Result<Vec<StaticFederation>, ConfigError> {
    let mut out: Vec<StaticFederation> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let bad = |m: String| invalid("federation", format!("[[federation]] {i}: {m}"));
        let td = TrustDomain::parse(&r.trust_domain)
            .map_err(|e| bad(format!("trust_domain {:?}: {e}", r.trust_domain)))?;
        if out.iter().any(|s| s.record.trust_domain == td) {
            return Err(bad(format!("trust_domain {td} is declared twice")));
        }
        let profile = EndpointProfile::parse(&r.bundle_endpoint_profile)
            .map_err(|m| bad(format!("bundle_endpoint_profile: {m}")))?;
        let endpoint_spiffe_id = r
            .endpoint_spiffe_id
            .as_deref()
            .map(|s| SpiffeId::parse(s).map_err(|e| bad(format!("endpoint_spiffe_id {s:?}: {e}"))))
            .transpose()?;
        let record = FederationRecord {
            trust_domain: td,
            bundle_endpoint_url: r.bundle_endpoint_url,
            profile,
            endpoint_spiffe_id,
            ca_file: r.ca_file,
            created_at: 0,
            updated_at: 0,
        };
        crate::federation::relationship::check(&record, own).map_err(bad)?;
        let format = BundleFileFormat::parse(&r.trust_domain_bundle_format).map_err(bad)?;
        out.push(StaticFederation {
            record,
            bundle_file: r.trust_domain_bundle.map(|p| (p, format)),
        });
    }
    Ok(out)
}
