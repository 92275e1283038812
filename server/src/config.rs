//! The server's TOML configuration: parsing (unknown keys are an error that
//! names the key), defaults, and the cross-field rules that keep rotation
//! possible (no SVID TTL above CA TTL / 6).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sigil_proto::daemon::config::{ConfigFileError, parse_toml, read_toml};
use sigil_proto::daemon::path_check::PathProblems;
use sigil_proto::duration::serde_duration;
pub use sigil_proto::health::HealthConfig;
use sigil_proto::{SpiffeId, TrustDomain, format_duration};

use crate::key_manager::KeyType;

mod federation;
mod jwt;
mod limits;
mod store;
pub use federation::{FederationClientConfig, RawFederation, StaticFederation};
pub use jwt::{DEFAULT_JWT_SVID_TTL, JwtConfig};
pub mod oidc;
use limits::check_limits;
pub use limits::{
    AGENT_CSR_BATCH, LimitsConfig, MAX_BATCH, MAX_MESSAGE_BYTES, MIN_CSRS_PER_SECOND,
};
pub use oidc::OidcDiscoveryConfig;
pub use store::{PgTls, PostgresConfig, StoreConfig};

/// Why a configuration was refused. Each message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read, or is not TOML of the expected shape
    /// (unknown keys are refused by name).
    #[error(transparent)]
    File(#[from] ConfigFileError),
    #[error("invalid config: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// How the bundle endpoint authenticates itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BundleProfile {
    /// The server's own SVID (`spiffe://<td>/sigil/server`).
    HttpsSpiffe,
    /// An operator-provided certificate and key (e.g. from a web PKI CA).
    HttpsWeb,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEndpointConfig {
    pub address: SocketAddr,
    #[serde(default = "default_profile")]
    pub profile: BundleProfile,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(default = "default_refresh_hint", with = "serde_duration")]
    pub refresh_hint: Duration,
}

/// An upstream CA on disk: Sigil's CA becomes an intermediate under it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskUpstreamConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The upstream trust anchors; required when `cert_file` is itself an
    /// intermediate (not self-signed).
    pub bundle_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub disk: Option<DiskUpstreamConfig>,
}

/// `[node_attestor.x509pop]`: agents prove possession of a key certified by
/// one of these CAs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509PopConfig {
    pub ca_bundle_path: PathBuf,
}

/// `[node_attestor]`: join_token is always on; x509pop when configured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAttestorConfig {
    pub x509pop: Option<X509PopConfig>,
}

/// `[rate_limit]`: per-caller limits on the agent API.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Node attestations per second per remote IP (burst twice that).
    #[serde(default = "default_attest_rate")]
    pub attestations_per_second: u32,
    /// CSRs signed per second per agent (burst twice that).
    #[serde(default = "default_csr_rate")]
    pub csrs_per_second: u32,
    /// Agent SVID renewals per second per agent (burst twice that).
    #[serde(default = "default_renewal_rate")]
    pub renewals_per_second: u32,
    /// Entry sync streams opened per second per agent (burst twice that).
    #[serde(default = "default_sync_rate")]
    pub sync_streams_per_second: u32,
    /// Bundle fetches per second per agent (burst twice that).
    #[serde(default = "default_bundle_fetch_rate")]
    pub bundle_fetches_per_second: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            attestations_per_second: default_attest_rate(),
            csrs_per_second: default_csr_rate(),
            renewals_per_second: default_renewal_rate(),
            sync_streams_per_second: default_sync_rate(),
            bundle_fetches_per_second: default_bundle_fetch_rate(),
        }
    }
}

fn default_attest_rate() -> u32 {
    10
}
fn default_csr_rate() -> u32 {
    5000
}
fn default_renewal_rate() -> u32 {
    1
}
fn default_sync_rate() -> u32 {
    2
}
fn default_bundle_fetch_rate() -> u32 {
    5
}

