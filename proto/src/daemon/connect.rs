//! Dialing a gRPC server on a Unix socket (the admin socket, the Workload
//! API): a tonic [`Channel`] whose connector opens the socket path; the
//! URI tonic requires names nothing and is never resolved.

use std::path::Path;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// Why the socket could not be dialed: the innermost cause, as text (the
/// transport error itself only says "transport error").
#[derive(Debug, thiserror::Error)]
#[error("{cause}")]
pub struct ConnectError {
    pub cause: String,
}

/// Connects to the gRPC server listening on the Unix socket `path`.
/// `authority` is the placeholder URI (`http://name.invalid`) tonic needs.
pub async fn unix_channel(path: &Path, authority: &'static str) -> Result<Channel, ConnectError> {
    let p = path.to_path_buf();
    Endpoint::from_static(authority)
        .connect_with_connector(tower::service_fn(move |_| {
            let p = p.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(p).await?)) }
        }))
        .await
        .map_err(|e| ConnectError {
            cause: std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_is_refused_with_the_os_cause() {
        let dir = tempfile::tempdir().unwrap();
        let e = unix_channel(&dir.path().join("nobody.sock"), "http://test.invalid")
            .await
            .unwrap_err();
        assert!(e.cause.contains("No such file or directory"), "{e}");
    }

    #[tokio::test]
    async fn connects_to_a_listening_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
        unix_channel(&path, "http://test.invalid").await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), accept)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
