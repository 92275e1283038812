//! The agent's TOML configuration (unknown keys are an error naming the key).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sigil_proto::TrustDomain;
pub use sigil_proto::health::HealthConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    trust_domain: String,
    data_dir: PathBuf,
    server_address: String,
    trust_bundle_path: Option<PathBuf>,
    #[serde(default = "default_socket")]
    socket_path: PathBuf,
    join_token: Option<String>,
    #[serde(default)]
    insecure_bootstrap: bool,
    #[serde(default)]
    node_attestor: NodeAttestorConfig,
    #[serde(default = "default_hash_limit")]
    max_exe_hash_bytes: u64,
    health: Option<HealthConfig>,
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
    /// `host:port` of the server's agent API.
    pub server_address: String,
    /// The bundle to trust the server with at bootstrap.
    pub trust_bundle_path: Option<PathBuf>,
    pub socket_path: PathBuf,
    pub join_token: Option<String>,
    /// Trust the server without a bundle at first attestation. Dangerous.
    pub insecure_bootstrap: bool,
    pub node_attestor: NodeAttestorConfig,
    /// Largest executable hashed for `unix:sha256`.
    pub max_exe_hash_bytes: u64,
    /// `[health]`: the /metrics, /live, /ready endpoint (absent: none).
    pub health: Option<HealthConfig>,
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let trust_domain = TrustDomain::parse(&raw.trust_domain)
            .map_err(|e| invalid("trust_domain", e.to_string()))?;
        if raw
            .server_address
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(invalid(
                "server_address",
                format!("{:?} must be host:port", raw.server_address),
            ));
        }
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
        Ok(AgentConfig {
            trust_domain,
            data_dir: raw.data_dir,
            server_address: raw.server_address,
            trust_bundle_path: raw.trust_bundle_path,
            socket_path: raw.socket_path,
            join_token: raw.join_token,
            insecure_bootstrap: raw.insecure_bootstrap,
            node_attestor: raw.node_attestor,
            max_exe_hash_bytes: raw.max_exe_hash_bytes,
            health: raw.health,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "trust_domain = \"example.org\"\ndata_dir = \"/tmp/a\"\n\
        server_address = \"127.0.0.1:8081\"\ntrust_bundle_path = \"/tmp/b.pem\"\n";

    #[test]
    fn parses_and_names_bad_keys() {
        let c = AgentConfig::parse(OK).unwrap();
        assert_eq!(c.socket_path, PathBuf::from("/run/sigil/agent.sock"));
        for (text, needle) in [
            (format!("{OK}sokcet_path = \"/x\"\n"), "sokcet_path"),
            (OK.replace("127.0.0.1:8081", "nohost"), "server_address"),
            (
                OK.replace("trust_bundle_path = \"/tmp/b.pem\"\n", ""),
                "trust_bundle_path",
            ),
            (format!("{OK}socket_path = \"rel.sock\"\n"), "absolute"),
            (format!("{OK}join_token = \"a/b\"\n"), "join_token"),
        ] {
            let e = AgentConfig::parse(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        AgentConfig::parse(&format!(
            "{}insecure_bootstrap = true\n",
            OK.replace("trust_bundle_path = \"/tmp/b.pem\"\n", "")
        ))
        .unwrap();
    }
}
