//! Accepting TCP connections without spinning: when `accept` fails for want
//! of resources (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) the loop sleeps
//! with exponential backoff (10 ms to 1 s) and logs once per burst of
//! failures; a connection that died in the backlog is skipped.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

/// First pause after a failed accept.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A listener whose [`accept`](Acceptor::accept) backs off on errors.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    /// The listener's name in logs (`"agent API"`, `"bundle endpoint"`).
    name: &'static str,
    backoff: Duration,
    /// Failures in the current burst (0: accepting normally).
    failures: u64,
}

/// Errors about one connection, not about the listener: skip it at once.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    )
}

impl Acceptor {
    pub fn new(listener: TcpListener, name: &'static str) -> Acceptor {
        Acceptor {
            listener,
            name,
            backoff: BACKOFF_MIN,
            failures: 0,
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection. Cancel-safe: a pending backoff sleep or accept
    /// may be dropped.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok(x) => {
                    if self.failures > 0 {
                        info!(
                            listener = self.name,
                            failures = self.failures,
                            "accepting connections again"
                        );
                        self.failures = 0;
                        self.backoff = BACKOFF_MIN;
                    }
                    return x;
                }
                Err(e) if is_per_connection(&e) => {
                    debug!(listener = self.name, error = %e, "a connection failed before accept");
                }
                Err(e) => {
                    if self.failures == 0 {
                        warn!(listener = self.name, error = %e, "accept failed; backing off (logged once per burst)");
                    }
                    self.failures += 1;
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection accepted leaves the acceptor in its normal state;
    /// only resource errors (EMFILE = 24) count as failures to back off on.
    #[tokio::test(flavor = "current_thread")]
    async fn accepts_and_classifies_errors() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut a = Acceptor::new(l, "test");
        assert_eq!(a.backoff, BACKOFF_MIN);
        let addr = a.local_addr().unwrap();
        let _c = TcpStream::connect(addr).await.unwrap();
        let _ = a.accept().await;
        assert_eq!((a.failures, a.backoff), (0, BACKOFF_MIN));
        assert!(is_per_connection(&std::io::Error::from(
            std::io::ErrorKind::ConnectionAborted
        )));
        assert!(!is_per_connection(&std::io::Error::from_raw_os_error(24)));
    }
}
