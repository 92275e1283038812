//! Which server the agent talks to, when there are several (issue 17 item
//! 4). `server_address` names one or more `host:port` targets; each is
//! resolved on every (re)connect and every address it yields is a server.
//! The candidates are the sorted, deduplicated addresses, so the order
//! depends only on the set: an agent starts at the index its SPIFFE ID
//! hashes to ([`spread_start`]), which spreads agents evenly over the
//! servers, and stays on the server it uses while that works. A connection
//! error or an `Unavailable` moves it to the next candidate in the ring
//! ([`next_after`]); the agent keeps its identity (all servers share the
//! trust domain's database and accept its SVID) and its entry sync resumes
//! from its last revision. [`Servers`] holds the one piece of state (the
//! current server, and whether it just failed) for every caller: the entry
//! sync, SVID signing, JWT minting and renewal all use the current server.

use std::net::SocketAddr;
use std::sync::Mutex;

use tracing::{info, warn};

use crate::config::ServerAddresses;

/// The candidate order for `resolved` addresses: sorted, without duplicates.
pub fn candidates(mut resolved: Vec<SocketAddr>) -> Vec<SocketAddr> {
    resolved.sort();
    resolved.dedup();
    resolved
}

/// Where an agent whose SPIFFE ID (or other stable name) is `seed` starts
/// in a ring of `n` candidates: the first 8 bytes of its SHA-256, modulo
/// `n` (0 when there are none).
pub fn spread_start(seed: &str, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let d = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    // n ≤ usize::MAX, so the remainder fits.
    (u64::from_be_bytes(b) % n as u64) as usize
}

/// The order to try `cands` in: from `current` if it is still a candidate
/// (the agent stays where it is), else from the agent's spread start, then
/// around the ring, each once.
pub fn try_order(cands: &[SocketAddr], current: Option<SocketAddr>, seed: &str) -> Vec<SocketAddr> {
    let start = current
        .and_then(|c| cands.iter().position(|a| *a == c))
        .unwrap_or_else(|| spread_start(seed, cands.len()));
    (0..cands.len())
        .map(|i| cands[(start + i) % cands.len()])
        .collect()
}

/// The server to move to when `failed` fails: the next candidate after it
/// in the ring (another server whenever there is one), or the spread start
/// when `failed` is no longer a candidate. `None` when there are none.
pub fn next_after(cands: &[SocketAddr], failed: SocketAddr, seed: &str) -> Option<SocketAddr> {
    if cands.is_empty() {
        return None;
    }
    let i = match cands.iter().position(|a| *a == failed) {
        Some(i) => (i + 1) % cands.len(),
        None => spread_start(seed, cands.len()),
    };
    Some(cands[i])
}

