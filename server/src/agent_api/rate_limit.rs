//! Token-bucket rate limits per caller (remote IP for attestation, agent ID
//! for signing), so one node cannot starve the others.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Most callers tracked at once; beyond it, idle (full) buckets are dropped.
const MAX_KEYS: usize = 100_000;

#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_second` tokens refill each second, up to `burst`.
    pub fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `n` tokens for `key` at `now`; false (nothing taken) if there
    /// are not enough.
    pub fn try_take_at(&self, key: &str, n: u32, now: Instant) -> bool {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() >= MAX_KEYS && !b.contains_key(key) {
            let (rate, burst) = (self.per_second, self.burst);
            b.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = b.entry(key.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_second)
            .min(self.burst);
        *at = now;
        let need = f64::from(n);
        if *tokens >= need {
            *tokens -= need;
            true
        } else {
            false
        }
    }

    pub fn try_take(&self, key: &str, n: u32) -> bool {
        self.try_take_at(key, n, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_per_key() {
        let r = RateLimiter::new(10, 20);
        let t0 = Instant::now();
        assert!(r.try_take_at("a", 20, t0));
        assert!(!r.try_take_at("a", 1, t0), "burst exhausted");
        assert!(r.try_take_at("b", 20, t0), "other callers unaffected");
        assert!(!r.try_take_at("a", 2, t0 + Duration::from_millis(100)));
        assert!(r.try_take_at("a", 2, t0 + Duration::from_millis(300)));
        assert!(
            !r.try_take_at("a", 21, t0 + Duration::from_secs(100)),
            "never above burst"
        );
    }
}
