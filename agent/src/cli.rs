//! The `sigil-agent` command line: the daemon, config validation, and
//! Workload API commands for operators. Exit codes: 0 success, 1 error (one
//! line on stderr), 2 usage error.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sigil_proto::parse_duration;
use sigil_proto::workload as wl;

use crate::{helper, proxy, workload_client};

mod api;
mod jwt;
mod x509_report;

pub use api::{ApiCommand, FetchCommand, ValidateCommand};

/// Logs to stderr, for the daemon and the long-running `helper`.
pub use sigil_proto::daemon::logs::{LogFormat, init_logs};

#[derive(Debug, Parser)]
#[command(name = "sigil-agent", version, about = "Sigil node agent")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent daemon.
    Run {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Join token for the first attestation (overrides join_token). Other
        /// local users can read a process's arguments: prefer --join-token-file.
        #[arg(long, env = "SIGIL_JOIN_TOKEN", hide_env_values = true)]
        join_token: Option<String>,
        /// File holding the join token (mode 0600; trailing newline trimmed;
        /// overrides join_token and join_token_file).
        #[arg(
            long,
            value_name = "FILE",
            env = "SIGIL_JOIN_TOKEN_FILE",
            conflicts_with = "join_token"
        )]
        join_token_file: Option<PathBuf>,
        /// Attest again even though an identity is stored (with the join
        /// token or x509pop); the stored one is replaced once that succeeds.
        #[arg(long)]
        reset_identity: bool,
        #[arg(long, env = "SIGIL_LOG", default_value = "info")]
        log_level: String,
        #[arg(long, value_enum, env = "SIGIL_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
    },
    /// Check a configuration file without starting the agent.
    Validate {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Use the Workload API like a workload would.
    #[command(subcommand)]
    Api(ApiCommand),
    /// Write SVID, key and bundle files for programs that read files, and
    /// reload them on every update (`helper validate` checks a config).
    #[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
    Helper {
        #[command(subcommand)]
        action: Option<HelperAction>,
        #[arg(long, value_name = "FILE", required = true)]
        config: Option<PathBuf>,
        /// Write the first update and exit (init containers).
        #[arg(long)]
        once: bool,
        /// With --once: give up when no SVID arrives in this time
        /// (overrides once_timeout).
        #[arg(long, value_parser = parse_duration, requires = "once")]
        timeout: Option<Duration>,
        #[arg(long, env = "SIGIL_LOG", default_value = "info")]
        log_level: String,
        #[arg(long, value_enum, env = "SIGIL_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
    },
    /// Explain why an mTLS connection fails: one verdict line plus the
    /// evidence (exit 0 only when it would succeed).
    Diagnose(crate::diagnose::DiagnoseArgs),
    /// Run an mTLS proxy for programs that cannot do mTLS themselves
    /// (`proxy validate` checks a config).
    #[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
    Proxy {
        #[command(subcommand)]
        action: Option<ProxyAction>,
        #[arg(long, value_name = "FILE", required = true)]
        config: Option<PathBuf>,
        #[arg(long, env = "SIGIL_LOG", default_value = "info")]
        log_level: String,
        #[arg(long, value_enum, env = "SIGIL_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
    },
    /// Check that the agent's Workload API answers.
    Healthcheck {
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HelperAction {
    /// Check a helper configuration file without starting.
    Validate {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProxyAction {
    /// Check a proxy configuration file without starting.
    Validate {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Runs a non-daemon command.
pub async fn run_client(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Run { .. } | Command::Validate { .. } | Command::Diagnose(_) => {
            anyhow::bail!("not a client command")
        }
        Command::Helper {
            action: Some(HelperAction::Validate { config }),
            ..
        } => {
            helper::validate(&config)?;
            println!("{}: helper configuration is valid", config.display());
            Ok(())
        }
        Command::Helper {
            action: None,
            config,
            once,
            timeout,
            log_level,
            log_format,
        } => {
            init_logs(&log_level, log_format)?;
            let config = config.context("--config FILE is required")?;
            let cfg = helper::config::HelperConfig::load(&config)?;
            helper::run(cfg, helper::Options { once, timeout }).await
        }
        Command::Proxy {
            action: Some(ProxyAction::Validate { config }),
            ..
        } => {
            proxy::validate(&config)?;
            println!("{}: proxy configuration is valid", config.display());
            Ok(())
        }
        Command::Proxy {
            action: None,
            config,
            log_level,
            log_format,
        } => {
            init_logs(&log_level, log_format)?;
            let config = config.context("--config FILE is required")?;
            proxy::run(proxy::validate(&config)?).await
        }
        Command::Healthcheck { socket } => {
            let path = workload_client::socket_path(socket)?;
            let mut c = workload_client::connect(&path).await?;
            // Bounded: a socket that is bound but not served yet (the
            // agent is still attesting) accepts connections and never
            // answers.
            let resp = tokio::time::timeout(
                Duration::from_secs(5),
                c.fetch_x509_bundles(wl::X509BundlesRequest {}),
            )
            .await
            .context("no answer from the Workload API in 5s (is the agent still attesting?)")?
            .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?;
            // The agent answers but its own identity is unusable (evicted,
            // expired): unhealthy, with its reason.
            if let Some(why) = resp
                .metadata()
                .get(crate::workload_api::NOT_READY_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                anyhow::bail!("the agent is not ready: {why}");
            }
            let mut s = resp.into_inner();
            tokio::time::timeout(Duration::from_secs(5), s.message())
                .await
                .context("no answer from the Workload API in 5s")?
                .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
                .context("the Workload API closed the stream")?;
            println!("Agent is healthy.");
            Ok(())
        }
        Command::Api(cmd) => api::run(cmd).await,
    }
}
