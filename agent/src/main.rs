//! `sigil-agent`: the node agent daemon and its CLI.

use std::process::ExitCode;

use clap::Parser;
use sigil_agent::cli::{Cli, Command, LogFormat, run_client};
use sigil_agent::config::AgentConfig;

fn init_logs(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| format!("--log-level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| e.to_string())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { config } => AgentConfig::load(&config)
            .map(|_| {
                println!("{}: configuration is valid", config.display());
            })
            .map_err(anyhow::Error::from),
        Command::Run {
            config,
            join_token,
            log_level,
            log_format,
        } => match (
            init_logs(&log_level, log_format),
            AgentConfig::load(&config),
        ) {
            (Err(e), _) => Err(anyhow::anyhow!(e)),
            (_, Err(e)) => Err(e.into()),
            (Ok(()), Ok(cfg)) => {
                runtime().and_then(|rt| rt.block_on(sigil_agent::run::run(cfg, join_token)))
            }
        },
        other => runtime().and_then(|rt| rt.block_on(run_client(other))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(1)
        }
    }
}
