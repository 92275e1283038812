//! Waiting on a condition in the end-to-end tests: poll it, bounded, and
//! fail naming what never happened (never a bare sleep as synchronisation).

use std::time::{Duration, Instant};

/// Polls `cond` every 50 ms until it returns `Some`; panics naming `what`
/// once `limit` has passed.
pub fn wait_for<T>(limit: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
