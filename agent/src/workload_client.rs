//! A Workload API client for the agent's own CLI: finds the socket (flag,
//! then `SPIFFE_ENDPOINT_SOCKET`, then the default) and sends the security
//! header on every call.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sigil_proto::daemon::connect::unix_channel;
use sigil_proto::endpoint::{EndpointAddress, parse_endpoint};
use sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

pub const DEFAULT_SOCKET: &str = "/run/sigil/agent.sock";

/// Resolves the socket path: `--socket`, else `SPIFFE_ENDPOINT_SOCKET`
/// (a `unix:` URI, SPIFFE Workload Endpoint §4), else the default.
pub fn socket_path(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p);
    }
    match std::env::var("SPIFFE_ENDPOINT_SOCKET") {
        Ok(v) if !v.is_empty() => {
            unix_endpoint(&v).with_context(|| "SPIFFE_ENDPOINT_SOCKET".to_string())
        }
        _ => Ok(PathBuf::from(DEFAULT_SOCKET)),
    }
}

/// The socket path of a Workload API address; a `tcp:` address is
/// recognised and refused with the reason.
pub fn unix_endpoint(value: &str) -> anyhow::Result<PathBuf> {
    match parse_endpoint(value)? {
        EndpointAddress::Unix(path) => Ok(path),
        EndpointAddress::Tcp(addr) => anyhow::bail!(
            "{value:?} is a TCP address ({addr}); the Sigil agent serves the Workload API only \
             on a Unix socket: use unix:///path/to/agent.sock"
        ),
    }
}

fn add_header(mut req: Request<()>) -> Result<Request<()>, Status> {
    req.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    Ok(req)
}

pub type Client = SpiffeWorkloadApiClient<
    InterceptedService<Channel, fn(Request<()>) -> Result<Request<()>, Status>>,
>;

/// Connects to the Workload API socket at `path`.
pub async fn connect(path: &Path) -> anyhow::Result<Client> {
    let channel = unix_channel(path, "http://workload-api.invalid")
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to the Workload API at {}: {e} (is sigil-agent running? use \
                 --socket or SPIFFE_ENDPOINT_SOCKET)",
                path.display()
            )
        })?;
    let f: fn(Request<()>) -> Result<Request<()>, Status> = add_header;
    Ok(SpiffeWorkloadApiClient::with_interceptor(channel, f))
}

/// Runs `call` until it succeeds, every 200 ms, while `timeout` has not
/// passed (no identity issued yet, the agent starting); then its last error.
pub async fn retry_until<T, F, Fut>(timeout: std::time::Duration, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match call().await {
            Ok(r) => return Ok(r),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => anyhow::bail!("{e:#}"),
        }
    }
}
