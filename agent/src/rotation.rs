//! When to (re)issue an SVID: pure functions over a clock reading, so every
//! rule has a unit test. An SVID is renewed when half its life has passed
//! (± 10 % jitter, so thousands of SVIDs issued together do not renew in one
//! burst): the new one is valid long before the old one expires. It is
//! re-issued at once when its entry changed or its signing CA left the
//! bundle.

use std::time::Duration;

use sigil_proto::clock::jitter;

/// Renewal comes at half the lifetime ± this fraction of that half.
const RENEWAL_JITTER: f64 = 0.1;

/// Why an SVID must be (re)issued now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// There is none yet.
    Missing,
    /// The entry changed since it was issued.
    EntryChanged,
    /// Half its life (± jitter) has passed.
    HalfLife,
    /// It no longer chains to the bundle (its CA was rotated away).
    CaChanged,
    /// Its signing CA was tainted by the operator.
    CaTainted,
    /// It has expired.
    Expired,
}

impl Reason {
    /// The name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::EntryChanged => "entry_changed",
            Reason::HalfLife => "half_life",
            Reason::CaChanged => "ca_changed",
            Reason::CaTainted => "ca_tainted",
            Reason::Expired => "expired",
        }
    }
}

/// What is known about a cached SVID.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Issued {
    /// Unix seconds. Servers backdate it to absorb clock skew, so it is not
    /// when the SVID was issued.
    pub not_before: i64,
    /// Unix seconds: when this agent received the SVID. Lifetimes for
    /// renewal are counted from here (or from notBefore, if later).
    pub issued_at: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Revision of the entry it was issued for.
    pub entry_revision: u64,
    /// The jitter draw, in [0, 1] (0.5 = none): renewal comes at half the
    /// lifetime scaled by a factor in [0.9, 1.1].
    pub jitter_unit: f64,
}

/// The moment an SVID is due for renewal: half of the life it had when it
/// arrived, shifted by up to ± 10 % of that half, and never sooner than one
/// second after it arrived (no renewal storms, whatever the TTL or the
/// backdating).
pub fn renew_at(i: &Issued) -> i64 {
    let start = i.issued_at.max(i.not_before);
    let life = (i.not_after - start).max(0);
    let half = Duration::from_secs((life / 2).unsigned_abs());
    let jittered = jitter(half, RENEWAL_JITTER, i.jitter_unit).as_secs();
    start
        .saturating_add(i64::try_from(jittered).unwrap_or(i64::MAX))
        .max(start.saturating_add(1))
}

/// Decides whether the SVID for an entry at `entry_revision` must be issued
/// now. `chains_to_bundle` says whether the SVID's signing CA is still in the
/// bundle, `signer_tainted` whether that CA was tainted.
pub fn decide(
    current: Option<&Issued>,
    entry_revision: u64,
    chains_to_bundle: bool,
    signer_tainted: bool,
    now: i64,
) -> Option<Reason> {
    let Some(i) = current else {
        return Some(Reason::Missing);
    };
    if now >= i.not_after {
        Some(Reason::Expired)
    } else if i.entry_revision != entry_revision {
        Some(Reason::EntryChanged)
    } else if signer_tainted {
        Some(Reason::CaTainted)
    } else if !chains_to_bundle {
        Some(Reason::CaChanged)
    } else if now >= renew_at(i) {
        Some(Reason::HalfLife)
    } else {
        None
    }
}

/// Exponential backoff with full jitter: attempt 0 → up to 1 s, doubling to
/// at most 30 s. `random` is in [0, 1).
pub fn backoff_ms(attempt: u32, random: f64) -> u64 {
    windowed_backoff_ms(attempt, random, 30_000)
}

/// How long an entry the server refused (per entry: not authorized, unknown,
/// a bad request) waits before it is tried again: like [`backoff_ms`] but
/// capped at 5 minutes, since a refusal is the server's decision and usually
/// lasts until the entry changes (which ends the wait at once).
pub fn refusal_backoff_ms(attempt: u32, random: f64) -> u64 {
    windowed_backoff_ms(attempt, random, 300_000)
}

