//! The agent's TOML configuration (unknown keys are an error naming the key).

use std::path::{Path, PathBuf};

mod bundle_endpoint;
mod join_token;

pub use bundle_endpoint::{BundleEndpointConfig, DEFAULT_CA_FILE};

pub use join_token::join_token;
use serde::Deserialize;
use sigil_proto::TrustDomain;
use sigil_proto::daemon::config::{ConfigFileError, parse_toml, read_toml};
use sigil_proto::daemon::path_check::PathProblems;
pub use sigil_proto::health::HealthConfig;

mod connection_limits;
mod server_address;

pub use server_address::{MAX_SERVER_ADDRESSES, ServerAddresses};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read, or is not TOML of the expected shape
    /// (unknown keys are refused by name).
    #[error(transparent)]
    File(#[from] ConfigFileError),
    #[error("invalid config: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509PopConfig {
    /// The node's certificate chain (PEM, leaf first).
    pub cert_path: PathBuf,
    /// The node's private key (PKCS#8 PEM).
    pub key_path: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAttestorConfig {
    pub x509pop: Option<X509PopConfig>,
}

/// `[limits]`: bounds on what callers of the Workload API can make the
/// agent do. Every key has a default; each is checked at load.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Workload API streams open at once over all callers.
    #[serde(default = "default_max_streams")]
    pub workload_api_max_concurrent_streams: usize,
    /// Workload API streams open at once from one calling process (pid).
    #[serde(default = "default_max_streams_per_workload")]
    pub workload_api_max_streams_per_workload: usize,
    /// Workload API streams open at once from one uid over all its
    /// processes (default 1,000; 1 to 1,000,000); streams over it get
    /// `Unavailable`. Also the most `workload_api_max_connections_per_uid`
    /// defaults to.
    #[serde(default = "default_max_streams_per_uid")]
    pub workload_api_max_streams_per_uid: usize,
    /// Largest Workload API request, in bytes.
    #[serde(default = "default_max_request_bytes")]
    pub workload_api_max_request_bytes: usize,
    /// Largest Workload API response, in bytes.
    #[serde(default = "default_max_response_bytes")]
    pub workload_api_max_response_bytes: usize,
    /// Valid JWT-SVIDs `ValidateJWTSVID` remembers, so a token validated
    /// again is answered without verifying its signature again (issue 15;
    /// every other check is repeated). Default 4,096; 0 turns it off;
    /// at most 1,000,000.
    pub workload_api_jwt_validation_cache: Option<usize>,
    /// Largest executable hashed for `unix:sha256` (also accepted at the
    /// top level, where it was first defined; not both).
    pub max_exe_hash_bytes: Option<u64>,
    /// Workload API connections open at once over all callers (default
    /// (RLIMIT_NOFILE − 128) / 2; 1 to 1,000,000). More are closed at once.
    pub workload_api_max_connections: Option<usize>,
    /// Workload API connections open at once from one uid (default a
    /// quarter of the global cap, at most `workload_api_max_streams_per_uid`;
    /// 1 to the global cap). More are closed at once.
    pub workload_api_max_connections_per_uid: Option<usize>,
    /// A connection with no call in flight and no open stream this long is
    /// closed (default "60s"; 1s to 1d).
    pub workload_api_idle_timeout: Option<String>,
    /// A connection that has not sent the HTTP/2 preface this long after
    /// accept is closed (default "10s"; 1s to 5m).
    pub workload_api_preface_timeout: Option<String>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            workload_api_max_concurrent_streams: default_max_streams(),
            workload_api_max_streams_per_workload: default_max_streams_per_workload(),
            workload_api_max_streams_per_uid: default_max_streams_per_uid(),
            workload_api_max_request_bytes: default_max_request_bytes(),
            workload_api_max_response_bytes: default_max_response_bytes(),
            workload_api_jwt_validation_cache: None,
            max_exe_hash_bytes: None,
            workload_api_max_connections: None,
            workload_api_max_connections_per_uid: None,
            workload_api_idle_timeout: None,
            workload_api_preface_timeout: None,
        }
    }
}

