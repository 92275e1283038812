//! `[store]` of the server's configuration: which backend keeps the state.
//! Absent, the embedded sled store in `<data_dir>/store` (one server).
//! `[store.postgres]` selects PostgreSQL, shared by several servers:
//!
//! ```toml
//! [store.postgres]
//! connection_string = "host=db.internal dbname=sigil user=sigil sslmode=verify-full"
//! password_file = "/etc/sigil/pg-password"   # optional; else PGPASSWORD
//! ca_file = "/etc/sigil/pg-ca.pem"            # needed for TLS
//! max_connections = 16                        # default 16, 1 to 1000
//! statement_timeout = "30s"                   # default 30s, 1s to 1h
//! ```
//!
//! The password never sits in the connection string (refused: it would end
//! up in config dumps and logs); it comes from `password_file` or the
//! `PGPASSWORD` environment variable, read when the store opens. TLS is
//! always verified against `ca_file` (host name included): `sslmode`
//! `require` and `verify-full` both mean that, and need `ca_file`;
//! `verify-ca` (no host name check) is refused.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sigil_proto::daemon::path_check::PathProblems;
use sigil_proto::duration::serde_duration;

use super::{ConfigError, invalid};

/// `[store]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `[store.postgres]`: PostgreSQL instead of the embedded sled store.
    pub postgres: Option<PostgresConfig>,
}

/// How the server connects to PostgreSQL when verifying its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgTls {
    /// No TLS (`sslmode=disable`, or `prefer` without `ca_file`): for a
    /// Unix socket or loopback only.
    Off,
    /// TLS with the server's certificate verified against `ca_file`,
    /// host name included; `required` unless `sslmode=prefer`.
    Verified { required: bool },
}

/// `[store.postgres]`. `Debug` shows no secret (the connection string
/// cannot hold a password, and the password is not kept here).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// libpq-style `key=value` pairs or a `postgresql://` URL, without a
    /// password.
    pub connection_string: String,
    /// File holding the password (trailing newline ignored). Absent:
    /// `PGPASSWORD` from the environment, if set.
    pub password_file: Option<PathBuf>,
    /// PEM CA certificates that the database server's certificate must
    /// chain to.
    pub ca_file: Option<PathBuf>,
    /// Connections in the pool (default 16).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Longest a statement (and a whole store call) may run (default 30s).
    #[serde(default = "default_statement_timeout", with = "serde_duration")]
    pub statement_timeout: Duration,
}

