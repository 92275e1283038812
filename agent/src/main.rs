//! `sigil-agent`: the node agent daemon and its CLI.

use std::process::ExitCode;

use clap::Parser;
use sigil_agent::cli::{Cli, Command, init_logs, run_client};
use sigil_agent::config::AgentConfig;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(sigil_proto::daemon::supervise::runtime()?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { config } => AgentConfig::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(|cfg| Ok(cfg.check_paths()?))
            .map(|()| {
                println!("{}: configuration is valid", config.display());
            }),
        Command::Run {
            config,
            join_token,
            join_token_file,
            reset_identity,
            log_level,
            log_format,
        } => match (
            init_logs(&log_level, log_format),
            AgentConfig::load(&config),
        ) {
            (Err(e), _) => Err(e.into()),
            (_, Err(e)) => Err(e.into()),
            (Ok(()), Ok(cfg)) => {
                match sigil_agent::config::join_token(&cfg, join_token, join_token_file.as_deref())
                {
                    Err(e) => Err(e.into()),
                    Ok(t) => runtime()
                        .and_then(|rt| rt.block_on(sigil_agent::run::run(cfg, t, reset_identity))),
                }
            }
        },
        // Exit 1 with the verdict on stdout when the connection would fail.
        Command::Diagnose(args) => {
            match runtime().and_then(|rt| rt.block_on(sigil_agent::diagnose::run(args))) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::from(1),
                Err(e) => Err(e),
            }
        }
        other => runtime().and_then(|rt| rt.block_on(run_client(other))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: {}",
                sigil_proto::daemon::error_text::error_text(e.as_ref())
            );
            ExitCode::from(1)
        }
    }
}