fn default_max_streams() -> usize {
    10_000
}
fn default_max_streams_per_workload() -> usize {
    100
}
fn default_max_streams_per_uid() -> usize {
    crate::workload_api::DEFAULT_MAX_STREAMS_PER_UID
}
fn default_max_request_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_max_response_bytes() -> usize {
    16 * 1024 * 1024
}

/// Checks `[limits]`; each message names the key and the rule.
fn check_limits(l: &LimitsConfig) -> Result<(), ConfigError> {
    const MIB: usize = 1024 * 1024;
    let in_range = |key: &'static str, v: usize, min: usize, max: usize| {
        if v < min || v > max {
            Err(invalid(
                key,
                format!("{v} is out of range (must be between {min} and {max})"),
            ))
        } else {
            Ok(())
        }
    };
    in_range(
        "limits.workload_api_max_concurrent_streams",
        l.workload_api_max_concurrent_streams,
        1,
        1_000_000,
    )?;
    in_range(
        "limits.workload_api_max_streams_per_workload",
        l.workload_api_max_streams_per_workload,
        1,
        l.workload_api_max_concurrent_streams,
    )
    .map_err(|_| {
        invalid(
            "limits.workload_api_max_streams_per_workload",
            format!(
                "{} is out of range (must be between 1 and \
                 limits.workload_api_max_concurrent_streams = {})",
                l.workload_api_max_streams_per_workload, l.workload_api_max_concurrent_streams
            ),
        )
    })?;
    in_range(
        "limits.workload_api_max_streams_per_uid",
        l.workload_api_max_streams_per_uid,
        1,
        1_000_000,
    )?;
    in_range(
        "limits.workload_api_max_request_bytes",
        l.workload_api_max_request_bytes,
        1024,
        256 * MIB,
    )?;
    in_range(
        "limits.workload_api_max_response_bytes",
        l.workload_api_max_response_bytes,
        64 * 1024,
        256 * MIB,
    )?;
    if let Some(n) = l.workload_api_jwt_validation_cache {
        in_range("limits.workload_api_jwt_validation_cache", n, 0, 1_000_000)?;
    }
    connection_limits::check(l)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    trust_domain: String,
    data_dir: PathBuf,
    server_address: server_address::RawServerAddress,
    trust_bundle_path: Option<PathBuf>,
    #[serde(default = "default_socket")]
    socket_path: PathBuf,
    join_token: Option<String>,
    join_token_file: Option<PathBuf>,
    #[serde(default)]
    insecure_bootstrap: bool,
    #[serde(default)]
    node_attestor: NodeAttestorConfig,
    max_exe_hash_bytes: Option<u64>,
    #[serde(default)]
    limits: LimitsConfig,
    health: Option<HealthConfig>,
    bundle_endpoint: Option<bundle_endpoint::RawBundleEndpoint>,
    #[serde(
        default = "default_unreachable_grace",
        with = "sigil_proto::duration::serde_duration"
    )]
    server_unreachable_grace: std::time::Duration,
}

/// See [`AgentConfig::server_unreachable_grace`].
fn default_unreachable_grace() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/sigil/agent.sock")
}

