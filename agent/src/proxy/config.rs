//! `proxy.toml`: the Workload API socket (`agent_address`), any number of
//! `[[inbound]]` (mTLS in, plaintext to a local backend) and `[[outbound]]`
//! (plaintext in on loopback, mTLS out) listeners, and `[health]`. Unknown
//! keys are refused by name; every check names the key (with the listener's
//! index) and the value it refused.
//!
//! Defaults: `agent_address` is `SPIFFE_ENDPOINT_SOCKET`, else
//! `/run/sigil/agent.sock`; `pass_peer_id_header = false` (TCP proxying);
//! `force_non_loopback = false`; no `[health]`, no metrics.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sigil_proto::daemon::config::{ConfigFileError, read_toml};
use sigil_proto::health::HealthConfig;
use sigil_proto::spiffe_id::SpiffeId;

use super::allow::AllowList;

#[derive(Debug, thiserror::Error)]
pub enum ProxyConfigError {
    #[error(transparent)]
    File(#[from] ConfigFileError),
    #[error("invalid config: {key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ProxyConfigError {
    ProxyConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    agent_address: Option<String>,
    #[serde(default)]
    inbound: Vec<RawInbound>,
    #[serde(default)]
    outbound: Vec<RawOutbound>,
    health: Option<HealthConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInbound {
    listen: SocketAddr,
    backend: String,
    allow: Vec<String>,
    #[serde(default)]
    pass_peer_id_header: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutbound {
    listen: SocketAddr,
    target: String,
    server_id: Option<String>,
    allow: Option<Vec<String>>,
    #[serde(default)]
    force_non_loopback: bool,
}

/// Where an inbound listener sends the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `host:port`.
    Tcp(String),
    /// `unix:///path`.
    Unix(PathBuf),
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Tcp(a) => f.write_str(a),
            Backend::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Inbound {
    pub listen: SocketAddr,
    pub backend: Backend,
    pub allow: AllowList,
    /// HTTP/1 backends: strip any client `X-Spiffe-Id` and inject the
    /// verified one.
    pub pass_peer_id_header: bool,
}

#[derive(Debug, Clone)]
pub struct Outbound {
    pub listen: SocketAddr,
    /// `host:port` of the mTLS server.
    pub target: String,
    /// Who the server may be (`server_id` is a one-ID list).
    pub allow: AllowList,
}

/// A validated proxy configuration.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The Workload API socket.
    pub agent_address: Option<PathBuf>,
    pub inbound: Vec<Inbound>,
    pub outbound: Vec<Outbound>,
    pub health: Option<HealthConfig>,
}

/// `host:port` with a non-empty host and a numeric port.
fn check_host_port(key: &str, v: &str) -> Result<(), ProxyConfigError> {
    match v.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(invalid(
            key,
            format!("{v:?} is not host:port (or unix:///path for a backend)"),
        )),
    }
}

fn backend(key: &str, v: &str) -> Result<Backend, ProxyConfigError> {
    if let Some(path) = v.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(invalid(
                key,
                format!("{v:?}: a unix backend is unix:///absolute/path"),
            ));
        }
        return Ok(Backend::Unix(PathBuf::from(path)));
    }
    check_host_port(key, v)?;
    Ok(Backend::Tcp(v.to_string()))
}

impl ProxyConfig {
    pub fn load(path: &Path) -> Result<ProxyConfig, ProxyConfigError> {
        Self::from_raw(read_toml(path)?)
    }

    pub fn parse(text: &str) -> Result<ProxyConfig, ProxyConfigError> {
        Self::from_raw(sigil_proto::daemon::config::parse_toml(text)?)
    }