/// Whether a call's status says the server, or the way to it, is down
/// (rather than an answer about the request): fail over.
pub fn is_server_down(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

#[derive(Debug, Default)]
struct Now {
    /// The server the agent uses (or last used).
    current: Option<SocketAddr>,
    /// The candidates at the last resolution.
    cands: Vec<SocketAddr>,
    /// A call just failed as if `current` were down: move on at the next
    /// reconnect.
    down: bool,
}

/// The agent's servers: the configured targets and the current server.
#[derive(Debug)]
pub struct Servers {
    targets: ServerAddresses,
    now: Mutex<Now>,
}

impl Servers {
    pub fn new(targets: ServerAddresses) -> Servers {
        Servers {
            targets,
            now: Mutex::new(Now::default()),
        }
    }

    /// The configured targets, for logs.
    pub fn targets(&self) -> &ServerAddresses {
        &self.targets
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Now> {
        // A panic while holding this lock leaves plain data: keep using it.
        self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The server in use (or last used), if any.
    pub fn current(&self) -> Option<SocketAddr> {
        self.lock().current
    }

    /// The current server as `host:port` text, or the first target before
    /// any connection (for probes and diagnostics).
    pub fn current_or_first(&self) -> String {
        match self.current() {
            Some(a) => a.to_string(),
            None => self.targets.targets()[0].clone(),
        }
    }

    /// Resolves every target now; every address is a server. Targets that
    /// do not resolve are logged and skipped; none at all is an error
    /// naming each target and why.
    pub async fn resolve(&self) -> anyhow::Result<Vec<SocketAddr>> {
        let mut all = Vec::new();
        let mut errors = Vec::new();
        for t in self.targets.targets() {
            match tokio::net::lookup_host(t.as_str()).await {
                Ok(addrs) => all.extend(addrs),
                Err(e) => {
                    warn!(server = %t, error = %e, "server_address does not resolve");
                    errors.push(format!("{t}: {e}"));
                }
            }
        }
        let cands = candidates(all);
        if cands.is_empty() {
            anyhow::bail!(
                "no server address resolves (server_address = {}): {}",
                self.targets,
                errors.join("; ")
            );
        }
        self.lock().cands = cands.clone();
        Ok(cands)
    }

    /// The order to try servers in for an agent called `seed`, after
    /// resolving again: from the current server, or from the one after it
    /// while it is marked down (it is then tried last).
    pub async fn order(&self, seed: &str) -> anyhow::Result<Vec<SocketAddr>> {
        let cands = self.resolve().await?;
        let now = self.lock();
        let from = match now.current {
            Some(failed) if now.down => next_after(&cands, failed, seed),
            cur => cur,
        };
        Ok(try_order(&cands, from, seed))
    }

    /// A connection to `addr` works: it is the current server.
    pub fn connected(&self, addr: SocketAddr) {
        let mut now = self.lock();
        if now.current != Some(addr) {
            if let Some(old) = now.current {
                crate::metrics::server_failover();
                info!(from = %old, to = %addr, "failed over to another server");
            } else {
                info!(server = %addr, "using server");
            }
            crate::metrics::current_server(now.current, addr);
            now.current = Some(addr);
        }
        now.down = false;
    }

    /// A call failed as if the current server were down: the next
    /// reconnect starts at the next server.
    pub fn mark_down(&self) {
        self.lock().down = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 8081))
    }

    #[test]
    fn item4_candidates_are_sorted_and_deduplicated() {
        assert_eq!(candidates(vec![a(3), a(1), a(3), a(2)]), [a(1), a(2), a(3)]);
    }

    #[test]
    fn item4_spread_start_spreads_agents_over_servers() {
        let n = 3;
        let mut per = [0usize; 3];
        for i in 0..3000 {
            let s = spread_start(&format!("spiffe://example.org/agent/{i}"), n);
            per[s] += 1;
        }
        // Each server gets about a third (± 10 %).
        for c in per {
            assert!((900..=1100).contains(&c), "{per:?}");
        }
        // Stable for one agent; 0 with no candidates.
        let id = "spiffe://example.org/agent/x";
        assert_eq!(spread_start(id, 7), spread_start(id, 7));
        assert_eq!(spread_start(id, 0), 0);
    }

    #[test]
    fn item4_try_order_stays_on_the_current_server_else_starts_at_the_spread() {
        let c = [a(1), a(2), a(3)];
        assert_eq!(try_order(&c, Some(a(2)), "x"), [a(2), a(3), a(1)]);
        let s = spread_start("x", 3);
        let o = try_order(&c, None, "x");
        assert_eq!(o[0], c[s]);
        assert_eq!(o.len(), 3);
        // A current server that no longer resolves: the spread start.
        assert_eq!(try_order(&c, Some(a(9)), "x"), o);
        assert!(try_order(&[], None, "x").is_empty());
    }

    #[test]
    fn item4_next_after_moves_to_another_server_around_the_ring() {
        let c = [a(1), a(2), a(3)];
        assert_eq!(next_after(&c, a(1), "x"), Some(a(2)));
        assert_eq!(next_after(&c, a(3), "x"), Some(a(1)));
        assert_eq!(next_after(&[a(1)], a(1), "x"), Some(a(1)));
        assert_eq!(next_after(&c, a(9), "x"), Some(c[spread_start("x", 3)]));
        assert_eq!(next_after(&[], a(1), "x"), None);
    }

    #[test]
    fn item4_server_down_is_transport_trouble_not_an_answer() {
        for c in [
            tonic::Code::Unavailable,
            tonic::Code::Unknown,
            tonic::Code::Cancelled,
        ] {
            assert!(is_server_down(c), "{c:?}");
        }
        for c in [
            tonic::Code::PermissionDenied,
            tonic::Code::Unauthenticated,
            tonic::Code::ResourceExhausted,
            tonic::Code::NotFound,
            tonic::Code::InvalidArgument,
        ] {
            assert!(!is_server_down(c), "{c:?}");
        }
    }

    #[tokio::test]
    async fn item4_a_server_marked_down_is_left_for_the_next_at_reconnect() {
        let cfg = crate::config::AgentConfig::parse(
            "trust_domain = \"example.org\"\ndata_dir = \"/tmp/a\"\n\
             server_address = [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\"]\n\
             trust_bundle_path = \"/tmp/b.pem\"\n",
        )
        .unwrap();
        let s = Servers::new(cfg.server_address);
        let first = s.order("agent").await.unwrap()[0];
        s.connected(first);
        // Still fine: stays.
        assert_eq!(s.order("agent").await.unwrap()[0], first);
        s.mark_down();
        let o = s.order("agent").await.unwrap();
        assert_ne!(o[0], first);
        assert_eq!(
            o[0],
            next_after(&candidates(o.clone()), first, "agent").unwrap()
        );
        // The failed one is tried last; until another one answers, every
        // reconnect starts past it.
        assert_eq!(*o.last().unwrap(), first);
        assert_eq!(s.order("agent").await.unwrap(), o);
        s.connected(o[0]);
        assert_eq!(s.current(), Some(o[0]));
        assert_eq!(s.order("agent").await.unwrap(), o);
    }
}
