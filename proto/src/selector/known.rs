//! The selectors Sigil's attestors produce, and the syntax of each value:
//! an entry whose selector no attestor can produce never matches, so the
//! admin API checks every selector against this catalogue
//! ([`check_known`]). Workload attestors (agent): `unix:uid:<u32>`,
//! `unix:gid:<u32>`, `unix:supplementary_gid:<u32>`, `unix:user:<name>`,
//! `unix:group:<name>`, `unix:path:<absolute path>`, `unix:sha256:<64 hex>`,
//! `container:id:<64 hex>`, `systemd:unit:<name>.service`. Node attestors
//! (server): `join_token:<64 hex>` (the token's SHA-256),
//! `x509pop:subject:cn:<common name>`, `x509pop:ca:fingerprint:<64 hex>`.
//! A type not in the catalogue is [`KnownSelectorError::UnknownType`], which
//! a caller may choose to allow; every other refusal is a value that the
//! attestor of a known type can never produce.

use super::Selector;

/// How a value (after its key) must look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    /// A decimal `u32` (uids, gids); `name_key` is the key for names.
    Id { name_key: &'static str },
    /// A user or group name: non-empty, no whitespace, no ':'.
    Name,
    /// An absolute path.
    AbsPath,
    /// 64 lowercase hex digits (a SHA-256).
    Sha256,
    /// Any non-empty text.
    Text,
    /// A systemd service name (`name.service`, `name@inst.service`): the
    /// agent's `systemd` attestor names services only.
    Unit,
}

/// One selector type: its keys (`""` for a type whose value has none).
struct Kind {
    ty: &'static str,
    keys: &'static [(&'static str, Syntax)],
}

const KINDS: &[Kind] = &[
    Kind {
        ty: "unix",
        keys: &[
            ("uid", Syntax::Id { name_key: "user" }),
            ("gid", Syntax::Id { name_key: "group" }),
            ("supplementary_gid", Syntax::Id { name_key: "group" }),
            ("user", Syntax::Name),
            ("group", Syntax::Name),
            ("path", Syntax::AbsPath),
            ("sha256", Syntax::Sha256),
        ],
    },
    Kind {
        ty: "container",
        keys: &[("id", Syntax::Sha256)],
    },
    Kind {
        ty: "systemd",
        keys: &[("unit", Syntax::Unit)],
    },
    Kind {
        ty: "join_token",
        keys: &[("", Syntax::Sha256)],
    },
    Kind {
        ty: "x509pop",
        keys: &[
            ("subject:cn", Syntax::Text),
            ("ca:fingerprint", Syntax::Sha256),
        ],
    },
];

/// Why a selector can never match anything Sigil attests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnownSelectorError {
    #[error(
        "selector {selector:?}: unknown type {ty:?}{hint}; the known types are {known} \
         (allow_unknown_selectors / --allow-unknown-selector stores it anyway)"
    )]
    UnknownType {
        selector: String,
        ty: String,
        /// `" (did you mean unix?)"`, or empty.
        hint: String,
        known: String,
    },
    #[error("selector {selector:?}: unknown key {key:?} for type {ty}{hint}; valid: {valid}")]
    UnknownKey {
        selector: String,
        ty: String,
        key: String,
        hint: String,
        valid: String,
    },
    #[error("selector {selector:?}: {rule}")]
    BadValue { selector: String, rule: String },
}

impl KnownSelectorError {
    /// Whether only the type is unknown (the one refusal a caller may
    /// waive).
    pub fn is_unknown_type(&self) -> bool {
        matches!(self, KnownSelectorError::UnknownType { .. })
    }
}

/// Checks `sel` against the catalogue of selectors Sigil's attestors
/// produce (see the module doc).
pub fn check_known(sel: &Selector) -> Result<(), KnownSelectorError> {
    let selector = sel.to_string();
    let Some(kind) = KINDS.iter().find(|k| k.ty == sel.ty()) else {
        let known: Vec<&str> = KINDS.iter().map(|k| k.ty).collect();
        return Err(KnownSelectorError::UnknownType {
            selector,
            ty: sel.ty().to_string(),
            hint: did_you_mean(sel.ty(), &known),
            known: known.join(", "),
        });
    };
    let value = sel.value();
    // The longest key that prefixes the value ("subject:cn:" before "subject:").
    let found = kind.keys.iter().find_map(|(key, syntax)| {
        if key.is_empty() {
            return Some((*key, *syntax, value));
        }
        value
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|rest| (*key, *syntax, rest))
    });
    let Some((key, syntax, rest)) = found else {
        let keys: Vec<&str> = kind.keys.iter().map(|(k, _)| *k).collect();
        let given = key_of(value, &keys);
        return Err(KnownSelectorError::UnknownKey {
            hint: did_you_mean(&given, &keys),
            valid: keys
                .iter()
                .map(|k| format!("{}:{k}:<value>", kind.ty))
                .collect::<Vec<_>>()
                .join(", "),
            selector,
            ty: kind.ty.to_string(),
            key: given,
        });
    };
    check_syntax(kind.ty, key, syntax, rest)
        .map_err(|rule| KnownSelectorError::BadValue { selector, rule })
}

