//! Connecting to the admin socket (used by the CLI and by tests). A failed
//! connection says which of the usual causes it is: no server, or a caller
//! the socket's file mode keeps out (and what admits it).

use std::io;
use std::os::unix::fs::MetadataExt;
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
                "cannot connect to the admin socket {}: {e} ({})",
                path.display(),
                why_not(path)
            )
        })?;
    Ok(AdminApiClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// The fix for a failed connection to `path`, from the OS error a plain
/// dial gets (the transport error only carries text).
fn why_not(path: &Path) -> String {
    let kind = std::os::unix::net::UnixStream::connect(path)
        .err()
        .map(|e| e.kind());
    if kind != Some(io::ErrorKind::PermissionDenied) {
        return "is sigil-server running? use --socket or SIGIL_ADMIN_SOCKET".to_string();
    }
    let me = nix::unistd::getuid();
    let owner = std::fs::metadata(path)
        .map(|m| format!("the server's uid {}", m.uid()))
        .unwrap_or_else(|_| "the server's user".to_string());
    format!(
        "this uid {me} is not allowed: the admin socket is open to {owner} only (mode 0600); \
         run admin commands as that user, or add {me} to admin_allowed_uids in the server \
         config and give it access to the socket"
    )
}