    fn from_raw(raw: RawConfig) -> Result<ProxyConfig, ProxyConfigError> {
        if raw.inbound.is_empty() && raw.outbound.is_empty() {
            return Err(invalid(
                "inbound, outbound",
                "none is configured: add at least one [[inbound]] or [[outbound]]",
            ));
        }
        let agent_address = raw
            .agent_address
            .map(|a| crate::workload_client::unix_endpoint(&a))
            .transpose()
            .map_err(|e| invalid("agent_address", format!("{e:#}")))?;
        let mut inbound = Vec::new();
        for (i, r) in raw.inbound.into_iter().enumerate() {
            let allow = AllowList::parse(&r.allow)
                .map_err(|m| invalid(format!("inbound[{i}].allow"), m))?;
            inbound.push(Inbound {
                listen: r.listen,
                backend: backend(&format!("inbound[{i}].backend"), &r.backend)?,
                allow,
                pass_peer_id_header: r.pass_peer_id_header,
            });
        }
        let mut outbound = Vec::new();
        for (i, r) in raw.outbound.into_iter().enumerate() {
            if !r.listen.ip().is_loopback() && !r.force_non_loopback {
                return Err(invalid(
                    format!("outbound[{i}].listen"),
                    format!(
                        "{} is not a loopback address: anyone who reaches it would connect \
                         with this workload's identity; listen on 127.0.0.1 or ::1 (or set \
                         force_non_loopback = true if the network is private to this workload)",
                        r.listen
                    ),
                ));
            }
            check_host_port(&format!("outbound[{i}].target"), &r.target)?;
            let allow = match (r.server_id, r.allow) {
                (Some(id), None) => {
                    SpiffeId::parse(&id).map_err(|e| {
                        invalid(format!("outbound[{i}].server_id"), format!("{id:?}: {e}"))
                    })?;
                    AllowList::parse(&[id])
                        .map_err(|m| invalid(format!("outbound[{i}].server_id"), m))?
                }
                (None, Some(list)) => AllowList::parse(&list)
                    .map_err(|m| invalid(format!("outbound[{i}].allow"), m))?,
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        format!("outbound[{i}].server_id, outbound[{i}].allow"),
                        "set one of them, not both",
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        format!("outbound[{i}].server_id"),
                        "missing: name the server's SPIFFE ID (server_id) or the IDs it may \
                         have (allow)",
                    ));
                }
            };
            outbound.push(Outbound {
                listen: r.listen,
                target: r.target,
                allow,
            });
        }
        Ok(ProxyConfig {
            agent_address,
            inbound,
            outbound,
            health: raw.health,
        })
    }

    /// The Workload API socket: `agent_address`, else
    /// `SPIFFE_ENDPOINT_SOCKET`, else the agent's default.
    pub fn socket(&self) -> anyhow::Result<PathBuf> {
        match &self.agent_address {
            Some(p) => Ok(p.clone()),
            None => crate::workload_client::socket_path(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN: &str = "[[inbound]]\nlisten = \"0.0.0.0:8443\"\nbackend = \"127.0.0.1:8080\"\n";

    fn err(text: &str) -> String {
        ProxyConfig::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn item1_the_issue_example_loads() {
        let c = ProxyConfig::parse(
            "agent_address = \"unix:///run/sigil/agent.sock\"\n\
             [[inbound]]\nlisten = \"0.0.0.0:8443\"\nbackend = \"unix:///run/app.sock\"\n\
             allow = [\"spiffe://example.org/web\", \"spiffe://example.org/ns/*\"]\n\
             [[outbound]]\nlisten = \"127.0.0.1:9000\"\ntarget = \"payments.internal:8443\"\n\
             server_id = \"spiffe://example.org/payments\"\n\
             [health]\naddress = \"127.0.0.1:8090\"\n",
        )
        .unwrap();
        assert_eq!(
            c.agent_address,
            Some(PathBuf::from("/run/sigil/agent.sock"))
        );
        assert_eq!(c.inbound[0].backend, Backend::Unix("/run/app.sock".into()));
        assert_eq!(c.outbound[0].target, "payments.internal:8443");
    }

    #[test]
    fn item1_validation_refuses_empty_allow_bad_globs_and_off_loopback_outbound() {
        let e = err(&format!("{IN}allow = []\n"));
        assert!(
            e.contains("inbound[0].allow") && e.contains("is empty"),
            "{e}"
        );
        let e = err(&format!("{IN}allow = [\"spiffe://example.org/a*\"]\n"));
        assert!(e.contains("inbound[0].allow") && e.contains("a*"), "{e}");
        let e = err(&format!(
            "{IN}allow = [\"spiffe://example.org/a\"]\noptional = true\n"
        ));
        assert!(e.contains("optional"), "{e}");
        let out = "[[outbound]]\nlisten = \"0.0.0.0:9000\"\ntarget = \"a:1\"\n\
                   server_id = \"spiffe://example.org/x\"\n";
        let e = err(out);
        assert!(
            e.contains("outbound[0].listen") && e.contains("0.0.0.0:9000"),
            "{e}"
        );
        ProxyConfig::parse(&format!("{out}force_non_loopback = true\n")).unwrap();
        let e = err("[[outbound]]\nlisten = \"127.0.0.1:9000\"\ntarget = \"a:1\"\n");
        assert!(
            e.contains("outbound[0].server_id") && e.contains("missing"),
            "{e}"
        );
        let e = err("agent_address = \"unix:///a\"\n");
        assert!(e.contains("at least one"), "{e}");
        let e = err(&format!(
            "{}allow = [\"spiffe://example.org/a\"]\n",
            IN.replace("127.0.0.1:8080", "nowhere")
        ));
        assert!(
            e.contains("inbound[0].backend") && e.contains("nowhere"),
            "{e}"
        );
    }
}
