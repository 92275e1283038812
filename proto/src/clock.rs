//! Time and randomness as inputs. Production code asks a [`Clock`]; tests
//! inject a [`ManualClock`] that moves only when told to and whose "random"
//! draws are fixed, so rotation and renewal decisions can be unit-tested
//! without sleeping.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The source of "now" and of jitter for every state owner.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// A uniformly distributed value in `[0, 1)`, for jitter.
    fn random_unit(&self) -> f64 {
        system_random_unit()
    }

    /// Seconds since the Unix epoch (negative before 1970).
    fn now_unix(&self) -> i64 {
        unix_seconds(self.now())
    }
}

/// Seconds since the Unix epoch of `t` (negative before 1970).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// `base` scaled by a factor drawn uniformly from `[1 - spread, 1 + spread]`
/// using `unit` (a draw in `[0, 1)`). `spread` is clamped to `[0, 1]`.
pub fn jitter(base: Duration, spread: f64, unit: f64) -> Duration {
    let spread = spread.clamp(0.0, 1.0);
    let unit = unit.clamp(0.0, 1.0);
    base.mul_f64(1.0 - spread + 2.0 * spread * unit)
}

fn system_random_unit() -> f64 {
    let mut b = [0u8; 4];
    // SystemRandom reads the OS source; if it ever failed the draw is 0,
    // which only removes jitter (never an error worth stopping for).
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// The system's wall clock and the OS random source.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to; its random draws return a fixed
/// value (0.5, the middle of every jitter range, unless set).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
    unit: Mutex<f64>,
}

impl ManualClock {
    pub fn new(start: SystemTime) -> ManualClock {
        ManualClock {
            now: Mutex::new(start),
            unit: Mutex::new(0.5),
        }
    }

    /// A clock at `secs` seconds after the Unix epoch.
    pub fn at_unix(secs: u64) -> ManualClock {
        ManualClock::new(UNIX_EPOCH + Duration::from_secs(secs))
    }

    pub fn advance(&self, by: Duration) {
        let mut t = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }

    pub fn set(&self, to: SystemTime) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }

    /// Fixes what [`Clock::random_unit`] returns from now on.
    pub fn set_random_unit(&self, unit: f64) {
        *self.unit.lock().unwrap_or_else(|p| p.into_inner()) = unit.clamp(0.0, 1.0);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn random_unit(&self) -> f64 {
        *self.unit.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::at_unix(1_000);
        assert_eq!(c.now_unix(), 1_000);
        c.advance(Duration::from_secs(30));
        assert_eq!(c.now_unix(), 1_030);
        assert_eq!(c.random_unit(), 0.5);
        c.set_random_unit(0.25);
        assert_eq!(c.random_unit(), 0.25);
    }

    #[test]
    fn jitter_stays_in_its_range() {
        let base = Duration::from_secs(100);
        assert_eq!(jitter(base, 0.1, 0.0), Duration::from_secs(90));
        assert_eq!(jitter(base, 0.1, 0.5), Duration::from_secs(100));
        assert!(jitter(base, 0.1, 0.999_999) <= Duration::from_secs(110));
        assert_eq!(jitter(base, 5.0, 0.0), Duration::ZERO);
    }

    #[test]
    fn system_draws_are_in_unit_range() {
        for _ in 0..100 {
            let u = SystemClock.random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn unix_seconds_before_epoch_is_negative() {
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), -5);
    }
}
