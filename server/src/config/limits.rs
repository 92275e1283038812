//! `[limits]` of the server's configuration: bounds on what one request
//! can make the server do (message sizes, batch sizes, event retention) and
//! on what connections can hold (connection caps per listener and per
//! source IP, HTTP/2 timeouts and stream caps, SyncEntries streams per
//! agent). Connection caps default to a share of the open-file limit
//! (`LimitNOFILE`) and may not exceed it.

use std::time::Duration;

use serde::Deserialize;
use sigil_proto::duration::serde_duration;
use sigil_proto::format_duration;
use sigil_proto::net::limits::{FD_RESERVE, HttpLimits, connection_budget, connection_room};
use sigil_proto::net::nofile_soft;

use super::{ConfigError, invalid};

/// `[limits]`: bounds on what one request can make the server do. Every
/// key has a default; each is checked at load.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest agent API message (request or response), in bytes.
    #[serde(default = "default_message_bytes")]
    pub agent_api_max_message_bytes: usize,
    /// Largest admin API message (request or response), in bytes.
    #[serde(default = "default_message_bytes")]
    pub admin_api_max_message_bytes: usize,
    /// Most CSRs in one SignSvids call.
    #[serde(default = "default_max_csrs")]
    pub max_csrs_per_request: usize,
    /// Most entries in one CreateEntries call.
    #[serde(default = "default_max_entries")]
    pub max_entries_per_request: usize,
    /// How long entry changes stay in the event log agents resume from
    /// (default 24h, 1s to 365d). An agent offline longer gets the full set
    /// on reconnect. Expired join tokens are pruned on the same schedule.
    #[serde(default = "default_event_retention", with = "serde_duration")]
    pub entry_event_retention: Duration,
    /// Agent API connections open at once (TLS handshakes included).
    /// Default: `LimitNOFILE` soft limit / 2 − 64, between 16 and 65 536.
    #[serde(default = "default_agent_api_connections")]
    pub agent_api_max_connections: usize,
    /// Agent API connections open at once from one source IP. Default:
    /// `agent_api_max_connections` / 8, at least 4.
    #[serde(default = "default_agent_api_connections_per_ip")]
    pub agent_api_max_connections_per_ip: usize,
    /// Time from accepting a connection until its TLS handshake is done and
    /// the HTTP/2 preface has arrived (default 10s).
    #[serde(default = "default_preface_timeout", with = "serde_duration")]
    pub agent_api_preface_timeout: Duration,
    /// A connection with no call in progress for this long is closed
    /// (default 5m, 1s to 24h; an agent's open SyncEntries stream is a call
    /// in progress, so its connection stays).
    #[serde(default = "default_idle_timeout", with = "serde_duration")]
    pub agent_api_idle_timeout: Duration,
    /// HTTP/2 streams (calls) open at once on one connection (default 64).
    #[serde(default = "default_concurrent_streams")]
    pub agent_api_max_concurrent_streams: u32,
    /// Streams a client may open and reset before the server has accepted
    /// them, per connection; more gets a GOAWAY (default 20, h2's own).
    #[serde(default = "default_pending_reset_streams")]
    pub agent_api_max_pending_reset_streams: usize,
    /// Streams the server may reset for the client's protocol errors, per
    /// connection; more gets a GOAWAY (default 1024, hyper's own; tonic
    /// would leave it unlimited).
    #[serde(default = "default_local_reset_streams")]
    pub agent_api_max_local_reset_streams: usize,
    /// SyncEntries streams open at once per agent ID; the newest beyond it
    /// is refused with RESOURCE_EXHAUSTED (default 4).
    #[serde(default = "default_sync_streams_per_agent")]
    pub agent_api_max_sync_streams_per_agent: usize,
    /// Bundle endpoint connections open at once. Default:
    /// `agent_api_max_connections` / 4, at least 8.
    #[serde(default = "default_bundle_connections")]
    pub bundle_endpoint_max_connections: usize,
    /// Bundle endpoint connections open at once from one source IP, so one
    /// client cannot lock federation peers out. Default:
    /// `bundle_endpoint_max_connections` / 8, at least 2.
    #[serde(default = "default_bundle_connections_per_ip")]
    pub bundle_endpoint_max_connections_per_ip: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            agent_api_max_message_bytes: default_message_bytes(),
            admin_api_max_message_bytes: default_message_bytes(),
            max_csrs_per_request: default_max_csrs(),
            max_entries_per_request: default_max_entries(),
            entry_event_retention: default_event_retention(),
            agent_api_max_connections: default_agent_api_connections(),
            agent_api_max_connections_per_ip: default_agent_api_connections_per_ip(),
            agent_api_preface_timeout: default_preface_timeout(),
            agent_api_idle_timeout: default_idle_timeout(),
            agent_api_max_concurrent_streams: default_concurrent_streams(),
            agent_api_max_pending_reset_streams: default_pending_reset_streams(),
            agent_api_max_local_reset_streams: default_local_reset_streams(),
            agent_api_max_sync_streams_per_agent: default_sync_streams_per_agent(),
            bundle_endpoint_max_connections: default_bundle_connections(),
            bundle_endpoint_max_connections_per_ip: default_bundle_connections_per_ip(),
        }
    }
}

