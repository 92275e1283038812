//! The Workload API socket's connection limits (issue 21, item 2). The
//! socket is mode 0666, so every local user can open connections; each one
//! costs the agent two file descriptors (the socket and the caller's
//! pidfd, see `accept`). So connections are capped over all callers and per
//! uid (`SO_PEERCRED`, taken at accept), and a connection is closed when it
//! has not sent the HTTP/2 preface within the preface timeout, or has had
//! no call in flight and no open stream for the idle timeout (a connection
//! holding a watch stream is never idle, however quiet the stream).
//!
//! Defaults come from `RLIMIT_NOFILE` (see [`ConnectionLimits::sized`]), so
//! a flood of connections cannot take the descriptors the agent needs for
//! its own work (its connection to the server, its data files, attestation
//! reads of `/proc`). The agent's renewal and sync never use this socket.
//!
//! Here: the limits and their sizing, a connection's activity (calls in
//! flight), the IO wrapper that closes a silent or idle connection, and the
//! refusal log (once per uid and reason per burst).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::metrics;

/// File descriptors kept for the agent's own work when the connection caps
/// are sized from `RLIMIT_NOFILE`.
pub const RESERVED_FDS: u64 = 128;
/// File descriptors one Workload API connection can hold: its socket and
/// the caller's pidfd.
pub const FDS_PER_CONNECTION: u64 = 2;
/// Default of [`ConnectionLimits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`ConnectionLimits::preface_timeout`].
pub const DEFAULT_PREFACE_TIMEOUT: Duration = Duration::from_secs(10);
/// Length of the HTTP/2 client preface (RFC 9113 §3.4).
const PREFACE_LEN: u64 = 24;
/// A refusal burst: refusals of one uid for one reason are logged at most
/// once per this long (the metric counts every one).
const BURST: Duration = Duration::from_secs(10);

/// Bounds on the Workload API socket's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once over all callers; more are closed at once.
    pub max_connections: usize,
    /// Connections open at once from one uid; more are closed at once.
    pub max_connections_per_uid: usize,
    /// A connection with no call in flight and no open stream for this long
    /// is closed.
    pub idle_timeout: Duration,
    /// A connection that has not sent the HTTP/2 preface this long after
    /// accept is closed.
    pub preface_timeout: Duration,
}

impl ConnectionLimits {
    /// The default caps for a process whose `RLIMIT_NOFILE` (soft) is
    /// `nofile`: `max_connections = (nofile − 128) / 2` (128 descriptors
    /// kept for the agent itself, 2 per connection: socket and pidfd; at
    /// least 1, at most 1,000,000) and `max_connections_per_uid =
    /// max_connections / 4` (at least 1), so one uid can take a quarter.
    /// E.g. 256 → 64 and 16; 65,536 (the systemd unit's) → 32,704 and 8,176.
    pub fn sized(nofile: u64) -> ConnectionLimits {
        let global = (nofile.saturating_sub(RESERVED_FDS) / FDS_PER_CONNECTION).clamp(1, 1_000_000);
        let global = usize::try_from(global).unwrap_or(1_000_000);
        ConnectionLimits {
            max_connections: global,
            max_connections_per_uid: (global / 4).max(1),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            preface_timeout: DEFAULT_PREFACE_TIMEOUT,
        }
    }

    /// [`ConnectionLimits::sized`] for this process's soft `RLIMIT_NOFILE`
    /// (1,024 when it cannot be read; `RLIM_INFINITY` counts as 1,000,000
    /// connections' worth).
    pub fn for_this_process() -> ConnectionLimits {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        ConnectionLimits::sized(soft.min(RESERVED_FDS + 2_000_000))
    }

    /// The descriptors `self` may use at most (for the start-up log).
    pub fn fds_needed(&self) -> u64 {
        self.max_connections as u64 * FDS_PER_CONNECTION + RESERVED_FDS
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits::for_this_process()
    }
}

/// What a connection is doing: its calls in flight and open streams, and
/// since when it has had none.
#[derive(Debug)]
pub(super) struct Activity(Mutex<ActivityState>);

#[derive(Debug)]
struct ActivityState {
    active: usize,
    idle_since: Instant,
}

impl Activity {
    pub(super) fn new() -> Arc<Activity> {
        Arc::new(Activity(Mutex::new(ActivityState {
            active: 0,
            idle_since: Instant::now(),
        })))
    }

    /// One more call or stream on the connection, until the guard drops.
    pub(super) fn enter(self: &Arc<Self>) -> ActiveCall {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).active += 1;
        ActiveCall(self.clone())
    }

    /// When the connection became idle, or `None` while it is not.
    fn idle_since(&self) -> Option<Instant> {
        let s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (s.active == 0).then_some(s.idle_since)
    }
}

/// A call in flight (or an open stream) on a connection: the connection is
/// not idle while one exists.
#[derive(Debug)]
pub(super) struct ActiveCall(Arc<Activity>);

impl Drop for ActiveCall {
    fn drop(&mut self) {
        let mut s = (self.0).0.lock().unwrap_or_else(PoisonError::into_inner);
        s.active = s.active.saturating_sub(1);
        if s.active == 0 {
            s.idle_since = Instant::now();
        }
    }
}

/// A connection's byte stream that ends (EOF to the HTTP/2 server, which
/// then closes the connection) once the preface is late or the connection
/// has been idle too long. The timer is polled with every read, which the
/// HTTP/2 server keeps pending for the connection's whole life.
pub(super) struct IdleClose<S> {
    inner: S,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    accepted: Instant,
    /// Bytes read so far, counted up to the preface's length.
    read: u64,
    timer: Pin<Box<Sleep>>,
    closed: bool,
    uid: Option<u32>,
}