fn default_hash_limit() -> u64 {
    256 * 1024 * 1024
}

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub trust_domain: TrustDomain,
    pub data_dir: PathBuf,
    /// The servers' agent API: one or more `host:port`; a DNS name stands
    /// for every address it resolves to (see `crate::servers`).
    pub server_address: ServerAddresses,
    /// The bundle to trust the server with at bootstrap.
    pub trust_bundle_path: Option<PathBuf>,
    pub socket_path: PathBuf,
    pub join_token: Option<String>,
    /// A file holding the join token (mode 0600 or stricter; preferred over
    /// `join_token`, which ends up in backups and process metadata).
    pub join_token_file: Option<PathBuf>,
    /// Trust the server without a bundle at first attestation. Dangerous.
    pub insecure_bootstrap: bool,
    pub node_attestor: NodeAttestorConfig,
    /// Largest executable hashed for `unix:sha256`.
    pub max_exe_hash_bytes: u64,
    /// `[health]`: the /metrics, /live, /ready endpoint (absent: none).
    pub health: Option<HealthConfig>,
    pub limits: LimitsConfig,
    /// `[bundle_endpoint]`: fetch the bundle over the web PKI when the
    /// stored one no longer verifies the server (absent: never).
    pub bundle_endpoint: Option<BundleEndpointConfig>,
    /// How long the agent may fail to reach (or be refused by) the server
    /// before it reports not ready (default 30 s; 1 s to 1 h). Shorter
    /// failures (a restart, a blip) do not change readiness.
    pub server_unreachable_grace: std::time::Duration,
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl AgentConfig {
    /// `validate`'s check that this config can run here: every file it
    /// names is readable, every directory it needs can be created.
    pub fn check_paths(&self) -> Result<(), PathProblems> {
        let mut p = PathProblems::default();
        p.creatable_dir("data_dir", &self.data_dir);
        p.creatable_parent("socket_path", &self.socket_path);
        if let Some(b) = &self.trust_bundle_path {
            p.readable_file("trust_bundle_path", b);
        }
        if let Some(t) = &self.join_token_file {
            p.readable_file("join_token_file", t);
        }
        if let Some(x) = &self.node_attestor.x509pop {
            p.readable_file("node_attestor.x509pop.cert_path", &x.cert_path);
            p.readable_file("node_attestor.x509pop.key_path", &x.key_path);
        }
        if let Some(be) = &self.bundle_endpoint {
            p.readable_file("bundle_endpoint.ca_file", &be.ca_file);
        }
        p.into_result()
    }

    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        Self::from_raw(read_toml(path)?)
    }

    pub fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        Self::from_raw(parse_toml(text)?)
    }

    /// Validates a parsed file.
    fn from_raw(raw: RawConfig) -> Result<AgentConfig, ConfigError> {
        let trust_domain = TrustDomain::parse(&raw.trust_domain)
            .map_err(|e| invalid("trust_domain", e.to_string()))?;
        let server_address = raw.server_address.check()?;
        if raw.trust_bundle_path.is_none() && !raw.insecure_bootstrap {
            return Err(invalid(
                "trust_bundle_path",
                "required: the agent must know which server to trust (get it with \
                 `sigil-server bundle show`); set insecure_bootstrap = true only for tests",
            ));
        }
        if !raw.socket_path.is_absolute() {
            return Err(invalid("socket_path", "must be an absolute path"));
        }
        if let Some(t) = &raw.join_token
            && !sigil_proto::attestation::is_valid_join_token(t)
        {
            return Err(invalid("join_token", "malformed join token"));
        }
        if let Some(p) = &raw.join_token_file {
            if !p.is_absolute() {
                return Err(invalid(
                    "join_token_file",
                    format!("{} must be an absolute path", p.display()),
                ));
            }
            join_token::read_token_file("join_token_file", p)?;
        }
        check_limits(&raw.limits)?;
        let max_exe_hash_bytes = match (raw.max_exe_hash_bytes, raw.limits.max_exe_hash_bytes) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "limits.max_exe_hash_bytes",
                    "also set at the top level as max_exe_hash_bytes; set only one",
                ));
            }
            (Some(v), None) | (None, Some(v)) => v,
            (None, None) => default_hash_limit(),
        };
        let grace = raw.server_unreachable_grace;
        if grace < std::time::Duration::from_secs(1) || grace > std::time::Duration::from_secs(3600)
        {
            return Err(invalid(
                "server_unreachable_grace",
                format!(
                    "{} is out of range (must be between 1s and 1h)",
                    sigil_proto::duration::format_duration(grace)
                ),
            ));
        }
        let bundle_endpoint = raw.bundle_endpoint.map(|b| b.check()).transpose()?;
        Ok(AgentConfig {
            bundle_endpoint,
            server_unreachable_grace: grace,
            trust_domain,
            data_dir: raw.data_dir,
            server_address,
            trust_bundle_path: raw.trust_bundle_path,
            socket_path: raw.socket_path,
            join_token: raw.join_token,
            join_token_file: raw.join_token_file,
            insecure_bootstrap: raw.insecure_bootstrap,
            node_attestor: raw.node_attestor,
            max_exe_hash_bytes,
            limits: raw.limits,
            health: raw.health,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid config (also for `connection_limits`' tests).
    pub(super) const OK: &str = "trust_domain = \"example.org\"\ndata_dir = \"/tmp/a\"\n\
        server_address = \"127.0.0.1:8081\"\ntrust_bundle_path = \"/tmp/b.pem\"\n";

    #[test]
    fn parses_and_names_bad_keys() {
        let c = AgentConfig::parse(OK).unwrap();
        assert_eq!(c.socket_path, PathBuf::from("/run/sigil/agent.sock"));
        assert_eq!(
            c.server_unreachable_grace,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(c.bundle_endpoint, None);
        for (text, needle) in [
            (format!("{OK}sokcet_path = \"/x\"\n"), "sokcet_path"),
            (OK.replace("127.0.0.1:8081", "nohost"), "server_address"),
            (
                OK.replace("trust_bundle_path = \"/tmp/b.pem\"\n", ""),
                "trust_bundle_path",
            ),
            (format!("{OK}socket_path = \"rel.sock\"\n"), "absolute"),
            (format!("{OK}join_token = \"a/b\"\n"), "join_token"),
            (
                format!("{OK}server_unreachable_grace = \"0s\"\n"),
                "server_unreachable_grace: 0s is out of range",
            ),
            (
                format!("{OK}[bundle_endpoint]\nurl = \"http://a/\"\n"),
                "bundle_endpoint.url: \"http://a/\" must be an https:// URL",
            ),
        ] {
            let e = AgentConfig::parse(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        for (text, needle) in [
            (
                "[limits]\nworkload_api_max_streams = 1\n",
                "workload_api_max_streams",
            ),
            (
                "[limits]\nworkload_api_max_streams_per_uid = 0\n",
                "limits.workload_api_max_streams_per_uid: 0 is out of range",
            ),
            (
                "[limits]\nworkload_api_max_concurrent_streams = 0\n",
                "limits.workload_api_max_concurrent_streams: 0 is out of range",
            ),
            (
                "[limits]\nworkload_api_max_concurrent_streams = 10\n\
                 workload_api_max_streams_per_workload = 11\n",
                "limits.workload_api_max_streams_per_workload: 11",
            ),
            (
                "[limits]\nworkload_api_max_request_bytes = 10\n",
                "limits.workload_api_max_request_bytes: 10 is out of range",
            ),
            (
                "[limits]\nworkload_api_max_response_bytes = 1000\n",
                "limits.workload_api_max_response_bytes",
            ),
            (
                "max_exe_hash_bytes = 1\n[limits]\nmax_exe_hash_bytes = 2\n",
                "set only one",
            ),
            ("[limits]\nmax_exe_hash_bytes = -1\n", "max_exe_hash_bytes"),
        ] {
            let e = AgentConfig::parse(&format!("{OK}{text}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let c = AgentConfig::parse(&format!(
            "{OK}[limits]\nmax_exe_hash_bytes = 7\nworkload_api_max_streams_per_workload = 3\n"
        ))
        .unwrap();
        assert_eq!(c.max_exe_hash_bytes, 7);
        assert_eq!(c.limits.workload_api_max_streams_per_workload, 3);
        assert_eq!(
            c.limits.workload_api_max_streams_per_uid,
            crate::workload_api::DEFAULT_MAX_STREAMS_PER_UID
        );
        assert_eq!(c.limits.workload_api_max_concurrent_streams, 10_000);
        let c = AgentConfig::parse(&format!("{OK}max_exe_hash_bytes = 9\n")).unwrap();
        assert_eq!(c.max_exe_hash_bytes, 9);
        assert_eq!(
            AgentConfig::parse(OK).unwrap().max_exe_hash_bytes,
            256 * 1024 * 1024
        );
        // issue 17 item 4: a list of servers; a wrong type names the key.
        let c = AgentConfig::parse(&OK.replace(
            "\"127.0.0.1:8081\"",
            "[\"10.0.0.1:8081\", \"sigil-server.sigil.svc:8081\"]",
        ))
        .unwrap();
        assert_eq!(
            c.server_address.targets(),
            ["10.0.0.1:8081", "sigil-server.sigil.svc:8081"]
        );
        let e = AgentConfig::parse(&OK.replace("\"127.0.0.1:8081\"", "8081"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("server_address"), "{e}");
        AgentConfig::parse(&format!(
            "{}insecure_bootstrap = true\n",
            OK.replace("trust_bundle_path = \"/tmp/b.pem\"\n", "")
        ))
        .unwrap();
    }
}