fn default_max_connections() -> usize {
    16
}
fn default_statement_timeout() -> Duration {
    Duration::from_secs(30)
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("connection_string", &self.connection_string)
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .field("max_connections", &self.max_connections)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

const KEY_CONN: &str = "store.postgres.connection_string";

impl PostgresConfig {
    /// The connection string parsed, with Sigil's `sslmode` values mapped
    /// to the client's, and how TLS is used. Refuses a password in the
    /// string, `verify-ca`, and TLS modes without `ca_file`.
    pub fn client_config(&self) -> Result<(tokio_postgres::Config, PgTls), ConfigError> {
        let text = self.connection_string.trim();
        let mode = sslmode(text);
        if mode.as_deref() == Some("verify-ca") {
            return Err(invalid(
                KEY_CONN,
                "sslmode=verify-ca is not supported: Sigil always checks the host name too; \
                 use sslmode=verify-full with store.postgres.ca_file",
            ));
        }
        // The client knows disable/prefer/require; verify-full is require
        // plus the verification the connector always does.
        let mapped = text.replace("sslmode=verify-full", "sslmode=require");
        let cfg: tokio_postgres::Config = mapped.parse().map_err(|e| {
            invalid(
                KEY_CONN,
                format!("cannot parse {:?}: {e}", redact_password(text)),
            )
        })?;
        if cfg.get_password().is_some() {
            return Err(invalid(
                KEY_CONN,
                "holds a password; put it in store.postgres.password_file or the PGPASSWORD \
                 environment variable instead",
            ));
        }
        if cfg.get_hosts().is_empty() {
            return Err(invalid(
                KEY_CONN,
                format!("{text:?} names no host (add host=...)"),
            ));
        }
        let tls = match (mode.as_deref(), &self.ca_file) {
            (Some("disable"), Some(_)) => {
                return Err(invalid(
                    "store.postgres.ca_file",
                    "is set but the connection string says sslmode=disable",
                ));
            }
            (Some("disable"), None) | (None | Some("prefer"), None) => PgTls::Off,
            (Some(m @ ("require" | "verify-full")), None) => {
                return Err(invalid(
                    "store.postgres.ca_file",
                    format!(
                        "is needed for sslmode={m}: Sigil verifies the database server's \
                         certificate against it"
                    ),
                ));
            }
            (Some("prefer") | None, Some(_)) => PgTls::Verified { required: false },
            (Some("require" | "verify-full"), Some(_)) => PgTls::Verified { required: true },
            (Some(other), _) => {
                return Err(invalid(
                    KEY_CONN,
                    format!("sslmode={other} is not one of disable, prefer, require, verify-full"),
                ));
            }
        };
        Ok((cfg, tls))
    }
}

/// Checks `[store]` at load: every key's value, and that the connection
/// string parses.
pub(super) fn check_store(store: &StoreConfig) -> Result<(), ConfigError> {
    let Some(pg) = &store.postgres else {
        return Ok(());
    };
    if !(1..=1000).contains(&pg.max_connections) {
        return Err(invalid(
            "store.postgres.max_connections",
            format!("{} is out of range (1 to 1000)", pg.max_connections),
        ));
    }
    let timeout = pg.statement_timeout;
    if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(3600) {
        return Err(invalid(
            "store.postgres.statement_timeout",
            format!(
                "{} is out of range (1s to 1h)",
                sigil_proto::format_duration(timeout)
            ),
        ));
    }
    pg.client_config().map(|_| ())
}

/// `validate`'s check that the files `[store.postgres]` names are readable.
pub(super) fn check_store_paths(store: &StoreConfig, p: &mut PathProblems) {
    if let Some(pg) = &store.postgres {
        if let Some(f) = &pg.password_file {
            p.readable_file("store.postgres.password_file", f);
        }
        if let Some(f) = &pg.ca_file {
            p.readable_file("store.postgres.ca_file", f);
        }
    }
}

/// The `sslmode` value of a key=value string or URL, if given.
fn sslmode(text: &str) -> Option<String> {
    let at = text.find("sslmode=")? + "sslmode=".len();
    let rest = &text[at..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '&')
        .unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

/// `text` with the value after `password=` (or a URL's `user:password@`)
/// replaced, for error messages.
fn redact_password(text: &str) -> String {
    if let Some(at) = text.find("password=") {
        let start = at + "password=".len();
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || c == '&')
            .map_or(text.len(), |n| start + n);
        return format!("{}<redacted>{}", &text[..start], &text[end..]);
    }
    if let (Some(scheme), Some(at)) = (text.find("://"), text.find('@'))
        && scheme + 3 <= at
        && let Some(colon) = text[scheme + 3..at].find(':')
    {
        let start = scheme + 3 + colon + 1;
        return format!("{}<redacted>{}", &text[..start], &text[at..]);
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(conn: &str, ca: Option<&str>) -> PostgresConfig {
        PostgresConfig {
            connection_string: conn.into(),
            password_file: None,
            ca_file: ca.map(PathBuf::from),
            max_connections: 16,
            statement_timeout: Duration::from_secs(30),
        }
    }

    fn err(p: &PostgresConfig) -> String {
        p.client_config().unwrap_err().to_string()
    }

    #[test]
    fn postgres_config_is_validated_with_messages_naming_the_key() {
        let e = err(&pg("host=db user=sigil password=hunter2", None));
        assert!(e.contains(KEY_CONN) && e.contains("password_file"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = err(&pg("postgresql://sigil:hunter2@db/sigil", None));
        assert!(e.contains("PGPASSWORD") && !e.contains("hunter2"), "{e}");
        let e = err(&pg("host=db sslmode=verify-full", None));
        assert!(e.contains("store.postgres.ca_file"), "{e}");
        let e = err(&pg("host=db sslmode=verify-ca", Some("/ca.pem")));
        assert!(e.contains("verify-full"), "{e}");
        let e = err(&pg("host=db sslmode=disable", Some("/ca.pem")));
        assert!(e.contains("store.postgres.ca_file"), "{e}");
        let e = err(&pg("host=db nonsense", None));
        assert!(e.contains(KEY_CONN), "{e}");
        let (cfg, tls) = pg("host=db dbname=sigil sslmode=verify-full", Some("/ca.pem"))
            .client_config()
            .unwrap();
        assert_eq!(tls, PgTls::Verified { required: true });
        assert_eq!(cfg.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        let (_, tls) = pg("host=/run/postgresql dbname=sigil", None)
            .client_config()
            .unwrap();
        assert_eq!(tls, PgTls::Off);

        let mut big = pg("host=db", None);
        big.max_connections = 0;
        let e = check_store(&StoreConfig {
            postgres: Some(big),
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("store.postgres.max_connections") && e.contains('0'),
            "{e}"
        );
    }

    #[test]
    fn store_postgres_section_parses_with_defaults() {
        let text = r#"
            trust_domain = "example.org"
            data_dir = "/var/lib/sigil"
            [store.postgres]
            connection_string = "host=db dbname=sigil user=sigil"
            password_file = "/etc/sigil/pg-password"
        "#;
        let cfg = crate::config::ServerConfig::parse(text).unwrap();
        let p = cfg.store.postgres.expect("[store.postgres]");
        assert_eq!(p.max_connections, 16);
        assert_eq!(p.statement_timeout, Duration::from_secs(30));
        let e = crate::config::ServerConfig::parse(&text.replace("password_file", "passwd"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("passwd"), "{e}");
    }
}
