//! Connecting to one of several servers (issue 17 item 4): the servers are
//! tried in their order for this agent (`crate::servers`), the first that
//! answers becomes the current one, and when none does the error names
//! every server's failure.

use sigil_proto::agent_api::agent_api_client::AgentApiClient;
use tonic::transport::Channel;
use tracing::warn;

use super::connect;
use crate::servers::Servers;

/// Opens a channel to the first of `servers` that answers, in their try
/// order for an agent called `seed` (see [`crate::servers`]); the one that
/// answered becomes the current server. With one server its error is
/// returned as is; with several, every server's error, in order.
pub async fn connect_any(
    servers: &Servers,
    seed: &str,
    cfg: rustls::ClientConfig,
) -> anyhow::Result<AgentApiClient<Channel>> {
    let mut errors = Vec::new();
    for addr in servers.order(seed).await? {
        match connect(&addr.to_string(), cfg.clone()).await {
            Ok(c) => {
                servers.connected(addr);
                return Ok(c);
            }
            Err(e) => {
                warn!(server = %addr, error = %format!("{e:#}"), "server not reachable; trying the next");
                errors.push(e);
            }
        }
    }
    Err(one_or_all(servers, errors))
}

/// The error of a try over every server: the only one as is, else all.
pub fn one_or_all(servers: &Servers, mut errors: Vec<anyhow::Error>) -> anyhow::Error {
    if errors.len() == 1 {
        return errors.remove(0);
    }
    let all: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
    anyhow::anyhow!(
        "no server answered (server_address = {}): {}",
        servers.targets(),
        all.join("; ")
    )
}
