//! `pass_peer_id_header = true`: the inbound connection is relayed as
//! HTTP/1 instead of bytes, so that every request reaches the backend with
//! exactly one `X-Spiffe-Id` header, the verified peer ID. Any
//! `X-Spiffe-Id` the client sent (any case, any number) is removed first:
//! the backend can trust the header because the proxy never passes one on.
//! One backend connection per client connection; requests in order.

use std::sync::Arc;

use http::HeaderValue;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sigil_proto::spiffe_id::SpiffeId;

use super::pipe::Io;

/// The header carrying the verified peer ID.
pub const HEADER: &str = "x-spiffe-id";

/// Relays HTTP/1 requests from `front` to `back` with the header set to
/// `id`, until either side closes.
pub async fn relay(
    front: impl Io + 'static,
    back: Box<dyn Io>,
    id: &SpiffeId,
) -> std::io::Result<()> {
    let value = HeaderValue::from_str(id.as_str())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let (sender, conn) = hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(back))
        .await
        .map_err(std::io::Error::other)?;
    let backend = tokio::spawn(conn);
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let svc = service_fn(move |mut req: http::Request<Incoming>| {
        let sender = sender.clone();
        let value = value.clone();
        async move {
            // `remove` drops every value of the name, whatever its case.
            req.headers_mut().remove(HEADER);
            req.headers_mut().insert(HEADER, value);
            sender.lock().await.send_request(req).await
        }
    });
    let r = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(front), svc)
        .await
        .map_err(std::io::Error::other);
    backend.abort();
    r
}