/// The raw file, before defaults that depend on other keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    trust_domain: String,
    data_dir: PathBuf,
    #[serde(default = "default_bind")]
    bind_address: SocketAddr,
    admin_socket: Option<PathBuf>,
    #[serde(default)]
    admin_allowed_uids: Vec<u32>,
    #[serde(default = "default_key_type")]
    ca_key_type: KeyType,
    #[serde(default = "default_ca_ttl", with = "serde_duration")]
    ca_ttl: Duration,
    #[serde(default = "default_svid_ttl", with = "serde_duration")]
    default_x509_svid_ttl: Duration,
    #[serde(default = "default_svid_ttl", with = "serde_duration")]
    agent_svid_ttl: Duration,
    #[serde(default = "default_join_token_ttl", with = "serde_duration")]
    join_token_ttl: Duration,
    #[serde(default = "default_key_type")]
    jwt_key_type: KeyType,
    default_jwt_svid_ttl: Option<jwt::Ttl>,
    jwt_issuer: Option<String>,
    bundle_endpoint: Option<BundleEndpointConfig>,
    #[serde(default)]
    upstream: UpstreamConfig,
    #[serde(default)]
    node_attestor: NodeAttestorConfig,
    #[serde(default)]
    rate_limit: RateLimitConfig,
    health: Option<HealthConfig>,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    store: StoreConfig,
    /// `[[federation]]` (issue 16).
    #[serde(default)]
    federation: Vec<RawFederation>,
    #[serde(default)]
    federation_client: FederationClientConfig,
    oidc_discovery: Option<OidcDiscoveryConfig>,
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8081))
}
fn default_key_type() -> KeyType {
    KeyType::EcP256
}
fn default_ca_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_svid_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_join_token_ttl() -> Duration {
    Duration::from_secs(600)
}
fn default_profile() -> BundleProfile {
    BundleProfile::HttpsSpiffe
}
fn default_refresh_hint() -> Duration {
    Duration::from_secs(300)
}

/// A validated server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub trust_domain: TrustDomain,
    pub data_dir: PathBuf,
    pub bind_address: SocketAddr,
    pub admin_socket: PathBuf,
    /// Uids allowed on the admin socket besides the server's own.
    pub admin_allowed_uids: Vec<u32>,
    pub ca_key_type: KeyType,
    pub ca_ttl: Duration,
    pub default_x509_svid_ttl: Duration,
    pub agent_svid_ttl: Duration,
    pub join_token_ttl: Duration,
    /// `jwt_key_type`, `default_jwt_svid_ttl`, `jwt_issuer`.
    pub jwt: JwtConfig,
    pub bundle_endpoint: Option<BundleEndpointConfig>,
    pub upstream: UpstreamConfig,
    pub node_attestor: NodeAttestorConfig,
    pub rate_limit: RateLimitConfig,
    /// `[health]`: the /metrics, /live, /ready endpoint (absent: none).
    pub health: Option<HealthConfig>,
    pub limits: LimitsConfig,
    /// `[store]`: sled in `data_dir` (default) or `[store.postgres]`.
    pub store: StoreConfig,
    /// `[[federation]]`: static federation relationships.
    pub federation: Vec<StaticFederation>,
    /// `[federation_client]`: poll interval bounds.
    pub federation_refresh: crate::federation::refresh::RefreshSettings,
    /// `[oidc_discovery]` (off by default; needs `jwt_issuer`).
    pub oidc_discovery: Option<OidcDiscoveryConfig>,
}

/// The largest SVID TTL a CA TTL allows: CA TTL / 6. The CA is prepared at
/// 1/2 and activated at 5/6 of its life, so an SVID signed just before the
/// switch must still fit inside the CA's remaining 1/6.
pub fn max_svid_ttl(ca_ttl: Duration) -> Duration {
    ca_ttl / 6
}

/// Checks one SVID TTL against the ÷6 rule; the message gives both numbers.
pub fn check_svid_ttl(what: &str, ttl: Duration, ca_ttl: Duration) -> Result<(), String> {
    let max = max_svid_ttl(ca_ttl);
    if ttl > max {
        return Err(format!(
            "{what} {} exceeds ca_ttl / 6 = {} (ca_ttl is {}): the CA rotates at 5/6 of its life, \
             so an SVID longer than 1/6 of it would outlive its CA; lower the TTL or raise ca_ttl",
            format_duration(ttl),
            format_duration(max),
            format_duration(ca_ttl),
        ));
    }
    Ok(())
}

