//! The helper's TOML configuration. Key names follow SPIRE's spiffe-helper
//! where it has one (`agent_address`, `cmd`, `cmd_args`, `cert_dir`,
//! `svid_file_name`, `svid_key_file_name`, `svid_bundle_file_name`,
//! `renew_signal`, `pid_file_name`, `include_federated_domains`); unknown keys are an error naming the
//! key, and every check names the key it refused. `consumer_user` (Sigil's)
//! names who besides root may own the pid file and the process signalled.
//! The JWT keys (`jwt_svids`, `jwt_bundle_file_name`) are validated here
//! into a [`JwtConfig`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Deserialize;
use sigil_proto::daemon::config::{ConfigFileError, parse_toml, read_toml};
use sigil_proto::parse_duration;

use super::jwt_config::{JwtConfig, JwtSvidFile};

#[derive(Debug, thiserror::Error)]
pub enum HelperConfigError {
    /// The file cannot be read, or is not TOML of the expected shape
    /// (unknown keys are refused by name).
    #[error(transparent)]
    File(#[from] ConfigFileError),
    #[error("invalid config: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> HelperConfigError {
    HelperConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// A file mode written as a TOML integer (`0o644`) or an octal string
/// (`"0644"`, as spiffe-helper users write it).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawMode {
    Int(i64),
    Text(String),
}

/// `cmd_args` as one string split on whitespace (spiffe-helper) or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawArgs {
    Line(String),
    List(Vec<String>),
}

/// `consumer_user` as a user name or a numeric uid.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawUser {
    Uid(i64),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    agent_address: Option<String>,
    cert_dir: Option<PathBuf>,
    svid_file_name: Option<String>,
    svid_key_file_name: Option<String>,
    svid_bundle_file_name: Option<String>,
    federated_bundle_file_name: Option<String>,
    include_federated_domains: Option<bool>,
    cert_file_mode: Option<RawMode>,
    key_file_mode: Option<RawMode>,
    hint: Option<String>,
    cmd: Option<String>,
    cmd_args: Option<RawArgs>,
    cmd_timeout: Option<String>,
    renew_signal: Option<String>,
    pid_file_name: Option<PathBuf>,
    consumer_user: Option<RawUser>,
    once_timeout: Option<String>,
    jwt_svids: Option<Vec<RawJwtSvid>>,
    jwt_bundle_file_name: Option<String>,
}

/// How the consumer is told that new files are in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadConfig {
    /// Files only.
    None,
    /// Run `cmd args…`, waiting at most `timeout` for it.
    Command {
        cmd: String,
        args: Vec<String>,
        timeout: Duration,
    },
    /// Send `signal` to the pid written in `pid_file`, once
    /// [`super::pid_file`] has vetted both.
    Signal {
        signal: Signal,
        pid_file: PathBuf,
        /// `consumer_user`: besides root and the helper's own user, the
        /// one user who may own the pid file and the process.
        consumer_uid: Option<u32>,
    },
}

/// A validated helper configuration.
#[derive(Debug, Clone)]
pub struct HelperConfig {
    /// The Workload API socket; `None` means `SPIFFE_ENDPOINT_SOCKET`, else
    /// the agent's default socket.
    pub agent_address: Option<PathBuf>,
    pub cert_dir: PathBuf,
    pub svid_file_name: String,
    pub svid_key_file_name: String,
    pub svid_bundle_file_name: String,
    /// The CAs of every trust domain the SVID's entry federates with (one
    /// PEM file, possibly empty). Default `federated_bundle.pem`.
    pub federated_bundle_file_name: String,
    /// spiffe-helper's `include_federated_domains`: also append those CAs
    /// to the bundle file. Default false.
    pub include_federated_domains: bool,
    pub cert_file_mode: u32,
    pub key_file_mode: u32,
    /// Which SVID to write (by its hint); `None`: the first (default) one.
    pub hint: Option<String>,
    pub reload: ReloadConfig,
    /// `--once`: how long to wait for the first SVID.
    pub once_timeout: Duration,
    /// JWT-SVID and JWT bundle files (none by default).
    pub jwt: JwtConfig,
}

