//! The `[limits]` keys of the Workload API socket's connections (issue 21,
//! item 2): their checks at load and the [`ConnectionLimits`] they resolve
//! to, with defaults sized from `RLIMIT_NOFILE` at start (see
//! [`ConnectionLimits::sized`] for the formula).

use std::time::Duration;

use super::{ConfigError, LimitsConfig, invalid};
use crate::workload_api::ConnectionLimits;

const MAX_CONNECTIONS: usize = 1_000_000;
const IDLE_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(86_400));
const PREFACE_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

/// Checks the connection keys of `[limits]`; each message names the key
/// and the value.
pub(super) fn check(l: &LimitsConfig) -> Result<(), ConfigError> {
    let count = |key: &'static str, v: Option<usize>, max: usize| match v {
        Some(v) if v < 1 || v > max => Err(invalid(
            key,
            format!("{v} is out of range (must be between 1 and {max})"),
        )),
        _ => Ok(()),
    };
    count(
        "limits.workload_api_max_connections",
        l.workload_api_max_connections,
        MAX_CONNECTIONS,
    )?;
    match (
        l.workload_api_max_connections,
        l.workload_api_max_connections_per_uid,
    ) {
        (Some(all), Some(per_uid)) if per_uid > all => {
            return Err(invalid(
                "limits.workload_api_max_connections_per_uid",
                format!(
                    "{per_uid} is out of range (must be between 1 and \
                     limits.workload_api_max_connections = {all})"
                ),
            ));
        }
        _ => count(
            "limits.workload_api_max_connections_per_uid",
            l.workload_api_max_connections_per_uid,
            MAX_CONNECTIONS,
        )?,
    }
    duration(
        "limits.workload_api_idle_timeout",
        l.workload_api_idle_timeout.as_deref(),
        IDLE_RANGE,
    )?;
    duration(
        "limits.workload_api_preface_timeout",
        l.workload_api_preface_timeout.as_deref(),
        PREFACE_RANGE,
    )?;
    Ok(())
}

/// `value` parsed and within `range`, if set.
fn duration(
    key: &'static str,
    value: Option<&str>,
    (min, max): (Duration, Duration),
) -> Result<Option<Duration>, ConfigError> {
    let Some(v) = value else {
        return Ok(None);
    };
    let d = sigil_proto::duration::parse_duration(v).map_err(|e| invalid(key, e.to_string()))?;
    if d < min || d > max {
        return Err(invalid(
            key,
            format!(
                "{v:?} is out of range (must be between {}s and {}s)",
                min.as_secs(),
                max.as_secs()
            ),
        ));
    }
    Ok(Some(d))
}

impl LimitsConfig {
    /// The socket's connection limits: the keys that are set, the others
    /// sized from this process's `RLIMIT_NOFILE`. The per-uid cap is never
    /// above `workload_api_max_streams_per_uid` (which capped connections
    /// too before it had a key of its own) nor above the global cap.
    pub fn connection_limits(&self) -> ConnectionLimits {
        let sized = ConnectionLimits::for_this_process();
        let max_connections = self
            .workload_api_max_connections
            .unwrap_or(sized.max_connections);
        let per_uid = match self.workload_api_max_connections_per_uid {
            Some(v) => v,
            None => sized
                .max_connections_per_uid
                .min(self.workload_api_max_streams_per_uid),
        };
        // Checked at load: these parse and are in range.
        let idle = duration("", self.workload_api_idle_timeout.as_deref(), IDLE_RANGE);
        let preface = duration(
            "",
            self.workload_api_preface_timeout.as_deref(),
            PREFACE_RANGE,
        );
        ConnectionLimits {
            max_connections,
            max_connections_per_uid: per_uid.min(max_connections),
            idle_timeout: idle.ok().flatten().unwrap_or(sized.idle_timeout),
            preface_timeout: preface.ok().flatten().unwrap_or(sized.preface_timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::AgentConfig;
    use super::*;

    /// A valid config ending in `[limits]`.
    fn ok() -> String {
        format!("{}[limits]\n", super::super::tests::OK)
    }

    #[test]
    fn i21_2_validate_refuses_bad_connection_limits_naming_key_and_value() {
        for (text, needle) in [
            (
                "workload_api_max_connections = 0\n",
                "limits.workload_api_max_connections: 0 is out of range",
            ),
            (
                "workload_api_max_connections_per_uid = 0\n",
                "limits.workload_api_max_connections_per_uid: 0 is out of range",
            ),
            (
                "workload_api_max_connections = 10\nworkload_api_max_connections_per_uid = 11\n",
                "limits.workload_api_max_connections_per_uid: 11 is out of range",
            ),
            (
                "workload_api_idle_timeout = \"0s\"\n",
                "limits.workload_api_idle_timeout: \"0s\" is out of range",
            ),
            (
                "workload_api_idle_timeout = \"60\"\n",
                "limits.workload_api_idle_timeout: invalid duration \"60\"",
            ),
            (
                "workload_api_preface_timeout = \"10m\"\n",
                "limits.workload_api_preface_timeout: \"10m\" is out of range",
            ),
        ] {
            let e = AgentConfig::parse(&format!("{}{text}", ok()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let c = AgentConfig::parse(&format!(
            "{}workload_api_max_connections = 40\nworkload_api_idle_timeout = \"2m\"\n\
             workload_api_preface_timeout = \"5s\"\nworkload_api_max_streams_per_uid = 3\n",
            ok()
        ))
        .unwrap();
        let l = c.limits.connection_limits();
        assert_eq!(l.max_connections, 40);
        // The per-uid default: never above the old per-uid key.
        assert_eq!(l.max_connections_per_uid, 3);
        assert_eq!(l.idle_timeout, Duration::from_secs(120));
        assert_eq!(l.preface_timeout, Duration::from_secs(5));
        let d = AgentConfig::parse(&ok())
            .unwrap()
            .limits
            .connection_limits();
        let sized = ConnectionLimits::for_this_process();
        assert_eq!(d.max_connections, sized.max_connections);
        assert_eq!(
            d.max_connections_per_uid,
            sized
                .max_connections_per_uid
                .min(crate::workload_api::DEFAULT_MAX_STREAMS_PER_UID)
        );
    }
}