impl ServerConfig {
    /// What is allowed but unwise, one sentence each (logged at start and
    /// printed by `validate`).
    /// The bundle refresh hint relying parties are given (5m without a
    /// bundle endpoint).
    pub fn refresh_hint(&self) -> Duration {
        self.bundle_endpoint
            .as_ref()
            .map_or(Duration::from_secs(300), |b| b.refresh_hint)
    }

    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        // A prepared CA is published at 1/2 of the active CA's life and
        // activated at 5/6: relying parties have ca_ttl/3 to fetch it.
        // Trust Domain and Bundle §4.1 asks for 3–5 refresh hints.
        let hint = self.refresh_hint();
        if self.ca_ttl / 3 < hint * 3 {
            w.push(format!(
                "ca_ttl {} leaves {} between publishing the next CA and signing with it, less \
                 than 3 bundle refresh hints ({} each): federated relying parties may not have \
                 the new CA when it starts signing; raise ca_ttl to at least {} or lower \
                 bundle_endpoint.refresh_hint",
                sigil_proto::format_duration(self.ca_ttl),
                sigil_proto::format_duration(self.ca_ttl / 3),
                sigil_proto::format_duration(hint),
                sigil_proto::format_duration(hint * 9),
            ));
        }
        w.extend(
            self.oidc_discovery
                .as_ref()
                .and_then(oidc::plain_http_warning),
        );
        w
    }

    /// `validate`'s check that this config can run here: every file it
    /// names is readable, every directory it needs can be created.
    pub fn check_paths(&self) -> Result<(), PathProblems> {
        let mut p = PathProblems::default();
        p.creatable_dir("data_dir", &self.data_dir);
        p.creatable_parent("admin_socket", &self.admin_socket);
        if let Some(be) = &self.bundle_endpoint {
            for (key, file) in [
                ("bundle_endpoint.cert_file", &be.cert_file),
                ("bundle_endpoint.key_file", &be.key_file),
            ] {
                if let Some(f) = file {
                    p.readable_file(key, f);
                }
            }
        }
        if let Some(d) = &self.upstream.disk {
            p.readable_file("upstream.disk.cert_file", &d.cert_file);
            p.readable_file("upstream.disk.key_file", &d.key_file);
            if let Some(b) = &d.bundle_file {
                p.readable_file("upstream.disk.bundle_file", b);
            }
        }
        if let Some((cert, key)) = self.oidc_discovery.as_ref().and_then(|d| d.tls_files()) {
            p.readable_file("oidc_discovery.tls_cert_file", cert);
            p.readable_file("oidc_discovery.tls_key_file", key);
        }
        if let Some(x) = &self.node_attestor.x509pop {
            p.readable_file("node_attestor.x509pop.ca_bundle_path", &x.ca_bundle_path);
        }
        store::check_store_paths(&self.store, &mut p);
        for f in &self.federation {
            if let Some(c) = &f.record.ca_file {
                p.readable_file("federation.ca_file", c);
            }
            if let Some((b, _)) = &f.bundle_file {
                p.readable_file("federation.trust_domain_bundle", b);
            }
        }
        p.into_result()
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        Self::from_raw(read_toml(path)?)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
        Self::from_raw(parse_toml(text)?)
    }

    /// Validates a parsed file.
    fn from_raw(raw: RawConfig) -> Result<ServerConfig, ConfigError> {
        let trust_domain = TrustDomain::parse(&raw.trust_domain)
            .map_err(|e| invalid("trust_domain", e.to_string()))?;
        if raw.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if raw.ca_key_type.is_rsa() {
            return Err(invalid(
                "ca_key_type",
                format!(
                    "{:?} is for JWT keys only (jwt_key_type); a CA key is \"ec-p256\" or \"ec-p384\"",
                    raw.ca_key_type.name()
                ),
            ));
        }
        if raw.ca_ttl < Duration::from_secs(60) {
            return Err(invalid(
                "ca_ttl",
                format!("{} is too short (minimum 1m)", format_duration(raw.ca_ttl)),
            ));
        }
        for (key, ttl) in [
            ("default_x509_svid_ttl", raw.default_x509_svid_ttl),
            ("agent_svid_ttl", raw.agent_svid_ttl),
        ] {
            if ttl < Duration::from_secs(1) {
                return Err(invalid(key, "must be at least 1s"));
            }
            check_svid_ttl(key, ttl, raw.ca_ttl).map_err(|m| invalid(key, m))?;
        }
        if raw.join_token_ttl < Duration::from_secs(1) {
            return Err(invalid("join_token_ttl", "must be at least 1s"));
        }
        if let Some(be) = &raw.bundle_endpoint {
            match be.profile {
                BundleProfile::HttpsWeb => {
                    if be.cert_file.is_none() || be.key_file.is_none() {
                        return Err(invalid(
                            "bundle_endpoint",
                            "profile \"https_web\" needs cert_file and key_file",
                        ));
                    }
                }
                BundleProfile::HttpsSpiffe => {
                    if be.cert_file.is_some() || be.key_file.is_some() {
                        return Err(invalid(
                            "bundle_endpoint",
                            "cert_file and key_file are only used with profile \"https_web\"; \
                             \"https_spiffe\" serves the server's own SVID",
                        ));
                    }
                }
            }
            if be.refresh_hint < Duration::from_secs(1) {
                return Err(invalid(
                    "bundle_endpoint.refresh_hint",
                    "must be at least 1s",
                ));
            }
        }
        if raw.rate_limit.attestations_per_second == 0 || raw.rate_limit.csrs_per_second == 0 {
            return Err(invalid(
                "rate_limit",
                "limits must be at least 1 per second",
            ));
        }
        for (key, value) in [
            (
                "rate_limit.renewals_per_second",
                raw.rate_limit.renewals_per_second,
            ),
            (
                "rate_limit.sync_streams_per_second",
                raw.rate_limit.sync_streams_per_second,
            ),
            (
                "rate_limit.bundle_fetches_per_second",
                raw.rate_limit.bundle_fetches_per_second,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1 per second, got 0"));
            }
        }
        if raw.rate_limit.csrs_per_second < MIN_CSRS_PER_SECOND {
            return Err(invalid(
                "rate_limit.csrs_per_second",
                format!(
                    "{} is below the minimum: must be at least {MIN_CSRS_PER_SECOND} (the burst, \
                     twice the rate, must hold an agent's batch of {AGENT_CSR_BATCH} CSRs)",
                    raw.rate_limit.csrs_per_second
                ),
            ));
        }
        check_limits(&raw.limits)?;
        store::check_store(&raw.store)?;
        let federation = federation::check_static(raw.federation, &trust_domain)?;
        let federation_refresh = raw.federation_client.check()?;
        let jwt = jwt::check_jwt(
            raw.jwt_key_type,
            raw.default_jwt_svid_ttl.map(|t| t.0),
            raw.jwt_issuer,
            raw.ca_ttl,
        )?;
        if let Some(d) = &raw.oidc_discovery {
            oidc::check_discovery(d, jwt.issuer.as_deref())?;
        }
        let admin_socket = raw
            .admin_socket
            .unwrap_or_else(|| raw.data_dir.join("admin.sock"));
        Ok(ServerConfig {
            trust_domain,
            data_dir: raw.data_dir,
            bind_address: raw.bind_address,
            admin_socket,
            admin_allowed_uids: raw.admin_allowed_uids,
            ca_key_type: raw.ca_key_type,
            ca_ttl: raw.ca_ttl,
            default_x509_svid_ttl: raw.default_x509_svid_ttl,
            agent_svid_ttl: raw.agent_svid_ttl,
            join_token_ttl: raw.join_token_ttl,
            jwt,
            bundle_endpoint: raw.bundle_endpoint,
            upstream: raw.upstream,
            node_attestor: raw.node_attestor,
            rate_limit: raw.rate_limit,
            health: raw.health,
            limits: raw.limits,
            store: raw.store,
            federation,
            federation_refresh,
            oidc_discovery: raw.oidc_discovery,
        })
    }

    /// `spiffe://<td>/sigil/server`.
    pub fn server_id(&self) -> SpiffeId {
        server_id(&self.trust_domain)
    }

    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.data_dir.join("keys")
    }
}