pub const DEFAULT_SVID_FILE: &str = "svid.pem";
pub const DEFAULT_KEY_FILE: &str = "svid_key.pem";
pub const DEFAULT_BUNDLE_FILE: &str = "bundle.pem";
pub const DEFAULT_FEDERATED_BUNDLE_FILE: &str = "federated_bundle.pem";
const DEFAULT_CMD_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_ONCE_TIMEOUT: Duration = Duration::from_secs(30);

fn mode(key: &'static str, raw: Option<RawMode>, default: u32) -> Result<u32, HelperConfigError> {
    let value = match raw {
        None => return Ok(default),
        Some(RawMode::Int(i)) => i,
        Some(RawMode::Text(s)) => {
            let digits = s.strip_prefix("0o").unwrap_or(&s);
            i64::from_str_radix(digits, 8).map_err(|_| {
                invalid(
                    key,
                    format!("{s:?} is not an octal file mode (write e.g. \"0644\" or 0o644)"),
                )
            })?
        }
    };
    u32::try_from(value)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            invalid(
                key,
                format!("{value:#o} is not a file mode between 0o000 and 0o777"),
            )
        })
}

fn file_name(
    key: &'static str,
    raw: Option<String>,
    default: &str,
) -> Result<String, HelperConfigError> {
    let name = raw.unwrap_or_else(|| default.to_string());
    if name.is_empty()
        || name.contains('/')
        || name.contains('\0')
        || name == "."
        || name.starts_with("..")
    {
        return Err(invalid(
            key,
            format!(
                "{name:?} must be a plain file name inside cert_dir (no '/', not starting with \
                 \"..\", which is reserved for the versioned directories)"
            ),
        ));
    }
    Ok(name)
}

fn duration(
    key: &'static str,
    raw: Option<String>,
    default: Duration,
) -> Result<Duration, HelperConfigError> {
    let Some(s) = raw else {
        return Ok(default);
    };
    let d = parse_duration(&s).map_err(|e| invalid(key, e.to_string()))?;
    if d.is_zero() {
        return Err(invalid(key, format!("{s:?} must be more than 0s")));
    }
    Ok(d)
}

/// One `[[jwt_svids]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwtSvid {
    jwt_audience: Option<String>,
    jwt_svid_file_name: Option<String>,
}

/// Validates the JWT keys (`jwt_config`); `taken`: the X.509 file names,
/// which no JWT file may reuse.
fn jwt_config(
    svids: Option<Vec<RawJwtSvid>>,
    bundle: Option<String>,
    taken: &[&str],
) -> Result<JwtConfig, HelperConfigError> {
    let mut names: Vec<String> = taken.iter().map(|s| s.to_string()).collect();
    let mut out = JwtConfig::default();
    for raw in svids.unwrap_or_default() {
        let audience = raw.jwt_audience.filter(|a| !a.is_empty()).ok_or_else(|| {
            invalid(
                "jwt_svids",
                "every entry needs a jwt_audience (the token's aud)",
            )
        })?;
        let name = raw.jwt_svid_file_name.ok_or_else(|| {
            invalid(
                "jwt_svids",
                format!("the entry for audience {audience:?} needs a jwt_svid_file_name"),
            )
        })?;
        let name = file_name("jwt_svids", Some(name), "")?;
        if names.contains(&name) {
            return Err(invalid(
                "jwt_svids",
                format!("jwt_svid_file_name {name:?} is already used by another file"),
            ));
        }
        names.push(name.clone());
        out.svids.push(JwtSvidFile {
            audience,
            file_name: name,
        });
    }
    if let Some(b) = bundle {
        let name = file_name("jwt_bundle_file_name", Some(b), "")?;
        if names.contains(&name) {
            return Err(invalid(
                "jwt_bundle_file_name",
                format!("{name:?} is already used by another file"),
            ));
        }
        out.bundle_file_name = Some(name);
    }
    Ok(out)
}

