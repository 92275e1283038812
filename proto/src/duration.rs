//! The duration syntax shared by configs, the CLI and entry files: one or
//! more `<number><unit>` parts with units `s`, `m`, `h`, `d`, e.g. `30s`,
//! `10m`, `1h30m`, `7d`. A bare number has no unit and is refused.

use std::time::Duration;

/// Why a duration was refused; the message names the value and the syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {value:?}: {reason} (write e.g. 30s, 10m, 1h, 7d or 1h30m)")]
pub struct DurationError {
    pub value: String,
    pub reason: &'static str,
}

/// Parses `30s`, `10m`, `1h`, `7d`, `1h30m`.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        value: input.to_string(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total: u64 = 0;
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            let n = num.unwrap_or(0);
            num = Some(
                n.checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d)))
                    .ok_or_else(|| err("too large"))?,
            );
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            '-' => return Err(err("negative durations are not allowed")),
            _ => return Err(err("unknown unit (use s, m, h or d)")),
        };
        let n = num
            .take()
            .ok_or_else(|| err("a unit must follow a number"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| err("too large"))?;
    }
    if num.is_some() {
        return Err(err("missing unit after the last number"));
    }
    // Refuse anything beyond ~100 years: certainly a mistake.
    if total > 100 * 365 * 86_400 {
        return Err(err("too large (more than 100 years)"));
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration in the same syntax, largest units first (`1h30m`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, name) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
        if secs >= unit {
            out.push_str(&(secs / unit).to_string());
            out.push(name);
            secs %= unit;
        }
    }
    out
}

/// Serde adapter for `Duration` fields written in this syntax.
pub mod serde_duration {
    use super::{format_duration, parse_duration};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses() {
        for bad in [
            "",
            "10",
            "1x",
            "h",
            "-5s",
            "1.5h",
            "99999999999999999999s",
            "36600d",
            "1h 3",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn round_trips() {
        for s in ["1s", "1m", "1h30m", "7d", "1d1h1m1s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
