//! How often a foreign bundle endpoint is polled: at its
//! `spiffe_refresh_hint`, clamped to `[federation_client]`'s floor and
//! ceiling ([`RefreshSettings`]). A leaf, so the configuration can name it.

use std::time::Duration;

/// Poll interval bounds (`[federation_client]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshSettings {
    /// Shortest poll interval, whatever hint the endpoint gives.
    pub floor: Duration,
    /// Longest poll interval, and the longest backoff.
    pub ceiling: Duration,
}

/// Used when an endpoint gives no `spiffe_refresh_hint` (SPIRE's default).
pub const DEFAULT_HINT: Duration = Duration::from_secs(300);

impl RefreshSettings {
    /// The poll interval for an endpoint's hint.
    pub fn clamp(&self, hint: Option<Duration>) -> Duration {
        hint.unwrap_or(DEFAULT_HINT)
            .max(self.floor)
            .min(self.ceiling.max(self.floor))
    }
}