/// Resolves `consumer_user` (a name from the user database, or a uid).
fn consumer_uid(raw: RawUser) -> Result<u32, HelperConfigError> {
    match raw {
        RawUser::Uid(u) => u32::try_from(u)
            .ok()
            .filter(|u| *u != u32::MAX)
            .ok_or_else(|| invalid("consumer_user", format!("{u} is not a uid"))),
        RawUser::Name(name) => {
            if let Ok(u) = name.parse::<u32>() {
                return consumer_uid(RawUser::Uid(i64::from(u)));
            }
            match nix::unistd::User::from_name(&name) {
                Ok(Some(user)) => Ok(user.uid.as_raw()),
                Ok(None) => Err(invalid(
                    "consumer_user",
                    format!("{name:?} is not a user of this host (a user name or a uid)"),
                )),
                Err(e) => Err(invalid(
                    "consumer_user",
                    format!("cannot look up {name:?}: {e}"),
                )),
            }
        }
    }
}

/// Parses `SIGHUP`, `HUP` or `sighup`.
pub fn parse_signal(name: &str) -> Option<Signal> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<Signal>().ok()
}

/// Parses a Workload API address: a `unix:` URI (SPIFFE Workload Endpoint
/// §4) or an absolute path.
fn socket_address(value: &str) -> Result<PathBuf, HelperConfigError> {
    if value.starts_with('/') {
        return Ok(PathBuf::from(value));
    }
    crate::workload_client::unix_endpoint(value).map_err(|e| {
        invalid(
            "agent_address",
            format!("{e:#} (unix:///absolute/path or an absolute path)"),
        )
    })
}

impl HelperConfig {
    pub fn load(path: &Path) -> Result<HelperConfig, HelperConfigError> {
        Self::from_raw(read_toml(path)?)
    }

    pub fn parse(text: &str) -> Result<HelperConfig, HelperConfigError> {
        Self::from_raw(parse_toml(text)?)
    }

