//! Moving bytes: connecting to an inbound listener's backend (TCP
//! `host:port` or a Unix socket) and copying both ways until either side
//! closes, counting the bytes (recorded when the connection ends).

use tokio::io::{AsyncRead, AsyncWrite};

use super::config::Backend;
use super::metrics::{self, Direction};

/// A byte stream of any kind (TCP, Unix, TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connects to `backend`.
pub async fn connect(backend: &Backend) -> std::io::Result<Box<dyn Io>> {
    Ok(match backend {
        Backend::Tcp(addr) => {
            let s = tokio::net::TcpStream::connect(addr.as_str()).await?;
            s.set_nodelay(true)?;
            Box::new(s)
        }
        Backend::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
    })
}

/// Copies between `front` (the side that connected to the proxy) and
/// `back` until both directions are done.
pub async fn copy(d: Direction, mut front: impl Io, mut back: impl Io) -> std::io::Result<()> {
    let r = tokio::io::copy_bidirectional(&mut front, &mut back).await;
    if let Ok((to_back, to_front)) = &r {
        metrics::bytes(d, *to_back, *to_front);
    }
    r.map(|_| ())
}
