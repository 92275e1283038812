//! `sigil-server`: the daemon and its admin CLI in one binary.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sigil_proto::daemon::logs::init_logs;
use sigil_server::cli::{Cli, Command, run_admin};
use sigil_server::config::ServerConfig;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { config } => ServerConfig::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(|cfg| {
                cfg.check_paths()?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                let upstream = sigil_server::run::load_upstream(&cfg, now)?;
                let mut warnings = cfg.warnings();
                warnings
                    .extend(upstream.and_then(|u| {
                        sigil_server::upstream::expiry_warning(&*u, now, cfg.ca_ttl)
                    }));
                if let Some(be) = &cfg.bundle_endpoint
                    && let Some(cert) = &be.cert_file
                {
                    let bytes = std::fs::read(cert)
                        .with_context(|| format!("bundle_endpoint.cert_file {}", cert.display()))?;
                    let chain = sigil_proto::pem::certs_from_pem_or_der(&bytes)
                        .with_context(|| format!("bundle_endpoint.cert_file {}", cert.display()))?;
                    warnings.extend(sigil_server::web_cert::warnings(&chain, be.address, now));
                }
                for w in warnings {
                    eprintln!("warning: {w}");
                }
                println!("{}: configuration is valid", config.display());
                Ok(())
            }),
        Command::Run {
            config,
            log_level,
            log_format,
            activate_prepared,
        } => match (
            init_logs(&log_level, log_format),
            ServerConfig::load(&config),
        ) {
            (Err(e), _) => Err(e.into()),
            (_, Err(e)) => Err(e.into()),
            (Ok(()), Ok(cfg)) => {
                runtime().and_then(|rt| rt.block_on(sigil_server::run::run(cfg, activate_prepared)))
            }
        },
        admin => runtime().and_then(|rt| rt.block_on(run_admin(admin))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Messages are one line, except a TOML error's snippet, whose
            // lines are kept (its caret points at the fault).
            let msg = sigil_proto::daemon::error_text::error_text(e.as_ref());
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(sigil_proto::daemon::supervise::runtime()?)
}
