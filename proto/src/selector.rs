//! Selectors: `type:value` facts about a node or workload (`unix:uid:1000`,
//! `x509pop:subject:cn:web-1`). The type is `[a-z0-9_-]+`; the value is
//! non-empty, at most 4096 bytes, with no control characters. The value may
//! itself contain ':'.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod known;

/// Longest selector value accepted, in bytes (a Linux path fits).
pub const MAX_SELECTOR_VALUE_LEN: usize = 4096;
/// Longest selector type accepted, in bytes.
pub const MAX_SELECTOR_TYPE_LEN: usize = 64;

/// Why a selector was refused; every message names the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("selector {value:?} has no ':': selectors are written type:value, e.g. unix:uid:1000")]
    MissingColon { value: String },
    #[error("selector {value:?} has an empty type: the type must match [a-z0-9_-]+")]
    EmptyType { value: String },
    #[error("selector {value:?}: type {ty:?} must match [a-z0-9_-]+ (at most 64 bytes), e.g. unix")]
    BadType { value: String, ty: String },
    #[error("selector {value:?} has an empty value: write type:value, e.g. unix:uid:1000")]
    EmptyValue { value: String },
    #[error("selector {value:?}: control character {byte:#04x} is not allowed in a selector value")]
    ControlChar { value: String, byte: u32 },
    #[error("selector value is {len} bytes, more than the limit of 4096")]
    ValueTooLong { len: usize },
}

/// A validated selector.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    ty: String,
    value: String,
}

impl Selector {
    /// Parses `type:value`.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let Some((ty, value)) = input.split_once(':') else {
            return Err(SelectorError::MissingColon {
                value: input.to_string(),
            });
        };
        Self::new(ty, value).map_err(|e| match e {
            // Report the whole input, not just the part that failed.
            SelectorError::EmptyType { .. } => SelectorError::EmptyType {
                value: input.to_string(),
            },
            SelectorError::BadType { ty, .. } => SelectorError::BadType {
                value: input.to_string(),
                ty,
            },
            SelectorError::EmptyValue { .. } => SelectorError::EmptyValue {
                value: input.to_string(),
            },
            other => other,
        })
    }

    /// Builds a selector from its two parts.
    pub fn new(ty: &str, value: &str) -> Result<Self, SelectorError> {
        let whole = || format!("{ty}:{value}");
        if ty.is_empty() {
            return Err(SelectorError::EmptyType { value: whole() });
        }
        if ty.len() > MAX_SELECTOR_TYPE_LEN
            || !ty
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(SelectorError::BadType {
                value: whole(),
                ty: ty.to_string(),
            });
        }
        if value.is_empty() {
            return Err(SelectorError::EmptyValue { value: whole() });
        }
        if value.len() > MAX_SELECTOR_VALUE_LEN {
            return Err(SelectorError::ValueTooLong { len: value.len() });
        }
        if let Some(c) = value.chars().find(|c| c.is_control()) {
            return Err(SelectorError::ControlChar {
                value: whole().escape_debug().to_string(),
                byte: c as u32,
            });
        }
        Ok(Selector {
            ty: ty.to_string(),
            value: value.to_string(),
        })
    }

    /// The selector type, e.g. `unix`.
    pub fn ty(&self) -> &str {
        &self.ty
    }

    /// The selector value, e.g. `uid:1000`.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ty, self.value)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({}:{})", self.ty, self.value)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// True when every selector of `required` is in `have` (subset match, the
/// rule for entries applying to a workload or node).
pub fn is_subset(required: &[Selector], have: &[Selector]) -> bool {
    missing(required, have).next().is_none()
}

/// The selectors of `required` that `have` lacks: what keeps an entry from
/// applying (`entry explain`); [`is_subset`] is "none missing".
pub fn missing<'a>(
    required: &'a [Selector],
    have: &'a [Selector],
) -> impl Iterator<Item = &'a Selector> + 'a {
    required.iter().filter(move |r| !have.contains(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_type_and_value() {
        let s = Selector::parse("unix:uid:1000").unwrap();
        assert_eq!((s.ty(), s.value()), ("unix", "uid:1000"));
        assert_eq!(s.to_string(), "unix:uid:1000");
    }

    #[test]
    fn refuses_bad_forms() {
        for bad in [
            "",
            "unix",
            ":x",
            "Unix:uid:1",
            "un ix:uid",
            "unix:",
            "unix:a\nb",
            "unix:\u{7f}",
        ] {
            let err = Selector::parse(bad).unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad:?}");
        }
        let long = format!("unix:{}", "a".repeat(MAX_SELECTOR_VALUE_LEN + 1));
        assert!(matches!(
            Selector::parse(&long),
            Err(SelectorError::ValueTooLong { .. })
        ));
    }

    #[test]
    fn subset() {
        let a = Selector::parse("unix:uid:1").unwrap();
        let b = Selector::parse("unix:gid:1").unwrap();
        assert!(is_subset(std::slice::from_ref(&a), &[a.clone(), b.clone()]));
        assert!(!is_subset(
            &[a.clone(), b.clone()],
            std::slice::from_ref(&a)
        ));
        assert!(is_subset(&[], &[]));
    }
}
