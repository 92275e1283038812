//! Moving bytes: connecting to an inbound listener's backend (TCP
//! `host:port` or a Unix socket) and copying both ways until either side
//! closes, counting the bytes (recorded when the connection ends). A
//! relay that is not a plain copy (`pass_peer_id_header`) counts through
//! [`Counted`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

/// The bytes a [`Counted`] stream moved, shared with whoever records them.
#[derive(Debug, Default)]
pub struct Tally {
    read: AtomicU64,
    written: AtomicU64,
}

impl Tally {
    /// Records the tally of a connection's front stream: what was read from
    /// the front went to the backend, what was written to it came back.
    pub fn record(&self, d: Direction) {
        metrics::bytes(
            d,
            self.read.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
        );
    }
}

/// A stream that adds the bytes read from it and written to it to a
/// [`Tally`].
pub struct Counted<T> {
    inner: T,
    tally: Arc<Tally>,
}

impl<T> Counted<T> {
    pub fn new(inner: T) -> (Self, Arc<Tally>) {
        let tally = Arc::new(Tally::default());
        (
            Counted {
                inner,
                tally: tally.clone(),
            },
            tally,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before) as u64;
        self.tally.read.fetch_add(n, Ordering::Relaxed);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.tally.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