/// Largest agent API message, in bytes, unless `[limits]
/// agent_api_max_message_bytes` says otherwise.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Most CSRs in one SignSvids call, unless `[limits] max_csrs_per_request`
/// says otherwise.
pub const MAX_BATCH: usize = 1000;

fn default_message_bytes() -> usize {
    MAX_MESSAGE_BYTES
}
fn default_max_csrs() -> usize {
    MAX_BATCH
}
fn default_max_entries() -> usize {
    10_000
}
fn default_event_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// The default connection caps under a soft open-file limit of `soft`:
/// (agent API, per IP, bundle endpoint, per IP).
pub fn default_connection_caps(soft: u64) -> (usize, usize, usize, usize) {
    let agent = connection_budget(soft);
    let bundle = (agent / 4).max(8);
    (agent, (agent / 8).max(4), bundle, (bundle / 8).max(2))
}
fn default_agent_api_connections() -> usize {
    default_connection_caps(nofile_soft()).0
}
fn default_agent_api_connections_per_ip() -> usize {
    default_connection_caps(nofile_soft()).1
}
fn default_bundle_connections() -> usize {
    default_connection_caps(nofile_soft()).2
}
fn default_bundle_connections_per_ip() -> usize {
    default_connection_caps(nofile_soft()).3
}
fn default_preface_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_concurrent_streams() -> u32 {
    64
}
fn default_pending_reset_streams() -> usize {
    20
}
fn default_local_reset_streams() -> usize {
    1024
}
fn default_sync_streams_per_agent() -> usize {
    4
}

/// Bounds of `limits.entry_event_retention`.
const RETENTION_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(365 * 24 * 3600));

/// CSRs an agent sends in one SignSvids call: a lower
/// `max_csrs_per_request` would refuse every full batch.
pub const AGENT_CSR_BATCH: usize = sigil_proto::CSR_BATCH;

/// The lowest `rate_limit.csrs_per_second` whose burst (twice the rate)
/// holds a full agent batch.
pub const MIN_CSRS_PER_SECOND: u32 = AGENT_CSR_BATCH.div_ceil(2) as u32;

