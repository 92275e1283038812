//! Connection limits sized from the process's open-file limit
//! (`RLIMIT_NOFILE`, systemd's `LimitNOFILE`): every listener's connections
//! together get half of the soft limit minus a reserve (the store, the
//! admin socket, the listeners themselves, key files, logs), so a flood of
//! connections can never take the descriptors the daemon needs to work.

use std::time::Duration;

/// Descriptors kept out of every connection cap: the store's files, the
/// admin socket and its clients, the listeners, key and config files, logs.
pub const FD_RESERVE: u64 = 64;

/// The soft `RLIMIT_NOFILE` of this process (1024, the usual default, when
/// it cannot be read; "unlimited" counts as 1 << 20).
pub fn nofile_soft() -> u64 {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft == nix::sys::resource::RLIM_INFINITY => 1 << 20,
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// Descriptors all connection caps together may use under a soft limit of
/// `soft`: `soft - FD_RESERVE` (0 when the limit is smaller than the reserve).
pub fn connection_room(soft: u64) -> usize {
    usize::try_from(soft.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX)
}

/// The default connection budget of a daemon's main listener under a soft
/// limit of `soft`: `soft / 2 - FD_RESERVE`, at least 16 and at most 65 536.
pub fn connection_budget(soft: u64) -> usize {
    let b = (soft / 2).saturating_sub(FD_RESERVE).clamp(16, 65_536);
    usize::try_from(b).unwrap_or(65_536)
}

/// Caps and timeouts of one HTTP/1 listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once, from everyone.
    pub max_connections: usize,
    /// Connections open at once from one source IP.
    pub max_connections_per_ip: usize,
    /// Time a client has to send a request's headers (from the start of
    /// the connection or the end of the previous response).
    pub header_read_timeout: Duration,
    /// Time a connection may live at all (TLS handshake included).
    pub connection_timeout: Duration,
}

impl HttpLimits {
    /// The health/metrics port of either daemon under a soft limit of
    /// `soft`: `soft / 64` connections (8 to 64), a quarter of them (at
    /// least 2) from one IP, 5 s for the headers, 30 s per connection.
    pub fn health(soft: u64) -> HttpLimits {
        let global = usize::try_from((soft / 64).clamp(8, 64)).unwrap_or(8);
        HttpLimits {
            max_connections: global,
            max_connections_per_ip: (global / 4).max(2),
            header_read_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_follow_the_soft_limit() {
        assert_eq!(connection_budget(256), 64);
        assert_eq!(connection_budget(1024), 448);
        assert_eq!(connection_budget(100), 16);
        assert_eq!(connection_budget(1 << 30), 65_536);
        assert_eq!(connection_room(256), 192);
        assert_eq!(HttpLimits::health(256).max_connections, 8);
        assert_eq!(HttpLimits::health(1024).max_connections, 16);
        assert_eq!(HttpLimits::health(1024).max_connections_per_ip, 4);
        assert!(nofile_soft() > 0);
    }
}
