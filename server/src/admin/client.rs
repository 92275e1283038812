//! Connecting to the admin socket (used by the CLI and by tests).

use std::path::Path;

use sigil_proto::admin_api::admin_api_client::AdminApiClient;
use sigil_proto::daemon::connect::unix_channel;
use tonic::transport::Channel;

/// The client's own bound: the largest `limits.admin_api_max_message_bytes`
/// the server accepts, so the server's configured limit is the one that
/// applies (and its refusal names it).
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Connects to the admin socket at `path`.
pub async fn connect(path: &Path) -> anyhow::Result<AdminApiClient<Channel>> {
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = unix_channel(path, "http://sigil-admin.invalid")
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to the admin socket {}: {e} (is sigil-server running? \
                 use --socket or SIGIL_ADMIN_SOCKET)",
                path.display()
            )
        })?;
    Ok(AdminApiClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}