/// Checks `[limits]`; each message names the key and the rule.
pub(super) fn check_limits(l: &LimitsConfig) -> Result<(), ConfigError> {
    const MIB: usize = 1024 * 1024;
    for (key, v, min, max, why) in [
        (
            "limits.agent_api_max_message_bytes",
            l.agent_api_max_message_bytes,
            MIB,
            256 * MIB,
            " (a sync page of entries must fit)",
        ),
        (
            "limits.admin_api_max_message_bytes",
            l.admin_api_max_message_bytes,
            64 * 1024,
            256 * MIB,
            "",
        ),
        (
            "limits.max_csrs_per_request",
            l.max_csrs_per_request,
            AGENT_CSR_BATCH,
            100_000,
            " (agents send up to 500 CSRs per call)",
        ),
        (
            "limits.max_entries_per_request",
            l.max_entries_per_request,
            1,
            1_000_000,
            "",
        ),
        (
            "limits.agent_api_max_connections",
            l.agent_api_max_connections,
            1,
            usize::MAX,
            "",
        ),
        (
            "limits.agent_api_max_connections_per_ip",
            l.agent_api_max_connections_per_ip,
            1,
            l.agent_api_max_connections,
            " (at most limits.agent_api_max_connections)",
        ),
        (
            "limits.agent_api_max_concurrent_streams",
            l.agent_api_max_concurrent_streams as usize,
            2,
            10_000,
            " (an agent holds a SyncEntries stream and makes calls beside it)",
        ),
        (
            "limits.agent_api_max_pending_reset_streams",
            l.agent_api_max_pending_reset_streams,
            1,
            10_000,
            "",
        ),
        (
            "limits.agent_api_max_local_reset_streams",
            l.agent_api_max_local_reset_streams,
            1,
            100_000,
            "",
        ),
        (
            "limits.agent_api_max_sync_streams_per_agent",
            l.agent_api_max_sync_streams_per_agent,
            1,
            1000,
            "",
        ),
        (
            "limits.bundle_endpoint_max_connections",
            l.bundle_endpoint_max_connections,
            1,
            usize::MAX,
            "",
        ),
        (
            "limits.bundle_endpoint_max_connections_per_ip",
            l.bundle_endpoint_max_connections_per_ip,
            1,
            l.bundle_endpoint_max_connections,
            " (at most limits.bundle_endpoint_max_connections)",
        ),
    ] {
        if v < min || v > max {
            return Err(invalid(
                key,
                format!("{v} is out of range (must be between {min} and {max}){why}"),
            ));
        }
    }
    for (key, r, (min, max)) in [
        (
            "limits.entry_event_retention",
            l.entry_event_retention,
            RETENTION_RANGE,
        ),
        (
            "limits.agent_api_preface_timeout",
            l.agent_api_preface_timeout,
            (Duration::from_secs(1), Duration::from_secs(300)),
        ),
        (
            "limits.agent_api_idle_timeout",
            l.agent_api_idle_timeout,
            (Duration::from_secs(1), Duration::from_secs(24 * 3600)),
        ),
    ] {
        if r < min || r > max {
            return Err(invalid(
                key,
                format!(
                    "{} is out of range (must be between {} and {})",
                    format_duration(r),
                    format_duration(min),
                    format_duration(max)
                ),
            ));
        }
    }
    check_fd_room(l, nofile_soft())
}

/// The connection caps of every listener together (the health port's
/// included) must fit the open-file limit `soft` less the reserve.
fn check_fd_room(l: &LimitsConfig, soft: u64) -> Result<(), ConfigError> {
    let room = connection_room(soft);
    let health = HttpLimits::health(soft).max_connections;
    let used = l
        .agent_api_max_connections
        .saturating_add(l.bundle_endpoint_max_connections)
        .saturating_add(health);
    if used <= room {
        return Ok(());
    }
    let (key, v) = if l.agent_api_max_connections >= l.bundle_endpoint_max_connections {
        (
            "limits.agent_api_max_connections",
            l.agent_api_max_connections,
        )
    } else {
        (
            "limits.bundle_endpoint_max_connections",
            l.bundle_endpoint_max_connections,
        )
    };
    Err(invalid(
        key,
        format!(
            "{v} is more than the open-file limit allows: the soft RLIMIT_NOFILE \
             (LimitNOFILE) of {soft} less {FD_RESERVE} reserved leaves {room} descriptors for \
             all connections, and agent_api_max_connections ({}) + \
             bundle_endpoint_max_connections ({}) + the health port ({health}) = {used}; \
             lower the caps or raise LimitNOFILE",
            l.agent_api_max_connections, l.bundle_endpoint_max_connections
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i21_1_connection_caps_default_from_the_fd_limit_and_must_fit_it() {
        assert_eq!(default_connection_caps(256), (64, 8, 16, 2));
        assert_eq!(default_connection_caps(1024), (448, 56, 112, 14));
        assert_eq!(default_connection_caps(65_536), (32_704, 4088, 8176, 1022));
        // The defaults always fit.
        for soft in [128, 256, 1024, 4096, 65_536, 1 << 20] {
            let (a, ai, b, bi) = default_connection_caps(soft);
            let l = LimitsConfig {
                agent_api_max_connections: a,
                agent_api_max_connections_per_ip: ai,
                bundle_endpoint_max_connections: b,
                bundle_endpoint_max_connections_per_ip: bi,
                ..LimitsConfig::default()
            };
            check_fd_room(&l, soft).unwrap_or_else(|e| panic!("{soft}: {e}"));
        }
        let l = LimitsConfig {
            agent_api_max_connections: 5000,
            bundle_endpoint_max_connections: 10,
            ..LimitsConfig::default()
        };
        let e = check_fd_room(&l, 1024).unwrap_err().to_string();
        assert!(
            e.contains("limits.agent_api_max_connections: 5000 is more than the open-file limit")
                && e.contains("RLIMIT_NOFILE (LimitNOFILE) of 1024")
                && e.contains("leaves 960"),
            "{e}"
        );
    }
}
