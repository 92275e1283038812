//! Connecting to the admin socket (used by the CLI and by tests).

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use sigil_proto::admin_api::admin_api_client::AdminApiClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// The client's own bound: the largest `limits.admin_api_max_message_bytes`
/// the server accepts, so the server's configured limit is the one that
/// applies (and its refusal names it).
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Connects to the admin socket at `path`.
pub async fn connect(path: &Path) -> anyhow::Result<AdminApiClient<Channel>> {
    let p: PathBuf = path.to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://sigil-admin.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let p = p.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(p).await?)) }
        }))
        .await
        .map_err(|e| {
            let cause =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string);
            anyhow::anyhow!(
                "cannot connect to the admin socket {}: {cause} (is sigil-server running? \
                 use --socket or SIGIL_ADMIN_SOCKET)",
                path.display()
            )
        })?;
    Ok(AdminApiClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}
