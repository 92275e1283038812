//! Daemon logs: to stderr, filtered by a `tracing` directive (`--log-level`
//! / `SIGIL_LOG`), as text (ANSI colours only on a terminal) or JSON lines.

/// The log line format (`--log-format` / `SIGIL_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// The level is not a valid filter directive.
    #[error("--log-level {level:?}: {message}")]
    Level { level: String, message: String },
    /// A global subscriber is already installed.
    #[error("{0}")]
    Install(String),
}

/// Installs the process's log subscriber: stderr, `level` as an
/// `EnvFilter` directive, `format`.
pub fn init_logs(level: &str, format: LogFormat) -> Result<(), LogsError> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| LogsError::Level {
        level: level.to_string(),
        message: e.to_string(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| LogsError::Install(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_level_is_refused_naming_the_flag_and_value() {
        let e = init_logs("sigil=loud", LogFormat::Text).unwrap_err();
        assert!(matches!(e, LogsError::Level { .. }), "{e:?}");
        let m = e.to_string();
        assert!(m.starts_with("--log-level \"sigil=loud\": "), "{m}");
    }

    #[test]
    fn installs_once_then_reports_the_second_install() {
        // The only test in this binary that installs a subscriber.
        init_logs("off", LogFormat::Json).unwrap();
        let e = init_logs("off", LogFormat::Text).unwrap_err();
        assert!(matches!(e, LogsError::Install(_)), "{e:?}");
    }
}