/// The server's SPIFFE ID in `td`.
pub fn server_id(td: &TrustDomain) -> SpiffeId {
    // The path is a constant valid path, so this cannot fail.
    #[allow(clippy::expect_used)]
    td.spiffe_id("/sigil/server")
        .expect("constant path is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "trust_domain = \"example.org\"\ndata_dir = \"/tmp/x\"\n";

    #[test]
    fn defaults() {
        let c = ServerConfig::parse(MINIMAL).unwrap();
        assert_eq!(c.ca_ttl, Duration::from_secs(86_400));
        assert_eq!(c.default_x509_svid_ttl, Duration::from_secs(3600));
        assert_eq!(c.admin_socket, PathBuf::from("/tmp/x/admin.sock"));
        assert_eq!(c.bind_address.port(), 8081);
        assert_eq!(c.server_id().as_str(), "spiffe://example.org/sigil/server");
    }

    #[test]
    fn a_rotation_window_shorter_than_three_refresh_hints_is_warned_about() {
        // Defaults: 24h CA, 5m hint: 8h window, no warning.
        assert!(ServerConfig::parse(MINIMAL).unwrap().warnings().is_empty());
        // 30m CA: 10m between publishing and signing < 15m.
        let c = ServerConfig::parse(&format!(
            "{MINIMAL}ca_ttl = \"30m\"\ndefault_x509_svid_ttl = \"5m\"\nagent_svid_ttl = \"5m\"\n"
        ))
        .unwrap();
        let w = c.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("ca_ttl 30m leaves 10m"), "{}", w[0]);
        assert!(w[0].contains("at least 45m"), "{}", w[0]);
    }

    #[test]
    fn item9_a_csr_rate_whose_burst_cannot_pass_an_agent_batch_is_refused() {
        let rate = |n: u32| {
            ServerConfig::parse(&format!("{MINIMAL}[rate_limit]\ncsrs_per_second = {n}\n"))
        };
        for n in [1, 100, 249] {
            let e = rate(n).unwrap_err().to_string();
            assert!(e.contains("rate_limit.csrs_per_second"), "{e}");
            assert!(
                e.contains(&format!("{n}")) && e.contains("at least 250"),
                "{e}"
            );
        }
        assert_eq!(rate(250).unwrap().rate_limit.csrs_per_second, 250);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = ServerConfig::parse(&format!("{MINIMAL}ca_tll = \"1h\"\n")).unwrap_err();
        assert!(e.to_string().contains("ca_tll"), "{e}");
        let e = ServerConfig::parse(&format!(
            "{MINIMAL}[bundle_endpoint]\naddress = \"127.0.0.1:1\"\nprofil = \"x\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("profil"), "{e}");
    }

    #[test]
    fn ttl_rule_names_both_ttls() {
        let e = ServerConfig::parse(&format!(
            "{MINIMAL}ca_ttl = \"6h\"\ndefault_x509_svid_ttl = \"2h\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("default_x509_svid_ttl 2h"), "{e}");
        assert!(e.contains("ca_ttl / 6 = 1h"), "{e}");
        assert!(e.contains("ca_ttl is 6h"), "{e}");
        ServerConfig::parse(&format!(
            "{MINIMAL}ca_ttl = \"6h\"\ndefault_x509_svid_ttl = \"1h\"\nagent_svid_ttl = \"1h\"\n"
        ))
        .unwrap();
        let e = ServerConfig::parse(&format!("{MINIMAL}ca_ttl = \"1h\"\n")).unwrap_err();
        assert!(e.to_string().contains("agent_svid_ttl") || e.to_string().contains("default_x509"));
    }

    #[test]
    fn bad_values_are_named() {
        for (extra, needle) in [
            ("ca_ttl = \"10\"\n", "10"),
            ("ca_ttl = \"1y\"\n", "1y"),
            ("ca_key_type = \"rsa\"\n", "rsa"),
            ("bind_address = \"nowhere\"\n", "bind_address"),
            (
                "[bundle_endpoint]\naddress = \"127.0.0.1:1\"\nprofile = \"https_web\"\n",
                "cert_file",
            ),
        ] {
            let e = ServerConfig::parse(&format!("{MINIMAL}{extra}")).unwrap_err();
            assert!(e.to_string().contains(needle), "{extra}: {e}");
        }
        for (extra, needle) in [
            ("[limits]\nmax_csr_per_request = 1\n", "max_csr_per_request"),
            (
                "[limits]\nmax_csrs_per_request = 10\n",
                "limits.max_csrs_per_request: 10 is out of range (must be between 500",
            ),
            (
                "[limits]\nagent_api_max_message_bytes = 1000\n",
                "limits.agent_api_max_message_bytes: 1000 is out of range",
            ),
            (
                "[limits]\nadmin_api_max_message_bytes = 0\n",
                "limits.admin_api_max_message_bytes: 0",
            ),
            (
                "[limits]\nmax_entries_per_request = 0\n",
                "limits.max_entries_per_request: 0",
            ),
            (
                "[limits]\nentry_event_retention = \"0s\"\n",
                "limits.entry_event_retention: 0s is out of range (must be between 1s and 365d)",
            ),
            (
                "[limits]\nmax_entries_per_request = -3\n",
                "max_entries_per_request",
            ),
        ] {
            let e = ServerConfig::parse(&format!("{MINIMAL}{extra}")).unwrap_err();
            assert!(e.to_string().contains(needle), "{extra}: {e}");
        }
        let c = ServerConfig::parse(&format!(
            "{MINIMAL}[limits]\nmax_entries_per_request = 3\nadmin_api_max_message_bytes = 65536\n"
        ))
        .unwrap();
        assert_eq!(c.limits.max_entries_per_request, 3);
        assert_eq!(
            c.limits.entry_event_retention,
            Duration::from_secs(24 * 3600),
            "entry_event_retention defaults to 24h"
        );
        assert_eq!(c.limits.admin_api_max_message_bytes, 65536);
        assert_eq!(c.limits.max_csrs_per_request, 1000);
        assert_eq!(c.limits.agent_api_max_message_bytes, 4 * 1024 * 1024);
        let e =
            ServerConfig::parse("trust_domain = \"Example.org\"\ndata_dir = \"/x\"\n").unwrap_err();
        assert!(e.to_string().contains("trust_domain"), "{e}");
        let e = ServerConfig::parse("data_dir = \"/x\"\n").unwrap_err();
        assert!(e.to_string().contains("trust_domain"), "{e}");
    }
}