impl<S> IdleClose<S> {
    pub(super) fn new(
        inner: S,
        activity: Arc<Activity>,
        limits: ConnectionLimits,
        uid: Option<u32>,
    ) -> IdleClose<S> {
        let accepted = Instant::now();
        IdleClose {
            inner,
            activity,
            limits,
            accepted,
            read: 0,
            timer: Box::pin(tokio::time::sleep_until(accepted + limits.preface_timeout)),
            closed: false,
            uid,
        }
    }

    /// When to look again, or why the connection is closed now.
    fn next_check(&self, now: Instant) -> Result<Instant, &'static str> {
        if self.read < PREFACE_LEN {
            let due = self.accepted + self.limits.preface_timeout;
            return if now >= due {
                Err("preface_timeout")
            } else {
                Ok(due)
            };
        }
        match self.activity.idle_since() {
            // Busy: look again one idle timeout from now.
            None => Ok(now + self.limits.idle_timeout),
            Some(since) if now >= since + self.limits.idle_timeout => Err("idle_timeout"),
            Some(since) => Ok(since + self.limits.idle_timeout),
        }
    }

    /// Polls the timer; `true` once the connection is to be closed.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.closed {
            return true;
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            match self.next_check(Instant::now()) {
                Ok(at) => self.timer.as_mut().reset(at),
                Err(reason) => {
                    tracing::debug!(uid = self.uid, reason, "Workload API connection closed");
                    metrics::workload_connection_closed(reason);
                    self.closed = true;
                    return true;
                }
            }
        }
        false
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleClose<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            // EOF: the HTTP/2 server ends the connection.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.read = (self.read + n).min(PREFACE_LEN);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleClose<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The refusal log: per uid and reason, the first refusal of a burst is
/// logged at once, later ones at most once per [`BURST`] with their count.
#[derive(Default)]
pub(super) struct Refusals(Mutex<HashMap<(u32, &'static str), Burst>>);

struct Burst {
    logged_at: Instant,
    unlogged: u64,
}

impl Refusals {
    /// Counts (metric) and logs, once per burst, a connection of `uid`
    /// closed at accept for `reason` (`per_uid`, `global`) under `limit`.
    pub(super) fn refused(&self, uid: u32, reason: &'static str, limit: usize) {
        metrics::workload_connection_refused(reason);
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() > 4096 {
            map.retain(|_, b| now.duration_since(b.logged_at) < BURST);
        }
        let b = map.entry((uid, reason)).or_insert(Burst {
            logged_at: now - BURST - BURST,
            unlogged: 0,
        });
        b.unlogged += 1;
        if now.duration_since(b.logged_at) >= BURST {
            let refused = b.unlogged;
            if reason == "per_uid" {
                tracing::warn!(
                    uid,
                    reason,
                    limit,
                    refused,
                    "Workload API connections refused: per-uid connection limit reached \
                     (logged once per 10 s per uid; all in \
                     sigil_agent_workload_connections_refused_total)"
                );
            } else {
                tracing::warn!(
                    uid,
                    reason,
                    limit,
                    refused,
                    "Workload API connections refused: global connection limit reached \
                     (logged once per 10 s per uid; all in \
                     sigil_agent_workload_connections_refused_total)"
                );
            }
            b.logged_at = now;
            b.unlogged = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i21_2_caps_are_sized_from_the_fd_limit() {
        let l = ConnectionLimits::sized(256);
        assert_eq!((l.max_connections, l.max_connections_per_uid), (64, 16));
        assert!(l.fds_needed() <= 256);
        let l = ConnectionLimits::sized(65_536);
        assert_eq!(
            (l.max_connections, l.max_connections_per_uid),
            (32_704, 8_176)
        );
        let l = ConnectionLimits::sized(16);
        assert_eq!((l.max_connections, l.max_connections_per_uid), (1, 1));
        assert_eq!(ConnectionLimits::sized(u64::MAX).max_connections, 1_000_000);
    }

    /// Reads from an `IdleClose` over one end of a pair until EOF
    /// (bounded).
    async fn read_to_eof(c: &mut IdleClose<tokio::io::DuplexStream>) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out))
            .await
            .expect("closed within 10 s")
            .unwrap();
        out
    }

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            idle_timeout: Duration::from_millis(300),
            preface_timeout: Duration::from_millis(200),
            ..ConnectionLimits::sized(256)
        }
    }

    #[tokio::test]
    async fn i21_2_silent_connection_closes_at_the_preface_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let start = Instant::now();
        let mut c = IdleClose::new(server, Activity::new(), limits(), Some(1));
        assert!(read_to_eof(&mut c).await.is_empty());
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn i21_2_connection_with_a_stream_is_not_idle() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(&[0u8; 24]).await.unwrap();
        let activity = Activity::new();
        let start = Instant::now();
        let mut c = IdleClose::new(server, activity.clone(), limits(), Some(1));
        let call = activity.enter();
        let release = async {
            // Several idle timeouts with a stream open, then none.
            tokio::time::sleep(Duration::from_millis(1000)).await;
            drop(call);
        };
        let (got, ()) = tokio::join!(read_to_eof(&mut c), release);
        assert_eq!(got.len(), 24);
        // Held for 1 s, then closed one idle timeout (0.3 s) later.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1300), "{took:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
    }
}