/// The key an unknown value seems to use: as many ':'-separated parts as
/// the type's keys have.
fn key_of(value: &str, keys: &[&str]) -> String {
    let parts = keys.first().map_or(1, |k| k.split(':').count());
    value
        .splitn(parts + 1, ':')
        .take(parts)
        .collect::<Vec<_>>()
        .join(":")
}

fn check_syntax(ty: &str, key: &str, syntax: Syntax, v: &str) -> Result<(), String> {
    let what = if key.is_empty() {
        ty.to_string()
    } else {
        format!("{ty}:{key}")
    };
    match syntax {
        Syntax::Id { name_key } => {
            if v.parse::<u32>().is_ok() && (v == "0" || !v.starts_with('0')) {
                Ok(())
            } else if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                Err(format!(
                    "{what} must be a decimal number from 0 to 4294967295 without leading \
                     zeros, not {v:?}"
                ))
            } else {
                Err(format!(
                    "{what} must be a number, not {v:?} (for a name use {ty}:{name_key}:{v})"
                ))
            }
        }
        Syntax::Name => {
            if v.is_empty() || v.contains(':') || v.chars().any(char::is_whitespace) {
                Err(format!(
                    "{what} must be a name without ':' or spaces, not {v:?}"
                ))
            } else {
                Ok(())
            }
        }
        Syntax::AbsPath => {
            if v.starts_with('/') {
                Ok(())
            } else {
                Err(format!(
                    "{what} must be an absolute path (as /proc/<pid>/exe names it), not {v:?}"
                ))
            }
        }
        Syntax::Sha256 => {
            if v.len() == 64 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                Ok(())
            } else {
                Err(format!(
                    "{what} must be 64 lowercase hex digits (a SHA-256), not {v:?}"
                ))
            }
        }
        Syntax::Text => {
            if v.is_empty() {
                Err(format!("{what} needs a value"))
            } else {
                Ok(())
            }
        }
        Syntax::Unit => {
            let ok = v.len() <= 255
                && v.strip_suffix(".service").is_some_and(|n| !n.is_empty())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_:.-@\\".contains(&b));
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "{what} must be a systemd service name like nginx.service (letters, digits, \
                     ':', '_', '.', '-', '@', '\\', ending in .service, at most 255 bytes), \
                     not {v:?}"
                ))
            }
        }
    }
}

/// `" (did you mean X?)"` for the candidate within two edits of `given`.
fn did_you_mean(given: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .filter(|c| !c.is_empty())
        .map(|c| (edit_distance(given, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| format!(" (did you mean {c}?)"))
        .unwrap_or_default()
}

/// Levenshtein distance, counting a swap of two neighbours as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str) -> Result<(), KnownSelectorError> {
        check_known(&Selector::parse(s).unwrap())
    }

    #[test]
    fn accepts_what_the_attestors_produce() {
        let hex = "ab".repeat(32);
        for ok in [
            "unix:uid:0".to_string(),
            "unix:uid:4294967295".into(),
            "unix:gid:1000".into(),
            "unix:supplementary_gid:27".into(),
            "unix:user:www-data".into(),
            "unix:group:adm".into(),
            "unix:path:/usr/bin/nginx".into(),
            format!("unix:sha256:{hex}"),
            format!("container:id:{hex}"),
            "systemd:unit:nginx.service".into(),
            "systemd:unit:getty@tty1.service".into(),
            format!("join_token:{hex}"),
            "x509pop:subject:cn:node-1.example.org".into(),
            format!("x509pop:ca:fingerprint:{hex}"),
        ] {
            check(&ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn i22_2_refusals_name_the_cause_and_the_fix() {
        for (bad, needles, unknown_type) in [
            (
                "uinx:uid:0",
                &["unknown type \"uinx\"", "did you mean unix?"][..],
                true,
            ),
            (
                "k8s:ns:default",
                &["unknown type \"k8s\"", "unix, container"],
                true,
            ),
            (
                "unix:uuid:0",
                &[
                    "unknown key \"uuid\"",
                    "did you mean uid?",
                    "unix:sha256:<value>",
                ],
                false,
            ),
            (
                "unix:uid:root",
                &["must be a number", "unix:user:root"],
                false,
            ),
            ("unix:gid:wheel", &["unix:group:wheel"], false),
            ("unix:uid:4294967296", &["0 to 4294967295"], false),
            ("unix:uid:007", &["leading"], false),
            ("unix:path:bin/sh", &["absolute path"], false),
            ("unix:sha256:ABC", &["64 lowercase hex"], false),
            ("container:id:abc", &["container:id must be 64"], false),
            ("join_token:secret", &["join_token must be 64"], false),
            (
                "x509pop:subject:dn:x",
                &["unknown key \"subject:dn\""],
                false,
            ),
            ("systemd:unit:nginx", &["systemd service name"], false),
            ("systemd:unit:user.slice", &["ending in .service"], false),
        ] {
            let e = check(bad).unwrap_err();
            let m = e.to_string();
            for n in needles {
                assert!(m.contains(n), "{bad}: expected {n:?} in {m}");
            }
            assert_eq!(e.is_unknown_type(), unknown_type, "{bad}: {m}");
        }
    }
}