/// A window of 1 s doubling per attempt up to `cap_ms`; the wait is at least
/// a quarter of it (so retries never spin) plus the jittered rest.
fn windowed_backoff_ms(attempt: u32, random: f64, cap_ms: u64) -> u64 {
    let base = 1_000u64.saturating_mul(1u64 << attempt.min(20)).min(cap_ms);
    let r = random.clamp(0.0, 1.0);
    base / 4 + ((base - base / 4) as f64 * r) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(nb: i64, na: i64, rev: u64, jitter: f64) -> Issued {
        Issued {
            not_before: nb,
            issued_at: nb,
            not_after: na,
            entry_revision: rev,
            jitter_unit: jitter,
        }
    }

    #[test]
    fn renews_at_half_life_with_bounded_jitter() {
        let i = issued(1000, 1100, 1, 0.5);
        assert_eq!(renew_at(&i), 1050);
        assert_eq!(renew_at(&issued(1000, 1100, 1, 1.0)), 1055);
        assert_eq!(renew_at(&issued(1000, 1100, 1, 0.0)), 1045);
        // Out-of-range jitter is clamped.
        assert_eq!(renew_at(&issued(1000, 1100, 1, 7.0)), 1055);
        assert_eq!(decide(Some(&i), 1, true, false, 1049), None);
        assert_eq!(
            decide(Some(&i), 1, true, false, 1050),
            Some(Reason::HalfLife)
        );
    }

    #[test]
    fn backdating_does_not_make_a_fresh_svid_due() {
        // Issued at 1000 with notBefore backdated 10 s and a 10 s TTL.
        let i = Issued {
            not_before: 990,
            issued_at: 1000,
            not_after: 1010,
            entry_revision: 1,
            jitter_unit: 0.5,
        };
        assert_eq!(renew_at(&i), 1005, "half of the life left at arrival");
        assert_eq!(
            decide(Some(&i), 1, true, false, 1000),
            None,
            "not due on arrival"
        );
        // A nearly expired SVID still waits at least a second.
        let late = Issued {
            issued_at: 1009,
            ..i
        };
        assert_eq!(renew_at(&late), 1010);
    }

    #[test]
    fn renewal_overlaps_the_old_svid() {
        // Whatever the jitter, renewal comes well before expiry.
        for j in [0.0, 0.25, 0.5, 0.75, 1.0] {
            let i = issued(0, 3600, 1, j);
            let at = renew_at(&i);
            assert!(at < 3600 && 3600 - at >= 1600, "jitter {j}: {at}");
        }
    }

    #[test]
    fn reasons_in_order() {
        let i = issued(1000, 1100, 3, 0.5);
        assert_eq!(decide(None, 3, true, false, 0), Some(Reason::Missing));
        assert_eq!(
            decide(Some(&i), 4, true, false, 1010),
            Some(Reason::EntryChanged)
        );
        assert_eq!(
            decide(Some(&i), 3, false, false, 1010),
            Some(Reason::CaChanged)
        );
        assert_eq!(
            decide(Some(&i), 3, true, true, 1010),
            Some(Reason::CaTainted)
        );
        assert_eq!(
            decide(Some(&i), 3, false, true, 1010),
            Some(Reason::CaTainted)
        );
        assert_eq!(
            decide(Some(&i), 3, true, false, 1100),
            Some(Reason::Expired)
        );
        assert_eq!(decide(Some(&i), 3, true, false, 1010), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff_ms(0, 0.0) >= 250 && backoff_ms(0, 0.999) <= 1000);
        assert!(backoff_ms(3, 0.5) > backoff_ms(0, 0.5));
        assert!(backoff_ms(20, 0.999) <= 30_000);
        assert!(backoff_ms(20, 0.0) >= 7_500);
    }

    #[test]
    fn refusal_backoff_grows_to_five_minutes() {
        assert_eq!(refusal_backoff_ms(0, 0.5), 625);
        assert_eq!(refusal_backoff_ms(8, 0.0), 64_000);
        assert_eq!(refusal_backoff_ms(9, 0.999), 299_775);
        assert_eq!(refusal_backoff_ms(u32::MAX, 0.0), 75_000);
        assert_eq!(refusal_backoff_ms(u32::MAX, 1.0), 300_000);
    }
}
