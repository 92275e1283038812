//! How both daemons' command lines print an error: the message and its
//! causes joined by ": ", each cause said once. Error types that print
//! their source in their own message (`"cannot read {path}: {source}"`)
//! and also return it as `source()` would otherwise say it twice.

use std::error::Error;

/// `e` and its causes, joined by ": ", leaving out a cause whose text the
/// message so far already holds.
pub fn error_text(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let m = c.to_string();
        if !m.is_empty() && !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read config file x.toml: {source}")]
    struct Read {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("starting failed")]
    struct Outer(#[source] Read);

    #[test]
    fn i22_6_each_cause_is_said_once() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = Outer(Read { source: io() });
        assert_eq!(
            error_text(&e),
            format!("starting failed: cannot read config file x.toml: {}", io())
        );
    }
}