    /// Validates a parsed file.
    fn from_raw(raw: RawConfig) -> Result<HelperConfig, HelperConfigError> {
        let agent_address = raw
            .agent_address
            .as_deref()
            .map(socket_address)
            .transpose()?;
        let cert_dir = raw.cert_dir.ok_or_else(|| {
            invalid(
                "cert_dir",
                "required: the directory the files are written to",
            )
        })?;
        if !cert_dir.is_absolute() {
            return Err(invalid(
                "cert_dir",
                format!("{} must be an absolute path", cert_dir.display()),
            ));
        }
        let svid_file_name = file_name("svid_file_name", raw.svid_file_name, DEFAULT_SVID_FILE)?;
        let svid_key_file_name = file_name(
            "svid_key_file_name",
            raw.svid_key_file_name,
            DEFAULT_KEY_FILE,
        )?;
        let svid_bundle_file_name = file_name(
            "svid_bundle_file_name",
            raw.svid_bundle_file_name,
            DEFAULT_BUNDLE_FILE,
        )?;
        if svid_key_file_name == svid_file_name {
            return Err(invalid(
                "svid_key_file_name",
                format!("{svid_key_file_name:?} is also svid_file_name; the names must differ"),
            ));
        }
        if svid_bundle_file_name == svid_file_name || svid_bundle_file_name == svid_key_file_name {
            return Err(invalid(
                "svid_bundle_file_name",
                format!(
                    "{svid_bundle_file_name:?} is also svid_file_name or svid_key_file_name; the \
                     names must differ"
                ),
            ));
        }
        let federated_bundle_file_name = file_name(
            "federated_bundle_file_name",
            raw.federated_bundle_file_name,
            DEFAULT_FEDERATED_BUNDLE_FILE,
        )?;
        if [&svid_file_name, &svid_key_file_name, &svid_bundle_file_name]
            .contains(&&federated_bundle_file_name)
        {
            return Err(invalid(
                "federated_bundle_file_name",
                format!(
                    "{federated_bundle_file_name:?} is also svid_file_name, svid_key_file_name or \
                     svid_bundle_file_name; the names must differ"
                ),
            ));
        }
        let jwt = jwt_config(
            raw.jwt_svids,
            raw.jwt_bundle_file_name,
            &[
                &svid_file_name,
                &svid_key_file_name,
                &svid_bundle_file_name,
                &federated_bundle_file_name,
            ],
        )?;
        let cert_file_mode = mode("cert_file_mode", raw.cert_file_mode, 0o644)?;
        let key_file_mode = mode("key_file_mode", raw.key_file_mode, 0o600)?;
        if key_file_mode & 0o004 != 0 {
            return Err(invalid(
                "key_file_mode",
                format!("{key_file_mode:#o} makes the private key world-readable"),
            ));
        }
        let hint = raw.hint.filter(|h| !h.is_empty());
        let cmd_timeout = duration("cmd_timeout", raw.cmd_timeout, DEFAULT_CMD_TIMEOUT)?;
        let once_timeout = duration("once_timeout", raw.once_timeout, DEFAULT_ONCE_TIMEOUT)?;
        let cmd = raw.cmd.filter(|c| !c.trim().is_empty());
        let renew_signal = raw.renew_signal.filter(|s| !s.trim().is_empty());
        let reload = match (cmd, renew_signal) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "renew_signal",
                    "set either cmd (run a command) or renew_signal with pid_file_name (signal a \
                     process), not both",
                ));
            }
            (Some(cmd), None) => {
                if raw.consumer_user.is_some() {
                    return Err(invalid(
                        "consumer_user",
                        "only used with renew_signal; cmd is set instead",
                    ));
                }
                if raw.pid_file_name.is_some() {
                    return Err(invalid(
                        "pid_file_name",
                        "only used with renew_signal; cmd is set instead",
                    ));
                }
                let args = match raw.cmd_args {
                    None => Vec::new(),
                    Some(RawArgs::Line(l)) => l.split_whitespace().map(String::from).collect(),
                    Some(RawArgs::List(v)) => v,
                };
                ReloadConfig::Command {
                    cmd,
                    args,
                    timeout: cmd_timeout,
                }
            }
            (None, Some(name)) => {
                let signal = parse_signal(&name).ok_or_else(|| {
                    invalid(
                        "renew_signal",
                        format!("{name:?} is not a signal name (write e.g. \"SIGHUP\")"),
                    )
                })?;
                if raw.cmd_args.is_some() {
                    return Err(invalid("cmd_args", "only used with cmd, which is not set"));
                }
                let pid_file = raw.pid_file_name.ok_or_else(|| {
                    invalid(
                        "pid_file_name",
                        "required with renew_signal: the file holding the pid to signal",
                    )
                })?;
                if !pid_file.is_absolute() {
                    return Err(invalid(
                        "pid_file_name",
                        format!("{} must be an absolute path", pid_file.display()),
                    ));
                }
                ReloadConfig::Signal {
                    signal,
                    pid_file,
                    consumer_uid: raw.consumer_user.map(consumer_uid).transpose()?,
                }
            }
            (None, None) => {
                if raw.cmd_args.is_some() {
                    return Err(invalid("cmd_args", "only used with cmd, which is not set"));
                }
                if raw.pid_file_name.is_some() {
                    return Err(invalid(
                        "pid_file_name",
                        "only used with renew_signal, which is not set",
                    ));
                }
                if raw.consumer_user.is_some() {
                    return Err(invalid(
                        "consumer_user",
                        "only used with renew_signal, which is not set",
                    ));
                }
                ReloadConfig::None
            }
        };
        Ok(HelperConfig {
            agent_address,
            cert_dir,
            svid_file_name,
            svid_key_file_name,
            svid_bundle_file_name,
            federated_bundle_file_name,
            include_federated_domains: raw.include_federated_domains.unwrap_or(false),
            cert_file_mode,
            key_file_mode,
            hint,
            reload,
            once_timeout,
            jwt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "cert_dir = \"/tmp/certs\"\n";

    #[test]
    fn defaults() {
        let c = HelperConfig::parse(OK).unwrap();
        assert_eq!(c.svid_file_name, "svid.pem");
        assert_eq!(c.svid_key_file_name, "svid_key.pem");
        assert_eq!(c.svid_bundle_file_name, "bundle.pem");
        assert_eq!(c.federated_bundle_file_name, "federated_bundle.pem");
        assert!(!c.include_federated_domains);
        assert_eq!((c.cert_file_mode, c.key_file_mode), (0o644, 0o600));
        assert_eq!(c.reload, ReloadConfig::None);
        assert_eq!(c.agent_address, None);
        assert_eq!(c.once_timeout, Duration::from_secs(30));
    }

    #[test]
    fn reload_forms() {
        let c = HelperConfig::parse(&format!(
            "{OK}cmd = \"/bin/sh\"\ncmd_args = \"-c  true\"\ncmd_timeout = \"5s\"\n\
             agent_address = \"unix:///run/a.sock\"\nkey_file_mode = \"0640\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.reload,
            ReloadConfig::Command {
                cmd: "/bin/sh".into(),
                args: vec!["-c".into(), "true".into()],
                timeout: Duration::from_secs(5)
            }
        );
        assert_eq!(c.agent_address, Some(PathBuf::from("/run/a.sock")));
        assert_eq!(c.key_file_mode, 0o640);
        let c = HelperConfig::parse(&format!(
            "{OK}renew_signal = \"hup\"\npid_file_name = \"/run/x.pid\"\ncert_file_mode = 0o640\n"
        ))
        .unwrap();
        assert_eq!(
            c.reload,
            ReloadConfig::Signal {
                signal: Signal::SIGHUP,
                pid_file: "/run/x.pid".into(),
                consumer_uid: None,
            }
        );
        for (user, uid) in [("\"root\"", 0), ("65534", 65534), ("\"1000\"", 1000)] {
            let c = HelperConfig::parse(&format!(
                "{OK}renew_signal = \"HUP\"\npid_file_name = \"/p\"\nconsumer_user = {user}\n"
            ))
            .unwrap();
            assert!(
                matches!(c.reload, ReloadConfig::Signal { consumer_uid: Some(u), .. } if u == uid),
                "{user}"
            );
        }
        assert_eq!(c.cert_file_mode, 0o640);
    }

    #[test]
    fn errors_name_the_key() {
        for (text, needle) in [
            (format!("{OK}cert_dri = \"/x\"\n"), "cert_dri"),
            ("hint = \"a\"\n".to_string(), "cert_dir"),
            ("cert_dir = \"rel\"\n".to_string(), "cert_dir"),
            (
                format!("{OK}cmd = \"x\"\nrenew_signal = \"SIGHUP\"\npid_file_name = \"/p\"\n"),
                "not both",
            ),
            (
                format!("{OK}renew_signal = \"SIGNOPE\"\npid_file_name = \"/p\"\n"),
                "renew_signal: \"SIGNOPE\"",
            ),
            (format!("{OK}renew_signal = \"SIGHUP\"\n"), "pid_file_name"),
            (format!("{OK}cmd_args = \"-s reload\"\n"), "cmd_args"),
            (
                format!("{OK}consumer_user = \"root\"\n"),
                "consumer_user: only used with renew_signal",
            ),
            (
                format!(
                    "{OK}renew_signal = \"HUP\"\npid_file_name = \"/p\"\n\
                     consumer_user = \"no-such-user-sigil\"\n"
                ),
                "consumer_user: \"no-such-user-sigil\" is not a user",
            ),
            (
                format!("{OK}renew_signal = \"HUP\"\npid_file_name = \"/p\"\nconsumer_user = -1\n"),
                "consumer_user: -1 is not a uid",
            ),
            (format!("{OK}svid_file_name = \"a/b\"\n"), "svid_file_name"),
            (
                format!("{OK}svid_key_file_name = \"..data\"\n"),
                "svid_key_file_name",
            ),
            (
                format!("{OK}svid_bundle_file_name = \"svid.pem\"\n"),
                "svid_bundle_file_name",
            ),
            (
                format!("{OK}federated_bundle_file_name = \"bundle.pem\"\n"),
                "federated_bundle_file_name: \"bundle.pem\" is also",
            ),
            (
                format!("{OK}federated_bundle_file_name = \"..fed\"\n"),
                "federated_bundle_file_name",
            ),
            (format!("{OK}key_file_mode = \"0644\"\n"), "key_file_mode"),
            (
                format!("{OK}agent_address = \"tcp://127.0.0.1:8000\"\n"),
                "serves the Workload API only on a Unix socket",
            ),
            (
                format!("{OK}agent_address = \"unix://host/run/a.sock\"\n"),
                "must not name a host",
            ),
            (format!("{OK}cert_file_mode = 0o1777\n"), "cert_file_mode"),
            (format!("{OK}cert_file_mode = \"rw\"\n"), "cert_file_mode"),
            (format!("{OK}once_timeout = \"10\"\n"), "once_timeout"),
            (
                format!("{OK}agent_address = \"tcp://x:1\"\n"),
                "agent_address",
            ),
        ] {
            let e = HelperConfig::parse(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn helper_jwt_keys_parse_as_spiffe_helper_writes_them() {
        let c = HelperConfig::parse(&format!(
            "{OK}jwt_bundle_file_name = \"jwt_bundle.json\"\n\
             jwt_svids = [{{ jwt_audience = \"vault\", jwt_svid_file_name = \"vault.jwt\" }},\n\
             {{ jwt_audience = \"aws\", jwt_svid_file_name = \"aws.jwt\" }}]\n"
        ))
        .unwrap();
        assert_eq!(
            c.jwt,
            JwtConfig {
                svids: vec![
                    JwtSvidFile {
                        audience: "vault".into(),
                        file_name: "vault.jwt".into()
                    },
                    JwtSvidFile {
                        audience: "aws".into(),
                        file_name: "aws.jwt".into()
                    },
                ],
                bundle_file_name: Some("jwt_bundle.json".into()),
            }
        );
        assert!(HelperConfig::parse(OK).unwrap().jwt.is_empty());
    }

    #[test]
    fn helper_jwt_key_errors_name_the_key_and_value() {
        for (extra, key, words) in [
            (
                "jwt_svids = [{ jwt_svid_file_name = \"a.jwt\" }]",
                "jwt_svids",
                "jwt_audience",
            ),
            (
                "jwt_svids = [{ jwt_audience = \"a\" }]",
                "jwt_svids",
                "\"a\" needs a jwt_svid_file_name",
            ),
            (
                "jwt_svids = [{ jwt_audience = \"a\", jwt_svid_file_name = \"../x\" }]",
                "jwt_svids",
                "\"../x\"",
            ),
            (
                "jwt_svids = [{ jwt_audience = \"a\", jwt_svid_file_name = \"svid.pem\" }]",
                "jwt_svids",
                "\"svid.pem\" is already used",
            ),
            (
                "jwt_svids = [{ jwt_audience = \"a\", jwt_svid_file_name = \"t\" }]\n\
                 jwt_bundle_file_name = \"t\"",
                "jwt_bundle_file_name",
                "\"t\" is already used",
            ),
            (
                "jwt_svids = [{ jwt_audience = \"a\", jwt_file = \"t\" }]",
                "jwt_file",
                "unknown",
            ),
        ] {
            let e = HelperConfig::parse(&format!("{OK}{extra}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains(words), "{extra}: {e}");
        }
    }
}
